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
    /// Exact mode: what decides the labels of each x run between the two logits rows the
    /// current output row interpolates.
    cells: CellRow,
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
    /// Runs of output columns that read the same two logits columns (`x_taps` grouped).
    x_runs: Vec<XRun>,
}

/// Output columns `start..end`, which all interpolate logits columns `i0` and `i1`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct XRun {
    start: u32,
    end: u32,
    i0: u32,
    i1: u32,
}

fn x_runs(taps: &[LinearTap]) -> Vec<XRun> {
    let mut runs: Vec<XRun> = Vec::new();
    for (x, tap) in taps.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if (run.i0, run.i1) == (tap.i0, tap.i1) => run.end = x as u32 + 1,
            _ => runs.push(XRun { start: x as u32, end: x as u32 + 1, i0: tap.i0, i1: tap.i1 }),
        }
    }
    runs
}

/// How the labels of one cell (an x run between two logits rows) are found.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell {
    /// The four logits pixels share their argmax: that class wins every convex combination of
    /// them, so every pixel of the cell has this label without interpolating.
    Uniform(u8),
    /// Near a class boundary: each pixel is interpolated, but only for the classes
    /// `candidates[first..first + count]`; the others provably cannot win anywhere in the cell.
    Mixed { first: u32, count: u32 },
}

/// The cells of one pair of logits rows, one per x run.
#[derive(Debug, Clone, Default)]
struct CellRow {
    /// The logits rows (`i0`, `i1`) classified, `None` before the first of a frame.
    source_rows: Option<(u32, u32)>,
    cells: Vec<Cell>,
    /// Indices into `cells` of the `Mixed` ones.
    mixed: Vec<u32>,
    candidates: Vec<u8>,
    /// The four corner logits of each candidate (top left, top right, bottom left, bottom
    /// right), parallel to `candidates`: read once per cell, not once per pixel.
    corners: Vec<[f32; 4]>,
    /// Output pixels per row in `Mixed` cells.
    mixed_pixels: usize,
}

impl CellRow {
    /// Sizes the buffers for the largest possible row, so that classifying never allocates
    /// mid-stream.
    fn reserve(&mut self, runs: usize, classes: usize) {
        self.cells.clear();
        self.cells.reserve(runs);
        self.mixed.clear();
        self.mixed.reserve(runs);
        self.candidates.clear();
        self.candidates.reserve(runs * classes);
        self.corners.clear();
        self.corners.reserve(runs * classes);
    }

    /// Classifies the cells between logits rows `ytap.i0` and `ytap.i1` as uniform or mixed,
    /// from the labels at logits resolution; the mixed cells' candidates are left empty
    /// ([`CellRow::find_candidates`] fills them, when the row is not done whole).
    fn classify(&mut self, low_res: &[u8], w: usize, ytap: &LinearTap, runs: &[XRun]) {
        let (y0, y1) = (ytap.i0 as usize, ytap.i1 as usize);
        let (top, bottom) = (&low_res[y0 * w..(y0 + 1) * w], &low_res[y1 * w..(y1 + 1) * w]);
        self.source_rows = Some((ytap.i0, ytap.i1));
        self.cells.clear();
        self.mixed.clear();
        self.candidates.clear();
        self.corners.clear();
        self.mixed_pixels = 0;
        for run in runs {
            let (x0, x1) = (run.i0 as usize, run.i1 as usize);
            let a = top[x0];
            if a == top[x1] && a == bottom[x0] && a == bottom[x1] {
                self.cells.push(Cell::Uniform(a));
            } else {
                self.mixed.push(self.cells.len() as u32);
                self.cells.push(Cell::Mixed { first: 0, count: 0 });
                self.mixed_pixels += (run.end - run.start) as usize;
            }
        }
    }

