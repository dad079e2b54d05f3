//! [`TensorRtBackend`]: from a model and a precision to a running engine.
//!
//! 1. The graph for the precision ([`Recipe`]): fp32 and, up to TensorRT 10.x, fp16 build the
//!    model itself (fp16 with the builder flag, LayerNorm/Softmax/GELU pinned to fp32); from 11.0
//!    fp16 needs the model's fp16 graph (`model.fp16.onnx`). int8 builds the Q/DQ graph
//!    (`model.qdq.onnx`), or with `--trt-int8 calibrated` (8.5-10.x) the fp32 graph with the
//!    model's `calib.cache`, recalibrating from `tensors/` when the cache is for another
//!    TensorRT version.
//! 2. The engine: from the cache when its key matches ([`super::engine_cache`]), else built
//!    (minutes on a Jetson), stored and loaded.
//! 3. Its tensors are checked: one input `[1, 3, H, W]` of the model's size, the logits
//!    `[1, K, h, w]`, each fp32 or fp16.
//!
//! Running copies nothing on our side for fp32 tensors: the pre-processor writes straight into
//! the engine's pinned input buffer and the post-processor reads the pinned logits (mapped, not
//! copied, on a Jetson). fp16 tensors are converted in place into reused buffers.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use half::slice::HalfFloatSliceExt;

use super::engine_cache::{BuilderSettings, EngineCache, EngineKey, EngineOrigin, Sidecar};
use super::ffi::{BuildRequest, CalibrationFeed, DataType, Engine, Library, TensorDesc, TrtInfo};
use super::{BuildPrecision, Int8Mode, LIB_DIR_VAR, TensorRtOptions};
use crate::backend::{Backend, BackendError, BackendKind, BackendOptions};
use crate::calibration::{Artifact, CacheCandidate, CalibrationBatches, CalibrationPlan, Precision};
use crate::model::{MetadataOverrides, ModelError, ModelOrigin, OnnxModel, SegmentationMetadata};

const ENGINE: &str = "tensorrt";

static LIBRARY: OnceLock<Result<Arc<Library>, String>> = OnceLock::new();

/// TensorRT loaded once per process (`TENSORRT_LIB_DIR` first, then the loader's path), on
/// CUDA device `device` (the first call's device is the process's).
pub fn library(device: u32) -> Result<Arc<Library>, String> {
    LIBRARY
        .get_or_init(|| {
            let dir = std::env::var_os(LIB_DIR_VAR).map(PathBuf::from);
            Library::open(dir.as_deref(), device as i32).map(Arc::new)
        })
        .clone()
}

/// `TensorRT 10.3.0 (libnvinfer.so.10) on Orin (sm 8.7, integrated), CUDA 12.6`.
pub fn describe_library(info: &TrtInfo) -> String {
    let (cc_major, cc_minor) = info.compute_capability;
    format!(
        "TensorRT {} ({}) on {} (sm {cc_major}.{cc_minor}{}{}), CUDA {}.{}",
        info.library,
        info.library_path,
        info.gpu,
        if info.integrated { ", integrated" } else { "" },
        if info.dla_cores > 0 { format!(", {} DLA cores", info.dla_cores) } else { String::new() },
        info.cuda_runtime / 1000,
        (info.cuda_runtime % 1000) / 10
    )
}

/// What an engine is built from.
struct Recipe {
    /// The graph TensorRT parses (the model, or its Q/DQ or fp16 form).
    graph: OnnxModel,
    bytes: Cow<'static, [u8]>,
    precision: BuildPrecision,
    /// Calibrated int8: the cache to use, or the frames to calibrate on.
    calibration: Option<CalibrationPlan>,
}

fn unavailable(reason: String) -> BackendError {
    BackendError::Unavailable { kind: BackendKind::TensorRt, reason }
}

/// True for an explicit Q/DQ graph (what TensorRT quantizes from): `DequantizeLinear` nodes and
/// no integer operators (the QOperator form quantizes too, for `MatMulInteger`/`ConvInteger`).
fn has_qdq(model: &OnnxModel) -> bool {
    let ops = || model.proto.graph.iter().flat_map(|g| &g.node).map(|n| n.op_type.as_str());
    let integer = ["MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"];
    ops().any(|op| op == "DequantizeLinear") && !ops().any(|op| integer.contains(&op))
}

