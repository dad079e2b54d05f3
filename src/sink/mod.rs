//! Where results go: one [`Sink`] trait; every requested output is one sink, and the pipeline
//! hands each frame to all of them. Outputs are named like inputs, by one string ([`SinkUri`]),
//! and opened by one function ([`open`]), so `run` never builds a sink by hand:
//!
//! | `-o` | sink |
//! |---|---|
//! | `overlay.mp4`, `file://overlay.mp4` | the overlay as H.264 in MP4 ([`video`]) |
//! | `overlay.mjpeg` (`.mjpg`) | the overlay as an MJPEG stream ([`video`]) |
//! | `out/` (a trailing `/`) | overlay PNGs, one per frame ([`images`]; `--labels`, `--color` and `--overlay` name the other kinds) |
//! | `stats.jsonl` | one JSON line per frame, as `--stats` ([`stats`]) |
//! | `http://127.0.0.1:8080` | a live view in a web browser ([`browser`]) |
//! | `display://0`, `rtp://HOST:PORT`, `rtsp://@:8554/out` | a window, an RTP stream, an RTSP server (`gst`, cargo feature `gstreamer`) |
//! | `null://` | nothing ([`NullSink`]) |
//!
//! Every file output follows one rule, in
//! [`crate::files`]: written as `<name>.partial` and renamed when whole.

pub mod browser;
pub mod fps;
#[cfg(feature = "gstreamer")]
pub mod gst;
pub mod images;
pub mod jpeg;
pub mod stats;
pub mod video;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use crate::frame::Frame;
use crate::model::ClassTable;
use crate::pipeline::FrameEvent;
use crate::postprocess::Needs;
use images::{LabelIds, PngKind};
use video::VideoFormat;

/// Why an output could not be written. Fatal for the run: the next frame would fail the same way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    #[error("cannot create output directory {path}: {reason}")]
    CreateDir { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("-o {uri}: {reason}")]
    BadUri { uri: String, reason: String },
    #[error("-o {addr}: cannot serve the browser view: {reason}")]
    Serve { addr: String, reason: String },
    /// A display or a network stream failed (GStreamer's reason).
    #[error("-o {uri}: {reason}")]
    Output { uri: String, reason: String },
}

/// A consumer of segmented frames.
pub trait Sink: Send {
    /// What this sink writes, for logs (`labels -> out/labels/`).
    fn describe(&self) -> String;

    /// Derived images this sink reads from the frame besides the label map.
    fn needs(&self) -> Needs;

    /// Writes one segmented frame. When it returns `Ok`, the output is complete on disk.
    fn write(&mut self, frame: &Frame) -> Result<(), SinkError>;

    /// Sees every frame once its fate is final (written, failed or dropped), with its
    /// end-to-end latency; for sinks that keep records rather than images.
    fn record(&mut self, event: &FrameEvent<'_>) -> Result<(), SinkError> {
        let _ = event;
        Ok(())
    }

    /// Flushes and closes (end of the run).
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink that writes nothing: frames are segmented and timed only (`bench`, or `run` without
/// outputs).
#[derive(Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn describe(&self) -> String {
        "nothing (null sink)".into()
    }

    fn needs(&self) -> Needs {
        Needs::default()
    }

    fn write(&mut self, _frame: &Frame) -> Result<(), SinkError> {
        Ok(())
    }
}

/// The port of `http://` outputs that name none.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// One output, as named on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkUri {
    /// A video file of the overlays.
    Video { path: PathBuf, format: VideoFormat },
    /// A directory receiving one PNG per frame.
    PngDir { dir: PathBuf, kind: PngKind },
    /// The JSON-lines statistics file.
    Stats(PathBuf),
    /// The browser view, served at this address.
    Browser(SocketAddr),
    /// An output that needs GStreamer (`display://`, `rtp://`, `rtsp://`).
    Streamed(String),
    /// Nothing.
    Null,
}

