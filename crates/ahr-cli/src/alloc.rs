//! Allocator settings for tensor workloads: both allocators keep freed memory for reuse.
//!
//! The `ahr` binary gives Rust's allocations to mimalloc (its `#[global_allocator]`); what still
//! goes through glibc's malloc is libtorch's memory (`tch` devices) and the PyTorch reference of
//! `bench train`. [`keep_freed_memory`] sets both, first thing in `main`.
//!
//! **mimalloc** returns freed pages to the OS (`MADV_DONTNEED`) after its purge delay (1 s); a
//! pretraining step's activations are freed and allocated again every step, so the kernel cleared
//! fresh pages for them over and over (38 % of text pretraining in `perf`, 84k–94k page faults in
//! 6 steps). With [`PURGE_DELAY_MS`] = −1 freed pages stay committed and are reused: ~1.5k faults,
//! text pretraining 1.16× faster, for up to 20 % more peak memory (docs/BENCHMARKS.md, "mimalloc
//! keeps freed memory").
//!
//! **glibc** hands blocks above its mmap threshold back to the OS when they are freed, and trims
//! the top of the heap once more than 128 KiB is free there; a training step's tensors are that
//! large, so every step faulted its buffers back in page by page (a sixth of a libtorch step in
//! `perf`). Keeping them in the heap made the `mqar` pretraining step 1.4× faster on flex (before
//! mimalloc) and 1.2× on `tch-cpu`, and PyTorch eager 1.1× (docs/BENCHMARKS.md, "The training
//! step: allocator and softmax"); peak memory is unchanged and at most [`TRIM_THRESHOLD`] of freed
//! memory stays with the process.

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

/// Keep freed memory for reuse in both allocators (first thing in `main`; each setting is left
/// alone when the user set its environment variable).
pub fn keep_freed_memory() {
    keep_freed_rust_memory();
    keep_freed_tensor_memory();
}

/// mimalloc's purge delay in milliseconds: −1, freed memory is never returned to the OS.
pub const PURGE_DELAY_MS: i64 = -1;
/// The environment variable mimalloc reads the same option from (at start-up, before `main`).
const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";
/// `mi_option_purge_delay` in mimalloc v3's `mi_option_e` (the version `libmimalloc-sys` builds by
/// default; the crate names no constant for it). A test checks it against the option's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[allow(unsafe_code)]
fn keep_freed_rust_memory() {
    if std::env::var_os(PURGE_DELAY_VAR).is_some() {
        return;
    }
    // SAFETY: `mi_option_set` stores one value in mimalloc's option table (an atomic store);
    // mimalloc reads the purge delay each time it considers purging, so setting it while the
    // process runs takes effect from then on.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) }
}

/// Apply glibc's thresholds to this process.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_tensor_memory() {
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

/// Apply glibc's thresholds to this process (glibc only; elsewhere nothing to do).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_tensor_memory() {}

/// The same thresholds as environment variables for a child process (the PyTorch reference of
/// `bench train`, so both sides of a comparison run with one allocator setting); empty when the
/// user set them, which the child then inherits.
pub fn child_env() -> Vec<(&'static str, String)> {
    if user_set() {
        return Vec::new();
    }
    vec![(VARS[0], MMAP_THRESHOLD.to_string()), (VARS[1], TRIM_THRESHOLD.to_string())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn purge_delay() -> i64 {
        // SAFETY: reads one entry of mimalloc's option table.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
    }

    /// The option index names mimalloc's purge delay (v3's default, 1000 ms, is the only option
    /// with that default), and setting it holds.
    #[test]
    fn purge_delay_option_is_the_one_set() {
        if std::env::var_os(PURGE_DELAY_VAR).is_some() {
            return; // the user's value, not mimalloc's default
        }
        assert_eq!(purge_delay(), 1000);
        keep_freed_memory();
        assert_eq!(purge_delay(), PURGE_DELAY_MS);
    }
}
