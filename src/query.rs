//! Reading views: one view at the committed cut (or `AS OF` a time below it), filtered, as
//! rows of text. Shared by `chatflow query` and the HTTP server.
//!
//! Over ClickHouse, a view's rows at time `T` are its `(row, time, diff)` updates with
//! `time <= T`, each `(row, time)` collapsed to one diff (copies written twice are identical),
//! summed per row; every row has multiplicity 0 or 1. Filter values travel as an external
//! table in the request (a multipart TabSeparated file), never spliced into SQL text; the
//! columns a filter matches come from the catalog.

use dataflows::ViewDef;

use crate::clickhouse::schema::column_list;
use crate::clickhouse::{check_database, committed_cut, ClickHouseError, Client};
use crate::sinks::encode::{escape_tsv, unescape_tsv};

/// A reader's request: one view at the cut (or at `as_of`), optionally filtered.
pub struct Query<'a> {
    pub view: &'a str,
    pub channel: Option<&'a str>,
    pub user: Option<&'a str>,
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
}

/// The filters a query may carry, by the name the catalog gives them.
const FILTERS: [&str; 2] = ["channel", "user"];

/// Reads `query.view` of database `db` at the committed cut (or at `as_of`), summing diffs.
pub fn read_view(client: &Client, db: &str, query: &Query) -> Result<Answer, QueryError> {
    check_database(db)?;
    let view = dataflows::view(query.view)?;
    let cut = committed_cut(client, db)?.ok_or_else(|| QueryError::NothingCommitted(db.to_owned()))?;
    let at = match query.as_of {
        Some(t) if t >= cut => return Err(QueryError::NotCommitted { at: t, cut }),
        Some(t) => t,
        None => cut.saturating_sub(1),
    };
    let columns = column_list(view);
    let mut filters = vec![if cut == 0 { "0".to_string() } else { format!("time <= {at}") }];
    for (filter, value) in FILTERS.iter().zip([query.channel, query.user]) {
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
    let sql = format!(
        "SELECT {columns}, sum(d) AS n FROM (SELECT {columns}, time, any(diff) AS d FROM {db}.{} WHERE {} \
         GROUP BY {columns}, time) GROUP BY {columns} HAVING n != 0 ORDER BY {columns}{limit} FORMAT TabSeparated",
        view.name,
        filters.join(" AND ")
    );
    let mut param = Vec::new();
    escape_tsv(&mut param, query.channel.unwrap_or(""));
    param.push(b'\t');
    escape_tsv(&mut param, query.user.unwrap_or(""));
    param.push(b'\n');
    let text = client.select_with(&sql, "_p", "channel String, user String", &param)?;
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
