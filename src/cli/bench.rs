//! `semask-edge bench`: per-frame latency of every stage, end to end and throughput, for one or
//! several configurations side by side; a table for people, JSON for machines, an SVG plot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use semask_edge::backend::{self, BackendError, BackendKind};
use semask_edge::calibration::Precision;
use semask_edge::files::InputRole;
use semask_edge::model::MetadataOverrides;
use semask_edge::named::Named;
use semask_edge::pipeline::{self, FrameEvent, Repeat, SetupError};
use semask_edge::postprocess::Upsample;
use semask_edge::sink::{NullSink, Sink};
use semask_edge::timing::{LatencyStats, LatencySummary, Stage, StageTimings};

use super::{ModelArgs, STOP, SourceArgs};

pub const LONG_ABOUT: &str = "\
Measure the latency of every stage of every frame (decode, preprocess, network, postprocess,
output), end to end (capture to output, queueing included) and throughput, over the streaming
pipeline with a null output. Warm-up frames are run and not counted.

Flags marked LIST take several comma-separated values: one run each, side by side.

Examples:
  semask-edge bench                                       # built-in model on synth://
  semask-edge bench --upsample fast,exact --report bench.json --plot bench.svg
  semask-edge bench -m model.onnx --threads 1,2 --network-only";

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub source: SourceArgs,

    /// More models to compare (LIST); --model is the first.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub models: Vec<PathBuf>,

    /// Frames measured per run (after the warm-up), 1..1000000.
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=MAX_BENCH_FRAMES))]
    pub frames: u64,

    /// Frames run before measuring, 0..1000000.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(0..=MAX_BENCH_FRAMES))]
    pub warmup: u64,

    /// Label upsampling (LIST of fast, exact) [default: the device profile's].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = super::choice::<Upsample>())]
    pub upsample: Vec<Upsample>,

    /// Backends (LIST).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "auto", value_parser = super::choice::<BackendKind>())]
    pub backend: Vec<BackendKind>,

    /// Precisions (LIST of fp32, fp16, int8): int8 runs the model's int8 form, fp16 needs
    /// TensorRT. A backend that cannot run a precision is skipped with a warning.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "fp32", value_parser = super::choice::<Precision>())]
    pub precision: Vec<Precision>,

    #[command(flatten)]
    pub tensorrt: super::TensorRtArgs,

    /// CPU backend threads (LIST; each 0..256, 0 = all cores) [default: the device profile's].
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = super::parse_threads)]
    pub threads: Vec<usize>,

    /// Time the network alone on a fixed input (as trtexec does): no source, no pipeline. GPU
    /// backends also report the device time between CUDA events around each run.
    #[arg(long)]
    pub network_only: bool,

    /// Write the results as JSON.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,

    /// Draw latency per frame and a histogram per stage (SVG).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Most frames measured (or warmed up) per run: the per-frame series is kept in memory.
const MAX_BENCH_FRAMES: u64 = 1_000_000;

/// One configuration's results, as written to the JSON report.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub model: String,
    pub backend: String,
    /// Versions, device, engine file, as the backend reports them.
    pub backend_properties: std::collections::BTreeMap<&'static str, String>,
    pub precision: &'static str,
    pub upsample: Option<&'static str>,
    pub input: String,
    pub frames: u64,
    pub warmup: u64,
    pub threads: usize,
    /// Per stage (and `end_to_end`; `network_device`: the GPU's own time): mean, p50, p90, p99,
    /// max in milliseconds.
    pub stages: std::collections::BTreeMap<&'static str, StageReport>,
    pub throughput_fps: f64,
    pub dropped: u64,
    /// Per-frame latencies for the plot (not in the JSON).
    #[serde(skip)]
    pub series: Vec<(StageTimings, Duration)>,
}

