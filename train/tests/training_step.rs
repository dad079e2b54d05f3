//! One training step ([`semask_train::training::train_step`], what `semask-train train` runs)
//! over several devices at once (data-parallel), against the CPU: here the CPU twice, which
//! checks the splitting and the summing alone; gpu.rs does the same with a GPU, and one step on
//! a GPU against the CPU. Dropout and drop-path are off ([`util::without_dropout`]) so that a
//! step depends only on the weights (the tiny fixture's) and the batch.

mod util;
use util::step::{check_data_parallel, cpu};

#[test]
fn data_parallel_step_averages_the_shares() {
    // The CPU twice: the splitting and the summing alone.
    check_data_parallel(&[cpu(), cpu()], 1e-4);
}
