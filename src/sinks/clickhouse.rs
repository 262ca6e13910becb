//! The ClickHouse sink: one change table per view, a progress table, and the committed cut.
//!
//! ```text
//!   view rows ─Exchange(hash of row)─► ChEncode(view): per completed time, consolidate and
//!                                       encode as TabSeparated rows into the worker's buffers
//!   worker loop: the probe passes f ──► Batch { rows per view, upper f } ──bounded channel──►
//!   writer thread (one per worker): coalesce (≥ 250 ms apart) ─► INSERT each view's rows ─►
//!   INSERT _progress (view, worker, upper f) ─► retry with backoff until both are in
//! ```
//!
//! ## Tables
//!
//! `<db>.<view>` has the view's columns (String or Int64), `time UInt64` and `diff Int64`,
//! `ENGINE = ReplacingMergeTree ORDER BY (columns…, time)`. A row of a view at a time is
//! produced by exactly one worker (rows are exchanged by a hash of the row) and its diff there
//! is the consolidated change of the view at that time, a function of the log: writing it
//! twice writes the same `(row, time, diff)`, which the engine collapses in its merges and
//! readers collapse at once (`any(diff)` per `(row, time)`). So a retried insert, a crash
//! between an insert and its progress record, or a restart that rewrites what was already
//! there never counts an update twice.
//!
//! `<db>._progress` holds, per flush, `(view, worker, workers, run, upper, positions,
//! written_ms)`: every update of `view` before `upper` that `worker` (of `workers`) produces is
//! in the table; `positions` is where the worker's source stood (informative: a restart
//! recomputes from the beginning of the log). It is inserted only after the data it covers.
//!
//! ## The committed cut
//!
//! `cut = min over (view, worker) of max(upper)`, over the rows of the latest run (`run` is
//! the cut the run started from; rows of the run with the latest `written_ms` decide it).
//! Every update before the cut is in every table, so readers sum diffs over `time < cut`
//! (or `time <= T` for `--as-of T`, T below the cut). At start, process 0 inserts a row at
//! the starting cut for every (view, worker) of the new run, so the cut is defined at once.
//!
//! ## Restarts
//!
//! A run reads the cut `C`, rebuilds its state by reading its sources from the beginning (the
//! Kafka clock bindings in `--out` make the times the same), skips every update before `C`
//! and writes the rest: what was already there is collapsed, nothing is lost.
//!
//! ## Back-pressure and outages
//!
//! The channel to the writer holds two batches; a worker that cannot hand one over waits, and
//! its input with it, so memory stays bounded while ClickHouse is slow or down. The writer
//! retries failed inserts forever with backoff (100 ms doubling to 5 s); after a stop was
//! asked for it gives up once ClickHouse has been failing for 60 s.
//!
//! Only SQL that ClickHouse 18.16 understands and current ClickHouse still accepts is used.
//! Filters in `chatflow query` travel as data: an external table in the request (a
//! multipart TabSeparated file), never spliced into SQL text.

use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use dataflows::operators::in_time_order;
use dataflows::Diff;
use dataflows::*;
use differential_dataflow::VecCollection;
use hdrhistogram::Histogram;
use timely::dataflow::channels::pact::Exchange;

use crate::sinks::csv::Written;
use crate::sinks::encode::{Fields, ViewRow};

/// A view's table layout: its columns and which of them are integers.
#[derive(Clone, Copy, Debug)]
pub struct ViewSchema {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    pub ints: &'static [&'static str],
}

fn schema<R: ViewRow>() -> ViewSchema {
    ViewSchema { name: R::VIEW, columns: R::COLUMNS, ints: R::INT_COLUMNS }
}

/// Every view, in the order the sinks are built (the index is the view's buffer).
pub fn views() -> [ViewSchema; 9] {
    [
        schema::<WordCount>(),
        schema::<ChannelActivity>(),
        schema::<UserCount>(),
        schema::<TopWord>(),
        schema::<TopUser>(),
        schema::<Connection>(),
        schema::<Reach>(),
        schema::<TopConnection>(),
        schema::<DeadLetter>(),
    ]
}

