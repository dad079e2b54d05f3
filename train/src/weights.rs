//! Checkpoints with the official parameter names: reading safetensors and PyTorch `.pth` files
//! (as the official repo and mmseg save them: weights under `state_dict`), loading them into a
//! [`SeMaskFpn`] by name with every name and shape checked, and writing our own checkpoints as
//! safetensors that PyTorch's `load_state_dict(strict=True)` accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};

use crate::model::SeMaskFpn;
use crate::model::swin::relative_position_index;

/// Values of one stored tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum RawData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A tensor read from a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: RawData,
}

/// Errors reading or applying a checkpoint; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    #[error("cannot read checkpoint {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "checkpoint {path} does not fit this architecture: {summary}; check --arch / --arch-config \
         (or the checkpoint)"
    )]
    Mismatch {
        path: PathBuf,
        summary: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        misshaped: Vec<String>,
    },
    #[error("cannot write checkpoint {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// All tensors of a checkpoint file, by name.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, RawTensor>,
}

/// Keys that are buffers, not parameters: checked or ignored, never loaded.
fn is_buffer(name: &str) -> bool {
    name.ends_with(".relative_position_index") || name.ends_with(".num_batches_tracked")
}

/// Largest checkpoint read (SeMask-L with optimizer-free weights is about 1 GB).
const MAX_CHECKPOINT_BYTES: u64 = 16 << 30;

impl Checkpoint {
    /// Reads a `.safetensors` file, or a PyTorch checkpoint (`.pth` / `.pt`, with or without
    /// a `state_dict` key).
    pub fn read(path: &Path) -> Result<Checkpoint, WeightsError> {
        let fail = |reason: String| WeightsError::Read { path: path.to_path_buf(), reason };
        let mut bytes = Vec::new();
        semask_edge::files::read_input(path, MAX_CHECKPOINT_BYTES, &mut bytes)
            .map_err(|e| fail(e.to_string()))?;
        // safetensors: an 8-byte header length, then the JSON header. A truncated file still
        // starts that way, and gets the safetensors reader's error rather than the .pth one.
        let is_safetensors = bytes.len() >= 9 && bytes[8] == b'{'
            || path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
        // The readers follow sizes and pickle opcodes written in the file: a panic on a hostile
        // file is an error about that file.
        let tensors = semask_edge::guard::catch_panic(|| {
            if is_safetensors { read_safetensors(&bytes) } else { read_pth(path) }
        })
        .map_err(|panic| fail(format!("the checkpoint reader failed on it ({panic})")))?
        .map_err(fail)?;
        if tensors.is_empty() {
            return Err(fail("no tensor found".into()));
        }
        Ok(Checkpoint { path: path.to_path_buf(), tensors })
    }

    /// Loads every parameter of `model` from this checkpoint, by name. Fails, listing them, on
    /// missing, unexpected or mis-shaped tensors (buffers are checked, not loaded).
    pub fn load_into(&self, model: SeMaskFpn, device: &Device) -> Result<SeMaskFpn, WeightsError> {
        let mut loader = Loader::new(self, device);
        let model = model.map(&mut loader);
        let Loader { used, mut missing, mut misshaped, .. } = loader;
        let expected_index = relative_position_index();
        let mut unexpected = Vec::new();
        for (name, tensor) in &self.tensors {
            if used.contains(name) {
                continue;
            }
            if name.ends_with(".relative_position_index") {
                if tensor.data != RawData::I64(expected_index.clone()) {
                    misshaped.push(format!("{name} (not the 7x7 window index)"));
                }
            } else if !is_buffer(name) {
                unexpected.push(name.clone());
            }
        }
        missing.sort();
        if missing.is_empty() && unexpected.is_empty() && misshaped.is_empty() {
            return Ok(model);
        }
        let list = |what: &str, names: &[String]| {
            let shown: Vec<&str> = names.iter().take(4).map(String::as_str).collect();
            let more = if names.len() > 4 { format!(" and {} more", names.len() - 4) } else { String::new() };
            format!("{} {what} ({}{more})", names.len(), shown.join(", "))
        };
        let mut parts = Vec::new();
        for (what, names) in
            [("missing", &missing), ("unexpected", &unexpected), ("with another shape", &misshaped)]
        {
            if !names.is_empty() {
                parts.push(list(what, names));
            }
        }
        Err(WeightsError::Mismatch {
            path: self.path.clone(),
            summary: parts.join("; "),
            missing,
            unexpected,
            misshaped,
        })
    }

    /// Loads the tensors whose (renamed) names and shapes match parameters of `model`, leaving
    /// the others as they are; `rename` maps a checkpoint name to a model path (`None`: skip).
    /// Returns the model and how many parameters were loaded. For starting from other models'
    /// weights (an ImageNet Swin backbone).
    pub fn load_matching(
        &self,
        model: SeMaskFpn,
        device: &Device,
        rename: impl Fn(&str) -> Option<String>,
    ) -> (SeMaskFpn, usize) {
        let renamed = Checkpoint {
            path: self.path.clone(),
            tensors: self.tensors.iter().filter_map(|(k, v)| rename(k).map(|n| (n, v.clone()))).collect(),
        };
        let mut loader = Loader::new(&renamed, device);
        let model = model.map(&mut loader);
        let loaded = loader.used.len() - loader.misshaped.len();
        (model, loaded)
    }

