//! Post-training int8 quantization of an fp32 ONNX export (`semask-train quantize`): calibrate
//! activation ranges on frames ([`calibrate`]), write the Q/DQ and QOperator graphs
//! ([`rewrite`]) and the TensorRT calibration cache; [`agreement`] compares an artifact's
//! labels with fp32's (scored by [`crate::eval::evaluate`]). File layout:
//! [`semask_edge::calibration`].

pub mod calibrate;
pub mod device_tap;
pub mod rewrite;

use std::collections::HashMap;

use semask_edge::calibration::{CACHE_ALGORITHM, CalibrationCache};
use tract_onnx::pb;

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
/// The calibration pass runs in tract on the CPU, or with burn on `device` when given (a GPU;
/// graphs written by `semask-train export` only, see [`device_tap`]).
pub fn quantize(
    model: &pb::ModelProto,
    inputs: &[Vec<f32>],
    method: Method,
    trt_version: u32,
    device: Option<&burn::tensor::Device>,
    on_step: &dyn Fn(),
) -> anyhow::Result<Quantized> {
    let graph = model.graph.as_ref().ok_or_else(|| anyhow::anyhow!("the model has no graph"))?;
    let targets = rewrite::targets(graph);
    if targets.is_empty() {
        anyhow::bail!("the model has no MatMul, Conv or Gemm with constant weights: nothing to quantize");
    }
    let names = calibrate::activation_names(graph);
    let tap: Box<dyn calibrate::Tap> = match device {
        None => Box::new(calibrate::TensorTap::new(model, &names)?),
        Some(device) => Box::new(device_tap::DeviceTap::new(model, &names, device)?),
    };
    let amax = calibrate::calibrate(tap.as_ref(), inputs, method, on_step)?;
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

/// Fraction of pixels where two label sets agree.
pub fn agreement(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    let (mut same, mut total) = (0u64, 0u64);
    for (x, y) in a.iter().zip(b) {
        same += x.iter().zip(y).filter(|(p, q)| p == q).count() as u64;
        total += x.len() as u64;
    }
    if total == 0 { 0.0 } else { same as f64 / total as f64 }
}
