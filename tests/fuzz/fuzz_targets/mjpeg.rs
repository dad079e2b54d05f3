#![no_main]
//! See `semask_edge::fuzz::mjpeg`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| semask_edge::fuzz::mjpeg(data));