#[derive(Debug, Serialize)]
pub struct StageReport {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl From<LatencySummary> for StageReport {
    fn from(s: LatencySummary) -> Self {
        StageReport {
            mean_ms: s.mean_ms,
            p50_ms: s.p50_ms,
            p90_ms: s.p90_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct HostReport {
    semask_edge: &'static str,
    tract: &'static str,
    cpu: String,
    logical_cores: usize,
    os: String,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    runs: &'a [RunReport],
    host: HostReport,
}

pub fn bench(args: BenchArgs, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let mut model_paths: Vec<Option<PathBuf>> = vec![args.model.model.clone()];
    model_paths.extend(args.models.iter().cloned().map(Some));
    let overrides = args.model.overrides()?;

    // The report and the plot must not overwrite what the benchmark reads: check before running.
    let (source, _) = args.source.open(Some("synth://"), ctx)?;
    let mut inputs = super::input_files(&args.model, source.as_ref());
    for path in model_paths.iter().flatten() {
        inputs.add(path, InputRole::Model);
    }
    drop(source);
    inputs.check_outputs(&super::given_paths(&[("--report", &args.report), ("--plot", &args.plot)]), &[])?;
    super::install_ctrlc_handler();

    let p = &ctx.profile;
    let (precisions, threads_list, upsamples) = (
        or_profile(&args.precision, p.precision),
        or_profile(&args.threads, p.threads),
        or_profile(&args.upsample, p.upsample),
    );
    let mut runs = Vec::new();
    'all: for model in &model_paths {
        for &backend in &args.backend {
            for &precision in &precisions {
                for &threads in &threads_list {
                    let config = Config { backend, precision, threads };
                    let result = if args.network_only {
                        network_only(model.as_deref(), &overrides, config, &args, ctx).map(|r| vec![r])
                    } else {
                        upsamples
                            .iter()
                            .map(|&upsample| {
                                pipeline_run(model.as_deref(), &overrides, config, upsample, &args, ctx)
                            })
                            .collect::<Result<Vec<_>, _>>()
                    };
                    match result {
                        Ok(reports) => runs.extend(reports),
                        // A backend that cannot run this precision here (the CPU and fp16, TensorRT
                        // absent) is one skipped configuration, not a failed benchmark.
                        Err(e) if is_unavailable(&e) => {
                            let name = model
                                .as_deref()
                                .map_or("the built-in model".into(), |p| p.display().to_string());
                            log::warn!("skipping {backend} {precision} for {name}: {e:#}");
                        }
                        Err(e) => return Err(e),
                    }
                    if STOP.load(std::sync::atomic::Ordering::Relaxed) {
                        break 'all;
                    }
                }
            }
        }
    }
    if runs.is_empty() {
        anyhow::bail!(
            "no configuration could run (each skip was logged above); try --backend cpu --precision fp32"
        );
    }

    let mut out = std::io::stdout().lock();
    for run in &runs {
        print_run(&mut out, run)?;
    }
    if let Some(path) = &args.report {
        let report = Report { runs: &runs, host: host_report() };
        let json = serde_json::to_string_pretty(&report)?;
        semask_edge::files::write_atomically(path, (json + "\n").as_bytes())
            .with_context(|| format!("cannot write the --report file {}", path.display()))?;
        log::info!("report written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        super::plot::write_svg(path, &runs).with_context(|| format!("cannot draw {}", path.display()))?;
        log::info!("plot written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// A LIST flag's values, or the profile's one value when the flag is not given.
fn or_profile<T: Clone>(list: &[T], default: T) -> Vec<T> {
    if list.is_empty() { vec![default] } else { list.to_vec() }
}

/// One backend, precision and thread count.
#[derive(Debug, Clone, Copy)]
struct Config {
    backend: BackendKind,
    precision: Precision,
    threads: usize,
}

fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(cause.downcast_ref::<BackendError>(), Some(BackendError::Unavailable { .. }))
            || matches!(
                cause.downcast_ref::<SetupError>(),
                Some(SetupError::Backend(BackendError::Unavailable { .. }))
            )
    })
}

fn pipeline_run(
    model: Option<&Path>,
    overrides: &MetadataOverrides,
    config: Config,
    upsample: Upsample,
    args: &BenchArgs,
    ctx: &super::Context,
) -> anyhow::Result<RunReport> {
    let (mut source, mut options) = args.source.open(Some("synth://"), ctx)?;
    // Short inputs are replayed until enough frames went through.
    if options.repeat == Repeat::Times(0) {
        options.repeat = Repeat::Forever;
    }
    options.max_frames = Some(args.warmup + args.frames);
    let inference = super::InferenceArgs {
        backend: config.backend,
        threads: Some(config.threads),
        precision: Some(config.precision),
        tensorrt: args.tensorrt.clone(),
    };
    let mut segmenter = super::open_segmenter(
        model,
        overrides,
        &inference.segmenter_options(&args.model, upsample, 0.5, ctx),
    )?;
    super::note_artifact(config.precision, segmenter.backend());
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(NullSink)];
    let input = source.info().uri.clone();
    log::info!(
        "bench: {} on {} ({}), upsample {}",
        segmenter.model_name(),
        input,
        segmenter.backend().describe(),
        upsample.name()
    );

    let progress = semask_edge::progress::bar(Some(args.warmup + args.frames), "frames", true);
    let warmup = args.warmup;
    let mut series: Vec<(StageTimings, Duration)> = Vec::with_capacity(args.frames as usize);
    let mut done_at: Vec<Instant> = Vec::with_capacity(args.frames as usize);
    let mut failures = 0u64;
    let summary = {
        let (series, done_at, progress, failures) = (&mut series, &mut done_at, &progress, &mut failures);
        pipeline::run(source.as_mut(), &mut segmenter, &mut sinks, &options, &STOP, move |event| {
            progress.inc(1);
            match event {
                FrameEvent::Written(frame) if frame.index >= warmup => {
                    series.push((frame.timings, frame.end_to_end));
                    done_at.push(Instant::now());
                }
                FrameEvent::Failed(_) => *failures += 1,
                _ => {}
            }
        })
    };
    progress.finish_and_clear();
    if let Some(e) = summary.stopped_by {
        return Err(anyhow::Error::new(e).context("bench run failed"));
    }
    if failures > 0 {
        log::warn!("{failures} frames of {input} could not be decoded and were skipped");
    }

    let mut per_stage: [LatencyStats; 5] = Default::default();
    let mut end_to_end = LatencyStats::default();
    for (timings, e2e) in &series {
        for stage in Stage::ALL {
            per_stage[stage as usize].push(timings.get(stage));
        }
        end_to_end.push(*e2e);
    }
    let mut stages = std::collections::BTreeMap::new();
    for stage in Stage::ALL {
        if let Some(s) = per_stage[stage as usize].summary() {
            stages.insert(stage.name(), s.into());
        }
    }
    if let Some(s) = end_to_end.summary() {
        stages.insert("end_to_end", s.into());
    }
    let throughput_fps = match (done_at.first(), done_at.last()) {
        (Some(first), Some(last)) if done_at.len() > 1 => {
            (done_at.len() - 1) as f64 / last.duration_since(*first).as_secs_f64().max(1e-9)
        }
        _ => 0.0,
    };
    Ok(RunReport {
        model: segmenter.model_name().to_string(),
        backend: segmenter.backend().describe(),
        backend_properties: segmenter.backend().properties().into_iter().collect(),
        precision: config.precision.name(),
        upsample: Some(upsample.name()),
        input,
        frames: series.len() as u64,
        warmup,
        threads: effective_threads(config.threads),
        stages,
        throughput_fps,
        dropped: summary.dropped,
        series,
    })
}

fn network_only(
    model: Option<&Path>,
    overrides: &MetadataOverrides,
    config: Config,
    args: &BenchArgs,
    ctx: &super::Context,
) -> anyhow::Result<RunReport> {
    let inference = super::InferenceArgs {
        backend: config.backend,
        threads: Some(config.threads),
        precision: Some(config.precision),
        tensorrt: args.tensorrt.clone(),
    };
    let options = inference.segmenter_options(&args.model, Upsample::Fast, 0.5, ctx);
    let (name, _, mut backend) = super::open_network(model, overrides, &options)?;
    super::note_artifact(config.precision, backend.as_ref());
    // A fixed, deterministic input (values in the range of a normalised image).
    for (i, v) in backend.input_mut().iter_mut().enumerate() {
        *v = ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
    }
    for _ in 0..args.warmup {
        backend.run()?;
    }
    let (mut stats, mut device) = (LatencyStats::default(), LatencyStats::default());
    let mut series = Vec::with_capacity(args.frames as usize);
    let start = Instant::now();
    for _ in 0..args.frames {
        let t = Instant::now();
        backend.run()?;
        let elapsed = t.elapsed();
        stats.push(elapsed);
        if let Some(ms) = backend.device_ms() {
            device.push(Duration::from_secs_f64(ms / 1e3));
        }
        let mut timings = StageTimings::default();
        timings.add(Stage::Network, elapsed);
        series.push((timings, elapsed));
        if STOP.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
    }
    let wall = start.elapsed();
    let mut stages = std::collections::BTreeMap::new();
    if let Some(s) = stats.summary() {
        stages.insert(Stage::Network.name(), s.into());
    }
    if let Some(s) = device.summary() {
        stages.insert("network_device", s.into());
    }
    Ok(RunReport {
        model: name,
        backend: backend.describe(),
        backend_properties: backend.properties().into_iter().collect(),
        precision: config.precision.name(),
        upsample: None,
        input: "fixed tensor (network only)".into(),
        frames: series.len() as u64,
        warmup: args.warmup,
        threads: effective_threads(config.threads),
        stages,
        throughput_fps: series.len() as f64 / wall.as_secs_f64().max(1e-9),
        dropped: 0,
        series,
    })
}

fn effective_threads(threads: usize) -> usize {
    if threads == 0 { backend::default_threads() } else { threads }
}

fn print_run(out: &mut impl Write, run: &RunReport) -> std::io::Result<()> {
    writeln!(out, "model      {}", run.model)?;
    writeln!(
        out,
        "run        {} | {} | upsample {} | {} threads | input {}",
        run.backend,
        run.precision,
        run.upsample.unwrap_or("-"),
        run.threads,
        run.input
    )?;
    writeln!(
        out,
        "frames     {} measured after {} warm-up, {} dropped",
        run.frames, run.warmup, run.dropped
    )?;
    writeln!(out, "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}", "stage (ms)", "mean", "p50", "p90", "p99", "max")?;
    let order = ["decode", "preprocess", "network", "postprocess", "output", "end_to_end"];
    for name in order {
        if let Some(s) = run.stages.get(name) {
            writeln!(
                out,
                "{name:<12} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
            )?;
        }
    }
    let non_network: f64 = ["decode", "preprocess", "postprocess", "output"]
        .iter()
        .filter_map(|n| run.stages.get(n))
        .map(|s| s.p50_ms)
        .sum();
    if let Some(network) = run.stages.get("network") {
        writeln!(
            out,
            "throughput {:.2} frames/s ({:.2}x of 1 / network p50); other stages {:.2} ms at p50\n",
            run.throughput_fps,
            run.throughput_fps * network.p50_ms / 1e3,
            non_network
        )?;
    }
    Ok(())
}

fn host_report() -> HostReport {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    HostReport {
        semask_edge: env!("CARGO_PKG_VERSION"),
        tract: backend::tract::TRACT_VERSION,
        cpu,
        logical_cores: backend::default_threads(),
        os: std::env::consts::OS.to_string(),
    }
}
