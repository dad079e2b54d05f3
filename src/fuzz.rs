//! Entry points for fuzzing (`tests/fuzz/`, `scripts/fuzz.sh`) and for replaying what fuzzing
//! found (`tests/fuzz_regressions.rs`): each takes arbitrary bytes and runs them through one
//! reader of hostile input the way the runtime does, with small limits so that a run is quick.
//! None may panic, abort, hang or allocate beyond its limits, whatever the bytes.
//!
//! | target | what reads the bytes |
//! |---|---|
//! | [`onnx_model`] | the ONNX loader, `semask.*` metadata, input size, and tract's importer |
//! | [`mjpeg`] | the MJPEG frame splitter and the JPEG decoder |
//! | [`mp4`] | the MP4 box check, the `mp4` demuxer, the sample table and openh264 |
//! | [`image`] | the PNG and JPEG decoders with the pixel limit |
//! | [`text`] | `--input` URIs, `synth://` queries, device profiles, class files, calibration caches |
#![doc(hidden)]

use std::io::Cursor;
use std::path::Path;

use crate::frame::{Frame, Rgb8Image};
use crate::limits::Limits;
use crate::source::Source;

/// Limits small enough that every input is quick to reject or process.
fn limits() -> Limits {
    Limits { max_pixels: 1 << 20 }
}

/// The ONNX loader and what the runtime does with a model before running it.
pub fn onnx_model(data: &[u8]) {
    let Ok(model) = crate::model::OnnxModel::from_memory(data, "fuzz.onnx", &Default::default()) else {
        return;
    };
    let _ = model.precision();
    let mut metadata = model.metadata.clone();
    for classes in [0, 1, 19, 300] {
        let _ = metadata.resolve_classes(classes);
    }
    // tract's importer and typing on small static inputs (its errors and panics are caught).
    if let Ok((h, w)) = model.input_size(None, &Limits { max_pixels: 4096 })
        && data.len() < 1 << 16
    {
        let _ = crate::backend::tract::typed_model(&model, [1, 3, h, w], &model.metadata.logits_output.value);
    }
}

/// An MJPEG stream: split into frames, each decoded.
pub fn mjpeg(data: &[u8]) {
    use crate::source::mjpeg::{JpegSplitter, Split};
    let mut splitter = JpegSplitter::new(Cursor::new(data), 1 << 20);
    let (mut jpeg, mut skipped, mut image) = (Vec::new(), 0u64, Rgb8Image::default());
    for _ in 0..64 {
        match splitter.next_frame(&mut jpeg, &mut skipped) {
            Ok(Split::Frame) => {
                let _ = crate::source::images::decode_into(&jpeg, &mut image, &limits());
            }
            Ok(Split::End) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// An MP4 file: opened (box check, demuxer, sample table), then its frames decoded.
pub fn mp4(data: &[u8]) {
    // The demuxer reads a file: one per process and thread, rewritten for each input.
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_digit(), "");
    let path = std::env::temp_dir().join(format!("semask-edge-fuzz-{}-{thread}.mp4", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        mp4_file(&path);
    }
    let _ = std::fs::remove_file(&path);
}

fn mp4_file(path: &Path) {
    let Ok(mut source) = crate::source::mp4::Mp4Source::open(path, &limits()) else { return };
    let mut frame = Frame::default();
    for _ in 0..32 {
        match source.next(&mut frame) {
            Ok(crate::source::Captured::Frame) => {}
            Ok(_) => break,
            Err(e) if e.is_bad_frame() => {}
            Err(_) => break,
        }
    }
}

/// An image file (PNG or JPEG), decoded under the pixel limit.
pub fn image(data: &[u8]) {
    let mut out = Rgb8Image::default();
    let _ = crate::source::images::decode_into(data, &mut out, &limits());
}

/// Text that users and files give: an `--input` URI (classified, and a `synth://` query
/// parsed), a device profile, a class file, a calibration cache.
pub fn text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let crate::source::SourceUri::Synth(query) = crate::source::SourceUri::parse(Some(text)) {
        let _ = crate::source::synth::SynthConfig::parse(&query);
    }
    let _ = crate::source::synth::SynthConfig::parse(text);
    let _ = crate::profile::Profile::parse(text, "fuzz.toml");
    let _ = crate::model::ClassTable::from_text(text, Path::new("fuzz.txt"));
    let _ = crate::calibration::CalibrationCache::parse(text, Path::new("fuzz.cache"));
    let _ = crate::profile::L4t::parse(text);
}

/// The entry point named `target` (the file names of `tests/fuzz/fuzz_targets/`).
pub fn by_name(target: &str) -> Option<fn(&[u8])> {
    match target {
        "onnx_model" => Some(onnx_model),
        "mjpeg" => Some(mjpeg),
        "mp4" => Some(mp4),
        "image" => Some(image),
        "text" => Some(text),
        _ => None,
    }
}
