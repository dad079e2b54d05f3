//! Inference engines behind one trait.
//!
//! A [`Backend`] owns the network's input buffer (so an engine can place it where it wants:
//! pinned host memory for TensorRT, plain RAM for tract), runs the network, and exposes the
//! logits `[1, K, h, w]` as a flat f32 slice. [`create`] builds the one asked for by
//! [`BackendKind`]; `auto` walks the ladder TensorRT → CUDA → CPU and logs why each rung was
//! skipped.
//!
//! - `cpu` ([`tract`]): tract, always built; fp32, and int8 through the model's QOperator
//!   form (`model.qop.onnx`).
//! - `tensorrt` ([`tensorrt`]): cargo feature `tensorrt`; fp32, fp16, int8 (Q/DQ or calibrated)
//!   engines, built once and cached.
//! - `cuda` ([`tract`] too): tract-cuda (cargo feature `cuda`), fp32, for GPUs without TensorRT.
//!
//! [`availability`] says for each whether it can run here, and why not.

pub mod tensorrt;
pub mod tract;
mod tract_gemm;
mod tract_i8;
pub mod tract_ops;
mod tract_rows;

use crate::calibration::{Artifact, Precision};
use crate::model::{MetadataOverrides, OnnxModel};
use crate::named::Named;

/// Which engine runs the network. The names match `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The best available: the device profile's ladder (TensorRT, then CUDA, then CPU).
    Auto,
    /// tract on the CPU (always built).
    Cpu,
    /// tract-cuda on an NVIDIA GPU (cargo feature `cuda`).
    Cuda,
    /// TensorRT (cargo feature `tensorrt`).
    #[serde(rename = "tensorrt")]
    TensorRt,
}

impl Named for BackendKind {
    const WHAT: &'static str = "backend";
    // The real backends fastest first, as a ladder lists them.
    const ALL: &'static [Self] =
        &[BackendKind::Auto, BackendKind::TensorRt, BackendKind::Cuda, BackendKind::Cpu];
    fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::TensorRt => "tensorrt",
        }
    }
    fn help(self) -> &'static str {
        match self {
            BackendKind::Auto => "the first backend of the device profile's ladder that starts here",
            BackendKind::Cpu => "tract on the CPU (always built)",
            BackendKind::Cuda => "tract-cuda on an NVIDIA GPU (cargo feature cuda)",
            BackendKind::TensorRt => "TensorRT on an NVIDIA GPU or Jetson (cargo feature tensorrt)",
        }
    }
}
crate::impl_named_text!(BackendKind);

/// How to build a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendOptions {
    pub kind: BackendKind,
    /// Threads for the network (CPU backends). 0 = all cores.
    pub threads: usize,
    /// `(height, width)` of the network input: the model's static size, or `--input-size`.
    pub input_size: (usize, usize),
    /// fp32; int8 runs the model's int8 form; fp16 needs TensorRT.
    pub precision: Precision,
    /// Whether `precision` must be met or may give way (a device profile's default).
    pub precision_policy: PrecisionPolicy,
    /// Engine building and caching (TensorRT only).
    pub tensorrt: tensorrt::TensorRtOptions,
    /// The order `auto` tries backends in (a device profile's ladder).
    pub ladder: Vec<BackendKind>,
}

/// How firmly [`BackendOptions::precision`] was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrecisionPolicy {
    /// `--precision`: that precision or an error.
    #[default]
    Exact,
    /// A device profile's default (int8 on an Orin, fp16 on a desktop GPU): a backend that cannot
    /// run it for this model (the CPU and fp16, a model without int8 form) runs the next of
    /// int8 → fp16 → fp32 it can, with a warning that says how to get the preferred one.
    Preferred,
}

impl PrecisionPolicy {
    /// The precisions to try, best first.
    fn candidates(self, preferred: Precision) -> Vec<Precision> {
        const DOWN: [Precision; 3] = [Precision::Int8, Precision::Fp16, Precision::Fp32];
        match self {
            PrecisionPolicy::Exact => vec![preferred],
            PrecisionPolicy::Preferred => DOWN.iter().copied().skip_while(|p| *p != preferred).collect(),
        }
    }
}

/// The `auto` ladder without a device profile.
pub const DEFAULT_LADDER: [BackendKind; 3] = [BackendKind::TensorRt, BackendKind::Cuda, BackendKind::Cpu];

impl BackendOptions {
    /// Options for `kind` at `input_size`, fp32, defaults elsewhere.
    pub fn new(kind: BackendKind, input_size: (usize, usize)) -> BackendOptions {
        BackendOptions {
            kind,
            threads: 0,
            input_size,
            precision: Precision::Fp32,
            precision_policy: PrecisionPolicy::Exact,
            tensorrt: tensorrt::TensorRtOptions::default(),
            ladder: DEFAULT_LADDER.to_vec(),
        }
    }
}

/// A backend that could not be built or failed to run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    #[error("backend {kind} is not available: {reason}")]
    Unavailable { kind: BackendKind, reason: String },
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
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
    /// The file that runs when it is not the model given: an int8 or fp16 form, a cached
    /// engine. Said once to the user.
    fn artifact(&self) -> Option<String> {
        None
    }
    /// The accelerator's own time for the last run, in ms (CUDA events), where it has one.
    fn device_ms(&self) -> Option<f64> {
        None
    }
    /// Facts for reports: versions, device, precision, engine file.
    fn properties(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// Whether a backend kind can be used in this build and on this machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Availability {
    pub kind: BackendKind,
    pub available: bool,
    pub detail: String,
}