fn recipe(model: &OnnxModel, options: &BackendOptions, info: &TrtInfo) -> Result<Recipe, BackendError> {
    let none = MetadataOverrides::default();
    let plain = |graph: &OnnxModel, precision| -> Result<Recipe, BackendError> {
        Ok(Recipe { bytes: graph.file_bytes()?, graph: graph.clone(), precision, calibration: None })
    };
    let strongly_typed = info.library.major >= 11;
    match (options.precision, model.precision()) {
        (_, Precision::Int8) if has_qdq(model) => plain(model, BuildPrecision::Int8Qdq),
        (_, Precision::Int8) => Err(unavailable(format!(
            "{} is tract's QOperator int8 form, which TensorRT does not run; give the fp32 model or its \
             model.qdq.onnx",
            model.name
        ))),
        (Precision::Fp32, _) => plain(model, BuildPrecision::Fp32),
        // An fp16 graph is fp16 on every version; 11.0 made it the only way.
        (Precision::Fp16, Precision::Fp16) => plain(model, BuildPrecision::Fp16),
        (Precision::Fp16, _) if strongly_typed => {
            let fp16 = model.artifact(Artifact::Fp16, &none).map_err(|e| {
                unavailable(format!("TensorRT {} builds fp16 only from an fp16 graph: {e}", info.library))
            })?;
            plain(&fp16, BuildPrecision::Fp16)
        }
        (Precision::Fp16, _) => plain(model, BuildPrecision::Fp16),
        (Precision::Int8, _) => match options.tensorrt.int8 {
            Int8Mode::Qdq => {
                let qdq = model.artifact(Artifact::Qdq, &none)?;
                plain(&qdq, BuildPrecision::Int8Qdq)
            }
            Int8Mode::Calibrated if strongly_typed => Err(unavailable(format!(
                "TensorRT {} removed calibrated int8 (11.0); use --trt-int8 qdq",
                info.library
            ))),
            Int8Mode::Calibrated => {
                let calibration = plan_calibration(model, options, info)?;
                Ok(Recipe {
                    bytes: model.file_bytes()?,
                    graph: model.clone(),
                    precision: BuildPrecision::Int8Calibrated,
                    calibration: Some(calibration),
                })
            }
        },
    }
}

/// The recalibrated cache this runtime wrote for `model` and TensorRT `version`.
fn recalibrated_cache(options: &TensorRtOptions, model_sha256: &str, version: i32) -> PathBuf {
    cache_dir(options).join(format!("calib-{}-{version}.cache", &model_sha256[..16]))
}

fn cache_dir(options: &TensorRtOptions) -> PathBuf {
    options.engine_cache.clone().unwrap_or_else(EngineCache::default_dir)
}

fn plan_calibration(
    model: &OnnxModel,
    options: &BackendOptions,
    info: &TrtInfo,
) -> Result<CalibrationPlan, BackendError> {
    let running = info.library.to_int();
    let sha = crate::model::sha256_hex(&model.file_bytes()?);
    let recalibrated = recalibrated_cache(&options.tensorrt, &sha, running);
    let recalibrated = CacheCandidate::File(recalibrated);
    let (caches, tensors) = match &model.origin {
        ModelOrigin::File(path) => (
            std::iter::once(recalibrated)
                .chain(
                    crate::calibration::artifact_candidates(path, Artifact::Cache).map(CacheCandidate::File),
                )
                .collect::<Vec<_>>(),
            crate::calibration::find_artifact(path, Artifact::Tensors).ok(),
        ),
        // The binary carries the cache; the frames are on disk.
        ModelOrigin::Builtin(_) => {
            let carried = CacheCandidate::Bytes {
                name: "the built-in calib.cache".into(),
                bytes: crate::model::BUILTIN_CALIBRATION_CACHE.to_vec(),
            };
            // A checkout's calibration/ folder, or where the .deb package installs it.
            let tensors = ["calibration", "/usr/share/semask-edge/calibration"]
                .iter()
                .map(|root| Path::new(root).join("semask-tiny-synth/tensors"))
                .find(|t| t.is_dir());
            (vec![recalibrated, carried], tensors)
        }
    };
    Ok(crate::calibration::plan_calibration(&model.name, &caches, tensors.as_deref(), running)
        .map_err(ModelError::from)?)
}

