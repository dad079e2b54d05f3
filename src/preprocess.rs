//! Pre-processing: an RGB8 frame of any size → the network's normalised NCHW f32 input.
//!
//! [`PreprocSpec`] says what the network expects (input size, mean/std, channel order). It is read
//! from the model's metadata (see [`crate::model::metadata`]); the training crate writes the same
//! values into the ONNX it exports, so training and deployment normalise identically.
//! [`Preprocessor`] is the one implementation: bilinear resize with half-pixel centres (as mmseg's
//! `Resize` through OpenCV's `INTER_LINEAR`, but in f32 without rounding back to u8), then
//! `(value - mean) / std` per channel, written straight into the backend's input buffer.

use crate::frame::Rgb8Image;
use crate::named::Named;
use crate::resample::{LinearTap, TwoRowCache, linear_taps};

/// Order of the colour planes the network expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Plane 0 = red (mmseg configs with `to_rgb=True`, like SeMask's).
    #[default]
    Rgb,
    /// Plane 0 = blue (`to_rgb=False`).
    Bgr,
}

impl Named for ChannelOrder {
    const WHAT: &'static str = "channel order";
    const ALL: &'static [Self] = &[ChannelOrder::Rgb, ChannelOrder::Bgr];
    fn name(self) -> &'static str {
        match self {
            ChannelOrder::Rgb => "rgb",
            ChannelOrder::Bgr => "bgr",
        }
    }
    fn help(self) -> &'static str {
        match self {
            ChannelOrder::Rgb => "plane 0 is red (mmseg configs with to_rgb=True, like SeMask's)",
            ChannelOrder::Bgr => "plane 0 is blue (to_rgb=False)",
        }
    }
}
crate::impl_named_text!(ChannelOrder);

impl ChannelOrder {
    /// The RGB channel that each output plane holds: plane `p` is channel `source_channels()[p]`,
    /// normalised with that channel's mean and std (they are given in RGB order).
    fn source_channels(self) -> [usize; 3] {
        match self {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        }
    }
}

/// ImageNet mean, RGB, 0-255 scale (SeMask's Cityscapes config).
pub const IMAGENET_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
/// ImageNet standard deviation, RGB, 0-255 scale.
pub const IMAGENET_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// What the network's input expects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreprocSpec {
    pub input_width: usize,
    pub input_height: usize,
    /// Per-channel mean, **RGB order**, 0-255 scale.
    pub mean: [f32; 3],
    /// Per-channel standard deviation, **RGB order**, 0-255 scale.
    pub std: [f32; 3],
    pub channel_order: ChannelOrder,
}

impl PreprocSpec {
    /// SeMask's normalisation (ImageNet mean and std, RGB) at a network input size; 0 x 0 where
    /// the size is set per image (training, evaluation at full resolution).
    pub fn imagenet(input_width: usize, input_height: usize) -> PreprocSpec {
        PreprocSpec {
            input_width,
            input_height,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            channel_order: ChannelOrder::Rgb,
        }
    }

    /// Number of f32 values of the network input (`3 * H * W`).
    pub fn input_len(&self) -> usize {
        3 * self.input_width * self.input_height
    }
}

/// Resizes and normalises frames into a caller-provided NCHW buffer.
///
/// Keeps the sampling plan of the last frame size and two row buffers, so a stream of
/// same-sized frames allocates nothing after the first.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    spec: PreprocSpec,
    plan: Option<ResizePlan>,
    /// Horizontally resized source rows, planar `[3][input_width]`.
    rows: TwoRowCache,
    /// One source row as floats (interleaved RGB), converted in one vectorised pass.
    source_row: Vec<f32>,
    /// For an exact halving ([`Preprocessor::halve`]): two source rows' bytes summed
    /// (interleaved RGB), then each output pixel's four bytes summed (planar).
    row_sums: Vec<u16>,
    block_sums: Vec<u16>,
}

#[derive(Debug, Clone)]
struct ResizePlan {
    src_width: usize,
    src_height: usize,
    x_taps: Vec<LinearTap>,
    /// How many leading `x_taps` are a 2:1 downscale's ([`pair_taps`]).
    x_pairs: usize,
    y_taps: Vec<LinearTap>,
}

