//! PNG directories: `<dir>/<frame name>.png` per frame, for label maps, colour maps or overlays.
//!
//! Each file is written under a temporary name and renamed when complete, so a crash or a full
//! disk never leaves a truncated PNG that looks like a result.

use std::path::{Path, PathBuf};

use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};

use super::{Sink, SinkError};
use crate::files::write_atomically;
use crate::frame::Frame;
use crate::model::ClassTable;
use crate::model::classes::CITYSCAPES_LABEL_IDS;
use crate::named::Named;
use crate::postprocess::Needs;

/// Which values a label PNG holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelIds {
    /// The model's class index (Cityscapes train ids 0..18 for a Cityscapes model).
    #[default]
    Train,
    /// Cityscapes label ids (7 road, 8 sidewalk, 11 building…), as `cityscapesscripts`
    /// evaluates them. Needs a model with the 19 Cityscapes classes.
    Cityscapes,
}

impl Named for LabelIds {
    const WHAT: &'static str = "label id set";
    const ALL: &'static [Self] = &[LabelIds::Train, LabelIds::Cityscapes];
    fn name(self) -> &'static str {
        match self {
            LabelIds::Train => "train",
            LabelIds::Cityscapes => "cityscapes",
        }
    }
    fn help(self) -> &'static str {
        match self {
            LabelIds::Train => "the model's class index (Cityscapes train ids 0..18 for a Cityscapes model)",
            LabelIds::Cityscapes => {
                "Cityscapes label ids (7 road, 8 sidewalk...), as cityscapesscripts evaluates them; needs the 19 Cityscapes classes"
            }
        }
    }
}
crate::impl_named_text!(LabelIds);

/// What a PNG directory receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PngKind {
    /// 8-bit single-channel label maps.
    Labels(LabelIds),
    /// Palette colour of each pixel's class.
    Color,
    /// Colour blended over the frame.
    Overlay,
}

/// Writes one PNG per frame into a directory.
#[derive(Debug)]
pub struct PngDirSink {
    dir: PathBuf,
    kind: PngKind,
    /// Value written for each class index (identity, or train id → Cityscapes label id).
    label_lut: [u8; 256],
    /// Label bytes after the lookup, reused.
    mapped: Vec<u8>,
    encoded: Vec<u8>,
}

impl PngDirSink {
    /// Creates `dir` if needed. `classes` is checked against `--label-ids cityscapes`.
    pub fn new(dir: &Path, kind: PngKind, classes: &ClassTable) -> Result<PngDirSink, SinkError> {
        let mut label_lut = [0u8; 256];
        for (i, v) in label_lut.iter_mut().enumerate() {
            *v = i as u8;
        }
        if kind == PngKind::Labels(LabelIds::Cityscapes) {
            if !classes.is_cityscapes() {
                return Err(SinkError::Config(format!(
                    "--label-ids cityscapes needs a model with the 19 Cityscapes classes, but this one has \
                     {} classes ({}…); use --label-ids train",
                    classes.len(),
                    classes.names().iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            label_lut[..19].copy_from_slice(&CITYSCAPES_LABEL_IDS);
        }
        fs_err::create_dir_all(dir)
            .map_err(|e| SinkError::CreateDir { path: dir.to_path_buf(), reason: io_reason(&e) })?;
        Ok(PngDirSink { dir: dir.to_path_buf(), kind, label_lut, mapped: Vec::new(), encoded: Vec::new() })
    }

    /// Path of the PNG written for a frame named `name`.
    pub fn path_for(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.png"))
    }
}

impl Sink for PngDirSink {
    fn describe(&self) -> String {
        let what = match self.kind {
            PngKind::Labels(LabelIds::Train) => "labels (class index)",
            PngKind::Labels(LabelIds::Cityscapes) => "labels (Cityscapes label ids)",
            PngKind::Color => "colour maps",
            PngKind::Overlay => "overlays",
        };
        format!("{what} -> {}/", self.dir.display())
    }

    fn needs(&self) -> Needs {
        match self.kind {
            PngKind::Labels(_) => Needs::default(),
            PngKind::Color => Needs { color: true, overlay: false },
            PngKind::Overlay => Needs { color: false, overlay: true },
        }
    }

    fn write(&mut self, frame: &Frame) -> Result<(), SinkError> {
        let path = self.path_for(&frame.name);
        let fail = |reason: String| SinkError::Write { path: path.clone(), reason };
        let (width, height, pixels, color_type) = match self.kind {
            PngKind::Labels(_) => {
                self.mapped.clear();
                self.mapped.extend(frame.labels.data.iter().map(|&l| self.label_lut[l as usize]));
                (frame.labels.width, frame.labels.height, &self.mapped[..], image::ExtendedColorType::L8)
            }
            PngKind::Color => {
                (frame.color.width, frame.color.height, &frame.color.data[..], image::ExtendedColorType::Rgb8)
            }
            PngKind::Overlay => (
                frame.overlay.width,
                frame.overlay.height,
                &frame.overlay.data[..],
                image::ExtendedColorType::Rgb8,
            ),
        };
        self.encoded.clear();
        // Fast compression: label and colour maps compress well anyway; the output stage should
        // not dominate a replay.
        PngEncoder::new_with_quality(&mut self.encoded, CompressionType::Fast, FilterType::Adaptive)
            .write_image(pixels, width as u32, height as u32, color_type)
            .map_err(|e| fail(format!("PNG encoding failed: {e}")))?;
        write_atomically(&path, &self.encoded).map_err(|e| fail(io_reason(&e)))
    }
}

fn io_reason(e: &std::io::Error) -> String {
    // fs_err's message repeats the path; the OS reason is what matters here.
    std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{LabelMap, Rgb8Image};

    fn frame() -> Frame {
        let mut f = Frame::default();
        f.begin(0, "f0");
        f.image = Rgb8Image::new(3, 2);
        f.labels = LabelMap { width: 3, height: 2, data: vec![0, 1, 2, 13, 18, 10] };
        f
    }

    #[test]
    fn label_pngs_hold_train_or_cityscapes_ids() {
        let dir = tempfile::tempdir().unwrap();
        let classes = ClassTable::cityscapes();
        for (ids, expected) in [
            (LabelIds::Train, vec![0u8, 1, 2, 13, 18, 10]),
            (LabelIds::Cityscapes, vec![7u8, 8, 11, 26, 33, 23]),
        ] {
            let out = dir.path().join(format!("{ids:?}"));
            let mut sink = PngDirSink::new(&out, PngKind::Labels(ids), &classes).unwrap();
            sink.write(&frame()).unwrap();
            let png = image::open(out.join("f0.png")).unwrap();
            assert_eq!(png.color(), image::ColorType::L8);
            assert_eq!(png.into_luma8().into_raw(), expected);
            assert!(!out.join("f0.png.partial").exists());
        }
    }

    #[test]
    fn cityscapes_ids_need_cityscapes_classes() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            PngDirSink::new(dir.path(), PngKind::Labels(LabelIds::Cityscapes), &ClassTable::generic(19))
                .unwrap_err()
                .to_string();
        assert!(err.contains("--label-ids train"), "{err}");
    }

    #[test]
    fn unwritable_directory_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let err = PngDirSink::new(&file.join("sub"), PngKind::Color, &ClassTable::cityscapes()).unwrap_err();
        assert!(err.to_string().contains("a-file"), "{err}");
    }
}
