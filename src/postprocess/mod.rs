//! Post-processing: logits `[1, K, h, w]` → a label map at the frame's size, then palette colours
//! and the overlay when an output wants them.
//!
//! Two ways to reach the frame size ([`Upsample`]):
//! - `fast`: argmax at the logits' resolution (h = H/4), then nearest-neighbour upsampling of the
//!   label map. What live use wants: K times less work than `exact`.
//! - `exact`: bilinear upsampling of the logits (`align_corners=False`), then argmax: what the
//!   official mmseg inference does, and what the Cityscapes numbers are measured with. The
//!   upsampled logits are never stored whole: each output row is interpolated and reduced at once.
//!
//! When the frame is not the network's input size, `exact` interpolates the logits straight to the
//! frame size; its sampling grid is the one the official two-step resize (logits → network input →
//! original image) uses.

pub mod argmax;
pub mod colorize;
pub mod overlay;

use crate::frame::{Frame, LabelMap, Rgb8Image};
use crate::model::ClassTable;
use crate::named::Named;
use crate::resample::{LinearTap, TwoRowCache, linear_taps, nearest_indices};

/// How the label map reaches the frame size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Upsample {
    /// Argmax at logits resolution, then nearest upsampling of the labels (fast, for live use).
    Fast,
    /// Bilinear upsampling of the logits, then argmax (the official evaluation).
    Exact,
}

impl Named for Upsample {
    const WHAT: &'static str = "upsampling mode";
    const ALL: &'static [Self] = &[Upsample::Fast, Upsample::Exact];
    fn name(self) -> &'static str {
        match self {
            Upsample::Fast => "fast",
            Upsample::Exact => "exact",
        }
    }
    fn help(self) -> &'static str {
        match self {
            Upsample::Fast => "argmax at logits resolution, then nearest upsampling of the labels (live use)",
            Upsample::Exact => "bilinear upsampling of the logits, then argmax (the official evaluation)",
        }
    }
}
crate::impl_named_text!(Upsample);

/// Which derived images the outputs of a run need besides the label map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub color: bool,
    pub overlay: bool,
}

impl std::ops::BitOr for Needs {
    type Output = Needs;
    fn bitor(self, rhs: Needs) -> Needs {
        Needs { color: self.color || rhs.color, overlay: self.overlay || rhs.overlay }
    }
}

/// Turns logits into a frame's label map, colours and overlay, reusing its buffers.
#[derive(Debug, Clone)]
pub struct Postprocessor {
    upsample: Upsample,
    classes: ClassTable,
    /// Overlay weight of the colour, 0..=256 (256 = colour only).
    alpha_256: u16,
    /// `(K, h, w)` of the logits.
    logits_dims: (usize, usize, usize),
    plan: Option<Plan>,
    /// Fast mode: labels at logits resolution.
    low_res: Vec<u8>,
    /// Fast mode: running maxima for the argmax at logits resolution.
    scratch: Vec<f32>,
    /// Exact mode: output x positions of the current row near a class boundary.
    boundary: Vec<u32>,
    /// Exact mode: x-resampled logits rows `[K][frame width]`.
    rows: TwoRowCache,
    /// Exact mode: best value and best class (as f32) of each pixel of the current output row.
    row_best: Vec<f32>,
    row_best_class: Vec<f32>,
}

#[derive(Debug, Clone)]
struct Plan {
    frame_width: usize,
    frame_height: usize,
    x_nearest: Vec<u32>,
    y_nearest: Vec<u32>,
    x_taps: Vec<LinearTap>,
    y_taps: Vec<LinearTap>,
}

impl Postprocessor {
    /// `logits_shape` is the backend's `[1, K, h, w]`; `classes` must have K entries; `alpha` in
    /// 0..=1 is the weight of the colour in the overlay.
    pub fn new(upsample: Upsample, logits_shape: [usize; 4], classes: ClassTable, alpha: f32) -> Self {
        assert_eq!(classes.len(), logits_shape[1], "class table does not match the logits");
        Postprocessor {
            upsample,
            classes,
            alpha_256: (alpha.clamp(0.0, 1.0) * 256.0).round() as u16,
            logits_dims: (logits_shape[1], logits_shape[2], logits_shape[3]),
            plan: None,
            low_res: Vec::new(),
            scratch: Vec::new(),
            boundary: Vec::new(),
            rows: TwoRowCache::default(),
            row_best: Vec::new(),
            row_best_class: Vec::new(),
        }
    }

