//! The overfit check behind overfit.rs (the CPU) and gpu.rs (a GPU): the tiny SeMask config,
//! trained with the real loss, optimizer and schedule, fits a few synthetic frames.

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
    /// A shorter run for slow devices (Mesa's software Vulkan device takes ~1.4 s a step even on
    /// 2 frames): 2 frames, 100 steps at a higher rate (93.0-93.5 % on the CPU and on lavapipe).
    pub const SHORT: Run = Run { frames: 2, iterations: 100, lr: 6e-3 };
}

/// Trains `run` on `device` and asserts the pixel accuracy bar on the training frames.
/// `OVERFIT_ITERATIONS` overrides the step count (for finding how many a change needs).
pub fn check(device: &Device, run: Run) {
    let (w, h) = SIZE;
    let data = frames(run.frames);
    let augment = AugmentConfig {
        scale: (w, h),
        ratio_range: (1.0, 1.0),
        crop: (h, w),
        cat_max_ratio: 1.0,
        flip_prob: 0.0,
        photometric: false,
        spec: preproc(),
    };
    let iterations =
        std::env::var("OVERFIT_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(run.iterations);
    let config = TrainConfig {
        iterations,
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
    let device = device.clone().autodiff();
    let model = SeMaskFpn::new(&config.arch, &device);
    let dir = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let model = training::train(
        model,
        training::optimizer(&config),
        &config,
        &augment,
        data.clone(),
        None,
        &RunDir(dir.path().to_path_buf()),
        0,
        std::slice::from_ref(&device),
        &stop,
    )
    .unwrap();
    let metrics = evaluate(model.valid(), &device, data.as_ref());
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
