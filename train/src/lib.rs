//! semask-train: SeMask-T FPN in burn. Imports official checkpoints, trains on Cityscapes or on
//! the runtime's synthetic scenes, evaluates, and exports and quantizes what the runtime deploys.
//!
//! - [`device`]: `--device`: the CPU, GPUs (wgpu), data-parallel lists.
//! - [`model`]: the model, its architecture config, intermediate taps.
//! - [`weights`]: checkpoints under the official names (safetensors, `.pth`).
//! - [`data`]: Cityscapes and `synth://` datasets, augmentation, batch loading.
//! - [`training`]: loss, optimizer, schedule, the training loop, checkpoints.
//! - [`eval`]: confusion matrix, IoU, mIoU, pixel accuracy.
//! - [`onnx`]: ONNX graphs written by our code, and the model's export.
//! - [`quantize`]: int8 calibration, Q/DQ and QOperator graphs, TensorRT calibration cache.
//! - [`arrays`]: `.npy` / `.npz` files.

pub mod arrays;
pub mod data;
pub mod device;
pub mod eval;
pub mod model;
pub mod onnx;
pub mod quantize;
pub mod training;
pub mod weights;

/// The CPU device (burn's pure-Rust `flex` backend), `--device cpu`.
pub fn cpu() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}
