//! [`Segmenter`]: one frame in, labels (and colours, overlay) out, with every stage timed; and
//! [`run`]: the streaming pipeline from a source to the sinks.
//!
//! ```text
//!            free frames (recycled)
//!   ┌──────────────────────────────────────────────────┐
//!   ▼                                                  │
//! capture ──ring──▶ inference ──ring──▶ output ────────┘
//! (Source,          (Backend)           (Postprocessor,
//!  Preprocessor)                         Sinks, stats)
//! ```
//! Three threads, so that decoding and pre-processing, the network, and post-processing and
//! writing overlap: the inference thread does nothing but run the network. A fixed pool of
//! [`Frame`]s circulates through three rings: after the first lap nothing is allocated per
//! frame.
//! File sources block when the pipeline is behind (no frame is lost); live sources (cameras,
//! `--realtime`) keep only the newest waiting frame: older ones are dropped and counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::backend::tensorrt::TensorRtOptions;
use crate::backend::{self, Backend, BackendError, BackendOptions, PrecisionPolicy};
use crate::calibration::Precision;
use crate::frame::{Frame, FrameStatus};
use crate::limits::Limits;
use crate::model::{ClassTable, ModelError, OnnxModel, SegmentationMetadata};
use crate::postprocess::{Needs, Postprocessor, Upsample};
use crate::preprocess::{PreprocSpec, Preprocessor};
use crate::ring::{RingReceiver, RingSender, ring};
use crate::sink::{Sink, SinkError};
use crate::source::{Captured, Source, SourceError};
use crate::timing::{Stage, StageStats};

/// How to build a [`Segmenter`].
#[derive(Debug, Clone, PartialEq)]
pub struct SegmenterOptions {
    pub backend: backend::BackendKind,
    /// Network threads (0 = all cores).
    pub threads: usize,
    /// `--input-size`: required for models with a dynamic input size.
    pub input_size: Option<(usize, usize)>,
    pub upsample: Upsample,
    /// Weight of the class colour in overlays, 0..=1.
    pub alpha: f32,
    /// Largest network input accepted (`--max-pixels`).
    pub limits: Limits,
    /// fp32, fp16 (TensorRT) or int8.
    pub precision: Precision,
    /// Whether `precision` must be met or may give way (a device profile's default).
    pub precision_policy: PrecisionPolicy,
    /// TensorRT engine building and caching.
    pub tensorrt: TensorRtOptions,
    /// The order `--backend auto` tries backends in.
    pub ladder: Vec<backend::BackendKind>,
    /// Input size for models whose input size is dynamic when `input_size` is not given (a
    /// device profile's); models with a fixed size keep theirs.
    pub dynamic_input_size: Option<(usize, usize)>,
}

impl SegmenterOptions {
    /// The backend part of these options, for a network input of `input_size` (height, width).
    pub fn backend_options(&self, input_size: (usize, usize)) -> BackendOptions {
        BackendOptions {
            kind: self.backend,
            threads: self.threads,
            input_size,
            precision: self.precision,
            precision_policy: self.precision_policy,
            tensorrt: self.tensorrt.clone(),
            ladder: self.ladder.clone(),
        }
    }

    /// The input size to ask of `model`: `input_size`, else `dynamic_input_size` when the
    /// model's own size is dynamic.
    pub fn requested_input_size(&self, model: &OnnxModel) -> Option<(usize, usize)> {
        self.input_size.or(self.dynamic_input_size.filter(|_| model.has_dynamic_input()))
    }
}

impl Default for SegmenterOptions {
    fn default() -> Self {
        SegmenterOptions {
            backend: backend::BackendKind::Auto,
            threads: 0,
            input_size: None,
            upsample: Upsample::Exact,
            alpha: 0.5,
            limits: Limits::default(),
            precision: Precision::Fp32,
            precision_policy: PrecisionPolicy::Exact,
            tensorrt: TensorRtOptions::default(),
            ladder: backend::DEFAULT_LADDER.to_vec(),
            dynamic_input_size: None,
        }
    }
}

/// Errors building a [`Segmenter`].
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Pre-processing, network and post-processing of one model.
pub struct Segmenter {
    model_name: String,
    metadata: SegmentationMetadata,
    preprocessor: Preprocessor,
    backend: Box<dyn Backend>,
    postprocessor: Postprocessor,
}

