//! Where frames come from: one [`Source`] trait, chosen by the `--input` string.
//!
//! | `--input` | source |
//! |---|---|
//! | `photo.png`, `file://photo.jpg` | one image |
//! | `frames/`, `file://frames/` | every PNG/JPEG under the directory (subdirectories too), in natural order |
//! | `'frames/*.png'` | the PNG/JPEG files a glob pattern matches, in natural order |
//! | `synth://?seed=3&frames=300&size=1024x512&fps=30`, or nothing | procedural driving scenes with exact labels ([`synth`]) |
//! | `drive.mp4` | H.264 video in MP4 ([`mp4`]); with the `gstreamer` feature also H.265 and `.mkv`, and hardware decode on a Jetson ([`gst`], see `open_video_file`) |
//! | `drive.mjpeg` (`.mjpg`) | concatenated JPEG frames, as `semask-edge record` writes ([`mjpeg`]) |
//! | `v4l2:///dev/video0`, `/dev/video0` | a V4L2 camera |
//! | `rtsp://…`, `rtp://@:PORT`, `csi://N`, `gst://PIPELINE` | GStreamer ([`gst`], cargo feature `gstreamer`) |
//!
//! The rest of the program never asks where frames come from: it calls [`Source::next`] with a
//! recycled [`Frame`] until [`Captured::EndOfStream`].

#[cfg(feature = "gstreamer")]
pub mod gst;
pub mod images;
pub mod mjpeg;
pub mod mp4;
pub mod synth;
#[cfg(feature = "camera")]
pub mod v4l2;
pub mod yuv;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::files::file_kind;
use crate::frame::Frame;
use crate::limits::Limits;

/// What [`Source::next`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Captured {
    /// The frame was filled.
    Frame,
    /// Nothing arrived in time (live sources); call again.
    Timeout,
    /// The source is exhausted.
    EndOfStream,
}

/// Facts about a source, for progress bars and reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceInfo {
    /// The input as the user gave it (canonical form for `synth://`).
    pub uri: String,
    /// Short kind: `image`, `images`, `synth`…
    pub kind: &'static str,
    /// Number of frames, when known in advance.
    pub frame_count: Option<u64>,
    /// Nominal frame rate, when the source has one.
    pub nominal_fps: Option<f64>,
    /// Live sources drop frames when the pipeline falls behind; file sources never do.
    pub live: bool,
}

/// Why a source could not open or produce a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("input {path} does not exist; check the path")]
    NotFound { path: PathBuf },
    #[error("input {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "input directory {path} holds no PNG or JPEG images; point --input at a folder of .png/.jpg files"
    )]
    EmptyDirectory { path: PathBuf },
    #[error("input {input}: {reason}")]
    Unsupported { input: String, reason: String },
    #[error("input {input}: frames {first} and {second} would both be written as {name}.png; rename one")]
    NameClash { input: String, first: String, second: String, name: String },
    /// One frame could not be read or decoded; the source can go on with the next.
    #[error("frame {index} ({name}): {reason}")]
    BadFrame { index: u64, name: String, reason: String },
}

impl SourceError {
    /// True for errors confined to one frame: the run counts it and continues.
    pub fn is_bad_frame(&self) -> bool {
        matches!(self, SourceError::BadFrame { .. })
    }
}

/// A stream of frames.
pub trait Source: Send {
    fn info(&self) -> &SourceInfo;

    /// Fills `frame` with the next frame (index, name, capture time, pixels, decode time).
    ///
    /// A [`SourceError::BadFrame`] skips one frame; the next call continues after it. Any other
    /// error means the source cannot go on.
    fn next(&mut self, frame: &mut Frame) -> Result<Captured, SourceError>;

    /// Starts again from the first frame (`--input-loop`). `Ok(false)` when the source cannot
    /// (a camera).
    fn rewind(&mut self) -> Result<bool, SourceError> {
        Ok(false)
    }

    /// The files this source reads (images, a video): outputs must never overwrite them.
    fn input_files(&self) -> Vec<&Path> {
        Vec::new()
    }
}

/// When a lost live source (a camera, a network stream) tries to open again: at once, then
/// after 0.5 s, doubling to 4 s between failed attempts. One schedule for every live source.
#[cfg(any(feature = "camera", feature = "gstreamer"))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// When the source was lost.
    pub since: std::time::Instant,
    next: std::time::Instant,
    delay: std::time::Duration,
}