pub fn view(name: &str) -> Result<ViewSchema> {
    views().into_iter().find(|v| v.name == name).ok_or_else(|| {
        let names: Vec<&str> = views().iter().map(|v| v.name).collect();
        anyhow!("no view {name:?}; the views are {}", names.join(", "))
    })
}

/// Where the sink writes.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub database: String,
}

/// A database name ClickHouse takes unquoted: letters, digits and `_`, not starting with a digit.
pub fn check_database(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        bail!("database name {name:?}: use letters, digits and _ only")
    }
}

/// A ClickHouse HTTP client. Credentials come from `CHATFLOW_CH_USER` and
/// `CHATFLOW_CH_PASSWORD` (HTTP basic authentication), never from the command line.
#[derive(Clone)]
pub struct Client {
    url: String,
    agent: ureq::Agent,
    auth: Option<String>,
}

impl Client {
    pub fn new(url: &str) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .build();
        let auth = std::env::var("CHATFLOW_CH_USER").ok().map(|user| {
            use base64::Engine;
            let password = std::env::var("CHATFLOW_CH_PASSWORD").unwrap_or_default();
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        });
        Client { url: url.trim_end_matches('/').to_owned(), agent, auth }
    }

    fn request(&self, params: &[(&str, &str)]) -> ureq::Request {
        let mut request = self.agent.post(&format!("{}/", self.url));
        for (k, v) in params {
            request = request.query(k, v);
        }
        if let Some(auth) = &self.auth {
            request = request.set("Authorization", auth);
        }
        request
    }

    fn finish(result: std::result::Result<ureq::Response, ureq::Error>, what: &str) -> Result<String> {
        match result {
            Ok(response) => {
                let mut body = String::new();
                response
                    .into_reader()
                    .read_to_string(&mut body)
                    .with_context(|| format!("reading the answer to {what}"))?;
                Ok(body)
            }
            Err(ureq::Error::Status(code, response)) => {
                let body = response.into_string().unwrap_or_default();
                Err(anyhow!("ClickHouse refused {what} (HTTP {code}): {}", body.trim()))
            }
            Err(e) => Err(anyhow!("ClickHouse unreachable for {what}: {e}")),
        }
    }

    /// Runs a statement (its text in the body) and returns the answer.
    pub fn execute(&self, sql: &str) -> Result<String> {
        Self::finish(self.request(&[]).send_string(sql), short(sql))
    }

    /// Inserts TabSeparated `rows` into `table` (`db.name (columns)`).
    pub fn insert(&self, table: &str, rows: &[u8]) -> Result<()> {
        let query = format!("INSERT INTO {table} FORMAT TabSeparated");
        Self::finish(self.request(&[("query", &query)]).send_bytes(rows), &query).map(drop)
    }

    /// Runs `sql` (in the URL) with an external table `name` (`structure`, TabSeparated
    /// `rows`) sent as a multipart file: values stay data.
    pub fn select_with(&self, sql: &str, name: &str, structure: &str, rows: &[u8]) -> Result<String> {
        let boundary = "chatflow-7d2c9e0f4b1a";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.tsv\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(rows);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let structure_key = format!("{name}_structure");
        let format_key = format!("{name}_format");
        let request = self
            .request(&[("query", sql), (&structure_key, structure), (&format_key, "TabSeparated")])
            .set("Content-Type", &format!("multipart/form-data; boundary={boundary}"));
        Self::finish(request.send_bytes(&body), short(sql))
    }
}

fn short(sql: &str) -> &str {
    let line = sql.trim_start().lines().next().unwrap_or("");
    &line[..line.floor_char_boundary(80)]
}