/// How many leading taps read source pixels `2x` and `2x + 1`, all with the first tap's weights:
/// every tap of an exact 2:1 downscale (at 0.5 each). Those columns are resized from pixel pairs,
/// without looking up a tap per column (the same arithmetic, so the same values).
fn pair_taps(taps: &[LinearTap]) -> usize {
    let Some(first) = taps.first() else { return 0 };
    let same_weights =
        |t: &LinearTap| t.w0.to_bits() == first.w0.to_bits() && t.w1.to_bits() == first.w1.to_bits();
    taps.iter()
        .enumerate()
        .take_while(|&(x, t)| t.i0 as usize == 2 * x && t.i1 == t.i0 + 1 && same_weights(t))
        .count()
}

impl Preprocessor {
    pub fn new(spec: PreprocSpec) -> Self {
        Preprocessor {
            spec,
            plan: None,
            rows: TwoRowCache::default(),
            source_row: Vec::new(),
            row_sums: Vec::new(),
            block_sums: Vec::new(),
        }
    }

    pub fn spec(&self) -> &PreprocSpec {
        &self.spec
    }

    /// Writes the normalised network input for `image` into `out` (`3 * H * W` values, NCHW
    /// with N = 1).
    ///
    /// # Panics
    /// If `out` does not have [`PreprocSpec::input_len`] values or the image is empty: both are
    /// programming errors (backends size the buffer from the same spec; sources never emit empty
    /// frames).
    pub fn run(&mut self, image: &Rgb8Image, out: &mut [f32]) {
        let spec = self.spec;
        assert_eq!(out.len(), spec.input_len(), "input buffer does not match the model input");
        assert!(!image.is_empty(), "cannot pre-process an empty image");
        let plan_fits =
            self.plan.as_ref().is_some_and(|p| p.src_width == image.width && p.src_height == image.height);
        if !plan_fits {
            let x_taps = linear_taps(image.width, spec.input_width);
            self.plan = Some(ResizePlan {
                src_width: image.width,
                src_height: image.height,
                x_pairs: pair_taps(&x_taps),
                x_taps,
                y_taps: linear_taps(image.height, spec.input_height),
            });
            self.rows.reset(3 * spec.input_width);
            self.source_row.resize(3 * image.width, 0.0);
            self.row_sums.resize(3 * image.width, 0);
            self.block_sums.resize(3 * spec.input_width, 0);
        }
        if image.width == 2 * spec.input_width && image.height == 2 * spec.input_height {
            self.halve(image, out);
            return;
        }
        let plan = self.plan.as_ref().expect("plan set above");
        let (w, h) = (spec.input_width, spec.input_height);
        let src_channel = spec.channel_order.source_channels();
        for (y, ytap) in plan.y_taps.iter().enumerate() {
            let (top, bottom) = self.rows.rows(ytap, |src_row, out| {
                resize_row(image, src_row, &plan.x_taps, plan.x_pairs, &mut self.source_row, out)
            });
            for (plane, &c) in src_channel.iter().enumerate() {
                let (mean, std) = (spec.mean[c], spec.std[c]);
                let dst = &mut out[(plane * h + y) * w..(plane * h + y + 1) * w];
                let top = &top[c * w..(c + 1) * w];
                let bottom = &bottom[c * w..(c + 1) * w];
                for ((d, &t), &b) in dst.iter_mut().zip(top).zip(bottom) {
                    *d = (t * ytap.w0 + b * ytap.w1 - mean) / std;
                }
            }
        }
    }
}

