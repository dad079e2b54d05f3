//! Reading an ONNX segmentation model: the protobuf, its one image input, its outputs and its
//! `semask.*` metadata. Nothing here runs the network; [`crate::backend`] does.
//!
//! A model is accepted when it has exactly one float input shaped `[1, 3, H, W]` (batch and
//! spatial dimensions may be symbolic, then `--input-size` fixes them). The raw graph of
//! `torch.onnx.export` (shape arithmetic with Shape/Gather/ScatterND/Where) and an
//! onnxruntime-optimised graph are both fine: the backend folds what it needs.

pub mod classes;
pub mod metadata;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use tract_onnx::pb;
use tract_onnx::prelude::Framework;

use crate::calibration::Artifact;
pub use crate::calibration::Precision;
pub use classes::ClassTable;
pub use metadata::{MetadataOverrides, Provenance, SegmentationMetadata, Setting};

/// The model used when `--model` is not given: SeMask-FPN in the fixtures' `tiny` configuration
/// (embed dim 32, 2.6 M parameters) trained by `semask-train` on `synth://` driving scenes,
/// exported at 256x512 (`calibration/semask-tiny-synth/`, whose README gives the recipe and
/// its held-out accuracy). It segments synthetic scenes; it has never seen a real road.
pub const BUILTIN_MODEL_ONNX: &[u8] = include_bytes!("../../calibration/semask-tiny-synth/model.onnx");
/// Its int8 QOperator form (`--precision int8`), from the same folder.
pub const BUILTIN_MODEL_QOP_ONNX: &[u8] =
    include_bytes!("../../calibration/semask-tiny-synth/model.qop.onnx");
/// Its explicit-quantization form, for TensorRT int8 (tensorrt builds only).
#[cfg(feature = "tensorrt")]
pub const BUILTIN_MODEL_QDQ_ONNX: &[u8] =
    include_bytes!("../../calibration/semask-tiny-synth/model.qdq.onnx");
/// Its fp16 graph, for TensorRT 11's fp16 engines (tensorrt builds only).
#[cfg(feature = "tensorrt")]
pub const BUILTIN_MODEL_FP16_ONNX: &[u8] =
    include_bytes!("../../calibration/semask-tiny-synth/model.fp16.onnx");
/// Its TensorRT calibration cache (for calibrated int8 on the TensorRT version it names).
#[cfg(feature = "tensorrt")]
pub const BUILTIN_CALIBRATION_CACHE: &[u8] =
    include_bytes!("../../calibration/semask-tiny-synth/calib.cache");
/// How the built-in model is named in logs and `info`.
pub const BUILTIN_MODEL_NAME: &str = "built-in semask-tiny-synth (tiny config trained on synth://)";

/// Largest ONNX file read: protobuf's own limit (models with larger weights keep them as
/// external data, which is bounded by [`MAX_EXTERNAL_DATA_BYTES`]).
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// Largest total of external data (weights in files beside the model) a model may name.
pub const MAX_EXTERNAL_DATA_BYTES: u64 = 16 << 30;

/// Errors found while reading a model file, each naming the file and saying what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("cannot read model {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "{name} is not a readable ONNX model ({reason}); is the file truncated, or not an .onnx \
         file? Re-export it or check the path"
    )]
    Decode { name: String, reason: String },
    #[error("{name}: {reason}")]
    Input { name: String, reason: String },
    #[error("{name}: {error}")]
    Metadata { name: String, error: metadata::MetadataError },
    #[error(
        "--precision int8 found {artifact}, but it was not made from {model}: {reason}. Make one \
         for this model with `semask-train quantize --model {model} --out <folder>`, or pass the \
         int8 file itself with --model"
    )]
    ForeignArtifact { model: String, artifact: String, reason: String },
    #[error("class file {path}: {reason}")]
    ClassFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Calibration(#[from] crate::calibration::CalibrationError),
}

/// Where a model's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelOrigin {
    File(PathBuf),
    /// Built into the binary.
    Builtin(&'static [u8]),
}

