#![no_main]
//! See `semask_edge::fuzz::onnx_model`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| semask_edge::fuzz::onnx_model(data));
