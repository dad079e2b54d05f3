//! GStreamer inputs (cargo feature `gstreamer`): network cameras, RTP streams, Jetson CSI cameras
//! and any pipeline a user can write, all ending in an `appsink` that hands us RGB frames.
//!
//! | `--input` | pipeline |
//! |---|---|
//! | `rtsp://[user:pass@]host[:port]/path[#transport=tcp&latency=200]` | `rtspsrc` (credentials from the URL; transport `tcp`, `udp` or `auto`; jitter buffer in ms), then decoding |
//! | `rtp://@:5000[#codec=h265]` | `udpsrc` of RTP H.264 (or H.265) on that port, then decoding |
//! | `csi://0[?mode=2&flip=2]` | `nvarguscamerasrc` (Jetson, NVIDIA Argus) at `--input-width`x`--input-height` (1280x720) and `--input-rate` (30), sensor mode and flip method as given |
//! | `gst://<description>` | the description as `gst-launch-1.0` takes it; `! videoconvert ! appsink` is appended unless it holds an element named `semask` (then that `appsink`) |
//!
//! Decoding is `decodebin`, which picks the best decoder installed; where NVIDIA's
//! `nvv4l2decoder` exists (a Jetson) its rank is raised so that H.264/H.265 decode in hardware,
//! and `nvvidconv` brings the frames out of NVMM memory. (The options after `#` are ours:
//! a fragment never reaches the RTSP server.)
//!
//! Sources that GStreamer reports as live (RTSP, RTP, CSI, `gst://` with a live element) keep
//! only the newest frames (the pipeline drops and counts stale ones, as for V4L2). A live
//! stream that fails or ends after it had worked is reported and re-opened with back-off
//! ([`super::Backoff`]); one that never worked is an error at start, with the reason
//! (host unreachable, wrong credentials, syntax). A non-live pipeline (`gst://filesrc …`) is
//! replayed losslessly and ends at its end of stream.

use std::path::Path;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::{Backoff, Captured, Source, SourceError, SourceInfo, SourceOptions};
use crate::frame::Frame;
use crate::timing::Stage;

/// The name of the `appsink` we read.
const SINK_NAME: &str = "semask";

/// The name of the `filesrc` of file inputs.
const FILE_NAME: &str = "file";

/// How long the first frame may take (an RTSP handshake, a camera starting).
const FIRST_FRAME: Duration = Duration::from_secs(15);

/// How long without a frame before a live stream counts as gone.
const STALL: Duration = Duration::from_secs(5);

/// A GStreamer input, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum GstInput {
    Rtsp {
        url: String,
        transport: Transport,
        latency_ms: u32,
    },
    Rtp {
        port: u16,
        codec: Codec,
    },
    Csi {
        sensor: u32,
        mode: Option<u32>,
        flip: u32,
        width: u32,
        height: u32,
        fps: u32,
    },
    Pipeline(String),
    /// A video file `decodebin` demuxes and decodes (in hardware on a Jetson): see
    /// [`super::open`] for when a file goes here rather than to our MP4 reader.
    File(std::path::PathBuf),
}

/// RTSP lower transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    Auto,
}

/// Video codec of an RTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    fn encoding_name(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::H265 => "H265",
        }
    }
}

/// `key=value&…` pairs.
pub(crate) fn options(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
}

