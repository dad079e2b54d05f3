//! Network latency: tract (this runtime's CPU backend) against onnxruntime on the same ONNX, the
//! same input and the same number of threads, interleaved in rounds so that both see the same
//! machine state. Prints a table and the ratio tract / onnxruntime (lower is better).
//!
//! ```text
//! cargo bench --bench network                        # the tiny2 fixture, both ONNX forms
//! cargo bench --bench network -- --model m.onnx --threads 2 --iters 20 --rounds 5
//! cargo bench --bench network -- --profile           # and where tract spends its time
//! # every node's time, as TSV (model, engine, ms per run, operator, output shape, node, info): at
//! # --threads 1 and 2 and join on the name to see which nodes do not split their work
//! cargo bench --bench network -- --model m.onnx --threads 2 --profile-nodes nodes-2.tsv
//! # fp32 and int8 side by side: tract fp32, tract int8 (QOperator), onnxruntime fp32
//! cargo bench --bench network -- --model semask-t.onnx --int8 calib/model.qop.onnx
//! ```
//! `--int8 FILE` pairs an int8 model with the `--model` before it: both run in tract on the
//! fp32 model's input, and both are compared with onnxruntime running the fp32 model.
//! `TRACT_PANEL_THRESHOLD` / `TRACT_MAC_THRESHOLD` set tract's gates for threading a matrix
//! product (experiments: lowering them made tiny2 slower on 2 cores).
//! Needs `python3 -m pip install -r tests/requirements.txt` (onnxruntime is the peer).

#[path = "common/peer.rs"]
mod peer;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use peer::{Peer, percentile};

use semask_edge::backend::tract::{TractBackend, ops_of};
use semask_edge::backend::{Backend, BackendKind, BackendOptions};
use semask_edge::model::OnnxModel;

struct Args {
    /// fp32 models, each with an optional int8 form.
    models: Vec<(PathBuf, Option<PathBuf>)>,
    threads: usize,
    warmup: usize,
    iters: usize,
    rounds: usize,
    /// Also time every tract operator and print where the time goes.
    profile: bool,
    /// Also write every node's time to this file (implies `profile`).
    profile_nodes: Option<PathBuf>,
}

fn parse_args() -> Args {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args = Args {
        models: vec![],
        threads: 0,
        warmup: 5,
        iters: 10,
        rounds: 5,
        profile: false,
        profile_nodes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => args.models.push((PathBuf::from(value()), None)),
            "--int8" => {
                let int8 = PathBuf::from(value());
                args.models.last_mut().expect("--int8 follows the --model it quantizes").1 = Some(int8);
            }
            "--threads" => args.threads = value().parse().expect("--threads N"),
            "--warmup" => args.warmup = value().parse().expect("--warmup N"),
            "--iters" => args.iters = value().parse().expect("--iters N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--profile" => args.profile = true,
            "--profile-nodes" => {
                args.profile = true;
                args.profile_nodes = Some(PathBuf::from(value()));
            }
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}; see the doc comment of benches/network.rs"),
        }
    }
    if args.models.is_empty() {
        for form in ["tiny2.ortopt.onnx", "tiny2.onnx"] {
            args.models.push((root.join("tests/fixtures/semask-ref").join(form), None));
        }
    }
    if args.threads == 0 {
        args.threads = semask_edge::backend::default_threads();
    }
    args
}

/// Deterministic N(0, 1)-like input (sum of uniforms), for models without a fixture input.
fn synthetic_input(len: usize) -> Vec<f32> {
    let mut state = 0x2545F4914F6CDD1Du64;
    (0..len)
        .map(|_| {
            let mut sum = 0.0;
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                sum += (state >> 40) as f32 / (1u64 << 24) as f32;
            }
            (sum - 2.0) * 1.732
        })
        .collect()
}

fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}", dims.join(", "));
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

