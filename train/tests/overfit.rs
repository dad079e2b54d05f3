//! The tiny SeMask config, trained with the real loss, optimizer and schedule, fits 8 synthetic
//! frames: pixel accuracy >= 90 % on them within 300 steps ([`util::overfit`]; gpu.rs checks that a
//! GPU takes the CPU's steps).

mod util;
use util::overfit::{Run, check};

#[test]
fn tiny_model_overfits_eight_synthetic_frames() {
    check(&semask_train::cpu(), Run::CPU);
}
