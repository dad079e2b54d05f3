//! Alpha blend of the class colours over the frame.

use crate::frame::Rgb8Image;

/// `out = frame * (1 - alpha) + color * alpha` per channel, with `alpha = alpha_256 / 256`,
/// rounded to nearest. `out` is resized to the frame.
pub fn blend(frame: &Rgb8Image, color: &Rgb8Image, alpha_256: u16, out: &mut Rgb8Image) {
    assert_eq!((frame.width, frame.height), (color.width, color.height), "overlay of unequal sizes");
    let a = alpha_256.min(256) as u32;
    out.reset(frame.width, frame.height);
    for ((o, &f), &c) in out.data.iter_mut().zip(&frame.data).zip(&color.data) {
        *o = ((f as u32 * (256 - a) + c as u32 * a + 128) >> 8) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_weights_frame_and_colour() {
        let frame = Rgb8Image { width: 1, height: 1, data: vec![200, 0, 100] };
        let color = Rgb8Image { width: 1, height: 1, data: vec![0, 200, 100] };
        let mut out = Rgb8Image::default();
        blend(&frame, &color, 128, &mut out);
        assert_eq!(out.data, vec![100, 100, 100]);
        blend(&frame, &color, 0, &mut out);
        assert_eq!(out.data, frame.data);
        blend(&frame, &color, 256, &mut out);
        assert_eq!(out.data, color.data);
    }
}
