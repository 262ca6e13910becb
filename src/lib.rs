//! chatflow: incremental analytics for social streams on timely/differential dataflow.
//!
//! The binary's commands live in `main.rs`; this library holds everything they use, so that
//! tests reach the same code.

pub mod cli;
pub mod cluster;
pub mod produce;
pub mod profile;
pub mod run;
pub mod sinks;
pub mod sources;
pub mod worker;

// Differential's arrangements allocate and free many small buffers while merging batches;
// glibc's allocator spent a third of a replay in malloc/free on that pattern, mimalloc a
// fraction of it (23 k → 53 k events/s on one worker, measured). Declared here so the binary, the
// benchmarks and the tests all run with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
