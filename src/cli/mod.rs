//! Command-line interface: argument definitions (clap) and one module per subcommand.
//!
//! Arguments are parsed into typed values at the edge (`--mean 1,2,3` → `[f32; 3]`,
//! `--input-size 1024x512` (WxH, like every size) → `(512, 1024)`), so the library never sees strings it must parse.

pub mod bench;
pub mod build_engine;
pub mod devices;
pub mod doctor;
pub mod info;
pub mod plot;
pub mod record;
pub mod run;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};

use semask_edge::backend::BackendKind;
use semask_edge::backend::tensorrt::{Int8Mode, TensorRtOptions};
use semask_edge::backend::{Backend, PrecisionPolicy, tensorrt};
use semask_edge::calibration::Precision;
use semask_edge::files::{InputFiles, InputRole};
use semask_edge::frame::Size;
use semask_edge::limits::{DEFAULT_MAX_PIXELS, FPS_RANGE, Limits, MAX_SIDE};
use semask_edge::model::{ClassTable, MetadataOverrides, OnnxModel, SegmentationMetadata};
use semask_edge::named::Named;
use semask_edge::pipeline::{Pacing, PipelineOptions, Repeat, RunSummary, Segmenter, SegmenterOptions};
use semask_edge::postprocess::Upsample;
use semask_edge::preprocess::ChannelOrder;
use semask_edge::profile::{Profile, Sysroot, detect};
use semask_edge::source::{Source, SourceOptions, SourceUri};
use semask_edge::timing::{LatencyStats, Stage};

const ABOUT: &str = "Semantic segmentation of road scenes with SeMask-T FPN, from ONNX, on the edge.";

const LONG_ABOUT: &str = "\
Semantic segmentation of road scenes with SeMask-T FPN, from ONNX, on the edge.

Runs an ONNX export of SeMask-FPN (or any segmentation model with one [1,3,H,W] image input and
[1,K,h,w] logits) on images, and writes label maps, colour maps and overlays.

Without --model and --input it runs the built-in model on synthetic driving scenes (synth://),
so

    semask-edge run --overlay out/overlay

works on a fresh checkout. The built-in model is SeMask-FPN in a small configuration trained by
semask-train on synth:// scenes (calibration/semask-tiny-synth/): it segments those scenes, not
real roads. --precision int8 runs its int8 form (--precision fp16 too, with TensorRT).";

#[derive(Debug, Parser)]
#[command(name = "semask-edge", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// More log output on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Largest frame or network input accepted, in pixels (width x height; default 40
    /// megapixels, above 8K UHD). Files that declare more are refused before anything is
    /// allocated; raise it for genuine larger images.
    #[arg(long, value_name = "N", global = true, default_value_t = DEFAULT_MAX_PIXELS,
          allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..=MAX_SIDE * MAX_SIDE))]
    pub max_pixels: u64,

    /// Device profile (targets/*.toml): a shipped name (jetson-orin-nano, jetson-orin-nx,
    /// jetson-agx-orin, jetson-xavier-nx, jetson-thor, x86-cuda, cpu) or a .toml file. Default:
    /// detected from /proc/device-tree/model and the NVIDIA driver (`doctor` says which and
    /// why). It sets the defaults of --backend auto's order, --precision, --threads,
    /// --upsample, TensorRT's builder and the camera; flags win.
    #[arg(long, value_name = "NAME|FILE", global = true)]
    pub target: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Segment an image or a directory of images; write label maps, colour maps, overlays.
    #[command(long_about = run::LONG_ABOUT)]
    Run(run::RunArgs),
    /// Describe a model: inputs, outputs, metadata, classes, and the backends of this build.
    Info(info::InfoArgs),
    /// Measure per-stage and end-to-end latency and throughput; JSON report and SVG plot.
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(bench::BenchArgs),
    /// Save a camera (or any input) to an MJPEG file for replay.
    Record(record::RecordArgs),
    /// List V4L2 cameras and their modes.
    Devices(devices::DevicesArgs),
    /// Build a model's TensorRT engine ahead of its first run (into the engine cache, or a file).
    #[command(long_about = build_engine::LONG_ABOUT)]
    BuildEngine(build_engine::BuildEngineArgs),
    /// Describe this machine: CPU, device profile, JetPack, GPU, TensorRT, CUDA, cameras, and
    /// the backend `auto` would choose.
    #[command(long_about = doctor::LONG_ABOUT)]
    Doctor(doctor::DoctorArgs),
}

