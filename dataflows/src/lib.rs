//! chatflow's computations: collections in, collections out.
//!
//! Nothing in this crate reads Kafka, files or ClickHouse; it turns differential collections of
//! events into the collections of the views defined in DESIGN.md. Every function is generic
//! over the timestamp, so the same code serves replays (one time per batch of lines) and live
//! streams, and tests can drive it with any time assignment.

pub mod chat;
pub mod network;
pub mod operators;
pub mod types;
pub mod words;

pub use types::*;
