//! The int8 artifacts of a model, as `semask-train quantize` writes them under
//! `calibration/<model>/`, and what the runtime needs to read them:
//!
//! | file | read by |
//! |---|---|
//! | `model.qdq.onnx` | TensorRT (explicit Q/DQ int8 engines, TensorRT 8.5+) |
//! | `model.qop.onnx` | tract on CPU (`MatMulInteger` / `ConvInteger` on int8 kernels) |
//! | `calib.cache` | TensorRT's implicit int8 calibrator ([`CalibrationCache`]) |
//! | `tensors/` | a device recalibrating itself ([`TensorManifest`]) |
//! | `report.json` | people: the accuracy each artifact costs against fp32 |
//!
//! [`Precision`] and [`resolve_artifact`] choose the file for a backend: `--precision int8` on
//! the CPU backend runs `model.qop.onnx` found next to the fp32 model or in its
//! `calibration/<stem>/` folder.

use std::fmt;
use std::path::{Path, PathBuf};

/// File names inside a calibration folder.
pub const QDQ_MODEL: &str = "model.qdq.onnx";
pub const QOP_MODEL: &str = "model.qop.onnx";
pub const CACHE_FILE: &str = "calib.cache";
pub const TENSORS_DIR: &str = "tensors";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const REPORT_FILE: &str = "report.json";

/// The algorithm named in the cache header. TensorRT checks it against the calibrator that
/// reads the cache; the runtime's calibrator is an `IInt8EntropyCalibrator2` whatever method
/// chose the scales (the method is recorded in `report.json`).
pub const CACHE_ALGORITHM: &str = "EntropyCalibration2";

/// Numeric precision of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            "fp16" => {
                Err("fp16 needs a GPU backend (TensorRT), which this build lacks; use fp32 or int8".into())
            }
            other => Err(format!("unknown precision {other:?}; use fp32 or int8")),
        }
    }
}

/// Errors reading calibration artifacts, each naming the file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} line {line}: {reason}; regenerate it with `semask-train quantize`")]
    Cache { path: PathBuf, line: usize, reason: String },
    #[error(
        "--precision int8: no {file} for {model}; looked in {looked}. Make one with \
         `semask-train quantize --model {model} --out <folder>` and pass --model <folder>/{file}, \
         or run with --precision fp32"
    )]
    NoArtifact { model: String, file: &'static str, looked: String },
}

/// A TensorRT calibration cache: `TRT-<version>-<algorithm>` then `<tensor>: <hex f32 bits>`
/// per tensor, the scale being `amax / 127`.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationCache {
    /// TensorRT version as TensorRT writes it (8502 for 8.5.2, 100300 for 10.3.0).
    pub trt_version: u32,
    pub algorithm: String,
    /// Tensor name and scale, in file order.
    pub scales: Vec<(String, f32)>,
}

impl CalibrationCache {
    /// The cache text, as TensorRT writes it (hex of the IEEE bits, lower case).
    pub fn to_text(&self) -> String {
        let mut text = format!("TRT-{}-{}\n", self.trt_version, self.algorithm);
        for (name, scale) in &self.scales {
            text.push_str(&format!("{name}: {:08x}\n", scale.to_bits()));
        }
        text
    }

    /// Parses a cache file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<CalibrationCache, CalibrationError> {
        let err =
            |line: usize, reason: String| CalibrationError::Cache { path: path.to_path_buf(), line, reason };
        let mut lines = text.lines();
        let header = lines.next().ok_or_else(|| err(1, "the file is empty".into()))?;
        let (version, algorithm) = header
            .strip_prefix("TRT-")
            .and_then(|rest| rest.split_once('-'))
            .ok_or_else(|| err(1, format!("header {header:?} is not TRT-<version>-<algorithm>")))?;
        let trt_version =
            version.parse().map_err(|_| err(1, format!("TensorRT version {version:?} is not a number")))?;
        let mut scales = Vec::new();
        for (i, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            // Tensor names may contain ':' (second outputs, `x:1`): the value follows the last ": ".
            let (name, hex) = line
                .rsplit_once(": ")
                .ok_or_else(|| err(i + 2, format!("{line:?} is not `<tensor>: <hex>`")))?;
            let bits = u32::from_str_radix(hex.trim(), 16)
                .map_err(|_| err(i + 2, format!("{hex:?} is not hexadecimal")))?;
            let scale = f32::from_bits(bits);
            if !scale.is_finite() || scale < 0.0 {
                return Err(err(
                    i + 2,
                    format!("scale {scale} of {name} is not a finite non-negative number"),
                ));
            }
            scales.push((name.to_string(), scale));
        }
        Ok(CalibrationCache { trt_version, algorithm: algorithm.to_string(), scales })
    }

    pub fn read(path: &Path) -> Result<CalibrationCache, CalibrationError> {
        let text = fs_err::read_to_string(path)
            .map_err(|e| CalibrationError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
        CalibrationCache::parse(&text, path)
    }
}

