//! Forward and training-step time of SeMask-FPN in burn (the training crate, `flex` CPU backend)
//! against PyTorch CPU running the same computation (`benches/semask_torch.py serve`: the same
//! architecture written from the SPEC, checked against the official fixtures by its `check`),
//! interleaved in rounds so that both see the same machine state. A bench of the `semask-train`
//! package (see `train/Cargo.toml`).
//!
//! - forward: eval mode, no gradients, logits and semantic logits at H/4.
//! - train step: train-mode forward (dropout, drop-path), CE(logits) + 0.4 CE(semantic) upsampled
//!   to the labels with 255 ignored, backward, AdamW update with the no-decay groups; our side is
//!   [`semask_train::training::train_step`], the function `semask-train train` runs.
//!
//! ```text
//! cargo bench -p semask-train --bench train_step                  # semask-t, 512x1024, batch 1
//! cargo bench -p semask-train --bench train_step -- --arch tiny --size 512x256 --iters 5 --rounds 3
//! ```
//! Needs PyTorch: `python3 -m pip install torch numpy` (CPU is enough); SEMASK_PYTHON picks the
//! interpreter. Threads: PyTorch gets --threads (default: all cores); burn uses all cores.

#[path = "common/peer.rs"]
mod peer;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use peer::{Peer, percentile};
use semask_train::data::loader::Batch;
use semask_train::model::{ArchConfig, SeMaskFpn};
use semask_train::training::{self, TrainConfig};

struct Args {
    arch: String,
    size: (usize, usize),
    batch: usize,
    threads: usize,
    warmup: usize,
    iters: usize,
    rounds: usize,
}

fn parse_args() -> Args {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = Args {
        arch: "semask-t".into(),
        size: (512, 1024),
        batch: 1,
        threads: cores,
        warmup: 1,
        iters: 2,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--arch" => args.arch = value(),
            "--size" => {
                let v = value();
                let size: semask_edge::frame::Size = v.parse().unwrap_or_else(|e| panic!("--size: {e}"));
                args.size = size.hw();
            }
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--threads" => args.threads = value().parse().expect("--threads N"),
            "--warmup" => args.warmup = value().parse().expect("--warmup N"),
            "--iters" => args.iters = value().parse().expect("--iters N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}; see the doc comment of benches/train_step.rs"),
        }
    }
    args
}

/// Deterministic pseudo-random inputs in [-2, 2) and labels in 0..classes, with the top
/// sixteenth of each image ignored (as the PyTorch side does).
fn synthetic_batch(args: &Args, classes: usize) -> Batch {
    let (h, w) = args.size;
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let images =
        (0..args.batch * 3 * h * w).map(|_| (next() >> 40) as f32 / (1u64 << 22) as f32 - 2.0).collect();
    let labels = (0..args.batch * h * w)
        .map(|i| if (i / w) % h < h / 16 { 255 } else { (next() % classes as u64) as u8 })
        .collect();
    Batch { iteration: 0, size: args.batch, height: h, width: w, images, labels }
}

fn summary(name: &str, times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    let median = percentile(times, 50.0);
    println!(
        "{name:<22} {median:>10.1} {:>10.1} {:>10.1}  ({} runs)",
        percentile(times, 10.0),
        percentile(times, 90.0),
        times.len()
    );
    median
}

fn main() {
    let args = parse_args();
    let arch = ArchConfig::preset(&args.arch).unwrap_or_else(|e| panic!("{e}"));
    let (h, w) = args.size;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/semask_torch.py");
    let mut command = Command::new(peer::python());
    command.arg(&script).args(["serve", "--arch", &args.arch, "--size", &format!("{h}x{w}")]).args([
        "--batch",
        &args.batch.to_string(),
        "--threads",
        &args.threads.to_string(),
    ]);
    let mut torch = Peer::start("PyTorch", command);
    println!(
        "SeMask-FPN {} at {h}x{w}, batch {}: burn (flex) vs PyTorch {} CPU ({} threads); \
         {} rounds x {} runs after {} warm-up (ms)",
        args.arch,
        args.batch,
        torch.hello["torch"].as_str().unwrap_or("?"),
        torch.hello["threads"],
        args.rounds,
        args.iters,
        args.warmup
    );

    let batch = synthetic_batch(&args, arch.num_classes);
    let device = semask_train::cpu();
    let eval_model = SeMaskFpn::new(&arch, &device);
    let burn_forward = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                let x = Tensor::<4>::from_data(
                    TensorData::new(batch.images.clone(), [args.batch, 3, h, w]),
                    &device,
                );
                let out = eval_model.forward(x);
                std::hint::black_box((out.logits.into_data(), out.sem_logits.into_data()));
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect()
    };
    let autodiff = device.clone().autodiff();
    let config = TrainConfig { batch: args.batch, ..TrainConfig::official(arch.clone()) };
    let mut optim = training::optimizer(&config);
    let mut train_model = Some(SeMaskFpn::new(&arch, &autodiff));
    let mut burn_train = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                let model = train_model.take().expect("model");
                let (model, stats) = training::train_step(model, &mut optim, &batch, 1e-4, 0.4, &autodiff);
                std::hint::black_box(stats);
                train_model = Some(model);
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect()
    };

    burn_forward(args.warmup);
    torch.times(&format!("forward {}", args.warmup));
    burn_train(args.warmup);
    torch.times(&format!("train {}", args.warmup));
    let (mut ours_fwd, mut theirs_fwd, mut ours_train, mut theirs_train) = (vec![], vec![], vec![], vec![]);
    for _ in 0..args.rounds {
        ours_fwd.extend(burn_forward(args.iters));
        theirs_fwd.extend(torch.times(&format!("forward {}", args.iters)));
        ours_train.extend(burn_train(args.iters));
        theirs_train.extend(torch.times(&format!("train {}", args.iters)));
    }
    println!("{:<22} {:>10} {:>10} {:>10}", "", "median", "p10", "p90");
    let f0 = summary("forward burn", &mut ours_fwd);
    let f1 = summary("forward PyTorch", &mut theirs_fwd);
    let t0 = summary("train step burn", &mut ours_train);
    let t1 = summary("train step PyTorch", &mut theirs_train);
    println!("ratio burn / PyTorch: forward {:.2}x, train step {:.2}x (lower is better)", f0 / f1, t0 / t1);
}
