//! GStreamer outputs (cargo feature `gstreamer`): a window on the screen, an RTP stream, an RTSP
//! server. Each feeds the overlay into an `appsrc`; GStreamer does the rest.
//!
//! | `-o` | output |
//! |---|---|
//! | `display://0` (`display://`) | a window on this machine's screen (`$DISPLAY`): the overlay with FPS and end-to-end latency written on it; `nv3dsink` on a Jetson, `waylandsink`, `xvimagesink` or `ximagesink` elsewhere (the first that opens) |
//! | `rtp://HOST:PORT[#codec=h264\|h265&bitrate=KBPS]` | RTP over UDP to HOST:PORT (unicast or multicast); play it with `rtp://@:PORT` or an SDP file |
//! | `rtsp://@:8554/out[#codec=…&bitrate=…]` | an RTSP server: `rtsp://THIS-MACHINE:8554/out` on every interface (`@`), or `rtsp://127.0.0.1:8554/out` for this machine only |
//!
//! Streams are encoded in hardware on a Jetson (`nvv4l2h264enc`, `nvv4l2h265enc`), elsewhere
//! by the first of `x264enc`, `openh264enc` (H.264) or `x265enc` (H.265) installed; 4 Mbit/s
//! unless `bitrate=` says otherwise, a key frame every 30 frames so that a viewer joining late
//! starts within a second. The stream keeps the size of the first frame (later frames of
//! another size are scaled to it) and the frames' capture times as timestamps.
//!
//! **The pipeline never waits for an output.** A window or an encoder that falls behind skips
//! frames (counted: "skipped"); the RTSP server encodes only while a client watches (frames
//! with no viewer are counted, not encoded). Every output says at the end what became of the
//! frames it was given. Closing the window stops the run as Ctrl-C does.
//!
//! Allocations: ours are none per frame (the frame is copied into a buffer GStreamer allocates,
//! its text set in place); GStreamer's own (buffers, the encoder) go through GLib's allocator.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_video as gst_video;

use super::fps::FpsMeter;
use super::{Sink, SinkError, SinkOptions};
use crate::frame::{Frame, FrameStatus, Rgb8Image};
use crate::pipeline::FrameEvent;
use crate::postprocess::Needs;
use crate::source::gst::{Codec, bus_error, init};

/// The name of our `appsrc` in every pipeline.
const APPSRC: &str = "semask";

/// The port of `rtsp://@/path`.
pub const DEFAULT_RTSP_PORT: u16 = 8554;

/// Bit rate of encoded streams unless `bitrate=` is given.
const DEFAULT_KBPS: u32 = 4000;

/// Frames waiting in the `appsrc` beyond which new ones are skipped (the output is behind).
const BACKLOG_FRAMES: u64 = 4;

/// How long the end of stream may take to reach the window or the network.
const DRAIN: Duration = Duration::from_secs(3);

/// A GStreamer output, as named after `-o`.
#[derive(Debug, Clone, PartialEq)]
pub enum GstOutput {
    Display,
    Rtp { host: String, port: u16, encoding: Encoding },
    Rtsp { bind: IpAddr, port: u16, path: String, encoding: Encoding },
}

/// How a network stream is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub codec: Codec,
    pub bitrate_kbps: u32,
}

/// `#codec=h264|h265&bitrate=KBPS`.
fn parse_encoding(fragment: &str, scheme: &str) -> Result<Encoding, String> {
    let mut encoding = Encoding { codec: Codec::H264, bitrate_kbps: DEFAULT_KBPS };
    for (key, value) in crate::source::gst::options(fragment) {
        match (key, value) {
            ("codec", "h264") => encoding.codec = Codec::H264,
            ("codec", "h265") => encoding.codec = Codec::H265,
            ("bitrate", kbps) => {
                encoding.bitrate_kbps = kbps
                    .parse()
                    .ok()
                    .filter(|k| (100..=100_000).contains(k))
                    .ok_or_else(|| format!("bitrate={kbps}: kbit/s from 100 to 100000"))?
            }
            _ => return Err(format!("{key}={value}: {scheme} takes #codec=h264|h265&bitrate=KBPS")),
        }
    }
    Ok(encoding)
}

