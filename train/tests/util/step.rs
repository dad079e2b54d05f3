//! One training step on given devices, the checks behind training_step.rs (the CPU) and
//! gpu.rs (a GPU, and data-parallel over the CPU and a GPU).

use std::collections::BTreeMap;

use burn::optim::SgdConfig;
use burn::tensor::Device;
use semask_train::data::loader::Batch;
use semask_train::model::{ArchConfig, SeMaskFpn};
use semask_train::training;
use semask_train::weights::Checkpoint;

/// The loss and the gradients (by official name) of the tiny fixture model on `batch`, computed
/// by [`training::train_step`] over `devices`: one SGD step at learning rate 1 moves every
/// parameter by minus its gradient.
pub fn gradients(devices: &[Device], batch: &Batch) -> (f64, BTreeMap<String, Vec<f32>>) {
    let main = &devices[0];
    let weights = Checkpoint::read(&super::fixture("semask-ref/tiny.safetensors")).unwrap();
    let model =
        super::without_dropout(weights.load_into(SeMaskFpn::new(&ArchConfig::tiny(), main), main).unwrap());
    let before = super::parameters(&model);
    let mut sgd = SgdConfig::new().init();
    let (after, stats) = training::train_step(model, &mut sgd, batch, 1.0, 0.4, devices).unwrap();
    let after = super::parameters(&after);
    let grads = before
        .into_iter()
        .map(|(name, b)| {
            let g = b.iter().zip(&after[&name]).map(|(b, a)| b - a).collect();
            (name, g)
        })
        .collect();
    (stats.loss, grads)
}

/// The largest difference of two gradient sets, per tensor relative to the tensor's largest
/// gradient, or to 1e-4 of the largest gradient of all where that is more: some gradients are
/// zero but for rounding (the key projections' biases: softmax ignores a shift common to a
/// row), and two devices round differently.
pub fn worst_relative_difference(
    a: &BTreeMap<String, Vec<f32>>,
    b: &BTreeMap<String, Vec<f32>>,
) -> (f32, String) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let largest = |g: &[f32]| g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let floor = 1e-4 * a.values().map(|g| largest(g)).fold(0.0, f32::max);
    let mut worst = (0.0f32, String::new());
    for (name, ga) in a {
        let gb = &b[name];
        let scale = largest(ga).max(floor);
        let diff = ga.iter().zip(gb).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
        if diff > worst.0 {
            worst = (diff, format!("{name}, largest gradient {:.1e}", largest(ga)));
        }
    }
    worst
}

/// The CPU, recording gradients.
pub fn cpu() -> Device {
    semask_train::cpu().autodiff()
}

/// Data-parallel over `devices` (two of them): each takes one image, and the step is the mean
/// of the two one-image steps on the CPU. (BatchNorm statistics are per device, as in PyTorch
/// DDP without SyncBN: the step is not the one-device step on both images.)
pub fn check_data_parallel(devices: &[Device], tolerance: f32) {
    let batch = super::synth_batch(2, 128, 64);
    let shares = batch.split(2);
    let (loss, grads) = gradients(devices, &batch);
    let (loss_0, grads_0) = gradients(&[cpu()], &shares[0]);
    let (loss_1, grads_1) = gradients(&[cpu()], &shares[1]);
    let mean: BTreeMap<String, Vec<f32>> = grads_0
        .iter()
        .map(|(name, g0)| (name.clone(), g0.iter().zip(&grads_1[name]).map(|(a, b)| (a + b) / 2.0).collect()))
        .collect();
    let (worst, name) = worst_relative_difference(&mean, &grads);
    let expected = (loss_0 + loss_1) / 2.0;
    eprintln!(
        "loss {loss:.6} vs mean of shares {expected:.6}; worst gradient difference {worst:.2e} ({name})"
    );
    assert!((loss - expected).abs() <= 1e-5 * loss.abs(), "loss {loss}, mean of the shares {expected}");
    assert!(worst <= tolerance, "gradient of {name} differs by {worst:e} of its largest value");
}
