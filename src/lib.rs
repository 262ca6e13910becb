//! chatflow: incremental analytics for social streams on timely/differential dataflow.
//!
//! The binary's commands live in `main.rs`; this library holds everything they use, so that
//! tests reach the same code.

pub mod cli;
pub mod cluster;
pub mod produce;
pub mod run;
pub mod sinks;
pub mod sources;
pub mod worker;
