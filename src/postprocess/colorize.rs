//! Label map → palette colours.

use crate::frame::{LabelMap, Rgb8Image};

/// Writes the palette colour of every label into `out` (resized to the label map).
/// Labels without a palette entry (never produced by the argmax) are drawn black.
pub fn colorize(labels: &LabelMap, palette: &[[u8; 3]], out: &mut Rgb8Image) {
    let mut lut = [[0u8; 3]; 256];
    lut[..palette.len().min(256)].copy_from_slice(&palette[..palette.len().min(256)]);
    out.reset(labels.width, labels.height);
    for (px, &label) in out.data.chunks_exact_mut(3).zip(&labels.data) {
        px.copy_from_slice(&lut[label as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_palette_colours() {
        let labels = LabelMap { width: 3, height: 1, data: vec![0, 1, 7] };
        let mut out = Rgb8Image::default();
        colorize(&labels, &[[1, 2, 3], [4, 5, 6]], &mut out);
        assert_eq!(out.data, vec![1, 2, 3, 4, 5, 6, 0, 0, 0]);
    }
}
