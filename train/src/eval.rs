//! Segmentation metrics as Cityscapes evaluates them: a confusion matrix over pixels whose
//! ground truth is one of the classes, IoU = TP / (TP + FP + FN) per class (undefined, and left
//! out of the mean, when a class appears neither in the ground truth nor in the predictions),
//! mIoU = mean of the defined IoUs, pixel accuracy = TP / labelled pixels.
//!
//! One loop scores every model: [`evaluate`] takes a [`Labeller`], which is the burn model
//! ([`crate::training::ModelLabeller`]) or an ONNX file run by the runtime ([`onnx_labeller`]),
//! and the class count comes from the labeller, never from a constant.

use std::path::Path;

use anyhow::Context;
use semask_edge::frame::Frame;
use semask_edge::model::{ClassTable, OnnxModel};
use semask_edge::pipeline::{Segmenter, SegmenterOptions};
use semask_edge::postprocess::{Needs, Upsample};

use crate::data::augment::IGNORE;
use crate::data::{Dataset, Sample};

/// Counts of (ground truth, prediction) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// `[gt][pred]`.
    counts: Vec<u64>,
}

/// The metrics of a confusion matrix.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Per class; `None` where the class is in neither ground truth nor predictions.
    pub iou: Vec<Option<f64>>,
    pub miou: f64,
    pub pixel_accuracy: f64,
    pub pixels: u64,
}

/// A label map that cannot be scored: counting it anyway would give a wrong mIoU silently.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    #[error("the prediction has {prediction} pixels and the ground truth {ground_truth}")]
    Size { ground_truth: usize, prediction: usize },
    #[error(
        "the prediction has label {label}, beyond the {classes} classes being scored (is the model's \
         class count right?)"
    )]
    Prediction { label: u8, classes: usize },
    #[error(
        "the ground truth has label {label}, beyond the model's {classes} classes (and not the \
         ignore label {IGNORE}): the dataset and the model have different classes"
    )]
    GroundTruth { label: u8, classes: usize },
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        ConfusionMatrix { classes, counts: vec![0; classes * classes] }
    }

    /// Adds a label map and its prediction (ground-truth [`IGNORE`] is skipped). Nothing is
    /// counted unless every label is in range.
    pub fn add(&mut self, ground_truth: &[u8], prediction: &[u8]) -> Result<(), ScoreError> {
        if ground_truth.len() != prediction.len() {
            return Err(ScoreError::Size { ground_truth: ground_truth.len(), prediction: prediction.len() });
        }
        let classes = self.classes;
        if let Some(&label) = prediction.iter().find(|&&p| p as usize >= classes) {
            return Err(ScoreError::Prediction { label, classes });
        }
        if let Some(&label) = ground_truth.iter().find(|&&g| g != IGNORE && g as usize >= classes) {
            return Err(ScoreError::GroundTruth { label, classes });
        }
        for (&g, &p) in ground_truth.iter().zip(prediction) {
            if g != IGNORE {
                self.counts[g as usize * classes + p as usize] += 1;
            }
        }
        Ok(())
    }

    pub fn merge(&mut self, other: &ConfusionMatrix) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    pub fn metrics(&self) -> Metrics {
        let k = self.classes;
        let at = |g: usize, p: usize| self.counts[g * k + p];
        let pixels: u64 = self.counts.iter().sum();
        let mut tp_total = 0;
        let iou: Vec<Option<f64>> = (0..k)
            .map(|c| {
                let tp = at(c, c);
                tp_total += tp;
                let fn_ = (0..k).map(|p| at(c, p)).sum::<u64>() - tp;
                let fp = (0..k).map(|g| at(g, c)).sum::<u64>() - tp;
                let denominator = tp + fp + fn_;
                (denominator > 0).then(|| tp as f64 / denominator as f64)
            })
            .collect();
        let defined: Vec<f64> = iou.iter().flatten().copied().collect();
        let miou = if defined.is_empty() { 0.0 } else { defined.iter().sum::<f64>() / defined.len() as f64 };
        Metrics {
            iou,
            miou,
            pixel_accuracy: if pixels == 0 { 0.0 } else { tp_total as f64 / pixels as f64 },
            pixels,
        }
    }
}