    /// The classes that can win somewhere in each mixed cell, and their corner logits.
    ///
    /// A class is dropped when even its largest corner value is below the smallest corner value
    /// of another class, by more than the rounding of the interpolation (`margin`): the
    /// interpolated value of the first stays below the second's everywhere in the cell, so it
    /// can neither win nor tie. Non-finite logits keep every class (and the order of
    /// comparisons that decides NaN's fate).
    fn find_candidates(
        &mut self,
        logits: &[f32],
        (k, h, w): (usize, usize, usize),
        ytap: &LinearTap,
        runs: &[XRun],
    ) {
        let (y0, y1) = (ytap.i0 as usize, ytap.i1 as usize);
        for &i in &self.mixed {
            let run = runs[i as usize];
            let (x0, x1) = (run.i0 as usize, run.i1 as usize);
            let corners = |c: usize| {
                let plane = &logits[c * h * w..(c + 1) * h * w];
                [plane[y0 * w + x0], plane[y0 * w + x1], plane[y1 * w + x0], plane[y1 * w + x1]]
            };
            let (mut floor, mut largest, mut finite) = (f32::NEG_INFINITY, 0.0f32, true);
            for c in 0..k {
                let v = corners(c);
                finite &= v.iter().all(|x| x.is_finite());
                floor = floor.max(v[0].min(v[1]).min(v[2]).min(v[3]));
                largest = largest.max(v[0].abs().max(v[1].abs()).max(v[2].abs()).max(v[3].abs()));
            }
            // The interpolation is three weighted sums of weights that add up to 1 within a
            // rounding: its error is a few units in the last place of the largest value. 1e-5
            // of it is a wide margin; pruning less never changes a label, only the work.
            let margin = 1e-5 * largest + f32::MIN_POSITIVE;
            let first = self.candidates.len() as u32;
            for c in 0..k {
                let v = corners(c);
                if !finite || v[0].max(v[1]).max(v[2]).max(v[3]) >= floor - 2.0 * margin {
                    self.candidates.push(c as u8);
                    self.corners.push(v);
                }
            }
            let count = self.candidates.len() as u32 - first;
            self.cells[i as usize] = Cell::Mixed { first, count };
        }
    }
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
            cells: CellRow::default(),
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
                let out_w = labels.width;
                for (y, &sy) in plan.y_nearest.iter().enumerate() {
                    let (done, rest) = labels.data.split_at_mut(y * out_w);
                    let dst = &mut rest[..out_w];
                    if y > 0 && plan.y_nearest[y - 1] == sy {
                        // Upscaling repeats rows: copy the one above.
                        dst.copy_from_slice(&done[(y - 1) * out_w..]);
                        continue;
                    }
                    let src = &self.low_res[sy as usize * w..(sy as usize + 1) * w];
                    for (d, &sx) in dst.iter_mut().zip(&plan.x_nearest) {
                        *d = src[sx as usize];
                    }
                }
            }
            Upsample::Exact => {
                self.low_res.resize(h * w, 0);
                argmax::argmax_planes(logits, k, &mut self.low_res, &mut self.scratch);
                let out_w = labels.width;
                self.row_best.resize(out_w, 0.0);
                self.row_best_class.resize(out_w, 0.0);
                self.cells.source_rows = None;
                for (y, ytap) in plan.y_taps.iter().enumerate() {
                    // Consecutive output rows read the same two logits rows (8 of them at the
                    // network's stride 4 and a frame twice its input): their cells are
                    // classified once, and their uniform cells are the same.
                    let same_cells = self.cells.source_rows == Some((ytap.i0, ytap.i1));
                    // Most of the row near a boundary (noise-like logits): one vectorised pass
                    // over every pixel and class beats pixel by pixel (2.8x on noise). Below
                    // half the row, pixel by pixel over the few candidates wins: the built-in
                    // model's frames took 1.08 ms with a quarter as the limit, 0.70 with half
                    // (docs/performance.md).
                    let whole_row = |cells: &CellRow| cells.mixed_pixels * 2 > out_w;
                    if !same_cells {
                        self.cells.classify(&self.low_res, w, ytap, &plan.x_runs);
                        if !whole_row(&self.cells) {
                            self.cells.find_candidates(logits, (k, h, w), ytap, &plan.x_runs);
                        }
                    }
                    let (done, rest) = labels.data.split_at_mut(y * out_w);
                    let dst = &mut rest[..out_w];
                    if whole_row(&self.cells) {
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
                        continue;
                    }
                    if same_cells {
                        // The row above has the same cells: its uniform spans are ours.
                        dst.copy_from_slice(&done[(y - 1) * out_w..]);
                    } else {
                        for (run, cell) in plan.x_runs.iter().zip(&self.cells.cells) {
                            if let Cell::Uniform(label) = *cell {
                                dst[run.start as usize..run.end as usize].fill(label);
                            }
                        }
                    }
                    let cells = &self.cells;
                    for &i in &cells.mixed {
                        let (run, Cell::Mixed { first, count }) =
                            (plan.x_runs[i as usize], cells.cells[i as usize])
                        else {
                            unreachable!("`mixed` lists only mixed cells")
                        };
                        let candidates = first as usize..(first + count) as usize;
                        let (classes, corners) =
                            (&cells.candidates[candidates.clone()], &cells.corners[candidates]);
                        let span = run.start as usize..run.end as usize;
                        for (d, xtap) in dst[span.clone()].iter_mut().zip(&plan.x_taps[span]) {
                            *d = exact_pixel(classes, corners, ytap, xtap);
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
        let x_taps = linear_taps(w, width);
        let x_runs = x_runs(&x_taps);
        self.cells.reserve(x_runs.len(), k);
        self.plan = Some(Plan {
            frame_width: width,
            frame_height: height,
            x_nearest: nearest_indices(w, width),
            y_nearest: nearest_indices(h, height),
            x_taps,
            y_taps: linear_taps(h, height),
            x_runs,
        });
        self.rows.reset(k * width);
    }
}

/// The `exact` label of one output pixel among `classes` (ascending), whose four corner logits
/// are `corners`: the same arithmetic, in the same order, as [`resample_logits_row`] followed by
/// [`argmax::argmax_blended_rows`], so both give identical labels.
fn exact_pixel(classes: &[u8], corners: &[[f32; 4]], ytap: &LinearTap, xtap: &LinearTap) -> u8 {
    let mut best = f32::NEG_INFINITY;
    let mut best_class = 0;
    for (i, (&c, v)) in classes.iter().zip(corners).enumerate() {
        let top = xtap.w0 * v[0] + xtap.w1 * v[1];
        let bottom = xtap.w0 * v[2] + xtap.w1 * v[3];
        let v = ytap.w0 * top + ytap.w1 * bottom;
        if i == 0 || v > best {
            best = v;
            best_class = c;
        }
    }
    best_class
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
    fn exact_prunes_classes_without_changing_a_label() {
        // Scene-like logits: each class leads in a band of columns with a margin that shrinks
        // to exact ties at the band edges, plus far-behind classes that pruning drops.
        let (k, h, w) = (6, 10, 16);
        let mut logits = vec![0.0f32; k * h * w];
        for c in 0..k {
            for y in 0..h {
                for x in 0..w {
                    let lead = (x * 3 / w == c) as u32 as f32;
                    let ramp = (x % 5) as f32 * 0.25 - (y % 3) as f32 * 0.5;
                    logits[(c * h + y) * w + x] = if c >= 3 { -40.0 - c as f32 } else { 2.0 * lead + ramp };
                }
            }
        }
        // An exact tie between classes 0 and 1 at one corner.
        logits[(h + 2) * w + 5] = logits[(2 * w) + 5];
        let mut post = Postprocessor::new(Upsample::Exact, [1, k, h, w], ClassTable::generic(k), 0.5);
        let (oh, ow) = (h * 8, w * 8);
        let mut labels = LabelMap::new(ow, oh);
        post.labels(&logits, &mut labels);
        assert_eq!(labels.data, reference_exact(&logits, k, h, w, oh, ow));
        // Pruning did happen: mixed cells hold fewer than all classes.
        let cells = &post.cells;
        assert!(cells.cells.iter().any(|c| matches!(c, Cell::Mixed { count, .. } if (*count as usize) < k)));
    }

    #[test]
    fn exact_with_non_finite_logits_interpolates_every_class() {
        // Wide bands of one class each, so that most cells are uniform and the mixed ones take
        // the per-pixel path (not the whole-row one).
        let (k, h, w) = (4, 5, 24);
        let mut logits: Vec<f32> = (0..k * h * w)
            .map(|i| if (i % w) * k / w == i / (h * w) { 5.0 } else { (i % 7) as f32 * 0.1 })
            .collect();
        logits[(2 * h + 1) * w + 2] = f32::NAN;
        logits[(3 * h + 3) * w + 4] = f32::INFINITY;
        logits[(h + 4) * w] = f32::NEG_INFINITY;
        // A cell where class 3 is infinite at all four corners and class 1 at one of them:
        // mixed (class 1 wins that corner's argmax), with an infinite floor.
        for (y, x) in [(1, 0), (1, 1), (2, 0), (2, 1)] {
            logits[(3 * h + y) * w + x] = f32::INFINITY;
        }
        logits[(h + 1) * w] = f32::INFINITY;
        for (oh, ow) in [(40, 192), (9, 50)] {
            let mut post = Postprocessor::new(Upsample::Exact, [1, k, h, w], ClassTable::generic(k), 0.5);
            let mut labels = LabelMap::new(ow, oh);
            post.labels(&logits, &mut labels);
            let reference = reference_exact(&logits, k, h, w, oh, ow);
            assert_eq!(labels.data, reference, "{oh}x{ow}");
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
