//! Sinks: where view changes go. One [`Sink`] trait, two sinks: CSV change files (`csv`, with
//! the progress record in `progress`) and ClickHouse tables (`clickhouse`).
//!
//! ```text
//!   dataflows::all_views ─export(view)─► Exports ─► Sink::export(rows) ─► written (no data)
//!                                          │ (every catalog view exactly once)     │
//!   source positions ──────────────────────┴──────────► Sink::complete ◄───────────┘ ─► probe
//!   worker loop: probe passes t ─► Sink::advance(t, positions, produce times)
//!   end of run:                     Sink::finish(upper)
//! ```
//!
//! A sink learns how far the dataflow is complete from the worker (`advance`), makes it
//! durable in its own way, and reports its failures through `check`/`advance` as
//! [`SinkError`]s. Each sink's module states its delivery guarantee. Both measure the
//! freshness of live records at the committed cut (`freshness`).

use std::path::PathBuf;

use dataflows::{Diff, Exporter, ViewRow, CATALOG};
use differential_dataflow::VecCollection;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::Stream;

use crate::clickhouse::ClickHouseError;
use crate::sinks::freshness::Live;
use crate::sources::InputPosition;

pub mod clickhouse;
pub mod csv;
pub mod encode;
pub mod freshness;
pub mod progress;

/// A sink operator's output: no data, only a frontier that passes a time once the sink holds
/// that time's updates.
pub type Written<'s> = Stream<'s, u64, Vec<((), u64, Diff)>>;

/// What can stop a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    BadProgress { path: PathBuf, reason: String },
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseError),
    #[error("the ClickHouse writer of worker {0} panicked")]
    WriterPanicked(u32),
    #[error("the ClickHouse writer of worker {0} stopped")]
    WriterStopped(u32),
}

/// One worker's end of a sink.
pub trait Sink {
    /// Takes the updates of one view (named by `R`'s catalog entry); returns a stream whose
    /// frontier passes a time once this sink holds that time's updates.
    fn export<'s, R: ViewRow>(&mut self, rows: VecCollection<'s, u64, R>) -> Written<'s>;
    /// After every view is exported: `written` is their streams together, `positions` the
    /// sources' positions at the times they were read. Returns the stream the worker probes.
    fn complete<'s>(&mut self, written: Written<'s>, positions: VecCollection<'s, u64, InputPosition>) -> Written<'s>;
    /// The dataflow holds every update before `upper` (`None`: every update); the sources
    /// stand at `positions`; `produced` are the live records complete now.
    fn advance(
        &mut self,
        upper: Option<u64>,
        positions: &[InputPosition],
        produced: Vec<Live>,
    ) -> Result<(), SinkError>;
    /// The first failure of the sink's operators, if any.
    fn check(&mut self) -> Result<(), SinkError>;
    /// Every update before `upper` is complete: makes it durable (rows written are counted in
    /// the metrics registry, freshness in the process's tracker).
    fn finish(self, upper: u64, positions: &[InputPosition]) -> Result<(), SinkError>;
}

/// Hands every view of a dataflow to a sink by name, and checks that each view of the catalog
/// came exactly once.
pub struct Exports<'a, 's, S: Sink> {
    sink: &'a mut S,
    written: Vec<Written<'s>>,
    names: Vec<&'static str>,
}

impl<'a, 's, S: Sink> Exports<'a, 's, S> {
    pub fn new(sink: &'a mut S) -> Self {
        Exports { sink, written: Vec::new(), names: Vec::new() }
    }

    /// Completes the sink (see [`Sink::complete`]) once every view is in; an error names the
    /// views exported twice or never.
    pub fn finish(self, positions: VecCollection<'s, u64, InputPosition>) -> Result<Written<'s>, ExportError> {
        check_exports(&self.names)?;
        let written = positions.inner.scope().concatenate(self.written);
        Ok(self.sink.complete(written, positions))
    }
}

impl<'s, S: Sink> Exporter<'s, u64> for Exports<'_, 's, S> {
    fn export<R: ViewRow>(&mut self, rows: VecCollection<'s, u64, R>) {
        self.names.push(R::DEF.name);
        self.written.push(self.sink.export(rows));
    }
}

/// The views a dataflow exported do not match the catalog, or the catalog is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the dataflow's exports do not match the view catalog: {0}")]
    Mismatch(String),
    #[error(transparent)]
    Catalog(#[from] dataflows::CatalogError),
}

/// A consistent catalog, every view of it exported exactly once, and nothing else.
fn check_exports(names: &[&'static str]) -> Result<(), ExportError> {
    dataflows::check_catalog(CATALOG)?;
    let count = |name: &str| names.iter().filter(|n| **n == name).count();
    let wrong: Vec<String> = CATALOG
        .iter()
        .map(|v| (v.name, count(v.name)))
        .filter(|(_, n)| *n != 1)
        .map(|(name, n)| format!("{name} exported {n} times"))
        .chain(names.iter().filter(|n| dataflows::view(n).is_err()).map(|n| format!("{n} is not in the catalog")))
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(ExportError::Mismatch(wrong.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::check_exports;
    use dataflows::CATALOG;

    #[test]
    fn every_view_is_exported_exactly_once() {
        let all: Vec<&str> = CATALOG.iter().map(|v| v.name).collect();
        assert!(check_exports(&all).is_ok());
        let mut twice = all.clone();
        twice.push("top_words");
        assert!(check_exports(&twice).unwrap_err().to_string().contains("top_words exported 2 times"));
        assert!(check_exports(&all[1..]).unwrap_err().to_string().contains("word_counts exported 0 times"));
    }
}