/// `tensors/manifest.json`: the pre-processed calibration inputs, one raw little-endian f32
/// NCHW file per frame, so that a device can feed them to its own calibrator.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorManifest {
    /// Graph input the tensors are for.
    pub input: String,
    /// `[1, 3, H, W]`.
    pub shape: Vec<usize>,
    /// Always `"float32"`, little-endian.
    pub dtype: String,
    /// The normalisation already applied (RGB, 0-255 scale).
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub channel_order: String,
    /// Where the frames came from (a runtime input URI) and which were taken.
    pub source: String,
    /// File names relative to the manifest.
    pub files: Vec<String>,
}

impl TensorManifest {
    pub fn read(dir: &Path) -> Result<TensorManifest, CalibrationError> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs_err::read_to_string(&path)
            .map_err(|e| CalibrationError::Read { path: path.clone(), reason: e.to_string() })?;
        serde_json::from_str(&text).map_err(|e| CalibrationError::Read { path, reason: e.to_string() })
    }

    /// Reads calibration tensor `index` (checking its size).
    pub fn tensor(&self, dir: &Path, index: usize) -> Result<Vec<f32>, CalibrationError> {
        let path = dir.join(&self.files[index]);
        let bytes = fs_err::read(&path)
            .map_err(|e| CalibrationError::Read { path: path.clone(), reason: e.to_string() })?;
        let expected = self.shape.iter().product::<usize>() * 4;
        if bytes.len() != expected {
            return Err(CalibrationError::Read {
                path,
                reason: format!("{} bytes, expected {expected} for {:?} float32", bytes.len(), self.shape),
            });
        }
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

/// The file to run for `model` at `precision`: the model itself for fp32; for int8 the QOperator
/// model (what tract runs on int8 kernels) when `model` is one already, else `model.qop.onnx`
/// next to `model` or in `calibration/<stem>/` beside it or under the working directory.
pub fn resolve_artifact(model: &Path, precision: Precision) -> Result<PathBuf, CalibrationError> {
    if precision == Precision::Fp32 || model.file_name().is_some_and(|f| f == QOP_MODEL) {
        return Ok(model.to_path_buf());
    }
    let dir = model.parent().unwrap_or(Path::new(""));
    let stem = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let candidates = [
        dir.join(QOP_MODEL),
        dir.join("calibration").join(&stem).join(QOP_MODEL),
        PathBuf::from("calibration").join(&stem).join(QOP_MODEL),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| CalibrationError::NoArtifact {
        model: model.display().to_string(),
        file: QOP_MODEL,
        looked: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_text_round_trips_with_its_version() {
        let cache = CalibrationCache {
            trt_version: 100300,
            algorithm: CACHE_ALGORITHM.into(),
            scales: vec![
                ("input".into(), 0.0211),
                ("backbone.layers.0.blocks.0.attn/Split:1".into(), 3.5e-4),
            ],
        };
        let text = cache.to_text();
        assert!(text.starts_with("TRT-100300-EntropyCalibration2\ninput: 3cacd9e8\n"), "{text}");
        assert_eq!(CalibrationCache::parse(&text, Path::new("c")).unwrap(), cache);
    }

    #[test]
    fn corrupt_caches_name_the_line() {
        for (text, needle) in [
            ("", "empty"),
            ("TensorRT cache\n", "header"),
            ("TRT-abc-EntropyCalibration2\n", "version"),
            ("TRT-8601-EntropyCalibration2\ninput 3c\n", "line 2"),
            ("TRT-8601-EntropyCalibration2\ninput: xyz\n", "hexadecimal"),
            ("TRT-8601-EntropyCalibration2\ninput: 7fc00000\n", "finite"),
        ] {
            let e = CalibrationCache::parse(text, Path::new("calib.cache")).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("calib.cache"), "{e}");
        }
    }

    #[test]
    fn int8_finds_the_qop_model_beside_or_in_calibration() {
        let dir = tempfile::tempdir().unwrap();
        let fp32 = dir.path().join("drive.onnx");
        std::fs::write(&fp32, b"x").unwrap();
        assert_eq!(resolve_artifact(&fp32, Precision::Fp32).unwrap(), fp32);
        let e = resolve_artifact(&fp32, Precision::Int8).unwrap_err().to_string();
        assert!(e.contains("semask-train quantize") && e.contains("--precision fp32"), "{e}");
        let folder = dir.path().join("calibration/drive");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(QOP_MODEL), b"x").unwrap();
        assert_eq!(resolve_artifact(&fp32, Precision::Int8).unwrap(), folder.join(QOP_MODEL));
        std::fs::write(dir.path().join(QOP_MODEL), b"x").unwrap();
        assert_eq!(resolve_artifact(&fp32, Precision::Int8).unwrap(), dir.path().join(QOP_MODEL));
        assert_eq!(
            resolve_artifact(&folder.join(QOP_MODEL), Precision::Int8).unwrap(),
            folder.join(QOP_MODEL)
        );
    }
}
