//! The burn model computes what the official SeMask-FPN computes: for the `tiny` and `tiny2`
//! fixtures (../tests/fixtures/semask-ref/README.md), `logits`, `logits_up` and `sem_logits`
//! within 1e-4 of PyTorch, and every intermediate tap within tolerance, checked in the order
//! the model computes them so that a failure names the first layer that drifts
//! ([`util::parity`]; gpu.rs runs the same check on a GPU).

use semask_train::model::{ArchConfig, SeMaskFpn};
use semask_train::weights::{Checkpoint, RawData};

mod util;
use util::parity::fixture;

#[test]
fn tiny_matches_the_official_model() {
    util::parity::check_against_official("tiny", "tiny.safetensors", &semask_train::cpu());
}

#[test]
fn tiny2_matches_the_official_model() {
    util::parity::check_against_official("tiny2", "tiny2.safetensors", &semask_train::cpu());
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
    util::parity::check_against_official("tiny", "tiny.pth", &semask_train::cpu());
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