#[cfg(any(feature = "camera", feature = "gstreamer"))]
impl Backoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(250);
    const LONGEST: std::time::Duration = std::time::Duration::from_secs(4);

    /// The source was lost just now.
    pub fn new() -> Backoff {
        let now = std::time::Instant::now();
        Backoff { since: now, next: now, delay: Backoff::FIRST }
    }

    /// Whether an attempt is due; if not, sleeps a little (at most 0.1 s, so that the caller
    /// can return a timeout and Ctrl-C still stops the run).
    pub fn due(&self) -> bool {
        let now = std::time::Instant::now();
        if now < self.next {
            std::thread::sleep((self.next - now).min(std::time::Duration::from_millis(100)));
            return false;
        }
        true
    }

    /// An attempt failed: the next one waits twice as long as the last wait (at most 4 s).
    pub fn failed(&mut self) {
        self.delay = (self.delay * 2).min(Backoff::LONGEST);
        self.next = std::time::Instant::now() + self.delay;
    }
}

/// The `--input` string, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUri {
    /// A file or directory on disk (`file://` stripped).
    Path(PathBuf),
    /// A V4L2 camera device (`v4l2:///dev/videoN` or `/dev/videoN`).
    Camera(PathBuf),
    /// The procedural scene generator, with its query string.
    Synth(String),
    /// A GStreamer input: `rtsp://`, `rtp://`, `csi://`, `gst://` (the whole string).
    Streamed(String),
}

impl SourceUri {
    /// Classifies `--input`; no input is the default `synth://`.
    pub fn parse(input: Option<&str>) -> SourceUri {
        let Some(input) = input else { return SourceUri::Synth(String::new()) };
        if let Some(rest) = input.strip_prefix("v4l2://") {
            return SourceUri::Camera(PathBuf::from(rest));
        }
        if input.starts_with("/dev/video") {
            return SourceUri::Camera(PathBuf::from(input));
        }
        if let Some(rest) = input.strip_prefix("synth://") {
            return SourceUri::Synth(rest.trim_start_matches('?').to_string());
        }
        if ["rtsp://", "rtsps://", "rtp://", "csi://", "gst://"].iter().any(|s| input.starts_with(s)) {
            return SourceUri::Streamed(input.to_string());
        }
        SourceUri::Path(PathBuf::from(input.strip_prefix("file://").unwrap_or(input)))
    }
}

impl fmt::Display for SourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceUri::Path(p) => write!(f, "{}", p.display()),
            SourceUri::Camera(p) => write!(f, "v4l2://{}", p.display()),
            SourceUri::Synth(q) => write!(f, "synth://?{q}"),
            SourceUri::Streamed(uri) => f.write_str(uri),
        }
    }
}

/// Requests for sources that negotiate (cameras) or lack a rate (images with `--realtime`),
/// and the size limits every source checks its frames against.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SourceOptions {
    /// Desired capture width (`--input-width`).
    pub width: Option<u32>,
    /// Desired capture height (`--input-height`).
    pub height: Option<u32>,
    /// Desired frame rate (`--input-rate`).
    pub rate: Option<f64>,
    /// Camera pixel format to prefer when offered (a device profile's `camera.pixel_format`).
    pub pixel_format: Option<[u8; 4]>,
    /// Largest frame accepted (`--max-pixels`).
    pub limits: Limits,
}

/// Opens the source `input` names (`None`: the default `synth://`).
pub fn open(input: Option<&str>, options: &SourceOptions) -> Result<Box<dyn Source>, SourceError> {
    let uri = SourceUri::parse(input);
    let unsupported =
        |reason: &str| SourceError::Unsupported { input: uri.to_string(), reason: reason.to_string() };
    if let Some(rate) = options.rate {
        crate::limits::check_fps(rate, "--input-rate").map_err(|e| unsupported(&e.to_string()))?;
    }
    match &uri {
        #[cfg(feature = "camera")]
        SourceUri::Camera(path) => Ok(Box::new(v4l2::V4l2Source::open(path, options)?)),
        #[cfg(not(feature = "camera"))]
        SourceUri::Camera(_) => Err(unsupported(
            "this build has no camera support: rebuild with the `camera` feature (default), which needs libclang-dev",
        )),
        #[cfg(feature = "gstreamer")]
        SourceUri::Streamed(input) => Ok(Box::new(gst::GstSource::open(input, options)?)),
        #[cfg(not(feature = "gstreamer"))]
        SourceUri::Streamed(_) => Err(unsupported(
            "network streams and CSI cameras need GStreamer: build with `--features gstreamer` \
             (scripts/prerequisites.sh gstreamer installs its packages)",
        )),
        SourceUri::Synth(query) => {
            let config = synth::SynthConfig::parse(query).map_err(|e| unsupported(&e.to_string()))?;
            options
                .limits
                .check_frame(config.width as u64, config.height as u64)
                .map_err(|e| unsupported(&e.to_string()))?;
            Ok(Box::new(synth::SynthSource::new(config)))
        }
        SourceUri::Path(path) if !path.exists() && path.to_string_lossy().contains(['*', '?', '[']) => {
            Ok(Box::new(images::ImageSource::glob(&path.to_string_lossy(), options.limits)?))
        }
        SourceUri::Path(path) => open_path(path, options),
    }
}

