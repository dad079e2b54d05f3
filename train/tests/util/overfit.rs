//! Short training runs of the tiny SeMask config with the real loss, optimizer and schedule:
//! the overfit check behind overfit.rs (it fits a few synthetic frames, on the CPU) and the
//! step-by-step comparison behind gpu.rs (a GPU takes the CPU's steps).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::module::Module;
use burn::tensor::Device;
use semask_edge::preprocess::PreprocSpec;
use semask_edge::source::synth::SynthConfig;
use semask_train::data::augment::AugmentConfig;
use semask_train::data::{Dataset, Synth};
use semask_train::eval::Metrics;
use semask_train::model::{ArchConfig, SeMaskFpn};
use semask_train::training::{self, RunDir, TrainConfig};

/// The accuracy every run must reach on the frames it trained on.
pub const PIXEL_ACCURACY_BAR: f64 = 0.9;

/// The frames' size (width, height).
pub const SIZE: (usize, usize) = (128, 64);

/// `frames` synthetic driving frames at [`SIZE`], always the same ones.
pub fn frames(frames: usize) -> Arc<Synth> {
    let (width, height) = SIZE;
    Arc::new(Synth::new(SynthConfig { width, height, ..Default::default() }, vec![3], frames, 20))
}

/// How the frames are normalised, in training and in evaluation alike.
fn preproc() -> PreprocSpec {
    PreprocSpec::imagenet(0, 0)
}

/// `model` (in eval mode) on `device`, evaluated on `data` at full resolution.
pub fn evaluate(model: SeMaskFpn, device: &Device, data: &dyn Dataset) -> Metrics {
    let mut labeller = training::ModelLabeller::new(model, &preproc(), device);
    semask_train::eval::evaluate(&mut labeller, data, |_, _| Ok(())).unwrap()
}

/// How long a run trains: the whole batch is every frame, at 128x64.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub frames: usize,
    pub iterations: usize,
    pub lr: f64,
}

impl Run {
    /// The CPU's run: 8 frames, 300 steps (94.1 % in ~90 s here).
    pub const CPU: Run = Run { frames: 8, iterations: 300, lr: 2e-3 };
    /// The run a slow device (Mesa's software Vulkan device takes 5-6 s a step even on 2
    /// frames, once its kernels are compiled) follows the CPU through
    /// ([`check_follows_the_cpu`]): 2 frames, 10 steps at the rate at which 100 steps reach the
    /// bar (93.0-93.5 % on the CPU and on lavapipe).
    pub const FOLLOW: Run = Run { frames: 2, iterations: 10, lr: 6e-3 };
}

/// Trains `run` on `device` and asserts the pixel accuracy bar on the training frames.
/// `OVERFIT_ITERATIONS` overrides the step count (for finding how many a change needs).
pub fn check(device: &Device, run: Run) {
    let iterations =
        std::env::var("OVERFIT_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(run.iterations);
    let run = Run { iterations, ..run };
    let device = device.clone().autodiff();
    let (model, _) = train(SeMaskFpn::new(&ArchConfig::tiny(), &device), &device, run);
    let metrics = evaluate(model.valid(), &device, frames(run.frames).as_ref());
    eprintln!(
        "{} frames, {iterations} steps: pixel accuracy {:.4}, mIoU {:.4}",
        run.frames, metrics.pixel_accuracy, metrics.miou
    );
    assert!(
        metrics.pixel_accuracy >= PIXEL_ACCURACY_BAR,
        "pixel accuracy {:.4} after {iterations} steps on {} frames",
        metrics.pixel_accuracy,
        run.frames
    );
}

/// The same `run`, from the same random weights with dropout off, on the CPU and on `device`:
/// the loss of every step agrees within `tolerance` (relative), and the loss falls. With
/// [`check`] on the CPU, this says training converges on `device` too, at a tenth of the steps
/// that `check` itself would take there. Returns the worst relative difference.
pub fn check_follows_the_cpu(device: &Device, run: Run, tolerance: f64) -> f64 {
    let cpu = semask_train::cpu().autodiff();
    let device = device.clone().autodiff();
    let model = super::without_dropout(SeMaskFpn::new(&ArchConfig::tiny(), &cpu));
    let (_, on_device) = train(model.clone().fork(&device), &device, run);
    let (_, on_cpu) = train(model, &cpu, run);
    assert_eq!(on_cpu.len(), run.iterations);
    assert_eq!(on_device.len(), run.iterations);
    let mut worst = 0f64;
    for (step, (c, d)) in on_cpu.iter().zip(&on_device).enumerate() {
        let difference = (c - d).abs() / c.abs();
        eprintln!("step {}: loss cpu {c:.6} device {d:.6} ({difference:.1e})", step + 1);
        assert!(difference <= tolerance, "step {}: loss cpu {c} device {d}", step + 1);
        worst = worst.max(difference);
    }
    let (first, last) = (on_cpu[0], on_cpu[run.iterations - 1]);
    assert!(last < 0.9 * first, "the loss went from {first} to {last} in {} steps", run.iterations);
    worst
}

/// Trains `model` (on `device`, which records gradients) for `run` on its frames, with the real
/// loss, optimizer and schedule: the trained model and the loss of every step (`log.csv`).
fn train(model: SeMaskFpn, device: &Device, run: Run) -> (SeMaskFpn, Vec<f64>) {
    let (w, h) = SIZE;
    let augment = AugmentConfig {
        scale: (w, h),
        ratio_range: (1.0, 1.0),
        crop: (h, w),
        cat_max_ratio: 1.0,
        flip_prob: 0.0,
        photometric: false,
        spec: preproc(),
    };
    let config = TrainConfig {
        iterations: run.iterations,
        batch: run.frames,
        lr: run.lr,
        weight_decay: 0.01,
        warmup_iterations: 20,
        warmup_ratio: 1e-3,
        checkpoint_every: 0,
        eval_every: 0,
        workers: 1,
        ..TrainConfig::official(ArchConfig::tiny())
    };
    let dir = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let model = training::train(
        model,
        training::optimizer(&config),
        &config,
        &augment,
        frames(run.frames),
        None,
        &RunDir(dir.path().to_path_buf()),
        0,
        std::slice::from_ref(device),
        &stop,
    )
    .unwrap();
    let losses = super::log_column(dir.path(), "loss");
    (model, losses)
}