impl GstInput {
    /// Reads an input URI; `options` gives the size and rate CSI cameras are asked for.
    pub fn parse(input: &str, source_options: &SourceOptions) -> Result<GstInput, String> {
        if input.starts_with("rtsp://") || input.starts_with("rtsps://") {
            let (url, fragment) = input.split_once('#').unwrap_or((input, ""));
            let (mut transport, mut latency_ms) = (Transport::Auto, 200);
            for (key, value) in options(fragment) {
                match key {
                    "transport" => {
                        transport = match value {
                            "tcp" => Transport::Tcp,
                            "udp" => Transport::Udp,
                            "auto" => Transport::Auto,
                            _ => return Err(format!("transport={value}: use tcp, udp or auto")),
                        }
                    }
                    "latency" => {
                        latency_ms = value
                            .parse()
                            .ok()
                            .filter(|ms| *ms <= 10_000)
                            .ok_or_else(|| format!("latency={value}: milliseconds from 0 to 10000"))?
                    }
                    _ => {
                        return Err(format!(
                            "unknown option {key}; rtsp:// takes #transport=tcp|udp|auto&latency=MS"
                        ));
                    }
                }
            }
            return Ok(GstInput::Rtsp { url: url.to_string(), transport, latency_ms });
        }
        if let Some(rest) = input.strip_prefix("rtp://") {
            let (address, fragment) = rest.split_once('#').unwrap_or((rest, ""));
            let port = address
                .rsplit_once(':')
                .and_then(|(_, p)| p.trim_end_matches('/').parse::<u16>().ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{input}: give the port to listen on, e.g. rtp://@:5000"))?;
            let mut codec = Codec::H264;
            for (key, value) in options(fragment) {
                codec = match (key, value) {
                    ("codec", "h264") => Codec::H264,
                    ("codec", "h265") => Codec::H265,
                    _ => return Err(format!("{key}={value}: rtp:// takes #codec=h264|h265")),
                };
            }
            return Ok(GstInput::Rtp { port, codec });
        }
        if let Some(rest) = input.strip_prefix("csi://") {
            let (sensor, query) = rest.split_once('?').unwrap_or((rest, ""));
            let sensor =
                sensor.parse().map_err(|_| format!("{input}: the camera number is csi://N, N from 0"))?;
            let (mut mode, mut flip) = (None, 0);
            for (key, value) in options(query) {
                let number = value.parse::<u32>().map_err(|_| format!("{key}={value}: not a number"))?;
                match key {
                    "mode" => mode = Some(number),
                    "flip" if number <= 7 => flip = number,
                    "flip" => return Err(format!("flip={value}: nvvidconv flip-method is 0 to 7")),
                    _ => return Err(format!("unknown option {key}; csi:// takes ?mode=N&flip=0..7")),
                }
            }
            let fps = source_options.rate.map_or(30, |r| r.round().max(1.0) as u32);
            return Ok(GstInput::Csi {
                sensor,
                mode,
                flip,
                width: source_options.width.unwrap_or(1280),
                height: source_options.height.unwrap_or(720),
                fps,
            });
        }
        if let Some(description) = input.strip_prefix("gst://") {
            if description.trim().is_empty() {
                return Err(
                    "gst:// needs a pipeline, e.g. gst://videotestsrc ! video/x-raw,width=640,height=480"
                        .into(),
                );
            }
            return Ok(GstInput::Pipeline(description.to_string()));
        }
        Err(format!("{input} is not a GStreamer input (rtsp://, rtp://, csi://, gst://)"))
    }

    /// The pipeline description. `hardware` says whether NVIDIA's elements are installed.
    pub fn description(&self, hardware: bool) -> String {
        let to_rgb = format!("videoconvert ! video/x-raw,format=RGB ! appsink name={SINK_NAME}");
        // Out of NVMM memory on a Jetson; nothing to do elsewhere.
        let decoded = if hardware {
            format!("decodebin ! nvvidconv ! {to_rgb}")
        } else {
            format!("decodebin ! {to_rgb}")
        };
        match self {
            GstInput::Rtsp { url, transport, latency_ms } => {
                let protocols = match transport {
                    Transport::Tcp => "tcp",
                    Transport::Udp => "udp",
                    Transport::Auto => "tcp+udp+udp-mcast",
                };
                format!("rtspsrc location=\"{url}\" protocols={protocols} latency={latency_ms} ! {decoded}")
            }
            GstInput::Rtp { port, codec } => format!(
                "udpsrc port={port} caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name={}\" \
                 ! rtpjitterbuffer ! {decoded}",
                codec.encoding_name()
            ),
            GstInput::Csi { sensor, mode, flip, width, height, fps } => {
                let mode = mode.map_or(String::new(), |m| format!(" sensor-mode={m}"));
                format!(
                    "nvarguscamerasrc sensor-id={sensor}{mode} ! \
                     video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1 ! \
                     nvvidconv flip-method={flip} ! video/x-raw,format=RGBA ! {to_rgb}"
                )
            }
            // The location is set on the element (a path needs no quoting that way).
            GstInput::File(_) => format!("filesrc name={FILE_NAME} ! {decoded}"),
            GstInput::Pipeline(description) => {
                if description.contains(&format!("name={SINK_NAME}")) {
                    description.clone()
                } else {
                    format!("{description} ! {to_rgb}")
                }
            }
        }
    }

    /// The GStreamer elements this input cannot do without, with what to install.
    fn required(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            GstInput::Rtsp { .. } => &[("rtspsrc", "gstreamer1.0-plugins-good")],
            GstInput::Rtp { .. } => {
                &[("udpsrc", "gstreamer1.0-plugins-good"), ("rtpjitterbuffer", "gstreamer1.0-plugins-good")]
            }
            GstInput::Csi { .. } => &[
                (
                    "nvarguscamerasrc",
                    "nvidia-l4t-gstreamer (JetPack): CSI cameras exist only on Jetsons; elsewhere use a V4L2 camera, v4l2:///dev/video0",
                ),
                ("nvvidconv", "nvidia-l4t-gstreamer (JetPack)"),
            ],
            GstInput::File(_) => &[("decodebin", "gstreamer1.0-plugins-base")],
            GstInput::Pipeline(_) => &[],
        }
    }
}

