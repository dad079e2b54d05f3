//! Device profiles (`targets/*.toml`): what the runtime does by default on a Jetson model, an x86
//! machine with an NVIDIA GPU, or a plain CPU. A profile gives the `auto` backend ladder, the
//! precision, CPU threads, an input size for models whose size is dynamic, the TensorRT builder
//! settings, camera defaults, and the JetPack / TensorRT / CUDA versions the device is expected
//! to run. Flags always win over the profile.
//!
//! The profile is chosen from `/proc/device-tree/model` (Jetsons) or the presence of the NVIDIA
//! driver (`/proc/driver/nvidia/version`), or with `--target NAME|FILE`. The shipped profiles
//! are compiled into the binary. Every file is read strictly: an unknown key, a missing one or
//! a bad value is an error naming the file, the key and what is allowed.
//!
//! ```toml
//! name = "jetson-orin-nano"
//! description = "Jetson Orin Nano 4/8 GB: Ampere GPU, 6 Cortex-A78AE cores, no DLA"
//! device_tree = ["Orin Nano"]            # substrings of /proc/device-tree/model
//!
//! [[jetpack]]                            # what the device runs, newest last
//! jetpack = "6.2"
//! l4t = "36.4"
//! tensorrt = "10.3"
//! cuda = "12.6"
//!
//! [inference]
//! backends = ["tensorrt", "cuda", "cpu"] # the `auto` ladder
//! precision = "int8"
//! threads = 6                            # CPU backend (0 = all cores)
//! upsample = "fast"
//! # input_height = 512, input_width = 1024: only for models whose input size is dynamic
//!
//! [tensorrt]
//! workspace_mib = 1024
//! optimization_level = 3                 # optional
//! dla_core = 0                           # optional: DLA with GPU fallback
//! int8 = "qdq"
//!
//! [camera]
//! width = 1280
//! height = 720
//! rate = 30
//! pixel_format = "MJPG"                  # MJPG, YUYV or NV12
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backend::BackendKind;
use crate::backend::tensorrt::Int8Mode;
use crate::calibration::Precision;
use crate::named::{self, Named};
use crate::postprocess::Upsample;

/// The shipped profiles, compiled in: (file name, text).
pub const BUILTIN: [(&str, &str); 7] = [
    ("jetson-orin-nano.toml", include_str!("../targets/jetson-orin-nano.toml")),
    ("jetson-orin-nx.toml", include_str!("../targets/jetson-orin-nx.toml")),
    ("jetson-agx-orin.toml", include_str!("../targets/jetson-agx-orin.toml")),
    ("jetson-xavier-nx.toml", include_str!("../targets/jetson-xavier-nx.toml")),
    ("jetson-thor.toml", include_str!("../targets/jetson-thor.toml")),
    ("x86-cuda.toml", include_str!("../targets/x86-cuda.toml")),
    ("cpu.toml", include_str!("../targets/cpu.toml")),
];

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("no device profile named {name:?}; the shipped ones are {known}, or give a .toml file")]
    Unknown { name: String, known: String },
}

/// A versions row: what a JetPack release ships.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct JetPack {
    pub jetpack: String,
    pub l4t: String,
    pub tensorrt: String,
    pub cuda: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    description: String,
    #[serde(default)]
    device_tree: Vec<String>,
    #[serde(default)]
    jetpack: Vec<JetPack>,
    inference: RawInference,
    #[serde(default)]
    tensorrt: RawTensorRt,
    #[serde(default)]
    camera: RawCamera,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInference {
    backends: Vec<String>,
    precision: String,
    threads: usize,
    upsample: String,
    input_height: Option<usize>,
    input_width: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensorRt {
    #[serde(default)]
    workspace_mib: u64,
    optimization_level: Option<u32>,
    dla_core: Option<u32>,
    int8: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    width: Option<u32>,
    height: Option<u32>,
    rate: Option<f64>,
    pixel_format: Option<String>,
}

/// A device profile, checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Where it was read from (`built-in targets/x.toml`, or a path).
    pub source: String,
    pub device_tree: Vec<String>,
    pub jetpack: Vec<JetPack>,
    /// The `auto` ladder.
    pub backends: Vec<BackendKind>,
    pub precision: Precision,
    /// CPU backend threads (0 = all cores).
    pub threads: usize,
    pub upsample: Upsample,
    /// `(height, width)` for models whose input size is dynamic.
    pub input_size: Option<(usize, usize)>,
    pub tensorrt_workspace_mib: u64,
    pub tensorrt_optimization_level: Option<u32>,
    pub tensorrt_dla_core: Option<u32>,
    pub tensorrt_int8: Int8Mode,
    pub camera_width: Option<u32>,
    pub camera_height: Option<u32>,
    pub camera_rate: Option<f64>,
    /// FourCC preferred first when a camera offers it.
    pub camera_pixel_format: Option<[u8; 4]>,
}

