//! The training crate's command line on a GPU (`--device gpu`: burn's wgpu backend):
//! checkpoints moving between the CPU and the GPU, Ctrl-C, device errors and listing, and the
//! quantizer's calibration pass on the GPU. Parity with the official fixtures on the GPU is in
//! parity.rs, one training step against the CPU and data-parallel steps in training_step.rs,
//! the overfit run in overfit.rs. CI runs these on Mesa's software Vulkan device
//! (lavapipe: Debian's mesa-vulkan-drivers, installed by `scripts/prerequisites.sh --tests`).
#![cfg(feature = "gpu")]

use burn::tensor::Device;
use semask_train::device::{DeviceName, open_one};

mod util;
use util::{assert_clear_error, run_train, stderr, train_args};

/// The first GPU adapter (lavapipe in CI).
fn gpu() -> Device {
    open_one(DeviceName::Gpu(0)).unwrap_or_else(|e| panic!("{e}")).device
}

/// [`util::train_args`] on `device`.
fn train_on<'a>(device: &'a str, run_flag: &'a str, run: &'a str, iterations: &'a str) -> Vec<&'a str> {
    [vec!["--device", device], train_args(run_flag, run, iterations)].concat()
}

/// A run started on the CPU resumes on the GPU (and records it), and its checkpoint evaluates
/// the same on both.
#[test]
fn checkpoints_move_between_cpu_and_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let out = run_train(&train_on("cpu", "--out", run_s, "2"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out =
        run_train(&[&["--device", "gpu"][..], &["train", "--resume", run_s, "--iterations", "4"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("computing on gpu:0"), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let device = &config["devices"][0];
    assert_eq!(device["device"], "gpu:0", "{config}");
    for key in ["name", "kind", "driver", "backend"] {
        assert!(device[key].as_str().is_some_and(|v| !v.is_empty()), "{key} in {config}");
    }
    let log = std::fs::read_to_string(run.join("log.csv")).unwrap();
    assert_eq!(log.lines().count(), 5, "{log}");

    let weights = run.join("checkpoints/iter_4.safetensors");
    let miou = |device: &str| -> f64 {
        let out = run_train(&[
            "--device",
            device,
            "eval",
            "--arch",
            "tiny",
            "--weights",
            weights.to_str().unwrap(),
            "--synth-size",
            "128x64",
            "--synth-frames",
            "2",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().find(|l| l.starts_with("mIoU")).unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (on_cpu, on_gpu) = (miou("cpu"), miou("gpu"));
    assert!((on_cpu - on_gpu).abs() <= 1e-3, "mIoU cpu {on_cpu} gpu {on_gpu}");
}

/// Ctrl-C during a GPU run saves a checkpoint, and the run resumes from it.
#[test]
fn ctrl_c_on_the_gpu_saves_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_semask-train"))
        .args(train_on("gpu", "--out", run_s, "100000"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the first iteration is logged.
    let log = run.join("log.csv");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 2 {
        assert!(started.elapsed().as_secs() < 300, "no iteration logged in 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let latest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("latest.json")).unwrap()).unwrap();
    let at = latest["iteration"].as_u64().unwrap();
    assert!(at >= 1, "{latest}");
    let total = (at + 1).to_string();
    let out = run_train(&["train", "--resume", run_s, "--iterations", &total]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Lines of stderr but Mesa's own complaint about XDG_RUNTIME_DIR (printed by its window-system
/// code whenever a Vulkan instance is made without a desktop session).
fn our_lines(out: &std::process::Output) -> usize {
    stderr(out).lines().filter(|l| !l.contains("XDG_RUNTIME_DIR")).count()
}

#[test]
fn device_errors_are_one_clear_line() {
    let weights = util::fixture("semask-ref/tiny.safetensors");
    let eval = |device: &str, env: Option<(&str, &str)>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_semask-train"));
        command.args(["--device", device, "eval", "--arch", "tiny", "--weights", weights.to_str().unwrap()]);
        command.args(["--synth-size", "64x64", "--synth-frames", "1"]);
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        command.output().unwrap()
    };
    let out = eval("gpu:7", None);
    assert_clear_error(&out, &["--device gpu:7", "no such GPU adapter", "found: gpu:0", "--device cpu"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(our_lines(&out), 1, "{}", stderr(&out));
    // A machine without a Vulkan driver.
    let out = eval("gpu", Some(("VK_ICD_FILENAMES", "/nonexistent/icd.json")));
    assert_clear_error(
        &out,
        &["no such GPU adapter", "no Vulkan, Metal or DX12 adapter", "mesa-vulkan-drivers"],
    );
    assert_eq!(our_lines(&out), 1, "{}", stderr(&out));
    assert_clear_error(&eval("gpu,cpu", None), &["runs on one device"]);
    assert_clear_error(&eval("gpu:0,gpu", None), &["lists gpu:0 twice"]);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args = train_on("cpu,gpu", "--out", run.to_str().unwrap(), "2");
    let batch = args.iter().position(|a| *a == "--batch").unwrap();
    args[batch + 1] = "1";
    assert_clear_error(&run_train(&args), &["--batch 1", "2 devices"]);
}

#[test]
fn devices_lists_the_cpu_and_the_gpus() {
    let out = run_train(&["devices"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.lines().next().is_some_and(|l| l.starts_with("cpu: ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("gpu:0: ")), "{text}");
}

/// The quantizer's calibration pass on the GPU observes what tract observes on the CPU.
#[test]
fn calibration_on_the_gpu_sees_what_tract_sees() {
    let (worst, name) = util::compare_calibration_taps(&gpu());
    eprintln!("burn (gpu) vs tract: worst node output difference {worst:.2e} ({name})");
    assert!(worst <= 1e-4, "{name} differs by {worst:e} of its largest value");
}
