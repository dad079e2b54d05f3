//! The burn model computes what the official SeMask-FPN computes: for the `tiny` and `tiny2`
//! fixtures (../tests/fixtures/semask-ref/README.md), `logits`, `logits_up` and `sem_logits`
//! within 1e-4 of PyTorch, and every intermediate tap within tolerance, checked in the order
//! the model computes them so that a failure names the first layer that drifts. The same, with
//! the same bounds, on a GPU (burn's wgpu backend; measured on Mesa's software Vulkan device,
//! lavapipe: logits within 9.7e-6 (tiny) and 1.7e-5 (tiny2), taps within 1.6e-6 of their
//! magnitude).

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use semask_train::arrays::read_npy;
use semask_train::model::{ArchConfig, SeMaskFpn, Taps, to_vec};
use semask_train::weights::{Checkpoint, RawData};

mod util;

fn fixture(name: &str) -> PathBuf {
    util::fixture(&format!("semask-ref/{name}"))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[cfg(feature = "gpu")]
fn gpu() -> Device {
    semask_train::device::open_one(semask_train::device::DeviceName::Gpu(0))
        .unwrap_or_else(|e| panic!("{e}"))
        .device
}

fn check(case: &str, weights_file: &str, device: &Device) {
    let weights = Checkpoint::read(&fixture(weights_file)).unwrap();
    let model = weights.load_into(SeMaskFpn::new(&ArchConfig::tiny(), device), device).unwrap();
    let (shape, input) = read_npy(&fixture(&format!("{case}_input.npy"))).unwrap();
    let [b, c, h, w]: [usize; 4] = shape.try_into().unwrap();
    let x = Tensor::<4>::from_data(TensorData::new(input, [b, c, h, w]), device);
    let mut taps = Taps::enabled();
    let out = model.forward_with_taps(x, &mut taps);

    // Intermediate taps first: the first one off says where the port drifts. Activations grow
    // through the network, so the tolerance is relative to each tap's magnitude.
    let reference = Checkpoint::read(&fixture(&format!("{case}_intermediates.safetensors"))).unwrap();
    assert_eq!(taps.entries.len(), reference.tensors.len(), "tap count");
    let mut worst_tap = 0.0f32;
    for (name, tap_shape, values) in &taps.entries {
        let expected = reference.tensors.get(name).unwrap_or_else(|| panic!("no reference tap {name}"));
        assert_eq!(&expected.shape, tap_shape, "{case}: shape of tap {name}");
        let RawData::F32(expected) = &expected.data else { panic!("{name} is not f32") };
        let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(values, expected);
        worst_tap = worst_tap.max(diff / scale.max(10.0));
        assert!(
            diff <= 1e-5 * scale.max(10.0),
            "{case}: first drifting tap {name}: max |diff| {diff:e} (values up to {scale})"
        );
    }

    let outputs = [
        ("logits", to_vec(&out.logits), format!("{case}_logits.npy")),
        ("logits_up", to_vec(&SeMaskFpn::logits_up(&out.logits, h, w)), format!("{case}_logits_up.npy")),
        ("sem_logits", to_vec(&out.sem_logits), format!("{case}_semantic.npy")),
    ];
    for (name, (shape, values), file) in outputs {
        let (expected_shape, expected) = read_npy(&fixture(&file)).unwrap();
        assert_eq!(shape, expected_shape, "{case} {name}");
        let diff = max_abs_diff(&values, &expected);
        assert!(diff <= 1e-4, "{case} {name}: max |diff| {diff:e}");
        eprintln!("{case} {name}: max |diff| {diff:.2e}");
    }
    eprintln!("{case} taps: max |diff| / max(|value|, 10) {worst_tap:.2e}");
}

#[test]
fn tiny_matches_the_official_model() {
    check("tiny", "tiny.safetensors", &semask_train::cpu());
}

#[test]
fn tiny2_matches_the_official_model() {
    check("tiny2", "tiny2.safetensors", &semask_train::cpu());
}

#[cfg(feature = "gpu")]
#[test]
fn tiny_matches_the_official_model_on_the_gpu() {
    check("tiny", "tiny.safetensors", &gpu());
}

#[cfg(feature = "gpu")]
#[test]
fn tiny2_matches_the_official_model_on_the_gpu() {
    check("tiny2", "tiny2.safetensors", &gpu());
}

#[test]
fn pth_written_by_pytorch_imports_the_same_weights() {
    let pth = Checkpoint::read(&fixture("tiny.pth")).unwrap();
    let safetensors = Checkpoint::read(&fixture("tiny.safetensors")).unwrap();
    assert_eq!(pth.tensors.len(), safetensors.tensors.len());
    for (name, tensor) in &safetensors.tensors {
        assert_eq!(pth.tensors.get(name), Some(tensor), "{name} differs between .pth and .safetensors");
    }
    // And through the model: the same logits.
    check("tiny", "tiny.pth", &semask_train::cpu());
}

#[test]
fn our_checkpoints_round_trip_with_official_names() {
    let device = semask_train::cpu();
    let original = Checkpoint::read(&fixture("tiny.safetensors")).unwrap();
    let model = original.load_into(SeMaskFpn::new(&ArchConfig::tiny(), &device), &device).unwrap();
    let saved = Checkpoint::from_model(&model);
    // Same key set as the official state_dict (buffers included), same values.
    let keys = |c: &Checkpoint| c.tensors.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&saved), keys(&original));
    for (name, tensor) in &original.tensors {
        if !name.ends_with("num_batches_tracked") {
            assert_eq!(saved.tensors.get(name), Some(tensor), "{name}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    saved.write_safetensors(&path, Default::default()).unwrap();
    let back = Checkpoint::read(&path).unwrap();
    assert_eq!(back.tensors, saved.tensors);
}

#[test]
fn architecture_parameter_counts_match_the_spec() {
    let device = semask_train::cpu();
    // Parameters as the SPEC counts them: float state_dict entries, BN running statistics out.
    let count = |arch: &ArchConfig| -> usize {
        Checkpoint::from_model(&SeMaskFpn::new(arch, &device))
            .tensors
            .iter()
            .filter(|(name, t)| matches!(t.data, RawData::F32(_)) && !name.contains(".running_"))
            .map(|(_, t)| t.shape.iter().product::<usize>())
            .sum()
    };
    assert_eq!(count(&ArchConfig::tiny()), 2_644_285);
    assert_eq!(count(&ArchConfig::semask_t()), 34_243_753);
    // 277 tensors in the full state_dict (SPEC section 4).
    assert_eq!(Checkpoint::from_model(&SeMaskFpn::new(&ArchConfig::semask_t(), &device)).tensors.len(), 277);
}
