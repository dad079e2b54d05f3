//! [`Segmenter`]: one frame in, labels (and colours, overlay) out, with every stage timed; and
//! [`run`]: the frame loop from a source to the sinks.
//!
//! The loop is sequential for now; the streaming work splits it into capture, inference and
//! output threads connected by rings, with the same `Frame`, `Segmenter`, `Source` and `Sink`.

use std::time::Instant;

use crate::backend::{self, Backend, BackendError, BackendOptions};
use crate::frame::Frame;
use crate::model::{ClassTable, ModelError, OnnxModel, SegmentationMetadata};
use crate::postprocess::{Needs, Postprocessor, Upsample};
use crate::preprocess::{PreprocSpec, Preprocessor};
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
}

impl Default for SegmenterOptions {
    fn default() -> Self {
        SegmenterOptions {
            backend: backend::BackendKind::Auto,
            threads: 0,
            input_size: None,
            upsample: Upsample::Exact,
            alpha: 0.5,
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
        let (height, width) = model.input_size(options.input_size)?;
        let backend = backend::create(
            model,
            &BackendOptions { kind: options.backend, threads: options.threads, input_size: (height, width) },
        )?;
        let mut metadata = model.metadata.clone();
        let num_classes = backend.logits_shape()[1];
        let classes = metadata
            .resolve_classes(num_classes)
            .map_err(|source| ModelError::Metadata { name: model.name.clone(), source })?
            .clone();
        let spec = PreprocSpec {
            input_width: width,
            input_height: height,
            mean: metadata.mean.value,
            std: metadata.std.value,
            channel_order: metadata.channel_order.value,
        };
        Ok(Segmenter {
            model_name: model.name.clone(),
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
        let buffer = self.backend.input_mut();
        assert_eq!(buffer.len(), input.len(), "input does not match the model's [1, 3, H, W]");
        buffer.copy_from_slice(input);
        self.backend.run()?;
        Ok(self.backend.logits())
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

/// A frame that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FrameFailure {
    pub index: u64,
    pub name: String,
    pub reason: String,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunSummary {
    /// Frames the source delivered or tried to deliver (bad ones included).
    pub frames_in: u64,
    /// Frames fully written to every sink.
    pub frames_out: u64,
    /// Frames skipped because they could not be read or decoded.
    pub failed: Vec<FrameFailure>,
    /// Stage latencies of the frames written.
    pub stats: StageStats,
    /// Why the run stopped before the end of the source, if it did.
    pub stopped_by: Option<RunError>,
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

/// What happened to one frame, reported to the caller as it goes.
#[derive(Debug)]
pub enum FrameEvent<'a> {
    /// The frame was segmented and written to every sink.
    Written(&'a Frame),
    /// The frame could not be read or decoded and was skipped.
    Failed(&'a FrameFailure),
}

/// Pulls every frame from `source`, segments it and hands it to every sink; calls `observe`
/// after each frame. Bad frames are counted and skipped; a failing source, network or sink stops
/// the run, and [`RunSummary::stopped_by`] says why (with the counts up to that point).
pub fn run(
    source: &mut dyn Source,
    segmenter: &mut Segmenter,
    sinks: &mut [Box<dyn Sink>],
    observe: impl FnMut(FrameEvent<'_>),
) -> RunSummary {
    let mut summary = RunSummary::default();
    if let Err(e) = run_frames(source, segmenter, sinks, observe, &mut summary) {
        summary.stopped_by = Some(e);
    }
    summary
}

fn run_frames(
    source: &mut dyn Source,
    segmenter: &mut Segmenter,
    sinks: &mut [Box<dyn Sink>],
    mut observe: impl FnMut(FrameEvent<'_>),
    summary: &mut RunSummary,
) -> Result<(), RunError> {
    let needs = sinks.iter().fold(Needs::default(), |acc, s| acc | s.needs());
    let mut frame = Frame::default();
    loop {
        let captured = match source.next(&mut frame) {
            Ok(c) => c,
            Err(e) if e.is_bad_frame() => {
                summary.frames_in += 1;
                let failure = match e {
                    SourceError::BadFrame { index, name, reason } => FrameFailure { index, name, reason },
                    _ => unreachable!("is_bad_frame checked"),
                };
                observe(FrameEvent::Failed(&failure));
                summary.failed.push(failure);
                continue;
            }
            Err(e) => return Err(RunError::Source(e)),
        };
        match captured {
            Captured::EndOfStream => break,
            Captured::Timeout => continue,
            Captured::Frame => {}
        }
        summary.frames_in += 1;
        segmenter.segment(&mut frame, needs)?;
        let output_start = Instant::now();
        for sink in sinks.iter_mut() {
            sink.write(&frame)?;
        }
        frame.timings.add(Stage::Output, output_start.elapsed());
        summary.frames_out += 1;
        summary.stats.record(&frame.timings);
        observe(FrameEvent::Written(&frame));
    }
    for sink in sinks.iter_mut() {
        sink.finish()?;
    }
    Ok(())
}