    /// The parameters (and buffers) of `model` under the official names.
    pub fn from_model(model: &SeMaskFpn) -> Checkpoint {
        let mut collector = Collector { path: Vec::new(), tensors: BTreeMap::new() };
        model.visit(&mut collector);
        let mut tensors = collector.tensors;
        // The buffers PyTorch's strict loading expects.
        let names: Vec<String> = tensors.keys().cloned().collect();
        for name in names {
            if let Some(prefix) = name.strip_suffix(".relative_position_bias_table") {
                tensors.insert(
                    format!("{prefix}.relative_position_index"),
                    RawTensor { shape: vec![49, 49], data: RawData::I64(relative_position_index()) },
                );
            }
            if let Some(prefix) = name.strip_suffix(".running_mean") {
                tensors.insert(
                    format!("{prefix}.num_batches_tracked"),
                    RawTensor { shape: vec![], data: RawData::I64(vec![0]) },
                );
            }
        }
        Checkpoint { path: PathBuf::new(), tensors }
    }

    /// Writes the tensors as safetensors (`path.partial`, then renamed).
    pub fn write_safetensors(
        &self,
        path: &Path,
        metadata: BTreeMap<String, String>,
    ) -> Result<(), WeightsError> {
        let fail = |reason: String| WeightsError::Write { path: path.to_path_buf(), reason };
        let bytes: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = self
            .tensors
            .iter()
            .map(|(name, t)| match &t.data {
                RawData::F32(v) => (
                    name.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    t.shape.clone(),
                    safetensors::Dtype::F32,
                ),
                RawData::I64(v) => (
                    name.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    t.shape.clone(),
                    safetensors::Dtype::I64,
                ),
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(name, data, shape, dtype)| {
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).map(|v| (name.clone(), v))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| fail(e.to_string()))?;
        let metadata: std::collections::HashMap<String, String> = metadata.into_iter().collect();
        let serialized = safetensors::serialize(views, Some(metadata)).map_err(|e| fail(e.to_string()))?;
        semask_edge::files::write_atomically(path, &serialized).map_err(|e| fail(e.to_string()))
    }
}

fn read_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, RawTensor>, String> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let raw = view.data();
        let data = match view.dtype() {
            safetensors::Dtype::F32 => RawData::F32(
                raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect(),
            ),
            safetensors::Dtype::I64 => RawData::I64(
                raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
            ),
            other => return Err(format!("tensor {name} is {other:?}; expected F32 (or I64 buffers)")),
        };
        out.insert(name, RawTensor { shape, data });
    }
    Ok(out)
}

fn read_pth(path: &Path) -> Result<BTreeMap<String, RawTensor>, String> {
    use pytorch_reader::{DType, PytorchReader};
    // mmseg / official checkpoints keep the weights under `state_dict`; plain saves do not.
    let reader = PytorchReader::with_top_level_key(path, "state_dict")
        .or_else(|_| PytorchReader::new(path))
        .map_err(|e| format!("not a readable PyTorch checkpoint (or safetensors file): {e}"))?;
    let mut out = BTreeMap::new();
    for (name, tensor) in reader.tensors() {
        let shape = tensor.shape().to_vec();
        let bytes = tensor.read().map_err(|e| format!("tensor {name}: {e}"))?;
        let data = match tensor.dtype() {
            DType::F32 => RawData::F32(
                bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect(),
            ),
            DType::I64 => RawData::I64(
                bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8"))).collect(),
            ),
            other => return Err(format!("tensor {name} is {other:?}; expected float32 (or int64 buffers)")),
        };
        out.insert(name.clone(), RawTensor { shape, data });
    }
    Ok(out)
}

/// Replaces each float parameter by the checkpoint tensor of the same path.
struct Loader<'a> {
    checkpoint: &'a Checkpoint,
    device: Device,
    path: Vec<String>,
    used: BTreeSet<String>,
    missing: Vec<String>,
    misshaped: Vec<String>,
}

impl<'a> Loader<'a> {
    fn new(checkpoint: &'a Checkpoint, device: &Device) -> Loader<'a> {
        Loader {
            checkpoint,
            device: device.clone(),
            path: Vec::new(),
            used: BTreeSet::new(),
            missing: Vec::new(),
            misshaped: Vec::new(),
        }
    }
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.path.join(".");
        let expected: Vec<usize> = param.shape().dims::<D>().to_vec();
        match self.checkpoint.tensors.get(&name) {
            None => {
                self.missing.push(name);
                param
            }
            Some(raw) => {
                self.used.insert(name.clone());
                match &raw.data {
                    RawData::F32(values) if raw.shape == expected => {
                        let tensor = Tensor::<D>::from_data(
                            TensorData::new(values.clone(), raw.shape.clone()),
                            &self.device,
                        );
                        // Keep the parameter trainable on an autodiff device (resume, --init).
                        param.map(|old| tensor.set_require_grad(old.is_require_grad()))
                    }
                    _ => {
                        self.misshaped.push(format!("{name} {:?} (model {:?})", raw.shape, expected));
                        param
                    }
                }
            }
        }
    }
}

/// Collects float parameters with their paths.
struct Collector {
    path: Vec<String>,
    tensors: BTreeMap<String, RawTensor>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let (shape, values) = crate::model::to_vec(&param.val());
        self.tensors.insert(self.path.join("."), RawTensor { shape, data: RawData::F32(values) });
    }
}
