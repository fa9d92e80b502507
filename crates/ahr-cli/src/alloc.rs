//! glibc allocator settings for tensor workloads.
//!
//! The `ahr` binary gives Rust's allocations to mimalloc (its `#[global_allocator]`); what still
//! goes through glibc's malloc is libtorch's memory (`tch` devices) and the PyTorch reference of
//! `bench train`, which these settings are for.
//!
//! glibc hands blocks above its mmap threshold back to the OS when they are freed, and trims the
//! top of the heap once more than 128 KiB is free there; a training step's tensors are that large,
//! so every step faults its buffers back in page by page (a sixth of a libtorch step in `perf`).
//! Keeping them in the heap made the `mqar` pretraining step 1.4× faster on flex and 1.2× on
//! `tch-cpu`, and PyTorch eager 1.1× (docs/BENCHMARKS.md, "The training step: allocator and softmax"); peak memory is unchanged
//! and at most [`TRIM_THRESHOLD`] of freed memory stays with the process.

/// Blocks up to this size come from the heap (glibc's ceiling for the threshold).
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory at the top of the heap kept for reuse instead of returned to the OS.
pub const TRIM_THRESHOLD: usize = 256 << 20;

/// The environment variables that set the same thresholds (glibc reads them at start-up); when
/// either is set, [`keep_freed_tensor_memory`] leaves the allocator alone.
const VARS: [&str; 2] = ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"];

fn user_set() -> bool {
    VARS.iter().any(|v| std::env::var_os(v).is_some())
}

/// Apply the thresholds to this process (first thing in `main`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn keep_freed_tensor_memory() {
    if user_set() {
        return;
    }
    // SAFETY: `mallopt` only sets allocator parameters (under glibc's own arena lock); a rejected
    // value leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
    }
}

/// Apply the thresholds to this process (glibc only; elsewhere nothing to do).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_tensor_memory() {}

/// The same thresholds as environment variables for a child process (the PyTorch reference of
/// `bench train`, so both sides of a comparison run with one allocator setting); empty when the
/// user set them, which the child then inherits.
pub fn child_env() -> Vec<(&'static str, String)> {
    if user_set() {
        return Vec::new();
    }
    vec![(VARS[0], MMAP_THRESHOLD.to_string()), (VARS[1], TRIM_THRESHOLD.to_string())]
}
