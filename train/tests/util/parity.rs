//! The check behind parity.rs (CPU) and gpu.rs (GPU): the model on a device computes what the
//! official SeMask-FPN computes for a fixture.

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use semask_train::arrays::read_npy;
use semask_train::model::{ArchConfig, SeMaskFpn, Taps, to_vec};
use semask_train::weights::{Checkpoint, RawData};

/// A file of the official fixtures (../tests/fixtures/semask-ref/README.md).
pub fn fixture(name: &str) -> PathBuf {
    super::fixture(&format!("semask-ref/{name}"))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The tiny model with `weights_file` on `device`, on fixture `case`'s input: every
/// intermediate tap within 1e-5 of its magnitude (at least 10), then `logits`, `logits_up` and
/// `sem_logits` within 1e-4 of PyTorch's.
pub fn check_against_official(case: &str, weights_file: &str, device: &Device) {
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
