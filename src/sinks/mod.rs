//! Sinks: where view changes go, and how rows become bytes.

pub mod clickhouse;
pub mod csv;
pub mod encode;
pub mod kafka_out;
pub mod progress;