impl Preprocessor {
    /// [`Preprocessor::run`] for an image exactly twice the input size both ways (a 1024x512
    /// camera or drive for a 512x256 network, 2048x1024 for 1024x512), as integer sums.
    ///
    /// Every tap of such a resize reads a pixel pair at 0.5 each, so the bilinear value is
    /// `(a * 0.5 + b * 0.5) * 0.5 + (c * 0.5 + d * 0.5) * 0.5` for the 2x2 block's bytes: every
    /// step is exact in f32 (halves and quarters of integers up to 1020), so it equals
    /// `(a + b + c + d) * 0.25`, summed here in 16-bit integers. The same bits as the general
    /// path (`matches_naive_bilinear_bit_for_bit`), but the sums vectorise and only one move
    /// per value runs on the interleaved pixels, where the general path did two products and
    /// a sum per value. In `semask-edge bench` (1024x512 frames, the built-in model's 512x256
    /// input) pre-processing went 0.81-0.85 -> 0.55-0.56 ms at p50.
    fn halve(&mut self, image: &Rgb8Image, out: &mut [f32]) {
        let spec = self.spec;
        let (w, h) = (spec.input_width, spec.input_height);
        let src_row_len = 3 * image.width;
        let src_channel = spec.channel_order.source_channels();
        let (r, rest) = self.block_sums.split_at_mut(w);
        let (g, b) = rest.split_at_mut(w);
        for y in 0..h {
            let top = &image.data[2 * y * src_row_len..(2 * y + 1) * src_row_len];
            let bottom = &image.data[(2 * y + 1) * src_row_len..(2 * y + 2) * src_row_len];
            for ((sum, &upper), &lower) in self.row_sums.iter_mut().zip(top).zip(bottom) {
                *sum = u16::from(upper) + u16::from(lower);
            }
            let (pixel_pairs, _) = self.row_sums.as_chunks::<6>();
            let planes = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
            for (((r, g), b), p) in planes.zip(pixel_pairs) {
                (*r, *g, *b) = (p[0] + p[3], p[1] + p[4], p[2] + p[5]);
            }
            let sums = [&*r, &*g, &*b];
            for (plane, &c) in src_channel.iter().enumerate() {
                let (mean, std) = (spec.mean[c], spec.std[c]);
                let dst = &mut out[(plane * h + y) * w..(plane * h + y + 1) * w];
                for (d, &sum) in dst.iter_mut().zip(sums[c]) {
                    *d = (f32::from(sum) * 0.25 - mean) / std;
                }
            }
        }
    }
}

