//! The TensorRT backend's run-time loader, against stand-in libraries (feature `tensorrt`).
//!
//! No TensorRT or GPU is needed: small C libraries named `libnvinfer.so.N`, `libcudart.so.12` and
//! `libcuda.so.1`, compiled here with `cc`, export the few entry points the shim looks up and
//! answer like a machine without TensorRT, with an old or foreign TensorRT, without a driver,
//! without a GPU. For each, `--backend tensorrt` must fail with one line saying so, and `auto`
//! must fall back to the CPU and say why. (A real TensorRT is exercised on a GPU machine.)
#![cfg(feature = "tensorrt")]

mod util;

use std::path::Path;
use std::process::{Command, Output};

use util::{assert_one_line_error, stderr, stdout};

const NVINFER: &str = r#"
#include <stdint.h>
#include <stddef.h>
int32_t getInferLibVersion(void) { return VERSION; }
void *createInferBuilder_INTERNAL(void *logger, int32_t version) { (void)logger; (void)version; return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int32_t version) { (void)logger; (void)version; return NULL; }
"#;

const CUDART: &str = r#"
#include <stddef.h>
#include <string.h>
typedef int cudaError_t;
cudaError_t cudaGetDeviceCount(int *count) { *count = DEVICES; return DEVICES > 0 ? 0 : 100; }
const char *cudaGetErrorString(cudaError_t e) { return e == 100 ? "no CUDA-capable device is detected" : "error"; }
cudaError_t cudaSetDevice(int d) { (void)d; return 0; }
cudaError_t cudaDeviceGetAttribute(int *v, int attr, int d) { (void)attr; (void)d; *v = 0; return 0; }
cudaError_t cudaRuntimeGetVersion(int *v) { *v = 12060; return 0; }
cudaError_t cudaDriverGetVersion(int *v) { *v = 12060; return 0; }
#define STUB(name) cudaError_t name(void) { return 1; }
STUB(cudaMalloc) STUB(cudaFree) STUB(cudaHostAlloc) STUB(cudaFreeHost) STUB(cudaHostGetDevicePointer)
STUB(cudaStreamCreate) STUB(cudaStreamDestroy) STUB(cudaStreamSynchronize) STUB(cudaMemcpyAsync)
STUB(cudaMemcpy) STUB(cudaEventCreate) STUB(cudaEventDestroy) STUB(cudaEventRecord) STUB(cudaEventElapsedTime)
"#;

const CUDA: &str = r#"
#include <stddef.h>
#include <string.h>
int cuInit(unsigned f) { (void)f; return 0; }
int cuDeviceGet(int *d, int o) { *d = o; return 0; }
int cuDeviceGetName(char *n, int len, int d) { (void)d; strncpy(n, "Stand-in GPU", (size_t)len); return 0; }
int cuDeviceTotalMem_v2(size_t *b, int d) { (void)d; *b = (size_t)8 << 30; return 0; }
"#;

/// Compiles `source` into `dir/name` with `defines`.
fn library(dir: &Path, name: &str, source: &str, defines: &[&str]) {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-o"])
        .arg(dir.join(name))
        .arg(&c)
        .args(defines.iter().map(|d| format!("-D{d}")))
        .status()
        .expect("a C compiler (cc) to build stand-in libraries");
    assert!(status.success(), "cannot compile {name}");
}

/// Runs the binary with only `dir` to find libraries in.
fn run_with(dir: &Path, args: &[&str]) -> Output {
    util::semask_edge()
        .args(args)
        .env("TENSORRT_LIB_DIR", dir)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap()
}

/// `--backend tensorrt` fails with `needle`; `auto` runs on the CPU and logs the same reason.
fn assert_unavailable(dir: &Path, needle: &str) {
    let out = run_with(dir, &["run", "--backend", "tensorrt", "--frames", "1", "-q"]);
    assert_one_line_error(&out, 2, &["tensorrt", "not available", needle]);
    let out = run_with(dir, &["-v", "run", "--frames", "1", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("skipping tensorrt") && err.contains(needle), "{err}");
    assert!(err.contains("tract"), "auto did not fall back to the CPU: {err}");
    assert!(stdout(&out).contains("1 frames in, 1 written"), "{}", stdout(&out));
}

#[test]
fn each_missing_piece_is_named_and_auto_falls_back_to_the_cpu() {
    let headers = semask_edge::backend::tensorrt::ffi::header_version();
    let major = headers.major;
    let nvinfer = format!("libnvinfer.so.{major}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Nothing at all.
    assert_unavailable(d, &format!("libnvinfer.so.{major} not found"));

    // A TensorRT older than 8.5 under the expected name.
    library(d, &nvinfer, NVINFER, &["VERSION=8401"]);
    assert_unavailable(d, "TensorRT 8.4 is older than 8.5");

    // Another major version than the headers the binary was built with.
    let (foreign, foreign_text) =
        if major == 10 { (8602, "TensorRT 8.6.2") } else { (100300, "TensorRT 10.3.0") };
    library(d, &nvinfer, NVINFER, &[&format!("VERSION={foreign}")]);
    assert_unavailable(d, &format!("is {foreign_text}, but this binary was built with TensorRT {major}."));

    // The right TensorRT; no CUDA runtime, then no driver, then no GPU.
    library(d, &nvinfer, NVINFER, &[&format!("VERSION={}", headers.to_int())]);
    assert_unavailable(d, "the CUDA runtime");
    library(d, "libcudart.so.12", CUDART, &["DEVICES=0"]);
    assert_unavailable(d, "no NVIDIA driver: libcuda.so.1 not found");
    library(d, "libcuda.so.1", CUDA, &[]);
    assert_unavailable(d, "no CUDA device (no CUDA-capable device is detected)");

    // A GPU, but TensorRT refuses to create its runtime: said, not crashed.
    library(d, "libcudart.so.12", CUDART, &["DEVICES=1"]);
    assert_unavailable(d, "could not create its runtime");

    // `info` reports the rung and its reason.
    let info = run_with(d, &["info"]);
    assert!(
        stdout(&info).contains("tensorrt  unavailable") && stdout(&info).contains("runtime"),
        "{}",
        stdout(&info)
    );
}
