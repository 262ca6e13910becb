//! chatflow: incremental analytics for social streams on timely/differential dataflow.
//!
//! The binary's commands live in `main.rs`; this library holds everything they use, so that
//! tests reach the same code.

pub mod cli;
pub mod clickhouse;
pub mod cluster;
pub mod config;
pub mod deployment;
pub mod fuzz;
pub mod lexica;
pub mod lock;
pub mod metrics;
pub mod produce;
pub mod profile;
pub mod query;
pub mod run;
pub mod serve;
pub mod sinks;
pub mod sources;
pub mod swar;
pub mod worker;

// Differential's arrangements allocate and free many small buffers while merging batches;
// glibc's allocator spent a third of a replay in malloc/free on that pattern, mimalloc a
// fraction of it (23 k → 53 k events/s on one worker, measured). Declared here so the binary, the
// benchmarks and the tests all run with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option index of `mi_option_purge_delay` (mimalloc v3's `mi_option_t`, which
/// libmimalloc-sys 0.1.49 builds by default; `tune_allocator` checks that it took).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// The same for `mi_option_arena_eager_commit`.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Keeps freed memory for a second before returning it to the OS. mimalloc's default (10 ms)
/// made a batch's buffers go back to the OS and fault in again zeroed for the next batch:
/// loading the ENGB graph spent 4.5 s of 10 s in the kernel, 1.1 s with this delay.
///
/// Commits arena memory as it is used rather than whole arenas at once: with eager commit the
/// kernel backed the growing state tables (a running total's hash map of millions of keys)
/// with transparent huge pages zeroed 2 MiB at a time, a quarter of a replay of the peer
/// workload in `clear_page` (perf); without it that replay runs 10–15 % faster (-w 1: 72–78 k
/// → 85–87 k events/s; -w 2: 129–146 k → 156–161 k) and peaks 40 MB lower.
///
/// mimalloc is built without transparent huge pages (libmimalloc-sys's `no_thp` feature, in
/// Cargo.toml; by default it madvises its arenas with `MADV_HUGEPAGE`, and the first arena is
/// mapped before `main`, so an option set here would come too late): every first touch of a
/// 2 MiB region faulted in and zeroed a whole huge page, and the per-time buffers of the
/// sinks and operators touch fresh regions all the time. On the peer workload at -w 1 that was
/// 15 % of the run in `clear_page` (perf); without it system time fell from 1.1 s to 0.4 s
/// and the run from 5.5 s to 4.9 s, with a lower peak.
pub fn tune_allocator() {
    // SAFETY: setting an option is a plain store; called before worker threads start.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000);
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        debug_assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
        debug_assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT), 0);
    }
}
