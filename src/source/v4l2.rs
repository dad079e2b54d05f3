//! V4L2 cameras (`v4l2:///dev/video0` or `/dev/video0`) through the `v4l` crate: MJPEG, YUYV and
//! NV12 (what USB and Jetson cameras give), memory-mapped streaming.
//!
//! The mode is negotiated once: the format we decode best that the camera offers (MJPEG, then
//! YUYV, then NV12), the frame size closest to `--input-width`/`--input-height` (default: the
//! camera's current size), the frame rate closest to `--input-rate`; the result is logged.
//! A camera that stops answering or disappears (unplugged) is reported and re-opened with
//! back-off ([`super::Backoff`]); meanwhile the source returns timeouts, so Ctrl-C still
//! stops the run. Cameras are live sources: the pipeline drops stale frames and counts them.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use v4l::buffer::Type;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::images::decode_into;
use super::yuv::{nv12_to_rgb, yuyv_to_rgb};
use super::{Backoff, Captured, Source, SourceError, SourceInfo, SourceOptions};
use crate::frame::Frame;
use crate::timing::Stage;

/// Pixel formats we decode, in order of preference.
const PREFERRED: [&[u8; 4]; 3] = [b"MJPG", b"YUYV", b"NV12"];

/// A negotiated capture mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mode {
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// Bytes per row of the first plane.
    pub stride: u32,
    pub fps: Option<f64>,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}x{}", String::from_utf8_lossy(&self.fourcc), self.width, self.height)?;
        match self.fps {
            Some(fps) => write!(f, " @ {fps:.2} fps"),
            None => Ok(()),
        }
    }
}

/// One camera and what it offers (`semask-edge devices`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CameraInfo {
    pub path: PathBuf,
    pub card: String,
    pub driver: String,
    pub formats: Vec<CameraFormat>,
}

/// A pixel format a camera offers, with its frame sizes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CameraFormat {
    pub fourcc: String,
    pub description: String,
    pub sizes: Vec<CameraSize>,
}

/// A frame size and the frame rates offered at it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CameraSize {
    pub width: u32,
    pub height: u32,
    pub fps: Vec<f64>,
}

/// Every `/dev/video*` that answers as a capture device.
pub fn list_cameras() -> Vec<Result<CameraInfo, (PathBuf, String)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir("/dev")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("video")))
                .collect()
        })
        .unwrap_or_default();
    paths.sort_by(|a, b| super::images::natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    paths.into_iter().map(|p| describe(&p).map_err(|e| (p, e.to_string()))).collect()
}

fn describe(path: &Path) -> io::Result<CameraInfo> {
    let dev = Device::with_path(path)?;
    let caps = dev.query_caps()?;
    let mut formats = Vec::new();
    for desc in dev.enum_formats()? {
        let mut sizes = Vec::new();
        for size in dev.enum_framesizes(desc.fourcc).unwrap_or_default() {
            for discrete in size.size.to_discrete() {
                let rates = frame_rates(&dev, desc.fourcc, discrete.width, discrete.height);
                sizes.push(CameraSize { width: discrete.width, height: discrete.height, fps: rates });
            }
        }
        formats.push(CameraFormat {
            fourcc: desc.fourcc.to_string(),
            description: desc.description.clone(),
            sizes,
        });
    }
    Ok(CameraInfo { path: path.to_path_buf(), card: caps.card, driver: caps.driver, formats })
}

/// The discrete frame rates a camera offers for a format and size.
fn frame_rates(dev: &Device, fourcc: FourCC, width: u32, height: u32) -> Vec<f64> {
    dev.enum_frameintervals(fourcc, width, height)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| match i.interval {
            v4l::frameinterval::FrameIntervalEnum::Discrete(f) if f.numerator > 0 => {
                Some(f.denominator as f64 / f.numerator as f64)
            }
            _ => None,
        })
        .collect()
}