/// The built-in model's `artifact`, when the binary carries it.
fn builtin_artifact(artifact: Artifact) -> Option<&'static [u8]> {
    match artifact {
        Artifact::QOperator => Some(BUILTIN_MODEL_QOP_ONNX),
        #[cfg(feature = "tensorrt")]
        Artifact::Qdq => Some(BUILTIN_MODEL_QDQ_ONNX),
        #[cfg(feature = "tensorrt")]
        Artifact::Fp16 => Some(BUILTIN_MODEL_FP16_ONNX),
        _ => None,
    }
}

/// One dimension of a tensor declared in the graph.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) if s.is_empty() => f.write_str("?"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// Name and declared shape of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TensorDecl {
    pub name: String,
    /// ONNX element type name (`float`, `int64`…).
    pub elem_type: String,
    pub shape: Vec<Dim>,
}

impl fmt::Display for TensorDecl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        write!(f, "{} {} [{}]", self.name, self.elem_type, dims.join(", "))
    }
}

/// A decoded ONNX model with its interface and metadata checked.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    /// How to refer to the model in messages: its path, or [`BUILTIN_MODEL_NAME`].
    pub name: String,
    /// Where it was read from.
    pub origin: ModelOrigin,
    /// Directory of the file, where ONNX external data is looked up.
    pub dir: Option<PathBuf>,
    pub size_bytes: usize,
    pub proto: pb::ModelProto,
    pub input: TensorDecl,
    pub outputs: Vec<TensorDecl>,
    pub metadata: SegmentationMetadata,
}

impl OnnxModel {
    /// Reads and checks the model at `path` (a regular file of at most [`MAX_MODEL_BYTES`]).
    pub fn open(path: &Path, overrides: &MetadataOverrides) -> Result<OnnxModel, ModelError> {
        let bytes = read_model_file(path)?;
        let dir = path.parent().map(Path::to_path_buf);
        let mut model = OnnxModel::from_bytes(&bytes, path.display().to_string(), dir, overrides)?;
        model.origin = ModelOrigin::File(path.to_path_buf());
        Ok(model)
    }

    /// A model from bytes in memory, named `name` in messages (no directory: external data is
    /// refused).
    pub fn from_memory(
        bytes: &[u8],
        name: &str,
        overrides: &MetadataOverrides,
    ) -> Result<OnnxModel, ModelError> {
        OnnxModel::from_bytes(bytes, name.to_string(), None, overrides)
    }

    /// The model built into the binary ([`BUILTIN_MODEL_ONNX`]).
    pub fn builtin(overrides: &MetadataOverrides) -> Result<OnnxModel, ModelError> {
        let mut model =
            OnnxModel::from_bytes(BUILTIN_MODEL_ONNX, BUILTIN_MODEL_NAME.into(), None, overrides)?;
        model.origin = ModelOrigin::Builtin(BUILTIN_MODEL_ONNX);
        Ok(model)
    }

    /// `--model` when given, else the built-in model.
    pub fn open_or_builtin(
        path: Option<&Path>,
        overrides: &MetadataOverrides,
    ) -> Result<OnnxModel, ModelError> {
        match path {
            Some(p) => OnnxModel::open(p, overrides),
            None => OnnxModel::builtin(overrides),
        }
    }

    /// The file the model was read from (`None` for the built-in model).
    pub fn path(&self) -> Option<&Path> {
        match &self.origin {
            ModelOrigin::File(p) => Some(p),
            ModelOrigin::Builtin(_) => None,
        }
    }

