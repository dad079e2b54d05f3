//! Sampling plans for resizing along one axis: bilinear with half-pixel centres
//! (`align_corners=False`, as PyTorch's `F.interpolate`, mmseg's `resize` and OpenCV's
//! `INTER_LINEAR` use) and nearest with half-pixel centres.
//!
//! A plan depends only on the source and destination lengths, so pre- and post-processing build
//! it once per frame size and reuse it for every frame of that size. Images and logits are
//! resized separably: along x with one plan, then along y with another.

/// Where one destination sample reads from, and with which weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearTap {
    /// First source index.
    pub i0: u32,
    /// Second source index (`i0 + 1`, or `i0` at the last source sample).
    pub i1: u32,
    /// Weight of `i0`.
    pub w0: f32,
    /// Weight of `i1`.
    pub w1: f32,
}

/// Bilinear taps for resizing an axis of `src_len` samples to `dst_len` samples.
///
/// Matches PyTorch's `upsample_bilinear2d` with `align_corners=False` (the arithmetic is done in
/// f32 in the same order): source position `s = (d + 0.5) * src_len / dst_len - 0.5`, clamped
/// at 0, then linear interpolation between `floor(s)` and the next sample (clamped at the end).
pub fn linear_taps(src_len: usize, dst_len: usize) -> Vec<LinearTap> {
    assert!(src_len > 0 && dst_len > 0, "cannot resample an empty axis");
    let scale = src_len as f32 / dst_len as f32;
    (0..dst_len)
        .map(|d| {
            let s = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (s as usize).min(src_len - 1);
            let i1 = if i0 + 1 < src_len { i0 + 1 } else { i0 };
            let w1 = s - i0 as f32;
            LinearTap { i0: i0 as u32, i1: i1 as u32, w0: 1.0 - w1, w1 }
        })
        .collect()
}

/// Nearest-neighbour source index of each of `dst_len` samples resized from `src_len`, with
/// half-pixel centres (`floor((d + 0.5) * src_len / dst_len)`, PyTorch's `nearest-exact`): an
/// integer upscale by `k` repeats every source sample exactly `k` times.
pub fn nearest_indices(src_len: usize, dst_len: usize) -> Vec<u32> {
    assert!(src_len > 0 && dst_len > 0, "cannot resample an empty axis");
    (0..dst_len)
        .map(|d| {
            // Integer arithmetic: exact for every size, no float rounding at sample boundaries.
            let s = ((2 * d + 1) * src_len) / (2 * dst_len);
            s.min(src_len - 1) as u32
        })
        .collect()
}

/// The two source rows a bilinear output row reads, resampled along x, kept between output rows.
///
/// When upsampling, consecutive output rows read the same pair of source rows, so each source
/// row is resampled along x once instead of once per output row. Used for images
/// (pre-processing) and logits (post-processing).
#[derive(Debug, Clone, Default)]
pub struct TwoRowCache {
    slots: [(Option<u32>, Vec<f32>); 2],
}

impl TwoRowCache {
    /// Forgets the cached rows and sets the row length (reusing the allocations).
    pub fn reset(&mut self, row_len: usize) {
        for (row, buf) in &mut self.slots {
            *row = None;
            buf.resize(row_len, 0.0);
        }
    }

    /// The x-resampled rows `tap.i0` and `tap.i1`, computing a missing one with
    /// `fill(source_row, out)`.
    pub fn rows(&mut self, tap: &LinearTap, mut fill: impl FnMut(usize, &mut [f32])) -> (&[f32], &[f32]) {
        let needed: &[(usize, u32)] =
            if tap.i0 == tap.i1 { &[(0, tap.i0)] } else { &[(0, tap.i0), (1, tap.i1)] };
        for &(slot, src_row) in needed {
            match self.slots.iter().position(|(row, _)| *row == Some(src_row)) {
                Some(held) if held != slot => self.slots.swap(0, 1),
                Some(_) => {}
                None => {
                    let (row, buf) = &mut self.slots[slot];
                    fill(src_row as usize, buf);
                    *row = Some(src_row);
                }
            }
        }
        let top = &self.slots[0].1;
        // At the last source row both taps read the same row.
        let bottom = if tap.i0 == tap.i1 { top } else { &self.slots[1].1 };
        (top, bottom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_resize_reads_each_sample_with_full_weight() {
        for tap in linear_taps(5, 5).iter().enumerate() {
            let (d, t) = tap;
            assert_eq!(t.i0 as usize, d);
            assert_eq!(t.w0, 1.0);
            assert_eq!(t.w1, 0.0);
        }
    }

    #[test]
    fn upsample_by_four_matches_pytorch_positions() {
        // torch.nn.functional.interpolate(x, size=8, mode="linear", align_corners=False) on a
        // length-2 signal [0, 1] gives [0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1].
        let taps = linear_taps(2, 8);
        let signal = [0.0f32, 1.0];
        let out: Vec<f32> =
            taps.iter().map(|t| signal[t.i0 as usize] * t.w0 + signal[t.i1 as usize] * t.w1).collect();
        let expected = [0.0, 0.0, 0.125, 0.375, 0.625, 0.875, 1.0, 1.0];
        for (a, b) in out.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn downsample_by_two_averages_pairs() {
        let taps = linear_taps(4, 2);
        assert_eq!((taps[0].i0, taps[0].i1), (0, 1));
        assert_eq!((taps[1].i0, taps[1].i1), (2, 3));
        assert!((taps[0].w0 - 0.5).abs() < 1e-6 && (taps[1].w1 - 0.5).abs() < 1e-6);
    }

    #[test]
    fn nearest_upscale_repeats_samples() {
        assert_eq!(nearest_indices(3, 12), vec![0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(nearest_indices(4, 2), vec![1, 3]);
        assert_eq!(nearest_indices(3, 3), vec![0, 1, 2]);
        // Non-integer ratio stays in range.
        assert!(nearest_indices(28, 113).iter().all(|&i| i < 28));
    }

    #[test]
    fn row_cache_fills_each_source_row_once_when_upsampling() {
        let taps = linear_taps(3, 12);
        let mut cache = TwoRowCache::default();
        cache.reset(1);
        let mut fills = vec![];
        for tap in &taps {
            let (top, bottom) = cache.rows(tap, |r, out| {
                fills.push(r);
                out[0] = r as f32;
            });
            assert_eq!((top[0], bottom[0]), (tap.i0 as f32, tap.i1 as f32));
        }
        assert_eq!(fills, vec![0, 1, 2]);
    }
}
