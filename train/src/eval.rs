//! Segmentation metrics as Cityscapes evaluates them: a confusion matrix over pixels whose
//! ground truth is one of the classes, IoU = TP / (TP + FP + FN) per class (undefined, and left
//! out of the mean, when a class appears neither in the ground truth nor in the predictions),
//! mIoU = mean of the defined IoUs, pixel accuracy = TP / labelled pixels.

use crate::data::augment::IGNORE;

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

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        ConfusionMatrix { classes, counts: vec![0; classes * classes] }
    }

    /// Adds a label map and its prediction (ground-truth 255 is skipped).
    pub fn add(&mut self, ground_truth: &[u8], prediction: &[u8]) {
        assert_eq!(ground_truth.len(), prediction.len(), "prediction and ground truth differ in size");
        for (&g, &p) in ground_truth.iter().zip(prediction) {
            if g == IGNORE || (g as usize) >= self.classes {
                continue;
            }
            let p = (p as usize).min(self.classes - 1);
            self.counts[g as usize * self.classes + p] += 1;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_per_class_and_ignored_pixels() {
        let mut m = ConfusionMatrix::new(3);
        // gt:   0 0 1 1 255 2
        // pred: 0 1 1 1 2   0
        m.add(&[0, 0, 1, 1, 255, 2], &[0, 1, 1, 1, 2, 0]);
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
        m.add(&[1, 1], &[1, 1]);
        let r = m.metrics();
        assert_eq!(r.iou, vec![None, Some(1.0), None, None]);
        assert_eq!(r.miou, 1.0);
    }
}
