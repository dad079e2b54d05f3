//! How the process keeps freed memory between network runs.
//!
//! tract allocates every intermediate tensor of a run afresh (several hundred MB for SeMask-T at
//! 1024x512) and frees each when its last reader is done. With glibc's defaults, blocks above a
//! threshold (at most 32 MB, adjusted as blocks are freed) are mapped and unmapped one by one,
//! and a free heap top above 128 KB is given back to the kernel: the next run takes the same
//! memory again, one page fault per 4 KB page, zeroed by the kernel. On the development machine
//! (a VM, where a fault costs ~3 µs) that was ~100,000 faults per frame and 10-15 % of the full
//! model's network time (docs/performance.md). Keeping freed memory in the heap for reuse
//! removes them, for about a quarter more peak RSS (the heap keeps its high-water mark: 494 ->
//! 615 MB running the full model for 6 frames, still 0.38x of onnxruntime's).

/// Tells the C allocator to serve blocks up to 256 MiB from the heap and never to give the
/// heap's free top back to the kernel. Both or neither: setting the trim threshold alone also
/// freezes glibc's mapping threshold at 128 KB, and every tensor was mapped afresh (4.7 million
/// faults for 6 frames instead of 0.7). 256 MiB holds every per-frame tensor of SeMask-T up to
/// 2048x1024; with 1 GiB the model's load-time buffers stayed in the heap too (peak RSS 814 MB
/// instead of 602 MB on the full model, 6 frames). Process-wide: the binaries call it first
/// thing (and the network benchmark, to measure what the binary runs). A no-op on other C
/// libraries than glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; called before other threads allocate,
    // and glibc serialises it against allocation in any case.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