impl GstOutput {
    /// Reads an output URI (`display://`, `rtp://`, `rtsp://`).
    pub fn parse(uri: &str) -> Result<GstOutput, String> {
        if let Some(rest) = uri.strip_prefix("display://") {
            return match rest.trim_end_matches('/') {
                "" | "0" => Ok(GstOutput::Display),
                other => Err(format!(
                    "display://{other}: only display://0, a window on the screen of $DISPLAY, is supported; \
                     for another X display run with DISPLAY=:{other}"
                )),
            };
        }
        if let Some(rest) = uri.strip_prefix("rtp://") {
            let (address, fragment) = rest.split_once('#').unwrap_or((rest, ""));
            let address = address.trim_end_matches('/');
            let (host, port) = address
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse::<u16>().ok().filter(|p| *p > 0)?)))
                .filter(|(host, _)| !host.is_empty() && *host != "@")
                .ok_or_else(|| {
                    "give the receiver's address and port, e.g. rtp://192.168.1.20:5000 \
                     (rtp://@:PORT is an input: the port to listen on)"
                        .to_string()
                })?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            return Ok(GstOutput::Rtp { host, port, encoding: parse_encoding(fragment, "rtp://")? });
        }
        if let Some(rest) = uri.strip_prefix("rtsp://") {
            let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let path = path.trim_end_matches('/');
            if path.is_empty() {
                return Err("give the stream's path, e.g. rtsp://@:8554/out".into());
            }
            if authority.contains('@') && !authority.starts_with('@') {
                return Err("an RTSP output has no credentials; give rtsp://@:8554/out".into());
            }
            let (host, port) = match authority.rsplit_once(':') {
                Some((host, port)) if !port.contains(']') => (
                    host,
                    port.parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("port {port:?} is not a number from 1 to 65535"))?,
                ),
                _ => (authority, DEFAULT_RTSP_PORT),
            };
            let bind = match host.trim_start_matches('[').trim_end_matches(']') {
                "@" | "" | "0.0.0.0" => IpAddr::from([0, 0, 0, 0]),
                "localhost" => IpAddr::from([127, 0, 0, 1]),
                ip => ip.parse().map_err(|_| {
                    format!(
                        "{ip}: an RTSP output listens on this machine: rtsp://@:PORT/path (every \
                         interface) or rtsp://127.0.0.1:PORT/path (this machine only)"
                    )
                })?,
            };
            return Ok(GstOutput::Rtsp {
                bind,
                port,
                path: format!("/{path}"),
                encoding: parse_encoding(fragment, "rtsp://")?,
            });
        }
        Err(format!("{uri} is not a GStreamer output (display://, rtp://, rtsp://)"))
    }

    /// The GStreamer elements this output cannot do without, with what to install.
    fn required(&self) -> Vec<(&'static str, &'static str)> {
        let good = "gstreamer1.0-plugins-good";
        let bad = "gstreamer1.0-plugins-bad";
        let mut elements =
            vec![("appsrc", "gstreamer1.0-plugins-base"), ("videoconvert", "gstreamer1.0-plugins-base")];
        let (payloader, parser) = match self {
            GstOutput::Display => return elements,
            GstOutput::Rtp { encoding, .. } | GstOutput::Rtsp { encoding, .. } => match encoding.codec {
                Codec::H264 => ("rtph264pay", "h264parse"),
                Codec::H265 => ("rtph265pay", "h265parse"),
            },
        };
        elements.extend([(payloader, good), (parser, bad), ("videoscale", "gstreamer1.0-plugins-base")]);
        if matches!(self, GstOutput::Rtp { .. }) {
            elements.push(("udpsink", good));
        }
        elements
    }
}

/// Whether every element is installed.
fn installed(elements: &[&str]) -> bool {
    elements.iter().all(|e| gst::ElementFactory::find(e).is_some())
}

