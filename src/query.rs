//! Reading views: one view at the committed cut (or `AS OF` a time below it), filtered, as
//! rows of text, from ClickHouse (`read_view`) or from a run's change files (`read_dir`).
//! Shared by `chatflow query` and the HTTP server. Both answer alike: the same rows, sorted
//! by the view's columns (numbers as numbers, text by bytes), then limited.
//!
//! In change files the cut is the upper of `<dir>/_progress.csv`: every update before it is
//! in the files (a stopped or killed run may have written a part of later times, which are
//! not read).
//!
//! Over ClickHouse, a view's rows at time `T` are its `(row, time, diff)` updates with
//! `time <= T`, each `(row, time)` collapsed to one diff (copies written twice are identical),
//! summed per row; every row has multiplicity 0 or 1. Filter values travel as an external
//! table in the request (a multipart TabSeparated file), never spliced into SQL text; the
//! columns a filter matches come from the catalog.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dataflows::{ColumnType, ViewDef};

use crate::clickhouse::schema::column_list;
use crate::clickhouse::{check_database, committed_cut, ClickHouseError, Client};
use crate::sinks::encode::{escape_tsv, unescape_tsv};
use crate::sinks::progress::{read_upper, PROGRESS_FILE};

/// A reader's request: one view at the cut (or at `as_of`), optionally filtered.
pub struct Query<'a> {
    pub view: &'a str,
    pub channel: Option<&'a str>,
    pub user: Option<&'a str>,
    pub place: Option<&'a str>,
    pub as_of: Option<u64>,
    pub limit: Option<u64>,
}

/// The rows of a view (fields as text, in column order) and the time they are read at.
pub struct Answer {
    pub view: &'static ViewDef,
    pub rows: Vec<Vec<String>>,
    pub cut: u64,
    pub at: u64,
}

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    NoView(#[from] dataflows::NoSuchView),
    #[error("{view} has no {filter} column to filter on")]
    NoFilter { view: &'static str, filter: &'static str },
    #[error("{0} has no committed progress yet")]
    NothingCommitted(String),
    #[error("time {at} is not committed yet: the committed cut is {cut} (every time below it)")]
    NotCommitted { at: u64, cut: u64 },
    #[error("{view}: row {row:?} has multiplicity {n} at time {at} (expected 1)")]
    Multiplicity { view: &'static str, row: Vec<String>, n: i64, at: u64 },
    #[error(transparent)]
    ClickHouse(#[from] ClickHouseError),
    #[error(
        "{} holds no {PROGRESS_FILE}: it is not the --out directory of a chatflow run (make one with \
         `chatflow run --replay fixtures/ --out {}`)", .0.display(), .0.display()
    )]
    NotAnOutDir(PathBuf),
    #[error("reading {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
}

/// The filters a query may carry, by the name the catalog gives them.
const FILTERS: [&str; 3] = ["channel", "user", "place"];

impl Query<'_> {
    /// The value of each filter of `FILTERS`, in order.
    fn filter_values(&self) -> [Option<&str>; 3] {
        [self.channel, self.user, self.place]
    }
}