    /// The bytes of the model as stored (hashed for engine caches, parsed by TensorRT).
    pub fn file_bytes(&self) -> Result<std::borrow::Cow<'static, [u8]>, ModelError> {
        match &self.origin {
            ModelOrigin::File(p) => read_model_file(p).map(std::borrow::Cow::Owned),
            ModelOrigin::Builtin(bytes) => Ok(std::borrow::Cow::Borrowed(bytes)),
        }
    }

    /// The `artifact` form of this model (its int8 or fp16 graph), found beside it or in
    /// `calibration/<stem>/` ([`crate::calibration::find_artifact`]) and checked to be made from
    /// it ([`check_int8_artifact`]); its name says which file runs (`calibration/m/model.qop.onnx
    /// (int8 form of m.onnx)`). The built-in model carries its int8 forms.
    pub fn artifact(
        &self,
        artifact: Artifact,
        overrides: &MetadataOverrides,
    ) -> Result<OnnxModel, ModelError> {
        match &self.origin {
            ModelOrigin::Builtin(_) => {
                let bytes = builtin_artifact(artifact).ok_or_else(|| {
                    ModelError::Calibration(crate::calibration::CalibrationError::NoArtifact {
                        model: self.name.clone(),
                        artifact,
                        looked: "the binary (the built-in model has no such form)".into(),
                    })
                })?;
                let name = format!("{BUILTIN_MODEL_NAME}, its {} form", artifact.file_name());
                let mut model = OnnxModel::from_bytes(bytes, name, None, overrides)?;
                model.origin = ModelOrigin::Builtin(bytes);
                Ok(model)
            }
            ModelOrigin::File(path) => {
                let found = crate::calibration::find_artifact(path, artifact)?;
                let mut derived = OnnxModel::open(&found, overrides)?;
                check_int8_artifact(self, &self.file_bytes()?, &derived)?;
                derived.name = format!("{} ({} form of {})", derived.name, artifact.precision(), self.name);
                Ok(derived)
            }
        }
    }

    /// int8 when the graph computes with integer products (`MatMulInteger`, `ConvInteger`,
    /// `QLinear*`) or explicit Q/DQ, fp16 when its weights are half floats, else fp32.
    pub fn precision(&self) -> Precision {
        let int8 = self.proto.graph.iter().flat_map(|g| &g.node).any(|n| {
            matches!(
                n.op_type.as_str(),
                "MatMulInteger"
                    | "ConvInteger"
                    | "QLinearConv"
                    | "QLinearMatMul"
                    | "QuantizeLinear"
                    | "DequantizeLinear"
            )
        });
        let fp16 = self
            .proto
            .graph
            .iter()
            .flat_map(|g| &g.initializer)
            .any(|t| t.data_type == pb::tensor_proto::DataType::Float16 as i32);
        if int8 {
            Precision::Int8
        } else if fp16 {
            Precision::Fp16
        } else {
            Precision::Fp32
        }
    }

    fn from_bytes(
        bytes: &[u8],
        name: String,
        dir: Option<PathBuf>,
        overrides: &MetadataOverrides,
    ) -> Result<OnnxModel, ModelError> {
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| ModelError::Decode { name: name.clone(), reason: format!("{e:#}") })?;
        let graph = proto.graph.as_ref().ok_or_else(|| ModelError::Decode {
            name: name.clone(),
            reason: "the protobuf holds no graph".into(),
        })?;
        if graph.node.is_empty() {
            return Err(ModelError::Decode { name, reason: "the graph has no nodes".into() });
        }
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<TensorDecl> =
            graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).map(tensor_decl).collect();
        let input = check_image_input(&name, inputs)?;
        let outputs: Vec<TensorDecl> = graph.output.iter().map(tensor_decl).collect();
        let props: BTreeMap<String, String> =
            proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
        let output_names: Vec<String> = outputs.iter().map(|o| o.name.clone()).collect();
        let metadata = SegmentationMetadata::from_props(&props, &output_names, overrides)
            .map_err(|error| ModelError::Metadata { name: name.clone(), error })?;
        check_external_data(graph, dir.as_deref())
            .map_err(|reason| ModelError::Decode { name: name.clone(), reason })?;
        // Callers that know better (a file, the built-in bytes) set the origin.
        let origin = ModelOrigin::Builtin(&[]);
        Ok(OnnxModel { name, origin, dir, size_bytes: bytes.len(), proto, input, outputs, metadata })
    }

    /// Number of nodes of the top-level graph.
    pub fn node_count(&self) -> usize {
        self.proto.graph.as_ref().map_or(0, |g| g.node.len())
    }

    /// Default-domain opset the model was exported with.
    pub fn opset(&self) -> Option<i64> {
        self.proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
    }

    /// `producer_name producer_version` as written by the exporter.
    pub fn producer(&self) -> String {
        format!("{} {}", self.proto.producer_name, self.proto.producer_version).trim().to_string()
    }

    /// The network input size `(height, width)`: the model's own when static; a symbolic size
    /// needs `requested` (`--input-size`), which must agree with static dimensions. The size is
    /// checked against `limits` (a model can declare any size).
    pub fn input_size(
        &self,
        requested: Option<(usize, usize)>,
        limits: &crate::limits::Limits,
    ) -> Result<(usize, usize), ModelError> {
        let (h, w) = self.declared_input_size(requested)?;
        let pixels = h as u64 * w as u64;
        if pixels > limits.max_pixels
            || h as u64 > crate::limits::MAX_SIDE
            || w as u64 > crate::limits::MAX_SIDE
        {
            return Err(ModelError::Input {
                name: self.name.clone(),
                reason: format!(
                    "the network input would be {w}x{h} (WxH) = {}, above the limit of {} (sides at \
                     most {}); re-export the model at a smaller size, or raise --max-pixels",
                    crate::limits::describe_pixels(pixels),
                    crate::limits::describe_pixels(limits.max_pixels),
                    crate::limits::MAX_SIDE
                ),
            });
        }
        Ok((h, w))
    }

    /// True when the input's height or width is symbolic (fixed only by `--input-size`).
    pub fn has_dynamic_input(&self) -> bool {
        self.input.shape.iter().skip(2).any(|d| matches!(d, Dim::Symbolic(_)))
    }

    fn declared_input_size(&self, requested: Option<(usize, usize)>) -> Result<(usize, usize), ModelError> {
        let (h, w) = (&self.input.shape[2], &self.input.shape[3]);
        let fail = |reason: String| ModelError::Input { name: self.name.clone(), reason };
        match (h, w, requested) {
            (Dim::Fixed(h), Dim::Fixed(w), None) => Ok((*h, *w)),
            (Dim::Fixed(h), Dim::Fixed(w), Some(r)) if (*h, *w) == r => Ok(r),
            (Dim::Fixed(h), Dim::Fixed(w), Some((rh, rw))) => Err(fail(format!(
                "the model's input is fixed at {w}x{h} (WxH), but --input-size asks for {rw}x{rh}; \
                 drop --input-size or re-export the model at that size"
            ))),
            (_, _, Some((rh, rw))) => {
                for (dim, want, axis) in [(h, rh, "height"), (w, rw, "width")] {
                    if let Dim::Fixed(n) = dim
                        && *n != want
                    {
                        return Err(fail(format!(
                            "the input {axis} is fixed at {n}, but --input-size asks for {want}"
                        )));
                    }
                }
                Ok((rh, rw))
            }
            (_, _, None) => Err(fail(format!(
                "input `{}` has a dynamic size {}; pass --input-size WxH (e.g. 1024x512) to fix it",
                self.input.name, self.input
            ))),
        }
    }
}

