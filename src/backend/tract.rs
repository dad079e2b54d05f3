//! tract as a backend: on the CPU (`cpu`: multithreaded matrix products, our faster operators
//! from [`super::tract_ops`]) and, with the `cuda` feature, on an NVIDIA GPU through tract's own
//! CUDA runtime (`cuda`: tract-cuda, which loads the CUDA libraries at run time).
//!
//! Loading: parse the ONNX protobuf, fix the input to `[1, 3, H, W]`, keep only the logits output
//! (so `logits_up` / `sem_logits` of the official export are pruned and never computed), type
//! and optimise the graph, then plan it: on the CPU with a rayon executor of `threads` threads;
//! on CUDA with tract-cuda's runtime, from the graph *without* our CPU operators (they would force
//! round trips to the host).

use std::sync::Arc;

use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::{RunOptions, State};
use tract_onnx::tract_hir::internal::DimLike;

use super::{Backend, BackendError, BackendKind, BackendOptions, default_threads};
use crate::guard::catch_panic;
use crate::limits::MAX_TENSOR_BYTES;
use crate::model::OnnxModel;

/// The tract version this crate is built against (kept in step with Cargo.toml).
pub const TRACT_VERSION: &str = "0.23.9";

/// Where tract runs the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TractDevice {
    Cpu {
        threads: usize,
    },
    #[cfg(feature = "cuda")]
    Cuda,
}

/// tract on the CPU, or on CUDA.
pub struct TractBackend {
    state: Box<dyn State>,
    input: Arc<Tensor>,
    input_shape: [usize; 4],
    logits_shape: [usize; 4],
    logits: Option<TValue>,
    device: TractDevice,
    /// The thread pool the plan's operators split their work over (CPU, more than one thread).
    executor: Executor,
    /// The int8 file that runs, when not the model given.
    artifact: Option<String>,
}

impl std::fmt::Debug for TractBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractBackend")
            .field("input_shape", &self.input_shape)
            .field("logits_shape", &self.logits_shape)
            .field("device", &self.device)
            .finish()
    }
}

impl TractBackend {
    /// tract on the CPU with `options.threads` threads.
    pub fn new(model: &OnnxModel, options: &BackendOptions) -> Result<Self, BackendError> {
        let threads = if options.threads == 0 { default_threads() } else { options.threads };
        TractBackend::load(model, options, TractDevice::Cpu { threads })
    }

    /// tract-cuda on the first CUDA device. `Unavailable` (with tract-cuda's reason) where the
    /// driver or a CUDA library (cudart, nvrtc, cublas, cudnn) is missing.
    #[cfg(feature = "cuda")]
    pub fn new_cuda(model: &OnnxModel, options: &BackendOptions) -> Result<Self, BackendError> {
        cuda_runtime()?;
        TractBackend::load(model, options, TractDevice::Cuda)
    }