/// What every command runs under: the size limits and the device profile.
#[derive(Debug, Clone)]
pub struct Context {
    pub limits: Limits,
    pub profile: Profile,
}

impl Context {
    /// `--target`, or the profile detected on this machine (logged with the reason).
    pub fn new(limits: Limits, target: Option<&str>) -> anyhow::Result<Context> {
        let profile = match target {
            Some(t) => Profile::load(t)?,
            None => {
                let (profile, why) = detect(&Profile::builtin(), &Sysroot::default());
                log::info!("device profile {}: {why}", profile.name);
                profile
            }
        };
        Ok(Context { limits, profile })
    }
}

/// Which model to load and how to read it: shared by every subcommand that loads a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// ONNX model to run (default: the built-in model, SeMask tiny trained on synth://).
    #[arg(long, short = 'm', value_name = "MODEL.onnx")]
    pub model: Option<PathBuf>,

    /// Network input size WxH, for models whose input size is dynamic (e.g. 1024x512).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub input_size: Option<(usize, usize)>,

    /// Per-channel mean, R,G,B on the 0-255 scale, each in -1e6..1e6 (default: the model's
    /// semask.mean, else ImageNet).
    #[arg(long, value_name = "R,G,B", value_parser = parse_mean)]
    pub mean: Option<[f32; 3]>,

    /// Per-channel std, R,G,B on the 0-255 scale, each in 0.001..1e6 (default: the model's
    /// semask.std, else ImageNet).
    #[arg(long, value_name = "R,G,B", value_parser = parse_std)]
    pub std: Option<[f32; 3]>,

    /// Class names (and colours): a JSON list of names, JSON {"classes": [...], "palette":
    /// [[r,g,b], ...]}, or a text file with one name per line (default: the model's
    /// semask.classes, else Cityscapes).
    #[arg(long, value_name = "FILE")]
    pub classes: Option<PathBuf>,

    /// Plane order the network expects (default: the model's semask.channel_order, else rgb).
    #[arg(long, value_name = "ORDER", value_parser = choice::<ChannelOrder>())]
    pub channel_order: Option<ChannelOrder>,
}

impl ModelArgs {
    /// The flags that override model metadata. Reads the `--classes` file.
    pub fn overrides(&self) -> anyhow::Result<MetadataOverrides> {
        Ok(MetadataOverrides {
            mean: self.mean,
            std: self.std,
            classes: self.classes.as_deref().map(ClassTable::from_file).transpose()?,
            channel_order: self.channel_order,
        })
    }
}

/// The files a command reads, which none of its outputs may overwrite: the model given and
/// its derived forms (int8, fp16, calibration data, which a backend may run instead), the class
/// file, and the source's files.
pub fn input_files(args: &ModelArgs, source: &dyn Source) -> InputFiles {
    use semask_edge::calibration::{Artifact, artifact_candidates};
    let mut inputs = InputFiles::default();
    if let Some(model) = args.model.as_deref() {
        inputs.add(model, InputRole::Model);
        for artifact in [Artifact::QOperator, Artifact::Qdq, Artifact::Fp16, Artifact::Cache] {
            inputs
                .add_all(artifact_candidates(model, artifact).iter().map(PathBuf::as_path), InputRole::Model);
        }
    }
    inputs.add_all(args.classes.as_deref(), InputRole::ClassFile);
    inputs.add_all(source.input_files(), InputRole::Frames);
    inputs
}

