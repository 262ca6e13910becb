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
         GROUP BY view, worker FORMAT TabSeparated"
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

/// Records the start of a run at `cut` for every (view, worker) of `workers` (process 0).
pub fn record_start(client: &Client, db: &str, workers: u32, cut: u64) -> Result<(), ClickHouseError> {
    let mut rows = Vec::new();
    for w in 0..workers {
        progress_rows(&mut rows, w, workers, cut, cut, "start");
    }
    client.insert(&format!("{db}.{PROGRESS_TABLE}"), &rows)
}