/// Picks format, size and rate for `options` from what the camera offers, and sets them.
fn negotiate(dev: &Device, options: &SourceOptions) -> io::Result<Mode> {
    let offered: Vec<FourCC> = dev.enum_formats()?.into_iter().map(|d| d.fourcc).collect();
    // The profile's format first, when it is one we read.
    let preferred = options.pixel_format.iter().filter(|f| PREFERRED.contains(f)).chain(PREFERRED);
    let fourcc = preferred.map(FourCC::new).find(|f| offered.contains(f)).ok_or_else(|| {
        let names: Vec<String> = offered.iter().map(|f| f.to_string()).collect();
        io::Error::other(format!("the camera offers {names:?}; semask-edge reads MJPG, YUYV and NV12"))
    })?;
    let current = dev.format()?;
    let want = (options.width.unwrap_or(current.width), options.height.unwrap_or(current.height));
    let sizes: Vec<(u32, u32)> = dev
        .enum_framesizes(fourcc)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.size.to_discrete())
        .map(|d| (d.width, d.height))
        .collect();
    // Closest by area difference, then by aspect difference.
    let (width, height) = sizes
        .iter()
        .copied()
        .min_by_key(|&(w, h)| {
            let area = (w as i64 * h as i64 - want.0 as i64 * want.1 as i64).abs();
            (area, (w as i64 - want.0 as i64).abs())
        })
        .unwrap_or(want);
    let mut format = current;
    format.fourcc = fourcc;
    format.width = width;
    format.height = height;
    let format = dev.set_format(&format)?;
    if let Some(rate) = options.rate {
        let rates = frame_rates(dev, format.fourcc, format.width, format.height);
        let closest = rates
            .iter()
            .copied()
            .min_by(|a, b| (a - rate).abs().total_cmp(&(b - rate).abs()))
            .unwrap_or(rate);
        let _ = dev.set_params(&v4l::video::capture::Parameters::with_fps(closest.round().max(1.0) as u32));
    }
    let fps = dev
        .params()
        .ok()
        .filter(|p| p.interval.numerator > 0)
        .map(|p| p.interval.denominator as f64 / p.interval.numerator as f64);
    Ok(Mode {
        fourcc: format.fourcc.repr,
        width: format.width,
        height: format.height,
        stride: format.stride,
        fps,
    })
}

struct Open {
    /// Keeps the device open for the stream's lifetime.
    _device: Device,
    stream: MmapStream<'static>,
}

/// A V4L2 camera as a live source.
pub struct V4l2Source {
    path: PathBuf,
    options: SourceOptions,
    mode: Mode,
    open: Option<Open>,
    info: SourceInfo,
    next: u64,
    /// Disconnected: when to try again.
    retry: Option<Backoff>,
    last_frame: Instant,
}

// The source moves into the capture thread: every part of it (the `v4l` crate's device and
// mmap stream included) is `Send` on its own, and this keeps it so.
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<V4l2Source>();
};

impl std::fmt::Debug for V4l2Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Source").field("path", &self.path).field("mode", &self.mode).finish()
    }
}

/// How long without a frame before the camera counts as gone.
const STALL: Duration = Duration::from_secs(3);

fn open_stream(path: &Path, options: &SourceOptions) -> io::Result<(Open, Mode)> {
    let device = Device::with_path(path)?;
    let mode = negotiate(&device, options)?;
    options
        .limits
        .check_frame(mode.width as u64, mode.height as u64)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("the camera's mode: {e}")))?;
    let mut stream = MmapStream::with_buffers(&device, Type::VideoCapture, 4)?;
    stream.set_timeout(Duration::from_millis(500));
    Ok((Open { _device: device, stream }, mode))
}

impl V4l2Source {
    pub fn open(path: &Path, options: &SourceOptions) -> Result<V4l2Source, SourceError> {
        let (open, mode) = open_stream(path, options).map_err(|e| SourceError::Unreadable {
            path: path.to_path_buf(),
            reason: format!(
                "cannot open the camera: {e}; list cameras and their modes with `semask-edge devices`"
            ),
        })?;
        log::info!("camera {}: {mode}", path.display());
        let info = SourceInfo {
            uri: format!("v4l2://{}", path.display()),
            kind: "camera",
            frame_count: None,
            nominal_fps: mode.fps,
            live: true,
        };
        Ok(V4l2Source {
            path: path.to_path_buf(),
            options: *options,
            mode,
            open: Some(open),
            info,
            next: 0,
            retry: None,
            last_frame: Instant::now(),
        })
    }

