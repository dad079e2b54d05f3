//! `semask-edge doctor`: what this machine is and what the runtime will do on it: CPU and the
//! SIMD kernels tract uses, memory, the device profile chosen (and why), the L4T / JetPack
//! release, the NVIDIA driver, TensorRT and CUDA (found with their versions, or why not), the
//! cameras, and the backend `auto` would pick.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use semask_edge::backend::{self, BackendKind};
use semask_edge::named::Named;
use semask_edge::profile::{Profile, Sysroot, detect};

pub const LONG_ABOUT: &str = "\
Describe this machine and what semask-edge will do on it: CPU and the SIMD kernels tract uses,
cores and memory, the device profile (targets/*.toml) chosen and why, the L4T / JetPack release
of a Jetson, the NVIDIA driver, TensorRT and CUDA (versions, or why they cannot be used), the
cameras and their modes, and the backend `--backend auto` would choose.

Examples:
  semask-edge doctor
  semask-edge doctor --json > system.json
  semask-edge --target jetson-orin-nano doctor        # what that profile would do here";

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Read /proc, /etc and /sys under DIR instead of / (to test detection with fake roots).
    #[arg(long, value_name = "DIR", hide = true)]
    pub sysroot: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    semask_edge: &'static str,
    arch: &'static str,
    cpu: Cpu,
    memory_mib: Option<u64>,
    device: Device,
    profile: ProfileReport,
    backends: Vec<backend::Availability>,
    auto: Auto,
    cameras: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Cpu {
    model: String,
    logical_cores: usize,
    /// SIMD features of this CPU that matter for tract.
    features: Vec<&'static str>,
    /// The instruction sets tract's kernels use here.
    tract_isa: String,
}

#[derive(Debug, Serialize)]
struct Device {
    /// `/proc/device-tree/model` (Jetsons).
    model: Option<String>,
    l4t: Option<String>,
    jetpack: Option<String>,
    nvidia_driver: Option<String>,
}

#[derive(Debug, Serialize)]
struct ProfileReport {
    name: String,
    source: String,
    why: String,
    description: String,
    /// JetPack releases the profile expects (JetPack, L4T, TensorRT, CUDA).
    expects: Vec<String>,
    /// Whether the installed L4T is one of them (Jetsons).
    l4t_expected: Option<bool>,
    settings: String,
}

#[derive(Debug, Serialize)]
struct Auto {
    backend: Option<BackendKind>,
    why: String,
}

pub fn doctor(args: DoctorArgs, target: Option<&str>) -> anyhow::Result<ExitCode> {
    let sys = args.sysroot.clone().map(Sysroot).unwrap_or_default();
    let profiles = Profile::builtin();
    let (profile, why) = match target {
        Some(t) => (Profile::load(t)?, format!("--target {t}")),
        None => detect(&profiles, &sys),
    };
    let l4t = sys.l4t();
    let report = Report {
        semask_edge: env!("CARGO_PKG_VERSION"),
        arch: std::env::consts::ARCH,
        cpu: cpu(&sys),
        memory_mib: sys
            .read("/proc/meminfo")
            .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(str::to_string))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
            .map(|kb| kb / 1024),
        device: Device {
            model: sys.device_tree_model(),
            l4t: l4t.as_ref().map(|l| l.version()),
            jetpack: l4t.as_ref().map(|l| l.jetpack().to_string()),
            nvidia_driver: sys.nvidia_driver(),
        },
        profile: ProfileReport {
            l4t_expected: l4t.as_ref().filter(|_| !profile.jetpack.is_empty()).map(|l| {
                profile.jetpack.iter().any(|j| j.l4t.split('.').next() == Some(&l.major.to_string()))
            }),
            expects: profile
                .jetpack
                .iter()
                .map(|j| {
                    format!("JetPack {} (L4T {}): TensorRT {}, CUDA {}", j.jetpack, j.l4t, j.tensorrt, j.cuda)
                })
                .collect(),
            name: profile.name.clone(),
            source: profile.source.clone(),
            why,
            description: profile.description.clone(),
            settings: settings(&profile),
        },
        backends: backend::availability(),
        auto: Auto { backend: None, why: String::new() },
        cameras: cameras(&args),
    };
    let report = Report { auto: auto(&profile, &report.backends), ..report };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The first rung of the profile's ladder that can run here.
fn auto(profile: &Profile, backends: &[backend::Availability]) -> Auto {
    let mut skipped = Vec::new();
    for kind in &profile.backends {
        match backends.iter().find(|b| b.kind == *kind) {
            Some(b) if b.available => {
                let why = if skipped.is_empty() {
                    format!("first of {}'s ladder", profile.name)
                } else {
                    format!("{}; then {kind} is available", skipped.join("; "))
                };
                return Auto { backend: Some(*kind), why };
            }
            Some(b) => skipped.push(format!("{kind} skipped: {}", b.detail)),
            None => skipped.push(format!("{kind} unknown")),
        }
    }
    Auto { backend: None, why: skipped.join("; ") }
}

fn settings(p: &Profile) -> String {
    let ladder: Vec<&str> = p.backends.iter().map(|b| b.name()).collect();
    let mut parts = vec![
        format!("ladder {}", ladder.join(" > ")),
        format!("precision {}", p.precision),
        format!("threads {}", if p.threads == 0 { "all".to_string() } else { p.threads.to_string() }),
        format!("upsample {}", p.upsample.name()),
    ];
    if let Some((h, w)) = p.input_size {
        parts.push(format!("dynamic models at {w}x{h} (WxH)"));
    }
    if p.backends.contains(&BackendKind::TensorRt) {
        parts.push(format!("TensorRT workspace {} MiB", p.tensorrt_workspace_mib));
        if let Some(level) = p.tensorrt_optimization_level {
            parts.push(format!("builder level {level}"));
        }
        if let Some(core) = p.tensorrt_dla_core {
            parts.push(format!("DLA {core}"));
        }
    }
    if let (Some(w), Some(h)) = (p.camera_width, p.camera_height) {
        let format =
            p.camera_pixel_format.map(|f| String::from_utf8_lossy(&f).into_owned()).unwrap_or_default();
        let rate = p.camera_rate.map(|r| format!(" @ {r} fps")).unwrap_or_default();
        parts.push(format!("camera {w}x{h}{rate} {format}").trim_end().to_string());
    }
    parts.join(", ")
}

fn cpu(sys: &Sysroot) -> Cpu {
    let info = sys.read("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
    };
    let model = field("model name").or_else(|| field("Hardware")).or_else(|| {
        field("CPU part")
            .map(|part| format!("ARM CPU part {part} ({})", field("CPU implementer").unwrap_or_default()))
    });
    Cpu {
        model: model.unwrap_or_else(|| "unknown".into()),
        logical_cores: backend::default_threads(),
        features: simd_features(),
        tract_isa: format!("{:?}", tract_linalg::isa::native()),
    }
}

/// The SIMD features of this CPU that tract's kernels can use.
fn simd_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $( if std::arch::is_x86_feature_detected!($f) { found.push($f); } )* };
        }
        probe!(
            "sse4.1",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $( if std::arch::is_aarch64_feature_detected!($f) { found.push($f); } )* };
        }
        probe!("neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2");
    }
    found
}

fn cameras(args: &DoctorArgs) -> Vec<String> {
    if args.sysroot.is_some() {
        return vec!["not probed under --sysroot".into()];
    }
    #[cfg(feature = "camera")]
    {
        let found: Vec<String> = semask_edge::source::v4l2::list_cameras()
            .into_iter()
            .map(|c| match c {
                Ok(info) => {
                    let formats: Vec<String> = info.formats.iter().map(|f| f.fourcc.to_string()).collect();
                    format!("{} {} ({})", info.path.display(), info.card, formats.join(", "))
                }
                Err((path, error)) => format!("{} cannot be opened: {error}", path.display()),
            })
            .collect();
        if found.is_empty() { vec!["none (no /dev/video*)".into()] } else { found }
    }
    #[cfg(not(feature = "camera"))]
    {
        vec!["not built with camera support".into()]
    }
}

fn print_text(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let or = |v: &Option<String>, none: &str| v.clone().unwrap_or_else(|| none.to_string());
    writeln!(out, "semask-edge  {} ({})", r.semask_edge, r.arch)?;
    writeln!(out, "cpu          {}, {} logical cores", r.cpu.model, r.cpu.logical_cores)?;
    writeln!(out, "             features: {}", r.cpu.features.join(" "))?;
    writeln!(out, "             tract kernels: {}", r.cpu.tract_isa)?;
    writeln!(out, "memory       {}", r.memory_mib.map_or("unknown".into(), |m| format!("{m} MiB")))?;
    writeln!(out, "device       {}", or(&r.device.model, "no device tree (not a Jetson)"))?;
    if let Some(l4t) = &r.device.l4t {
        writeln!(out, "l4t          R{l4t} (JetPack {})", or(&r.device.jetpack, "?"))?;
    }
    writeln!(out, "nvidia       {}", or(&r.device.nvidia_driver, "no desktop NVIDIA driver loaded"))?;
    writeln!(out, "profile      {} ({}): {}", r.profile.name, r.profile.source, r.profile.why)?;
    writeln!(out, "             {}", r.profile.description)?;
    writeln!(out, "             {}", r.profile.settings)?;
    for (i, e) in r.profile.expects.iter().enumerate() {
        writeln!(out, "{:<12} {e}", if i == 0 { "expects" } else { "" })?;
    }
    if r.profile.l4t_expected == Some(false) {
        writeln!(out, "             warning: the installed L4T is not one this profile expects")?;
    }
    for (i, b) in r.backends.iter().enumerate() {
        let state = if b.available { "available" } else { "unavailable" };
        writeln!(
            out,
            "{:<12} {:<9} {state:<12} {}",
            if i == 0 { "backends" } else { "" },
            b.kind.name(),
            b.detail
        )?;
    }
    match r.auto.backend {
        Some(kind) => writeln!(out, "auto         {kind}: {}", r.auto.why)?,
        None => writeln!(out, "auto         nothing in the profile's ladder runs here: {}", r.auto.why)?,
    }
    for (i, c) in r.cameras.iter().enumerate() {
        writeln!(out, "{:<12} {c}", if i == 0 { "cameras" } else { "" })?;
    }
    Ok(())
}
