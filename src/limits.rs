//! How big things read from files and flags may get, checked before anything is allocated.
//!
//! Image headers, MP4 track headers, `synth://` sizes and a model's static input all declare
//! sizes that hostile or broken files can set to anything (a 74-byte PNG can claim
//! 65535x65535, 12.8 GB of RGB). Every such size is checked against [`Limits`] first, so that a
//! bad file is one clear error instead of an out-of-memory abort.
//!
//! | limit | default | flag |
//! |---|---|---|
//! | pixels per frame (and per network input) | [`DEFAULT_MAX_PIXELS`]: 40 megapixels (8K UHD is 33.2) | `--max-pixels N` |
//! | bytes of one encoded frame or image file | 16 MiB + 8 bytes per allowed pixel | follows `--max-pixels` |
//! | bytes of one tensor inside the network | [`MAX_TENSOR_BYTES`]: 4 GiB | |
//! | frame rates (`--input-rate`, a file's own rate, `synth://?fps=`) | [`FPS_RANGE`]: 0.01 to 1000 | |
//!
//! The pipeline keeps a pool of about ten frames, each holding the image, its overlay and
//! colour map: at the default limit that is some 3.6 GB at most, within a 8 GB Jetson.

use std::ops::RangeInclusive;

/// Default pixel limit per frame: 40 megapixels, above 8K UHD (7680x4320) and 36 MP photos.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// The largest width or height of any frame, whatever the pixel limit (PNG and JPEG headers
/// hold 16 and 32 bits; H.264 levels stop far below).
pub const MAX_SIDE: u64 = 65_535;

/// Largest tensor a network may compute (per tensor, after its input size is fixed).
pub const MAX_TENSOR_BYTES: u64 = 4 << 30;

/// Frame rates accepted from flags, files and URIs, in frames per second. Below 0.01 fps a
/// paced replay waits over a minute and a half per frame; above 1000 the MP4 time base of
/// 1000 ticks per frame overflows its 32-bit rate for long videos.
pub const FPS_RANGE: RangeInclusive<f64> = 0.01..=1000.0;

/// A size or rate outside the limits; each message says how to proceed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    #[error("the frame is {width}x{height}; nothing to segment")]
    EmptyFrame { width: u64, height: u64 },
    #[error("the frame claims {width}x{height}; no side may exceed {MAX_SIDE} pixels (a corrupt header?)")]
    SideTooLong { width: u64, height: u64 },
    #[error(
        "the frame claims {width}x{height} = {}, above the limit of {} (raise it with \
         --max-pixels {} if the file is genuine)",
        describe_pixels(width * height),
        describe_pixels(*max_pixels),
        width * height
    )]
    TooManyPixels { width: u64, height: u64, max_pixels: u64 },
    #[error(
        "{what} is {fps} fps; frame rates must be between {} and {} fps",
        FPS_RANGE.start(),
        FPS_RANGE.end()
    )]
    FrameRate { what: String, fps: f64 },
}

/// Size limits for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (or network input) in pixels (`--max-pixels`).
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_pixels: DEFAULT_MAX_PIXELS }
    }
}

impl Limits {
    /// Checks a declared `width x height` before anything of that size is allocated.
    pub fn check_frame(&self, width: u64, height: u64) -> Result<(), LimitError> {
        if width == 0 || height == 0 {
            return Err(LimitError::EmptyFrame { width, height });
        }
        if width > MAX_SIDE || height > MAX_SIDE {
            return Err(LimitError::SideTooLong { width, height });
        }
        // Both sides are at most 65535: the product fits.
        if width * height > self.max_pixels {
            return Err(LimitError::TooManyPixels { width, height, max_pixels: self.max_pixels });
        }
        Ok(())
    }

    /// Largest encoded frame or image file worth reading: generous for any real PNG or JPEG
    /// within the pixel limit (uncompressed 16-bit RGBA is 8 bytes per pixel).
    pub fn max_encoded_bytes(&self) -> u64 {
        (16 << 20) + 8 * self.max_pixels
    }

    /// The `image` crate's limits matching these: a decoder that allocates while reading its
    /// header stops at them. (Declared sizes are checked with [`Limits::check_frame`] right
    /// after the header, for a clearer message.)
    pub fn image_limits(&self) -> image::Limits {
        let mut limits = image::Limits::no_limits();
        // Room for the decoded image in its own format (up to 16-bit RGBA) plus our RGB8 copy.
        limits.max_alloc = Some(self.max_pixels.saturating_mul(8 + 3) + (16 << 20));
        limits
    }
}

/// `524288 pixels (0.52 MP)`.
pub fn describe_pixels(pixels: u64) -> String {
    format!("{pixels} pixels ({:.2} MP)", pixels as f64 / 1e6)
}

/// Checks a frame rate against [`FPS_RANGE`]; `what` names where it came from.
pub fn check_fps(fps: f64, what: &str) -> Result<f64, LimitError> {
    if FPS_RANGE.contains(&fps) {
        Ok(fps)
    } else {
        Err(LimitError::FrameRate { what: what.to_string(), fps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_checked_against_sides_and_pixels() {
        let limits = Limits::default();
        assert!(limits.check_frame(7680, 4320).is_ok());
        assert!(
            limits.check_frame(65535, 65535).unwrap_err().to_string().contains("--max-pixels 4294836225")
        );
        assert!(limits.check_frame(100_000, 1).unwrap_err().to_string().contains("65535"));
        assert!(limits.check_frame(0, 10).is_err());
        let small = Limits { max_pixels: 100 };
        assert!(small.check_frame(10, 10).is_ok());
        assert!(small.check_frame(10, 11).is_err());
    }

    #[test]
    fn frame_rates_outside_the_range_are_refused() {
        for bad in [0.0, -1.0, 1e-9, 1e300, f64::NAN, f64::INFINITY, 1000.5] {
            assert!(check_fps(bad, "--input-rate").is_err(), "{bad}");
        }
        assert_eq!(check_fps(29.97, "x"), Ok(29.97));
    }
}