/// Every concrete backend kind and whether it can run here, in the order `auto` tries them.
pub fn availability() -> Vec<Availability> {
    let tensorrt = tensorrt::probe();
    vec![
        Availability {
            kind: BackendKind::TensorRt,
            available: tensorrt.is_ok(),
            detail: tensorrt.unwrap_or_else(|e| e),
        },
        cuda_availability(),
        Availability {
            kind: BackendKind::Cpu,
            available: true,
            detail: format!("tract {} on {} CPU threads", tract::TRACT_VERSION, default_threads()),
        },
    ]
}

fn cuda_availability() -> Availability {
    #[cfg(feature = "cuda")]
    let (available, detail) = match tract::cuda_runtime() {
        Ok(_) => (true, format!("tract-cuda {} (CUDA driver and libraries found)", tract::TRACT_VERSION)),
        Err(BackendError::Unavailable { reason, .. }) => (false, reason),
        Err(e) => (false, e.to_string()),
    };
    #[cfg(not(feature = "cuda"))]
    let (available, detail) = (false, "not built: needs the `cuda` cargo feature (tract-cuda)".to_string());
    Availability { kind: BackendKind::Cuda, available, detail }
}

/// Number of threads used when `--threads` is 0: every core this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Builds the backend `options.kind` asks for. `auto` walks [`availability`]: one log line per
/// rung skipped (with the reason), and a rung that cannot take this model at this precision
/// (TensorRT failing to build, the CPU asked for fp16) passes to the next with a warning.
pub fn create(model: &OnnxModel, options: &BackendOptions) -> Result<Box<dyn Backend>, BackendError> {
    if options.kind != BackendKind::Auto {
        return create_at_best_precision(options.kind, model, options);
    }
    let mut reasons = Vec::new();
    let rungs = availability();
    for rung in options.ladder.iter().filter_map(|kind| rungs.iter().find(|r| r.kind == *kind).cloned()) {
        if !rung.available {
            log::info!("backend auto: skipping {}: {}", rung.kind, rung.detail);
            reasons.push(format!("{}: {}", rung.kind, rung.detail));
            continue;
        }
        match create_at_best_precision(rung.kind, model, options) {
            Ok(backend) => return Ok(backend),
            Err(e @ BackendError::Unavailable { .. }) => {
                log::info!("backend auto: {e}; trying the next backend");
                reasons.push(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    Err(BackendError::Unavailable {
        kind: BackendKind::Auto,
        reason: format!("no backend can run {} at {}: {}", model.name, options.precision, reasons.join("; ")),
    })
}

/// [`create_kind`] at `options.precision`, or, where the policy lets it give way, at the best
/// precision below it that `kind` can run for this model.
fn create_at_best_precision(
    kind: BackendKind,
    model: &OnnxModel,
    options: &BackendOptions,
) -> Result<Box<dyn Backend>, BackendError> {
    let mut first_error = None;
    for precision in options.precision_policy.candidates(options.precision) {
        let attempt = BackendOptions { precision, ..options.clone() };
        match create_kind(kind, model, &attempt) {
            Ok(backend) => {
                if let Some(e) = first_error {
                    log::warn!(
                        "{kind} cannot run {} at {} (the device profile's precision): {e}; running {precision} \
                         (--precision {} to insist)",
                        model.name,
                        options.precision,
                        options.precision
                    );
                }
                return Ok(backend);
            }
            // Not available at this precision, or its int8/fp16 form is missing: try the next.
            Err(e @ (BackendError::Unavailable { .. } | BackendError::Model(_))) => {
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(first_error.expect("at least one precision is tried"))
}

fn create_kind(
    kind: BackendKind,
    model: &OnnxModel,
    options: &BackendOptions,
) -> Result<Box<dyn Backend>, BackendError> {
    match kind {
        BackendKind::Cpu => {
            let int8_form = match options.precision {
                Precision::Fp32 => None,
                Precision::Int8 if model.precision() == Precision::Int8 => None, // given as int8
                Precision::Int8 => Some(model.artifact(Artifact::QOperator, &MetadataOverrides::default())?),
                Precision::Fp16 => {
                    return Err(BackendError::Unavailable {
                        kind,
                        reason:
                            "the CPU backend runs fp32 and int8; fp16 needs TensorRT (--backend tensorrt)"
                                .into(),
                    });
                }
            };
            let backend = tract::TractBackend::new(int8_form.as_ref().unwrap_or(model), options)?;
            Ok(Box::new(backend.with_artifact(int8_form.map(|m| m.name))))
        }
        BackendKind::TensorRt => tensorrt::create(model, options),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => match options.precision {
            Precision::Fp32 => Ok(Box::new(tract::TractBackend::new_cuda(model, options)?)),
            other => Err(BackendError::Unavailable {
                kind,
                reason: format!("tract-cuda runs fp32 here, not {other}; use TensorRT for fp16 and int8"),
            }),
        },
        other => {
            let reason =
                availability().into_iter().find(|a| a.kind == other).map(|a| a.detail).unwrap_or_default();
            Err(BackendError::Unavailable { kind: other, reason: format!("{reason}; use --backend cpu") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preferred_precision_gives_way_downwards_only() {
        use Precision::*;
        assert_eq!(PrecisionPolicy::Preferred.candidates(Int8), [Int8, Fp16, Fp32]);
        assert_eq!(PrecisionPolicy::Preferred.candidates(Fp16), [Fp16, Fp32]);
        assert_eq!(PrecisionPolicy::Preferred.candidates(Fp32), [Fp32]);
        assert_eq!(PrecisionPolicy::Exact.candidates(Int8), [Int8]);
    }
}
