//! semask-train: SeMask-T FPN in burn. Imports official checkpoints, trains on Cityscapes or on
//! the runtime's synthetic scenes, evaluates, and (later) exports what the runtime deploys.
//!
//! - [`model`]: the model, its architecture config, intermediate taps.
//! - [`weights`]: checkpoints under the official names (safetensors, `.pth`).
//! - [`data`]: Cityscapes and `synth://` datasets, augmentation, batch loading.
//! - [`training`]: loss, optimizer, schedule, the training loop, checkpoints.
//! - [`eval`]: confusion matrix, IoU, mIoU, pixel accuracy.
//! - [`arrays`]: `.npy` / `.npz` files.

pub mod arrays;
pub mod data;
pub mod eval;
pub mod model;
pub mod training;
pub mod weights;

/// The CPU device the crate computes on (burn's pure-Rust `flex` backend).
pub fn cpu() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}