/// Resizes source row `y` of `image` horizontally into `out`, planar `[3][taps.len()]`; the
/// first `pairs` taps are a 2:1 downscale's ([`pair_taps`]).
/// `row` is scratch space for the source row as floats (`3 * image.width` values): converted
/// in one pass that vectorises, rather than one scalar conversion per tap.
fn resize_row(
    image: &Rgb8Image,
    y: usize,
    taps: &[LinearTap],
    pairs: usize,
    row: &mut [f32],
    out: &mut [f32],
) {
    let w = taps.len();
    for (d, &s) in row.iter_mut().zip(&image.data[y * image.width * 3..(y + 1) * image.width * 3]) {
        *d = s as f32;
    }
    let (r, rest) = out.split_at_mut(w);
    let (g, b) = rest.split_at_mut(w);
    if let Some(tap) = taps[..pairs].first() {
        let (w0, w1) = (tap.w0, tap.w1);
        let (pixel_pairs, _) = row.as_chunks::<6>();
        let planes = r[..pairs].iter_mut().zip(&mut g[..pairs]).zip(&mut b[..pairs]);
        for (((r, g), b), p) in planes.zip(pixel_pairs) {
            *r = p[0] * w0 + p[3] * w1;
            *g = p[1] * w0 + p[4] * w1;
            *b = p[2] * w0 + p[5] * w1;
        }
    }
    for (x, tap) in taps.iter().enumerate().skip(pairs) {
        let p0 = &row[tap.i0 as usize * 3..tap.i0 as usize * 3 + 3];
        let p1 = &row[tap.i1 as usize * 3..tap.i1 as usize * 3 + 3];
        r[x] = p0[0] * tap.w0 + p1[0] * tap.w1;
        g[x] = p0[1] * tap.w0 + p1[1] * tap.w1;
        b[x] = p0[2] * tap.w0 + p1[2] * tap.w1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(w: usize, h: usize) -> PreprocSpec {
        PreprocSpec {
            input_width: w,
            input_height: h,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            channel_order: ChannelOrder::Rgb,
        }
    }

    fn gradient(w: usize, h: usize) -> Rgb8Image {
        let mut img = Rgb8Image::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let i = (y * w + x) * 3;
                img.data[i] = (x * 37 % 256) as u8;
                img.data[i + 1] = (y * 7 % 256) as u8;
                img.data[i + 2] = ((x + y) % 256) as u8;
            }
        }
        img
    }

    #[test]
    fn same_size_only_normalises() {
        let img = gradient(8, 4);
        let mut pre = Preprocessor::new(spec(8, 4));
        let mut out = vec![0.0; 3 * 8 * 4];
        pre.run(&img, &mut out);
        for y in 0..4 {
            for x in 0..8 {
                let px = img.pixel(x, y);
                for c in 0..3 {
                    let expected = (px[c] as f32 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                    assert_eq!(out[(c * 4 + y) * 8 + x], expected);
                }
            }
        }
    }

    #[test]
    fn bgr_swaps_planes_and_statistics() {
        // Same size, an exact halving (its own path) and a general resize.
        for img in [gradient(6, 3), gradient(12, 6), gradient(13, 7)] {
            let mut rgb = vec![0.0; 54];
            let mut bgr = vec![0.0; 54];
            Preprocessor::new(spec(6, 3)).run(&img, &mut rgb);
            let mut s = spec(6, 3);
            s.channel_order = ChannelOrder::Bgr;
            Preprocessor::new(s).run(&img, &mut bgr);
            assert_eq!(&rgb[0..18], &bgr[36..54]);
            assert_eq!(&rgb[18..36], &bgr[18..36]);
            assert_eq!(&rgb[36..54], &bgr[0..18]);
        }
    }

    #[test]
    fn downscale_by_two_averages_two_by_two_blocks() {
        let img = gradient(8, 6);
        let mut pre = Preprocessor::new(spec(4, 3));
        let mut out = vec![0.0; 3 * 4 * 3];
        pre.run(&img, &mut out);
        for y in 0..3 {
            for x in 0..4 {
                for c in 0..3 {
                    let mean_px: f32 = [(0, 0), (1, 0), (0, 1), (1, 1)]
                        .iter()
                        .map(|&(dx, dy)| img.pixel(2 * x + dx, 2 * y + dy)[c] as f32)
                        .sum::<f32>()
                        / 4.0;
                    let expected = (mean_px - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                    let got = out[(c * 3 + y) * 4 + x];
                    assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
                }
            }
        }
    }

    /// Straightforward per-pixel bilinear, for comparison with the row-cached implementation.
    fn naive(img: &Rgb8Image, w: usize, h: usize) -> Vec<f32> {
        let xt = linear_taps(img.width, w);
        let yt = linear_taps(img.height, h);
        let mut out = vec![0.0; 3 * w * h];
        for (y, ty) in yt.iter().enumerate() {
            for (x, tx) in xt.iter().enumerate() {
                for c in 0..3 {
                    let p = |xx: u32, yy: u32| img.pixel(xx as usize, yy as usize)[c] as f32;
                    let top = p(tx.i0, ty.i0) * tx.w0 + p(tx.i1, ty.i0) * tx.w1;
                    let bottom = p(tx.i0, ty.i1) * tx.w0 + p(tx.i1, ty.i1) * tx.w1;
                    let v = top * ty.w0 + bottom * ty.w1;
                    out[(c * h + y) * w + x] = (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_bilinear_bit_for_bit() {
        // Odd sizes both ways; exact 2:1 both ways (`Preprocessor::halve`), 2:1 along x only
        // (every column from pixel pairs) and near 2:1 (some columns).
        // Bytes that vary along every axis and channel, so that no mixed-up tap goes unseen.
        let sizes = [(7, 5, 19, 13), (19, 13, 7, 5), (5, 9, 11, 4), (1, 1, 3, 2), (301, 157, 150, 78)];
        let two_to_one = [(16, 8, 8, 4), (1024, 64, 512, 32), (1024, 33, 512, 16), (1025, 33, 512, 16)];
        for (sw, sh, w, h) in sizes.into_iter().chain(two_to_one) {
            let mut img = Rgb8Image::new(sw, sh);
            for (i, v) in img.data.iter_mut().enumerate() {
                *v = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
            }
            let mut out = vec![0.0; 3 * w * h];
            Preprocessor::new(spec(w, h)).run(&img, &mut out);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(&out) == bits(&naive(&img, w, h)), "{sw}x{sh}->{w}x{h}");
        }
    }

    #[test]
    fn pair_taps_are_those_of_a_two_to_one_downscale() {
        assert_eq!(pair_taps(&linear_taps(1024, 512)), 512);
        assert!(pair_taps(&linear_taps(1024, 1024)) <= 1, "only column 0 reads pixels 0 and 1");
        assert!((1..512).contains(&pair_taps(&linear_taps(1025, 512))));
    }

    #[test]
    fn changing_frame_size_rebuilds_the_plan() {
        let mut pre = Preprocessor::new(spec(4, 2));
        let mut a = vec![0.0; 24];
        let mut b = vec![0.0; 24];
        pre.run(&gradient(8, 4), &mut a);
        pre.run(&gradient(4, 2), &mut b);
        let mut fresh = vec![0.0; 24];
        Preprocessor::new(spec(4, 2)).run(&gradient(4, 2), &mut fresh);
        assert_eq!(b, fresh);
        assert_ne!(a, b);
    }
}