/// The network of `path` (an ONNX model, or a TensorRT engine file) or of the built-in model:
/// its name, its metadata (with the flags' overrides) and the backend that runs it.
pub fn open_network(
    path: Option<&Path>,
    overrides: &MetadataOverrides,
    options: &SegmenterOptions,
) -> anyhow::Result<(String, SegmentationMetadata, Box<dyn Backend>)> {
    if let Some(engine) = path.filter(|p| tensorrt::is_engine_file(p)) {
        if options.input_size.is_some() {
            anyhow::bail!(
                "--input-size does not apply to {}: an engine's input size is fixed",
                engine.display()
            );
        }
        let (metadata, backend) = tensorrt::open_engine_file(engine, overrides, options.tensorrt.device)?;
        return Ok((engine.display().to_string(), metadata, backend));
    }
    let model = OnnxModel::open_or_builtin(path, overrides)?;
    let input_size = model.input_size(options.requested_input_size(&model), &options.limits)?;
    let backend = semask_edge::backend::create(&model, &options.backend_options(input_size))?;
    Ok((model.name, model.metadata, backend))
}

/// [`open_network`] wrapped in a [`Segmenter`].
pub fn open_segmenter(
    path: Option<&Path>,
    overrides: &MetadataOverrides,
    options: &SegmenterOptions,
) -> anyhow::Result<Segmenter> {
    let (name, metadata, backend) = open_network(path, overrides, options)?;
    Ok(Segmenter::around(name, metadata, backend, options)?)
}

/// The optional path flags that were given, as (flag, path) pairs for the output checks.
pub fn given_paths<'a>(flags: &[(&'static str, &'a Option<PathBuf>)]) -> Vec<(&'static str, &'a Path)> {
    flags.iter().filter_map(|(flag, path)| Some((*flag, path.as_deref()?))).collect()
}

/// `--precision` when given, which is then met or an error; else the device profile's, which
/// gives way to a lower precision where a backend cannot run it for the model.
pub fn precision_choice(flag: Option<Precision>, ctx: &Context) -> (Precision, PrecisionPolicy) {
    match flag {
        Some(precision) => (precision, PrecisionPolicy::Exact),
        None => (ctx.profile.precision, PrecisionPolicy::Preferred),
    }
}

/// Says which file runs when the backend runs something other than the model given (an int8
/// or fp16 form, a TensorRT engine).
pub fn note_artifact(precision: Precision, backend: &dyn semask_edge::backend::Backend) {
    if let Some(artifact) = backend.artifact() {
        eprintln!("note: --precision {precision} runs {artifact}");
    }
}

/// Where frames come from and how to replay them: shared by `run`, `bench` and `record`.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Input: image file, directory, glob ('frames/*.png'), video (.mp4, .mjpeg), camera
    /// (v4l2:///dev/video0 or /dev/video0), or synth://?seed=1&frames=300&size=1024x512&fps=30.
    #[arg(long, short = 'i', value_name = "URI")]
    pub input: Option<String>,

    /// Camera capture width to ask for, 1..65535 (the closest mode is used).
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(1..=MAX_SIDE as i64))]
    pub input_width: Option<u32>,

    /// Camera capture height to ask for, 1..65535 (the closest mode is used).
    #[arg(long, value_name = "PX", value_parser = clap::value_parser!(u32).range(1..=MAX_SIDE as i64))]
    pub input_height: Option<u32>,

    /// Camera frame rate to ask for; with --realtime, the replay rate of sources without one;
    /// the frame rate of -o videos from inputs without one (0.01..1000).
    #[arg(long, value_name = "FPS", value_parser = parse_fps, allow_negative_numbers = true)]
    pub input_rate: Option<f64>,

    /// Replay the input N more times after the first, or `forever` (-1 also means forever).
    /// Files and synth only.
    #[arg(long, value_name = "N|forever", default_value = "0", allow_negative_numbers = true,
          value_parser = parse_repeat)]
    pub input_loop: Repeat,

    /// Replay a file at its frame rate and behave as a live source: when the pipeline falls
    /// behind, stale frames are dropped and counted, as with a camera.
    #[arg(long)]
    pub realtime: bool,

    /// Accept frames of different sizes in one run (a folder of unrelated photos). By default a
    /// frame whose size differs from the first is skipped and counted, as in a video.
    #[arg(long)]
    pub mixed_sizes: bool,
}

