//! Build script: with the `tensorrt` feature, compiles the TensorRT shim
//! (src/backend/tensorrt/shim.cpp) against the TensorRT and CUDA headers found on this machine.
//! Only headers are needed: the shim opens the libraries at run time (dlopen), so the binary
//! starts, and falls back to the CPU, where TensorRT or the GPU is missing.
//!
//! Headers are looked up in `TENSORRT_INCLUDE_DIR`, else `TENSORRT_ROOT/include`, else the
//! JetPack and desktop locations; CUDA's in `CUDA_INCLUDE_DIR`, else `CUDA_ROOT/include`, else
//! `/usr/local/cuda/include`. Without the feature this script does nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tensorrt")]
    tensorrt::compile_shim();
}

#[cfg(feature = "tensorrt")]
mod tensorrt {
    use std::path::{Path, PathBuf};

    const TENSORRT_DEFAULTS: [&str; 5] = [
        "/usr/include/aarch64-linux-gnu", // JetPack
        "/usr/include/x86_64-linux-gnu",  // NVIDIA's Debian/Ubuntu packages
        "/usr/local/TensorRT/include",    // NVIDIA's tar package, unpacked as documented
        "/opt/tensorrt/include",          // NGC containers
        "/usr/include",
    ];
    const CUDA_DEFAULTS: [&str; 3] =
        ["/usr/local/cuda/include", "/usr/local/cuda/targets/aarch64-linux/include", "/usr/include"];

    pub fn compile_shim() {
        for var in ["TENSORRT_ROOT", "TENSORRT_INCLUDE_DIR", "CUDA_ROOT", "CUDA_INCLUDE_DIR", "CXX"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        for file in ["shim.cpp", "shim.h", "cxxflags"] {
            println!("cargo:rerun-if-changed=src/backend/tensorrt/{file}");
        }
        let trt = find(
            "TENSORRT_INCLUDE_DIR",
            "TENSORRT_ROOT",
            &TENSORRT_DEFAULTS,
            &["NvInfer.h", "NvOnnxParser.h"],
        );
        let cuda = find("CUDA_INCLUDE_DIR", "CUDA_ROOT", &CUDA_DEFAULTS, &["cuda_runtime_api.h", "cuda.h"]);
        let (trt, cuda) = match (trt, cuda) {
            (Ok(trt), Ok(cuda)) => (trt, cuda),
            (trt, cuda) => {
                let mut missing = Vec::new();
                if let Err(looked) = trt {
                    missing.push(format!(
                    "TensorRT headers (NvInfer.h, NvOnnxParser.h) not found in {looked}: set TENSORRT_ROOT or \
                     TENSORRT_INCLUDE_DIR"
                ));
                }
                if let Err(looked) = cuda {
                    missing.push(format!(
                    "CUDA headers (cuda_runtime_api.h, cuda.h) not found in {looked}: set CUDA_ROOT or CUDA_INCLUDE_DIR"
                ));
                }
                eprintln!(
                    "error: the `tensorrt` feature needs headers only, and they were not found. {}",
                    missing.join("; ")
                );
                std::process::exit(1);
            }
        };
        let flags =
            std::fs::read_to_string("src/backend/tensorrt/cxxflags").expect("src/backend/tensorrt/cxxflags");
        let mut build = cc::Build::new();
        build.cpp(true).file("src/backend/tensorrt/shim.cpp");
        // One flag per line, shared with scripts/check-tensorrt.sh; `cc` adds its own -O and -fPIC.
        for flag in
            flags.lines().map(str::trim).filter(|f| !f.is_empty() && !f.starts_with("-O") && *f != "-fPIC")
        {
            build.flag(flag);
        }
        // Third-party headers as system headers: their own warnings are not ours (-Werror).
        build.flag("-isystem").flag(trt.to_str().expect("UTF-8 path"));
        build.flag("-isystem").flag(cuda.to_str().expect("UTF-8 path"));
        build.compile("semask_trt_shim");
        // dlopen, and the C++ runtime the shim uses.
        println!("cargo:rustc-link-lib=dylib=dl");
        println!("cargo:rustc-link-lib=dylib=stdc++");
    }

    /// The first directory holding every one of `files`: `$dir_var`, `$root_var/include`, then
    /// `defaults`. `Err` lists where it looked.
    fn find(dir_var: &str, root_var: &str, defaults: &[&str], files: &[&str]) -> Result<PathBuf, String> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::var_os(dir_var) {
            candidates.push(dir.into());
        }
        if let Some(root) = std::env::var_os(root_var) {
            candidates.push(Path::new(&root).join("include"));
        }
        // An explicit variable is the answer, right or wrong: no silent fallback past it.
        if candidates.is_empty() {
            candidates.extend(defaults.iter().map(PathBuf::from));
        }
        candidates
            .iter()
            .find(|dir| files.iter().all(|f| dir.join(f).is_file()))
            .cloned()
            .ok_or_else(|| candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "))
    }
}
