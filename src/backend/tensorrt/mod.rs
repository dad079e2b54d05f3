//! TensorRT: engines built from our ONNX exports in fp32, fp16 or int8 (a Q/DQ graph, or the
//! fp32 graph with a calibration cache), cached across runs, and run with the named-tensor API
//! (`setTensorAddress` + `enqueueV3`) on one CUDA stream with pinned host buffers.
//!
//! - `shim.h`, `shim.cpp`: C++ against TensorRT's headers (8.5 to 11.x) behind a small C API;
//!   compiled by build.rs with the `tensorrt` feature. It opens libnvinfer, libnvonnxparser and
//!   the CUDA libraries at run time, so the binary runs (on the CPU) where they are missing.
//! - [`ffi`]: that API in Rust, every handle owned by a type with `Drop`.
//! - [`engine_cache`]: cache keys, sidecars, rebuilding what is stale or corrupt.
//! - `backend.rs`: [`TensorRtBackend`], which chooses the graph for the precision, builds or
//!   loads the engine, checks its tensors, and runs it.
//!
//! Only the `tensorrt` feature compiles the shim, [`ffi`] and the backend; the engine cache,
//! versions and options are plain Rust, built and tested everywhere.

#[cfg(feature = "tensorrt")]
mod backend;
pub mod engine_cache;
#[cfg(feature = "tensorrt")]
pub mod ffi;

use std::path::PathBuf;

#[cfg(feature = "tensorrt")]
pub use backend::TensorRtBackend;

#[cfg(not(feature = "tensorrt"))]
use super::BackendKind;
use super::{Backend, BackendError, BackendOptions};
use crate::model::OnnxModel;

/// A TensorRT version, as `getInferLibVersion` encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct TrtVersion {
    pub major: i32,
    pub minor: i32,
    pub patch: i32,
}

impl TrtVersion {
    /// `8502` (8.5.2; up to 9.x: major*1000 + minor*100 + patch) or `100300` (10.3.0; from 10.0:
    /// major*10000 + minor*100 + patch).
    pub fn from_int(v: i32) -> TrtVersion {
        if v >= 10000 {
            TrtVersion { major: v / 10000, minor: (v / 100) % 100, patch: v % 100 }
        } else {
            TrtVersion { major: v / 1000, minor: (v / 100) % 10, patch: v % 100 }
        }
    }

    /// The integer form, as TensorRT writes it in calibration cache headers.
    pub fn to_int(self) -> i32 {
        if self.major >= 10 {
            self.major * 10000 + self.minor * 100 + self.patch
        } else {
            self.major * 1000 + self.minor * 100 + self.patch
        }
    }
}

impl std::fmt::Display for TrtVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The four ways an engine gets its numbers (shim.h's SEMASK_TRT_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildPrecision {
    Fp32 = 0,
    Fp16 = 1,
    /// The fp32 graph with an entropy calibrator (TensorRT 8.5-10.x).
    Int8Calibrated = 2,
    /// A Q/DQ graph.
    Int8Qdq = 3,
}

/// Where a TensorRT int8 engine gets its scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Int8Mode {
    /// The model's Q/DQ form (`model.qdq.onnx`): explicit quantization, TensorRT 8.5+.
    #[default]
    Qdq,
    /// The fp32 model with `calib.cache`, or calibration on `tensors/` when the cache is for
    /// another TensorRT (8.5-10.x only).
    Calibrated,
}

impl crate::named::Named for Int8Mode {
    const WHAT: &'static str = "TensorRT int8 mode";
    const ALL: &'static [Self] = &[Int8Mode::Qdq, Int8Mode::Calibrated];
    fn name(self) -> &'static str {
        match self {
            Int8Mode::Qdq => "qdq",
            Int8Mode::Calibrated => "calibrated",
        }
    }
    fn help(self) -> &'static str {
        match self {
            Int8Mode::Qdq => "the model's Q/DQ form (model.qdq.onnx): explicit quantization, TensorRT 8.5+",
            Int8Mode::Calibrated => {
                "the fp32 model with calib.cache, recalibrated from tensors/ if needed (8.5-10.x)"
            }
        }
    }
}
crate::impl_named_text!(Int8Mode);