fn open_path(path: &Path, options: &SourceOptions) -> Result<Box<dyn Source>, SourceError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SourceError::NotFound { path: path.to_path_buf() },
        _ => SourceError::Unreadable { path: path.to_path_buf(), reason: e.to_string() },
    })?;
    if meta.is_dir() {
        return Ok(Box::new(images::ImageSource::directory(path, options.limits)?));
    }
    if !meta.is_file() {
        return Err(SourceError::Unreadable {
            path: path.to_path_buf(),
            reason: format!(
                "is a {}, not a regular file; give a file, a directory, or a camera as v4l2:///dev/videoN",
                file_kind(&meta)
            ),
        });
    }
    if images::ImageFormat::from_path(path).is_some() {
        return Ok(Box::new(images::ImageSource::single(path, options.limits)));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "mp4" | "m4v" | "mov" | "mkv" => open_video_file(path, &ext, options),
        "mjpeg" | "mjpg" => Ok(Box::new(mjpeg::MjpegSource::open(path, options.rate, options.limits)?)),
        _ => Err(SourceError::Unsupported {
            input: path.display().to_string(),
            reason: "not a known input: use an image (.png, .jpg), a directory, a video (.mp4, .mjpeg), \
                     a camera (v4l2:///dev/video0) or synth://"
                .into(),
        }),
    }
}

/// A video file. Our MP4 reader with openh264 decodes H.264 in software and knows the frame
/// count. With the `gstreamer` feature, GStreamer's `decodebin` takes the file instead where
/// NVIDIA's hardware decoder is (a Jetson: 1080p and 4K replays then cost the CPU nothing), and
/// takes what our reader cannot (H.265, Matroska) everywhere.
fn open_video_file(path: &Path, ext: &str, options: &SourceOptions) -> Result<Box<dyn Source>, SourceError> {
    #[cfg(feature = "gstreamer")]
    if gst::prefer_hardware_decoding() {
        log::info!("{}: decoded in hardware (GStreamer, nvv4l2decoder)", path.display());
        return Ok(Box::new(gst::GstSource::open_file(path, options)?));
    }
    let builtin = if ext == "mkv" {
        Err(SourceError::Unsupported {
            input: path.display().to_string(),
            reason: "Matroska needs GStreamer: build with `--features gstreamer`, or remux to MP4 with \
                     `ffmpeg -i in.mkv -c copy out.mp4`"
                .into(),
        })
    } else {
        mp4::Mp4Source::open(path, &options.limits)
    };
    match builtin {
        Ok(source) => Ok(Box::new(source)),
        #[cfg(feature = "gstreamer")]
        Err(SourceError::Unsupported { .. }) => {
            log::info!("{}: not H.264 in MP4; GStreamer decodes it", path.display());
            Ok(Box::new(gst::GstSource::open_file(path, options)?))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(feature = "camera", feature = "gstreamer"))]
    #[test]
    fn reconnection_waits_double_up_to_four_seconds() {
        let mut backoff = Backoff::new();
        assert!(backoff.due(), "the first attempt is at once");
        let waits: Vec<u64> = (0..6)
            .map(|_| {
                backoff.failed();
                backoff.delay.as_millis() as u64
            })
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 4000, 4000]);
        assert!(!backoff.due());
    }

    #[test]
    fn inputs_are_classified() {
        assert_eq!(SourceUri::parse(None), SourceUri::Synth(String::new()));
        assert_eq!(SourceUri::parse(Some("v4l2:///dev/video1")), SourceUri::Camera("/dev/video1".into()));
        assert_eq!(SourceUri::parse(Some("/dev/video0")), SourceUri::Camera("/dev/video0".into()));
        assert_eq!(SourceUri::parse(Some("synth://?seed=3")), SourceUri::Synth("seed=3".into()));
        assert_eq!(SourceUri::parse(Some("file://a/b.png")), SourceUri::Path("a/b.png".into()));
        assert_eq!(SourceUri::parse(Some("frames/")), SourceUri::Path("frames/".into()));
    }

    #[test]
    fn unknown_files_and_missing_paths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("notes.txt");
        std::fs::write(&txt, "x").unwrap();
        let options = SourceOptions::default();
        assert!(matches!(open(Some(txt.to_str().unwrap()), &options), Err(SourceError::Unsupported { .. })));
        let missing = dir.path().join("missing.png");
        assert!(matches!(open(Some(missing.to_str().unwrap()), &options), Err(SourceError::NotFound { .. })));
    }
}
