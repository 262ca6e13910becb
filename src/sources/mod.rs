//! Sources: where events come from, and how raw bytes become events or dead letters.

pub mod decode;
pub mod files;
pub mod import;
