//! Helpers shared by the integration tests: fixture paths, .npy files, the binary under test and
//! the Python reference scripts.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use npyz::WriterBuilder;

pub mod onnx;
mod reference;
#[cfg(feature = "gstreamer")]
pub mod xvfb;
#[allow(unused_imports)] // not every test binary uses every helper
pub use reference::*;

/// Shape and values of a float32 .npy file.
pub fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().unwrap())
}

/// Shape and values of a uint8 .npy file.
pub fn read_npy_u8(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<u8>().unwrap())
}

/// Writes a float32 .npy file.
pub fn write_npy_f32(path: &Path, shape: &[usize], values: &[f32]) {
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut out = Vec::new();
    {
        let mut writer =
            npyz::WriteOptions::new().default_dtype().shape(&shape).writer(&mut out).begin_nd().unwrap();
        writer.extend(values.iter().copied()).unwrap();
        writer.finish().unwrap();
    }
    std::fs::write(path, out).unwrap();
}

/// The `semask-edge` binary built for these tests. When the tests run under emulation
/// (`scripts/aarch64.sh test`), `SEMASK_TEST_RUNNER` holds the emulator command
/// (`qemu-aarch64 -L /usr/aarch64-linux-gnu`) that must start it, as cargo's runner started
/// the test itself.
pub fn semask_edge() -> Command {
    let binary = env!("CARGO_BIN_EXE_semask-edge");
    match std::env::var("SEMASK_TEST_RUNNER").ok().filter(|_| emulated()) {
        Some(runner) => {
            let mut words = runner.split_whitespace();
            let mut command = Command::new(words.next().expect("not empty"));
            command.args(words).arg(binary);
            command
        }
        None => Command::new(binary),
    }
}

/// Whether the tests run under emulation (`SEMASK_TEST_RUNNER`, see [`semask_edge`]).
pub fn emulated() -> bool {
    std::env::var("SEMASK_TEST_RUNNER").is_ok_and(|r| !r.trim().is_empty())
}

/// Runs the binary with `args`, returning its output.
pub fn run_cli(args: &[&str]) -> Output {
    semask_edge().args(args).output().expect("cannot start semask-edge")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fraction of equal elements.
pub fn agreement(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared arrays differ in length");
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// Names of the files in `dir`, sorted (empty if it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Exit status `code`, exactly one line on stderr, containing every needle, and no panic.
pub fn assert_one_line_error(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} missing from: {}", lines[0]);
    }
}

/// `p` as a `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
