//! Everything the training crate does on a GPU (`--device gpu`: burn's wgpu backend), in one
//! test binary: burn compiles its kernels once per process (on Mesa's software Vulkan device,
//! lavapipe, about a minute of compiling through LLVM), so the GPU tests share one process and
//! start as few `semask-train --device gpu` processes as they can.
//!
//! - parity with the official fixtures, with the CPU's bounds ([`util::parity`]);
//! - one training step against the CPU, and data-parallel over the CPU and the GPU
//!   ([`util::step`]);
//! - a short training run, step by step the CPU's ([`util::overfit`]);
//! - the quantizer's calibration pass against tract;
//! - the command line: a run moving between devices, Ctrl-C, device errors and listing.
//!
//! In the README's test command (`--features semask-train/gpu`), so in CI: on any Vulkan device,
//! and without a GPU on Debian's mesa-vulkan-drivers (lavapipe), with burn's autotune results
//! for lavapipe imported from `tests/fixtures/gpu/` (docs/training.md, "On a GPU").
#![cfg(feature = "gpu")]

use std::process::{Command, Stdio};

use burn::tensor::Device;
use semask_train::device::{DeviceName, open_one};
use semask_train::model::{ArchConfig, SeMaskFpn};
use semask_train::training;
use semask_train::weights::Checkpoint;

mod util;
use util::step::{check_data_parallel, cpu, gradients, worst_relative_difference};
use util::{assert_clear_error, run_train, stderr, train_args};

/// The first GPU adapter (lavapipe where there is no GPU), once the shipped autotune results are
/// in cubecl's database.
fn gpu() -> Device {
    static IMPORTED: std::sync::Once = std::sync::Once::new();
    IMPORTED.call_once(import_autotune_bundle);
    open_one(DeviceName::Gpu(0)).unwrap_or_else(|e| panic!("{e}")).device
}

/// cubecl's autotune results for lavapipe (`tests/fixtures/gpu/README.md`). burn times every
/// candidate kernel of each matrix product, convolution and reduction the first time it meets
/// the shape, and on lavapipe each candidate is a second of LLVM compiling: about half of these
/// tests' cold time, which a fresh clone (CI) pays in full. Imported rows are only a head start:
/// cubecl checks them like its own, keys them by its version and the device, and a bundle from
/// another version or device is ignored, which costs time, not results.
const AUTOTUNE_BUNDLE: &str = "gpu/lavapipe-autotune.bundle";

/// Fills cubecl's database (`target/environment/`, shared with the `semask-train` processes the
/// tests start) from [`AUTOTUNE_BUNDLE`]; rows already there are kept.
fn import_autotune_bundle() {
    let path = util::fixture(AUTOTUNE_BUNDLE);
    let bundle = cubecl_environment::bundle::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate it: tests/fixtures/gpu/README.md)", path.display()));
    let report = cubecl_environment::bundle::import(bundle.as_ref());
    eprintln!(
        "autotune bundle {}: {} results imported, {} already known, {} failed",
        path.display(),
        report.imported,
        report.skipped,
        report.failed
    );
}

/// Writes [`AUTOTUNE_BUNDLE`] from cubecl's database after a cold run of these tests: a tool for
/// when burn or Mesa changes (`tests/fixtures/gpu/README.md`), not a check.
#[test]
#[ignore = "writes tests/fixtures/gpu/lavapipe-autotune.bundle; run after a cold run of the GPU tests"]
fn write_the_autotune_bundle() {
    use cubecl_environment::bundle::{BundleFormat, ExportOptions, export};
    let root = cubecl_environment::environment::root();
    let options = ExportOptions {
        name: "lavapipe (Mesa's software Vulkan): semask-train's GPU tests".into(),
        // The results only: `records/` is cubecl's account of how they were measured.
        namespaces: vec!["autotune".into()],
        format: BundleFormat::Flat,
        ..Default::default()
    };
    let out = util::fixture(AUTOTUNE_BUNDLE);
    let manifest = export(&[&root], &out, &options).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    eprintln!("{}: {manifest:?}", out.display());
}

#[test]
fn tiny_matches_the_official_model_on_the_gpu() {
    // Measured on lavapipe: logits within 9.7e-6, taps within 1.6e-6 of their magnitude.
    util::parity::check_against_official("tiny", "tiny.safetensors", &gpu());
}

#[test]
fn tiny2_matches_the_official_model_on_the_gpu() {
    // Measured on lavapipe: logits within 1.7e-5.
    util::parity::check_against_official("tiny2", "tiny2.safetensors", &gpu());
}