impl SourceArgs {
    /// The source options: the flags, and for a camera the profile's camera defaults where a
    /// flag is not given.
    pub fn source_options(&self, ctx: &Context) -> SourceOptions {
        let camera = matches!(SourceUri::parse(self.input.as_deref()), SourceUri::Camera(_));
        let p = &ctx.profile;
        let from_profile = |flag: Option<u32>, profile: Option<u32>| flag.or(profile.filter(|_| camera));
        SourceOptions {
            width: from_profile(self.input_width, p.camera_width),
            height: from_profile(self.input_height, p.camera_height),
            rate: self.input_rate.or(p.camera_rate.filter(|_| camera)),
            pixel_format: p.camera_pixel_format.filter(|_| camera),
            limits: ctx.limits,
        }
    }

    /// Opens the source and works out how the pipeline must treat it.
    pub fn open(
        &self,
        default_input: Option<&str>,
        ctx: &Context,
    ) -> anyhow::Result<(Box<dyn Source>, PipelineOptions)> {
        let source =
            semask_edge::source::open(self.input.as_deref().or(default_input), &self.source_options(ctx))?;
        let info = source.info();
        let pace_fps = if self.realtime {
            match info.nominal_fps.or(self.input_rate) {
                Some(fps) => Some(fps),
                None => anyhow::bail!(
                    "--realtime: input {} has no frame rate; give one with --input-rate FPS",
                    info.uri
                ),
            }
        } else {
            None
        };
        let pacing = match (info.live, pace_fps) {
            (true, _) => Pacing::Live,
            (false, Some(fps)) => Pacing::Realtime { fps },
            (false, None) => Pacing::Lossless,
        };
        let options = PipelineOptions {
            pacing,
            repeat: self.input_loop,
            mixed_sizes: self.mixed_sizes,
            ..Default::default()
        };
        Ok((source, options))
    }
}

/// How the network runs and how labels are made (`run`).
#[derive(Debug, Clone, Args)]
pub struct InferenceArgs {
    /// Inference backend (with auto, each backend skipped is logged with -v).
    #[arg(long, value_name = "NAME", default_value = "auto", value_parser = choice::<BackendKind>())]
    pub backend: BackendKind,

    /// Threads for the CPU backend, 0..256 (0 = all cores) [default: the device profile's].
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,

    /// Numeric precision: fp32; int8, which runs the model's int8 form (model.qop.onnx on the
    /// CPU, model.qdq.onnx or the calibration cache in TensorRT; from `semask-train quantize`,
    /// next to --model or in calibration/<model stem>/; the built-in model has them); fp16
    /// (TensorRT only) [default: the device profile's: fp32 on a CPU, int8 on an Orin].
    #[arg(long, value_name = "PRECISION", value_parser = choice::<Precision>())]
    pub precision: Option<Precision>,

    #[command(flatten)]
    pub tensorrt: TensorRtArgs,
}

impl InferenceArgs {
    /// The precision asked for: `--precision`, else the profile's.
    pub fn precision(&self, ctx: &Context) -> Precision {
        precision_choice(self.precision, ctx).0
    }

    pub fn segmenter_options(
        &self,
        model: &ModelArgs,
        upsample: Upsample,
        alpha: f32,
        ctx: &Context,
    ) -> SegmenterOptions {
        SegmenterOptions {
            backend: self.backend,
            threads: self.threads.unwrap_or(ctx.profile.threads),
            input_size: model.input_size,
            upsample,
            alpha,
            limits: ctx.limits,
            precision: self.precision(ctx),
            precision_policy: precision_choice(self.precision, ctx).1,
            tensorrt: self.tensorrt.options(ctx),
            ladder: ctx.profile.backends.clone(),
            dynamic_input_size: ctx.profile.input_size,
        }
    }
}

/// How TensorRT engines are built and cached: shared by `run`, `bench` and `build-engine`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "TensorRT")]
pub struct TensorRtArgs {
    /// Folder of cached TensorRT engines (default: $XDG_CACHE_HOME/semask-edge/engines). An
    /// engine is rebuilt when the model, the TensorRT version, the GPU, the precision, the input
    /// size or a builder option changes.
    #[arg(long, value_name = "DIR")]
    pub engine_cache: Option<PathBuf>,