/// TabSeparated fields: tab-separated, with `\`, tab, line feed and carriage return escaped.
pub struct TsvFields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> TsvFields<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        TsvFields { out, first: true }
    }
    fn separate(&mut self) {
        if !self.first {
            self.out.push(b'\t');
        }
        self.first = false;
    }
}

impl Fields for TsvFields<'_> {
    fn text(&mut self, value: &str) {
        self.separate();
        escape_tsv(self.out, value);
    }
    fn int(&mut self, value: i64) {
        self.separate();
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }
}

pub fn escape_tsv(out: &mut Vec<u8>, value: &str) {
    for &b in value.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\0' => out.extend_from_slice(b"\\0"),
            _ => out.push(b),
        }
    }
}

/// Undoes ClickHouse's TabSeparated escaping of one field.
pub fn unescape_tsv(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn table_ddl(db: &str, v: &ViewSchema) -> String {
    let mut columns: Vec<String> =
        v.columns.iter().map(|c| format!("`{c}` {}", if v.ints.contains(c) { "Int64" } else { "String" })).collect();
    columns.push("time UInt64".into());
    columns.push("diff Int64".into());
    let key: Vec<String> = v.columns.iter().map(|c| format!("`{c}`")).chain(["time".to_string()]).collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{} ({}) ENGINE = ReplacingMergeTree() ORDER BY ({})",
        v.name,
        columns.join(", "),
        key.join(", ")
    )
}

const PROGRESS_TABLE: &str = "_progress";

/// Creates the database and tables if absent (dropping them first for a new deployment) and
/// returns the committed cut to resume from (`None`: nothing recorded yet).
pub fn prepare(client: &Client, db: &str, fresh: bool) -> Result<Option<u64>> {
    check_database(db)?;
    client.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))?;
    if fresh {
        for v in views() {
            client.execute(&format!("DROP TABLE IF EXISTS {db}.{}", v.name))?;
        }
        client.execute(&format!("DROP TABLE IF EXISTS {db}.{PROGRESS_TABLE}"))?;
    }
    for v in views() {
        client.execute(&table_ddl(db, &v))?;
    }
    client.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.{PROGRESS_TABLE} (view String, worker UInt32, workers UInt32, run UInt64, \
         upper UInt64, positions String, written_ms UInt64) ENGINE = MergeTree() ORDER BY (view, worker)"
    ))?;
    committed_cut(client, db)
}

/// The committed cut of `db`: `None` before any progress is recorded.
pub fn committed_cut(client: &Client, db: &str) -> Result<Option<u64>> {
    check_database(db)?;
    let latest = client.execute(&format!(
        "SELECT run, workers FROM {db}.{PROGRESS_TABLE} ORDER BY written_ms DESC, run DESC LIMIT 1 FORMAT TabSeparated"
    ))?;
    let Some(line) = latest.lines().next() else { return Ok(None) };
    let mut fields = line.split('\t');
    let (Some(Ok(run)), Some(Ok(workers))) =
        (fields.next().map(str::parse::<u64>), fields.next().map(str::parse::<u32>))
    else {
        bail!("unexpected progress row {line:?}");
    };
    let uppers = client.execute(&format!(
        "SELECT view, worker, max(upper) FROM {db}.{PROGRESS_TABLE} WHERE run = {run} AND workers = {workers} \
         GROUP BY view, worker FORMAT TabSeparated"
    ))?;
    let mut found = std::collections::HashMap::new();
    for line in uppers.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 3 {
            found.insert((f[0].to_owned(), f[1].parse::<u32>()?), f[2].parse::<u64>()?);
        }
    }
    let mut cut = u64::MAX;
    for v in views() {
        for w in 0..workers {
            cut = cut.min(*found.get(&(v.name.to_owned(), w)).unwrap_or(&run));
        }
    }
    Ok(Some(cut))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn progress_rows(out: &mut Vec<u8>, worker: u32, workers: u32, run: u64, upper: u64, positions: &str) {
    let written = now_ms();
    for v in views() {
        let mut f = TsvFields::new(out);
        f.text(v.name);
        f.int(i64::from(worker));
        f.int(i64::from(workers));
        f.int(run as i64);
        f.int(upper as i64);
        f.text(positions);
        f.int(written as i64);
        out.push(b'\n');
    }
}