    pub fn upsample(&self) -> Upsample {
        self.upsample
    }

    pub fn classes(&self) -> &ClassTable {
        &self.classes
    }

    /// Fills `frame.labels` (at the frame's size) from `logits`, then `frame.color` and
    /// `frame.overlay` if `needs` says so.
    pub fn run(&mut self, logits: &[f32], frame: &mut Frame, needs: Needs) {
        let Frame { image, labels, color, overlay, .. } = frame;
        self.fill(logits, image, labels, color, overlay, needs);
    }

    /// [`Postprocessor::run`] on the logits the frame carries (`frame.logits`), as the
    /// pipeline's output thread does.
    pub fn run_frame(&mut self, frame: &mut Frame, needs: Needs) {
        let Frame { logits, image, labels, color, overlay, .. } = frame;
        self.fill(logits, image, labels, color, overlay, needs);
    }

    fn fill(
        &mut self,
        logits: &[f32],
        image: &Rgb8Image,
        labels: &mut LabelMap,
        color: &mut Rgb8Image,
        overlay: &mut Rgb8Image,
        needs: Needs,
    ) {
        labels.reset(image.width, image.height);
        self.labels(logits, labels);
        if needs.color || needs.overlay {
            colorize::colorize(labels, self.classes.palette(), color);
        }
        if needs.overlay {
            overlay::blend(image, color, self.alpha_256, overlay);
        }
    }

    /// Writes the label map of `logits` into `labels`, whose size is the target size.
    pub fn labels(&mut self, logits: &[f32], labels: &mut LabelMap) {
        let (k, h, w) = self.logits_dims;
        assert_eq!(logits.len(), k * h * w, "logits do not have the shape given at construction");
        self.ensure_plan(labels.width, labels.height);
        let plan = self.plan.as_ref().expect("plan set above");
        match self.upsample {
            Upsample::Fast => {
                self.low_res.resize(h * w, 0);
                argmax::argmax_planes(logits, k, &mut self.low_res, &mut self.scratch);
                for (y, &sy) in plan.y_nearest.iter().enumerate() {
                    let src = &self.low_res[sy as usize * w..(sy as usize + 1) * w];
                    let dst = &mut labels.data[y * labels.width..(y + 1) * labels.width];
                    for (d, &sx) in dst.iter_mut().zip(&plan.x_nearest) {
                        *d = src[sx as usize];
                    }
                }
            }
            Upsample::Exact => {
                // Where the four logits pixels an output pixel interpolates share one argmax,
                // that class wins every convex combination of them: the label is known without
                // interpolating. Only pixels near class boundaries need the K interpolations,
                // one by one when they are few, as a vectorised row when they are many.
                self.low_res.resize(h * w, 0);
                argmax::argmax_planes(logits, k, &mut self.low_res, &mut self.scratch);
                let out_w = labels.width;
                self.row_best.resize(out_w, 0.0);
                self.row_best_class.resize(out_w, 0.0);
                // At most one boundary pixel per output column: sized once, so that a row with
                // more boundary pixels than any before does not allocate mid-stream.
                self.boundary.clear();
                self.boundary.reserve(out_w);
                for (y, ytap) in plan.y_taps.iter().enumerate() {
                    let lo_top = &self.low_res[ytap.i0 as usize * w..(ytap.i0 as usize + 1) * w];
                    let lo_bottom = &self.low_res[ytap.i1 as usize * w..(ytap.i1 as usize + 1) * w];
                    let dst = &mut labels.data[y * out_w..(y + 1) * out_w];
                    self.boundary.clear();
                    for (x, (d, xtap)) in dst.iter_mut().zip(&plan.x_taps).enumerate() {
                        let (x0, x1) = (xtap.i0 as usize, xtap.i1 as usize);
                        let a = lo_top[x0];
                        if a == lo_top[x1] && a == lo_bottom[x0] && a == lo_bottom[x1] {
                            *d = a;
                        } else {
                            self.boundary.push(x as u32);
                        }
                    }
                    if self.boundary.len() * 4 > out_w {
                        let (top, bottom) = self.rows.rows(ytap, |src_row, out| {
                            resample_logits_row(logits, (k, h, w), src_row, &plan.x_taps, out)
                        });
                        argmax::argmax_blended_rows(
                            top,
                            bottom,
                            ytap.w0,
                            ytap.w1,
                            k,
                            dst,
                            &mut self.row_best,
                            &mut self.row_best_class,
                        );
                    } else {
                        for &x in &self.boundary {
                            dst[x as usize] = exact_pixel(logits, (k, h, w), ytap, &plan.x_taps[x as usize]);
                        }
                    }
                }
            }
        }
    }

