//! Sinks: where view changes go, and how rows become bytes.

pub mod csv;
pub mod encode;
