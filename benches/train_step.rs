//! Forward and training-step time of SeMask-FPN in burn (the training crate) on each device of
//! `--device` (default `cpu`: the `flex` backend; `gpu`: wgpu, e.g. `--device cpu,gpu`) against
//! PyTorch running the same computation (`benches/semask_torch.py serve`: the same architecture
//! written from the SPEC, checked against the official fixtures by its `check`) on the CPU or,
//! with `--torch-device cuda`, on the GPU, interleaved in rounds so that all see the same
//! machine state. A bench of the `semask-train` package (see `train/Cargo.toml`).
//!
//! - forward: eval mode, no gradients, logits and semantic logits at H/4 read back.
//! - train step: train-mode forward (dropout, drop-path), CE(logits) + 0.4 CE(semantic) upsampled
//!   to the labels with 255 ignored, backward, AdamW update with the no-decay groups; our side is
//!   [`semask_train::training::train_step`], the function `semask-train train` runs (its loss is
//!   read back, so a GPU step is timed to its end).
//!
//! ```text
//! cargo bench -p semask-train --bench train_step                  # semask-t, 512x1024, batch 1
//! cargo bench -p semask-train --bench train_step -- --arch tiny --size 512x256 --iters 5 --rounds 3
//! cargo bench -p semask-train --bench train_step -- --device cpu,gpu          # flex and wgpu
//! cargo bench -p semask-train --bench train_step -- --device gpu --torch-device cuda
//! cargo bench -p semask-train --bench train_step -- --device cpu,gpu --torch-device none
//! ```
//! Needs PyTorch unless `--torch-device none`: `python3 -m pip install torch numpy` (CPU is
//! enough); SEMASK_PYTHON picks the interpreter. Ratios are printed against PyTorch and, with
//! several devices, against the first. Threads: PyTorch gets --threads (default: all cores); burn uses all cores.

#[path = "common/peer.rs"]
mod peer;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use peer::{Peer, percentile};
use semask_train::data::loader::Batch;
use semask_train::device::{self, DeviceList};
use semask_train::model::{ArchConfig, SeMaskFpn};
use semask_train::training::{self, TrainConfig};

struct Args {
    devices: DeviceList,
    torch_device: String,
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
        devices: DeviceList::cpu(),
        torch_device: "cpu".into(),
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
            "--device" => args.devices = value().parse().unwrap_or_else(|e| panic!("{e}")),
            "--torch-device" => args.torch_device = value(),
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
        "{name:<26} {median:>10.1} {:>10.1} {:>10.1}  ({} runs)",
        percentile(times, 10.0),
        percentile(times, 90.0),
        times.len()
    );
    median
}

/// One device's model pair: an eval model for the forward, a trained one with its optimizer.
struct Subject {
    label: String,
    device: burn::tensor::Device,
    autodiff: burn::tensor::Device,
    eval_model: SeMaskFpn,
    train_model: Option<SeMaskFpn>,
    optim: burn::optim::ModuleOptimizer,
    forward_ms: Vec<f64>,
    train_ms: Vec<f64>,
}