/// Starts GStreamer once; says what to install when it cannot.
pub(crate) fn init() -> Result<(), String> {
    gst::init().map_err(|e| {
        format!("cannot start GStreamer: {e}; install GStreamer 1.x (gstreamer1.0-plugins-base)")
    })
}

/// Whether this machine has NVIDIA's hardware decoder (a Jetson); if so, `decodebin` is made
/// to prefer it.
pub(crate) fn prefer_hardware_decoding() -> bool {
    if init().is_err() {
        return false;
    }
    let Some(decoder) = gst::ElementFactory::find("nvv4l2decoder") else { return false };
    if gst::ElementFactory::find("nvvidconv").is_none() {
        return false;
    }
    decoder.set_rank(gst::Rank::PRIMARY + 100);
    true
}

/// A running pipeline and its sink.
struct Running {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    bus: gst::Bus,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Builds and starts the pipeline; returns it and whether it is live: `known_live` (a camera or
/// a network stream), or GStreamer says so.
fn start(description: &str, known_live: bool, file: Option<&Path>) -> Result<(Running, bool), String> {
    let element = gst::parse::launch(description)
        .map_err(|e| format!("pipeline syntax error: {e} (in: {description}); try it with gst-launch-1.0"))?;
    let pipeline = element
        .downcast::<gst::Pipeline>()
        .map_err(|_| "the description is a single element, not a pipeline ending in a sink".to_string())?;
    if let (Some(path), Some(filesrc)) = (file, pipeline.by_name(FILE_NAME)) {
        filesrc.set_property("location", path.to_string_lossy().as_ref());
    }
    let sink = pipeline
        .by_name(SINK_NAME)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| format!("the pipeline's element named {SINK_NAME} is not an appsink"))?;
    sink.set_caps(Some(&gst::Caps::builder("video/x-raw").field("format", "RGB").build()));
    sink.set_max_buffers(2);
    sink.set_sync(false);
    let bus = pipeline.bus().ok_or("the pipeline has no bus")?;
    let running = Running { pipeline, sink, bus };
    let started = running.pipeline.set_state(gst::State::Playing);
    let live = match started {
        Ok(gst::StateChangeSuccess::NoPreroll) => true,
        // Still starting (a network source connecting): its answer comes with the state.
        Ok(gst::StateChangeSuccess::Async) => {
            matches!(
                running.pipeline.state(gst::ClockTime::from_seconds(2)).0,
                Ok(gst::StateChangeSuccess::NoPreroll)
            )
        }
        Ok(_) => false,
        Err(_) => {
            return Err(bus_error(&running.bus).unwrap_or_else(|| "the pipeline would not start".into()));
        }
    };
    let live = live || known_live;
    // A live stream keeps only the newest frames; a file waits for us.
    running.sink.set_drop(live);
    Ok((running, live))
}

/// The first error on the bus, in words.
pub(crate) fn bus_error(bus: &gst::Bus) -> Option<String> {
    while let Some(message) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(error) = message.view() {
            return Some(explain(&error.error(), error.debug().as_deref()));
        }
    }
    None
}

