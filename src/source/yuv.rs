//! YUV → RGB for camera frames: YUYV (YUY2, 4:2:2 packed) and NV12 (4:2:0, Y plane then
//! interleaved UV), ITU-R BT.601 with limited range (Y 16..235, U/V 16..240), which is what
//! V4L2 cameras deliver unless they say otherwise.
//!
//! Integer arithmetic with 8 fractional bits (the usual fixed-point form of the BT.601 matrix):
//! `R = 1.164 (Y-16) + 1.596 (V-128)`, `G = 1.164 (Y-16) - 0.392 (U-128) - 0.813 (V-128)`,
//! `B = 1.164 (Y-16) + 2.017 (U-128)`, rounded and clamped to 0..255.

use crate::frame::Rgb8Image;

#[inline(always)]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// One pixel, BT.601 limited range.
#[inline(always)]
pub fn yuv_to_rgb_pixel(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (y as i32 - 16);
    let d = u as i32 - 128;
    let e = v as i32 - 128;
    [
        clamp8((c + 409 * e + 128) >> 8),
        clamp8((c - 100 * d - 208 * e + 128) >> 8),
        clamp8((c + 516 * d + 128) >> 8),
    ]
}

/// Why a camera buffer cannot be converted.
fn too_short(what: &str, got: usize, need: usize) -> String {
    format!("{what} buffer has {got} bytes, {need} needed: the frame is incomplete")
}

/// YUYV (`Y0 U Y1 V` per two pixels), rows `stride` bytes apart, into `out` (`width`x`height`).
pub fn yuyv_to_rgb(
    src: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    out: &mut Rgb8Image,
) -> Result<(), String> {
    let stride = stride.max(width * 2);
    let need = stride * (height.max(1) - 1) + width * 2;
    if !width.is_multiple_of(2) || src.len() < need {
        return Err(too_short("YUYV", src.len(), need));
    }
    out.reset(width, height);
    for y in 0..height {
        let row = &src[y * stride..y * stride + width * 2];
        let dst = &mut out.data[y * width * 3..(y + 1) * width * 3];
        for (pair, px) in row.chunks_exact(4).zip(dst.chunks_exact_mut(6)) {
            let (y0, u, y1, v) = (pair[0], pair[1], pair[2], pair[3]);
            px[..3].copy_from_slice(&yuv_to_rgb_pixel(y0, u, v));
            px[3..].copy_from_slice(&yuv_to_rgb_pixel(y1, u, v));
        }
    }
    Ok(())
}

