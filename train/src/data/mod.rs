//! Datasets: Cityscapes on disk, and the runtime's `synth://` scene generator.
//!
//! A [`Dataset`] hands out [`Sample`]s (RGB8 image + train-id labels, 255 = ignore) by index;
//! [`augment`] turns one into a training crop (SPEC section 0) and [`loader`] batches crops on
//! worker threads.

pub mod augment;
pub mod loader;

use std::path::{Path, PathBuf};

use semask_edge::frame::{LabelMap, Rgb8Image};
use semask_edge::model::classes::CITYSCAPES_LABEL_IDS;
use semask_edge::named::Named;
use semask_edge::source::images::decode_into;
use semask_edge::source::synth::{SynthConfig, SynthScene};

/// Which data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// Procedural driving scenes of the runtime's `synth://` (exact labels, no download).
    Synth,
    /// A Cityscapes folder (`leftImg8bit/`, `gtFine/`).
    Cityscapes,
}

impl Named for DatasetKind {
    const WHAT: &'static str = "dataset";
    const ALL: &'static [Self] = &[DatasetKind::Synth, DatasetKind::Cityscapes];
    fn name(self) -> &'static str {
        match self {
            DatasetKind::Synth => "synth",
            DatasetKind::Cityscapes => "cityscapes",
        }
    }
    fn help(self) -> &'static str {
        match self {
            DatasetKind::Synth => {
                "procedural driving scenes of the runtime's synth:// (exact labels, no download)"
            }
            DatasetKind::Cityscapes => "a Cityscapes folder (leftImg8bit/, gtFine/)",
        }
    }
}
semask_edge::impl_named_text!(DatasetKind);

/// What a training run trains and evaluates on, saved with the run so that `--resume`
/// continues on the same data and crops.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataRecipe {
    pub dataset: DatasetKind,
    /// Cityscapes root.
    pub data_root: Option<PathBuf>,
    /// Synthetic frame size (width, height).
    pub synth_size: (usize, usize),
    /// Frames per synthetic drive.
    pub synth_frames: usize,
    pub train_seeds: std::ops::Range<u64>,
    pub val_seeds: std::ops::Range<u64>,
    /// Training crop (height, width).
    pub crop: (usize, usize),
    /// Base scale (long, short edge) before the random ratio.
    pub scale: (usize, usize),
    pub photometric: bool,
}

/// One image and its labels (Cityscapes train ids 0..18, 255 ignored).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub name: String,
    pub image: Rgb8Image,
    pub labels: LabelMap,
}

/// Errors opening or reading a dataset; each names the folder or file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    #[error("dataset {root}: {reason}")]
    Layout { root: PathBuf, reason: String },
    #[error(
        "dataset {root}: {count} images have no label file, e.g. {example} (looked for {expected}); download gtFine or remove those images"
    )]
    MissingLabels { root: PathBuf, count: usize, example: String, expected: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    /// A data worker failed on a batch (a bug, or a hostile file a decoder could not take).
    #[error("the data worker making the batch of iteration {iteration} failed: {reason}")]
    Worker { iteration: usize, reason: String },
}

/// Images with labels, by index. Implementations are cheap to share across loader threads.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Describes the dataset for logs.
    fn describe(&self) -> String;
    /// Reads sample `index` into `out`.
    fn get(&self, index: usize, out: &mut Sample) -> Result<(), DataError>;
}

/// The train id of each Cityscapes label id (255 where the label is not evaluated).
pub fn cityscapes_label_to_train() -> [u8; 256] {
    let mut lut = [255u8; 256];
    for (train, &label) in CITYSCAPES_LABEL_IDS.iter().enumerate() {
        lut[label as usize] = train as u8;
    }
    lut
}

/// A Cityscapes split: `leftImg8bit/<split>/<city>/*_leftImg8bit.png` with
/// `gtFine/<split>/<city>/*_gtFine_labelTrainIds.png` if present, else `*_gtFine_labelIds.png`
/// mapped to train ids.
#[derive(Debug, Clone)]
pub struct Cityscapes {
    root: PathBuf,
    split: String,
    /// (image, label file, whether it holds label ids rather than train ids)
    items: Vec<(PathBuf, PathBuf, bool)>,
}