    fn ensure_plan(&mut self, width: usize, height: usize) {
        if self.plan.as_ref().is_some_and(|p| p.frame_width == width && p.frame_height == height) {
            return;
        }
        let (k, h, w) = self.logits_dims;
        self.plan = Some(Plan {
            frame_width: width,
            frame_height: height,
            x_nearest: nearest_indices(w, width),
            y_nearest: nearest_indices(h, height),
            x_taps: linear_taps(w, width),
            y_taps: linear_taps(h, height),
        });
        self.rows.reset(k * width);
    }
}

/// The `exact` label of one output pixel: the same arithmetic, in the same order, as
/// [`resample_logits_row`] followed by [`argmax::argmax_blended_rows`], so both give identical
/// labels.
fn exact_pixel(logits: &[f32], (k, h, w): (usize, usize, usize), ytap: &LinearTap, xtap: &LinearTap) -> u8 {
    let (y0, y1, x0, x1) = (ytap.i0 as usize, ytap.i1 as usize, xtap.i0 as usize, xtap.i1 as usize);
    let mut best = f32::NEG_INFINITY;
    let mut best_class = 0;
    for c in 0..k {
        let plane = &logits[c * h * w..(c + 1) * h * w];
        let top = xtap.w0 * plane[y0 * w + x0] + xtap.w1 * plane[y0 * w + x1];
        let bottom = xtap.w0 * plane[y1 * w + x0] + xtap.w1 * plane[y1 * w + x1];
        let v = ytap.w0 * top + ytap.w1 * bottom;
        if c == 0 || v > best {
            best = v;
            best_class = c;
        }
    }
    best_class as u8
}