/// Pixel formats a camera profile may ask for.
pub const PIXEL_FORMATS: [&str; 3] = ["MJPG", "YUYV", "NV12"];

impl Profile {
    /// Parses and checks a profile's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Profile, ProfileError> {
        let bad = |reason: String| ProfileError::Invalid { file: file.to_string(), reason };
        let raw: RawProfile = toml::from_str(text).map_err(|e| bad(one_line(&e.to_string())))?;
        let allowed = |key: &str, value: &str, choices: &[&str]| {
            bad(format!("{key} = {value:?} is not allowed; use one of {}", choices.join(", ")))
        };
        let mut backends = Vec::new();
        // A ladder names real backends; "auto" (which means "follow the ladder") is not one.
        let rungs: Vec<&str> = BackendKind::names().into_iter().filter(|&n| n != "auto").collect();
        for name in &raw.inference.backends {
            let kind = match named::parse::<BackendKind>(name) {
                Ok(kind) if kind != BackendKind::Auto => kind,
                _ => return Err(allowed("inference.backends", name, &rungs)),
            };
            if backends.contains(&kind) {
                return Err(bad(format!("inference.backends lists {name} twice")));
            }
            backends.push(kind);
        }
        if backends.is_empty() {
            return Err(bad("inference.backends is empty; list at least \"cpu\"".into()));
        }
        let precision = named::parse::<Precision>(&raw.inference.precision)
            .map_err(|e| allowed("inference.precision", &e.given, &e.allowed))?;
        let upsample = named::parse::<Upsample>(&raw.inference.upsample)
            .map_err(|e| allowed("inference.upsample", &e.given, &e.allowed))?;
        if raw.inference.threads > 256 {
            return Err(bad(format!(
                "inference.threads = {} is not allowed; use 0 (all cores) to 256",
                raw.inference.threads
            )));
        }
        let input_size = match (raw.inference.input_height, raw.inference.input_width) {
            (None, None) => None,
            (Some(h), Some(w)) if (1..=65535).contains(&h) && (1..=65535).contains(&w) => Some((h, w)),
            (Some(_), Some(_)) => {
                return Err(bad("inference.input_height and input_width must be 1 to 65535".into()));
            }
            _ => {
                return Err(bad(
                    "give both inference.input_height and inference.input_width, or neither".into()
                ));
            }
        };
        let int8 = match raw.tensorrt.int8.as_deref() {
            None => Int8Mode::Qdq,
            Some(text) => named::parse(text).map_err(|e| allowed("tensorrt.int8", text, &e.allowed))?,
        };
        if raw.tensorrt.optimization_level.is_some_and(|l| l > 5) {
            return Err(bad("tensorrt.optimization_level must be 0 to 5".into()));
        }
        if raw.tensorrt.dla_core.is_some_and(|c| c > 3) {
            return Err(bad("tensorrt.dla_core must be 0 to 3".into()));
        }
        if raw.tensorrt.workspace_mib > 1 << 20 {
            return Err(bad("tensorrt.workspace_mib must be at most 1048576".into()));
        }
        for (key, value) in [("camera.width", raw.camera.width), ("camera.height", raw.camera.height)] {
            if value.is_some_and(|v| v == 0 || v > 65535) {
                return Err(bad(format!("{key} must be 1 to 65535")));
            }
        }
        if let Some(rate) = raw.camera.rate {
            crate::limits::check_fps(rate, "camera.rate").map_err(|e| bad(e.to_string()))?;
        }
        let camera_pixel_format = match raw.camera.pixel_format.as_deref() {
            None => None,
            Some(f) if PIXEL_FORMATS.contains(&f) => Some(f.as_bytes().try_into().expect("4 bytes")),
            Some(other) => return Err(allowed("camera.pixel_format", other, &PIXEL_FORMATS)),
        };
        if raw.name.is_empty() {
            return Err(bad("name is empty".into()));
        }
        Ok(Profile {
            name: raw.name,
            description: raw.description,
            source: file.to_string(),
            device_tree: raw.device_tree,
            jetpack: raw.jetpack,
            backends,
            precision,
            threads: raw.inference.threads,
            upsample,
            input_size,
            tensorrt_workspace_mib: raw.tensorrt.workspace_mib,
            tensorrt_optimization_level: raw.tensorrt.optimization_level,
            tensorrt_dla_core: raw.tensorrt.dla_core,
            tensorrt_int8: int8,
            camera_width: raw.camera.width,
            camera_height: raw.camera.height,
            camera_rate: raw.camera.rate,
            camera_pixel_format,
        })
    }

    /// Every shipped profile.
    pub fn builtin() -> Vec<Profile> {
        BUILTIN
            .iter()
            .map(|(file, text)| {
                Profile::parse(text, &format!("built-in targets/{file}"))
                    .expect("shipped profiles are tested")
            })
            .collect()
    }

    /// `--target NAME|FILE`: a shipped profile by name, or a `.toml` file.
    pub fn load(target: &str) -> Result<Profile, ProfileError> {
        let path = Path::new(target);
        if target.ends_with(".toml") || path.components().count() > 1 {
            let mut bytes = Vec::new();
            crate::files::read_input(path, 1 << 20, &mut bytes)
                .map_err(|e| ProfileError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
            let text = String::from_utf8(bytes).map_err(|_| ProfileError::Invalid {
                file: target.to_string(),
                reason: "is not UTF-8 text".into(),
            })?;
            return Profile::parse(&text, target);
        }
        let all = Profile::builtin();
        all.iter().find(|p| p.name == target).cloned().ok_or_else(|| ProfileError::Unknown {
            name: target.to_string(),
            known: all.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// A TOML error on one line: where, the line itself, then what (`TOML parse error at line 9,
/// column 11 (threads = "many"): invalid type: ...`).
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let source = lines.iter().find_map(|l| {
        let (number, rest) = l.split_once(" | ")?;
        number.trim().chars().all(|c| c.is_ascii_digit()).then(|| rest.trim())
    });
    match (lines.first(), lines.last(), source) {
        (Some(first), Some(last), Some(source)) if lines.len() > 1 => format!("{first} ({source}): {last}"),
        (Some(first), Some(last), None) if lines.len() > 1 => format!("{first}: {last}"),
        _ => lines.join(" "),
    }
}

/// Where the device facts are read: `/` normally, a fake root in tests (`doctor --sysroot`).
#[derive(Debug, Clone)]
pub struct Sysroot(pub PathBuf);

impl Default for Sysroot {
    fn default() -> Self {
        Sysroot(PathBuf::from("/"))
    }
}

impl Sysroot {
    /// `path` (absolute) under this root.
    pub fn path(&self, path: &str) -> PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }

    /// A small text file under this root, if it exists and is readable.
    pub fn read(&self, path: &str) -> Option<String> {
        let mut bytes = Vec::new();
        crate::files::read_input(&self.path(path), 1 << 20, &mut bytes).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `/proc/device-tree/model` (NUL-terminated on Jetsons).
    pub fn device_tree_model(&self) -> Option<String> {
        self.read("/proc/device-tree/model")
            .map(|m| m.trim_end_matches('\0').trim().to_string())
            .filter(|m| !m.is_empty())
    }

    /// The L4T release from `/etc/nv_tegra_release` (`# R36 (release), REVISION: 4.0, ...`).
    pub fn l4t(&self) -> Option<L4t> {
        L4t::parse(&self.read("/etc/nv_tegra_release")?)
    }

    /// The NVIDIA driver version of a desktop/server machine (`/proc/driver/nvidia/version`).
    pub fn nvidia_driver(&self) -> Option<String> {
        let text = self.read("/proc/driver/nvidia/version")?;
        let line = text.lines().next()?;
        // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 ..."
        let version = line
            .split_whitespace()
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'));
        Some(version.unwrap_or(line).to_string())
    }
}

/// An L4T (Linux for Tegra) release, and the JetPack it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct L4t {
    pub major: u32,
    pub revision: String,
}

impl L4t {
    pub fn parse(text: &str) -> Option<L4t> {
        let line = text.lines().next()?;
        let major = line.split_whitespace().find_map(|w| w.strip_prefix('R'))?.parse().ok()?;
        let revision = line
            .split(',')
            .find_map(|part| part.trim().strip_prefix("REVISION:"))
            .map(|r| r.trim().to_string())
            .unwrap_or_default();
        Some(L4t { major, revision })
    }

    /// `36.4.0`.
    pub fn version(&self) -> String {
        format!("{}.{}", self.major, self.revision)
    }

    /// The JetPack release this L4T ships in (DESIGN.md's Jetson facts).
    pub fn jetpack(&self) -> &'static str {
        let minor: u32 = self.revision.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
        match (self.major, minor) {
            (35, _) => "5.1",
            (36, 0..=3) => "6.0",
            (36, _) => "6.1/6.2",
            (38, _) => "7",
            (32, _) => "4.x (too old: JetPack 5.1 or newer is supported)",
            _ => "unknown",
        }
    }
}

/// The profile for this machine and why: the most specific `device_tree` match of a Jetson's
/// model string, else `x86-cuda` when an NVIDIA driver is loaded, else `cpu`.
pub fn detect(profiles: &[Profile], sys: &Sysroot) -> (Profile, String) {
    let by_name = |name: &str| profiles.iter().find(|p| p.name == name).cloned().expect("shipped profile");
    if let Some(model) = sys.device_tree_model() {
        let lower = model.to_lowercase();
        let best = profiles
            .iter()
            .flat_map(|p| p.device_tree.iter().map(move |m| (p, m)))
            .filter(|(_, m)| lower.contains(&m.to_lowercase()))
            .max_by_key(|(_, m)| m.len());
        if let Some((profile, matched)) = best {
            return (profile.clone(), format!("/proc/device-tree/model is {model:?} (matches {matched:?})"));
        }
        if lower.contains("jetson") || lower.contains("nvidia") {
            return (
                by_name("cpu"),
                format!(
                    "/proc/device-tree/model is {model:?}, which no profile knows: using cpu (give --target)"
                ),
            );
        }
    }
    if let Some(driver) = sys.nvidia_driver() {
        return (by_name("x86-cuda"), format!("NVIDIA driver {driver} loaded (/proc/driver/nvidia/version)"));
    }
    (by_name("cpu"), "no Jetson device tree and no NVIDIA driver".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_parse_and_are_named_after_their_files() {
        let profiles = Profile::builtin();
        assert_eq!(profiles.len(), 7);
        for (profile, (file, _)) in profiles.iter().zip(BUILTIN) {
            assert_eq!(format!("{}.toml", profile.name), file);
            assert!(profile.backends.contains(&BackendKind::Cpu), "{}: no CPU rung", profile.name);
            if profile.name.starts_with("jetson") {
                assert!(!profile.jetpack.is_empty() && !profile.device_tree.is_empty(), "{}", profile.name);
                assert_eq!(profile.backends[0], BackendKind::TensorRt, "{}", profile.name);
            }
        }
    }

    fn sysroot(files: &[(&str, &str)]) -> (tempfile::TempDir, Sysroot) {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let root = Sysroot(dir.path().to_path_buf());
        (dir, root)
    }

    #[test]
    fn every_jetson_model_string_picks_its_profile() {
        let profiles = Profile::builtin();
        for (model, expected) in [
            ("NVIDIA Jetson Orin Nano Developer Kit\0", "jetson-orin-nano"),
            ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\0", "jetson-orin-nano"),
            ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit\0", "jetson-orin-nx"),
            ("Jetson AGX Orin Developer Kit\0", "jetson-agx-orin"),
            ("NVIDIA Jetson AGX Orin Developer Kit\0", "jetson-agx-orin"),
            ("NVIDIA Jetson Xavier NX Developer Kit\0", "jetson-xavier-nx"),
            ("NVIDIA Jetson AGX Thor Developer Kit\0", "jetson-thor"),
            ("NVIDIA Jetson TX2\0", "cpu"),
        ] {
            let (_dir, sys) = sysroot(&[("/proc/device-tree/model", model)]);
            let (profile, why) = detect(&profiles, &sys);
            assert_eq!(profile.name, expected, "{model:?}: {why}");
        }
        let (_dir, sys) = sysroot(&[(
            "/proc/driver/nvidia/version",
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 01:44:30 UTC 2024\n",
        )]);
        let (profile, why) = detect(&profiles, &sys);
        assert_eq!(profile.name, "x86-cuda");
        assert!(why.contains("550.54.14"), "{why}");
        let (_dir, sys) = sysroot(&[]);
        assert_eq!(detect(&profiles, &sys).0.name, "cpu");
    }

    #[test]
    fn l4t_releases_name_their_jetpack() {
        for (line, version, jetpack) in [
            (
                "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64",
                "35.4.1",
                "5.1",
            ),
            (
                "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64",
                "36.3.0",
                "6.0",
            ),
            (
                "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64",
                "36.4.3",
                "6.1/6.2",
            ),
            ("# R38 (release), REVISION: 2.0, GCID: 1, BOARD: generic, EABI: aarch64", "38.2.0", "7"),
        ] {
            let l4t = L4t::parse(line).unwrap();
            assert_eq!((l4t.version().as_str(), l4t.jetpack()), (version, jetpack));
        }
        assert!(L4t::parse("garbage").is_none());
    }

    #[test]
    fn bad_profiles_name_the_file_the_key_and_the_allowed_values() {
        let good = BUILTIN[6].1;
        for (edit, needles) in [
            (
                good.replace("precision = \"fp32\"", "precision = \"fp64\""),
                vec!["inference.precision", "fp64", "fp32, fp16, int8"],
            ),
            (
                good.replace("backends = [\"cpu\"]", "backends = [\"gpu\"]"),
                vec!["inference.backends", "tensorrt, cuda, cpu"],
            ),
            (good.replace("[inference]", "[inference]\nprecison = \"int8\""), vec!["precison"]),
            (
                good.replace("upsample = \"exact\"", "upsample = \"bilinear\""),
                vec!["inference.upsample", "fast, exact"],
            ),
            (good.replace("threads = 0", "threads = 100000"), vec!["inference.threads", "256"]),
            (good.replace("threads = 0", "threads = \"many\""), vec!["threads"]),
            (
                format!("{good}\n[camera]\npixel_format = \"RGB3\"\n"),
                vec!["camera.pixel_format", "MJPG, YUYV, NV12"],
            ),
            (format!("{good}\n[camera]\nrate = 0\n"), vec!["camera.rate", "0.01"]),
            (
                format!("{good}\n[tensorrt]\noptimization_level = 9\n"),
                vec!["tensorrt.optimization_level", "0 to 5"],
            ),
            (format!("{good}\n[tensorrt]\nint8 = \"ptq\"\n"), vec!["tensorrt.int8", "qdq, calibrated"]),
            (format!("{good}\nsurprise = 1\n"), vec!["surprise"]),
            (good.replace("name = \"cpu\"", ""), vec!["name"]),
        ] {
            let e = Profile::parse(&edit, "targets/custom.toml").unwrap_err().to_string();
            assert!(e.starts_with("targets/custom.toml: "), "{e}");
            assert!(!e.contains('\n'), "{e}");
            for needle in needles {
                assert!(e.contains(needle), "{needle:?} missing from: {e}");
            }
        }
        let e = Profile::load("jetson-nano-2gb").unwrap_err().to_string();
        assert!(e.contains("jetson-orin-nano") && e.contains(".toml"), "{e}");
    }
}