impl Segmenter {
    pub fn new(model: &OnnxModel, options: &SegmenterOptions) -> Result<Segmenter, SetupError> {
        let input_size = model.input_size(options.requested_input_size(model), &options.limits)?;
        let backend = backend::create(model, &options.backend_options(input_size))?;
        Segmenter::with_backend(model, backend, options)
    }

    /// Like [`Segmenter::new`], around a backend the caller built (a wrapper, or an engine this
    /// crate does not know). The backend's input must be the model's input size.
    pub fn with_backend(
        model: &OnnxModel,
        backend: Box<dyn Backend>,
        options: &SegmenterOptions,
    ) -> Result<Segmenter, SetupError> {
        let (height, width) = model.input_size(options.requested_input_size(model), &options.limits)?;
        let [_, _, h, w] = backend.input_shape();
        if (h, w) != (height, width) {
            return Err(ModelError::Input {
                name: model.name.clone(),
                reason: format!("the backend's input is {w}x{h} (WxH), the model's {width}x{height}"),
            }
            .into());
        }
        Segmenter::around(model.name.clone(), model.metadata.clone(), backend, options)
    }

    /// A segmenter around `backend`, whose input size is the network's, for a model named
    /// `name` with `metadata` (an engine file and its sidecar, say).
    pub fn around(
        name: String,
        mut metadata: SegmentationMetadata,
        backend: Box<dyn Backend>,
        options: &SegmenterOptions,
    ) -> Result<Segmenter, SetupError> {
        let [_, _, height, width] = backend.input_shape();
        let num_classes = backend.logits_shape()[1];
        let classes = metadata
            .resolve_classes(num_classes)
            .map_err(|error| ModelError::Metadata { name: name.clone(), error })?
            .clone();
        let spec = metadata.preproc_spec(height, width);
        Ok(Segmenter {
            model_name: name,
            metadata,
            preprocessor: Preprocessor::new(spec),
            postprocessor: Postprocessor::new(
                options.upsample,
                backend.logits_shape(),
                classes,
                options.alpha,
            ),
            backend,
        })
    }

    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The model's metadata with the class table resolved.
    pub fn metadata(&self) -> &SegmentationMetadata {
        &self.metadata
    }

    pub fn classes(&self) -> &ClassTable {
        self.postprocessor.classes()
    }

    pub fn preproc_spec(&self) -> &PreprocSpec {
        self.preprocessor.spec()
    }

    pub fn upsample(&self) -> Upsample {
        self.postprocessor.upsample()
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Runs the network on an already normalised NCHW input (`3 * H * W` values) and returns
    /// the logits `[1, K, h, w]` flattened. For checking a model against reference tensors.
    pub fn logits_for_input(&mut self, input: &[f32]) -> Result<&[f32], BackendError> {
        let shape = self.backend.input_shape();
        let buffer = self.backend.input_mut();
        if buffer.len() != input.len() {
            return Err(BackendError::InputLength { shape, got: input.len() });
        }
        buffer.copy_from_slice(input);
        self.backend.run()?;
        Ok(self.backend.logits())
    }

    /// The three stages, borrowed apart for the pipeline's threads.
    fn stages(&mut self) -> (&mut Preprocessor, &mut dyn Backend, &mut Postprocessor) {
        (&mut self.preprocessor, self.backend.as_mut(), &mut self.postprocessor)
    }

    /// Pre-processes `frame.image`, runs the network and fills `frame.labels` (and `color` /
    /// `overlay` per `needs`), adding each stage's time to `frame.timings`.
    pub fn segment(&mut self, frame: &mut Frame, needs: Needs) -> Result<(), BackendError> {
        let start = Instant::now();
        self.preprocessor.run(&frame.image, self.backend.input_mut());
        let preprocessed = Instant::now();
        frame.timings.add(Stage::Preprocess, preprocessed - start);
        self.backend.run()?;
        let inferred = Instant::now();
        frame.timings.add(Stage::Network, inferred - preprocessed);
        self.postprocessor.run(self.backend.logits(), frame, needs);
        frame.timings.add(Stage::Postprocess, inferred.elapsed());
        Ok(())
    }
}

/// A frame that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FrameFailure {
    pub index: u64,
    pub name: String,
    pub reason: String,
}

