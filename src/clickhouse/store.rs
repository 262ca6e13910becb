//! What a restart needs, kept in the deployment's database: checkpoints and the Kafka clock
//! bindings. So a worker on a fresh machine, with an empty `--out`, resumes a ClickHouse
//! deployment as well as the machine that ran it (DESIGN.md, "Restarts that do not replay
//! history").
//!
//! - `_checkpoints (time, worker, part, bytes)`: each worker's checkpoint file (see
//!   `worker::checkpoint`) in parts of 4 MiB, hex-encoded (a `String` holds any bytes, but
//!   TabSeparated would have to escape them; hex is plain). Partitioned by `time`, so an older
//!   checkpoint goes with one `DROP PARTITION`.
//! - `_checkpoints_complete (time, workers)`: a checkpoint counts once its row is here, written
//!   after every worker's parts (the file's CRC catches a part missing).
//! - `_clock (topic, partition, offset, time)`: every clock binding, inserted before it takes
//!   effect, as `<out>/_clock.w<worker>.csv` holds them.
//! - `_deployment (setting, value)`: the settings the deployment began with (see
//!   `deployment`), which a resume on a fresh machine is checked against.
//!
//! Every statement is one 18.16 accepts and a current ClickHouse too (checked by the tests).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use crate::clickhouse::{ClickHouseError, Client};

pub const CHECKPOINTS_TABLE: &str = "_checkpoints";
pub const COMPLETE_TABLE: &str = "_checkpoints_complete";
pub const CLOCK_TABLE: &str = "_clock";
pub const SETTINGS_TABLE: &str = "_deployment";

/// Bytes of a checkpoint file per row of `_checkpoints`.
const PART_BYTES: usize = 4 << 20;

/// The tables' DDL.
pub fn ddl(db: &str) -> [String; 4] {
    [
        settings_ddl(db),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{CHECKPOINTS_TABLE} (time UInt64, worker UInt32, part UInt32, bytes String) \
             ENGINE = MergeTree() PARTITION BY time ORDER BY (worker, part)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{COMPLETE_TABLE} (time UInt64, workers UInt32) ENGINE = MergeTree() ORDER BY time"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{CLOCK_TABLE} (topic String, partition Int32, offset Int64, time UInt64) \
             ENGINE = MergeTree() ORDER BY (topic, partition, offset)"
        ),
    ]
}

/// The tables, for a new deployment to drop.
pub const TABLES: [&str; 4] = [CHECKPOINTS_TABLE, COMPLETE_TABLE, CLOCK_TABLE, SETTINGS_TABLE];

fn settings_ddl(db: &str) -> String {
    format!("CREATE TABLE IF NOT EXISTS {db}.{SETTINGS_TABLE} (setting String, value String) ENGINE = MergeTree() ORDER BY setting")
}

/// Records a new deployment's settings (see `deployment`), replacing any earlier ones.
pub fn record_settings(client: &Client, db: &str, settings: &BTreeMap<String, String>) -> Result<(), ClickHouseError> {
    client.execute(&format!("DROP TABLE IF EXISTS {db}.{SETTINGS_TABLE}"))?;
    client.execute(&settings_ddl(db))?;
    let mut rows = Vec::new();
    for (setting, value) in settings {
        crate::sinks::encode::escape_tsv(&mut rows, setting);
        rows.push(b'\t');
        crate::sinks::encode::escape_tsv(&mut rows, value);
        rows.push(b'\n');
    }
    client.insert(&format!("{db}.{SETTINGS_TABLE} (setting, value)"), &rows)
}

/// The deployment's settings as recorded in the database, if any.
pub fn read_settings(client: &Client, db: &str) -> Result<Option<BTreeMap<String, String>>, ClickHouseError> {
    let answer = client.execute(&format!("SELECT setting, value FROM {db}.{SETTINGS_TABLE} FORMAT TabSeparated"))?;
    let settings: BTreeMap<String, String> = answer
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(s, v)| (crate::sinks::encode::unescape_tsv(s), crate::sinks::encode::unescape_tsv(v)))
        .collect();
    Ok((!settings.is_empty()).then_some(settings))
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseError),
    #[error("{}: {source}", path.display())]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("{what}: the answer is not what was stored ({reason})")]
    Garbled { what: String, reason: String },
}

/// [`crate::clickhouse::retry`] until the run is stopped (and 60 s more).
fn retry<T>(what: &str, attempt: impl FnMut() -> Result<T, ClickHouseError>) -> Result<T, ClickHouseError> {
    crate::clickhouse::retry(&crate::worker::STOP, what, attempt)
}

fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
}

fn unhex(text: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    if !text.len().is_multiple_of(2) {
        return Err("an odd number of hex digits".into());
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(format!("{:?} is not a hex digit", c as char)),
    };
    for pair in text.chunks_exact(2) {
        out.push(digit(pair[0])? << 4 | digit(pair[1])?);
    }
    Ok(())
}

