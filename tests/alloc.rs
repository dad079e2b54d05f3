//! Zero allocations per frame in steady state: a file source (MP4) through the three-thread
//! pipeline, with post-processing into colours and overlays and the statistics sink, allocates
//! nothing once the frame pool has warmed up.
//!
//! A counting global allocator watches the whole process (so this test has its own binary). The
//! network is a stand-in that allocates nothing: tract allocates its intermediate tensors on
//! every run, which is measured and printed here, not asserted (it is tract's, not ours). The
//! openh264 decoder allocates with C's malloc, which Rust's allocator does not see.

mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use semask_edge::backend::{Backend, BackendError, BackendKind};
use semask_edge::frame::Frame;
use semask_edge::model::OnnxModel;
use semask_edge::pipeline::{self, FrameEvent, PipelineOptions, Segmenter, SegmenterOptions};
use semask_edge::postprocess::{Needs, Upsample};
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

/// A network that allocates nothing: logits from a few input values (so labels vary).
struct StandIn {
    input: Vec<f32>,
    logits: Vec<f32>,
    shape: [usize; 4],
    logits_shape: [usize; 4],
}

impl Backend for StandIn {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }
    fn describe(&self) -> String {
        "stand-in".into()
    }
    fn input_shape(&self) -> [usize; 4] {
        self.shape
    }
    fn logits_shape(&self) -> [usize; 4] {
        self.logits_shape
    }
    fn input_mut(&mut self) -> &mut [f32] {
        &mut self.input
    }
    fn run(&mut self) -> Result<(), BackendError> {
        let [_, k, h, w] = self.logits_shape;
        let (ih, iw) = (self.shape[2], self.shape[3]);
        for c in 0..k {
            for y in 0..h {
                for x in 0..w {
                    let v = self.input[((c % 3) * ih + 4 * y) * iw + 4 * x];
                    self.logits[(c * h + y) * w + x] = v * (c as f32 - 9.0);
                }
            }
        }
        Ok(())
    }
    fn logits(&self) -> &[f32] {
        &self.logits
    }
}

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
    let stand_in = StandIn {
        input: vec![0.0; 3 * h * w],
        logits: vec![0.0; 19 * (h / 4) * (w / 4)],
        shape: [1, 3, h, w],
        logits_shape: [1, 19, h / 4, w / 4],
    };
    let options = SegmenterOptions { upsample: Upsample::Exact, ..Default::default() };
    let mut segmenter = Segmenter::with_backend(&model, Box::new(stand_in), &options).unwrap();
    let mut source = Mp4Source::open(&clip, &Default::default()).unwrap();
    assert_eq!(source.info().frame_count, Some(FRAMES as u64));
    let mut sinks: Vec<Box<dyn Sink>> =
        vec![Box::new(StatsSink::create(&dir.path().join("stats.jsonl")).unwrap()), Box::new(Checksum(0))];

    let mut counts: Vec<u64> = Vec::with_capacity(FRAMES + 1);
    let stop = AtomicBool::new(false);
    let summary =
        pipeline::run(&mut source, &mut segmenter, &mut sinks, &PipelineOptions::default(), &stop, |event| {
            if let FrameEvent::Written(_) = event {
                counts.push(ALLOCATIONS.load(Ordering::Relaxed));
            }
        });
    assert!(summary.stopped_by.is_none(), "{:?}", summary.stopped_by);
    assert_eq!(summary.frames_out, FRAMES as u64);
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