/// How frames leave the source.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Pacing {
    /// As fast as the pipeline takes them: the source waits while the pipeline is behind, so no
    /// frame is lost (file replay).
    #[default]
    Lossless,
    /// At the source's own rate (a camera): when the pipeline is behind, the newest waiting
    /// frame replaces older ones, which are dropped and counted.
    Live,
    /// A file replayed at `fps` and treated as live (`--realtime`).
    Realtime { fps: f64 },
}

impl Pacing {
    /// Whether stale frames are dropped (a live source, or a replay that behaves as one).
    pub fn drops_stale_frames(self) -> bool {
        !matches!(self, Pacing::Lossless)
    }
}

/// Passes over the source after the first (`--input-loop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// This many more passes (0: the source once).
    Times(u64),
    /// Until stopped (or `max_frames`).
    Forever,
}

impl Default for Repeat {
    fn default() -> Self {
        Repeat::Times(0)
    }
}

impl Repeat {
    /// Frames of a run over a source of `frames_per_pass` frames (`None`: without end).
    pub fn total_frames(self, frames_per_pass: u64) -> Option<u64> {
        match self {
            Repeat::Times(n) => Some(frames_per_pass.saturating_mul(n.saturating_add(1))),
            Repeat::Forever => None,
        }
    }
}

/// How the pipeline runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOptions {
    /// Frames that may wait between two threads.
    pub queue_depth: usize,
    pub pacing: Pacing,
    pub repeat: Repeat,
    /// Stop after this many frames from the source.
    pub max_frames: Option<u64>,
    /// Accept frames whose size differs from the first frame's (a folder of unrelated photos).
    /// Otherwise such a frame is a bad frame, as in a video stream.
    pub mixed_sizes: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            queue_depth: 2,
            pacing: Pacing::Lossless,
            repeat: Repeat::Times(0),
            max_frames: None,
            mixed_sizes: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunSummary {
    /// Frames the source delivered or tried to deliver (failed and dropped ones included).
    pub frames_in: u64,
    /// Frames fully written to every sink.
    pub frames_out: u64,
    /// Frames skipped because they could not be read or decoded.
    pub failed: Vec<FrameFailure>,
    /// Frames a live source delivered faster than they could be processed.
    pub dropped: u64,
    /// Stage and end-to-end latencies of the frames written.
    pub stats: StageStats,
    /// From the first frame captured to the last written.
    pub wall: Duration,
    /// The run was stopped early by the stop flag (Ctrl-C).
    pub interrupted: bool,
    /// Why the run stopped before the end of the source, if it did.
    pub stopped_by: Option<RunError>,
}

impl RunSummary {
    /// Frames written per second of wall time.
    pub fn throughput_fps(&self) -> f64 {
        if self.wall.is_zero() { 0.0 } else { self.frames_out as f64 / self.wall.as_secs_f64() }
    }
}