/// The bytes of the model file `path`, refusing what is not a regular file, empty, or larger
/// than [`MAX_MODEL_BYTES`].
fn read_model_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    let mut bytes = Vec::new();
    crate::files::read_input(path, MAX_MODEL_BYTES, &mut bytes)
        .map_err(|e| ModelError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
    if bytes.is_empty() {
        return Err(ModelError::Decode {
            name: path.display().to_string(),
            reason: "the file is empty".into(),
        });
    }
    Ok(bytes)
}

/// Checks the external data (weights kept in files beside the model) a graph names: each
/// must be a regular file in the model's directory holding the bytes it is said to hold, and
/// all together at most [`MAX_EXTERNAL_DATA_BYTES`]. (tract keeps the location inside the
/// directory; this keeps it from reading a FIFO, a device, or past a file's end.)
fn check_external_data(graph: &pb::GraphProto, dir: Option<&Path>) -> Result<(), String> {
    let external = pb::tensor_proto::DataLocation::External as i32;
    let mut total = 0u64;
    for tensor in graph.initializer.iter().filter(|t| t.data_location == Some(external)) {
        let entry = |key: &str| tensor.external_data.iter().find(|e| e.key == key).map(|e| e.value.as_str());
        let location = entry("location")
            .ok_or_else(|| format!("initializer {} is external data without a location", tensor.name))?;
        let dir = dir.ok_or_else(|| {
            format!("initializer {} needs external data, but the model has no directory", tensor.name)
        })?;
        let path = dir.join(location);
        let (_, meta) = crate::files::open_input(&path)
            .map_err(|e| format!("external data {} of initializer {}: {e}", path.display(), tensor.name))?;
        let number = |key: &str| -> Result<Option<u64>, String> {
            entry(key)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        format!("initializer {}: external data {key} {v:?} is not a number", tensor.name)
                    })
                })
                .transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        let length = match number("length")? {
            Some(length) => length,
            None => meta.len().saturating_sub(offset),
        };
        if offset.checked_add(length).is_none_or(|end| end > meta.len()) {
            return Err(format!(
                "initializer {} says its external data is {length} bytes at offset {offset} of {}, which has {} bytes",
                tensor.name,
                path.display(),
                meta.len()
            ));
        }
        total += length;
        if total > MAX_EXTERNAL_DATA_BYTES {
            return Err(format!("the external data adds up to more than {MAX_EXTERNAL_DATA_BYTES} bytes"));
        }
    }
    Ok(())
}

