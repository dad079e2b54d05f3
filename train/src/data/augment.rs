//! The training augmentation of SPEC section 0 (mmseg's Cityscapes pipeline): random rescale
//! (keep ratio) of a base scale by a ratio in [0.5, 2.0], random crop in which no class covers
//! more than `cat_max_ratio` of the labelled pixels (10 tries), horizontal flip, photometric
//! distortion, normalisation, padding to the crop size (image 0, labels 255).
//!
//! Every random choice comes from a [`Rng`] seeded by (run seed, epoch, sample index), so a
//! batch is the same whichever worker thread makes it.

use semask_edge::frame::{LabelMap, Rgb8Image};
use semask_edge::preprocess::{PreprocSpec, Preprocessor};
use semask_edge::resample::{linear_taps, nearest_indices};

use super::Sample;

/// Label value that is ignored by the loss and the metrics.
pub const IGNORE: u8 = 255;

/// A small deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator for one sample of one epoch.
    pub fn for_sample(seed: u64, epoch: u64, index: u64) -> Self {
        let mut r = Rng(seed ^ 0x5EED);
        let a = r.next_u64() ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Rng(a ^ index.wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [low, high).
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// Uniform integer in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// Parameters of the training augmentation.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentConfig {
    /// Base scale (long edge, short edge) before the random ratio: (2048, 1024) for Cityscapes.
    pub scale: (usize, usize),
    pub ratio_range: (f64, f64),
    /// Crop (height, width): 768x768 for Cityscapes.
    pub crop: (usize, usize),
    pub cat_max_ratio: f64,
    pub flip_prob: f64,
    pub photometric: bool,
    /// Mean / std / channel order of the normalisation (the size is the crop's).
    pub spec: PreprocSpec,
}

/// A training crop: NCHW-ready image `[3][crop h][crop w]` and labels `[crop h][crop w]`.
#[derive(Debug, Clone, Default)]
pub struct Crop {
    pub image: Vec<f32>,
    pub labels: Vec<u8>,
}

/// Rescales an RGB8 image bilinearly (half-pixel centres, rounded back to u8).
pub fn resize_image(src: &Rgb8Image, width: usize, height: usize, out: &mut Rgb8Image) {
    out.reset(width, height);
    let (xt, yt) = (linear_taps(src.width, width), linear_taps(src.height, height));
    for (y, ty) in yt.iter().enumerate() {
        for (x, tx) in xt.iter().enumerate() {
            for c in 0..3 {
                let p = |yy: u32, xx: u32| src.data[(yy as usize * src.width + xx as usize) * 3 + c] as f32;
                let top = tx.w0 * p(ty.i0, tx.i0) + tx.w1 * p(ty.i0, tx.i1);
                let bottom = tx.w0 * p(ty.i1, tx.i0) + tx.w1 * p(ty.i1, tx.i1);
                out.data[(y * width + x) * 3 + c] =
                    (ty.w0 * top + ty.w1 * bottom).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Rescales a label map with nearest neighbours (labels are never interpolated).
pub fn resize_labels(src: &LabelMap, width: usize, height: usize, out: &mut LabelMap) {
    out.reset(width, height);
    let (xi, yi) = (nearest_indices(src.width, width), nearest_indices(src.height, height));
    for (y, &sy) in yi.iter().enumerate() {
        for (x, &sx) in xi.iter().enumerate() {
            out.data[y * width + x] = src.data[sy as usize * src.width + sx as usize];
        }
    }
}

/// mmcv's `rescale_size`: the largest scale that fits (long, short) while keeping the ratio.
pub fn rescaled_size(width: usize, height: usize, long: f64, short: f64) -> (usize, usize) {
    let factor = (long / width.max(height) as f64).min(short / width.min(height) as f64);
    (((width as f64 * factor) + 0.5) as usize, ((height as f64 * factor) + 0.5) as usize)
}

/// Applies the whole augmentation to `sample`.
pub fn augment(sample: &Sample, config: &AugmentConfig, rng: &mut Rng) -> Crop {
    // 1. Random rescale of the base scale, keeping the aspect ratio.
    let ratio = rng.uniform(config.ratio_range.0, config.ratio_range.1);
    let (long, short) = (config.scale.0 as f64 * ratio, config.scale.1 as f64 * ratio);
    let (w, h) = rescaled_size(sample.image.width, sample.image.height, long, short);
    let (w, h) = (w.max(1), h.max(1));
    let (mut image, mut labels) = (Rgb8Image::default(), LabelMap::default());
    resize_image(&sample.image, w, h, &mut image);
    resize_labels(&sample.labels, w, h, &mut labels);

    // 2. Random crop; retry (up to 10 times) while one class dominates the labelled pixels.
    let (ch, cw) = config.crop;
    let mut offset = (0, 0);
    for _ in 0..10 {
        offset = (rng.below(h.saturating_sub(ch) + 1), rng.below(w.saturating_sub(cw) + 1));
        if config.cat_max_ratio >= 1.0 {
            break;
        }
        let mut counts = [0usize; 256];
        for y in offset.0..(offset.0 + ch).min(h) {
            for &l in &labels.data[y * w + offset.1..y * w + (offset.1 + cw).min(w)] {
                counts[l as usize] += 1;
            }
        }
        counts[IGNORE as usize] = 0;
        let present = counts.iter().filter(|&&c| c > 0).count();
        let total: usize = counts.iter().sum();
        let largest = counts.iter().copied().max().unwrap_or(0);
        if present > 1 && (largest as f64) / (total.max(1) as f64) < config.cat_max_ratio {
            break;
        }
    }
    let (crop_h, crop_w) = (ch.min(h), cw.min(w));
    let mut cropped = Rgb8Image::new(crop_w, crop_h);
    let mut crop_labels = vec![IGNORE; ch * cw];
    let flip = rng.uniform(0.0, 1.0) < config.flip_prob;
    for y in 0..crop_h {
        for x in 0..crop_w {
            let (sy, sx) = (offset.0 + y, offset.1 + if flip { crop_w - 1 - x } else { x });
            let s = sy * w + sx;
            cropped.data[(y * crop_w + x) * 3..(y * crop_w + x) * 3 + 3]
                .copy_from_slice(&image.data[s * 3..s * 3 + 3]);
            crop_labels[y * cw + x] = labels.data[s];
        }
    }

    // 3. Photometric distortion.
    if config.photometric {
        photometric_distortion(&mut cropped, rng);
    }

    // 4. Normalise (the runtime's pre-processing, at identity size), pad with 0.
    let spec = PreprocSpec { input_width: crop_w, input_height: crop_h, ..config.spec };
    let mut normalised = vec![0.0; spec.input_len()];
    Preprocessor::new(spec).run(&cropped, &mut normalised);
    let mut out = vec![0.0f32; 3 * ch * cw];
    for c in 0..3 {
        for y in 0..crop_h {
            let src = &normalised[(c * crop_h + y) * crop_w..(c * crop_h + y + 1) * crop_w];
            out[(c * ch + y) * cw..(c * ch + y) * cw + crop_w].copy_from_slice(src);
        }
    }
    Crop { image: out, labels: crop_labels }
}

/// mmseg's `PhotoMetricDistortion`: brightness (+/-32), contrast (x0.5..1.5, before or after
/// the colour changes), saturation (x0.5..1.5) and hue (+/-18 of 180), each with probability
/// 1/2, on 0..255 values.
pub fn photometric_distortion(image: &mut Rgb8Image, rng: &mut Rng) {
    let mut px: Vec<[f32; 3]> =
        image.data.chunks_exact(3).map(|p| [p[0] as f32, p[1] as f32, p[2] as f32]).collect();
    let clip = |v: f32| v.clamp(0.0, 255.0);
    if rng.coin() {
        let delta = rng.uniform(-32.0, 32.0) as f32;
        px.iter_mut().for_each(|p| *p = p.map(|v| clip(v + delta)));
    }
    let contrast_first = rng.coin();
    let contrast = |px: &mut Vec<[f32; 3]>, rng: &mut Rng| {
        if rng.coin() {
            let alpha = rng.uniform(0.5, 1.5) as f32;
            px.iter_mut().for_each(|p| *p = p.map(|v| clip(v * alpha)));
        }
    };
    if contrast_first {
        contrast(&mut px, rng);
    }
    let saturation = rng.coin().then(|| rng.uniform(0.5, 1.5) as f32);
    let hue = rng.coin().then(|| (rng.below(37) as i32 - 18) as f32 * 2.0); // degrees (OpenCV units of 2)
    if saturation.is_some() || hue.is_some() {
        for p in px.iter_mut() {
            let (mut h, mut s, v) = rgb_to_hsv(*p);
            if let Some(k) = saturation {
                s = (s * k).clamp(0.0, 1.0);
            }
            if let Some(d) = hue {
                h = (h + d).rem_euclid(360.0);
            }
            *p = hsv_to_rgb(h, s, v);
        }
    }
    if !contrast_first {
        contrast(&mut px, rng);
    }
    for (dst, p) in image.data.chunks_exact_mut(3).zip(&px) {
        for c in 0..3 {
            dst[c] = p[c].round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// RGB (0..255) → (hue degrees, saturation 0..1, value 0..255).
fn rgb_to_hsv([r, g, b]: [f32; 3]) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        60.0 * ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / d + 2.0)
    } else {
        60.0 * ((r - g) / d + 4.0)
    };
    let s = if max == 0.0 { 0.0 } else { d / max };
    (h, s, max)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0).rem_euclid(2.0) - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [r + m, g + m, b + m]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PreprocSpec {
        PreprocSpec::imagenet(0, 0)
    }

    fn sample(w: usize, h: usize) -> Sample {
        let mut s = Sample { name: "s".into(), image: Rgb8Image::new(w, h), labels: LabelMap::new(w, h) };
        for y in 0..h {
            for x in 0..w {
                s.labels.data[y * w + x] = if x < w / 2 { 0 } else { 10 };
                s.image.data[(y * w + x) * 3] = (x * 255 / w) as u8;
            }
        }
        s
    }

    #[test]
    fn hsv_round_trips() {
        for rgb in [[10.0, 200.0, 30.0], [255.0, 0.0, 0.0], [12.0, 12.0, 12.0], [0.0, 40.0, 250.0]] {
            let (h, s, v) = rgb_to_hsv(rgb);
            let back = hsv_to_rgb(h, s, v);
            for c in 0..3 {
                assert!((back[c] - rgb[c]).abs() < 1e-3, "{rgb:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn keep_ratio_rescale_follows_mmcv() {
        assert_eq!(rescaled_size(2048, 1024, 2048.0, 1024.0), (2048, 1024));
        assert_eq!(rescaled_size(1024, 512, 2048.0, 1024.0), (2048, 1024));
        assert_eq!(rescaled_size(1000, 1000, 2048.0, 1024.0), (1024, 1024));
    }

    #[test]
    fn crops_have_the_crop_size_padding_is_ignored_and_labels_stay_labels() {
        let config = AugmentConfig {
            scale: (64, 32),
            ratio_range: (0.5, 2.0),
            crop: (48, 48),
            cat_max_ratio: 0.75,
            flip_prob: 0.5,
            photometric: true,
            spec: spec(),
        };
        for i in 0..20 {
            let crop = augment(&sample(64, 32), &config, &mut Rng::for_sample(1, 0, i));
            assert_eq!(crop.image.len(), 3 * 48 * 48);
            assert_eq!(crop.labels.len(), 48 * 48);
            assert!(crop.labels.iter().all(|&l| l == 0 || l == 10 || l == IGNORE), "interpolated labels");
            assert!(crop.image.iter().all(|v| v.is_finite()));
        }
        // Same seed, same crop.
        let a = augment(&sample(64, 32), &config, &mut Rng::for_sample(1, 0, 3));
        let b = augment(&sample(64, 32), &config, &mut Rng::for_sample(1, 0, 3));
        assert_eq!((a.image, a.labels), (b.image, b.labels));
    }

    #[test]
    fn cat_max_ratio_avoids_single_class_crops_when_it_can() {
        let config = AugmentConfig {
            scale: (64, 32),
            ratio_range: (1.0, 1.0),
            crop: (16, 16),
            cat_max_ratio: 0.75,
            flip_prob: 0.0,
            photometric: false,
            spec: spec(),
        };
        let mut mixed = 0;
        for i in 0..50 {
            let crop = augment(&sample(64, 32), &config, &mut Rng::for_sample(7, 0, i));
            let zeros = crop.labels.iter().filter(|&&l| l == 0).count();
            if zeros > 0 && zeros < 256 {
                mixed += 1;
            }
        }
        // Without the retry only ~1/3 of random 16-wide crops of a half/half image straddle the
        // border; with 10 retries nearly all do.
        assert!(mixed > 40, "{mixed} of 50 crops show both classes");
    }
}
