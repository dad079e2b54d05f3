//! Zero allocations per frame in steady state: a file source (MP4) through the three-thread
//! pipeline, with post-processing into colours and overlays and the statistics sink, allocates
//! nothing once the frame pool has warmed up.
//!
//! A counting global allocator watches the whole process (so this test has its own binary). The
//! network is a stand-in that allocates nothing: tract allocates its intermediate tensors on
//! every run, which is measured and printed here, not asserted (it is tract's, not ours). The
//! openh264 decoder allocates with C's malloc, which Rust's allocator does not see.
//!
//! The browser view (`-o http://…`) is measured with clients connected: nothing per frame while
//! they follow the statistics; while one watches the video, only the JPEG encoder (the `image`
//! crate builds its tables for every picture), a fixed number per JPEG encoded.
//!
//! With the `gstreamer` feature, an RTP output (appsrc → encoder → udpsink) and a window (on
//! Xvfb, its text updated every frame) are measured too: nothing of ours per frame; GStreamer
//! allocates with GLib's malloc, unseen here.

#[path = "../benches/common/stand_in.rs"]
mod stand_in;
mod util;
use stand_in::stand_in_segmenter;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use semask_edge::backend::BackendKind;
use semask_edge::frame::{Frame, Rgb8Image};
use semask_edge::model::OnnxModel;
use semask_edge::pipeline::{self, FrameEvent, PipelineOptions, Segmenter};
use semask_edge::postprocess::Needs;
use semask_edge::sink::browser::BrowserSink;
use semask_edge::sink::stats::StatsSink;
use semask_edge::sink::{Sink, SinkError};
use semask_edge::source::Source;
use semask_edge::source::mp4::Mp4Source;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds
// GlobalAlloc's contract; counting does not touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's `layout` obligations are passed on as they are.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` (every allocation goes there) with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for dealloc; `new_size` obligations are the caller's, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A sink that reads the overlay and colours (so post-processing makes them) and allocates nothing.
struct Checksum(u64);

impl Sink for Checksum {
    fn describe(&self) -> String {
        "checksum".into()
    }
    fn needs(&self) -> Needs {
        Needs { color: true, overlay: true }
    }
    fn write(&mut self, frame: &Frame) -> Result<(), SinkError> {
        self.0 = frame
            .overlay
            .data
            .iter()
            .chain(&frame.color.data)
            .fold(self.0, |a, &b| a.wrapping_mul(31) ^ b as u64);
        Ok(())
    }
}

/// Runs `clip` through the pipeline into `sinks`; returns, at each frame written, the
/// allocations so far and `sample()`.
fn counted_run(
    clip: &std::path::Path,
    segmenter: &mut Segmenter,
    sinks: &mut [Box<dyn Sink>],
    frames: usize,
    sample: impl Fn() -> u64 + Sync,
) -> Vec<(u64, u64)> {
    let mut source = Mp4Source::open(clip, &Default::default()).unwrap();
    assert_eq!(source.info().frame_count, Some(frames as u64));
    let mut counts = Vec::with_capacity(frames + 1);
    let stop = AtomicBool::new(false);
    let summary = pipeline::run(&mut source, segmenter, sinks, &PipelineOptions::default(), &stop, |event| {
        if let FrameEvent::Written(_) = event {
            counts.push((ALLOCATIONS.load(Ordering::Relaxed), sample()));
        }
    });
    assert!(summary.stopped_by.is_none(), "{:?}", summary.stopped_by);
    assert_eq!(summary.frames_out, frames as u64);
    counts
}

/// A client of the browser view that reads `path` into a fixed buffer (allocating nothing)
/// until the server closes.
fn reader(addr: std::net::SocketAddr, path: &str) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    write!(socket, "GET {path} HTTP/1.1\r\n\r\n").unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while matches!(socket.read(&mut buf), Ok(n) if n > 0) {}
    })
}