    /// TensorRT timing cache file, which shortens later builds (default: in the engine cache,
    /// one per TensorRT version and GPU).
    #[arg(long, value_name = "FILE")]
    pub timing_cache: Option<PathBuf>,

    /// TensorRT builder workspace limit in MiB, 0..1048576 (0: TensorRT's default) [default:
    /// the device profile's].
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(0..=1 << 20))]
    pub trt_workspace: Option<u64>,

    /// TensorRT builder optimisation level 0..5 (TensorRT 8.6+; default: the device profile's,
    /// else TensorRT's 3): higher levels build longer for faster engines.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=5))]
    pub trt_opt_level: Option<u32>,

    /// Run on DLA core N (0..3; Jetson Xavier and Orin NX/AGX); layers the DLA cannot run fall
    /// back to the GPU [default: the device profile's, else the GPU only].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=3))]
    pub dla_core: Option<u32>,

    /// Where TensorRT int8 gets its scales [default: the profile's, qdq].
    #[arg(long, value_name = "MODE", value_parser = choice::<Int8Mode>())]
    pub trt_int8: Option<Int8Mode>,

    /// Let TensorRT run LayerNorm, Softmax and GELU in fp16/int8 too (by default they are kept
    /// in fp32: Swin's accuracy suffers otherwise).
    #[arg(long)]
    pub trt_no_fp32_pins: bool,
}

impl TensorRtArgs {
    /// The flags, and the profile's TensorRT settings where a flag is not given.
    pub fn options(&self, ctx: &Context) -> TensorRtOptions {
        let p = &ctx.profile;
        TensorRtOptions {
            engine_cache: self.engine_cache.clone(),
            timing_cache: self.timing_cache.clone(),
            workspace_mib: self.trt_workspace.unwrap_or(p.tensorrt_workspace_mib),
            optimization_level: self.trt_opt_level.or(p.tensorrt_optimization_level),
            dla_core: self.dla_core.or(p.tensorrt_dla_core),
            int8: self.trt_int8.unwrap_or(p.tensorrt_int8),
            keep_sensitive_fp32: !self.trt_no_fp32_pins,
            device: 0,
        }
    }
}

/// Set by Ctrl-C: the pipeline stops capturing, finishes the frames in flight and closes every
/// output. A second Ctrl-C exits at once.
pub static STOP: AtomicBool = AtomicBool::new(false);

pub fn install_ctrlc_handler() {
    let result = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted twice: exiting without finishing the outputs");
            std::process::exit(130);
        }
        eprintln!("interrupted: finishing the frames in flight (Ctrl-C again to quit at once)");
    });
    if let Err(e) = result {
        log::warn!("cannot install the Ctrl-C handler ({e}); Ctrl-C will stop without flushing outputs");
    }
}

/// Prints the end-of-run counts and the per-stage latency table.
pub fn print_summary(out: &mut impl Write, summary: &RunSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "{} frames in, {} written, {} failed, {} dropped{}",
        summary.frames_in,
        summary.frames_out,
        summary.failed.len(),
        summary.dropped,
        if summary.interrupted { " (interrupted)" } else { "" }
    )?;
    if summary.frames_out == 0 {
        return Ok(());
    }
    writeln!(out, "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}", "stage (ms)", "mean", "p50", "p90", "p99", "max")?;
    let rows: Vec<(&str, &LatencyStats)> = Stage::ALL
        .iter()
        .map(|s| (s.name(), summary.stats.stage(*s)))
        .chain([("total", summary.stats.total()), ("end to end", summary.stats.end_to_end())])
        .collect();
    for (name, stats) in rows {
        if let Some(s) = stats.summary() {
            writeln!(
                out,
                "{name:<12} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
            )?;
        }
    }
    writeln!(out, "throughput   {:.2} frames/s", summary.throughput_fps())
}

/// clap's parser for one of the library's closed choices ([`Named`]): its names are the possible
/// values (listed in `--help` with each one's help line; clap suggests the closest for a typo).
pub fn choice<T: Named + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    let values = T::ALL.iter().map(|v| clap::builder::PossibleValue::new(v.name()).help(v.help()));
    clap::builder::PossibleValuesParser::new(values).try_map(|name| semask_edge::named::parse::<T>(&name))
}