/// Records the start of a run at `cut` for every (view, worker) of `workers` (process 0).
pub fn record_start(client: &Client, db: &str, workers: u32, cut: u64) -> Result<()> {
    let mut rows = Vec::new();
    for w in 0..workers {
        progress_rows(&mut rows, w, workers, cut, cut, "start");
    }
    client.insert(&format!("{db}.{PROGRESS_TABLE}"), &rows)
}

/// What a worker's sinks have encoded and not yet handed to the writer, per view.
#[derive(Default)]
pub struct Buffers {
    pub views: Vec<(Vec<u8>, u64)>,
}

pub type BuffersHandle = Rc<RefCell<Buffers>>;

fn fixed_hash<T: std::hash::Hash>(value: &T) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x6368_5f73_696e_6b21).hash_one(value)
}

/// Encodes `rows` of each completed time at or after `skip` into `buffers` (slot `slot`).
/// Returns the (empty) output, whose frontier passes a time once it is buffered.
pub fn clickhouse_sink<'s, R: ViewRow>(
    rows: VecCollection<'s, u64, R>,
    buffers: &BuffersHandle,
    slot: usize,
    skip: u64,
) -> Written<'s> {
    let buffers = Rc::clone(buffers);
    in_time_order(
        rows,
        Exchange::new(|u: &(R, u64, Diff)| fixed_hash(&u.0)),
        &format!("ChEncode({})", R::VIEW),
        move |time: &u64, mut updates: Vec<(R, Diff)>, _emit: &mut dyn FnMut((), Diff)| {
            if *time < skip {
                return;
            }
            differential_dataflow::consolidation::consolidate(&mut updates);
            let mut buffers = buffers.borrow_mut();
            let (out, count) = &mut buffers.views[slot];
            for (row, diff) in updates {
                let mut f = TsvFields::new(out);
                row.fields(&mut f);
                f.int(*time as i64);
                f.int(diff as i64);
                out.push(b'\n');
                *count += 1;
            }
        },
    )
    .inner
}

/// One hand-over from a worker to its writer.
pub struct Batch {
    /// Every update of this worker before `upper` is in `views` or was handed over before.
    pub upper: u64,
    pub views: Vec<(Vec<u8>, u64)>,
    /// Produce times (ms) of the live records whose updates are complete with this batch.
    pub produced: Vec<i64>,
    pub positions: String,
}

/// What the writer reports when it is done.
pub struct WriterReport {
    /// Rows inserted per view (in the order of [`views`]).
    pub rows: Vec<u64>,
    pub inserts: u64,
    /// Produce → recorded in `_progress` (µs).
    pub freshness_us: Histogram<u64>,
}

/// A worker's writer thread.
pub struct Writer {
    sender: Option<SyncSender<Batch>>,
    thread: Option<JoinHandle<Result<WriterReport>>>,
}

impl Writer {
    pub fn spawn(target: &Target, worker: u32, workers: u32, run: u64, stop: &'static AtomicBool) -> Writer {
        let (sender, receiver) = sync_channel(2);
        let client = Client::new(&target.url);
        let db = target.database.clone();
        let thread = std::thread::Builder::new()
            .name(format!("clickhouse-w{worker}"))
            .spawn(move || write_loop(receiver, client, db, worker, workers, run, stop))
            .expect("spawning the ClickHouse writer");
        Writer { sender: Some(sender), thread: Some(thread) }
    }