/// Feeds TensorRT's calibrator from Rust.
struct Feed {
    cache: Option<Vec<u8>>,
    batches: Option<CalibrationBatches>,
    input_count: usize,
    written: Option<Vec<u8>>,
    error: Option<String>,
}

impl CalibrationFeed for Feed {
    fn input_count(&self) -> usize {
        self.input_count
    }

    fn next_batch(&mut self, input: &mut [f32]) -> bool {
        let Some(batches) = self.batches.as_mut() else { return false };
        match batches.next_into(input) {
            Ok(more) => more,
            Err(e) => {
                self.error = Some(e.to_string());
                false
            }
        }
    }

    fn cache(&self) -> Option<&[u8]> {
        self.cache.as_deref()
    }

    fn store_cache(&mut self, bytes: &[u8]) {
        self.written = Some(bytes.to_vec());
    }
}

/// Which engine tensor is which, and how it is exchanged.
struct Io {
    index: usize,
    dtype: DataType,
    /// Element count.
    len: usize,
    /// fp16 tensors: the f32 side.
    staging: Vec<f32>,
}

impl Io {
    fn new(index: usize, desc: &TensorDesc) -> Io {
        let len = desc.dims.iter().map(|&d| d as usize).product();
        let staging = if desc.dtype == DataType::F16 { vec![0.0; len] } else { Vec::new() };
        Io { index, dtype: desc.dtype, len, staging }
    }
}

/// TensorRT on an NVIDIA GPU.
pub struct TensorRtBackend {
    engine: Engine,
    input: Io,
    logits: Io,
    input_shape: [usize; 4],
    logits_shape: [usize; 4],
    describe: String,
    artifact: Option<String>,
    gpu_ms: Option<f64>,
    properties: Vec<(&'static str, String)>,
}

/// Everything decided before an engine is looked up or built.
struct EnginePlan {
    lib: Arc<Library>,
    recipe: Recipe,
    key: EngineKey,
    cache: EngineCache,
    stem: String,
}

fn plan_engine(model: &OnnxModel, options: &BackendOptions) -> Result<EnginePlan, BackendError> {
    let trt = &options.tensorrt;
    let lib = library(trt.device).map_err(|r| unavailable(format!("{r}; use --backend cpu")))?;
    let info = lib.info().clone();
    let recipe = recipe(model, options, &info)?;
    let (h, w) = options.input_size;
    let calibration_sha256 = recipe.calibration.as_ref().map(|plan| match plan {
        CalibrationPlan::UseCache { bytes, .. } => crate::model::sha256_hex(bytes),
        CalibrationPlan::Recalibrate { tensors, .. } => crate::model::sha256_hex(
            &std::fs::read(tensors.join(crate::calibration::MANIFEST_FILE)).unwrap_or_default(),
        ),
    });
    let key = EngineKey {
        model_sha256: crate::model::sha256_hex(&recipe.bytes),
        calibration_sha256,
        tensorrt: info.library.to_string(),
        gpu: info.gpu.clone(),
        compute_capability: format!("{}.{}", info.compute_capability.0, info.compute_capability.1),
        precision: recipe.precision,
        input_shape: [1, 3, h, w],
        builder: BuilderSettings {
            workspace_mib: trt.workspace_mib,
            optimization_level: trt.optimization_level,
            dla_core: trt.dla_core,
            keep_sensitive_fp32: trt.keep_sensitive_fp32,
            output: model.metadata.logits_output.value.clone(),
        },
    };
    let stem = match &model.origin {
        ModelOrigin::File(p) => p.file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned()),
        ModelOrigin::Builtin(_) => "semask-tiny-synth".into(),
    };
    Ok(EnginePlan { lib, recipe, key, cache: EngineCache::new(cache_dir(trt)), stem })
}