impl Subject {
    fn forward(&mut self, batch: &Batch, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                let x = Tensor::<4>::from_data(
                    TensorData::new(batch.images.clone(), [batch.size, 3, batch.height, batch.width]),
                    &self.device,
                );
                let out = self.eval_model.forward(x);
                std::hint::black_box((out.logits.into_data(), out.sem_logits.into_data()));
                self.progress("forward", start)
            })
            .collect()
    }

    fn train(&mut self, batch: &Batch, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                let model = self.train_model.take().expect("model");
                let devices = [self.autodiff.clone()];
                let (model, stats) = training::train_step(model, &mut self.optim, batch, 1e-4, 0.4, &devices)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", self.label));
                std::hint::black_box(stats);
                self.train_model = Some(model);
                self.progress("train step", start)
            })
            .collect()
    }

    /// The run's time in ms, also said on stderr as it ends: on a slow device (lavapipe: the
    /// first SeMask-T 512x1024 step compiles and autotunes for many minutes) the table comes
    /// only at the end, and without these lines the bench looks hung.
    fn progress(&self, what: &str, start: Instant) -> f64 {
        let ms = start.elapsed().as_secs_f64() * 1e3;
        eprintln!("  {} {what}: {ms:.0} ms", self.label);
        ms
    }
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
        "--device",
        &args.torch_device,
    ]);
    let mut torch = (args.torch_device != "none").then(|| Peer::start("PyTorch", command));
    let config = TrainConfig { batch: args.batch, ..TrainConfig::official(arch.clone()) };
    let opened = device::open(&args.devices).unwrap_or_else(|e| panic!("{e}"));
    let described: Vec<String> = opened.iter().map(|d| d.info.to_string()).collect();
    let mut subjects: Vec<Subject> = opened
        .into_iter()
        .map(|d| {
            let autodiff = d.device.clone().autodiff();
            Subject {
                label: format!("burn {}", d.name),
                eval_model: SeMaskFpn::new(&arch, &d.device),
                train_model: Some(SeMaskFpn::new(&arch, &autodiff)),
                optim: training::optimizer(&config),
                device: d.device,
                autodiff,
                forward_ms: Vec::new(),
                train_ms: Vec::new(),
            }
        })
        .collect();
    println!(
        "SeMask-FPN {} at {h}x{w}, batch {}: burn on {} vs {}; {} rounds x {} runs after {} warm-up (ms)",
        args.arch,
        args.batch,
        described.join(" and "),
        torch.as_ref().map_or("no PyTorch".into(), |t| format!(
            "PyTorch {} on {} ({} threads)",
            t.hello["torch"].as_str().unwrap_or("?"),
            t.hello["device"].as_str().unwrap_or("CPU"),
            t.hello["threads"]
        )),
        args.rounds,
        args.iters,
        args.warmup
    );

    let batch = synthetic_batch(&args, arch.num_classes);
    for subject in &mut subjects {
        subject.forward(&batch, args.warmup);
        subject.train(&batch, args.warmup);
    }
    let mut peer = |request: String| torch.as_mut().map_or(Vec::new(), |t| t.times(&request));
    peer(format!("forward {}", args.warmup));
    peer(format!("train {}", args.warmup));
    let (mut theirs_fwd, mut theirs_train) = (vec![], vec![]);
    for _ in 0..args.rounds {
        for subject in &mut subjects {
            let times = subject.forward(&batch, args.iters);
            subject.forward_ms.extend(times);
        }
        theirs_fwd.extend(peer(format!("forward {}", args.iters)));
        for subject in &mut subjects {
            let times = subject.train(&batch, args.iters);
            subject.train_ms.extend(times);
        }
        theirs_train.extend(peer(format!("train {}", args.iters)));
    }
    println!("{:<26} {:>10} {:>10} {:>10}", "", "median", "p10", "p90");
    let peer_medians = (!theirs_fwd.is_empty()).then(|| {
        (summary("forward PyTorch", &mut theirs_fwd), summary("train step PyTorch", &mut theirs_train))
    });
    let medians: Vec<(String, f64, f64)> = subjects
        .iter_mut()
        .map(|subject| {
            let f = summary(&format!("forward {}", subject.label), &mut subject.forward_ms);
            let t = summary(&format!("train step {}", subject.label), &mut subject.train_ms);
            (subject.label.clone(), f, t)
        })
        .collect();
    let ratio = |(label, f, t): &(String, f64, f64), (peer, pf, pt): (&str, f64, f64)| {
        println!(
            "ratio {label} / {peer}: forward {:.2}x, train step {:.2}x (lower is better)",
            f / pf,
            t / pt
        );
    };
    for subject in &medians {
        if let Some((pf, pt)) = peer_medians {
            ratio(subject, ("PyTorch", pf, pt));
        }
    }
    if let [first, rest @ ..] = medians.as_slice() {
        for subject in rest {
            ratio(subject, (&first.0, first.1, first.2));
        }
    }
}