/// Row `src_row` of every class plane, resampled along x: `out[c * taps.len() + x]`.
fn resample_logits_row(
    logits: &[f32],
    (k, h, w): (usize, usize, usize),
    src_row: usize,
    taps: &[LinearTap],
    out: &mut [f32],
) {
    let out_w = taps.len();
    for c in 0..k {
        let src = &logits[(c * h + src_row) * w..(c * h + src_row + 1) * w];
        for (o, tap) in out[c * out_w..(c + 1) * out_w].iter_mut().zip(taps) {
            *o = tap.w0 * src[tap.i0 as usize] + tap.w1 * src[tap.i1 as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits where class `c` scores `-(x - cx)^2 - (y - cy)^2` around a per-class centre.
    fn blob_logits(k: usize, h: usize, w: usize) -> Vec<f32> {
        let mut l = vec![0.0; k * h * w];
        for c in 0..k {
            let (cx, cy) = ((c * 7 % w) as f32, (c * 3 % h) as f32);
            for y in 0..h {
                for x in 0..w {
                    l[(c * h + y) * w + x] = -((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)) * 0.1;
                }
            }
        }
        l
    }

    /// Full bilinear upsampling, then argmax: the definition `exact` must reproduce.
    fn reference_exact(logits: &[f32], k: usize, h: usize, w: usize, oh: usize, ow: usize) -> Vec<u8> {
        let xt = linear_taps(w, ow);
        let yt = linear_taps(h, oh);
        let mut out = vec![0u8; oh * ow];
        for (y, ty) in yt.iter().enumerate() {
            for (x, tx) in xt.iter().enumerate() {
                let mut best = (f32::NEG_INFINITY, 0);
                for c in 0..k {
                    let at = |yy: u32, xx: u32| logits[(c * h + yy as usize) * w + xx as usize];
                    let top = tx.w0 * at(ty.i0, tx.i0) + tx.w1 * at(ty.i0, tx.i1);
                    let bottom = tx.w0 * at(ty.i1, tx.i0) + tx.w1 * at(ty.i1, tx.i1);
                    let v = ty.w0 * top + ty.w1 * bottom;
                    if v > best.0 {
                        best = (v, c);
                    }
                }
                out[y * ow + x] = best.1 as u8;
            }
        }
        out
    }

    #[test]
    fn exact_matches_upsample_then_argmax() {
        let (k, h, w) = (5, 7, 9);
        let logits = blob_logits(k, h, w);
        for (oh, ow) in [(28, 36), (7, 9), (13, 31), (3, 4)] {
            let mut post = Postprocessor::new(Upsample::Exact, [1, k, h, w], ClassTable::generic(k), 0.5);
            let mut labels = LabelMap::new(ow, oh);
            post.labels(&logits, &mut labels);
            assert_eq!(labels.data, reference_exact(&logits, k, h, w, oh, ow), "{oh}x{ow}");
        }
    }

    #[test]
    fn exact_matches_on_noise_and_on_large_regions() {
        let (k, h, w) = (7, 9, 11);
        let mut state = 12345u32;
        let noise: Vec<f32> = (0..k * h * w)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 8) as f32 / (1 << 24) as f32
            })
            .collect();
        // Large regions: class = column band, with a small noise on top.
        let regions: Vec<f32> = noise
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (c, x) = (i / (h * w), i % w);
                if c == x * k / w { 5.0 + n } else { *n }
            })
            .collect();
        for logits in [&noise, &regions] {
            for (oh, ow) in [(72, 88), (9, 11), (37, 50)] {
                let mut post = Postprocessor::new(Upsample::Exact, [1, k, h, w], ClassTable::generic(k), 0.5);
                let mut labels = LabelMap::new(ow, oh);
                post.labels(logits, &mut labels);
                assert_eq!(labels.data, reference_exact(logits, k, h, w, oh, ow), "{oh}x{ow}");
            }
        }
    }

    #[test]
    fn fast_repeats_low_resolution_argmax() {
        let (k, h, w) = (4, 3, 5);
        let logits = blob_logits(k, h, w);
        let mut low = vec![0u8; h * w];
        argmax::argmax_planes(&logits, k, &mut low, &mut vec![]);
        let mut post = Postprocessor::new(Upsample::Fast, [1, k, h, w], ClassTable::generic(k), 0.5);
        let mut labels = LabelMap::new(w * 4, h * 4);
        post.labels(&logits, &mut labels);
        for y in 0..h * 4 {
            for x in 0..w * 4 {
                assert_eq!(labels.get(x, y), low[(y / 4) * w + x / 4]);
            }
        }
    }

    #[test]
    fn run_fills_colour_and_overlay_only_when_needed() {
        let (k, h, w) = (2, 2, 2);
        let logits = vec![1.0, 0.0, 0.0, 1.0, /* class 1 */ 0.0, 1.0, 1.0, 0.0];
        let classes = ClassTable::new(vec!["a".into(), "b".into()], vec![[255, 0, 0], [0, 0, 255]]).unwrap();
        let mut post = Postprocessor::new(Upsample::Exact, [1, k, h, w], classes, 1.0);
        let mut frame = Frame::default();
        frame.image = crate::frame::Rgb8Image::new(2, 2);
        post.run(&logits, &mut frame, Needs::default());
        assert_eq!(frame.labels.data, vec![0, 1, 1, 0]);
        assert!(frame.color.is_empty() && frame.overlay.is_empty());
        post.run(&logits, &mut frame, Needs { color: false, overlay: true });
        assert_eq!(frame.color.pixel(1, 0), [0, 0, 255]);
        assert_eq!(frame.overlay.pixel(0, 0), [255, 0, 0]); // alpha 1: colour only
    }
}
