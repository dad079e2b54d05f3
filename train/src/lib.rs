//! semask-train: SeMask-T FPN in burn. Imports official checkpoints, trains on Cityscapes or on
//! the runtime's synthetic scenes, evaluates, and exports and quantizes what the runtime deploys.
//!
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
pub mod eval;
pub mod model;
pub mod onnx;
pub mod quantize;
pub mod training;
pub mod weights;

/// The CPU device (burn's pure-Rust `flex` backend): the default, and what CI tests.
pub fn cpu() -> burn::tensor::Device {
    burn::tensor::Device::flex()
}

/// The device named by `--device`: `cpu`, or `cuda` / `cuda:N` in builds with the `cuda`
/// feature (not built or tested on the development machines: burn's CUDA build downloads LLVM).
pub fn device(name: &str) -> Result<burn::tensor::Device, String> {
    let cuda_index = match name {
        "cpu" => return Ok(cpu()),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => index,
            _ => return Err(format!("unknown device {other:?}: use cpu, cuda or cuda:N")),
        },
    };
    #[cfg(feature = "cuda")]
    return Ok(burn::tensor::Device::cuda(cuda_index));
    #[cfg(not(feature = "cuda"))]
    Err(format!(
        "--device cuda:{cuda_index}: this semask-train was built without CUDA; rebuild with \
         `cargo build --release -p semask-train --features cuda` (CUDA toolkit needed), or use --device cpu"
    ))
}