    fn load(model: &OnnxModel, options: &BackendOptions, device: TractDevice) -> Result<Self, BackendError> {
        let engine = match device {
            TractDevice::Cpu { .. } => "cpu (tract)",
            #[cfg(feature = "cuda")]
            TractDevice::Cuda => "cuda (tract-cuda)",
        };
        let load_err = |reason: String| BackendError::Load { model: model.name.clone(), engine, reason };
        let (h, w) = options.input_size;
        let input_shape = [1, 3, h, w];
        let logits_name = &model.metadata.logits_output.value;
        let with_cpu_ops = matches!(device, TractDevice::Cpu { .. });
        let typed = typed_model_for(model, input_shape, logits_name, with_cpu_ops).map_err(load_err)?;

        let fact = typed.output_fact(0).map_err(|e| load_err(format!("{e:#}")))?;
        let shape: Vec<Option<usize>> = fact.shape.iter().map(|d| d.to_usize().ok()).collect();
        let logits_shape = match (fact.datum_type, shape.as_slice()) {
            (DatumType::F32, [Some(1), Some(k), Some(lh), Some(lw)]) if *k > 0 => [1, *k, *lh, *lw],
            _ => {
                return Err(BackendError::LogitsShape {
                    model: model.name.clone(),
                    output: logits_name.clone(),
                    shape: fact.shape.iter().map(|d| d.to_string()).collect(),
                });
            }
        };

        let executor = match device {
            TractDevice::Cpu { threads } if threads > 1 => Executor::multithread(threads),
            _ => Executor::SingleThread,
        };
        let state = catch_panic(|| -> TractResult<Box<dyn State>> {
            match device {
                TractDevice::Cpu { .. } => {
                    let run_options = RunOptions { executor: Some(executor.clone()), ..Default::default() };
                    Ok(Box::new(optimized_plan(typed, &run_options)?.spawn()?))
                }
                #[cfg(feature = "cuda")]
                TractDevice::Cuda => {
                    let runtime = cuda_runtime().map_err(|e| anyhow::anyhow!("{e}"))?;
                    runtime.prepare_with_options(typed, &RunOptions::default())?.spawn()
                }
            }
        })
        .map_err(|panic| load_err(format!("tract failed while optimising it ({panic})")))?
        .map_err(|e| load_err(format!("{e:#}")))?;
        let input = Arc::new(Tensor::zero::<f32>(&input_shape).map_err(|e| load_err(format!("{e:#}")))?);
        log::debug!(
            "tract loaded {}: input {input_shape:?}, logits {logits_shape:?}, {device:?}",
            model.name
        );
        Ok(TractBackend {
            state,
            input,
            input_shape,
            logits_shape,
            logits: None,
            device,
            executor,
            artifact: None,
        })
    }

    /// Records which derived file (int8 form) this backend runs, for [`Backend::artifact`].
    pub fn with_artifact(mut self, artifact: Option<String>) -> Self {
        self.artifact = artifact;
        self
    }
}

/// Parses `model`, fixes its input, keeps only the `logits` output, types and declutters it, and
/// swaps in [`super::tract_ops`]. Also used by `info` to learn concrete output shapes.
///
/// tract runs under [`catch_panic`] (its importer can panic on hostile graphs), and every
/// tensor the typed graph would compute is checked against [`MAX_TENSOR_BYTES`] before any is
/// allocated.
pub fn typed_model(model: &OnnxModel, input_shape: [usize; 4], logits: &str) -> Result<TypedModel, String> {
    typed_model_for(model, input_shape, logits, true)
}

/// [`typed_model`], with our CPU operators or without them (for a GPU runtime).
fn typed_model_for(
    model: &OnnxModel,
    input_shape: [usize; 4],
    logits: &str,
    with_cpu_ops: bool,
) -> Result<TypedModel, String> {
    let typed = catch_panic(|| typed_model_unguarded(model, input_shape, logits, with_cpu_ops))
        .map_err(|panic| format!("tract failed while reading it ({panic})"))?
        .map_err(|e| format!("{e:#}"))?;
    check_tensor_sizes(&typed)?;
    Ok(typed)
}

fn typed_model_unguarded(
    model: &OnnxModel,
    input_shape: [usize; 4],
    logits: &str,
    with_cpu_ops: bool,
) -> TractResult<TypedModel> {
    // Declared output shapes of raw torch exports are symbolic placeholders; tract infers them.
    let mut onnx = tract_onnx::onnx().with_ignore_output_shapes(true);
    if with_cpu_ops {
        super::tract_rows::register_layer_norm(&mut onnx);
    }
    let dir = model.dir.as_deref().and_then(|d| d.to_str());
    let parsed = onnx.parse(&model.proto, dir)?;
    if !parsed.unresolved_inputs.is_empty() {
        tract_onnx::tract_hir::internal::bail!("unresolved graph inputs {:?}", parsed.unresolved_inputs);
    }
    let mut inference = parsed.model;
    inference.set_input_fact(0, f32::fact(input_shape).into())?;
    inference.select_outputs_by_name([logits])?;
    let mut typed = inference.into_typed()?.into_decluttered()?;
    if with_cpu_ops {
        let replaced = super::tract_ops::accelerate(&mut typed)?;
        log::debug!("{}: {replaced} nodes replaced by semask-edge's faster operators", model.name);
    }
    Ok(typed)
}

