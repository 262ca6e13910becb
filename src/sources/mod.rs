//! Sources: where events come from, and how raw bytes become events or dead letters.
//!
//! A source gives every record it reads an ingestion time that depends only on the input (see
//! each source's module doc for its rule) and tells its worker the least time it can still
//! give (its frontier), which is how far the worker may advance its inputs.

use std::fmt;
use std::path::PathBuf;

pub mod decode;
pub mod files;
pub mod import;
pub mod kafka;
pub mod sniff;
pub mod tweets;

/// What can stop a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Kafka { what: String, source: rdkafka::error::KafkaError },
    #[error("{}: {source}", path.display())]
    Clock { path: PathBuf, source: csv::Error },
    #[error("none of the topics {asked:?} exists on {brokers}")]
    NoTopics { asked: Vec<String>, brokers: String },
    #[error("the clock bindings in ClickHouse: {0}")]
    ClockStore(#[from] crate::clickhouse::ClickHouseError),
}

/// Names what failed, as `anyhow`'s `context` does, for the errors sources meet.
pub(crate) trait Context<T> {
    fn context(self, what: &str) -> Result<T, SourceError>;
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, SourceError>;
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn context(self, what: &str) -> Result<T, SourceError> {
        self.with_context(|| what.to_owned())
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, SourceError> {
        self.map_err(|source| SourceError::Io { what: what(), source })
    }
}

impl<T> Context<T> for Result<T, rdkafka::error::KafkaError> {
    fn context(self, what: &str) -> Result<T, SourceError> {
        self.with_context(|| what.to_owned())
    }
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T, SourceError> {
        self.map_err(|source| SourceError::Kafka { what: what(), source })
    }
}

/// Where a record sits in its source, for dead letters and progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// A line of a file, 1-based.
    Line(u64),
    /// A Kafka record.
    Offset { partition: i32, offset: i64 },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Position::Line(line) => write!(f, "{line}"),
            Position::Offset { partition, offset } => write!(f, "{partition}:{offset}"),
        }
    }
}

/// One record as a source hands it to its worker.
pub struct Record<'a> {
    /// The ingestion time the source gives it.
    pub time: u64,
    /// The file or topic.
    pub source: &'a str,
    pub position: Position,
    /// The payload (its first KiB if `oversized`); `None` for a Kafka record without payload.
    pub bytes: Option<&'a [u8]>,
    /// `Some(length)` if the record is longer than the 1 MiB limit.
    pub oversized: Option<u64>,
    /// When the record was produced (Kafka's timestamp, ms since the epoch), if known.
    pub produced_ms: Option<i64>,
}

/// How far one input of a worker has been read: the next line or offset.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct InputPosition {
    pub source: String,
    pub partition: i32,
    pub next: i64,
}

/// Where a source resumes from a checkpoint: per input partition, the first line or offset at
/// or after the checkpoint's time, and (Kafka) the partition's greatest timestamp before it,
/// which its clock continues from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumeAt {
    pub source: String,
    pub partition: i32,
    pub next: i64,
    pub max_ts: i64,
}

/// A source of records for one worker.
pub trait Source {
    /// Reads up to about `budget` records — fewer if no more are ready now — handing each to
    /// `each`.
    fn read(&mut self, budget: usize, each: &mut dyn FnMut(Record)) -> Result<(), SourceError>;
    /// The least ingestion time a record read from now on can get; `None` once exhausted.
    fn frontier(&self) -> Option<u64>;
    /// Where each of this worker's inputs stands.
    fn positions(&self) -> Vec<InputPosition>;
    /// Bytes read so far, for the progress bar.
    fn bytes_read(&self) -> u64;
    /// A time above every time given so far.
    fn end_time(&self) -> u64;
    /// Makes the exhausted source's end durable at `time` (≥ [`Self::end_time`]): a later run
    /// that reads more of the log gives what it finds beyond this run's end times ≥ `time`.
    fn seal(&mut self, _time: u64) -> Result<(), SourceError> {
        Ok(())
    }
    /// Where a run resuming at `time` must start reading (see [`ResumeAt`]); asked once the
    /// source's frontier has reached `time`.
    fn resume_at(&self, time: u64) -> Vec<ResumeAt>;
    /// No later checkpoint will be at a time before `time`: what `resume_at` keeps for
    /// earlier times may go.
    fn forget_before(&mut self, _time: u64) {}
}