impl Cityscapes {
    pub fn open(root: &Path, split: &str) -> Result<Cityscapes, DataError> {
        let layout = |reason: String| DataError::Layout { root: root.to_path_buf(), reason };
        let images_dir = root.join("leftImg8bit").join(split);
        if !images_dir.is_dir() {
            return Err(layout(format!(
                "no {} folder (expected leftImg8bit/{split}/<city>/*_leftImg8bit.png)",
                images_dir.display()
            )));
        }
        let mut images = Vec::new();
        let mut cities: Vec<PathBuf> = std::fs::read_dir(&images_dir)
            .map_err(|e| layout(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        cities.sort();
        for city in cities {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&city)
                .map_err(|e| layout(e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with("_leftImg8bit.png"))
                .collect();
            files.sort();
            images.extend(files);
        }
        if images.is_empty() {
            return Err(layout(format!("no *_leftImg8bit.png under {}", images_dir.display())));
        }
        let mut items = Vec::with_capacity(images.len());
        let mut missing = Vec::new();
        for image in images {
            let city =
                image.parent().and_then(|p| p.file_name()).map(|c| c.to_os_string()).unwrap_or_default();
            let stem = image
                .file_name()
                .map(|f| f.to_string_lossy().replace("_leftImg8bit.png", ""))
                .unwrap_or_default();
            let gt_dir = root.join("gtFine").join(split).join(&city);
            let train_ids = gt_dir.join(format!("{stem}_gtFine_labelTrainIds.png"));
            let label_ids = gt_dir.join(format!("{stem}_gtFine_labelIds.png"));
            if train_ids.is_file() {
                items.push((image, train_ids, false));
            } else if label_ids.is_file() {
                items.push((image, label_ids, true));
            } else {
                missing.push(label_ids);
            }
        }
        if let Some(example) = missing.first() {
            return Err(DataError::MissingLabels {
                root: root.to_path_buf(),
                count: missing.len(),
                example: example.display().to_string(),
                expected: "*_gtFine_labelTrainIds.png or *_gtFine_labelIds.png".into(),
            });
        }
        Ok(Cityscapes { root: root.to_path_buf(), split: split.into(), items })
    }

    /// The label file of item `index` (for writing predictions next to it).
    pub fn image_path(&self, index: usize) -> &Path {
        &self.items[index].0
    }
}

impl Dataset for Cityscapes {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn describe(&self) -> String {
        format!("Cityscapes {} ({}, {} images)", self.split, self.root.display(), self.items.len())
    }

    fn get(&self, index: usize, out: &mut Sample) -> Result<(), DataError> {
        let (image, labels, are_label_ids) = &self.items[index];
        let read = |path: &Path| {
            fs_err::read(path)
                .map_err(|e| DataError::Read { path: path.to_path_buf(), reason: e.to_string() })
        };
        decode_into(&read(image)?, &mut out.image, &semask_edge::limits::Limits::default())
            .map_err(|e| DataError::Read { path: image.clone(), reason: e.to_string() })?;
        let gray = image::load_from_memory(&read(labels)?)
            .map_err(|e| DataError::Read { path: labels.clone(), reason: e.to_string() })?
            .into_luma8();
        if (gray.width() as usize, gray.height() as usize) != (out.image.width, out.image.height) {
            return Err(DataError::Read {
                path: labels.clone(),
                reason: format!(
                    "label map is {}x{}, image is {}x{}",
                    gray.width(),
                    gray.height(),
                    out.image.width,
                    out.image.height
                ),
            });
        }
        out.labels.reset(out.image.width, out.image.height);
        let lut = cityscapes_label_to_train();
        for (dst, &v) in out.labels.data.iter_mut().zip(gray.as_raw()) {
            *dst = if *are_label_ids { lut[v as usize] } else { v };
        }
        out.name = image
            .file_name()
            .map(|f| f.to_string_lossy().replace("_leftImg8bit.png", ""))
            .unwrap_or_default();
        Ok(())
    }
}

/// Frames of `synth://` drives as a dataset: `frames` frames from each of `seeds` (frame i of
/// seed s is sample `s_index * frames + i`), labels exact.
#[derive(Debug, Clone)]
pub struct Synth {
    config: SynthConfig,
    seeds: Vec<u64>,
    frames: usize,
    /// Frames are taken every `stride` frames of the drive, so that samples differ.
    stride: u64,
}

impl Synth {
    pub fn new(config: SynthConfig, seeds: Vec<u64>, frames: usize, stride: u64) -> Synth {
        Synth { config, seeds, frames, stride }
    }
}

impl Dataset for Synth {
    fn len(&self) -> usize {
        self.seeds.len() * self.frames
    }

    fn describe(&self) -> String {
        format!(
            "synth:// {}x{}, seeds {:?}, {} frames each (every {} frames)",
            self.config.width, self.config.height, self.seeds, self.frames, self.stride
        )
    }

    fn get(&self, index: usize, out: &mut Sample) -> Result<(), DataError> {
        let seed = self.seeds[index / self.frames];
        let frame = (index % self.frames) as u64 * self.stride;
        // Rendering is cheap and a scene per call keeps the dataset shareable across threads.
        let mut scene = SynthScene::new(SynthConfig { seed, frames: None, ..self.config });
        scene.render(frame, &mut out.image, &mut out.labels);
        out.name = format!("seed{seed}_{frame:06}");
        Ok(())
    }
}
