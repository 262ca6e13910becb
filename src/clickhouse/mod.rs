//! ClickHouse as chatflow's store: the HTTP client, the tables of the views (from the catalog)
//! and the progress table, and the committed cut that readers and restarts rely on. The sink
//! that writes the tables is `sinks::clickhouse`; the readers are in `query`.
//!
//! Only SQL that ClickHouse 18.16 understands and current ClickHouse still accepts is used:
//! `tests/it/clickhouse.rs` records every statement of runs, resumes, queries and the server
//! against 18.16 (`CHATFLOW_SQL_LOG`, see `client`) and replays them, with their data, in
//! ClickHouse 26.9 (chdb-core), which must accept each and answer alike.

pub mod client;
pub mod cut;
pub mod schema;
pub mod store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use client::Client;
pub use cut::{committed_cut, record_start};
pub use schema::prepare;

/// What went wrong talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    #[error(
        "cannot reach ClickHouse at {url} ({reason}): start a server with \
         `scripts/clickhouse.sh start` (127.0.0.1:8123), or pass --clickhouse URL of a running one"
    )]
    Unreachable {
        url: String,
        /// The statement that could not be sent (its first words).
        what: String,
        reason: String,
    },
    #[error("ClickHouse refused {what} (HTTP {code}): {body}")]
    Refused { what: String, code: u16, body: String },
    #[error("reading the answer to {what}: {source}")]
    Read { what: String, source: std::io::Error },
    #[error("unexpected answer from ClickHouse: {0:?}")]
    Unexpected(String),
    #[error("database name {0:?}: use letters, digits and _ only")]
    BadDatabase(String),
}

/// Where the sink writes and readers read.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub database: String,
}

/// A database name ClickHouse takes unquoted: letters, digits and `_`, not starting with a digit.
pub fn check_database(name: &str) -> Result<(), ClickHouseError> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ClickHouseError::BadDatabase(name.to_owned()))
    }
}

/// Runs `attempt` (a `what`: "insert", "storing a checkpoint", …) until it succeeds, backing
/// off from 100 ms to 5 s: a server that is down holds the caller, as it holds the sinks.
/// After `stop` is set, gives up once it has been failing for 60 s.
pub fn retry<T>(
    stop: &AtomicBool,
    what: &str,
    mut attempt: impl FnMut() -> Result<T, ClickHouseError>,
) -> Result<T, ClickHouseError> {
    let mut delay = Duration::from_millis(100);
    let mut failing_since: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        match attempt() {
            Ok(done) => {
                if failures > 0 {
                    tracing::warn!(failures, what, "ClickHouse answers again");
                }
                return Ok(done);
            }
            Err(e) => {
                failures += 1;
                crate::metrics::insert_retry();
                let since = *failing_since.get_or_insert_with(Instant::now);
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(error = %e, failures, what, "ClickHouse failed; retrying");
                }
                if stop.load(Ordering::Relaxed) && since.elapsed() > Duration::from_secs(60) {
                    crate::metrics::insert_failure();
                    tracing::error!(error = %e, what, "giving up on ClickHouse after a stop was asked for");
                    return Err(e);
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names() {
        assert!(check_database("chatflow_1").is_ok());
        assert!(check_database("x; DROP").is_err());
        assert!(check_database("1abc").is_err());
        assert!(check_database("").is_err());
    }
}