impl SinkUri {
    /// Reads an `-o` value. Only the syntax is checked here; files and ports are checked when
    /// the sink opens.
    pub fn parse(uri: &str) -> Result<SinkUri, SinkError> {
        let bad = |reason: &str| SinkError::BadUri { uri: uri.to_string(), reason: reason.to_string() };
        if uri == "null://" || uri == "null" {
            return Ok(SinkUri::Null);
        }
        if let Some(rest) = uri.strip_prefix("http://") {
            return parse_http_address(rest).map(SinkUri::Browser).map_err(|reason| bad(&reason));
        }
        if uri.starts_with("webrtc://") {
            return Err(bad("WebRTC is not supported; stream with rtsp://@:8554/out or watch in a browser \
                 (http://0.0.0.0:8080)"));
        }
        for scheme in ["display://", "rtp://", "rtsp://"] {
            if uri.starts_with(scheme) {
                return Ok(SinkUri::Streamed(uri.to_string()));
            }
        }
        let path_text = uri.strip_prefix("file://").unwrap_or(uri);
        if let Some((scheme, _)) = path_text.split_once("://") {
            return Err(bad(&format!(
                "unknown output scheme {scheme}://; outputs are files (.mp4, .mjpeg, .jsonl, dir/), \
                 http://HOST:PORT or null://"
            )));
        }
        if path_text.is_empty() {
            return Err(bad(
                "empty output; name a file (.mp4, .mjpeg, .jsonl), a directory (dir/) or http://HOST:PORT",
            ));
        }
        let path = PathBuf::from(path_text);
        if path_text.ends_with('/') {
            return Ok(SinkUri::PngDir { dir: path, kind: PngKind::Overlay });
        }
        if let Some(format) = VideoFormat::from_path(&path) {
            return Ok(SinkUri::Video { path, format });
        }
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("jsonl")) {
            return Ok(SinkUri::Stats(path));
        }
        Err(bad("unknown output type; use FILE.mp4, FILE.mjpeg, FILE.jsonl, DIR/ (overlay PNGs), \
             http://HOST:PORT (browser view) or null://"))
    }

    /// The file or directory this output writes, if any, for the checks that keep inputs safe
    /// and outputs apart.
    pub fn written_path(&self) -> Option<WrittenPath<'_>> {
        match self {
            SinkUri::Video { path, .. } | SinkUri::Stats(path) => Some(WrittenPath::File(path)),
            SinkUri::PngDir { dir, .. } => Some(WrittenPath::Dir(dir)),
            SinkUri::Browser(_) | SinkUri::Streamed(_) | SinkUri::Null => None,
        }
    }
}

impl fmt::Display for SinkUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkUri::Video { path, .. } | SinkUri::Stats(path) => write!(f, "{}", path.display()),
            SinkUri::PngDir { dir, .. } => write!(f, "{}/", dir.display().to_string().trim_end_matches('/')),
            SinkUri::Browser(addr) => write!(f, "http://{addr}"),
            SinkUri::Streamed(uri) => f.write_str(uri),
            SinkUri::Null => f.write_str("null://"),
        }
    }
}

/// A path an output writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrittenPath<'a> {
    File(&'a Path),
    Dir(&'a Path),
}

/// `HOST:PORT`, `:PORT`, `HOST` or nothing (an optional trailing `/`): localhost and port 8080
/// unless given. A wider address (`0.0.0.0`) is the user's explicit choice.
fn parse_http_address(rest: &str) -> Result<SocketAddr, String> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err("the browser view is served at the root; give only http://HOST:PORT".into());
    }
    if rest.contains('@') {
        return Err("the browser view has no credentials; give http://HOST:PORT".into());
    }
    // `[::1]:8080`, `host:8080`, `:8080`, `host`, ``.
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            let port =
                port.parse::<u16>().map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
            (host, port)
        }
        _ => (rest, DEFAULT_HTTP_PORT),
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("host {host} has no address"))
}

/// What sinks need to know of the run when they open.
#[derive(Debug, Clone, Copy)]
pub struct SinkOptions<'a> {
    /// The model's classes (label PNGs, the browser view's legend).
    pub classes: &'a ClassTable,
    /// Values of label PNGs.
    pub label_ids: LabelIds,
    /// The rate videos play at: the input's own or `--input-rate`. Without one, videos play
    /// at [`DEFAULT_VIDEO_FPS`] (and say so).
    pub frame_rate: Option<f64>,
    /// Set to stop the run early (as Ctrl-C does): the window of `display://` being closed.
    pub stop: Option<&'static std::sync::atomic::AtomicBool>,
}

/// The frame rate of videos made from inputs that have none.
pub const DEFAULT_VIDEO_FPS: f64 = 30.0;