fn main() {
    // What the binary does first (see semask_edge::heap).
    semask_edge::heap::keep_freed_memory();
    let args = parse_args();
    // Experiments with tract's threading gates (see tract_linalg::multithread).
    if let Ok(v) = std::env::var("TRACT_PANEL_THRESHOLD") {
        tract_linalg::multithread::set_threading_panel_threshold(v.parse().expect("TRACT_PANEL_THRESHOLD"));
    }
    if let Ok(v) = std::env::var("TRACT_MAC_THRESHOLD") {
        tract_linalg::multithread::set_threading_mac_threshold(v.parse().expect("TRACT_MAC_THRESHOLD"));
    }
    let peer_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer_onnxruntime.py");
    let tmp = std::env::temp_dir().join(format!("semask-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();

    println!(
        "network latency, {} threads, {} rounds x {} runs after {} warm-up runs (median, p10, p90 in ms)",
        args.threads, args.rounds, args.iters, args.warmup
    );
    println!("{:<28} {:<12} {:>9} {:>9} {:>9}", "model", "engine", "median", "p10", "p90");
    // Every profiled node of every model and engine (`--profile-nodes`).
    let mut node_times = String::new();
    for (model_path, int8_path) in &args.models {
        let model = OnnxModel::open(model_path, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let input_size = model.input_size(None, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let options =
            BackendOptions { threads: args.threads, ..BackendOptions::new(BackendKind::Cpu, input_size) };
        // tract engines: the fp32 model, and its int8 form when given.
        let mut engines = vec![(
            "tract".to_string(),
            TractBackend::new(&model, &options).unwrap_or_else(|e| panic!("{e}")),
        )];
        if let Some(int8) = int8_path {
            let int8_model = OnnxModel::open(int8, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
            engines.push((
                "tract int8".into(),
                TractBackend::new(&int8_model, &options).unwrap_or_else(|e| panic!("{e}")),
            ));
        }
        let shape = engines[0].1.input_shape();
        let input = synthetic_input(shape.iter().product());
        for (_, engine) in &mut engines {
            engine.input_mut().copy_from_slice(&input);
        }
        let input_npy = tmp.join("input.npy");
        write_npy(&input_npy, &shape, &input);

        let mut command = Command::new(peer::python());
        command
            .arg(&peer_script)
            .arg(model_path)
            .arg(&input_npy)
            .arg(args.threads.to_string())
            .arg(&model.metadata.logits_output.value);
        let mut ort = Peer::start("onnxruntime", command);
        println!("{:<28} (onnxruntime {})", "", ort.hello["onnxruntime"].as_str().unwrap_or("?"));
        let mut peer_run = |n: usize| ort.times(&format!("run {n}"));

        let tract_run = |engine: &mut TractBackend, n: usize| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    let start = Instant::now();
                    engine.run().unwrap();
                    std::hint::black_box(engine.logits());
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect()
        };
        for (_, engine) in &mut engines {
            tract_run(engine, args.warmup);
        }
        peer_run(args.warmup);
        let mut times: Vec<Vec<f64>> = vec![vec![]; engines.len() + 1];
        for _ in 0..args.rounds {
            for (i, (_, engine)) in engines.iter_mut().enumerate() {
                times[i].extend(tract_run(engine, args.iters));
            }
            times[engines.len()].extend(peer_run(args.iters));
        }
        let name = model_path.file_name().unwrap().to_string_lossy();
        let labels: Vec<String> = engines
            .iter()
            .map(|(l, _)| l.clone())
            .chain(std::iter::once("onnxruntime".to_string()))
            .collect();
        let mut medians = vec![];
        for (engine, times) in labels.iter().zip(&mut times) {
            times.sort_by(f64::total_cmp);
            let median = percentile(times, 50.0);
            medians.push(median);
            println!(
                "{name:<28} {engine:<12} {median:>9.2} {:>9.2} {:>9.2}",
                percentile(times, 10.0),
                percentile(times, 90.0)
            );
        }
        let ort_median = medians[medians.len() - 1];
        for (label, median) in labels.iter().zip(&medians).take(engines.len()) {
            println!("{name:<28} ratio {label} / onnxruntime fp32 = {:.2}x", median / ort_median);
        }
        if args.profile {
            for (label, engine) in &mut engines {
                let start = Instant::now();
                let nodes = engine.profile_nodes(args.iters).unwrap();
                let wall = start.elapsed().as_secs_f64() * 1e3 / args.iters.max(1) as f64;
                for n in &nodes {
                    node_times += &format!(
                        "{name}\t{label}\t{:.3}\t{}\t{}\t{}\t{}\n",
                        n.ms_per_run, n.op, n.output_shape, n.name, n.info
                    );
                }
                let ops = ops_of(&nodes);
                let total: f64 = ops.iter().map(|o| o.ms_per_run).sum();
                // The wall time beyond the nodes' is tract's plan between them (tensors freed
                // and allocated, threads woken): what no operator's profile shows.
                println!(
                    "  {label}: time per operator ({total:.2} ms per run in nodes, {wall:.2} ms wall while profiling):"
                );
                for op in ops.iter().take(15) {
                    println!(
                        "    {:<32} {:>4} nodes {:>9.2} ms {:>5.1}%",
                        op.op,
                        op.nodes,
                        op.ms_per_run,
                        100.0 * op.ms_per_run / total
                    );
                }
            }
        }
    }
    if let Some(path) = &args.profile_nodes {
        std::fs::write(path, node_times).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
