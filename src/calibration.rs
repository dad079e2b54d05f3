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
//! [`Artifact`] and [`find_artifact`] locate them for a backend: `--precision int8` on the CPU
//! runs `model.qop.onnx`, TensorRT builds `model.qdq.onnx` (or the fp32 model with the cache
//! and [`CalibrationBatches`], see [`plan_calibration`]), found next to the fp32 model or in its
//! `calibration/<stem>/` folder.

use crate::named::Named;
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
    /// Half precision: TensorRT only (builder flag up to 10.x, an fp16 graph from 11.0).
    Fp16,
    Int8,
}

impl Named for Precision {
    const WHAT: &'static str = "precision";
    const ALL: &'static [Self] = &[Precision::Fp32, Precision::Fp16, Precision::Int8];
    fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }
    fn help(self) -> &'static str {
        match self {
            Precision::Fp32 => "32-bit floats: the exported model as it is",
            Precision::Fp16 => "half precision (TensorRT only)",
            Precision::Int8 => "8-bit integers: the model's int8 form, or TensorRT's int8 engine",
        }
    }
}
crate::impl_named_text!(Precision);

/// Errors reading calibration artifacts, each naming the file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} line {line}: {reason}; regenerate it with `semask-train quantize`")]
    Cache { path: PathBuf, line: usize, reason: String },
    #[error(
        "--precision {precision}: no {file} for {model}; looked in {looked}. Make one with \
         `{make}` and pass --model <folder>/{file}, or run with --precision fp32",
        precision = artifact.precision(), file = artifact.file_name(), make = artifact.how_to_make(model)
    )]
    NoArtifact { model: String, artifact: Artifact, looked: String },
    #[error("calibration tensors {path}: {reason}; regenerate them with `semask-train quantize`")]
    Tensors { path: PathBuf, reason: String },
    #[error(
        "{stale}, and recalibrating needs the calibration tensors ({looked}), which are missing; \
         run `semask-train quantize --model {model} --trt-version {running}` for this TensorRT, or \
         use the Q/DQ model (--trt-int8 qdq)"
    )]
    NoCalibration { model: String, stale: String, looked: String, running: i32 },
}

/// The derived forms of a model that `semask-train` writes beside it or into
/// `calibration/<model stem>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// `model.qop.onnx`: int8 for tract.
    QOperator,
    /// `model.qdq.onnx`: int8 for TensorRT.
    Qdq,
    /// `model.fp16.onnx`: an fp16 graph (TensorRT 11's only fp16).
    Fp16,
    /// `calib.cache`: TensorRT's calibration cache.
    Cache,
    /// `tensors/`: pre-processed calibration frames.
    Tensors,
}

/// File name of the fp16 graph.
pub const FP16_MODEL: &str = "model.fp16.onnx";

impl Artifact {
    pub fn file_name(self) -> &'static str {
        match self {
            Artifact::QOperator => QOP_MODEL,
            Artifact::Qdq => QDQ_MODEL,
            Artifact::Fp16 => FP16_MODEL,
            Artifact::Cache => CACHE_FILE,
            Artifact::Tensors => TENSORS_DIR,
        }
    }

    /// The precision the artifact serves.
    pub fn precision(self) -> Precision {
        match self {
            Artifact::Fp16 => Precision::Fp16,
            _ => Precision::Int8,
        }
    }

    /// The command that writes it.
    pub fn how_to_make(self, model: &str) -> String {
        match self {
            Artifact::Fp16 => {
                "semask-train export --precision fp16 --weights <checkpoint> --out model.fp16.onnx".into()
            }
            _ => format!("semask-train quantize --model {model} --out <folder>"),
        }
    }
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
        let name = &self.files[index];
        if name.contains('/') || name.contains('\\') || name == ".." {
            return Err(CalibrationError::Read {
                path: dir.join(MANIFEST_FILE),
                reason: format!("file name {name:?} leaves the tensors folder"),
            });
        }
        let path = dir.join(name);
        let expected = self.shape.iter().product::<usize>() * 4;
        let mut bytes = Vec::new();
        crate::files::read_input(&path, expected as u64, &mut bytes)
            .map_err(|e| CalibrationError::Read { path: path.clone(), reason: e.to_string() })?;
        if bytes.len() != expected {
            return Err(CalibrationError::Read {
                path,
                reason: format!("{} bytes, expected {expected} for {:?} float32", bytes.len(), self.shape),
            });
        }
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

/// Where `artifact` of `model` is looked for, in order: next to the model, in
/// `calibration/<stem>/` beside it, in `calibration/<stem>/` under the working directory.
pub fn artifact_candidates(model: &Path, artifact: Artifact) -> [PathBuf; 3] {
    let dir = model.parent().unwrap_or(Path::new(""));
    let stem = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let file = artifact.file_name();
    [
        dir.join(file),
        dir.join("calibration").join(&stem).join(file),
        PathBuf::from("calibration").join(&stem).join(file),
    ]
}

