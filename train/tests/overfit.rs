//! The tiny SeMask config, trained with the real loss, optimizer and schedule, fits 8 synthetic
//! frames: pixel accuracy >= 90 % on them within a bounded number of steps, on the CPU and on a
//! GPU (burn's wgpu backend; CI: Mesa's software Vulkan device).

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::Device;
use std::sync::atomic::AtomicBool;

use semask_edge::preprocess::PreprocSpec;
use semask_edge::source::synth::SynthConfig;
use semask_train::data::augment::AugmentConfig;
use semask_train::data::{Dataset, Synth};
use semask_train::model::{ArchConfig, SeMaskFpn};
use semask_train::training::{self, RunDir, TrainConfig};

#[test]
fn tiny_model_overfits_eight_synthetic_frames() {
    overfit(&semask_train::cpu());
}

#[cfg(feature = "gpu")]
#[test]
fn tiny_model_overfits_eight_synthetic_frames_on_the_gpu() {
    let gpu = semask_train::device::open_one(semask_train::device::DeviceName::Gpu(0));
    overfit(&gpu.unwrap_or_else(|e| panic!("{e}")).device);
}

fn overfit(device: &Device) {
    let (w, h) = (128, 64);
    let data =
        Arc::new(Synth::new(SynthConfig { width: w, height: h, ..Default::default() }, vec![3], 8, 20));
    let spec = PreprocSpec::imagenet(0, 0);
    let augment = AugmentConfig {
        scale: (w, h),
        ratio_range: (1.0, 1.0),
        crop: (h, w),
        cat_max_ratio: 1.0,
        flip_prob: 0.0,
        photometric: false,
        spec,
    };
    let iterations = std::env::var("OVERFIT_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let config = TrainConfig {
        iterations,
        batch: 8,
        lr: 2e-3,
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
    let mut labeller = training::ModelLabeller::new(model.valid(), &spec, &device);
    let metrics =
        semask_train::eval::evaluate(&mut labeller, data.as_ref() as &dyn Dataset, |_, _| Ok(())).unwrap();
    eprintln!(
        "after {iterations} steps: pixel accuracy {:.4}, mIoU {:.4}",
        metrics.pixel_accuracy, metrics.miou
    );
    assert!(
        metrics.pixel_accuracy >= 0.9,
        "pixel accuracy {:.4} after {iterations} steps",
        metrics.pixel_accuracy
    );
}
