//! The engine cache. Building a TensorRT engine takes minutes on a Jetson, so each engine is
//! kept under `$XDG_CACHE_HOME/semask-edge/engines/` (or `--engine-cache DIR`) as
//! `<model stem>-<key digest>.engine`, with a JSON sidecar (`.engine.json`) that says what it
//! is: the [`EngineKey`] it was built for, the engine's own SHA-256 and length, the model's
//! `semask.*` metadata (so `run -m x.engine` knows the classes), and how long the build took.
//!
//! The key is everything that makes an engine valid: the model file's bytes (SHA-256), the
//! calibration data of an implicit int8 build, the TensorRT version, the GPU and its compute
//! capability, the precision, the input shape and the builder options. Nothing else (paths,
//! thread counts) enters it. A key mismatch is simply another file; a truncated or corrupt
//! engine (length or hash wrong, sidecar unreadable, or TensorRT refusing to deserialize it) is
//! rebuilt with a warning. Files are written whole or not at all ([`crate::files`]).

use std::path::{Path, PathBuf};

use super::BuildPrecision;

/// What an engine was built from and for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineKey {
    /// SHA-256 of the ONNX file TensorRT parsed.
    pub model_sha256: String,
    /// Implicit int8: SHA-256 of the calibration data (cache, or calibration tensors' manifest).
    pub calibration_sha256: Option<String>,
    /// `10.3.0`.
    pub tensorrt: String,
    pub gpu: String,
    /// `8.7`.
    pub compute_capability: String,
    pub precision: BuildPrecision,
    /// `[1, 3, H, W]`.
    pub input_shape: [usize; 4],
    pub builder: BuilderSettings,
}

/// The builder options that change an engine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuilderSettings {
    /// Workspace limit in MiB (0: TensorRT's default).
    pub workspace_mib: u64,
    /// Builder optimisation level 0-5 (`None`: TensorRT's default).
    pub optimization_level: Option<u32>,
    /// DLA core, with GPU fallback (`None`: GPU only).
    pub dla_core: Option<u32>,
    /// LayerNorm, Softmax and GELU pinned to fp32 under fp16 / calibrated int8.
    pub keep_sensitive_fp32: bool,
    /// The one output computed (the logits).
    pub output: String,
}

impl EngineKey {
    /// Lower-case hex SHA-256 of the key's JSON: the same for the same key, different as soon
    /// as one part differs.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("an engine key serialises");
        crate::model::sha256_hex(&json)
    }
}

/// The JSON written next to each engine.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sidecar {
    pub key: EngineKey,
    pub engine_sha256: String,
    pub engine_bytes: u64,
    /// The model the engine was built from, as named when it was built.
    pub model: String,
    /// The model's `metadata_props` (classes, palette, mean, std, logits output…).
    pub metadata: std::collections::BTreeMap<String, String>,
    pub built_by: String,
    pub build_seconds: f64,
}

/// Why a cached entry was not used.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The engine's bytes, whole and for this key.
    Hit(Vec<u8>),
    /// No entry for this key.
    Miss,
    /// An entry exists but cannot be used (the reason): it is rebuilt.
    Invalid(String),
}

/// Where engines are kept.
#[derive(Debug, Clone)]
pub struct EngineCache {
    dir: PathBuf,
}

/// How an engine came to be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineOrigin {
    Cached(PathBuf),
    Built(PathBuf),
}

impl EngineOrigin {
    pub fn path(&self) -> &Path {
        match self {
            EngineOrigin::Cached(p) | EngineOrigin::Built(p) => p,
        }
    }
}

