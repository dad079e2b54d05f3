//! `semask-edge run`: segment frames from an input and write the requested outputs.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use semask_edge::backend::BackendKind;
use semask_edge::model::OnnxModel;
use semask_edge::pipeline::{self, FrameEvent, Segmenter, SegmenterOptions};
use semask_edge::postprocess::Upsample;
use semask_edge::sink::Sink;
use semask_edge::sink::images::{LabelIds, PngDirSink, PngKind};
use semask_edge::source;
use semask_edge::timing::Stage;

use super::{ModelArgs, parse_unit};

pub const LONG_ABOUT: &str = "\
Segment an image or a directory of images; write label maps, colour maps, overlays.

For every input frame, each requested output directory receives <DIR>/<input file stem>.png:
  --labels   8-bit single-channel PNG of class indices (Cityscapes train ids 0..18), at the
             input image's size; --label-ids cityscapes writes Cityscapes label ids instead
             (7 road, 8 sidewalk, ...), ready for cityscapesscripts.
  --color    the class colour of every pixel.
  --overlay  the class colours blended over the image (--alpha).

A directory is read recursively, in natural order (frame2 before frame10). A frame that cannot
be decoded is reported, counted and skipped; the exit status is then 1.

Examples:
  semask-edge run --overlay out/overlay                       # built-in model and sample
  semask-edge run -m model.onnx --input leftImg8bit/val --labels pred --label-ids cityscapes
  semask-edge run -m model.onnx --input street.jpg --color out --upsample fast";

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Image file or directory of images (default: the built-in sample image).
    #[arg(long, short = 'i', value_name = "PATH")]
    pub input: Option<String>,

    /// Write label maps (8-bit PNG) into DIR.
    #[arg(long, value_name = "DIR")]
    pub labels: Option<PathBuf>,

    /// Write colour maps into DIR.
    #[arg(long, value_name = "DIR")]
    pub color: Option<PathBuf>,

    /// Write overlays (colours blended over the image) into DIR.
    #[arg(long, value_name = "DIR")]
    pub overlay: Option<PathBuf>,

    /// Values of the label PNGs.
    #[arg(long, value_name = "IDS", default_value = "train")]
    pub label_ids: LabelIds,

    /// How labels reach the frame size: exact = bilinear upsampling of the logits, then argmax
    /// (the official evaluation); fast = argmax at 1/4 resolution, then nearest upsampling.
    #[arg(long, value_name = "MODE", default_value = "exact")]
    pub upsample: Upsample,

    /// Weight of the class colour in overlays, 0..1.
    #[arg(long, value_name = "A", default_value = "0.5", value_parser = parse_unit)]
    pub alpha: f32,

    /// Inference backend.
    #[arg(long, value_name = "NAME", default_value = "auto")]
    pub backend: BackendKind,

    /// Threads for the network (0 = all cores).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,

    /// Do not print a line per frame (the summary and errors are still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let overrides = args.model.overrides()?;
    let model = OnnxModel::open_or_builtin(args.model.model.as_deref(), &overrides)?;
    let mut source = source::open(args.input.as_deref())?;
    let options = SegmenterOptions {
        backend: args.backend,
        threads: args.threads,
        input_size: args.model.input_size,
        upsample: args.upsample,
        alpha: args.alpha,
    };
    let mut segmenter = Segmenter::new(&model, &options)?;

    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let outputs = [
        (&args.labels, PngKind::Labels(args.label_ids)),
        (&args.color, PngKind::Color),
        (&args.overlay, PngKind::Overlay),
    ];
    for (dir, kind) in outputs {
        if let Some(dir) = dir {
            sinks.push(Box::new(PngDirSink::new(dir, kind, segmenter.classes())?));
        }
    }
    if sinks.is_empty() {
        log::warn!("no output requested (--labels, --color, --overlay): frames are segmented and timed only");
    }

    let spec = segmenter.preproc_spec();
    log::info!(
        "model {} on {}: input {}x{} (HxW), {} classes, mean {:?}, std {:?}, {}, upsample {}",
        model.name,
        segmenter.backend().describe(),
        spec.input_height,
        spec.input_width,
        segmenter.classes().len(),
        spec.mean,
        spec.std,
        spec.channel_order.name(),
        args.upsample.name()
    );
    let info = source.info().clone();
    log::info!(
        "input {} ({}, {} frames)",
        info.uri,
        info.kind,
        info.frame_count.map_or("?".into(), |n| n.to_string())
    );
    for sink in &sinks {
        log::info!("output {}", sink.describe());
    }

    let progress = progress_bar(info.frame_count, args.quiet);
    let total = info.frame_count.map_or(String::new(), |n| format!("/{n}"));
    let mut stdout = std::io::stdout().lock();
    let mut summary = pipeline::run(source.as_mut(), &mut segmenter, &mut sinks, |event| {
        match event {
            FrameEvent::Written(frame) => {
                if !args.quiet {
                    let _ = writeln!(
                        stdout,
                        "[{}{total}] {} {}x{}: {}",
                        frame.index + 1,
                        frame.name,
                        frame.image.width,
                        frame.image.height,
                        frame.timings.summary()
                    );
                }
            }
            FrameEvent::Failed(failure) => progress.suspend(|| {
                eprintln!("error: skipped frame {} ({}): {}", failure.index + 1, failure.name, failure.reason)
            }),
        }
        progress.inc(1);
    });
    progress.finish_and_clear();
    if let Some(error) = summary.stopped_by.take() {
        return Err(anyhow::Error::new(error)).with_context(|| {
            format!("run stopped after {} of {} frames were written", summary.frames_out, summary.frames_in)
        });
    }

    let _ = writeln!(
        stdout,
        "{} frames in, {} written, {} failed",
        summary.frames_in,
        summary.frames_out,
        summary.failed.len()
    );
    if summary.frames_out > 0 {
        let _ = writeln!(
            stdout,
            "{:<12} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "stage (ms)", "mean", "p50", "p90", "p99", "max"
        );
        let rows = Stage::ALL
            .iter()
            .map(|s| (s.name(), summary.stats.stage(*s)))
            .chain([("total", summary.stats.total())]);
        for (name, stats) in rows {
            if let Some(s) = stats.summary() {
                let _ = writeln!(
                    stdout,
                    "{name:<12} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
                );
            }
        }
    }
    if !summary.failed.is_empty() {
        // Each failed frame was reported on stderr as it happened; the counts are above.
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on stderr when it is a terminal and per-frame lines are not already printed
/// to the same terminal.
fn progress_bar(len: Option<u64>, quiet: bool) -> indicatif::ProgressBar {
    let lines_on_terminal = !quiet && std::io::stdout().is_terminal();
    if !std::io::stderr().is_terminal() || lines_on_terminal {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} frames, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