/// A model that labels images, so that one evaluation loop serves the burn model and ONNX files.
pub trait Labeller {
    /// The classes it predicts: labels are indices into this table.
    fn classes(&self) -> &ClassTable;
    /// Labels `frame.image`, at the image's own size, into `frame.labels`.
    fn label(&mut self, frame: &mut Frame) -> anyhow::Result<()>;
}

impl Labeller for Segmenter {
    fn classes(&self) -> &ClassTable {
        Segmenter::classes(self)
    }

    fn label(&mut self, frame: &mut Frame) -> anyhow::Result<()> {
        Ok(self.segment(frame, Needs::default())?)
    }
}

/// The ONNX model at `path` run by the runtime (tract, fp32, logits upsampled exactly to each
/// image's size), with the classes of its metadata.
pub fn onnx_labeller(path: &Path) -> anyhow::Result<Segmenter> {
    let model = OnnxModel::open(path, &Default::default())?;
    let options = SegmenterOptions { upsample: Upsample::Exact, ..Default::default() };
    Ok(Segmenter::new(&model, &options)?)
}

/// Labels every sample of `dataset` with `labeller` and scores the labels against the
/// dataset's. `each` sees each sample with its labelled frame (to save labels, keep them for
/// a comparison, tick a progress bar).
pub fn evaluate(
    labeller: &mut dyn Labeller,
    dataset: &dyn Dataset,
    mut each: impl FnMut(&Sample, &Frame) -> anyhow::Result<()>,
) -> anyhow::Result<Metrics> {
    let mut confusion = ConfusionMatrix::new(labeller.classes().len());
    let (mut sample, mut frame) = (Sample::default(), Frame::default());
    for i in 0..dataset.len() {
        dataset.get(i, &mut sample)?;
        frame.image = std::mem::take(&mut sample.image);
        frame.name.clone_from(&sample.name);
        let labelled = labeller.label(&mut frame);
        sample.image = std::mem::take(&mut frame.image);
        labelled.with_context(|| format!("cannot label {}", sample.name))?;
        confusion
            .add(&sample.labels.data, &frame.labels.data)
            .with_context(|| format!("cannot score {} of {}", sample.name, dataset.describe()))?;
        each(&sample, &frame)?;
    }
    Ok(confusion.metrics())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_per_class_and_ignored_pixels() {
        let mut m = ConfusionMatrix::new(3);
        // gt:   0 0 1 1 255 2
        // pred: 0 1 1 1 2   0
        m.add(&[0, 0, 1, 1, 255, 2], &[0, 1, 1, 1, 2, 0]).unwrap();
        let r = m.metrics();
        assert_eq!(r.pixels, 5);
        // class 0: tp 1, fn 1, fp 1 → 1/3; class 1: tp 2, fp 1 → 2/3; class 2: tp 0, fn 1 → 0.
        assert_eq!(r.iou, vec![Some(1.0 / 3.0), Some(2.0 / 3.0), Some(0.0)]);
        assert!((r.miou - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.pixel_accuracy - 3.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn absent_classes_are_left_out_of_the_mean() {
        let mut m = ConfusionMatrix::new(4);
        m.add(&[1, 1], &[1, 1]).unwrap();
        let r = m.metrics();
        assert_eq!(r.iou, vec![None, Some(1.0), None, None]);
        assert_eq!(r.miou, 1.0);
    }

    /// Labels beyond the class count are errors, and nothing of that map is counted.
    #[test]
    fn out_of_range_labels_are_errors_not_folded_into_a_class() {
        let mut m = ConfusionMatrix::new(3);
        assert_eq!(m.add(&[0, 1], &[0, 3]), Err(ScoreError::Prediction { label: 3, classes: 3 }));
        assert_eq!(m.add(&[0, 7], &[0, 1]), Err(ScoreError::GroundTruth { label: 7, classes: 3 }));
        assert_eq!(m.add(&[0, 1], &[0]), Err(ScoreError::Size { ground_truth: 2, prediction: 1 }));
        assert_eq!(m.metrics().pixels, 0);
        // The ignore label is not a class, whatever the count.
        m.add(&[IGNORE, 2], &[0, 2]).unwrap();
        assert_eq!(m.metrics().pixels, 1);
    }
}