impl EngineCache {
    /// `$XDG_CACHE_HOME/semask-edge/engines`, else `~/.cache/semask-edge/engines`, else
    /// `./.semask-edge-cache/engines`.
    pub fn default_dir() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache"))
            })
            .unwrap_or_else(|| PathBuf::from(".semask-edge-cache"));
        base.join("semask-edge").join("engines")
    }

    pub fn new(dir: impl Into<PathBuf>) -> EngineCache {
        EngineCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine file and its sidecar for `key` of a model named `stem`.
    pub fn paths(&self, key: &EngineKey, stem: &str) -> (PathBuf, PathBuf) {
        let stem: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
            .collect();
        let engine = self.dir.join(format!("{stem}-{}.engine", &key.digest()[..16]));
        let sidecar = sidecar_path(&engine);
        (engine, sidecar)
    }

    /// The cached engine for `key`, checked against its sidecar (key, length, hash).
    pub fn lookup(&self, key: &EngineKey, stem: &str) -> Lookup {
        let (engine, sidecar) = self.paths(key, stem);
        if !engine.exists() && !sidecar.exists() {
            return Lookup::Miss;
        }
        match read_checked(&engine, &sidecar) {
            Ok((side, bytes)) if side.key == *key => Lookup::Hit(bytes),
            Ok(_) => Lookup::Invalid(format!("{} was built for another key", sidecar.display())),
            Err(reason) => Lookup::Invalid(reason),
        }
    }

    /// Writes `plan` and its sidecar (engine first; each whole or not at all).
    pub fn store(
        &self,
        key: &EngineKey,
        stem: &str,
        plan: &[u8],
        sidecar: &Sidecar,
    ) -> std::io::Result<PathBuf> {
        let (engine, sidecar_file) = self.paths(key, stem);
        std::fs::create_dir_all(&self.dir)?;
        crate::files::write_atomically(&engine, plan)?;
        let json = serde_json::to_string_pretty(sidecar).expect("a sidecar serialises") + "\n";
        crate::files::write_atomically(&sidecar_file, json.as_bytes())?;
        Ok(engine)
    }

    /// The engine for `key`: the cached one if it is whole and `load` accepts it, else one made
    /// by `build` (`(plan, sidecar)`), stored, and loaded. A cached entry that fails is
    /// reported with `log::warn!` and rebuilt; a freshly built one that fails is an error.
    pub fn load_or_build<T>(
        &self,
        key: &EngineKey,
        stem: &str,
        mut build: impl FnMut() -> Result<(Vec<u8>, Sidecar), String>,
        mut load: impl FnMut(&[u8]) -> Result<T, String>,
    ) -> Result<(T, EngineOrigin), String> {
        let (path, _) = self.paths(key, stem);
        match self.lookup(key, stem) {
            Lookup::Hit(plan) => match load(&plan) {
                Ok(loaded) => return Ok((loaded, EngineOrigin::Cached(path))),
                Err(e) => {
                    log::warn!("cached engine {} cannot be loaded ({e}); rebuilding it", path.display())
                }
            },
            Lookup::Invalid(reason) => log::warn!("cached engine unusable ({reason}); rebuilding it"),
            Lookup::Miss => {}
        }
        let (plan, sidecar) = build()?;
        let stored = self
            .store(key, stem, &plan, &sidecar)
            .map_err(|e| format!("cannot write the engine cache {}: {e}", self.dir.display()))?;
        let loaded = load(&plan).map_err(|e| format!("the engine just built cannot be loaded: {e}"))?;
        Ok((loaded, EngineOrigin::Built(stored)))
    }
}

