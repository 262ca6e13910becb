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
