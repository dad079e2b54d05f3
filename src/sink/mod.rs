//! Where results go: one [`Sink`] trait; every requested output is one sink, and the pipeline
//! hands each frame to all of them.
//!
//! Today: PNG directories of label maps, colour maps and overlays ([`images::PngDirSink`]).
//! Videos, statistics files and displays plug in here as further sinks.

pub mod images;

use std::path::PathBuf;

use crate::frame::Frame;
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

    /// Writes one frame. When it returns `Ok`, the output is complete on disk.
    fn write(&mut self, frame: &Frame) -> Result<(), SinkError>;

    /// Flushes and closes (end of the run).
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
