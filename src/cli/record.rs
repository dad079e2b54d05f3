//! `semask-edge record`: save a camera (or any input) to an MJPEG stream file that `run`, `bench`
//! and ffmpeg can replay. MJPEG cameras are recorded as they deliver (no re-encoding); other
//! inputs are encoded to JPEG ([`semask_edge::sink::jpeg`]).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use semask_edge::files::{InputFiles, InputRole, PartialFile};
use semask_edge::frame::Frame;
use semask_edge::source::{Captured, Source, SourceUri};

use super::{STOP, SourceArgs};

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// The MJPEG file to write (.mjpeg).
    #[arg(long, short = 'o', value_name = "FILE.mjpeg")]
    pub output: PathBuf,

    /// Stop after N frames, N >= 1 (default: until Ctrl-C, or the end of a file input).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub frames: Option<u64>,
}

/// Where recorded frames come from.
enum Recorder {
    /// An MJPEG camera: its JPEG frames are stored as delivered. (Boxed: the capture holds
    /// its mapped buffers' table, ~350 bytes.)
    #[cfg(feature = "camera")]
    Camera(Box<semask_edge::source::v4l2::RawCapture>),
    /// Any other input: frames are decoded and encoded to JPEG.
    Decoded(Box<dyn Source>),
}

/// What a recording did.
#[derive(Default)]
struct Counts {
    written: u64,
    failed: u64,
}

pub fn record(args: RecordArgs, ctx: &super::Context) -> anyhow::Result<ExitCode> {
    let ext = args.output.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext != "mjpeg" && ext != "mjpg" {
        anyhow::bail!(
            "--output {}: record writes MJPEG streams; name the file .mjpeg",
            args.output.display()
        );
    }
    let uri = SourceUri::parse(args.source.input.as_deref());
    let mut recorder = open(&uri, &args, ctx)?;
    let mut inputs = InputFiles::default();
    if let Recorder::Decoded(source) = &recorder {
        inputs.add_all(source.input_files(), InputRole::Frames);
    }
    inputs.check_output(&args.output, "--output")?;
    let mut out = PartialFile::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    super::install_ctrlc_handler();
    let start = Instant::now();
    let limit = args.frames.unwrap_or(u64::MAX);
    let counts = match &mut recorder {
        #[cfg(feature = "camera")]
        Recorder::Camera(camera) => record_camera(camera, limit, &mut out)?,
        Recorder::Decoded(source) => record_decoded(source.as_mut(), limit, &mut out)?,
    };
    if counts.written == 0 {
        drop(out); // removes the partial file
        anyhow::bail!(
            "no frame was recorded from {uri} ({} failed); {} not created",
            counts.failed,
            args.output.display()
        );
    }
    out.commit().with_context(|| format!("cannot write {}", args.output.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{} frames recorded to {} in {:.1} s ({:.1} fps), {} failed",
        counts.written,
        args.output.display(),
        seconds,
        counts.written as f64 / seconds.max(1e-9),
        counts.failed
    );
    // Each failed frame was reported as it happened.
    Ok(if counts.failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn open(uri: &SourceUri, args: &RecordArgs, ctx: &super::Context) -> anyhow::Result<Recorder> {
    let options = args.source.source_options(ctx);
    #[cfg(feature = "camera")]
    if let SourceUri::Camera(path) = uri {
        use semask_edge::source::v4l2::RawCapture;
        match RawCapture::open(path, &options) {
            Ok(camera) => {
                log::info!("recording {} ({}) as delivered", path.display(), camera.mode());
                return Ok(Recorder::Camera(Box::new(camera)));
            }
            // Not an MJPEG camera: decode and re-encode like any other input.
            Err(semask_edge::source::SourceError::Unsupported { reason, .. }) => {
                log::info!("{reason}; frames are encoded to JPEG");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let _ = uri;
    let source = semask_edge::source::open(args.source.input.as_deref(), &options)?;
    log::info!("recording {}", source.info().uri);
    Ok(Recorder::Decoded(source))
}

#[cfg(feature = "camera")]
fn record_camera(
    camera: &mut semask_edge::source::v4l2::RawCapture,
    limit: u64,
    out: &mut impl Write,
) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    while counts.written < limit && !STOP.load(Ordering::Relaxed) {
        if camera.next(|jpeg| out.write_all(jpeg))? {
            counts.written += 1;
        }
    }
    Ok(counts)
}

/// Any source: decode each frame and encode it to JPEG.
fn record_decoded(source: &mut dyn Source, limit: u64, out: &mut impl Write) -> anyhow::Result<Counts> {
    let (mut frame, mut jpeg, mut counts) = (Frame::default(), Vec::new(), Counts::default());
    while counts.written < limit && !STOP.load(Ordering::Relaxed) {
        match source.next(&mut frame) {
            Ok(Captured::Frame) => {}
            Ok(Captured::Timeout) => continue,
            Ok(Captured::EndOfStream) => break,
            Err(e) if e.is_bad_frame() => {
                eprintln!("error: skipped {e}");
                counts.failed += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        semask_edge::sink::jpeg::encode(&frame.image, &mut jpeg)?;
        out.write_all(&jpeg)?;
        counts.written += 1;
    }
    Ok(counts)
}
