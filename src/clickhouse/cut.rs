//! The committed cut: how far every view is durably written.
//!
//! `<db>._progress` holds, per flush of a worker's writer, `(view, worker, workers, run, upper,
//! positions, written_ms)`: every update of `view` before `upper` that `worker` (of `workers`)
//! produces is in the view's table; `positions` is where the worker's source stood
//! (informative: a restart recomputes from the beginning of the log). A row is inserted only
//! after the data it covers.
//!
//! `cut = min over (view, worker) of max(upper)`, over the rows of the latest run (`run` is the
//! cut the run started from; the rows of the run with the latest `written_ms` decide it). Every
//! update before the cut is in every table, so readers sum diffs over `time < cut` (or
//! `time <= T` for `AS OF T`, T below the cut). At start, process 0 inserts a row at the
//! starting cut for every (view, worker) of the new run, so the cut is defined at once.

use std::collections::HashMap;

use dataflows::{Fields, CATALOG};

use crate::clickhouse::schema::PROGRESS_TABLE;
use crate::clickhouse::{check_database, ClickHouseError, Client};
use crate::sinks::encode::TsvFields;

/// The latest run of `db` (its starting cut) and its worker count.
fn latest_run(client: &Client, db: &str) -> Result<Option<(u64, u32)>, ClickHouseError> {
    check_database(db)?;
    let latest = client.execute(&format!(
        "SELECT run, workers FROM {db}.{PROGRESS_TABLE} ORDER BY written_ms DESC, run DESC LIMIT 1 FORMAT TabSeparated"
    ))?;
    let Some(line) = latest.lines().next() else { return Ok(None) };
    let unexpected = || ClickHouseError::Unexpected(line.to_owned());
    let mut fields = line.split('\t');
    let run: u64 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(unexpected)?;
    let workers: u32 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(unexpected)?;
    Ok(Some((run, workers)))
}

/// When `cut` was committed in `db` (ms since the epoch, the writers' clocks): the latest, over
/// every (view, worker) of the latest run, of its first progress row at or past `cut`.
pub fn committed_at(client: &Client, db: &str, cut: u64) -> Result<Option<i64>, ClickHouseError> {
    let Some((run, workers)) = latest_run(client, db)? else { return Ok(None) };
    let answer = client.execute(&format!(
        "SELECT max(first), count() FROM (SELECT min(written_ms) AS first FROM {db}.{PROGRESS_TABLE} \
         WHERE run = {run} AND workers = {workers} AND upper >= {cut} GROUP BY view, worker) FORMAT TabSeparated"
    ))?;
    let line = answer.lines().next().unwrap_or("");
    let (at, pairs) = line.split_once('\t').ok_or_else(|| ClickHouseError::Unexpected(line.to_owned()))?;
    // Every (view, worker) must have reached the cut, or it is not this run's cut.
    let complete = pairs.parse::<usize>().ok() == Some(CATALOG.len() * workers as usize);
    Ok(at.parse::<i64>().ok().filter(|_| complete))
}

/// The committed cut of `db`: `None` before any progress is recorded.
pub fn committed_cut(client: &Client, db: &str) -> Result<Option<u64>, ClickHouseError> {
    let Some((run, workers)) = latest_run(client, db)? else { return Ok(None) };
    let uppers = client.execute(&format!(
        "SELECT view, worker, max(upper) FROM {db}.{PROGRESS_TABLE} WHERE run = {run} AND workers = {workers} \
         GROUP BY view, worker ORDER BY view, worker FORMAT TabSeparated"
    ))?;
    let mut found = HashMap::new();
    for line in uppers.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let parsed = match f[..] {
            [view, worker, upper] => worker.parse::<u32>().ok().zip(upper.parse::<u64>().ok()).map(|wu| (view, wu)),
            _ => None,
        };
        let (view, (worker, upper)) = parsed.ok_or_else(|| ClickHouseError::Unexpected(line.to_owned()))?;
        found.insert((view.to_owned(), worker), upper);
    }
    let mut cut = u64::MAX;
    for v in CATALOG {
        for w in 0..workers {
            cut = cut.min(*found.get(&(v.name.to_owned(), w)).unwrap_or(&run));
        }
    }
    Ok(Some(cut))
}

/// Appends the progress rows of one flush: every view of `worker` is complete below `upper`.
pub fn progress_rows(out: &mut Vec<u8>, worker: u32, workers: u32, run: u64, upper: u64, positions: &str) {
    let written = crate::metrics::now_ms();
    for v in CATALOG {
        let mut f = TsvFields::new(out);
        f.text(v.name);
        f.int(i64::from(worker));
        f.int(i64::from(workers));
        f.int(run as i64);
        f.int(upper as i64);
        f.text(positions);
        f.int(written);
        out.push(b'\n');
    }
}

/// Records the start of a run at `cut` for every (view, worker) of `workers` (process 0); the
/// positions of these rows say which process started it (`start pid=<pid> host=<host>`), for
/// [`last_writer`].
pub fn record_start(client: &Client, db: &str, workers: u32, cut: u64) -> Result<(), ClickHouseError> {
    let mut rows = Vec::new();
    let started = format!("start pid={} host={}", std::process::id(), host_name());
    for w in 0..workers {
        progress_rows(&mut rows, w, workers, cut, cut, &started);
    }
    client.insert(&format!("{db}.{PROGRESS_TABLE}"), &rows)
}

/// This machine's name (the kernel's), `unknown` if it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The run that last wrote progress to a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastWriter {
    /// How long ago its latest progress row was written (ms, by this machine's clock).
    pub age_ms: i64,
    /// The process that started it, as its start rows say (`None` for runs that did not say).
    pub pid: Option<u32>,
    pub host: Option<String>,
}

impl LastWriter {
    /// Whether it is certainly gone: it was started on this machine by a process that no longer
    /// runs chatflow.
    pub fn is_gone(&self) -> bool {
        match (&self.host, self.pid) {
            (Some(host), Some(pid)) if *host == host_name() => {
                pid != std::process::id()
                    && !std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains("chatflow"))
            }
            _ => false,
        }
    }
}

/// The run that last wrote progress to `db`, if the database has any.
pub fn last_writer(client: &Client, db: &str) -> Result<Option<LastWriter>, ClickHouseError> {
    check_database(db)?;
    let exists = client.execute(&format!(
        "SELECT count() FROM system.tables WHERE database = '{db}' AND name = '{PROGRESS_TABLE}' FORMAT TabSeparated"
    ))?;
    if exists.trim() != "1" {
        return Ok(None);
    }
    let latest =
        client.execute(&format!("SELECT count(), max(written_ms) FROM {db}.{PROGRESS_TABLE} FORMAT TabSeparated"))?;
    let line = latest.lines().next().unwrap_or("");
    let (rows, written) = line.split_once('\t').ok_or_else(|| ClickHouseError::Unexpected(line.to_owned()))?;
    if rows == "0" {
        return Ok(None);
    }
    let written: i64 = written.parse().map_err(|_| ClickHouseError::Unexpected(line.to_owned()))?;
    let started = client.execute(&format!(
        "SELECT positions FROM {db}.{PROGRESS_TABLE} WHERE positions LIKE 'start%' \
         ORDER BY written_ms DESC LIMIT 1 FORMAT TabSeparated"
    ))?;
    let field = |name: &str| {
        started
            .split_whitespace()
            .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .map(str::to_owned)
    };
    Ok(Some(LastWriter {
        age_ms: crate::metrics::now_ms() - written,
        pid: field("pid").and_then(|p| p.parse().ok()),
        host: field("host"),
    }))
}
