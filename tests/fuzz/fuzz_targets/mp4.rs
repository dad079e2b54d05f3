#![no_main]
//! See `semask_edge::fuzz::mp4`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| semask_edge::fuzz::mp4(data));