/// How TensorRT engines are built and where they are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRtOptions {
    /// Engine cache folder (`--engine-cache`; default [`engine_cache::EngineCache::default_dir`]).
    pub engine_cache: Option<PathBuf>,
    /// Timing cache file (`--timing-cache`; default: in the engine cache, per TensorRT and GPU).
    pub timing_cache: Option<PathBuf>,
    /// Builder workspace limit in MiB (0: TensorRT's default).
    pub workspace_mib: u64,
    /// Builder optimisation level 0-5 (TensorRT 8.6+; `None`: TensorRT's default, 3).
    pub optimization_level: Option<u32>,
    /// Run on this DLA core, with GPU fallback (Jetson AGX/NX Orin, Xavier).
    pub dla_core: Option<u32>,
    pub int8: Int8Mode,
    /// Pin LayerNorm, Softmax and GELU to fp32 under fp16 and calibrated int8 (TensorRT < 11).
    pub keep_sensitive_fp32: bool,
    /// CUDA device.
    pub device: u32,
}

impl Default for TensorRtOptions {
    fn default() -> Self {
        TensorRtOptions {
            engine_cache: None,
            timing_cache: None,
            workspace_mib: 0,
            optimization_level: None,
            dla_core: None,
            int8: Int8Mode::Qdq,
            keep_sensitive_fp32: true,
            device: 0,
        }
    }
}

/// The folder TensorRT's libraries are looked for in first (`TENSORRT_LIB_DIR`).
pub const LIB_DIR_VAR: &str = "TENSORRT_LIB_DIR";

/// `Ok(what runs here)` or `Err(why TensorRT cannot)`.
pub fn probe() -> Result<String, String> {
    #[cfg(feature = "tensorrt")]
    {
        backend::library(0).map(|lib| backend::describe_library(lib.info()))
    }
    #[cfg(not(feature = "tensorrt"))]
    {
        Err("not built: rebuild with `--features tensorrt` on a machine with the TensorRT headers \
             (README, Jetson)"
            .into())
    }
}

/// A prebuilt engine file and the model metadata of its sidecar (`FILE.json`), if any.
pub fn open_engine_file(
    path: &std::path::Path,
    overrides: &crate::model::MetadataOverrides,
    device: u32,
) -> Result<(crate::model::SegmentationMetadata, Box<dyn Backend>), BackendError> {
    #[cfg(feature = "tensorrt")]
    {
        let (metadata, backend) = TensorRtBackend::open_engine_file(path, overrides, device)?;
        Ok((metadata, Box::new(backend)))
    }
    #[cfg(not(feature = "tensorrt"))]
    {
        let _ = (overrides, device);
        Err(BackendError::Unavailable {
            kind: BackendKind::TensorRt,
            reason: format!("{} runs only on TensorRT, which is {}", path.display(), probe().unwrap_err()),
        })
    }
}

/// The engine-cache file of `model` at `options.precision`: `Ok(Ok(path))` when an engine is
/// cached, `Ok(Err(path))` where it would go. `Err`: TensorRT cannot run here (the reason).
pub fn cache_entry(model: &OnnxModel, options: &BackendOptions) -> Result<Result<PathBuf, PathBuf>, String> {
    #[cfg(feature = "tensorrt")]
    {
        backend::cache_entry(model, options).map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "tensorrt"))]
    {
        let _ = (model, options);
        Err(probe().unwrap_err())
    }
}

/// Whether `path` names a serialized TensorRT engine (`.engine`, `.plan`, `.trt`).
pub fn is_engine_file(path: &std::path::Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "engine" | "plan" | "trt"))
}

/// The TensorRT backend for `model` (feature `tensorrt`; otherwise why not).
pub fn create(model: &OnnxModel, options: &BackendOptions) -> Result<Box<dyn Backend>, BackendError> {
    #[cfg(feature = "tensorrt")]
    {
        Ok(Box::new(TensorRtBackend::new(model, options)?))
    }
    #[cfg(not(feature = "tensorrt"))]
    {
        let _ = (model, options);
        Err(BackendError::Unavailable {
            kind: BackendKind::TensorRt,
            reason: format!("{}; use --backend cpu", probe().unwrap_err()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_decode_both_encodings() {
        assert_eq!(TrtVersion::from_int(8502), TrtVersion { major: 8, minor: 5, patch: 2 });
        assert_eq!(TrtVersion::from_int(100300), TrtVersion { major: 10, minor: 3, patch: 0 });
        assert_eq!(TrtVersion::from_int(110100).to_string(), "11.1.0");
        for v in [8502, 8602, 100300, 101300] {
            assert_eq!(TrtVersion::from_int(v).to_int(), v);
        }
    }
}
