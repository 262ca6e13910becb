//! The tables: one change table per view of the catalog and the progress table.
//!
//! `<db>.<view>` has the view's columns (String or Int64, as the catalog types them),
//! `time UInt64` and `diff Int64`, `ENGINE = ReplacingMergeTree ORDER BY (time, columns…)`:
//! a `(row, time, diff)` written twice collapses (see `sinks::clickhouse`). Time first: a
//! round's insert holds the latest times, so the parts the server merges in the background
//! mostly cover disjoint ranges of time and its merge compares one integer where it compared
//! the row's text. Replaying a live run's 6.9 M inserted rows, the server's merges took
//! 3.5–4.1 s against 5.6–8.2 s, and in the live benchmark (the server's data on a journaled
//! disk) it used 11.7–13.4 CPU seconds against 15.3–16.3. Tables made with the earlier order
//! `(columns…, time)` are read and written the same way: only the merges' cost differs.
//! `<db>._progress` holds `(view, worker, workers, run, upper, positions, written_ms)` rows
//! (see `cut`).

use dataflows::{ColumnType, ViewDef, CATALOG};

use crate::clickhouse::{check_database, committed_cut, ClickHouseError, Client};

pub const PROGRESS_TABLE: &str = "_progress";

/// The view's columns, quoted, separated by commas.
pub fn column_list(v: &ViewDef) -> String {
    v.columns.iter().map(|c| format!("`{}`", c.name)).collect::<Vec<_>>().join(", ")
}

/// `db.view (columns…, time, diff)`: the target of an insert of the view's changes.
pub fn insert_target(db: &str, v: &ViewDef) -> String {
    format!("{db}.{} ({}, time, diff)", v.name, column_list(v))
}

pub fn table_ddl(db: &str, v: &ViewDef) -> String {
    let mut columns: Vec<String> = v
        .columns
        .iter()
        .map(|c| {
            let ty = match c.ty {
                ColumnType::Int => "Int64",
                // Decimal128 would hold them, but 18.16 crashes grouping by one: the digits,
                // ordered by (length, text) where order matters (see `query`).
                ColumnType::Wide => "String",
                ColumnType::Text => "String",
            };
            format!("`{}` {ty}", c.name)
        })
        .collect();
    columns.push("time UInt64".into());
    columns.push("diff Int64".into());
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{} ({}) ENGINE = ReplacingMergeTree() ORDER BY (time, {})",
        v.name,
        columns.join(", "),
        column_list(v)
    )
}

/// Creates the database and tables if absent (dropping them first for a new deployment) and
/// returns the committed cut to resume from (`None`: nothing recorded yet).
pub fn prepare(client: &Client, db: &str, fresh: bool) -> Result<Option<u64>, ClickHouseError> {
    check_database(db)?;
    client.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))?;
    if fresh {
        for v in CATALOG {
            client.execute(&format!("DROP TABLE IF EXISTS {db}.{}", v.name))?;
        }
        client.execute(&format!("DROP TABLE IF EXISTS {db}.{PROGRESS_TABLE}"))?;
        for table in crate::clickhouse::store::TABLES {
            client.execute(&format!("DROP TABLE IF EXISTS {db}.{table}"))?;
        }
    }
    for v in CATALOG {
        client.execute(&table_ddl(db, v))?;
    }
    client.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.{PROGRESS_TABLE} (view String, worker UInt32, workers UInt32, run UInt64, \
         upper UInt64, positions String, written_ms UInt64) ENGINE = MergeTree() ORDER BY (view, worker)"
    ))?;
    for ddl in crate::clickhouse::store::ddl(db) {
        client.execute(&ddl)?;
    }
    committed_cut(client, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_orders_by_time_and_row() {
        let ddl = table_ddl("db", dataflows::view("word_counts").unwrap());
        assert!(ddl.contains("`count` Int64"), "{ddl}");
        assert!(ddl.contains("`word` String"), "{ddl}");
        assert!(ddl.ends_with("ORDER BY (time, `channel`, `window_start`, `word`, `count`)"), "{ddl}");
    }
}
