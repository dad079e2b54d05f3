//! Replays, through the same entry points as the fuzz targets (`semask_edge::fuzz`), every input
//! fuzzing ever found troublesome (`tests/fuzz/regressions/<target>/`), and a seed of valid and
//! damaged inputs built from the fixtures: none may panic or take long.

mod util;

use std::path::Path;
use std::time::{Duration, Instant};

const TARGETS: [&str; 5] = ["onnx_model", "mjpeg", "mp4", "image", "text"];

/// Runs `input` through `target`, failing on a panic or a run over 30 s.
fn replay(target: &str, name: &str, input: &[u8]) {
    let run = semask_edge::fuzz::by_name(target).unwrap_or_else(|| panic!("no fuzz target {target}"));
    let start = Instant::now();
    let outcome = std::panic::catch_unwind(|| run(input));
    assert!(outcome.is_ok(), "{target} panicked on {name}");
    assert!(start.elapsed() < Duration::from_secs(30), "{target} took {:?} on {name}", start.elapsed());
}

#[test]
fn every_recorded_regression_replays_cleanly() {
    let root = util::workspace_root().join("tests/fuzz/regressions");
    for target in TARGETS {
        let dir = root.join(target);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            replay(target, &entry.file_name().to_string_lossy(), &bytes);
        }
    }
}

/// Truncations and byte flips of a valid input, the cheap version of what the fuzzer does.
fn mangled(valid: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![valid.to_vec(), Vec::new()];
    for cut in [1, 7, valid.len() / 3, valid.len() / 2, valid.len().saturating_sub(3)] {
        out.push(valid[..cut.min(valid.len())].to_vec());
    }
    for step in [3usize, 17, 101] {
        let mut flipped = valid.to_vec();
        for i in (0..flipped.len()).step_by(step.max(1) * 7 + 1) {
            flipped[i] ^= 0x5A;
        }
        out.push(flipped);
    }
    out
}

#[test]
fn valid_and_damaged_fixtures_pass_every_reader() {
    let fixtures = util::workspace_root().join("tests/fixtures");
    let read = |p: &Path| std::fs::read(p).unwrap();
    for name in ["images/street_112x224.jpg", "images/street_224x448.png"] {
        for (i, input) in mangled(&read(&fixtures.join(name))).iter().enumerate() {
            replay("image", &format!("{name} #{i}"), input);
            replay("mjpeg", &format!("{name} #{i}"), input);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    let out = util::run_cli(&["run", "-i", "synth://?frames=3&size=64x32", "-o", util::s(&clip), "-q"]);
    assert!(out.status.success(), "{}", util::stderr(&out));
    for (i, input) in mangled(&read(&clip)).iter().enumerate() {
        replay("mp4", &format!("clip #{i}"), input);
    }
    for (i, input) in
        mangled(&read(&fixtures.join("semask-ref/tiny2.ortopt.onnx"))).iter().take(6).enumerate()
    {
        replay("onnx_model", &format!("tiny2 #{i}"), input);
    }
    for entry in std::fs::read_dir(util::workspace_root().join("targets")).unwrap().flatten() {
        for (i, input) in mangled(&read(&entry.path())).iter().enumerate() {
            replay("text", &format!("{:?} #{i}", entry.file_name()), input);
        }
    }
}