/// Refuses a graph that would compute a tensor larger than [`MAX_TENSOR_BYTES`] (a hostile
/// model, or a model fed an absurd input size), before anything is allocated.
fn check_tensor_sizes(typed: &TypedModel) -> Result<(), String> {
    for node in typed.nodes() {
        for (slot, output) in node.outputs.iter().enumerate() {
            let fact = &output.fact;
            let Some(shape) = fact.shape.as_concrete() else { continue };
            let bytes = shape
                .iter()
                .try_fold(fact.datum_type.size_of() as u64, |acc, &d| acc.checked_mul(d as u64))
                .unwrap_or(u64::MAX);
            if bytes > MAX_TENSOR_BYTES {
                return Err(format!(
                    "node {} (output {slot}) would compute a {:?} tensor of {:.1} GB, above the {} GB \
                     limit per tensor (a corrupt model, or an input size far too large)",
                    node.name,
                    shape,
                    bytes as f64 / 1e9,
                    MAX_TENSOR_BYTES >> 30
                ));
            }
        }
    }
    Ok(())
}

/// tract-cuda's runtime, checked: the driver and the CUDA libraries it loads must be present.
#[cfg(feature = "cuda")]
pub fn cuda_runtime() -> Result<&'static dyn tract_onnx::tract_core::runtime::Runtime, BackendError> {
    // The crate registers its runtime when linked.
    use tract_cuda as _;
    let unavailable = |reason: String| BackendError::Unavailable { kind: BackendKind::Cuda, reason };
    let runtime = tract_onnx::tract_core::runtime::runtime_for_name("cuda")
        .map_err(|e| unavailable(format!("{e:#}")))?
        .ok_or_else(|| unavailable("tract-cuda's runtime is not registered in this build".into()))?;
    catch_panic(|| runtime.check())
        .map_err(|panic| unavailable(format!("tract-cuda failed while probing CUDA ({panic})")))?
        .map_err(|e| unavailable(format!("{e:#}")))?;
    Ok(runtime)
}

/// Time spent in one kind of tract operator, per network run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OpTime {
    /// tract's operator name after optimisation (`OptMatMul`, `Softmax`, `Resize`…).
    pub op: String,
    /// Number of nodes of that operator in the optimised graph.
    pub nodes: usize,
    pub ms_per_run: f64,
}

/// Time spent in one node of the optimised graph, per network run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeTime {
    /// The node's name (from the ONNX node it came from, with tract's suffixes).
    pub name: String,
    /// tract's operator name after optimisation.
    pub op: String,
    /// What the operator says of itself (`Op::info`: shapes, kernels, fused steps), joined.
    pub info: String,
    /// The shape of its first output.
    pub output_shape: String,
    pub ms_per_run: f64,
}

impl TractBackend {
    /// Runs the network `runs` times on the current input, timing every node, and returns each
    /// node's time, largest first. Profiles of one model at 1 and 2 threads, compared node by
    /// node, show which operators do not split their work.
    pub fn profile_nodes(&mut self, runs: usize) -> Result<Vec<NodeTime>, BackendError> {
        let fail = |e: anyhow::Error| BackendError::Run { engine: "cpu (tract)", reason: format!("{e:#}") };
        let state = self
            .state
            .downcast_mut::<TypedSimpleState>()
            .ok_or_else(|| fail(anyhow::anyhow!("profiling needs tract's default runtime")))?;
        let mut per_node: std::collections::HashMap<usize, std::time::Duration> = Default::default();
        for _ in 0..runs.max(1) {
            let input = TValue::from_const(Arc::clone(&self.input));
            let per_node = &mut per_node;
            on_pool(&self.executor, || {
                state.run_plan_with_eval(tvec!(input), |ctx, op_state, node, inputs| {
                    let start = std::time::Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    *per_node.entry(node.id).or_default() += start.elapsed();
                    out
                })
            })
            .map_err(fail)?;
        }
        let mut nodes: Vec<NodeTime> = per_node
            .into_iter()
            .map(|(id, time)| {
                let node = state.model().node(id);
                NodeTime {
                    name: node.name.clone(),
                    op: node.op().name().to_string(),
                    info: node.op().info().map(|lines| lines.join("; ")).unwrap_or_default(),
                    output_shape: node
                        .outputs
                        .first()
                        .map(|o| format!("{:?}", o.fact.shape))
                        .unwrap_or_default(),
                    ms_per_run: time.as_secs_f64() * 1e3 / runs.max(1) as f64,
                }
            })
            .collect();
        nodes.sort_by(|a, b| b.ms_per_run.total_cmp(&a.ms_per_run));
        Ok(nodes)
    }
}