/// A GStreamer error as a user can act on it.
fn explain(error: &gst::glib::Error, debug: Option<&str>) -> String {
    let text = error.to_string();
    let debug = debug.unwrap_or("");
    let hint = if debug.contains("401") || text.contains("Unauthorized") || debug.contains("Unauthorized") {
        "wrong user name or password: give them as rtsp://user:pass@host/path"
    } else if text.contains("Could not open resource") || debug.contains("Could not connect") {
        "cannot connect: check the host, the port and that the server runs"
    } else if debug.contains("not-linked") {
        "no video stream GStreamer can decode in it (no video track, or its decoder plugin is missing: gst-inspect-1.0 lists what is installed)"
    } else if text.contains("not-negotiated") || text.contains("not negotiate") {
        "the stream's format could not be converted to RGB video"
    } else if text.contains("No such element") || text.contains("no element") {
        "a GStreamer plugin is missing (gst-inspect-1.0 lists what is installed)"
    } else {
        ""
    };
    if hint.is_empty() { text } else { format!("{hint} ({text})") }
}

/// Frames from a GStreamer pipeline.
pub struct GstSource {
    input: String,
    description: String,
    /// The file of a file input.
    file: Option<std::path::PathBuf>,
    running: Option<Running>,
    info: SourceInfo,
    next: u64,
    limits: crate::limits::Limits,
    /// Lost, and not yet back (no frame since): when to try again. Kept across restarts that
    /// fail later (an RTSP server still down), so the waits keep doubling.
    lost: Option<Backoff>,
    last_frame: Instant,
    /// A sample pulled while opening (to see that the stream works), not yet delivered.
    pending: Option<gst::Sample>,
}

impl std::fmt::Debug for GstSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GstSource").field("input", &self.input).finish()
    }
}

impl GstSource {
    pub fn open(input: &str, options: &SourceOptions) -> Result<GstSource, SourceError> {
        let fail = |reason: String| SourceError::Unsupported { input: input.to_string(), reason };
        let parsed = GstInput::parse(input, options).map_err(fail)?;
        GstSource::open_parsed(input, parsed, options)
    }

    /// A video file, demuxed and decoded by GStreamer (in hardware where NVIDIA's decoder is).
    pub fn open_file(path: &Path, options: &SourceOptions) -> Result<GstSource, SourceError> {
        GstSource::open_parsed(&path.display().to_string(), GstInput::File(path.to_path_buf()), options)
    }

