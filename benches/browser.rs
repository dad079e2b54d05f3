//! Does the browser view slow the pipeline down when its clients stop reading?
//!
//! ```text
//! cargo bench --bench browser [-- --rounds 9 --frames 300 --clients 20]
//! ```
//!
//! Pipeline throughput (synth:// at 1024x512, exact upsampling, overlay made for the view)
//! with the browser view (`-o http://…`) and no client, against the same with CLIENTS clients
//! that asked for the video and never read a byte, in interleaved rounds of one run (this
//! machine is shared and noisy: only a ratio measured side by side means anything). The
//! network is a stand-in that costs almost nothing, so the pipeline runs as fast as its other
//! stages and any cost of the view shows in full; with the real network it would be diluted.
//!
//! The idle clients connect first and are fed until their socket buffers are full (from then on
//! they create no work: JPEGs are encoded only for clients waiting for one); they stay connected
//! for the whole bench (the stall timeout is raised, so they are not dropped). Target: the
//! throughput with them is at least 95 % of the throughput without.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[path = "common/stand_in.rs"]
mod stand_in;
use stand_in::stand_in_segmenter;

use semask_edge::frame::Frame;
use semask_edge::model::OnnxModel;
use semask_edge::pipeline::{self, FrameEvent, PipelineOptions, Segmenter};
use semask_edge::postprocess::Needs;
use semask_edge::sink::browser::{BrowserLimits, BrowserSink};
use semask_edge::sink::{Sink, SinkError};

/// A browser view that outlives one pipeline run (the run's end does not close it).
struct Kept(Arc<Mutex<BrowserSink>>);

impl Sink for Kept {
    fn describe(&self) -> String {
        self.0.lock().unwrap().describe()
    }
    fn needs(&self) -> Needs {
        self.0.lock().unwrap().needs()
    }
    fn write(&mut self, frame: &Frame) -> Result<(), SinkError> {
        self.0.lock().unwrap().write(frame)
    }
    fn record(&mut self, event: &FrameEvent<'_>) -> Result<(), SinkError> {
        self.0.lock().unwrap().record(event)
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name} {v}: not a number")))
}

/// Frames per second of one run of `frames` synthetic frames into `view`.
fn round(segmenter: &mut Segmenter, view: &Arc<Mutex<BrowserSink>>, frames: usize) -> f64 {
    let options = semask_edge::source::SourceOptions::default();
    let input = format!("synth://?seed=5&frames={frames}&size=1024x512");
    let mut source = semask_edge::source::open(Some(&input), &options).unwrap();
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(Kept(view.clone()))];
    let stop = AtomicBool::new(false);
    let summary =
        pipeline::run(source.as_mut(), segmenter, &mut sinks, &PipelineOptions::default(), &stop, |_| {});
    assert!(summary.stopped_by.is_none(), "{:?}", summary.stopped_by);
    summary.throughput_fps()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (rounds, frames, clients) =
        (arg(&args, "--rounds", 9), arg(&args, "--frames", 300), arg(&args, "--clients", 20));

    let model = OnnxModel::builtin(&Default::default()).unwrap();
    let mut segmenter = stand_in_segmenter(&model);

    let limits = BrowserLimits { stall_timeout: Duration::from_secs(3600), ..Default::default() };
    let serve = || {
        let sink =
            BrowserSink::serve_with("127.0.0.1:0".parse().unwrap(), segmenter.classes(), limits).unwrap();
        Arc::new(Mutex::new(sink))
    };
    let (alone, watched) = (serve(), serve());
    let (addr, encoded) = {
        let sink = watched.lock().unwrap();
        (sink.addr(), sink.jpegs_encoded())
    };
    let idle: Vec<TcpStream> = (0..clients)
        .map(|_| {
            let mut socket = TcpStream::connect(addr).unwrap();
            socket.write_all(b"GET /stream.mjpg HTTP/1.1\r\n\r\n").unwrap();
            socket
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // Fill the idle clients' buffers: until a whole round encodes no JPEG.
    let mut filling = 0;
    loop {
        let before = encoded.load(Ordering::Relaxed);
        round(&mut segmenter, &watched, frames);
        filling += 1;
        let made = encoded.load(Ordering::Relaxed) - before;
        eprintln!("filling the idle clients' buffers: round {filling}, {made} JPEGs encoded");
        if made == 0 {
            break;
        }
        assert!(filling < 50, "the idle clients never stopped taking frames");
    }
    round(&mut segmenter, &alone, frames); // the same warm-up for the other view

    let (mut without, mut with) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let a = round(&mut segmenter, &alone, frames);
        let b = round(&mut segmenter, &watched, frames);
        eprintln!("round {}: {a:.1} fps without clients, {b:.1} fps with {clients} idle clients", r + 1);
        without.push(a);
        with.push(b);
    }
    let still_encoded = encoded.load(Ordering::Relaxed);
    let (a, b) = (median(&mut without), median(&mut with));
    let ratio = b / a;
    println!(
        "browser view, {frames} frames/round x {rounds} rounds, 1024x512, stand-in network:\n  \
         no client:              {a:.1} fps (median)\n  \
         {clients} clients never reading: {b:.1} fps (median), {still_encoded} JPEGs encoded in all\n  \
         ratio {ratio:.3} (target >= 0.95): {}",
        if ratio >= 0.95 { "met" } else { "NOT met" }
    );
    drop(idle);
}