/// The encoder chain (raw video in, parsed H.264/H.265 out): hardware on a Jetson, else the
/// first software encoder installed.
pub fn encoder(encoding: Encoding) -> Result<String, String> {
    let Encoding { codec, bitrate_kbps: kbps } = encoding;
    let bps = kbps * 1000;
    let to_i420 = "videoconvert ! video/x-raw,format=I420";
    let to_nvmm = "nvvidconv ! video/x-raw(memory:NVMM),format=I420";
    Ok(match codec {
        Codec::H264 if installed(&["nvv4l2h264enc", "nvvidconv"]) => format!(
            "{to_nvmm} ! nvv4l2h264enc bitrate={bps} iframeinterval=30 idrinterval=30 insert-sps-pps=true ! h264parse"
        ),
        Codec::H264 if installed(&["x264enc"]) => format!(
            "{to_i420} ! x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max=30 ! h264parse"
        ),
        Codec::H264 if installed(&["openh264enc"]) => {
            format!("{to_i420} ! openh264enc bitrate={bps} gop-size=30 complexity=low ! h264parse")
        }
        Codec::H265 if installed(&["nvv4l2h265enc", "nvvidconv"]) => format!(
            "{to_nvmm} ! nvv4l2h265enc bitrate={bps} iframeinterval=30 idrinterval=30 insert-sps-pps=true ! h265parse"
        ),
        Codec::H265 if installed(&["x265enc"]) => format!(
            "{to_i420} ! x265enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max=30 ! h265parse"
        ),
        Codec::H264 => {
            return Err("no H.264 encoder is installed: install gstreamer1.0-plugins-ugly (x264enc) or \
                        gstreamer1.0-plugins-bad (openh264enc); on a Jetson, nvidia-l4t-gstreamer"
                .into());
        }
        Codec::H265 => {
            return Err("no H.265 encoder is installed: install gstreamer1.0-plugins-bad (x265enc); \
                        on a Jetson, nvidia-l4t-gstreamer; or stream H.264 (#codec=h264)"
                .into());
        }
    })
}

/// `rtph264pay` / `rtph265pay`, sending the parameter sets with every key frame (for late joiners).
fn payloader(codec: Codec) -> &'static str {
    match codec {
        Codec::H264 => "rtph264pay config-interval=-1 pt=96",
        Codec::H265 => "rtph265pay config-interval=-1 pt=96",
    }
}

/// The `appsrc` we push into, and its caps: the head of every pipeline here.
fn appsrc_head() -> String {
    format!(
        "appsrc name={APPSRC} is-live=true format=time ! queue leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0"
    )
}

/// Scales to the first frame's size (a stream keeps one size; [`Feeder`] sets the caps), then
/// encodes; `parse` counts the frames out of the encoder.
fn encoded(encoding: Encoding) -> Result<String, String> {
    Ok(format!(
        "videoconvert ! videoscale ! capsfilter name={SIZE} ! {} name=parse ! {}",
        encoder(encoding)?,
        payloader(encoding.codec)
    ))
}

/// The capsfilter that keeps a stream at its first size.
const SIZE: &str = "size";

/// The first video sink that can open a window here: `nv3dsink` on a Jetson, else Wayland's
/// or X's. Each is tried (opened and closed) before it is chosen: `autovideosink` would fall
/// back to DirectFB's sink, which crashes the process when no screen answers.
fn window_sink() -> Result<&'static str, String> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let mut candidates = Vec::new();
    if installed(&["nvvidconv"]) {
        candidates.push("nv3dsink");
    }
    if set("WAYLAND_DISPLAY") {
        candidates.push("waylandsink");
    }
    if set("DISPLAY") {
        // XVideo where the X server has it (scaling in the server), plain X otherwise (Xvfb).
        candidates.extend(["xvimagesink", "ximagesink"]);
    }
    for name in &candidates {
        let Ok(sink) = gst::ElementFactory::make(name).build() else { continue };
        let opens = sink.set_state(gst::State::Ready).is_ok();
        let _ = sink.set_state(gst::State::Null);
        if opens {
            return Ok(name);
        }
    }
    let display = std::env::var("DISPLAY").unwrap_or_default();
    Err(if candidates.iter().any(|c| gst::ElementFactory::find(c).is_some()) {
        format!(
            "cannot open a window on DISPLAY={display} (tried {}); check that the X server runs and \
             accepts this user, or watch in a browser (-o http://0.0.0.0:8080)",
            candidates.join(", ")
        )
    } else {
        "no window sink is installed: install gstreamer1.0-x (ximagesink) or, for Wayland, \
         gstreamer1.0-plugins-bad (waylandsink)"
            .to_string()
    })
}

