//! The one [`Frame`] type that flows through the pipeline, and the plain image buffers it holds.
//!
//! Buffers are resized in place ([`Rgb8Image::reset`], [`LabelMap::reset`]) so that a recycled
//! frame allocates nothing once it has seen the largest frame of a stream.

use std::time::{Duration, Instant};

use crate::timing::StageTimings;

/// A width and a height, written `WxH` (`1024x512`) in every flag, URI, profile and message:
/// the order of camera modes, video tools and `synth://`. Internally the network's sizes are
/// often `(height, width)` tuples, NCHW's order: [`Size::hw`] converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Size {
    pub width: usize,
    pub height: usize,
}

impl Size {
    pub fn new(width: usize, height: usize) -> Size {
        Size { width, height }
    }

    /// `(height, width)`.
    pub fn hw(self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// From `(height, width)`.
    pub fn from_hw((height, width): (usize, usize)) -> Size {
        Size { width, height }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// A size that is not `WxH` with both sides in 1..=[`crate::limits::MAX_SIDE`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a size WxH (width x height, e.g. 1024x512) with sides 1 to {max}", max = crate::limits::MAX_SIDE)]
pub struct SizeError {
    pub text: String,
}

impl std::str::FromStr for Size {
    type Err = SizeError;

    /// `1024x512` (or `1024X512`) → width 1024, height 512.
    fn from_str(text: &str) -> Result<Size, SizeError> {
        let side = |s: &str| {
            s.trim().parse::<usize>().ok().filter(|&n| n >= 1 && n as u64 <= crate::limits::MAX_SIDE)
        };
        let (w, h) = text.split_once(['x', 'X']).ok_or_else(|| SizeError { text: text.into() })?;
        match (side(w), side(h)) {
            (Some(width), Some(height)) => Ok(Size { width, height }),
            _ => Err(SizeError { text: text.into() }),
        }
    }
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `r, g, b`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rgb8Image {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

impl Rgb8Image {
    pub fn new(width: usize, height: usize) -> Self {
        Rgb8Image { width, height, data: vec![0; width * height * 3] }
    }

    /// Changes the size, keeping the allocation when it is large enough. Contents are unspecified.
    pub fn reset(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        self.data.resize(width * height * 3, 0);
    }

    /// Becomes a copy of `other`, keeping the allocation when it is large enough.
    pub fn copy_from(&mut self, other: &Rgb8Image) {
        self.reset(other.width, other.height);
        self.data.copy_from_slice(&other.data);
    }

    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }
}

/// A map of class indices (train ids for a Cityscapes model), one byte per pixel, row-major.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelMap {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl LabelMap {
    pub fn new(width: usize, height: usize) -> Self {
        LabelMap { width, height, data: vec![0; width * height] }
    }

    /// Changes the size, keeping the allocation when it is large enough. Contents are unspecified.
    pub fn reset(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        self.data.resize(width * height, 0);
    }

    pub fn get(&self, x: usize, y: usize) -> u8 {
        self.data[y * self.width + x]
    }
}

/// What became of a frame on its way through the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameStatus {
    /// Captured and (later) segmented.
    #[default]
    Ok,
    /// The source could not read or decode it; [`Frame::error`] says why.
    Failed,
    /// A live source delivered a newer frame before this one was processed.
    Dropped,
}

impl FrameStatus {
    /// The name statistics give it.
    pub fn name(self) -> &'static str {
        match self {
            FrameStatus::Ok => "ok",
            FrameStatus::Failed => "failed",
            FrameStatus::Dropped => "dropped",
        }
    }
}

/// One frame and everything computed from it.
///
/// A source fills `index`, `name`, `captured_at`, `image` and the decode timing; the
/// [`Segmenter`](crate::pipeline::Segmenter) fills `labels` (and `color` / `overlay` when a sink
/// wants them); sinks read it. The same `Frame` value is reused for the next frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Position of the frame in its source, from 0.
    pub index: u64,
    /// Name the outputs of this frame are written under: the input file stem, or `%06d` of the
    /// index for sources without file names.
    pub name: String,
    /// When the source produced (captured or started reading) the frame.
    pub captured_at: Instant,
    /// The frame's pixels at their original size.
    pub image: Rgb8Image,
    /// Class index per pixel, at the frame's size.
    pub labels: LabelMap,
    /// Palette colour of each label (filled only when an output needs it).
    pub color: Rgb8Image,
    /// Colour blended over the frame (filled only when an output needs it).
    pub overlay: Rgb8Image,
    /// The network input made from `image` (NCHW f32), in the pipeline.
    pub input: Vec<f32>,
    /// The network's logits for this frame (`[1, K, h, w]` flattened), in the pipeline.
    pub logits: Vec<f32>,
    pub timings: StageTimings,
    pub status: FrameStatus,
    /// Why the frame failed (when `status` is `Failed`).
    pub error: String,
    /// Capture to all outputs written (set when the frame is written).
    pub end_to_end: Duration,
    /// Frames dropped before this one, since the start of the run.
    pub dropped_before: u64,
}

impl Default for Frame {
    fn default() -> Self {
        Frame {
            index: 0,
            name: String::new(),
            captured_at: Instant::now(),
            image: Rgb8Image::default(),
            labels: LabelMap::default(),
            color: Rgb8Image::default(),
            overlay: Rgb8Image::default(),
            input: Vec::new(),
            logits: Vec::new(),
            timings: StageTimings::default(),
            status: FrameStatus::Ok,
            error: String::new(),
            end_to_end: Duration::ZERO,
            dropped_before: 0,
        }
    }
}

impl Frame {
    /// Prepares a recycled frame for the next capture (reusing every buffer).
    pub fn begin(&mut self, index: u64, name: &str) {
        self.index = index;
        self.name.clear();
        self.name.push_str(name);
        self.begin_unnamed(index);
    }

    /// Like [`Frame::begin`], for sources that name frames `%06d` by index.
    pub fn begin_numbered(&mut self, index: u64) {
        use std::fmt::Write;
        self.name.clear();
        let _ = write!(self.name, "{index:06}");
        self.begin_unnamed(index);
    }

    fn begin_unnamed(&mut self, index: u64) {
        self.index = index;
        self.captured_at = Instant::now();
        self.timings.clear();
        self.status = FrameStatus::Ok;
        self.error.clear();
        self.end_to_end = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::Size;

    #[test]
    fn sizes_are_width_by_height() {
        let s: Size = "1024x512".parse().unwrap();
        assert_eq!((s.width, s.height, s.hw()), (1024, 512, (512, 1024)));
        assert_eq!(s.to_string(), "1024x512");
        assert_eq!("7X3".parse::<Size>().unwrap(), Size::new(7, 3));
        for bad in ["", "1024", "0x5", "5x0", "x", "-1x4", "1.5x2", "65536x1", "3x4x5"] {
            let err = bad.parse::<Size>().unwrap_err().to_string();
            assert!(err.contains("WxH"), "{bad}: {err}");
        }
    }
}