/// A run that had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(SourceError),
    #[error(transparent)]
    Network(#[from] BackendError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// What happened to one frame, reported as it leaves the pipeline (in capture order).
#[derive(Debug)]
pub enum FrameEvent<'a> {
    /// The frame was segmented and written to every sink.
    Written(&'a Frame),
    /// The frame could not be read or decoded and was skipped.
    Failed(&'a Frame),
    /// A newer frame of a live source replaced this one before it was processed.
    Dropped(&'a Frame),
}

impl<'a> FrameEvent<'a> {
    /// The frame, whatever became of it (its `status` says what).
    pub fn frame(&self) -> &'a Frame {
        match self {
            FrameEvent::Written(f) | FrameEvent::Failed(f) | FrameEvent::Dropped(f) => f,
        }
    }
}

/// Runs `source` through `segmenter` into `sinks` until the source ends, `stop` is set (the run
/// then finishes the frames in flight and closes the outputs), or a stage fails. `observe` sees
/// every frame, on the output thread, after its outputs are written.
pub fn run(
    source: &mut dyn Source,
    segmenter: &mut Segmenter,
    sinks: &mut [Box<dyn Sink>],
    options: &PipelineOptions,
    stop: &AtomicBool,
    observe: impl FnMut(FrameEvent<'_>) + Send,
) -> RunSummary {
    let depth = options.queue_depth.max(1);
    // Every frame is in exactly one place: a ring or a thread's hands (at most one each).
    let pool = 3 * depth + 3;
    let (mut free_tx, free_rx) = ring::<Frame>(pool);
    let (work_tx, work_rx) = ring::<Frame>(depth);
    let (done_tx, done_rx) = ring::<Frame>(pool);
    for _ in 0..pool {
        let _ = free_tx.push(Frame::default());
    }
    let needs = sinks.iter().fold(Needs::default(), |acc, s| acc | s.needs());
    let drop_stale = options.pacing.drops_stale_frames();
    let (preprocessor, backend, postprocessor) = segmenter.stages();

    std::thread::scope(|scope| {
        let capture = std::thread::Builder::new()
            .name("semask-capture".into())
            .spawn_scoped(scope, || capture_loop(source, preprocessor, free_rx, work_tx, options, stop))
            .expect("cannot spawn the capture thread");
        let inference = std::thread::Builder::new()
            .name("semask-inference".into())
            .spawn_scoped(scope, move || inference_loop(backend, work_rx, done_tx, drop_stale))
            .expect("cannot spawn the inference thread");
        let mut summary = output_loop(postprocessor, needs, sinks, done_rx, free_tx, observe);
        // A panic there is a bug: let it surface as one.
        let capture_error = capture.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let inference_error = inference.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        // The first stage to fail is the cause; later ones only saw their rings close.
        summary.stopped_by = capture_error
            .map(RunError::Source)
            .or(inference_error.map(RunError::Network))
            .or(summary.stopped_by);
        summary.interrupted = stop.load(Ordering::Relaxed);
        summary
    })
}

/// Reads frames into recycled buffers and pre-processes them, until the source ends; returns a
/// fatal source error.
fn capture_loop(
    source: &mut dyn Source,
    preprocessor: &mut Preprocessor,
    mut free: RingReceiver<Frame>,
    mut work: RingSender<Frame>,
    options: &PipelineOptions,
    stop: &AtomicBool,
) -> Option<SourceError> {
    let mut passes_left = options.repeat;
    let mut sequence = 0u64;
    let mut stream_size: Option<(usize, usize)> = None;
    let start = Instant::now();
    let mut frame = free.pop()?;
    let result = loop {
        if stop.load(Ordering::Relaxed) || options.max_frames.is_some_and(|max| sequence >= max) {
            break None;
        }
        if let Pacing::Realtime { fps } = options.pacing {
            // `fps` is checked against FPS_RANGE where it is set; a slot beyond what a Duration
            // holds (centuries away) is never reached.
            let slot =
                Duration::try_from_secs_f64(sequence as f64 / fps).ok().and_then(|d| start.checked_add(d));
            if !sleep_until(slot, stop) {
                break None;
            }
        }
        match source.next(&mut frame) {
            Ok(Captured::Frame) => {
                let size = (frame.image.width, frame.image.height);
                let first = *stream_size.get_or_insert(size);
                if size != first && !options.mixed_sizes {
                    use std::fmt::Write;
                    frame.status = FrameStatus::Failed;
                    let _ = write!(
                        frame.error,
                        "frame is {}x{} but the stream is {}x{} (pass --mixed-sizes to accept frames of any size)",
                        size.0, size.1, first.0, first.1
                    );
                } else {
                    let start = Instant::now();
                    frame.input.resize(preprocessor.spec().input_len(), 0.0);
                    preprocessor.run(&frame.image, &mut frame.input);
                    frame.timings.add(Stage::Preprocess, start.elapsed());
                }
            }
            Ok(Captured::Timeout) => continue,
            Ok(Captured::EndOfStream) => {
                if passes_left == Repeat::Times(0) {
                    break None;
                }
                match source.rewind() {
                    Ok(true) => {
                        if let Repeat::Times(n) = &mut passes_left {
                            *n -= 1;
                        }
                        continue;
                    }
                    Ok(false) => {
                        log::warn!("{} cannot be replayed; --input-loop ignored", source.info().uri);
                        break None;
                    }
                    Err(e) => break Some(e),
                }
            }
            Err(SourceError::BadFrame { index, name, reason }) => {
                frame.begin(index, &name);
                frame.status = FrameStatus::Failed;
                frame.error.push_str(&reason);
            }
            Err(e) => break Some(e),
        }
        frame.index = sequence;
        sequence += 1;
        if work.push(frame).is_err() {
            break None; // the inference thread stopped
        }
        // None: the output thread stopped.
        frame = free.pop()?;
    };
    work.close();
    result
}

/// Sleeps until `deadline` (`None`: forever), in short steps so that `stop` is seen within
/// 50 ms. Returns false when stopped.
fn sleep_until(deadline: Option<Instant>, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = match deadline {
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => return true,
            },
            None => Duration::from_millis(50),
        };
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Runs the network on each frame's input into its logits; with `drop_stale` (a live source)
/// keeps only the newest waiting frame. Returns a network error.
fn inference_loop(
    backend: &mut dyn Backend,
    mut work: RingReceiver<Frame>,
    mut done: RingSender<Frame>,
    drop_stale: bool,
) -> Option<BackendError> {
    let mut error = None;
    'frames: while let Some(mut frame) = work.pop() {
        if drop_stale {
            while let Some(newer) = work.try_pop() {
                if frame.status == FrameStatus::Ok {
                    frame.status = FrameStatus::Dropped;
                }
                if done.push(std::mem::replace(&mut frame, newer)).is_err() {
                    break 'frames;
                }
            }
        }
        if frame.status == FrameStatus::Ok {
            let start = Instant::now();
            backend.input_mut().copy_from_slice(&frame.input);
            if let Err(e) = backend.run() {
                error = Some(e);
                break;
            }
            frame.logits.clear();
            frame.logits.extend_from_slice(backend.logits());
            frame.timings.add(Stage::Network, start.elapsed());
        }
        if done.push(frame).is_err() {
            break;
        }
    }
    work.close();
    done.close();
    error
}

/// Post-processes frames, writes them to the sinks, keeps the statistics, and recycles frames
/// to the capture thread.
fn output_loop(
    postprocessor: &mut Postprocessor,
    needs: Needs,
    sinks: &mut [Box<dyn Sink>],
    mut done: RingReceiver<Frame>,
    mut free: RingSender<Frame>,
    mut observe: impl FnMut(FrameEvent<'_>),
) -> RunSummary {
    let mut summary = RunSummary::default();
    let mut first_capture: Option<Instant> = None;
    while let Some(mut frame) = done.pop() {
        first_capture.get_or_insert(frame.captured_at);
        summary.frames_in += 1;
        frame.dropped_before = summary.dropped;
        match frame.status {
            FrameStatus::Dropped => summary.dropped += 1,
            FrameStatus::Failed => summary.failed.push(FrameFailure {
                index: frame.index,
                name: frame.name.clone(),
                reason: frame.error.clone(),
            }),
            FrameStatus::Ok => {
                let post_start = Instant::now();
                postprocessor.run_frame(&mut frame, needs);
                let output_start = Instant::now();
                frame.timings.add(Stage::Postprocess, output_start - post_start);
                if let Some(e) = sinks.iter_mut().find_map(|sink| sink.write(&frame).err()) {
                    summary.stopped_by = Some(e.into());
                    break;
                }
                frame.timings.add(Stage::Output, output_start.elapsed());
                frame.end_to_end = frame.captured_at.elapsed();
                summary.frames_out += 1;
                summary.stats.record(&frame.timings, frame.end_to_end);
            }
        }
        let event = match frame.status {
            FrameStatus::Ok => FrameEvent::Written(&frame),
            FrameStatus::Failed => FrameEvent::Failed(&frame),
            FrameStatus::Dropped => FrameEvent::Dropped(&frame),
        };
        if let Some(e) = sinks.iter_mut().find_map(|sink| sink.record(&event).err()) {
            summary.stopped_by = Some(e.into());
            break;
        }
        observe(event);
        if let Some(start) = first_capture {
            summary.wall = start.elapsed();
        }
        let _ = free.push(frame);
    }
    done.close();
    free.close();
    for sink in sinks.iter_mut() {
        if let Err(e) = sink.finish() {
            summary.stopped_by.get_or_insert(e.into());
        }
    }
    summary
}