/// Reads `query.view` of database `db` at the committed cut (or at `as_of`), summing diffs.
pub fn read_view(client: &Client, db: &str, query: &Query) -> Result<Answer, QueryError> {
    check_database(db)?;
    let view = dataflows::view(query.view)?;
    let cut = committed_cut(client, db)?.ok_or_else(|| QueryError::NothingCommitted(db.to_owned()))?;
    let at = read_time(query.as_of, cut)?;
    let columns = column_list(view);
    let mut filters = vec![if cut == 0 { "0".to_string() } else { format!("time <= {at}") }];
    for (filter, value) in FILTERS.iter().zip(query.filter_values()) {
        if value.is_none() {
            continue;
        }
        let matched = view.filter_columns(filter);
        if matched.is_empty() {
            return Err(QueryError::NoFilter { view: view.name, filter });
        }
        let any: Vec<String> = matched.iter().map(|c| format!("`{c}` IN (SELECT `{filter}` FROM _p)")).collect();
        filters.push(format!("({})", any.join(" OR ")));
    }
    let limit = query.limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    // Wide integers are stored as their digits (never negative): by length, then text, is by value.
    let order: Vec<String> = view
        .columns
        .iter()
        .map(|c| match c.ty {
            ColumnType::Wide => format!("length(`{0}`), `{0}`", c.name),
            _ => format!("`{}`", c.name),
        })
        .collect();
    let order = order.join(", ");
    let sql = format!(
        "SELECT {columns}, sum(d) AS n FROM (SELECT {columns}, time, any(diff) AS d FROM {db}.{} WHERE {} \
         GROUP BY {columns}, time) GROUP BY {columns} HAVING n != 0 ORDER BY {order}{limit} FORMAT TabSeparated",
        view.name,
        filters.join(" AND ")
    );
    let mut param = Vec::new();
    for (i, value) in query.filter_values().iter().enumerate() {
        if i > 0 {
            param.push(b'\t');
        }
        escape_tsv(&mut param, value.unwrap_or(""));
    }
    param.push(b'\n');
    let structure: Vec<String> = FILTERS.iter().map(|f| format!("{f} String")).collect();
    let text = client.select_with(&sql, "_p", &structure.join(", "), &param)?;
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut fields: Vec<String> = line.split('\t').map(unescape_tsv).collect();
        let n: i64 =
            fields.pop().and_then(|n| n.parse().ok()).ok_or_else(|| ClickHouseError::Unexpected(line.into()))?;
        if n != 1 {
            return Err(QueryError::Multiplicity { view: view.name, row: fields, n, at });
        }
        rows.push(fields);
    }
    Ok(Answer { view, rows, cut, at })
}

/// The time a query reads at: `as_of` if it is below `cut`, else the last time below it.
fn read_time(as_of: Option<u64>, cut: u64) -> Result<u64, QueryError> {
    match as_of {
        Some(t) if t >= cut => Err(QueryError::NotCommitted { at: t, cut }),
        Some(t) => Ok(t),
        None => Ok(cut.saturating_sub(1)),
    }
}

/// Reads `query.view` from the change files of a run's output directory `dir`, at the upper
/// of its progress record (or at `as_of`), summing diffs; rows are filtered, sorted and
/// limited as `read_view` does.
pub fn read_dir(dir: &Path, query: &Query) -> Result<Answer, QueryError> {
    let values = query.filter_values();
    read_dir_where(dir, query, values.each_ref().map(|value| value.as_ref().map(std::slice::from_ref)))
}

/// [`read_dir`] of the rows whose channel is one of `channels` (one pass over the file for
/// several channels; `query.channel` is not used).
pub fn read_dir_channels<'a>(dir: &Path, query: &'a Query<'a>, channels: &'a [&'a str]) -> Result<Answer, QueryError> {
    let one = |value: &'a Option<&'a str>| value.as_ref().map(std::slice::from_ref);
    read_dir_where(dir, query, [Some(channels), one(&query.user), one(&query.place)])
}