/// NV12: `height` rows of Y (`stride` bytes apart), then `height/2` rows of interleaved U V at
/// half resolution, into `out`.
pub fn nv12_to_rgb(
    src: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    out: &mut Rgb8Image,
) -> Result<(), String> {
    let stride = stride.max(width);
    let need = stride * height + stride * height.div_ceil(2);
    if !width.is_multiple_of(2) || src.len() < need {
        return Err(too_short("NV12", src.len(), need));
    }
    let (luma, chroma) = src.split_at(stride * height);
    out.reset(width, height);
    for y in 0..height {
        let yrow = &luma[y * stride..y * stride + width];
        let uvrow = &chroma[(y / 2) * stride..(y / 2) * stride + width];
        let dst = &mut out.data[y * width * 3..(y + 1) * width * 3];
        for ((ys, uv), px) in yrow.chunks_exact(2).zip(uvrow.chunks_exact(2)).zip(dst.chunks_exact_mut(6)) {
            px[..3].copy_from_slice(&yuv_to_rgb_pixel(ys[0], uv[0], uv[1]));
            px[3..].copy_from_slice(&yuv_to_rgb_pixel(ys[1], uv[0], uv[1]));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The BT.601 limited-range equations in floating point.
    fn reference(y: u8, u: u8, v: u8) -> [f64; 3] {
        let (y, u, v) = (y as f64 - 16.0, u as f64 - 128.0, v as f64 - 128.0);
        [
            (255.0 / 219.0) * y + (255.0 / 224.0) * 1.402 * v,
            (255.0 / 219.0) * y
                - (255.0 / 224.0) * 1.772 * (0.114 / 0.587) * u
                - (255.0 / 224.0) * 1.402 * (0.299 / 0.587) * v,
            (255.0 / 219.0) * y + (255.0 / 224.0) * 1.772 * u,
        ]
        .map(|c| c.clamp(0.0, 255.0))
    }

    #[test]
    fn reference_values_of_the_standard() {
        // Black, white and the 75 % colour bars of the BT.601 limited-range test signal.
        assert_eq!(yuv_to_rgb_pixel(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb_pixel(235, 128, 128), [255, 255, 255]);
        assert_eq!(yuv_to_rgb_pixel(126, 128, 128), [128, 128, 128]);
        for (yuv, rgb) in [
            ((65, 100, 212), [191i32, 0, 0]), // 75 % red
            ((112, 72, 58), [0, 191, 0]),     // 75 % green
            ((35, 212, 114), [0, 0, 191]),    // 75 % blue
            ((162, 44, 142), [191, 191, 0]),  // 75 % yellow
        ] {
            let got = yuv_to_rgb_pixel(yuv.0, yuv.1, yuv.2);
            for c in 0..3 {
                assert!((got[c] as i32 - rgb[c]).abs() <= 2, "{yuv:?} -> {got:?}, expected {rgb:?}");
            }
        }
    }

    #[test]
    fn fixed_point_matches_the_float_equations_everywhere() {
        for y in (0..=255).step_by(5) {
            for u in (0..=255).step_by(15) {
                for v in (0..=255).step_by(15) {
                    let got = yuv_to_rgb_pixel(y as u8, u as u8, v as u8);
                    let want = reference(y as u8, u as u8, v as u8);
                    for c in 0..3 {
                        assert!(
                            (got[c] as f64 - want[c]).abs() <= 1.0,
                            "yuv {y},{u},{v}: {got:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn yuyv_packs_two_pixels_per_chroma_pair() {
        // 2x2 image, stride 6 (2 bytes of padding per row).
        let src = [16, 128, 235, 128, 0, 0, /* row 2 */ 65, 100, 65, 212, 9, 9];
        let mut out = Rgb8Image::default();
        // Row 2 is Y0=65 U=100 Y1=65 V=212: both pixels 75 % red.
        yuyv_to_rgb(&src, 2, 2, 6, &mut out).unwrap();
        assert_eq!(out.pixel(0, 0), [0, 0, 0]);
        assert_eq!(out.pixel(1, 0), [255, 255, 255]);
        assert_eq!(out.pixel(0, 1), yuv_to_rgb_pixel(65, 100, 212));
        assert_eq!(out.pixel(1, 1), yuv_to_rgb_pixel(65, 100, 212));
        assert!(yuyv_to_rgb(&src[..8], 2, 2, 6, &mut out).is_err());
    }

    #[test]
    fn nv12_shares_chroma_over_two_by_two_blocks() {
        // 4x2 luma, then one row of UV pairs for the two 2x2 blocks.
        let src = [16, 235, 126, 126, 16, 235, 126, 126, /* UV */ 128, 128, 100, 212];
        let mut out = Rgb8Image::default();
        nv12_to_rgb(&src, 4, 2, 4, &mut out).unwrap();
        assert_eq!(out.pixel(0, 0), [0, 0, 0]);
        assert_eq!(out.pixel(1, 1), [255, 255, 255]);
        assert_eq!(out.pixel(2, 0), yuv_to_rgb_pixel(126, 100, 212));
        assert_eq!(out.pixel(3, 1), yuv_to_rgb_pixel(126, 100, 212));
        assert!(nv12_to_rgb(&src[..9], 4, 2, 4, &mut out).is_err());
    }
}