#[test]
fn steady_state_frames_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    const FRAMES: usize = 60;
    let made = util::run_cli(&[
        "run",
        "-i",
        &format!("synth://?frames={FRAMES}&size=320x160"),
        "-o",
        clip.to_str().unwrap(),
        "-q",
    ]);
    assert!(made.status.success(), "{}", util::stderr(&made));

    let model = OnnxModel::builtin(&Default::default()).unwrap();
    let (h, w) = model.input_size(None, &Default::default()).unwrap();
    let mut segmenter = stand_in_segmenter(&model);
    let mut sinks: Vec<Box<dyn Sink>> =
        vec![Box::new(StatsSink::create(&dir.path().join("stats.jsonl")).unwrap()), Box::new(Checksum(0))];

    let counts: Vec<u64> =
        counted_run(&clip, &mut segmenter, &mut sinks, FRAMES, || 0).into_iter().map(|c| c.0).collect();
    // The pool holds 3 * 2 + 3 = 9 frames; after two laps every buffer has its final size.
    let warm = 20;
    let steady = counts[FRAMES - 1] - counts[warm];
    let first = counts[warm] - counts[0];
    eprintln!(
        "allocations: {first} while frames 1..{warm} warmed the pool, {steady} over the {} frames after",
        FRAMES - 1 - warm
    );
    let per_frame: Vec<u64> = counts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(steady, 0, "the pipeline allocated {steady} times in steady state; per frame: {per_frame:?}");

    // The browser view, with a client following the statistics: nothing per frame.
    let browser = BrowserSink::serve("127.0.0.1:0".parse().unwrap(), segmenter.classes()).unwrap();
    let events = reader(browser.addr(), "/events");
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(browser), Box::new(Checksum(0))];
    let counts = counted_run(&clip, &mut segmenter, &mut sinks, FRAMES, || 0);
    let steady = counts[FRAMES - 1].0 - counts[warm].0;
    eprintln!("browser view, statistics followed: {steady} allocations over {} frames", FRAMES - 1 - warm);
    assert_eq!(steady, 0, "the browser view allocated {steady} times in steady state");
    drop(sinks);
    events.join().unwrap();

    // ... and with a client watching the video: the JPEG encoder's allocations only.
    let overlay = Rgb8Image::new(320, 160);
    let mut jpeg = Vec::new();
    semask_edge::sink::jpeg::encode(&overlay, &mut jpeg).unwrap();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    semask_edge::sink::jpeg::encode(&overlay, &mut jpeg).unwrap();
    let per_jpeg = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let browser = BrowserSink::serve("127.0.0.1:0".parse().unwrap(), segmenter.classes()).unwrap();
    let (addr, encoded) = (browser.addr(), browser.jpegs_encoded());
    let viewer = reader(addr, "/stream.mjpg");
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(browser), Box::new(Checksum(0))];
    let counts = counted_run(&clip, &mut segmenter, &mut sinks, FRAMES, || encoded.load(Ordering::Relaxed));
    let steady = counts[FRAMES - 1].0 - counts[warm].0;
    let jpegs = counts[FRAMES - 1].1 - counts[warm].1;
    eprintln!(
        "browser view, video watched: {steady} allocations over {} frames, {jpegs} JPEGs encoded, \
         {per_jpeg} allocations per JPEG in the encoder",
        FRAMES - 1 - warm
    );
    assert!(jpegs > 0, "the viewer made no JPEG be encoded");
    // An encode in progress at either end of the window counts in one figure but not the other.
    let expected = jpegs * per_jpeg;
    assert!(
        steady.abs_diff(expected) <= 2 * per_jpeg,
        "{steady} allocations, but {jpegs} JPEGs explain {expected}: something else allocates per frame"
    );
    drop(sinks);
    viewer.join().unwrap();

    // GStreamer outputs (an RTP stream: appsrc, encoder, udpsink): nothing of ours per frame.
    // GStreamer's own allocations (its buffers, the encoder) go through GLib's malloc, which this
    // counter does not see.
    #[cfg(feature = "gstreamer")]
    {
        use semask_edge::sink::{SinkOptions, SinkUri};
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let uri = SinkUri::parse(&format!("rtp://127.0.0.1:{port}")).unwrap();
        let classes = segmenter.classes().clone();
        let options = SinkOptions {
            classes: &classes,
            label_ids: Default::default(),
            frame_rate: Some(30.0),
            stop: None,
        };
        let rtp = semask_edge::sink::open(&uri, &options).unwrap();
        let mut sinks: Vec<Box<dyn Sink>> = vec![rtp, Box::new(Checksum(0))];
        let counts = counted_run(&clip, &mut segmenter, &mut sinks, FRAMES, || 0);
        let steady = counts[FRAMES - 1].0 - counts[warm].0;
        eprintln!("RTP output: {steady} allocations over {} frames", FRAMES - 1 - warm);
        assert_eq!(steady, 0, "the RTP output allocated {steady} times in steady state");
        drop(sinks);

        // A window (on a virtual screen), its FPS and latency text set on every frame.
        let screen = util::xvfb::Xvfb::start();
        // SAFETY: this binary's only test, and no other thread reads the environment now.
        unsafe { std::env::set_var("DISPLAY", &screen.display) };
        let window = semask_edge::sink::open(&SinkUri::parse("display://0").unwrap(), &options).unwrap();
        let mut sinks: Vec<Box<dyn Sink>> = vec![window, Box::new(Checksum(0))];
        let counts = counted_run(&clip, &mut segmenter, &mut sinks, FRAMES, || 0);
        let steady = counts[FRAMES - 1].0 - counts[warm].0;
        eprintln!("window output: {steady} allocations over {} frames", FRAMES - 1 - warm);
        assert_eq!(steady, 0, "the window output allocated {steady} times in steady state");
    }

    // For the record: what tract allocates per network run (its intermediate tensors).
    let mut tract = semask_edge::backend::create(
        &model,
        &semask_edge::backend::BackendOptions::new(BackendKind::Cpu, (h, w)),
    )
    .unwrap();
    for _ in 0..3 {
        tract.run().unwrap();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..5 {
        tract.run().unwrap();
    }
    eprintln!(
        "tract: {} allocations per network run (built-in model)",
        (ALLOCATIONS.load(Ordering::Relaxed) - before) / 5
    );
}
