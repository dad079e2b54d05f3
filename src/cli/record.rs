//! `semask-edge record`: save a camera (or any input) to an MJPEG stream file that `run`, `bench`
//! and ffmpeg can replay. MJPEG cameras are recorded as they deliver (no re-encoding); other
//! inputs are encoded to JPEG (quality 92).

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use image::ImageEncoder;

use semask_edge::frame::Frame;
use semask_edge::source::{Captured, SourceUri};

use super::{STOP, SourceArgs};

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// The MJPEG file to write (.mjpeg).
    #[arg(long, short = 'o', value_name = "FILE.mjpeg")]
    pub output: PathBuf,

    /// Stop after N frames (default: until Ctrl-C, or the end of a file input).
    #[arg(long, value_name = "N")]
    pub frames: Option<u64>,
}

pub fn record(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let ext = args.output.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if ext != "mjpeg" && ext != "mjpg" {
        anyhow::bail!(
            "--output {}: record writes MJPEG streams; name the file .mjpeg",
            args.output.display()
        );
    }
    let mut partial = args.output.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file =
        std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = BufWriter::new(file);
    super::install_ctrlc_handler();
    let start = Instant::now();
    let limit = args.frames.unwrap_or(u64::MAX);

    let uri = SourceUri::parse(args.source.input.as_deref());
    let written = match &uri {
        #[cfg(feature = "camera")]
        SourceUri::Camera(path) => record_camera(path, &args, limit, &mut out)?,
        _ => record_any(&args, limit, &mut out)?,
    };
    out.flush().with_context(|| format!("cannot write {}", partial.display()))?;
    drop(out);
    if written == 0 {
        let _ = std::fs::remove_file(&partial);
        anyhow::bail!("no frame was recorded from {uri}; {} not created", args.output.display());
    }
    std::fs::rename(&partial, &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{} frames recorded to {} in {:.1} s ({:.1} fps)",
        written,
        args.output.display(),
        seconds,
        written as f64 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "camera")]
fn record_camera(
    path: &std::path::Path,
    args: &RecordArgs,
    limit: u64,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    use semask_edge::source::v4l2::RawCapture;
    let mut camera = match RawCapture::open(path, &args.source.source_options()) {
        Ok(camera) => camera,
        // Not an MJPEG camera: decode and re-encode like any other input.
        Err(semask_edge::source::SourceError::Unsupported { reason, .. }) => {
            log::info!("{reason}; frames are encoded to JPEG");
            return record_any(args, limit, out);
        }
        Err(e) => return Err(e.into()),
    };
    log::info!("recording {} ({}) as delivered", path.display(), camera.mode());
    let mut written = 0;
    while written < limit && !STOP.load(Ordering::Relaxed) {
        if camera.next(|jpeg| out.write_all(jpeg))? {
            written += 1;
        }
    }
    Ok(written)
}

/// Any source: decode each frame and encode it to JPEG.
fn record_any(args: &RecordArgs, limit: u64, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut source = semask_edge::source::open(args.source.input.as_deref(), &args.source.source_options())?;
    log::info!("recording {}", source.info().uri);
    let (mut frame, mut jpeg, mut written) = (Frame::default(), Vec::new(), 0u64);
    while written < limit && !STOP.load(Ordering::Relaxed) {
        match source.next(&mut frame) {
            Ok(Captured::Frame) => {}
            Ok(Captured::Timeout) => continue,
            Ok(Captured::EndOfStream) => break,
            Err(e) if e.is_bad_frame() => {
                eprintln!("error: skipped {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        jpeg.clear();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 92).write_image(
            &frame.image.data,
            frame.image.width as u32,
            frame.image.height as u32,
            image::ExtendedColorType::Rgb8,
        )?;
        out.write_all(&jpeg)?;
        written += 1;
    }
    Ok(written)
}