/// The pipeline of a window or an RTP stream.
fn own_pipeline(output: &GstOutput) -> Result<String, String> {
    let head = appsrc_head();
    Ok(match output {
        GstOutput::Display => {
            let text = if installed(&["textoverlay"]) {
                "videoconvert ! textoverlay name=text valignment=top halignment=left \
                 font-desc=\"Sans 18\" shaded-background=true ! "
            } else {
                log::warn!(
                    "display://: textoverlay is not installed (gstreamer1.0-x): the window shows no FPS or latency"
                );
                ""
            };
            let sink = match window_sink()? {
                "nv3dsink" => {
                    "nvvidconv ! video/x-raw(memory:NVMM) ! nv3dsink name=shown sync=false".to_string()
                }
                sink => format!("videoconvert ! {sink} name=shown sync=false"),
            };
            format!("{head} ! {text}{sink}")
        }
        GstOutput::Rtp { host, port, encoding } => {
            format!(
                "{head} ! {} ! udpsink host={host} port={port} sync=false async=false",
                encoded(*encoding)?
            )
        }
        GstOutput::Rtsp { .. } => unreachable!("the RTSP server builds one pipeline per session"),
    })
}

/// Frames as GStreamer buffers: caps follow the frame's size, timestamps its capture time.
struct Feeder {
    appsrc: gst_app::AppSrc,
    /// Where the stream's size is fixed at the first frame (encoded streams only).
    size_filter: Option<gst::Element>,
    size: (usize, usize),
    fps: gst::Fraction,
    first_capture: Option<Instant>,
}

impl Feeder {
    /// Feeds the `appsrc` of `bin`.
    fn new(bin: &gst::Bin, frame_rate: f64) -> Result<Feeder, String> {
        let appsrc = bin
            .by_name(APPSRC)
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or("the pipeline lost its appsrc")?;
        appsrc.set_format(gst::Format::Time);
        appsrc.set_is_live(true);
        let fps = gst::Fraction::approximate_f64(frame_rate).unwrap_or(gst::Fraction::new(30, 1));
        Ok(Feeder { appsrc, size_filter: bin.by_name(SIZE), size: (0, 0), fps, first_capture: None })
    }

    /// Offers one frame; a frame finding the output behind is skipped (the caller counts
    /// frames given against frames delivered).
    fn push(&mut self, image: &Rgb8Image, captured_at: Instant) -> Result<(), String> {
        if (image.width, image.height) != self.size {
            let info = gst_video::VideoInfo::builder(
                gst_video::VideoFormat::Rgb,
                image.width as u32,
                image.height as u32,
            )
            .fps(self.fps)
            .build()
            .map_err(|e| {
                format!("cannot describe a {}x{} frame to GStreamer: {e}", image.width, image.height)
            })?;
            let caps = info.to_caps().map_err(|e| e.to_string())?;
            self.appsrc.set_caps(Some(&caps));
            if self.size == (0, 0)
                && let Some(filter) = &self.size_filter
            {
                let size = gst::Caps::builder("video/x-raw")
                    .field("width", image.width as i32)
                    .field("height", image.height as i32)
                    .build();
                filter.set_property("caps", &size);
            }
            self.size = (image.width, image.height);
        }
        let frame_bytes = image.data.len() as u64;
        if self.appsrc.current_level_bytes() >= BACKLOG_FRAMES * frame_bytes {
            return Ok(());
        }
        let mut buffer =
            gst::Buffer::with_size(image.data.len()).map_err(|e| format!("cannot allocate a frame: {e}"))?;
        {
            let buffer = buffer.get_mut().expect("a new buffer is writable");
            buffer.copy_from_slice(0, &image.data).expect("the buffer has the frame's size");
            let first = *self.first_capture.get_or_insert(captured_at);
            buffer.set_pts(gst::ClockTime::from_nseconds(
                captured_at.saturating_duration_since(first).as_nanos() as u64,
            ));
        }
        match self.appsrc.push_buffer(buffer) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("the stream stopped taking frames ({e:?})")),
        }
    }
}