/// `x.engine.json` for `x.engine`.
pub fn sidecar_path(engine: &Path) -> PathBuf {
    let mut name = engine.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// A sidecar and its engine's bytes, the engine checked against the sidecar's length and hash.
pub fn read_checked(engine: &Path, sidecar: &Path) -> Result<(Sidecar, Vec<u8>), String> {
    let mut text = Vec::new();
    crate::files::read_input(sidecar, 1 << 20, &mut text)
        .map_err(|e| format!("{}: {e}", sidecar.display()))?;
    let side: Sidecar = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not an engine sidecar: {e}", sidecar.display()))?;
    let mut plan = Vec::new();
    crate::files::read_input(engine, side.engine_bytes, &mut plan)
        .map_err(|e| format!("{}: {e}", engine.display()))?;
    if plan.len() as u64 != side.engine_bytes {
        return Err(format!(
            "{} is {} bytes, its sidecar says {} (truncated)",
            engine.display(),
            plan.len(),
            side.engine_bytes
        ));
    }
    if crate::model::sha256_hex(&plan) != side.engine_sha256 {
        return Err(format!("{} does not match its sidecar's SHA-256 (corrupt)", engine.display()));
    }
    Ok((side, plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn key() -> EngineKey {
        EngineKey {
            model_sha256: "ab".repeat(32),
            calibration_sha256: None,
            tensorrt: "10.3.0".into(),
            gpu: "Orin".into(),
            compute_capability: "8.7".into(),
            precision: BuildPrecision::Fp16,
            input_shape: [1, 3, 512, 1024],
            builder: BuilderSettings {
                workspace_mib: 0,
                optimization_level: None,
                dla_core: None,
                keep_sensitive_fp32: true,
                output: "logits".into(),
            },
        }
    }

    fn sidecar(plan: &[u8]) -> Sidecar {
        Sidecar {
            key: key(),
            engine_sha256: crate::model::sha256_hex(plan),
            engine_bytes: plan.len() as u64,
            model: "m.onnx".into(),
            metadata: Default::default(),
            built_by: "test".into(),
            build_seconds: 0.0,
        }
    }

    #[test]
    fn every_key_part_changes_the_digest_and_nothing_else_does() {
        let base = key();
        assert_eq!(base.digest(), key().digest());
        let round_trip: EngineKey = serde_json::from_str(&serde_json::to_string(&base).unwrap()).unwrap();
        assert_eq!(round_trip.digest(), base.digest());
        type Change = Box<dyn Fn(&mut EngineKey)>;
        let variants: Vec<Change> = vec![
            Box::new(|k| k.model_sha256 = "cd".repeat(32)),
            Box::new(|k| k.calibration_sha256 = Some("ef".repeat(32))),
            Box::new(|k| k.tensorrt = "10.3.1".into()),
            Box::new(|k| k.gpu = "NVIDIA H200".into()),
            Box::new(|k| k.compute_capability = "9.0".into()),
            Box::new(|k| k.precision = BuildPrecision::Int8Qdq),
            Box::new(|k| k.precision = BuildPrecision::Int8Calibrated),
            Box::new(|k| k.precision = BuildPrecision::Fp32),
            Box::new(|k| k.input_shape = [1, 3, 512, 512]),
            Box::new(|k| k.builder.workspace_mib = 1024),
            Box::new(|k| k.builder.optimization_level = Some(5)),
            Box::new(|k| k.builder.dla_core = Some(0)),
            Box::new(|k| k.builder.keep_sensitive_fp32 = false),
            Box::new(|k| k.builder.output = "logits_up".into()),
        ];
        let mut seen = std::collections::HashSet::from([base.digest()]);
        for change in &variants {
            let mut k = key();
            change(&mut k);
            assert!(seen.insert(k.digest()), "{k:?} collides");
        }
        // The same key for a model stored elsewhere is the same file name.
        let cache = EngineCache::new("/tmp/x");
        assert_eq!(cache.paths(&base, "semask-t").0, cache.paths(&key(), "semask-t").0);
    }

    #[test]
    fn corrupt_truncated_or_foreign_entries_are_rebuilt_and_good_ones_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = EngineCache::new(dir.path().join("engines"));
        let plan = b"PLAN-bytes-of-an-engine".to_vec();
        let builds = Cell::new(0);
        let build = || {
            builds.set(builds.get() + 1);
            Ok((plan.clone(), sidecar(&plan)))
        };
        let load = |bytes: &[u8]| {
            if bytes == plan.as_slice() { Ok(bytes.len()) } else { Err("bad plan".to_string()) }
        };
        let (_, origin) = cache.load_or_build(&key(), "m", build, load).unwrap();
        assert!(matches!(origin, EngineOrigin::Built(_)));
        let (_, origin) = cache.load_or_build(&key(), "m", build, load).unwrap();
        assert!(matches!(origin, EngineOrigin::Cached(_)));
        assert_eq!(builds.get(), 1);

        let (engine, side) = cache.paths(&key(), "m");
        let damage: Vec<Box<dyn Fn()>> = vec![
            Box::new(|| std::fs::write(&engine, &plan[..plan.len() / 2]).unwrap()), // truncated
            Box::new(|| {
                let mut bad = plan.clone();
                bad[3] ^= 0xFF;
                std::fs::write(&engine, bad).unwrap() // same length, other bytes
            }),
            Box::new(|| std::fs::write(&side, "{not json").unwrap()),
            Box::new(|| std::fs::remove_file(&side).unwrap()),
            Box::new(|| std::fs::remove_file(&engine).unwrap()),
            Box::new(|| {
                let mut other = sidecar(&plan);
                other.key.gpu = "another GPU".into();
                std::fs::write(&side, serde_json::to_string(&other).unwrap()).unwrap()
            }),
        ];
        for (i, damage) in damage.iter().enumerate() {
            damage();
            let (_, origin) = cache.load_or_build(&key(), "m", build, load).unwrap();
            assert!(matches!(origin, EngineOrigin::Built(_)), "case {i}");
            assert_eq!(builds.get(), 2 + i, "case {i}");
            assert!(matches!(cache.lookup(&key(), "m"), Lookup::Hit(_)), "case {i} was repaired");
        }
        // TensorRT refusing a whole cached engine (another driver, say) also rebuilds.
        let refuse_once = Cell::new(true);
        let (_, origin) = cache
            .load_or_build(&key(), "m", build, |bytes| {
                if refuse_once.replace(false) { Err("deserialize failed".into()) } else { load(bytes) }
            })
            .unwrap();
        assert!(matches!(origin, EngineOrigin::Built(_)));
        // A build that fails is the error.
        let failed = cache.load_or_build(&key(), "other", || Err("parser: node 3".to_string()), load);
        assert_eq!(failed.unwrap_err(), "parser: node 3");
        assert!(
            !dir.path()
                .join("engines")
                .read_dir()
                .unwrap()
                .any(|e| { e.unwrap().file_name().to_string_lossy().ends_with(".partial") })
        );
    }
}