/// The cached engine `model` would run at `options.precision`, without building it: `Ok(Ok(path))`
/// when cached, `Ok(Err(path))` where it would be written. `Err` when TensorRT cannot run here.
pub fn cache_entry(
    model: &OnnxModel,
    options: &BackendOptions,
) -> Result<Result<PathBuf, PathBuf>, BackendError> {
    let plan = plan_engine(model, options)?;
    let (path, _) = plan.cache.paths(&plan.key, &plan.stem);
    Ok(match plan.cache.lookup(&plan.key, &plan.stem) {
        super::engine_cache::Lookup::Hit(_) => Ok(path),
        _ => Err(path),
    })
}

impl TensorRtBackend {
    /// The engine for `model` at `options.precision`, from the cache or built now.
    pub fn new(model: &OnnxModel, options: &BackendOptions) -> Result<TensorRtBackend, BackendError> {
        let EnginePlan { lib, recipe, key, cache, stem } = plan_engine(model, options)?;
        let info = lib.info().clone();
        let (h, w) = options.input_size;
        let build = || build(&lib, &recipe, &key, options, model, &cache);
        let (engine, origin) =
            cache.load_or_build(&key, &stem, build, |plan| lib.load(plan)).map_err(|reason| {
                BackendError::Load { model: recipe.graph.name.clone(), engine: ENGINE, reason }
            })?;
        let precision = match recipe.precision {
            BuildPrecision::Fp32 => "fp32",
            BuildPrecision::Fp16 => "fp16",
            BuildPrecision::Int8Qdq => "int8 (Q/DQ)",
            BuildPrecision::Int8Calibrated => "int8 (calibrated)",
        };
        let logits_name = &key.builder.output;
        let mut backend =
            TensorRtBackend::from_engine(engine, Some(logits_name), &recipe.graph.name, &info, precision)?;
        if backend.input_shape != [1, 3, h, w] {
            return Err(BackendError::Load {
                model: recipe.graph.name.clone(),
                engine: ENGINE,
                reason: format!(
                    "the engine's input is {:?}, the model's [1, 3, {h}, {w}]",
                    backend.input_shape
                ),
            });
        }
        let what = match &origin {
            EngineOrigin::Cached(p) => format!("cached engine {}", p.display()),
            EngineOrigin::Built(p) => format!("engine {} (built now, cached)", p.display()),
        };
        backend.artifact = Some(format!("{what}, from {}", recipe.graph.name));
        backend.properties.push(("engine", origin.path().display().to_string()));
        Ok(backend)
    }

    /// A prebuilt engine file (ours from `build-engine`, or `trtexec --saveEngine`'s) with the
    /// metadata of its sidecar (`FILE.json`, when there is one and it matches the engine) under
    /// `overrides`.
    pub fn open_engine_file(
        path: &Path,
        overrides: &MetadataOverrides,
        device: u32,
    ) -> Result<(SegmentationMetadata, TensorRtBackend), BackendError> {
        let lib =
            library(device).map_err(|r| unavailable(format!("{r}; an engine file runs only on TensorRT")))?;
        let name = path.display().to_string();
        let load_err = |reason: String| BackendError::Load { model: name.clone(), engine: ENGINE, reason };
        let sidecar = super::engine_cache::sidecar_path(path);
        let (props, plan) = if sidecar.exists() {
            let (side, plan) = super::engine_cache::read_checked(path, &sidecar).map_err(load_err)?;
            (side.metadata, plan)
        } else {
            let mut plan = Vec::new();
            crate::files::read_input(path, MAX_ENGINE_BYTES, &mut plan)
                .map_err(|e| load_err(e.to_string()))?;
            (Default::default(), plan)
        };
        let engine = lib.load(&plan).map_err(load_err)?;
        let outputs: Vec<String> =
            engine.tensors().iter().filter(|t| !t.is_input).map(|t| t.name.clone()).collect();
        let metadata = SegmentationMetadata::from_props(&props, &outputs, overrides)
            .map_err(|error| ModelError::Metadata { name: name.clone(), error })?;
        let mut backend = TensorRtBackend::from_engine(
            engine,
            Some(&metadata.logits_output.value),
            &name,
            lib.info(),
            "as built",
        )?;
        backend.properties.push(("engine", name));
        Ok((metadata, backend))
    }

