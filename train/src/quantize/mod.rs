//! Post-training int8 quantization of an fp32 ONNX export (`semask-train quantize`): calibrate
//! activation ranges on frames ([`calibrate`]), write the Q/DQ and QOperator graphs
//! ([`rewrite`]) and the TensorRT calibration cache, and measure what each artifact costs
//! against fp32 ([`evaluate`]). File layout: [`semask_edge::calibration`].

pub mod calibrate;
pub mod rewrite;

use std::collections::HashMap;
use std::path::Path;

use semask_edge::calibration::{CACHE_ALGORITHM, CalibrationCache};
use semask_edge::frame::{Frame, LabelMap};
use semask_edge::model::OnnxModel;
use semask_edge::pipeline::{Segmenter, SegmenterOptions};
use semask_edge::postprocess::Upsample;
use tract_onnx::pb;

use crate::data::{Dataset, Sample};
use crate::eval::{ConfusionMatrix, Metrics};
pub use calibrate::Method;
use rewrite::{Product, Target};

/// Everything quantization produces from one fp32 model and its calibration frames.
pub struct Quantized {
    pub qdq: pb::ModelProto,
    pub qop: pb::ModelProto,
    pub cache: CalibrationCache,
    pub targets: Vec<Target>,
    /// Calibrated `amax` per activation tensor.
    pub amax: HashMap<String, f32>,
}

impl Quantized {
    /// How many products of each kind were quantized.
    pub fn census(&self) -> std::collections::BTreeMap<String, usize> {
        let mut census = std::collections::BTreeMap::new();
        for t in &self.targets {
            let kind = match t.product {
                Product::MatMul => "MatMul",
                Product::Conv => "Conv",
                Product::Gemm { .. } => "Gemm",
            };
            *census.entry(kind.to_string()).or_insert(0) += 1;
        }
        census
    }
}

/// Calibrates `model` on `inputs` (pre-processed network inputs) and builds every artifact.
pub fn quantize(
    model: &pb::ModelProto,
    inputs: &[Vec<f32>],
    method: Method,
    trt_version: u32,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Quantized> {
    let graph = model.graph.as_ref().ok_or_else(|| anyhow::anyhow!("the model has no graph"))?;
    let targets = rewrite::targets(graph);
    if targets.is_empty() {
        anyhow::bail!("the model has no MatMul, Conv or Gemm with constant weights: nothing to quantize");
    }
    let names = calibrate::activation_names(graph);
    let tap = calibrate::TensorTap::new(model, &names)?;
    let amax = calibrate::calibrate(&tap, inputs, method, progress)?;
    for t in &targets {
        if !amax.contains_key(&t.activation) {
            anyhow::bail!("no float statistics for {}, the input of a quantized product", t.activation);
        }
    }
    let cache = CalibrationCache {
        trt_version,
        algorithm: CACHE_ALGORITHM.into(),
        scales: names
            .iter()
            .filter_map(|n| amax.get(n).map(|&a| (n.clone(), rewrite::activation_scale(a))))
            .collect(),
    };
    let qdq = rewrite::to_qdq(model, &targets, &amax);
    let qop = rewrite::to_qop(model, &targets, &amax);
    Ok(Quantized { qdq, qop, cache, targets, amax })
}

/// Labels of one model over a dataset, with its metrics against the dataset's labels.
pub struct Evaluation {
    pub metrics: Metrics,
    pub labels: Vec<Vec<u8>>,
}

/// Runs the ONNX model at `path` through the runtime (tract, exact upsampling to each image's
/// size) on every sample of `dataset`.
pub fn evaluate(
    path: &Path,
    dataset: &dyn Dataset,
    classes: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Evaluation> {
    let model = OnnxModel::open(path, &Default::default())?;
    let options = SegmenterOptions { upsample: Upsample::Exact, ..Default::default() };
    let mut segmenter = Segmenter::new(&model, &options)?;
    let mut confusion = ConfusionMatrix::new(classes);
    let (mut sample, mut frame) = (Sample::default(), Frame::default());
    let mut labels = Vec::with_capacity(dataset.len());
    for i in 0..dataset.len() {
        dataset.get(i, &mut sample)?;
        frame.image = std::mem::take(&mut sample.image);
        frame.labels = LabelMap::default();
        segmenter.segment(&mut frame, Default::default())?;
        sample.image = std::mem::take(&mut frame.image);
        confusion.add(&sample.labels.data, &frame.labels.data);
        labels.push(std::mem::take(&mut frame.labels.data));
        progress.inc(1);
    }
    Ok(Evaluation { metrics: confusion.metrics(), labels })
}

/// Fraction of pixels where two label sets agree.
pub fn agreement(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    let (mut same, mut total) = (0u64, 0u64);
    for (x, y) in a.iter().zip(b) {
        same += x.iter().zip(y).filter(|(p, q)| p == q).count() as u64;
        total += x.len() as u64;
    }
    if total == 0 { 0.0 } else { same as f64 / total as f64 }
}
