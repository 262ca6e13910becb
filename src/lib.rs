//! chatflow: incremental analytics for social streams on timely/differential dataflow.
//!
//! The binary's commands live in `main.rs`; this library holds everything they use, so that
//! tests reach the same code.

pub mod cli;
pub mod clickhouse;
pub mod cluster;
pub mod lexica;
pub mod metrics;
pub mod produce;
pub mod profile;
pub mod query;
pub mod run;
pub mod serve;
pub mod sinks;
pub mod sources;
pub mod worker;

// Differential's arrangements allocate and free many small buffers while merging batches;
// glibc's allocator spent a third of a replay in malloc/free on that pattern, mimalloc a
// fraction of it (23 k → 53 k events/s on one worker, measured). Declared here so the binary, the
// benchmarks and the tests all run with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option index of `mi_option_purge_delay` (mimalloc v2's `mi_option_t`, which
/// libmimalloc-sys builds by default; `tune_allocator` checks that it took).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory for a second before returning it to the OS. mimalloc's default (10 ms)
/// made a batch's buffers go back to the OS and fault in again zeroed for the next batch:
/// loading the ENGB graph spent 4.5 s of 10 s in the kernel, 1.1 s with this delay.
pub fn tune_allocator() {
    // SAFETY: setting an option is a plain store; called before worker threads start.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000);
        debug_assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
    }
}