    fn from_engine(
        engine: Engine,
        logits_name: Option<&str>,
        model: &str,
        info: &TrtInfo,
        precision: &str,
    ) -> Result<TensorRtBackend, BackendError> {
        let load_err =
            |reason: String| BackendError::Load { model: model.to_string(), engine: ENGINE, reason };
        let tensors = engine.tensors().to_vec();
        let inputs: Vec<usize> = (0..tensors.len()).filter(|&i| tensors[i].is_input).collect();
        let outputs: Vec<usize> = (0..tensors.len()).filter(|&i| !tensors[i].is_input).collect();
        let [input] = inputs[..] else {
            return Err(load_err(format!(
                "the engine has {} inputs; semask-edge feeds one image",
                inputs.len()
            )));
        };
        let logits = logits_name
            .and_then(|n| outputs.iter().copied().find(|&i| tensors[i].name == n))
            .or_else(|| outputs.iter().copied().find(|&i| tensors[i].name == "logits"))
            .or_else(|| outputs.first().copied())
            .ok_or_else(|| load_err("the engine has no output".into()))?;
        let shape4 = |t: &TensorDesc, what: &str| -> Result<[usize; 4], BackendError> {
            let ok_type = matches!(t.dtype, DataType::F32 | DataType::F16);
            match (ok_type, t.dims.as_slice()) {
                (true, [1, c, h, w]) if *c > 0 && *h > 0 && *w > 0 => {
                    Ok([1, *c as usize, *h as usize, *w as usize])
                }
                _ => Err(load_err(format!(
                    "{what} `{}` is {:?} {:?}; expected fp32 or fp16 [1, {}, h, w]",
                    t.name,
                    t.dtype,
                    t.dims,
                    if what == "input" { "3" } else { "classes" }
                ))),
            }
        };
        let input_shape = shape4(&tensors[input], "input")?;
        if input_shape[1] != 3 {
            return Err(load_err(format!(
                "the input `{}` has {} channels, not 3",
                tensors[input].name, input_shape[1]
            )));
        }
        let logits_shape = shape4(&tensors[logits], "logits")?;
        let describe = format!(
            "tensorrt {} on {} (sm {}.{}), {precision}",
            info.library, info.gpu, info.compute_capability.0, info.compute_capability.1
        );
        let properties = vec![
            ("tensorrt", info.library.to_string()),
            ("gpu", info.gpu.clone()),
            ("compute_capability", format!("{}.{}", info.compute_capability.0, info.compute_capability.1)),
            ("precision", precision.to_string()),
        ];
        Ok(TensorRtBackend {
            input: Io::new(input, &tensors[input]),
            logits: Io::new(logits, &tensors[logits]),
            engine,
            input_shape,
            logits_shape,
            describe,
            artifact: None,
            gpu_ms: None,
            properties,
        })
    }
}

/// Largest engine file read.
const MAX_ENGINE_BYTES: u64 = 8 << 30;

