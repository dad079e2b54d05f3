//! JPEG encoding, one way for every output that writes JPEG: MJPEG videos (`-o FILE.mjpeg`),
//! `semask-edge record`, and the browser view's frames.

use image::ImageEncoder;

use crate::frame::Rgb8Image;

/// Quality of every JPEG we write: high enough that a recording replayed through the network
/// segments like the live frames did, small enough for a browser over Wi-Fi (~100 kB at 1024x512).
pub const JPEG_QUALITY: u8 = 92;

/// Encodes `image` into `out` (cleared first; its capacity is reused).
pub fn encode(image: &Rgb8Image, out: &mut Vec<u8>) -> Result<(), image::ImageError> {
    out.clear();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut *out, JPEG_QUALITY).write_image(
        &image.data,
        image.width as u32,
        image.height as u32,
        image::ExtendedColorType::Rgb8,
    )
}