/// `--input-loop`: `N` more passes, or `forever` (or -1).
fn parse_repeat(text: &str) -> Result<Repeat, String> {
    match text {
        "forever" | "-1" => Ok(Repeat::Forever),
        n => n
            .parse::<u64>()
            .map(Repeat::Times)
            .map_err(|_| format!("{text:?} is not a number of passes; give N >= 0 or forever")),
    }
}

/// `--input-size 1024x512` (WxH, [`Size`]) → `(512, 1024)`, the `(height, width)` of the network.
pub fn parse_size(text: &str) -> Result<(usize, usize), String> {
    text.parse::<Size>().map(Size::hw).map_err(|e| e.to_string())
}

/// `123.675,116.28,103.53` → `[123.675, 116.28, 103.53]`, each value in `range`.
fn parse_rgb_in(text: &str, range: std::ops::RangeInclusive<f32>) -> Result<[f32; 3], String> {
    let values: Vec<f32> = text
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{text:?} is not three comma-separated numbers R,G,B"))?;
    let values: [f32; 3] =
        values.try_into().map_err(|_| format!("{text:?} is not three comma-separated numbers R,G,B"))?;
    if let Some(bad) = values.iter().find(|v| !range.contains(*v)) {
        return Err(format!(
            "{bad} is out of range: each value must be between {} and {}",
            range.start(),
            range.end()
        ));
    }
    Ok(values)
}

/// `--mean`: three numbers in [`semask_edge::model::metadata::MEAN_RANGE`].
pub fn parse_mean(text: &str) -> Result<[f32; 3], String> {
    parse_rgb_in(text, semask_edge::model::metadata::MEAN_RANGE)
}

/// `--std`: three numbers in [`semask_edge::model::metadata::STD_RANGE`].
pub fn parse_std(text: &str) -> Result<[f32; 3], String> {
    parse_rgb_in(text, semask_edge::model::metadata::STD_RANGE)
}

/// A frame rate in [`FPS_RANGE`].
pub fn parse_fps(text: &str) -> Result<f64, String> {
    let fps: f64 =
        text.trim().parse().map_err(|_| format!("{text:?} is not a number of frames per second"))?;
    semask_edge::limits::check_fps(fps, "the rate").map_err(|_| {
        format!(
            "{text} fps is out of range: use {} to {} frames per second",
            FPS_RANGE.start(),
            FPS_RANGE.end()
        )
    })
}

/// Most network threads accepted: far above any core count this runs on, far below what
/// exhausts memory (each thread reserves a stack).
pub const MAX_THREADS: usize = 256;

/// `--threads`: 0 (all cores) to [`MAX_THREADS`].
pub fn parse_threads(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n <= MAX_THREADS => Ok(n),
        _ => Err(format!("{text:?} is not a thread count from 0 (all cores) to {MAX_THREADS}")),
    }
}

/// A number in 0..=1.
pub fn parse_unit(text: &str) -> Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?} is not a number between 0 and 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_and_triplets_parse() {
        assert_eq!(parse_size("1024x512"), Ok((512, 1024)));
        assert!(parse_size("512").is_err());
        assert!(parse_size("0x4").is_err());
        assert_eq!(parse_std("1, 2.5,3"), Ok([1.0, 2.5, 3.0]));
        assert!(parse_std("1,2").is_err());
        assert!(parse_std("a,b,c").is_err());
        assert!(parse_std("0,1,1").is_err());
        assert!(parse_mean("-1,0,1e30").is_err());
        assert!(parse_size("70000x10").is_err());
        assert_eq!(parse_fps("29.97"), Ok(29.97));
        assert!(parse_fps("1e-9").is_err() && parse_fps("0").is_err() && parse_fps("inf").is_err());
        assert_eq!(parse_threads("256"), Ok(256));
        assert!(parse_threads("100000").is_err());
        assert_eq!(parse_unit("0.3"), Ok(0.3));
        assert!(parse_unit("1.5").is_err());
    }
}