    fn open_parsed(input: &str, parsed: GstInput, options: &SourceOptions) -> Result<GstSource, SourceError> {
        let fail = |reason: String| SourceError::Unsupported { input: input.to_string(), reason };
        init().map_err(fail)?;
        for (element, package) in parsed.required() {
            if gst::ElementFactory::find(element).is_none() {
                return Err(fail(format!(
                    "needs the GStreamer element {element}, which is not installed: {package}"
                )));
            }
        }
        let description = parsed.description(prefer_hardware_decoding());
        log::debug!("GStreamer pipeline: {description}");
        let known_live = !matches!(parsed, GstInput::Pipeline(_) | GstInput::File(_));
        let file = match parsed {
            GstInput::File(path) => Some(path),
            _ => None,
        };
        let (running, live) = start(&description, known_live, file.as_deref()).map_err(fail)?;
        // The stream works once a frame arrives; until then an error is the user's to fix.
        let deadline = Instant::now() + FIRST_FRAME;
        let first = loop {
            if let Some(sample) = running.sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
                break sample;
            }
            if let Some(error) = bus_error(&running.bus) {
                return Err(fail(error));
            }
            if running.sink.is_eos() {
                return Err(fail("the stream ended before its first frame".into()));
            }
            if Instant::now() > deadline {
                return Err(fail(format!("no frame within {} s", FIRST_FRAME.as_secs())));
            }
        };
        let fps = first.caps().and_then(|caps| gst_video::VideoInfo::from_caps(caps).ok()).and_then(|v| {
            let rate = v.fps();
            (rate.numer() > 0 && rate.denom() > 0).then(|| rate.numer() as f64 / rate.denom() as f64)
        });
        log::info!(
            "{input}: {} stream{}",
            if live { "live" } else { "file" },
            fps.map_or(String::new(), |f| format!(" at {f:.2} fps"))
        );
        Ok(GstSource {
            input: input.to_string(),
            description,
            file,
            running: Some(running),
            info: SourceInfo {
                uri: input.to_string(),
                kind: "gstreamer",
                frame_count: None,
                nominal_fps: fps,
                live,
            },
            next: 0,
            limits: options.limits,
            lost: None,
            last_frame: Instant::now(),
            pending: Some(first),
        })
    }

    fn disconnect(&mut self, why: &str) {
        match &mut self.lost {
            None => {
                log::warn!("input {} lost ({why}); reconnecting", self.input);
                self.lost = Some(Backoff::new());
            }
            Some(backoff) => {
                log::debug!("input {}: the attempt to reconnect failed ({why})", self.input);
                backoff.failed();
            }
        }
        self.running = None;
        self.pending = None;
    }

    fn try_reconnect(&mut self) {
        let Some(backoff) = &mut self.lost else { return };
        if !backoff.due() {
            return;
        }
        match start(&self.description, true, self.file.as_deref()) {
            Ok((running, _)) => {
                log::debug!("input {}: restarted, waiting for frames", self.input);
                self.running = Some(running);
                self.last_frame = Instant::now();
            }
            Err(e) => {
                log::debug!("input {}: still unavailable ({e})", self.input);
                backoff.failed();
            }
        }
    }

    /// Copies `sample` into `frame`.
    fn deliver(
        &mut self,
        sample: &gst::Sample,
        frame: &mut Frame,
        start: Instant,
    ) -> Result<(), SourceError> {
        let index = self.next;
        self.next += 1;
        frame.begin_numbered(index);
        let bad = |reason: String| SourceError::BadFrame { index, name: format!("{index:06}"), reason };
        let info = sample
            .caps()
            .and_then(|caps| gst_video::VideoInfo::from_caps(caps).ok())
            .ok_or_else(|| bad("the frame carries no video format".into()))?;
        let (width, height) = (info.width() as usize, info.height() as usize);
        self.limits.check_frame(width as u64, height as u64).map_err(|e| bad(e.to_string()))?;
        let buffer = sample.buffer().ok_or_else(|| bad("the frame carries no data".into()))?;
        let map = buffer.map_readable().map_err(|_| bad("the frame's data cannot be read".into()))?;
        let stride = info.stride()[0] as usize;
        let row = width * 3;
        if stride < row || map.len() < stride * (height - 1) + row {
            return Err(bad(format!("{} bytes for a {width}x{height} RGB frame", map.len())));
        }
        frame.image.reset(width, height);
        for (y, out) in frame.image.data.chunks_exact_mut(row).enumerate() {
            out.copy_from_slice(&map[y * stride..y * stride + row]);
        }
        frame.timings.add(Stage::Decode, start.elapsed());
        self.last_frame = Instant::now();
        if let Some(lost) = self.lost.take() {
            log::warn!(
                "input {}: reconnected, frames again after {:.1} s",
                self.input,
                lost.since.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

impl Source for GstSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next(&mut self, frame: &mut Frame) -> Result<Captured, SourceError> {
        let start = Instant::now();
        if let Some(sample) = self.pending.take() {
            self.deliver(&sample, frame, start)?;
            return Ok(Captured::Frame);
        }
        let Some(running) = &self.running else {
            self.try_reconnect();
            return Ok(Captured::Timeout);
        };
        if let Some(sample) = running.sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            self.deliver(&sample, frame, start)?;
            return Ok(Captured::Frame);
        }
        let error = bus_error(&running.bus);
        let ended = running.sink.is_eos();
        match (error, ended, self.info.live) {
            (Some(error), _, true) => self.disconnect(&error),
            (Some(error), _, false) => {
                return Err(SourceError::Unsupported { input: self.input.clone(), reason: error });
            }
            (None, true, true) => self.disconnect("the stream ended"),
            (None, true, false) => return Ok(Captured::EndOfStream),
            (None, false, true) if self.last_frame.elapsed() > STALL => {
                self.disconnect(&format!("no frame for {} s", STALL.as_secs()))
            }
            (None, false, _) => {}
        }
        Ok(Captured::Timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Result<GstInput, String> {
        GstInput::parse(input, &SourceOptions::default())
    }

    #[test]
    fn rtsp_urls_keep_credentials_and_take_options_after_the_hash() {
        let input =
            parse("rtsp://user:pa%40ss@10.0.0.5:554/stream1?channel=2#transport=tcp&latency=50").unwrap();
        assert_eq!(
            input,
            GstInput::Rtsp {
                url: "rtsp://user:pa%40ss@10.0.0.5:554/stream1?channel=2".into(),
                transport: Transport::Tcp,
                latency_ms: 50
            }
        );
        let description = input.description(false);
        assert!(description.starts_with("rtspsrc location=\"rtsp://user:pa%40ss@10.0.0.5:554/stream1?channel=2\" protocols=tcp latency=50 ! decodebin ! videoconvert"), "{description}");
        assert!(parse("rtsp://h/s#transport=quic").unwrap_err().contains("tcp, udp or auto"));
        assert!(parse("rtsp://h/s#latency=99999").unwrap_err().contains("0 to 10000"));
    }

    #[test]
    fn csi_cameras_get_the_argus_pipeline_with_their_options() {
        let options =
            SourceOptions { width: Some(1920), height: Some(1080), rate: Some(60.0), ..Default::default() };
        let input = GstInput::parse("csi://1?mode=3&flip=2", &options).unwrap();
        assert_eq!(
            input,
            GstInput::Csi { sensor: 1, mode: Some(3), flip: 2, width: 1920, height: 1080, fps: 60 }
        );
        assert_eq!(
            input.description(true),
            "nvarguscamerasrc sensor-id=1 sensor-mode=3 ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=60/1 ! \
             nvvidconv flip-method=2 ! video/x-raw,format=RGBA ! videoconvert ! video/x-raw,format=RGB ! appsink name=semask"
        );
        let default = parse("csi://0").unwrap().description(true);
        assert!(
            default.contains("sensor-id=0 ! ") && default.contains("width=1280,height=720,framerate=30/1"),
            "{default}"
        );
        assert!(parse("csi://0?flip=9").unwrap_err().contains("0 to 7"));
        assert!(parse("csi://x").unwrap_err().contains("csi://N"));
    }

    #[test]
    fn a_csi_camera_without_argus_is_one_clear_error() {
        // No Jetson here: nvarguscamerasrc is missing, and the error says what it is and what
        // to use instead.
        if gst::init().is_ok() && gst::ElementFactory::find("nvarguscamerasrc").is_none() {
            let error = GstSource::open("csi://0", &SourceOptions::default()).unwrap_err().to_string();
            assert!(error.contains("nvarguscamerasrc") && error.contains("v4l2:///dev/video0"), "{error}");
        }
    }

    #[test]
    fn rtp_and_pipelines() {
        assert_eq!(
            parse("rtp://@:5004#codec=h265").unwrap(),
            GstInput::Rtp { port: 5004, codec: Codec::H265 }
        );
        assert!(parse("rtp://@").unwrap_err().contains("port"));
        let hw = parse("rtp://@:5004").unwrap().description(true);
        assert!(
            hw.contains("encoding-name=H264") && hw.contains("decodebin ! nvvidconv ! videoconvert"),
            "{hw}"
        );
        assert_eq!(
            parse("gst://videotestsrc").unwrap().description(false),
            "videotestsrc ! videoconvert ! video/x-raw,format=RGB ! appsink name=semask"
        );
        let own = "videotestsrc ! videoconvert ! appsink name=semask";
        assert_eq!(parse(&format!("gst://{own}")).unwrap().description(false), own);
        assert!(parse("gst:// ").is_err());
    }
}