/// Builds the engine of `recipe` (the cache's builder); keeps the timing cache and, for a
/// recalibration, the new calibration cache, beside the engines.
fn build(
    lib: &Library,
    recipe: &Recipe,
    key: &EngineKey,
    options: &BackendOptions,
    model: &OnnxModel,
    cache: &EngineCache,
) -> Result<(Vec<u8>, Sidecar), String> {
    let trt = &options.tensorrt;
    let info = lib.info();
    let gpu: String = info.gpu.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let timing_path = trt
        .timing_cache
        .clone()
        .unwrap_or_else(|| cache.dir().join(format!("timing-{}-{gpu}.cache", info.library)));
    let mut timing_in = Vec::new();
    let timing_in = crate::files::read_input(&timing_path, 1 << 30, &mut timing_in).ok().map(|_| timing_in);
    let (h, w) = options.input_size;
    let spec = model.metadata.preproc_spec(h, w);
    let mut feed = match &recipe.calibration {
        None => None,
        Some(CalibrationPlan::UseCache { bytes, path }) => {
            log::info!("int8 calibration from {}", path.display());
            Some(Feed {
                cache: Some(bytes.clone()),
                batches: None,
                input_count: 3 * h * w,
                written: None,
                error: None,
            })
        }
        Some(CalibrationPlan::Recalibrate { tensors, stale }) => {
            log::warn!("{stale}: calibrating again on {} (this takes a while once)", tensors.display());
            let batches = CalibrationBatches::open(tensors, &spec).map_err(|e| e.to_string())?;
            Some(Feed {
                cache: None,
                batches: Some(batches),
                input_count: 3 * h * w,
                written: None,
                error: None,
            })
        }
    };
    log::warn!(
        "building a TensorRT {} engine for {} ({}); minutes on a Jetson, once: it is cached in {}",
        options.precision,
        recipe.graph.name,
        describe_library(info),
        cache.dir().display()
    );
    let started = Instant::now();
    let request = BuildRequest {
        precision: recipe.precision,
        workspace_bytes: trt.workspace_mib << 20,
        optimization_level: trt.optimization_level,
        dla_core: trt.dla_core,
        keep_sensitive_fp32: trt.keep_sensitive_fp32,
        timing_cache: timing_in.as_deref(),
        keep_output: &key.builder.output,
    };
    let result = lib.build(
        &recipe.bytes,
        recipe.graph.path(),
        &request,
        feed.as_mut().map(|f| f as &mut dyn CalibrationFeed),
    );
    if let Some(error) = feed.as_ref().and_then(|f| f.error.clone()) {
        return Err(format!("calibration: {error}"));
    }
    let (plan, timing_out) = result?;
    let build_seconds = started.elapsed().as_secs_f64();
    log::info!("TensorRT engine built in {build_seconds:.1} s ({} MB)", plan.len() >> 20);
    if !timing_out.is_empty() {
        if let Err(e) = std::fs::create_dir_all(cache.dir())
            .and_then(|_| crate::files::write_atomically(&timing_path, &timing_out))
        {
            log::warn!("cannot keep the timing cache {}: {e}", timing_path.display());
        }
    }
    if let Some(written) = feed.and_then(|f| f.written) {
        let path = recalibrated_cache(
            trt,
            &crate::model::sha256_hex(&model.file_bytes().map_err(|e| e.to_string())?),
            info.library.to_int(),
        );
        match crate::files::write_atomically(&path, &written) {
            Ok(()) => log::info!("new calibration cache {}", path.display()),
            Err(e) => log::warn!("cannot keep the new calibration cache {}: {e}", path.display()),
        }
    }
    let sidecar = Sidecar {
        key: key.clone(),
        engine_sha256: crate::model::sha256_hex(&plan),
        engine_bytes: plan.len() as u64,
        model: recipe.graph.name.clone(),
        metadata: model.metadata.all_props.clone(),
        built_by: format!("semask-edge {}", env!("CARGO_PKG_VERSION")),
        build_seconds,
    };
    Ok((plan, sidecar))
}