#[test]
fn one_training_step_on_the_gpu_matches_the_cpu() {
    let batch = util::synth_batch(2, 128, 64);
    let (loss_cpu, grads_cpu) = gradients(&[cpu()], &batch);
    let (loss_gpu, grads_gpu) = gradients(&[gpu().autodiff()], &batch);
    let (worst, name) = worst_relative_difference(&grads_cpu, &grads_gpu);
    eprintln!("loss cpu {loss_cpu:.6} gpu {loss_gpu:.6}; worst gradient difference {worst:.2e} ({name})");
    assert!((loss_cpu - loss_gpu).abs() <= 1e-5 * loss_cpu.abs(), "loss cpu {loss_cpu} gpu {loss_gpu}");
    // Measured on lavapipe: 1.05e-3, on the `gamma` of a SeMask block, whose gradient is a sum
    // over every pixel and channel of its branch with much cancellation: the devices sum in
    // other orders. Five times that leaves room for other GPUs' orders.
    assert!(worst <= 5e-3, "gradient of {name} differs by {worst:e} of its largest value");
}

#[test]
fn data_parallel_step_over_cpu_and_gpu_averages_the_shares() {
    // One share on the GPU: its rounding, as in the test above (lavapipe: 5.4e-4).
    check_data_parallel(&[cpu(), gpu().autodiff()], 5e-3);
}

/// Training converges on the GPU: it takes the CPU's steps (overfit.rs shows where the CPU's
/// steps lead). 100 steps to the accuracy bar on lavapipe took 390 s of CI's hour.
#[test]
fn training_on_the_gpu_follows_the_cpu() {
    let worst = util::overfit::check_follows_the_cpu(&gpu(), util::overfit::Run::FOLLOW, 1e-4);
    eprintln!("10 steps: worst loss difference {worst:.1e}");
}

/// The quantizer's calibration pass on the GPU observes what tract observes on the CPU.
#[test]
fn calibration_on_the_gpu_sees_what_tract_sees() {
    let (worst, name) = util::compare_calibration_taps(&gpu());
    eprintln!("burn (gpu) vs tract: worst node output difference {worst:.2e} ({name})");
    assert!(worst <= 1e-4, "{name} differs by {worst:e} of its largest value");
}

/// mIoU of the tiny model with `weights` on `device`, on two synthetic frames.
fn miou(weights: &std::path::Path, device: &Device) -> f64 {
    let checkpoint = Checkpoint::read(weights).unwrap();
    let model = checkpoint.load_into(SeMaskFpn::new(&ArchConfig::tiny(), device), device).unwrap();
    util::overfit::evaluate(model, device, util::overfit::frames(2).as_ref()).miou
}

/// A run started on the CPU resumes on the GPU (and `config.json` records it); Ctrl-C there
/// saves a checkpoint, which evaluates the same on both devices and from which the run resumes
/// on the CPU. One GPU process: each compiles the kernels anew.
#[test]
fn a_run_moves_between_cpu_and_gpu_and_stops_on_ctrl_c() {
    let gpu_here = gpu(); // and the autotune bundle imported before the child starts
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let out = run_train(&[vec!["--device", "cpu"], train_args("--out", run_s, "2")].concat());
    assert!(out.status.success(), "{}", stderr(&out));

    let child = Command::new(env!("CARGO_BIN_EXE_semask-train"))
        .args(["--device", "gpu", "train", "--resume", run_s, "--iterations", "100000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its 100,000 iterations would outlive a failed test, on a core that the next tests need.
    struct KilledOnDrop(u32);
    impl Drop for KilledOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
    let _guard = KilledOnDrop(child.id());
    // Interrupted once two iterations on the GPU are logged (log.csv: a header, then a row per
    // iteration).
    let log = run.join("log.csv");
    let rows = || std::fs::read_to_string(&log).map_or(0, |l| l.lines().count().saturating_sub(1));
    let started = std::time::Instant::now();
    // A hang guard, not a speed bound: with Mesa's shader cache cold and the other GPU tests
    // compiling on the same two cores, lavapipe took over 5 minutes to the first GPU step.
    while rows() < 4 {
        assert!(started.elapsed().as_secs() < 1200, "no GPU iteration logged in 20 minutes");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("computing on gpu:0"), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let device = &config["devices"][0];
    assert_eq!(device["device"], "gpu:0", "{config}");
    for key in ["name", "kind", "driver", "backend"] {
        assert!(device[key].as_str().is_some_and(|v| !v.is_empty()), "{key} in {config}");
    }

    let (weights, _, state) = training::latest_checkpoint(&run).unwrap();
    assert!(state.iteration >= 4, "Ctrl-C saved iteration {}", state.iteration);
    let (on_cpu, on_gpu) = (miou(&weights, &semask_train::cpu()), miou(&weights, &gpu_here));
    assert!((on_cpu - on_gpu).abs() <= 1e-3, "mIoU cpu {on_cpu} gpu {on_gpu}");

    let total = (state.iteration + 1).to_string();
    let out = run_train(&["--device", "cpu", "train", "--resume", run_s, "--iterations", &total]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rows(), state.iteration + 1, "log.csv rows after resuming to {total}");
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
    let mut args = [vec!["--device", "cpu,gpu"], train_args("--out", run.to_str().unwrap(), "2")].concat();
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