/// The first existing `artifact` of `model` ([`artifact_candidates`]); `NoArtifact` says where
/// it looked and how to make one.
pub fn find_artifact(model: &Path, artifact: Artifact) -> Result<PathBuf, CalibrationError> {
    let candidates = artifact_candidates(model, artifact);
    let exists = |p: &&PathBuf| if artifact == Artifact::Tensors { p.is_dir() } else { p.is_file() };
    candidates.iter().find(exists).cloned().ok_or_else(|| CalibrationError::NoArtifact {
        model: model.display().to_string(),
        artifact,
        looked: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// Pre-processed calibration frames (`tensors/`), checked against the pre-processing of the
/// model they calibrate, read one at a time (TensorRT's calibrator asks for one batch of one).
#[derive(Debug)]
pub struct CalibrationBatches {
    dir: PathBuf,
    manifest: TensorManifest,
    next: usize,
}

impl CalibrationBatches {
    /// Opens `dir` (a `tensors/` folder). Its frames must have been made exactly as `spec`
    /// would make them (input size, mean, std, channel order), or they would calibrate another
    /// distribution.
    pub fn open(
        dir: &Path,
        spec: &crate::preprocess::PreprocSpec,
    ) -> Result<CalibrationBatches, CalibrationError> {
        let manifest = TensorManifest::read(dir)?;
        let bad = |reason: String| CalibrationError::Tensors { path: dir.to_path_buf(), reason };
        let want = [1, 3, spec.input_height, spec.input_width];
        if manifest.shape != want {
            return Err(bad(format!("they are {:?}, the model takes {want:?}", manifest.shape)));
        }
        if manifest.dtype != "float32" {
            return Err(bad(format!("they are {}, not float32", manifest.dtype)));
        }
        if manifest.mean != spec.mean
            || manifest.std != spec.std
            || manifest.channel_order != spec.channel_order.name()
        {
            return Err(bad(format!(
                "they were normalised with mean {:?}, std {:?}, {}; the model uses {:?}, {:?}, {}",
                manifest.mean,
                manifest.std,
                manifest.channel_order,
                spec.mean,
                spec.std,
                spec.channel_order.name()
            )));
        }
        if manifest.files.is_empty() {
            return Err(bad("the manifest lists no frame".into()));
        }
        Ok(CalibrationBatches { dir: dir.to_path_buf(), manifest, next: 0 })
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.manifest.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.manifest.files.is_empty()
    }

    /// The manifest, as read.
    pub fn manifest(&self) -> &TensorManifest {
        &self.manifest
    }

    /// Reads the next frame into `out` (1 x 3 x H x W floats); `Ok(false)` after the last.
    pub fn next_into(&mut self, out: &mut [f32]) -> Result<bool, CalibrationError> {
        if self.next >= self.manifest.files.len() {
            return Ok(false);
        }
        let values = self.manifest.tensor(&self.dir, self.next)?;
        if values.len() != out.len() {
            return Err(CalibrationError::Tensors {
                path: self.dir.join(&self.manifest.files[self.next]),
                reason: format!("{} values, the network takes {}", values.len(), out.len()),
            });
        }
        out.copy_from_slice(&values);
        self.next += 1;
        Ok(true)
    }
}

/// How a calibrated (implicit) int8 TensorRT build gets its scales.
#[derive(Debug, Clone, PartialEq)]
pub enum CalibrationPlan {
    /// A cache written for this TensorRT version: TensorRT reads its scales, no frame is run.
    UseCache { path: PathBuf, bytes: Vec<u8> },
    /// No cache fits this TensorRT (`stale` says why): calibrate on the frames in `tensors`.
    Recalibrate { tensors: PathBuf, stale: String },
}

/// A calibration cache to consider: a file, or bytes carried by the binary.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheCandidate {
    File(PathBuf),
    Bytes { name: String, bytes: Vec<u8> },
}

/// Picks the first of `caches` whose header names TensorRT `running` (as TensorRT writes it:
/// 8502, 100300) and the entropy calibrator; else recalibration from `tensors`. TensorRT would
/// silently ignore a cache of another version; this says so. Missing files are skipped.
pub fn plan_calibration(
    model: &str,
    caches: &[CacheCandidate],
    tensors: Option<&Path>,
    running: i32,
) -> Result<CalibrationPlan, CalibrationError> {
    let mut stale = Vec::new();
    for candidate in caches {
        let (path, text) = match candidate {
            CacheCandidate::File(path) if path.is_file() => {
                let mut bytes = Vec::new();
                crate::files::read_input(path, 64 << 20, &mut bytes)
                    .map_err(|e| CalibrationError::Read { path: path.clone(), reason: e.to_string() })?;
                (path.clone(), String::from_utf8_lossy(&bytes).into_owned())
            }
            CacheCandidate::File(_) => continue,
            CacheCandidate::Bytes { name, bytes } => {
                (PathBuf::from(name), String::from_utf8_lossy(bytes).into_owned())
            }
        };
        let cache = CalibrationCache::parse(&text, &path)?;
        if cache.trt_version as i32 == running && cache.algorithm == CACHE_ALGORITHM {
            return Ok(CalibrationPlan::UseCache { path, bytes: text.into_bytes() });
        }
        stale.push(format!(
            "{} was written for TensorRT {} ({})",
            path.display(),
            cache.trt_version,
            cache.algorithm
        ));
    }
    let stale = if stale.is_empty() {
        format!("no calibration cache for {model}")
    } else {
        format!("{}, and this is TensorRT {running}", stale.join("; "))
    };
    match tensors.filter(|t| t.join(MANIFEST_FILE).is_file()) {
        Some(dir) => Ok(CalibrationPlan::Recalibrate { tensors: dir.to_path_buf(), stale }),
        None => Err(CalibrationError::NoCalibration {
            model: model.to_string(),
            stale,
            looked: tensors.map_or("none found".into(), |t| t.display().to_string()),
            running,
        }),
    }
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
    fn artifacts_are_found_beside_or_in_calibration() {
        let dir = tempfile::tempdir().unwrap();
        let fp32 = dir.path().join("drive.onnx");
        std::fs::write(&fp32, b"x").unwrap();
        let e = find_artifact(&fp32, Artifact::QOperator).unwrap_err().to_string();
        assert!(e.contains("semask-train quantize") && e.contains("--precision fp32"), "{e}");
        let e = find_artifact(&fp32, Artifact::Fp16).unwrap_err().to_string();
        assert!(e.contains("--precision fp16") && e.contains("semask-train export --precision fp16"), "{e}");
        let folder = dir.path().join("calibration/drive");
        std::fs::create_dir_all(folder.join(TENSORS_DIR)).unwrap();
        std::fs::write(folder.join(QOP_MODEL), b"x").unwrap();
        assert_eq!(find_artifact(&fp32, Artifact::QOperator).unwrap(), folder.join(QOP_MODEL));
        assert_eq!(find_artifact(&fp32, Artifact::Tensors).unwrap(), folder.join(TENSORS_DIR));
        std::fs::write(dir.path().join(QOP_MODEL), b"x").unwrap();
        assert_eq!(find_artifact(&fp32, Artifact::QOperator).unwrap(), dir.path().join(QOP_MODEL));
        assert!(find_artifact(&fp32, Artifact::Qdq).is_err());
    }

    #[test]
    fn a_cache_is_used_only_for_its_tensorrt_version() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, version: u32| {
            let cache = CalibrationCache {
                trt_version: version,
                algorithm: CACHE_ALGORITHM.into(),
                scales: vec![("input".into(), 0.02)],
            };
            let path = dir.path().join(name);
            std::fs::write(&path, cache.to_text()).unwrap();
            path
        };
        let old = write("old.cache", 8502);
        let new = write("new.cache", 100300);
        let tensors = dir.path().join("tensors");
        // The matching one wins whatever its place.
        let file = |p: &PathBuf| CacheCandidate::File(p.clone());
        let plan = plan_calibration("m", &[file(&old), file(&new)], None, 100300).unwrap();
        assert!(matches!(plan, CalibrationPlan::UseCache { ref path, .. } if *path == new));
        // Carried bytes count like files.
        let carried = CacheCandidate::Bytes { name: "built-in".into(), bytes: std::fs::read(&new).unwrap() };
        assert!(matches!(
            plan_calibration("m", &[carried], None, 100300),
            Ok(CalibrationPlan::UseCache { .. })
        ));
        // None matches: recalibrate when the tensors exist, with the reason; else an error.
        let e = plan_calibration("m", &[file(&old)], Some(&tensors), 100300).unwrap_err().to_string();
        assert!(e.contains("8502") && e.contains("100300") && e.contains("--trt-version 100300"), "{e}");
        std::fs::create_dir(&tensors).unwrap();
        std::fs::write(tensors.join(MANIFEST_FILE), "{}").unwrap();
        match plan_calibration(
            "m",
            &[file(&old), file(&dir.path().join("missing.cache"))],
            Some(&tensors),
            100300,
        )
        .unwrap()
        {
            CalibrationPlan::Recalibrate { tensors: t, stale } => {
                assert_eq!(t, tensors);
                assert!(stale.contains("TensorRT 8502"), "{stale}");
            }
            other => panic!("{other:?}"),
        }
        // A corrupt cache is an error naming it, not a silent recalibration.
        std::fs::write(dir.path().join("bad.cache"), "TRT-x\n").unwrap();
        assert!(
            plan_calibration("m", &[file(&dir.path().join("bad.cache"))], Some(&tensors), 100300).is_err()
        );
    }
}
