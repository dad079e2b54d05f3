#![no_main]
//! See `semask_edge::fuzz::image`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| semask_edge::fuzz::image(data));