    /// Hands `batch` over, waiting while the writer is two batches behind (back-pressure).
    pub fn send(&mut self, batch: Batch) -> Result<()> {
        let sender = self.sender.as_ref().expect("writer open");
        if sender.send(batch).is_err() {
            return Err(self.finish().err().unwrap_or_else(|| anyhow!("the ClickHouse writer stopped")));
        }
        Ok(())
    }

    /// Waits until everything handed over is written.
    pub fn finish(&mut self) -> Result<WriterReport> {
        self.sender = None;
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| anyhow!("the ClickHouse writer panicked"))?,
            None => Err(anyhow!("the ClickHouse writer already finished")),
        }
    }
}

fn write_loop(
    receiver: Receiver<Batch>,
    client: Client,
    db: String,
    worker: u32,
    workers: u32,
    run: u64,
    stop: &'static AtomicBool,
) -> Result<WriterReport> {
    let mut report = WriterReport {
        rows: vec![0; views().len()],
        inserts: 0,
        freshness_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
    };
    let min_interval = Duration::from_millis(250);
    let max_bytes = 64 << 20;
    let mut last_flush = Instant::now() - min_interval;
    let mut open = true;
    while open {
        let Ok(mut acc) = receiver.recv() else { break };
        // Coalesce what arrives until the interval is over (or the buffer is large).
        loop {
            let size: usize = acc.views.iter().map(|(b, _)| b.len()).sum();
            let wait = min_interval.saturating_sub(last_flush.elapsed());
            if size >= max_bytes || wait.is_zero() {
                while size < max_bytes {
                    match receiver.try_recv() {
                        Ok(next) => merge(&mut acc, next),
                        Err(std::sync::mpsc::TryRecvError::Empty) => break,
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                break;
            }
            match receiver.recv_timeout(wait) {
                Ok(next) => merge(&mut acc, next),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        last_flush = Instant::now();
        for (slot, (rows, count)) in acc.views.iter().enumerate() {
            if *count == 0 {
                continue;
            }
            let v = views()[slot];
            let table = format!(
                "{db}.{} ({}, time, diff)",
                v.name,
                v.columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
            );
            retry(stop, || client.insert(&table, rows))?;
            report.rows[slot] += count;
            report.inserts += 1;
        }
        let mut progress = Vec::new();
        progress_rows(&mut progress, worker, workers, run, acc.upper, &acc.positions);
        retry(stop, || client.insert(&format!("{db}.{PROGRESS_TABLE}"), &progress))?;
        let now = now_ms() as i64;
        for p in acc.produced {
            report.freshness_us.saturating_record(((now - p).max(0) as u64 * 1000).max(1));
        }
    }
    Ok(report)
}

fn merge(acc: &mut Batch, next: Batch) {
    for ((rows, count), (more, more_count)) in acc.views.iter_mut().zip(next.views) {
        rows.extend_from_slice(&more);
        *count += more_count;
    }
    acc.upper = acc.upper.max(next.upper);
    acc.produced.extend(next.produced);
    acc.positions = next.positions;
}

/// Runs `attempt` until it succeeds, backing off from 100 ms to 5 s; after a stop was asked
/// for, gives up once it has been failing for 60 s.
fn retry(stop: &AtomicBool, mut attempt: impl FnMut() -> Result<()>) -> Result<()> {
    let mut delay = Duration::from_millis(100);
    let mut failing_since: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        match attempt() {
            Ok(()) => {
                if failures > 0 {
                    tracing::warn!(failures, "ClickHouse insert succeeded again");
                }
                return Ok(());
            }
            Err(e) => {
                failures += 1;
                let since = *failing_since.get_or_insert_with(Instant::now);
                if failures == 1 || failures % 20 == 0 {
                    tracing::warn!(error = %format!("{e:#}"), failures, "ClickHouse insert failed; retrying");
                }
                if stop.load(Ordering::Relaxed) && since.elapsed() > Duration::from_secs(60) {
                    return Err(e.context("giving up after a stop was asked for"));
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A reader's request: one view at the cut (or at `as_of`), optionally filtered.
pub struct Query<'a> {
    pub view: &'a str,
    pub channel: Option<&'a str>,
    pub user: Option<&'a str>,
    pub as_of: Option<u64>,
    pub limit: Option<u64>,
}

/// The rows of a view (fields as text) and the time they are read at.
pub struct Answer {
    pub schema: ViewSchema,
    pub rows: Vec<Vec<String>>,
    pub cut: u64,
    pub at: u64,
}

/// Reads `query.view` at the committed cut (or at `as_of`), summing diffs; filters are sent
/// as an external table, not as SQL.
pub fn read_view(client: &Client, db: &str, query: &Query) -> Result<Answer> {
    check_database(db)?;
    let schema = view(query.view)?;
    let cut = committed_cut(client, db)?.ok_or_else(|| anyhow!("{db} has no committed progress yet"))?;
    let at = match query.as_of {
        Some(t) if t >= cut => bail!("time {t} is not committed yet: the committed cut is {cut} (every time below it)"),
        Some(t) => t,
        None => cut.saturating_sub(1),
    };
    let columns: Vec<String> = schema.columns.iter().map(|c| format!("`{c}`")).collect();
    let columns = columns.join(", ");
    let mut filters = Vec::new();
    let has = |c: &str| schema.columns.contains(&c);
    if query.channel.is_some() {
        if !has("channel") {
            bail!("{} has no channel column", schema.name);
        }
        filters.push("`channel` IN (SELECT channel FROM _p)".to_string());
    }
    if query.user.is_some() {
        if has("user") {
            filters.push("`user` IN (SELECT `user` FROM _p)".to_string());
        } else if has("user_a") {
            filters.push("(`user_a` IN (SELECT `user` FROM _p) OR `user_b` IN (SELECT `user` FROM _p))".to_string());
        } else {
            bail!("{} has no user column", schema.name);
        }
    }
    let time_filter = if cut == 0 { "0".to_string() } else { format!("time <= {at}") };
    let filter = std::iter::once(time_filter).chain(filters).collect::<Vec<_>>().join(" AND ");
    let limit = query.limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let sql = format!(
        "SELECT {columns}, sum(d) AS n FROM (SELECT {columns}, time, any(diff) AS d FROM {db}.{} WHERE {filter} \
         GROUP BY {columns}, time) GROUP BY {columns} HAVING n != 0 ORDER BY {columns}{limit} FORMAT TabSeparated",
        schema.name
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
        let n: i64 = fields.pop().and_then(|n| n.parse().ok()).ok_or_else(|| anyhow!("unexpected row {line:?}"))?;
        if n != 1 {
            bail!("{}: row {fields:?} has multiplicity {n} at time {at} (expected 1)", schema.name);
        }
        rows.push(fields);
    }
    Ok(Answer { schema, rows, cut, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_escaping_round_trips() {
        for value in ["plain", "tab\there", "line\nend\r", "back\\slash", "x'); DROP TABLE word_counts; --", "nul\0"] {
            let mut out = Vec::new();
            escape_tsv(&mut out, value);
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains('\t') && !text.contains('\n'), "{text:?}");
            assert_eq!(unescape_tsv(&text), value);
        }
    }

    #[test]
    fn database_names() {
        assert!(check_database("chatflow_1").is_ok());
        assert!(check_database("x; DROP").is_err());
        assert!(check_database("1abc").is_err());
        assert!(check_database("").is_err());
    }

    #[test]
    fn ddl_orders_by_row_and_time() {
        let ddl = table_ddl("db", &view("word_counts").unwrap());
        assert!(ddl.contains("`count` Int64"), "{ddl}");
        assert!(ddl.contains("`word` String"), "{ddl}");
        assert!(ddl.ends_with("ORDER BY (`channel`, `window_start`, `word`, `count`, time)"), "{ddl}");
    }
}