/// [`read_dir`] with each filter of `FILTERS` matching any of its values.
fn read_dir_where(dir: &Path, query: &Query, filters: [Option<&[&str]>; 3]) -> Result<Answer, QueryError> {
    let view = dataflows::view(query.view)?;
    let unreadable = |path: &Path, reason: String| QueryError::File { path: path.to_owned(), reason };
    let cut = read_upper(dir)
        .map_err(|e| unreadable(&dir.join(PROGRESS_FILE), e.to_string()))?
        .ok_or_else(|| QueryError::NotAnOutDir(dir.to_owned()))?;
    let at = read_time(query.as_of, cut)?;
    let mut wanted: Vec<(Vec<usize>, &[&str])> = Vec::new();
    for (filter, value) in FILTERS.iter().zip(filters) {
        let Some(value) = value else { continue };
        let matched = view.filter_columns(filter);
        if matched.is_empty() {
            return Err(QueryError::NoFilter { view: view.name, filter });
        }
        let indices = view.columns.iter().enumerate().filter(|(_, c)| matched.contains(&c.name)).map(|(i, _)| i);
        wanted.push((indices.collect(), value));
    }
    let path = dir.join(format!("{}.csv", view.name));
    let width = view.columns.len();
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
        // Created by a run this instant, its header not written yet: no rows.
        return Ok(Answer { view, rows: Vec::new(), cut, at });
    }
    let mut reader = csv::Reader::from_path(&path).map_err(|e| unreadable(&path, e.to_string()))?;
    let header = reader.headers().map_err(|e| unreadable(&path, e.to_string()))?;
    let expected: Vec<&str> = view.column_names().into_iter().chain(["time", "diff"]).collect();
    if header.iter().ne(expected.iter().copied()) {
        return Err(unreadable(&path, format!("header {header:?}, expected {}", expected.join(","))));
    }
    let mut sums: HashMap<Vec<String>, i64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(|e| unreadable(&path, e.to_string()))? {
        let number = |i: usize| record.get(i).and_then(|v| v.parse::<i64>().ok());
        let (Some(time), Some(diff)) = (number(width), number(width + 1)) else {
            let line = record.position().map_or(0, |p| p.line());
            return Err(unreadable(&path, format!("line {line}: no time and diff in {record:?}")));
        };
        if cut == 0 || time < 0 || time as u64 > at {
            continue;
        }
        if !wanted.iter().all(|(columns, values)| columns.iter().any(|&i| values.contains(&&record[i]))) {
            continue;
        }
        let row: Vec<String> = record.iter().take(width).map(str::to_owned).collect();
        *sums.entry(row).or_default() += diff;
    }
    let mut rows = Vec::with_capacity(sums.len());
    for (row, n) in sums {
        match n {
            0 => {}
            1 => rows.push(row),
            n => return Err(QueryError::Multiplicity { view: view.name, row, n, at }),
        }
    }
    rows.sort_by(|a, b| compare_rows(view, a, b));
    if let Some(limit) = query.limit {
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(Answer { view, rows, cut, at })
}

/// The order of `ORDER BY` the view's columns: numbers by value, text by bytes.
fn compare_rows(view: &ViewDef, a: &[String], b: &[String]) -> Ordering {
    for ((column, x), y) in view.columns.iter().zip(a).zip(b) {
        let order = match column.ty {
            ColumnType::Int | ColumnType::Wide => match (x.parse::<i128>(), y.parse::<i128>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => x.cmp(y),
            },
            ColumnType::Text => x.as_bytes().cmp(y.as_bytes()),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

impl Answer {
    /// The rows as JSON objects keyed by column, integers as numbers: what `chatflow query
    /// --format json` prints and the HTTP API returns.
    pub fn json_rows(&self) -> Vec<serde_json::Value> {
        let columns = self.view.column_names();
        self.rows
            .iter()
            .map(|row| {
                let object = columns.iter().zip(row).map(|(c, v)| {
                    let value = match self.view.is_int(c) {
                        true => v.parse::<i64>().map(serde_json::Value::from).unwrap_or_else(|_| v.as_str().into()),
                        false => v.as_str().into(),
                    };
                    (c.to_string(), value)
                });
                serde_json::Value::Object(object.collect())
            })
            .collect()
    }
}

/// Messages per channel of a `channel_activity` answer, busiest first (ties by name).
pub fn channel_messages(activity: &Answer) -> Vec<(String, i64)> {
    let mut messages: HashMap<String, i64> = HashMap::new();
    for row in &activity.rows {
        *messages.entry(row[0].clone()).or_default() += row[2].parse::<i64>().unwrap_or(0);
    }
    let mut channels: Vec<(String, i64)> = messages.into_iter().collect();
    channels.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    channels
}

impl Query<'_> {
    /// The whole view at the cut, unfiltered.
    pub fn all(view: &str) -> Query<'_> {
        Query { view, channel: None, user: None, place: None, as_of: None, limit: None }
    }
}