/// Counts buffers passing `pad`.
fn count_buffers(pad: &gst::Pad, counter: Arc<AtomicU64>) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        counter.fetch_add(1, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
}

/// A window or an RTP stream: one pipeline of ours, started at the first frame.
struct OwnPipeline {
    pipeline: gst::Pipeline,
    bus: gst::Bus,
    feeder: Feeder,
    text: Option<gst::Element>,
    /// Frames that reached the window or the encoder (after the leaky queue).
    delivered: Arc<AtomicU64>,
}

impl OwnPipeline {
    fn start(output: &GstOutput, frame_rate: f64) -> Result<OwnPipeline, String> {
        let description = own_pipeline(output)?;
        log::debug!("GStreamer output pipeline: {description}");
        let pipeline = gst::parse::launch(&description)
            .map_err(|e| format!("cannot build the pipeline: {e} (in: {description})"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "not a pipeline".to_string())?;
        let delivered = Arc::new(AtomicU64::new(0));
        let counted = pipeline.by_name("shown").or_else(|| pipeline.by_name("parse"));
        if let Some(pad) = counted.and_then(|e| e.static_pad("sink")) {
            count_buffers(&pad, delivered.clone());
        }
        let bus = pipeline.bus().ok_or("the pipeline has no bus")?;
        let running = OwnPipeline {
            feeder: Feeder::new(pipeline.upcast_ref(), frame_rate)?,
            text: pipeline.by_name("text"),
            pipeline,
            bus,
            delivered,
        };
        if running.pipeline.set_state(gst::State::Playing).is_err() {
            let reason = bus_error(&running.bus).unwrap_or_else(|| "the pipeline would not start".into());
            let _ = running.pipeline.set_state(gst::State::Null);
            return Err(reason);
        }
        Ok(running)
    }

    /// Sends the end of stream and waits (a while) for it to reach the end.
    fn drain(&self) {
        let _ = self.feeder.appsrc.end_of_stream();
        let _ = self.bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(DRAIN.as_millis() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for OwnPipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// What the outputs count, for the end-of-run line.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    given: u64,
    /// Frames the RTSP server had no client for.
    unwatched: u64,
}

/// A window (`display://`) or an RTP stream (`rtp://`).
pub struct PipelineSink {
    uri: String,
    output: GstOutput,
    /// Until the window is closed or the run ends.
    running: Option<OwnPipeline>,
    counts: Counts,
    fps: FpsMeter,
    text: String,
    stop: Option<&'static AtomicBool>,
}

impl PipelineSink {
    fn error(&self, reason: String) -> SinkError {
        SinkError::Output { uri: self.uri.clone(), reason }
    }

    /// Takes the bus's news: an error ends the output (or, a closed window, the run).
    fn check_bus(&mut self) -> Result<(), SinkError> {
        let Some(running) = &self.running else { return Ok(()) };
        let Some(reason) = bus_error(&running.bus) else { return Ok(()) };
        let window_closed = reason.contains("window was closed");
        if window_closed && self.output == GstOutput::Display {
            log::info!("{}: the window was closed; stopping the run", self.uri);
            self.running = None;
            if let Some(stop) = self.stop {
                stop.store(true, Ordering::SeqCst);
            }
            return Ok(());
        }
        Err(self.error(reason))
    }
}

impl Sink for PipelineSink {
    fn describe(&self) -> String {
        match &self.output {
            GstOutput::Display => format!("overlay -> a window ({})", self.uri),
            _ => format!("overlay -> RTP stream ({})", self.uri),
        }
    }

    fn needs(&self) -> Needs {
        Needs { color: false, overlay: true }
    }

    fn write(&mut self, frame: &Frame) -> Result<(), SinkError> {
        self.check_bus()?;
        let Some(running) = self.running.as_mut() else { return Ok(()) };
        self.counts.given += 1;
        let pushed = running.feeder.push(&frame.overlay, frame.captured_at);
        pushed.map_err(|e| self.error(e))
    }

    fn record(&mut self, event: &FrameEvent<'_>) -> Result<(), SinkError> {
        let frame = event.frame();
        if frame.status != FrameStatus::Ok {
            return Ok(());
        }
        self.fps.tick();
        let Some(text_element) = self.running.as_ref().and_then(|r| r.text.as_ref()) else { return Ok(()) };
        self.text.clear();
        write!(self.text, "{:.1} FPS   {:.0} ms", self.fps.fps(), frame.end_to_end.as_secs_f64() * 1e3)
            .expect("writing into a String cannot fail");
        text_element.set_property("text", self.text.as_str());
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        if let Some(running) = self.running.take() {
            running.drain();
            let given = self.counts.given;
            let delivered = running.delivered.load(Ordering::Relaxed);
            let (what, who) =
                if self.output == GstOutput::Display { ("shown", "window") } else { ("streamed", "encoder") };
            // Skipped at the appsrc, or dropped by the queue in front of a slow window/encoder.
            log::info!(
                "{}: {delivered} of {given} frames {what}, {} skipped (the {who} was behind)",
                self.uri,
                given.saturating_sub(delivered)
            );
        }
        Ok(())
    }
}

/// The stream of the RTSP server's current session, if a client watches.
#[derive(Default)]
struct Session {
    feeder: Option<Feeder>,
}

/// State shared with the RTSP server's thread.
struct RtspShared {
    session: Mutex<Session>,
    /// Frames that reached the encoder in any session.
    streamed: Arc<AtomicU64>,
    /// The end of stream left the payloader (so clients got every frame).
    drained: Arc<AtomicBool>,
    frame_rate: f64,
}

/// An RTSP server (`rtsp://@:8554/out`): clients connect and watch the overlay.
pub struct RtspSink {
    uri: String,
    shared: Arc<RtspShared>,
    main_loop: gst::glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
    counts: Counts,
    watch_url: String,
}

impl RtspSink {
    fn serve(uri: &str, output: &GstOutput, frame_rate: f64) -> Result<RtspSink, String> {
        let GstOutput::Rtsp { bind, port, path, encoding } = output else {
            unreachable!("RtspSink serves rtsp:// outputs")
        };
        // One session pipeline per set of clients; `appsrc` caps are set at the first frame.
        let launch = format!("( {} ! {} name=pay0 )", appsrc_head(), encoded(*encoding)?);
        log::debug!("RTSP session pipeline: {launch}");
        let shared = Arc::new(RtspShared {
            session: Mutex::new(Session::default()),
            streamed: Arc::new(AtomicU64::new(0)),
            drained: Arc::new(AtomicBool::new(false)),
            frame_rate,
        });
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&launch);
        // One encoder for every client: clients joining see the same stream.
        factory.set_shared(true);
        let configured = shared.clone();
        factory.connect_media_configure(move |_, media| {
            let Ok(bin) = media.element().downcast::<gst::Bin>() else { return };
            let feeder = match Feeder::new(&bin, configured.frame_rate) {
                Ok(feeder) => feeder,
                Err(e) => return log::error!("RTSP session: {e}"),
            };
            if let Some(pad) = bin.by_name("parse").and_then(|e| e.static_pad("sink")) {
                count_buffers(&pad, configured.streamed.clone());
            }
            if let Some(pad) = bin.by_name("pay0").and_then(|e| e.static_pad("src")) {
                let drained = configured.drained.clone();
                pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                    if matches!(info.event().map(|e| e.type_()), Some(gst::EventType::Eos)) {
                        drained.store(true, Ordering::SeqCst);
                    }
                    gst::PadProbeReturn::Ok
                });
            }
            // When this session ends (its last client gone), frames stop going to it; a session
            // made meanwhile for a new client is left alone.
            let (cleared, appsrc) = (configured.clone(), feeder.appsrc.clone());
            media.connect_unprepared(move |_| {
                let mut session = cleared.session.lock().unwrap_or_else(|e| e.into_inner());
                if session.feeder.as_ref().is_some_and(|f| f.appsrc == appsrc) {
                    session.feeder = None;
                }
            });
            configured.session.lock().unwrap_or_else(|e| e.into_inner()).feeder = Some(feeder);
            log::info!("RTSP: a client started watching");
        });

        let server = rtsp::RTSPServer::new();
        server.set_address(&bind.to_string());
        server.set_service(&port.to_string());
        server.mount_points().ok_or("the RTSP server has no mount points")?.add_factory(path, factory);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("rtsp-server".into())
            .spawn(move || {
                let context = gst::glib::MainContext::new();
                let served = context.with_thread_default(|| {
                    let main_loop = gst::glib::MainLoop::new(Some(&context), false);
                    let source = match server.create_source(None::<&rtsp::gio::Cancellable>) {
                        Ok(source) => source,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    source.attach(Some(&context));
                    let _ = tx.send(Ok((main_loop.clone(), server.bound_port())));
                    main_loop.run();
                    // Stopped: close every client connection, then the listening socket.
                    server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
                    source.destroy();
                });
                if let Err(e) = served {
                    log::error!("RTSP server: {e}");
                }
            })
            .map_err(|e| format!("cannot start the RTSP server thread: {e}"))?;
        let (main_loop, bound) = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                let _ = thread.join();
                let hint = if e.contains("in use") {
                    format!("; choose another port, e.g. rtsp://@:{}{path}", port.wrapping_add(1).max(1024))
                } else {
                    String::new()
                };
                return Err(format!("cannot serve RTSP on {bind}:{port}: {e}{hint}"));
            }
            Err(_) => return Err("the RTSP server did not start within 10 s".into()),
        };
        let host = if bind.is_unspecified() { "THIS-MACHINE".to_string() } else { bind.to_string() };
        let watch_url = format!("rtsp://{host}:{bound}{path}");
        if bind.is_unspecified() {
            log::warn!("{uri}: the RTSP stream is reachable from other machines");
        }
        log::info!("RTSP server: watch {watch_url} (e.g. ffplay, VLC, or semask-edge run -i …)");
        Ok(RtspSink {
            uri: uri.to_string(),
            shared,
            main_loop,
            thread: Some(thread),
            counts: Counts::default(),
            watch_url,
        })
    }

    /// Stops the server: clients are disconnected, the port is freed.
    fn shut_down(&mut self) {
        self.main_loop.quit();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Sink for RtspSink {
    fn describe(&self) -> String {
        format!("overlay -> RTSP server ({})", self.watch_url)
    }

    fn needs(&self) -> Needs {
        Needs { color: false, overlay: true }
    }

    fn write(&mut self, frame: &Frame) -> Result<(), SinkError> {
        self.counts.given += 1;
        let mut session = self.shared.session.lock().unwrap_or_else(|e| e.into_inner());
        let Some(feeder) = session.feeder.as_mut() else {
            self.counts.unwatched += 1;
            return Ok(());
        };
        match feeder.push(&frame.overlay, frame.captured_at) {
            Ok(()) => {}
            // The session ended between its last client leaving and `unprepared`.
            Err(reason) => {
                log::debug!("{}: {reason}", self.uri);
                session.feeder = None;
                self.counts.unwatched += 1;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        let feeder = self.shared.session.lock().unwrap_or_else(|e| e.into_inner()).feeder.take();
        if let Some(feeder) = feeder {
            // Let the clients have every frame: the end of stream follows the last one out.
            let _ = feeder.appsrc.end_of_stream();
            let deadline = Instant::now() + DRAIN;
            while !self.shared.drained.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // The last packets on their way over TCP.
            std::thread::sleep(Duration::from_millis(200));
        }
        self.shut_down();
        let Counts { given, unwatched } = self.counts;
        let streamed = self.shared.streamed.load(Ordering::Relaxed);
        log::info!(
            "{}: {streamed} of {given} frames streamed, {unwatched} with no client watching, {} skipped \
             (the encoder was behind)",
            self.uri,
            given.saturating_sub(unwatched + streamed)
        );
        Ok(())
    }
}

impl Drop for RtspSink {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Opens a GStreamer output.
pub fn open(uri: &str, options: &SinkOptions<'_>) -> Result<Box<dyn Sink>, SinkError> {
    let fail = |reason: String| SinkError::Output { uri: uri.to_string(), reason };
    let output = GstOutput::parse(uri).map_err(fail)?;
    init().map_err(fail)?;
    for (element, package) in output.required() {
        if gst::ElementFactory::find(element).is_none() {
            return Err(fail(format!(
                "needs the GStreamer element {element}, which is not installed: {package}"
            )));
        }
    }
    let frame_rate = options.frame_rate.unwrap_or(super::DEFAULT_VIDEO_FPS);
    Ok(match output {
        GstOutput::Rtsp { .. } => Box::new(RtspSink::serve(uri, &output, frame_rate).map_err(fail)?),
        GstOutput::Display | GstOutput::Rtp { .. } => {
            let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
            if output == GstOutput::Display && !set("DISPLAY") && !set("WAYLAND_DISPLAY") {
                return Err(fail(
                    "no screen: neither DISPLAY nor WAYLAND_DISPLAY is set; on a headless board watch in a \
                     browser (-o http://0.0.0.0:8080) or stream (-o rtsp://@:8554/out)"
                        .into(),
                ));
            }
            if let GstOutput::Rtp { host, port, .. } = &output {
                use std::net::ToSocketAddrs;
                (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| fail(format!("cannot resolve the receiver {host}: {e}")))?;
            }
            let running = OwnPipeline::start(&output, frame_rate).map_err(fail)?;
            Box::new(PipelineSink {
                uri: uri.to_string(),
                output,
                running: Some(running),
                counts: Counts::default(),
                fps: FpsMeter::default(),
                text: String::with_capacity(64),
                stop: options.stop,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_with_their_options() {
        assert_eq!(GstOutput::parse("display://0"), Ok(GstOutput::Display));
        assert_eq!(GstOutput::parse("display://"), Ok(GstOutput::Display));
        assert!(GstOutput::parse("display://1").unwrap_err().contains("DISPLAY=:1"));
        assert_eq!(
            GstOutput::parse("rtp://192.168.1.20:5000#codec=h265&bitrate=8000"),
            Ok(GstOutput::Rtp {
                host: "192.168.1.20".into(),
                port: 5000,
                encoding: Encoding { codec: Codec::H265, bitrate_kbps: 8000 }
            })
        );
        assert_eq!(
            GstOutput::parse("rtsp://@:8555/out"),
            Ok(GstOutput::Rtsp {
                bind: IpAddr::from([0, 0, 0, 0]),
                port: 8555,
                path: "/out".into(),
                encoding: Encoding { codec: Codec::H264, bitrate_kbps: DEFAULT_KBPS }
            })
        );
        match GstOutput::parse("rtsp://127.0.0.1/a/b/").unwrap() {
            GstOutput::Rtsp { bind, port, path, .. } => {
                assert_eq!(
                    (bind, port, path.as_str()),
                    (IpAddr::from([127, 0, 0, 1]), DEFAULT_RTSP_PORT, "/a/b")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_outputs_say_what_to_write() {
        for (uri, needle) in [
            ("rtp://@:5000", "receiver's address"),
            ("rtp://host", "receiver's address"),
            ("rtp://h:5000#bitrate=5", "100 to 100000"),
            ("rtp://h:5000#codec=vp8", "codec=h264|h265"),
            ("rtsp://@:8554", "stream's path"),
            ("rtsp://@:x/out", "1 to 65535"),
            ("rtsp://u:p@host:8554/out", "no credentials"),
            ("rtsp://camera.local:8554/out", "listens on this machine"),
        ] {
            let e = GstOutput::parse(uri).unwrap_err();
            assert!(e.contains(needle), "{uri}: {e}");
        }
    }
}