/// Node times ([`TractBackend::profile_nodes`]) summed per operator kind, largest first: where
/// the time goes when tract is slower than a peer.
pub fn ops_of(nodes: &[NodeTime]) -> Vec<OpTime> {
    let mut per_op: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
    for node in nodes {
        let entry = per_op.entry(&node.op).or_default();
        entry.0 += 1;
        entry.1 += node.ms_per_run;
    }
    let mut ops: Vec<OpTime> = per_op
        .into_iter()
        .map(|(op, (nodes, ms_per_run))| OpTime { op: op.to_string(), nodes, ms_per_run })
        .collect();
    ops.sort_by(|a, b| b.ms_per_run.total_cmp(&a.ms_per_run));
    ops
}

/// Runs `f` on a thread of `executor`'s pool (inline without one) and waits for it. Each
/// operator that splits its work enters the pool; from the caller's thread that is a hand-off
/// to a sleeping worker and back per operator, ~300 on tiny2, whose median went from 36-50 to
/// 29-37 ms on two threads (interleaved A/B, 3 pairs) once the whole plan ran on a worker: the
/// operators' own entries then run inline and only the second worker is woken.
fn on_pool<R: Send>(executor: &Executor, f: impl FnOnce() -> R + Send) -> R {
    match executor {
        Executor::MultiThread(pool) => pool.install(f),
        _ => f(),
    }
}

/// What tract's default CPU runtime does (optimise, then plan), plus our operators for what the
/// optimiser leaves generic.
fn optimized_plan(typed: TypedModel, options: &RunOptions) -> TractResult<Arc<TypedSimplePlan>> {
    let mut optimized = typed.into_optimized()?;
    let replaced = super::tract_ops::accelerate_optimized(&mut optimized)?;
    log::debug!("{replaced} generic broadcast operators replaced after optimisation");
    TypedSimplePlan::new_with_options(optimized, options)
}

impl Backend for TractBackend {
    fn kind(&self) -> BackendKind {
        match self.device {
            TractDevice::Cpu { .. } => BackendKind::Cpu,
            #[cfg(feature = "cuda")]
            TractDevice::Cuda => BackendKind::Cuda,
        }
    }

    fn describe(&self) -> String {
        match self.device {
            TractDevice::Cpu { threads } => format!("tract {TRACT_VERSION} cpu, {threads} threads"),
            #[cfg(feature = "cuda")]
            TractDevice::Cuda => format!("tract-cuda {TRACT_VERSION}"),
        }
    }

    fn artifact(&self) -> Option<String> {
        self.artifact.clone()
    }

    fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    fn logits_shape(&self) -> [usize; 4] {
        self.logits_shape
    }

    fn input_mut(&mut self) -> &mut [f32] {
        // The plan drops its reference to the input at the end of each run, so this does not
        // copy in steady state; if it ever were shared, make_mut would copy rather than alias.
        Arc::make_mut(&mut self.input)
            .to_plain_array_view_mut::<f32>()
            .ok()
            .and_then(|view| view.into_slice())
            .expect("input tensor is plain f32")
    }

    fn run(&mut self) -> Result<(), BackendError> {
        self.logits = None;
        let input = TValue::from_const(Arc::clone(&self.input));
        let fail = |reason: String| BackendError::Run { engine: "cpu (tract)", reason };
        let state = &mut self.state;
        let mut outputs = on_pool(&self.executor, || catch_panic(|| state.run(tvec!(input))))
            .map_err(|panic| fail(format!("tract panicked ({panic})")))?
            .map_err(|e| fail(format!("{e:#}")))?;
        self.logits = Some(outputs.remove(0));
        Ok(())
    }

    fn logits(&self) -> &[f32] {
        let logits = self.logits.as_ref().expect("logits() called before a successful run()");
        logits
            .try_as_plain_ram()
            .and_then(|view| view.as_slice::<f32>())
            .expect("logits are plain f32 (checked at load)")
    }
}