impl Backend for TensorRtBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::TensorRt
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    fn logits_shape(&self) -> [usize; 4] {
        self.logits_shape
    }

    fn input_mut(&mut self) -> &mut [f32] {
        match self.input.dtype {
            DataType::F32 => {
                let ptr = self.engine.host_buffer(self.input.index) as *mut f32;
                // SAFETY: the engine's pinned buffer holds `len` f32 (checked at load), is
                // page-aligned, lives as long as the engine, and `&mut self` makes this the only
                // reference to it until the next call.
                unsafe { std::slice::from_raw_parts_mut(ptr, self.input.len) }
            }
            _ => &mut self.input.staging,
        }
    }

    fn run(&mut self) -> Result<(), BackendError> {
        if self.input.dtype == DataType::F16 {
            let ptr = self.engine.host_buffer(self.input.index) as *mut half::f16;
            // SAFETY: as in `input_mut`, for `len` f16 values.
            let device_side = unsafe { std::slice::from_raw_parts_mut(ptr, self.input.len) };
            device_side.convert_from_f32_slice(&self.input.staging);
        }
        let gpu_ms = self.engine.run().map_err(|reason| BackendError::Run { engine: ENGINE, reason })?;
        self.gpu_ms = (gpu_ms >= 0.0).then_some(gpu_ms as f64);
        if self.logits.dtype == DataType::F16 {
            let ptr = self.engine.host_buffer(self.logits.index) as *const half::f16;
            // SAFETY: as in `input_mut`; the run has completed (the stream was synchronised).
            let device_side = unsafe { std::slice::from_raw_parts(ptr, self.logits.len) };
            device_side.convert_to_f32_slice(&mut self.logits.staging);
        }
        Ok(())
    }

    fn logits(&self) -> &[f32] {
        match self.logits.dtype {
            DataType::F32 => {
                let ptr = self.engine.host_buffer(self.logits.index) as *const f32;
                // SAFETY: as in `input_mut`, read-only while `&self` is held.
                unsafe { std::slice::from_raw_parts(ptr, self.logits.len) }
            }
            _ => &self.logits.staging,
        }
    }

    fn artifact(&self) -> Option<String> {
        self.artifact.clone()
    }

    fn device_ms(&self) -> Option<f64> {
        self.gpu_ms
    }

    fn properties(&self) -> Vec<(&'static str, String)> {
        self.properties.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tensorrt::TrtVersion;

    fn info(version: i32) -> TrtInfo {
        TrtInfo {
            headers: TrtVersion::from_int(version),
            library: TrtVersion::from_int(version),
            library_path: "libnvinfer.so".into(),
            onnx_parser: true,
            cuda_runtime: 12060,
            cuda_driver: 12060,
            device: 0,
            gpu: "Orin".into(),
            compute_capability: (8, 7),
            integrated: true,
            dla_cores: 2,
            total_memory: 8 << 30,
        }
    }

    fn options(precision: Precision, int8: Int8Mode) -> BackendOptions {
        let mut o = BackendOptions::new(BackendKind::TensorRt, (256, 512));
        o.precision = precision;
        o.tensorrt.int8 = int8;
        o.tensorrt.engine_cache = Some(std::env::temp_dir().join("semask-edge-recipe-test"));
        o
    }

    /// The graph and build mode each precision takes, on TensorRT 8.5, 10.3 and 11.1.
    #[test]
    fn each_precision_builds_the_right_graph_on_each_version() {
        let model = OnnxModel::builtin(&Default::default()).unwrap();
        let recipe_for = |precision, int8, version| recipe(&model, &options(precision, int8), &info(version));
        for version in [8502, 100300, 110100] {
            let r = recipe_for(Precision::Fp32, Int8Mode::Qdq, version).unwrap();
            assert_eq!((r.precision, r.graph.precision()), (BuildPrecision::Fp32, Precision::Fp32));
            let r = recipe_for(Precision::Int8, Int8Mode::Qdq, version).unwrap();
            assert_eq!(r.precision, BuildPrecision::Int8Qdq);
            assert!(has_qdq(&r.graph), "{version}: {}", r.graph.name);
            let r = recipe_for(Precision::Fp16, Int8Mode::Qdq, version).unwrap();
            assert_eq!(r.precision, BuildPrecision::Fp16);
            // 11.x is strongly typed: the fp16 graph; earlier, the fp32 graph and the flag.
            let expected = if version >= 110000 { Precision::Fp16 } else { Precision::Fp32 };
            assert_eq!(r.graph.precision(), expected, "{version}");
        }
        // Calibrated int8: the built-in cache is for 10.3; 8.5 recalibrates from tensors/ (this
        // test runs in the checkout); 11.x has no calibrator.
        match recipe_for(Precision::Int8, Int8Mode::Calibrated, 100300).unwrap().calibration {
            Some(CalibrationPlan::UseCache { bytes, .. }) => assert!(bytes.starts_with(b"TRT-100300-")),
            other => panic!("{other:?}"),
        }
        match recipe_for(Precision::Int8, Int8Mode::Calibrated, 8502).unwrap().calibration {
            Some(CalibrationPlan::Recalibrate { stale, .. }) => assert!(stale.contains("8502"), "{stale}"),
            other => panic!("{other:?}"),
        }
        let e = recipe_for(Precision::Int8, Int8Mode::Calibrated, 110100).err().unwrap().to_string();
        assert!(e.contains("removed calibrated int8") && e.contains("--trt-int8 qdq"), "{e}");
        // tract's QOperator form is not TensorRT's.
        let qop = model.artifact(Artifact::QOperator, &Default::default()).unwrap();
        let e =
            recipe(&qop, &options(Precision::Int8, Int8Mode::Qdq), &info(100300)).err().unwrap().to_string();
        assert!(e.contains("QOperator"), "{e}");
    }
}