/// Checks that `int8`, an artifact found beside `fp32` (not given explicitly), was made from it:
/// same input, same classes, and the same model by hash (`semask.fp32_sha256`, written by
/// `semask-train quantize`) or, for older artifacts, by the export metadata both carry.
pub fn check_int8_artifact(fp32: &OnnxModel, fp32_bytes: &[u8], int8: &OnnxModel) -> Result<(), ModelError> {
    let foreign = |reason: String| ModelError::ForeignArtifact {
        model: fp32.name.clone(),
        artifact: int8.name.clone(),
        reason,
    };
    if fp32.input.shape != int8.input.shape {
        return Err(foreign(format!("its input is {}, the model's {}", int8.input, fp32.input)));
    }
    let prop = |m: &OnnxModel, key: &str| m.metadata.all_props.get(key).cloned();
    if prop(fp32, metadata::KEY_CLASSES) != prop(int8, metadata::KEY_CLASSES) {
        return Err(foreign("its classes differ".into()));
    }
    if let Some(hash) = prop(int8, metadata::KEY_FP32_SHA256) {
        let actual = sha256_hex(fp32_bytes);
        if hash != actual {
            return Err(foreign(format!(
                "it was made from a model with SHA-256 {hash}, this one is {actual}"
            )));
        }
        return Ok(());
    }
    let mut compared = 0;
    // An int8 artifact carries its fp32 model's export provenance.
    for key in metadata::ExportProvenance::IDENTITY_KEYS {
        match (prop(fp32, key), prop(int8, key)) {
            (Some(a), Some(b)) if a != b => {
                return Err(foreign(format!("its {key} is {b:?}, the model's {a:?}")));
            }
            (Some(_), Some(_)) => compared += 1,
            _ => {}
        }
    }
    if compared == 0 {
        log::warn!(
            "cannot check that {} was made from {}: neither carries a hash or export metadata \
             (input and classes match); pass the int8 file itself with --model to choose it explicitly",
            int8.name,
            fp32.name
        );
    }
    Ok(())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn elem_type_name(t: i32) -> String {
    pb::tensor_proto::DataType::try_from(t)
        .map(|d| d.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("type {t}"))
}

fn tensor_decl(v: &pb::ValueInfoProto) -> TensorDecl {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TypeValue;
    let (elem_type, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => {
            let shape = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Value::DimValue(n)) if *n >= 0 => Dim::Fixed(*n as usize),
                            Some(Value::DimParam(p)) => Dim::Symbolic(p.clone()),
                            _ => Dim::Symbolic(String::new()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (elem_type_name(t.elem_type), shape)
        }
        _ => ("unknown".into(), vec![]),
    };
    TensorDecl { name: v.name.clone(), elem_type, shape }
}

fn check_image_input(name: &str, mut inputs: Vec<TensorDecl>) -> Result<TensorDecl, ModelError> {
    let fail = |reason: String| ModelError::Input { name: name.to_string(), reason };
    let expected = "semask-edge needs one float image input shaped [1, 3, H, W]";
    if inputs.len() != 1 {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(fail(format!("the graph has {} inputs {names:?}; {expected}", inputs.len())));
    }
    let input = inputs.remove(0);
    let ok_batch = matches!(input.shape.first(), Some(Dim::Fixed(1)) | Some(Dim::Symbolic(_)));
    let ok_channels = matches!(input.shape.get(1), Some(Dim::Fixed(3)));
    let ok_spatial = input.shape.iter().skip(2).all(|d| !matches!(d, Dim::Fixed(0)));
    if input.elem_type != "float" || input.shape.len() != 4 || !ok_batch || !ok_channels || !ok_spatial {
        return Err(fail(format!("input is {input}; {expected}")));
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(dims: &[Dim]) -> TensorDecl {
        TensorDecl { name: "input".into(), elem_type: "float".into(), shape: dims.to_vec() }
    }

    #[test]
    fn image_input_shape_is_checked() {
        use Dim::*;
        assert!(check_image_input("m", vec![decl(&[Fixed(1), Fixed(3), Fixed(8), Fixed(8)])]).is_ok());
        assert!(
            check_image_input(
                "m",
                vec![decl(&[Symbolic("N".into()), Fixed(3), Symbolic("H".into()), Fixed(8)])]
            )
            .is_ok()
        );
        for bad in [
            vec![Fixed(1), Fixed(1), Fixed(8), Fixed(8)],
            vec![Fixed(2), Fixed(3), Fixed(8), Fixed(8)],
            vec![Fixed(1), Fixed(3), Fixed(8)],
            vec![Fixed(1), Fixed(8), Fixed(8), Fixed(3)],
        ] {
            let e = check_image_input("m.onnx", vec![decl(&bad)]).unwrap_err().to_string();
            assert!(e.starts_with("m.onnx: input is input float ["), "{e}");
        }
        let mut int_input = decl(&[Fixed(1), Fixed(3), Fixed(8), Fixed(8)]);
        int_input.elem_type = "uint8".into();
        assert!(check_image_input("m", vec![int_input]).is_err());
        assert!(check_image_input("m", vec![]).is_err());
    }

    #[test]
    fn builtin_model_is_the_trained_tiny_synth_model_in_both_precisions() {
        let m = OnnxModel::builtin(&Default::default()).unwrap();
        assert_eq!(m.input_size(None, &Default::default()).unwrap(), (256, 512));
        assert_eq!(m.metadata.logits_output.value, "logits");
        assert_eq!(m.metadata.mean.from, Provenance::Metadata);
        assert_eq!(m.precision(), Precision::Fp32);
        assert!(m.input_size(Some((100, 100)), &Default::default()).is_err());
        let q = m.artifact(Artifact::QOperator, &Default::default()).unwrap();
        assert_eq!(q.precision(), Precision::Int8);
        assert_eq!(q.input_size(None, &Default::default()).unwrap(), (256, 512));
        assert_eq!(q.metadata.classes, m.metadata.classes);
    }
}
