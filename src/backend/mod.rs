//! Inference engines behind one trait.
//!
//! A [`Backend`] owns the network's input buffer (so an engine can place it where it wants:
//! pinned host memory for TensorRT, plain RAM for tract), runs the network, and exposes the
//! logits `[1, K, h, w]` as a flat f32 slice. [`create`] builds the one asked for by
//! [`BackendKind`]; `auto` walks the ladder TensorRT → CUDA → CPU and logs why each rung was
//! skipped.
//!
//! Built today: `cpu` (tract). `cuda` (tract-cuda) and `tensorrt` are later work behind cargo
//! features; [`availability`] says so instead of failing obscurely.

pub mod tract_cpu;
pub mod tract_ops;

use std::fmt;

use crate::model::OnnxModel;

/// Which engine runs the network. The names match `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The best available: TensorRT, then CUDA, then CPU.
    Auto,
    /// tract on the CPU (always built).
    Cpu,
    /// tract-cuda on an NVIDIA GPU (cargo feature `cuda`; not built yet).
    Cuda,
    /// TensorRT (cargo feature `tensorrt`; not built yet).
    #[value(name = "tensorrt")]
    #[serde(rename = "tensorrt")]
    TensorRt,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::TensorRt => "tensorrt",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to build a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendOptions {
    pub kind: BackendKind,
    /// Threads for the network (CPU backends). 0 = all cores.
    pub threads: usize,
    /// `(height, width)` of the network input: the model's static size, or `--input-size`.
    pub input_size: (usize, usize),
}

/// A backend that could not be built or failed to run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("backend {kind} is not available: {reason}")]
    Unavailable { kind: BackendKind, reason: String },
    #[error("{model}: the {engine} backend cannot load this model: {reason}")]
    Load { model: String, engine: &'static str, reason: String },
    #[error(
        "{model}: logits output `{output}` has shape {shape:?}; expected float32 [1, classes, h, w] \
         (pick another output with the semask.logits metadata key)"
    )]
    LogitsShape { model: String, output: String, shape: Vec<String> },
    #[error("the {engine} backend failed while running the network: {reason}")]
    Run { engine: &'static str, reason: String },
    #[error("the input has {got} values; the network takes {shape:?} = {} values", shape.iter().product::<usize>())]
    InputLength { shape: [usize; 4], got: usize },
}

/// An inference engine holding one loaded network.
pub trait Backend: Send {
    /// Which engine this is (never [`BackendKind::Auto`]).
    fn kind(&self) -> BackendKind;
    /// Engine, version and settings, for logs and reports (`tract 0.23.9, 2 threads`).
    fn describe(&self) -> String;
    /// `[1, 3, H, W]`.
    fn input_shape(&self) -> [usize; 4];
    /// `[1, K, h, w]`.
    fn logits_shape(&self) -> [usize; 4];
    /// The NCHW input buffer the pre-processor writes into before [`Backend::run`].
    fn input_mut(&mut self) -> &mut [f32];
    /// Runs the network on the current input.
    fn run(&mut self) -> Result<(), BackendError>;
    /// The logits of the last [`Backend::run`], `K * h * w` values in NCHW order.
    fn logits(&self) -> &[f32];
}

/// Whether a backend kind can be used in this build and on this machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Availability {
    pub kind: BackendKind,
    pub available: bool,
    pub detail: String,
}

/// Every concrete backend kind and whether it can run here.
pub fn availability() -> Vec<Availability> {
    vec![
        Availability {
            kind: BackendKind::TensorRt,
            available: false,
            detail: "not built: needs the `tensorrt` cargo feature and TensorRT (planned)".into(),
        },
        Availability {
            kind: BackendKind::Cuda,
            available: false,
            detail: "not built: needs the `cuda` cargo feature (planned)".into(),
        },
        Availability {
            kind: BackendKind::Cpu,
            available: true,
            detail: format!("tract {} on {} CPU threads", tract_cpu::TRACT_VERSION, default_threads()),
        },
    ]
}

/// Number of threads used when `--threads` is 0: every core this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Builds the backend `options.kind` asks for; `auto` takes the first available one.
pub fn create(model: &OnnxModel, options: &BackendOptions) -> Result<Box<dyn Backend>, BackendError> {
    let kind = match options.kind {
        BackendKind::Auto => {
            let mut chosen = BackendKind::Cpu;
            for rung in availability() {
                if rung.available {
                    chosen = rung.kind;
                    break;
                }
                log::info!("backend auto: skipping {}: {}", rung.kind, rung.detail);
            }
            chosen
        }
        other => other,
    };
    match kind {
        BackendKind::Cpu => Ok(Box::new(tract_cpu::TractCpuBackend::new(model, options)?)),
        other => {
            let reason =
                availability().into_iter().find(|a| a.kind == other).map(|a| a.detail).unwrap_or_default();
            Err(BackendError::Unavailable { kind: other, reason: format!("{reason}; use --backend cpu") })
        }
    }
}