    fn disconnect(&mut self, why: &str) {
        log::warn!("camera {} lost ({why}); reconnecting", self.path.display());
        self.open = None;
        self.retry = Some(Backoff::new());
    }

    fn try_reconnect(&mut self) {
        let Some(backoff) = &mut self.retry else { return };
        if !backoff.due() {
            return;
        }
        match open_stream(&self.path, &self.options) {
            Ok((open, mode)) => {
                let after = backoff.since.elapsed().as_secs_f64();
                log::warn!("camera {} back after {after:.1} s: {mode}", self.path.display());
                self.open = Some(open);
                self.mode = mode;
                self.retry = None;
                self.last_frame = Instant::now();
            }
            Err(e) => {
                log::debug!("camera {}: still unavailable ({e})", self.path.display());
                backoff.failed();
            }
        }
    }
}

impl Source for V4l2Source {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next(&mut self, frame: &mut Frame) -> Result<Captured, SourceError> {
        if self.open.is_none() {
            self.try_reconnect();
            return Ok(Captured::Timeout);
        }
        let open = self.open.as_mut().expect("checked above");
        let (data, meta) = match CaptureStream::next(&mut open.stream) {
            Ok((data, meta)) => (data, *meta),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                if self.last_frame.elapsed() > STALL {
                    self.disconnect("no frame for 3 s");
                }
                return Ok(Captured::Timeout);
            }
            Err(e) => {
                self.disconnect(&e.to_string());
                return Ok(Captured::Timeout);
            }
        };
        self.last_frame = Instant::now();
        let index = self.next;
        self.next += 1;
        frame.begin_numbered(index);
        let start = Instant::now();
        let bytes = &data[..(meta.bytesused as usize).min(data.len())];
        let (w, h, stride) = (self.mode.width as usize, self.mode.height as usize, self.mode.stride as usize);
        let result = match &self.mode.fourcc {
            b"MJPG" => decode_into(bytes, &mut frame.image, &self.options.limits).map_err(|e| e.to_string()),
            b"YUYV" => yuyv_to_rgb(bytes, w, h, stride, &mut frame.image),
            b"NV12" => nv12_to_rgb(bytes, w, h, stride, &mut frame.image),
            other => Err(format!("unexpected pixel format {}", String::from_utf8_lossy(other))),
        };
        result.map_err(|reason| SourceError::BadFrame { index, name: format!("{index:06}"), reason })?;
        frame.timings.add(Stage::Decode, start.elapsed());
        Ok(Captured::Frame)
    }
}

/// The raw bytes of camera frames, for `record` (MJPEG cameras only: the frames are stored as
/// they come, without re-encoding).
pub struct RawCapture {
    source: V4l2Source,
}

impl RawCapture {
    pub fn open(path: &Path, options: &SourceOptions) -> Result<RawCapture, SourceError> {
        let source = V4l2Source::open(path, options)?;
        if &source.mode.fourcc != b"MJPG" {
            return Err(SourceError::Unsupported {
                input: source.info.uri.clone(),
                reason: format!(
                    "the camera delivers {}, not MJPG: record needs an MJPEG camera mode",
                    source.mode
                ),
            });
        }
        Ok(RawCapture { source })
    }

    pub fn mode(&self) -> Mode {
        self.source.mode
    }

    /// Calls `f` with the next frame's JPEG bytes; `Ok(false)` on a timeout (camera stalled or
    /// reconnecting).
    pub fn next(&mut self, f: impl FnOnce(&[u8]) -> io::Result<()>) -> io::Result<bool> {
        let Some(open) = self.source.open.as_mut() else {
            self.source.try_reconnect();
            return Ok(false);
        };
        match CaptureStream::next(&mut open.stream) {
            Ok((data, meta)) => {
                self.source.last_frame = Instant::now();
                f(&data[..(meta.bytesused as usize).min(data.len())])?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                if self.source.last_frame.elapsed() > STALL {
                    self.source.disconnect("no frame for 3 s");
                }
                Ok(false)
            }
            Err(e) => {
                self.source.disconnect(&e.to_string());
                Ok(false)
            }
        }
    }
}