/// Opens the output `uri`: the one place that turns a name into a sink.
pub fn open(uri: &SinkUri, options: &SinkOptions<'_>) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match uri {
        SinkUri::Video { path, .. } => {
            let fps = options.frame_rate.unwrap_or_else(|| {
                log::warn!(
                    "the input has no frame rate: {} plays at {DEFAULT_VIDEO_FPS} fps (set --input-rate)",
                    path.display()
                );
                DEFAULT_VIDEO_FPS
            });
            Box::new(video::VideoSink::create(path, fps)?)
        }
        SinkUri::PngDir { dir, kind } => {
            let kind = match kind {
                PngKind::Labels(_) => PngKind::Labels(options.label_ids),
                other => *other,
            };
            Box::new(images::PngDirSink::new(dir, kind, options.classes)?)
        }
        SinkUri::Stats(path) => Box::new(stats::StatsSink::create(path)?),
        SinkUri::Browser(addr) => Box::new(browser::BrowserSink::serve(*addr, options.classes)?),
        #[cfg(feature = "gstreamer")]
        SinkUri::Streamed(uri) => return gst::open(uri, options),
        #[cfg(not(feature = "gstreamer"))]
        SinkUri::Streamed(uri) => {
            return Err(SinkError::BadUri {
                uri: uri.clone(),
                reason: "displays and network streams need GStreamer: build with `--features gstreamer` \
                         (scripts/prerequisites.sh gstreamer installs its packages), or write a file \
                         (-o out.mp4) or watch in a browser (-o http://127.0.0.1:8080)"
                    .into(),
            });
        }
        SinkUri::Null => Box::new(NullSink),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_output_kind_parses() {
        let parse = |s: &str| SinkUri::parse(s).unwrap();
        assert_eq!(parse("a.mp4"), SinkUri::Video { path: "a.mp4".into(), format: VideoFormat::Mp4 });
        assert_eq!(
            parse("file://d/a.MJPG"),
            SinkUri::Video { path: "d/a.MJPG".into(), format: VideoFormat::Mjpeg }
        );
        assert_eq!(parse("out/"), SinkUri::PngDir { dir: "out/".into(), kind: PngKind::Overlay });
        assert_eq!(parse("s.jsonl"), SinkUri::Stats("s.jsonl".into()));
        assert_eq!(parse("null://"), SinkUri::Null);
        assert_eq!(parse("display://0"), SinkUri::Streamed("display://0".into()));
        assert_eq!(parse("rtsp://@:8554/out"), SinkUri::Streamed("rtsp://@:8554/out".into()));
    }

    #[test]
    fn http_addresses_default_to_localhost_and_8080() {
        let addr = |s: &str| match SinkUri::parse(s).unwrap() {
            SinkUri::Browser(a) => a.to_string(),
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(addr("http://"), "127.0.0.1:8080");
        assert_eq!(addr("http://:9000/"), "127.0.0.1:9000");
        assert_eq!(addr("http://0.0.0.0:8081"), "0.0.0.0:8081");
        assert_eq!(addr("http://127.0.0.1"), "127.0.0.1:8080");
        assert_eq!(addr("http://[::1]:8082"), "[::1]:8082");
        assert!(addr("http://localhost:0").ends_with(":0"));
    }

    #[test]
    fn bad_outputs_say_what_is_accepted() {
        for (uri, needle) in [
            ("out.avi", "unknown output type"),
            ("ftp://x/y", "unknown output scheme ftp://"),
            ("http://:99999", "0 to 65535"),
            ("http://host:80/page", "root"),
            ("http://u:p@host:80", "credentials"),
            ("", "empty output"),
        ] {
            let e = SinkUri::parse(uri).unwrap_err().to_string();
            assert!(e.contains(needle) && e.starts_with("-o "), "{uri}: {e}");
        }
    }

    #[test]
    fn outputs_name_the_paths_they_write() {
        assert_eq!(
            SinkUri::parse("a.mp4").unwrap().written_path(),
            Some(WrittenPath::File(Path::new("a.mp4")))
        );
        assert_eq!(SinkUri::parse("o/").unwrap().written_path(), Some(WrittenPath::Dir(Path::new("o/"))));
        assert_eq!(SinkUri::parse("http://:1").unwrap().written_path(), None);
    }
}