/// Stores worker `worker`'s checkpoint file `path` (of the checkpoint at `time`).
pub fn upload(client: &Client, db: &str, time: u64, worker: u32, path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut chunk = vec![0u8; PART_BYTES];
    let mut rows = Vec::with_capacity(2 * PART_BYTES + 64);
    let table = format!("{db}.{CHECKPOINTS_TABLE} (time, worker, part, bytes)");
    for part in 0u32.. {
        let mut filled = 0;
        while filled < chunk.len() {
            match file.read(&mut chunk[filled..]).map_err(io)? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 && part > 0 {
            break;
        }
        rows.clear();
        write!(rows, "{time}\t{worker}\t{part}\t").expect("writing to a vector");
        hex(&chunk[..filled], &mut rows);
        rows.push(b'\n');
        retry("storing a checkpoint", || client.insert(&table, &rows))?;
        if filled < chunk.len() {
            break;
        }
    }
    Ok(())
}

/// Writes worker `worker`'s stored file of the checkpoint at `time` to `path`; `false` if
/// the database holds none.
pub fn download(client: &Client, db: &str, time: u64, worker: u32, path: &Path) -> Result<bool, StoreError> {
    let sql = format!(
        "SELECT part, any(bytes) FROM {db}.{CHECKPOINTS_TABLE} WHERE time = {time} AND worker = {worker} \
         GROUP BY part ORDER BY part FORMAT TabSeparated"
    );
    let answer = retry("reading a checkpoint", || client.execute(&sql))?;
    if answer.is_empty() {
        return Ok(false);
    }
    let garbled = |reason: String| StoreError::Garbled { what: format!("checkpoint {time}, worker {worker}"), reason };
    let mut bytes = Vec::with_capacity(answer.len() / 2);
    for (expected, line) in answer.lines().enumerate() {
        let (part, text) = line.split_once('\t').ok_or_else(|| garbled("a row without its part".into()))?;
        if part.parse::<usize>().ok() != Some(expected) {
            return Err(garbled(format!("part {part} where {expected} was expected")));
        }
        unhex(text.as_bytes(), &mut bytes).map_err(garbled)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_owned(), source })?;
    }
    std::fs::write(path, bytes).map_err(|source| StoreError::Io { path: path.to_owned(), source })?;
    Ok(true)
}

/// Marks the checkpoint at `time` complete, then drops the older ones.
pub fn complete(client: &Client, db: &str, time: u64, workers: u32) -> Result<(), StoreError> {
    let row = format!("{time}\t{workers}\n");
    retry("completing a checkpoint", || {
        client.insert(&format!("{db}.{COMPLETE_TABLE} (time, workers)"), row.as_bytes())
    })?;
    let older = retry("listing checkpoints", || {
        client.execute(&format!(
            "SELECT DISTINCT time FROM {db}.{CHECKPOINTS_TABLE} WHERE time < {time} FORMAT TabSeparated"
        ))
    })?;
    for old in older.lines().filter_map(|l| l.trim().parse::<u64>().ok()) {
        retry("dropping an older checkpoint", || {
            client.execute(&format!("ALTER TABLE {db}.{CHECKPOINTS_TABLE} DROP PARTITION {old}"))
        })?;
    }
    Ok(())
}

/// The latest complete checkpoint: its time and number of workers.
pub fn latest(client: &Client, db: &str) -> Result<Option<(u64, u32)>, ClickHouseError> {
    let answer = client.execute(&format!(
        "SELECT time, workers FROM {db}.{COMPLETE_TABLE} ORDER BY time DESC LIMIT 1 FORMAT TabSeparated"
    ))?;
    Ok(answer.trim().split_once('\t').and_then(|(t, w)| Some((t.parse().ok()?, w.parse().ok()?))))
}

/// Records clock bindings `(topic, partition, offset, time)`.
pub fn record_bindings(client: &Client, db: &str, bindings: &[(String, i32, i64, u64)]) -> Result<(), ClickHouseError> {
    let mut rows = Vec::new();
    for (topic, partition, offset, time) in bindings {
        crate::sinks::encode::escape_tsv(&mut rows, topic);
        writeln!(rows, "\t{partition}\t{offset}\t{time}").expect("writing to a vector");
    }
    let table = format!("{db}.{CLOCK_TABLE} (topic, partition, offset, time)");
    retry("recording clock bindings", || client.insert(&table, &rows))
}

/// Every recorded clock binding, per (topic, partition), by offset (the largest time per offset).
pub fn read_bindings(
    client: &Client,
    db: &str,
) -> Result<BTreeMap<(String, i32), BTreeMap<i64, u64>>, ClickHouseError> {
    let answer = client.execute(&format!(
        "SELECT topic, partition, offset, max(time) FROM {db}.{CLOCK_TABLE} GROUP BY topic, partition, offset \
         FORMAT TabSeparated"
    ))?;
    let mut out: BTreeMap<(String, i32), BTreeMap<i64, u64>> = BTreeMap::new();
    for line in answer.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if let [topic, partition, offset, time] = fields[..] {
            if let (Ok(p), Ok(o), Ok(t)) = (partition.parse(), offset.parse(), time.parse()) {
                out.entry((crate::sinks::encode::unescape_tsv(topic), p)).or_default().insert(o, t);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_every_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut text = Vec::new();
        hex(&bytes, &mut text);
        let mut back = Vec::new();
        unhex(&text, &mut back).unwrap();
        assert_eq!(back, bytes);
        assert!(unhex(b"abc", &mut back).is_err());
        assert!(unhex(b"zz", &mut back).is_err());
    }
}
