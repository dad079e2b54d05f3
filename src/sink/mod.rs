//! Where results go: one [`Sink`] trait; every requested output is one sink, and the pipeline
//! hands each frame to all of them.
//!
//! - [`images::PngDirSink`]: PNG directories of label maps, colour maps and overlays.
//! - [`stats::StatsSink`]: one JSON line per frame (`--stats`).
//! - [`video::VideoSink`]: the overlay as an H.264 MP4 or an MJPEG stream (`--output`).
//! - [`NullSink`]: discards (the benchmark's default output).
//!
//! A display (`display://0`) plugs in here as a further sink.

pub mod images;
pub mod stats;
pub mod video;

use std::path::PathBuf;

use crate::frame::Frame;
use crate::pipeline::FrameEvent;
use crate::postprocess::Needs;

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
