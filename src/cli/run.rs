//! `semask-edge run`: segment frames from an input and write the requested outputs.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use semask_edge::named::Named;
use semask_edge::pipeline::{self, FrameEvent, Pacing};
use semask_edge::postprocess::Upsample;
use semask_edge::sink::images::{LabelIds, PngKind};
use semask_edge::sink::{self, NullSink, Sink, SinkOptions, SinkUri, WrittenPath};

use super::{InferenceArgs, ModelArgs, STOP, SourceArgs, parse_unit, print_summary};

pub const LONG_ABOUT: &str = "\
Segment frames from an input (images, video, camera, synthetic scenes); write label maps,
colour maps, overlays and per-frame statistics.

For every frame, each requested output directory receives <DIR>/<name>.png, where <name> is
the input file stem, or the frame's index (%06d) for videos, cameras and synth://:
  --labels   8-bit single-channel PNG of class indices (Cityscapes train ids 0..18), at the
             frame's size; --label-ids cityscapes writes Cityscapes label ids instead
             (7 road, 8 sidewalk, ...), ready for cityscapesscripts.
  --color    the class colour of every pixel.
  --overlay  the class colours blended over the image (--alpha).
  --stats    one JSON line per frame: stage times, end-to-end latency, drops.
-o OUTPUT (several allowed) writes overlays to a video (.mp4, .mjpeg), a PNG directory (DIR/),
statistics (.jsonl), a live browser view (http://HOST:PORT: open it in a browser), and with
the `gstreamer` build a window (display://0), an RTSP server (rtsp://@:8554/out) or an RTP
stream (rtp://HOST:PORT).

Capture, inference and output run on three threads. Files are replayed losslessly; cameras
(and --realtime replays) drop stale frames when the network falls behind, and count them.
A frame that cannot be decoded is reported, counted and skipped; the exit status is then 1.
Ctrl-C stops capturing, finishes the frames in flight and closes every output.

Examples:
  semask-edge run --overlay out/overlay --frames 60           # built-in model on synth://
  semask-edge run -m model.onnx -i leftImg8bit/val --labels pred --label-ids cityscapes
  semask-edge run -m model.onnx -i street.jpg --color out --upsample fast
  semask-edge run -m model.onnx -i drive.mp4 -o overlay.mp4 --labels out/ --stats drive.jsonl
  semask-edge run -m model.onnx -i drive.mp4 --realtime -o http://:8080   # watch at http://localhost:8080/
  semask-edge run -m model.onnx -i v4l2:///dev/video0 --input-width 1280 --input-height 720 -o live.mp4
  semask-edge run -m model.onnx -i csi://0 -o display://0 -o rtsp://@:8554/out   # gstreamer build";

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub source: SourceArgs,

    #[command(flatten)]
    pub inference: InferenceArgs,

    /// Write label maps (8-bit PNG) into DIR.
    #[arg(long, value_name = "DIR")]
    pub labels: Option<PathBuf>,

    /// Write colour maps into DIR.
    #[arg(long, value_name = "DIR")]
    pub color: Option<PathBuf>,

    /// Write overlays (colours blended over the image) into DIR.
    #[arg(long, value_name = "DIR")]
    pub overlay: Option<PathBuf>,

    /// Write the overlays to OUTPUT; give -o several times for several outputs. OUTPUT is
    /// FILE.mp4 (H.264) or FILE.mjpeg (a video at the input's frame rate: --input-rate, else
    /// 30, for inputs without one), DIR/ (one overlay PNG per frame), FILE.jsonl (as --stats),
    /// http://HOST:PORT (a live view in a browser; http://:8080 serves on localhost, 0.0.0.0
    /// on every network) or null:// (nothing). With the `gstreamer` build also display://0 (a
    /// window, FPS and latency written on it), rtsp://@:8554/out (an RTSP server; @ = every
    /// interface, 127.0.0.1 = this machine) and rtp://HOST:PORT (RTP over UDP); both take
    /// #codec=h264|h265&bitrate=KBPS.
    #[arg(long, short = 'o', value_name = "OUTPUT")]
    pub output: Vec<String>,

    /// Write one JSON line of timings per frame into FILE.
    #[arg(long, value_name = "FILE.jsonl")]
    pub stats: Option<PathBuf>,

    /// Values of the label PNGs.
    #[arg(long, value_name = "IDS", default_value = "train", value_parser = super::choice::<LabelIds>())]
    pub label_ids: LabelIds,

    /// How labels reach the frame size [default: the device profile's: exact on a CPU, fast on
    /// an Orin Nano].
    #[arg(long, value_name = "MODE", value_parser = super::choice::<Upsample>())]
    pub upsample: Option<Upsample>,

    /// Weight of the class colour in overlays, 0..1.
    #[arg(long, value_name = "A", default_value = "0.5", value_parser = parse_unit)]
    pub alpha: f32,

    /// Stop after N frames, N >= 1 (default: the whole input).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub frames: Option<u64>,

    /// Do not print a line per frame (the summary and errors are still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(args: RunArgs, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let overrides = args.model.overrides()?;
    let (mut source, mut pipeline_options) = args.source.open(None, ctx)?;
    pipeline_options.max_frames = args.frames;

    let mut outputs: Vec<(&str, SinkUri)> = Vec::new();
    for uri in &args.output {
        outputs.push(("--output", SinkUri::parse(uri)?));
    }
    let png_dirs = [
        ("--labels", &args.labels, PngKind::Labels(args.label_ids)),
        ("--color", &args.color, PngKind::Color),
        ("--overlay", &args.overlay, PngKind::Overlay),
    ];
    for (flag, dir, kind) in png_dirs {
        if let Some(dir) = dir {
            outputs.push((flag, SinkUri::PngDir { dir: dir.clone(), kind }));
        }
    }
    if let Some(path) = &args.stats {
        outputs.push(("--stats", SinkUri::Stats(path.clone())));
    }
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for (flag, uri) in &outputs {
        match uri.written_path() {
            Some(WrittenPath::File(path)) => files.push((*flag, path)),
            Some(WrittenPath::Dir(dir)) => dirs.push((*flag, dir)),
            None => {}
        }
    }
    super::input_files(&args.model, source.as_ref()).check_outputs(&files, &dirs)?;

    let upsample = args.upsample.unwrap_or(ctx.profile.upsample);
    let options = args.inference.segmenter_options(&args.model, upsample, args.alpha, ctx);
    let mut segmenter = super::open_segmenter(args.model.model.as_deref(), &overrides, &options)?;
    super::note_artifact(options.precision, segmenter.backend());

    let sink_options = SinkOptions {
        classes: segmenter.classes(),
        label_ids: args.label_ids,
        frame_rate: source.info().nominal_fps.or(args.source.input_rate),
        stop: Some(&super::STOP),
    };
    let mut sinks = outputs
        .iter()
        .map(|(_, uri)| sink::open(uri, &sink_options))
        .collect::<Result<Vec<Box<dyn Sink>>, _>>()?;
    if sinks.is_empty() {
        log::warn!(
            "no output requested (-o, --labels, --color, --overlay, --stats): frames are segmented and timed only"
        );
        sinks.push(Box::new(NullSink));
    }

    let spec = segmenter.preproc_spec();
    log::info!(
        "model {} on {}: input {}x{} (WxH), {} classes, mean {:?}, std {:?}, {}, upsample {}",
        segmenter.model_name(),
        segmenter.backend().describe(),
        spec.input_width,
        spec.input_height,
        segmenter.classes().len(),
        spec.mean,
        spec.std,
        spec.channel_order.name(),
        upsample.name()
    );
    let info = source.info().clone();
    log::info!(
        "input {} ({}, {} frames, {}, {})",
        info.uri,
        info.kind,
        info.frame_count.map_or("?".into(), |n| n.to_string()),
        info.nominal_fps.map_or("no frame rate".into(), |f| format!("{f:.2} fps")),
        match pipeline_options.pacing {
            Pacing::Lossless => "lossless replay".to_string(),
            Pacing::Live => "live: stale frames are dropped".to_string(),
            Pacing::Realtime { fps } => format!("replayed live at {fps:.2} fps: stale frames are dropped"),
        }
    );
    for sink in &sinks {
        log::info!("output {}", sink.describe());
    }

    super::install_ctrlc_handler();
    let expected = match info.frame_count.and_then(|n| pipeline_options.repeat.total_frames(n)) {
        Some(n) => Some(args.frames.map_or(n, |max| n.min(max))),
        None => args.frames,
    };
    let progress = progress_bar(expected, args.quiet);
    let total = expected.map_or(String::new(), |n| format!("/{n}"));
    let quiet = args.quiet;
    let mut summary = {
        let progress = &progress;
        pipeline::run(source.as_mut(), &mut segmenter, &mut sinks, &pipeline_options, &STOP, move |event| {
            match event {
                FrameEvent::Written(frame) if !quiet => {
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(
                        stdout,
                        "[{}{total}] {} {}x{}: {}",
                        frame.index + 1,
                        frame.name,
                        frame.image.width,
                        frame.image.height,
                        frame.timings
                    );
                }
                FrameEvent::Failed(frame) => progress.suspend(|| {
                    eprintln!("error: skipped frame {} ({}): {}", frame.index + 1, frame.name, frame.error)
                }),
                _ => {}
            }
            progress.inc(1);
        })
    };
    progress.finish_and_clear();
    if let Some(error) = summary.stopped_by.take() {
        return Err(anyhow::Error::new(error)).with_context(|| {
            format!("run stopped after {} of {} frames were written", summary.frames_out, summary.frames_in)
        });
    }
    // A closed stdout (`| head`) is not an error of the run.
    if let Err(e) = print_summary(&mut std::io::stdout().lock(), &summary)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    if !summary.failed.is_empty() {
        // Each failed frame was reported on stderr as it happened; the counts are above.
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar unless per-frame lines are already printed to the same terminal.
fn progress_bar(len: Option<u64>, quiet: bool) -> indicatif::ProgressBar {
    let lines_on_terminal = !quiet && std::io::stdout().is_terminal();
    semask_edge::progress::bar(len, "frames", !lines_on_terminal)
}
