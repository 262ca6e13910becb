//! A process's ClickHouse writer thread: inserts the batches its workers hand over, then the
//! progress rows that cover them.
//!
//! One writer per process, not per worker: each insert makes a part that ClickHouse writes as
//! files and merges later, and at 50,000 messages/s that file churn and merging was most of
//! the server's work (it used a whole core of two). The writer coalesces its workers' batches
//! (at least 250 ms apart), inserts each view's rows once, then one progress insert with a row
//! per (view, worker) for every worker whose batch it took.
//!
//! ## Back-pressure and outages
//!
//! The channel to the writer holds two batches per worker. A worker that cannot hand one over
//! keeps its rows and goes on (they leave with its next batch), until it holds 16 MiB of
//! them; then it waits, and its input with it, so memory stays bounded while ClickHouse is
//! slow or down. The
//! writer retries failed inserts forever with backoff (100 ms doubling to 5 s); after a stop
//! was asked for it gives up once ClickHouse has been failing for 60 s. Retries and failures
//! are counted in the metrics registry.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataflows::CATALOG;

use crate::clickhouse::cut::progress_rows;
use crate::clickhouse::schema::{insert_target, PROGRESS_TABLE};
use crate::clickhouse::{retry, ClickHouseError, Client, Target};
use crate::sinks::clickhouse::ViewRows;
use crate::sinks::freshness::Freshness;
use crate::sinks::SinkError;

/// A batch's rows, by view.
pub type Views = BTreeMap<&'static str, ViewRows>;

/// One hand-over from a worker to the writer.
pub struct Batch {
    pub worker: u32,
    /// Every update of `worker` before `upper` is in `views` or was handed over before.
    pub upper: u64,
    pub views: Views,
    pub positions: String,
    /// Told once this batch (and its progress rows) is written: a worker's last batch.
    pub ack: Option<SyncSender<()>>,
}

/// The process's writer: a handle for each of its workers to hand batches over with.
#[derive(Clone)]
pub struct Writer {
    shared: Arc<Shared>,
}

struct Shared {
    sender: Mutex<Option<SyncSender<Batch>>>,
    /// Why the writer stopped, for the first worker to ask.
    error: Arc<Mutex<Option<ClickHouseError>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

/// Who writes and where.
struct WriterConfig {
    client: Client,
    db: String,
    workers: u32,
    run: u64,
    stop: &'static AtomicBool,
    freshness: Freshness,
}

impl Writer {
    /// The writer of this process's `local` workers (of `workers` in all) for the run starting
    /// at cut `run`; it tells `freshness` each upper it records.
    pub fn spawn(
        target: &Target,
        local: u32,
        workers: u32,
        run: u64,
        stop: &'static AtomicBool,
        freshness: Freshness,
    ) -> Writer {
        let (sender, receiver) = sync_channel(2 * local.max(1) as usize);
        let client = Client::new(&target.url);
        let db = target.database.clone();
        let config = WriterConfig { client, db, workers, run, stop, freshness };
        let error: Arc<Mutex<Option<ClickHouseError>>> = Arc::default();
        let failed = Arc::clone(&error);
        // Not joined: a worker's last batch is acknowledged once written (see `finish`), and a
        // run that fails elsewhere must not wait on a server that is down. The thread ends
        // once every sender is gone.
        std::thread::Builder::new()
            .name("clickhouse-writer".into())
            .spawn(move || {
                if let Err(e) = write_loop(receiver, config) {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            })
            .expect("spawning the ClickHouse writer");
        let shared = Shared { sender: Mutex::new(Some(sender)), error };
        Writer { shared: Arc::new(shared) }
    }

    /// A worker's end of the writer.
    pub fn handle(&self, worker: u32) -> WriterHandle {
        let sender = self.shared.sender.lock().unwrap_or_else(|p| p.into_inner()).clone();
        WriterHandle { worker, sender, shared: Arc::clone(&self.shared) }
    }
}

/// A worker's end of the process's writer.
pub struct WriterHandle {
    worker: u32,
    sender: Option<SyncSender<Batch>>,
    shared: Arc<Shared>,
}

impl WriterHandle {
    /// Hands `batch` over, waiting while the writer is behind (back-pressure).
    pub fn send(&mut self, upper: u64, views: Views, positions: String) -> Result<(), SinkError> {
        self.send_batch(Batch { worker: self.worker, upper, views, positions, ack: None })
    }

    /// Hands `batch` over if the writer has room for it; gives its views and positions back
    /// if not (the writer is busy: the caller keeps them and hands them over later, with what
    /// completes meanwhile, instead of waiting).
    pub fn try_send(
        &mut self,
        upper: u64,
        views: Views,
        positions: String,
    ) -> Result<Option<(Views, String)>, SinkError> {
        let batch = Batch { worker: self.worker, upper, views, positions, ack: None };
        match self.sender.as_ref().map(|sender| sender.try_send(batch)) {
            Some(Ok(())) => Ok(None),
            Some(Err(TrySendError::Full(batch))) => Ok(Some((batch.views, batch.positions))),
            Some(Err(TrySendError::Disconnected(_))) | None => {
                self.sender = None;
                Err(self.failure())
            }
        }
    }

    fn send_batch(&mut self, batch: Batch) -> Result<(), SinkError> {
        let sent = self.sender.as_ref().is_some_and(|sender| sender.send(batch).is_ok());
        if sent {
            Ok(())
        } else {
            self.sender = None;
            Err(self.failure())
        }
    }

    /// Hands the last batch over and waits until it is written.
    pub fn finish(&mut self, upper: u64, views: Views, positions: String) -> Result<(), SinkError> {
        let (ack, written) = sync_channel(1);
        self.send_batch(Batch { worker: self.worker, upper, views, positions, ack: Some(ack) })?;
        self.sender = None;
        written.recv().map_err(|_| self.failure())
    }

    fn failure(&self) -> SinkError {
        match self.shared.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => SinkError::ClickHouse(e),
            None => SinkError::WriterStopped(self.worker),
        }
    }
}

/// Receives a batch and whatever follows within the flush interval (or until 64 MiB);
/// `None` once every worker has hung up and nothing is left.
fn next_batch(receiver: &Receiver<Batch>, last_flush: Instant, open: &mut bool) -> Option<Vec<Batch>> {
    const MIN_INTERVAL: Duration = Duration::from_millis(250);
    const MAX_BYTES: usize = 64 << 20;
    let bytes = |batch: &Batch| batch.views.values().map(|v| v.rows.len()).sum::<usize>();
    let first = receiver.recv().ok()?;
    let mut size = bytes(&first);
    let mut acc = vec![first];
    loop {
        // A worker waiting for its last batch is not kept waiting for the interval.
        let wait = if acc.iter().any(|b| b.ack.is_some()) {
            Duration::ZERO
        } else {
            MIN_INTERVAL.saturating_sub(last_flush.elapsed())
        };
        if size >= MAX_BYTES || wait.is_zero() {
            // Take what is already waiting, up to the size limit.
            while size < MAX_BYTES {
                match receiver.try_recv() {
                    Ok(next) => {
                        size += bytes(&next);
                        acc.push(next);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        *open = false;
                        break;
                    }
                }
            }
            return Some(acc);
        }
        match receiver.recv_timeout(wait) {
            Ok(next) => {
                size += bytes(&next);
                acc.push(next);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                *open = false;
                return Some(acc);
            }
        }
    }
}

fn write_loop(receiver: Receiver<Batch>, config: WriterConfig) -> Result<(), ClickHouseError> {
    let WriterConfig { client, db, workers, run, stop, freshness } = config;
    // Every view of the catalog is written by this process, rows or not.
    for v in CATALOG {
        crate::metrics::rows_written(v.name).increment(0);
    }
    let mut last_flush = Instant::now() - Duration::from_secs(1);
    let mut open = true;
    while open {
        let Some(batches) = next_batch(&receiver, last_flush, &mut open) else { break };
        last_flush = Instant::now();
        let acc = merge(batches);
        let rows: u64 = acc.views.values().map(|b| b.count).sum();
        for (view, buffer) in acc.views.iter().filter(|(_, b)| b.count > 0) {
            let def = dataflows::view(view).expect("buffers are keyed by catalog names");
            let began = Instant::now();
            retry(stop, "insert", || client.insert(&insert_target(&db, def), &buffer.rows))?;
            crate::metrics::rows_written(view).increment(buffer.count);
            let ms = began.elapsed().as_millis() as u64;
            tracing::trace!(view, rows = buffer.count, bytes = buffer.rows.len(), ms, "inserted");
        }
        let mut progress = Vec::new();
        for (worker, (upper, positions)) in &acc.uppers {
            progress_rows(&mut progress, *worker, workers, run, *upper, positions);
        }
        retry(stop, "insert", || client.insert(&format!("{db}.{PROGRESS_TABLE}"), &progress))?;
        for (worker, (upper, _)) in &acc.uppers {
            crate::metrics::set_worker_upper(*worker, *upper);
            freshness.written(*worker, *upper);
        }
        for ack in acc.acks {
            let _ = ack.send(());
        }
        let ms = last_flush.elapsed().as_millis() as u64;
        tracing::debug!(uppers = ?acc.uppers.iter().map(|(w, (u, _))| (*w, *u)).collect::<Vec<_>>(), rows, ms, "flushed");
    }
    Ok(())
}

/// Batches taken together: each view's rows, and per worker its latest upper and positions.
struct Merged {
    views: Views,
    uppers: BTreeMap<u32, (u64, String)>,
    acks: Vec<SyncSender<()>>,
}

fn merge(batches: Vec<Batch>) -> Merged {
    let mut merged = Merged { views: BTreeMap::new(), uppers: BTreeMap::new(), acks: Vec::new() };
    for batch in batches {
        for (view, more) in batch.views {
            let buffer = merged.views.entry(view).or_default();
            if buffer.rows.is_empty() {
                *buffer = more;
            } else {
                buffer.rows.extend_from_slice(&more.rows);
                buffer.count += more.count;
            }
        }
        let entry = merged.uppers.entry(batch.worker).or_insert((batch.upper, String::new()));
        entry.0 = entry.0.max(batch.upper);
        entry.1 = batch.positions;
        merged.acks.extend(batch.ack);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::freshness::Cut;

    /// A writer that cannot insert (no server on the port) takes one batch and retries it for
    /// ever: its channel fills, and `try_send` then gives the batch back whole instead of
    /// waiting, while `send` would wait (back-pressure).
    #[test]
    fn a_busy_writer_gives_a_batch_back() {
        static STOP: AtomicBool = AtomicBool::new(false);
        // Port 1 on the loopback: nothing listens there.
        let target = Target { url: "http://127.0.0.1:1".into(), database: "nowhere".into() };
        let writer = Writer::spawn(&target, 1, 1, 0, &STOP, Freshness::new(Cut::Writers(1), Some(1)));
        let mut handle = writer.handle(0);
        let views =
            |n: u64| BTreeMap::from([("word_counts", ViewRows { rows: format!("row {n}\n").into_bytes(), count: 1 })]);
        // The channel holds two batches and the writer takes one: a fourth cannot go in.
        let mut returned = None;
        for upper in 1..=4u64 {
            if let Some(back) = handle.try_send(upper, views(upper), format!("chat:0:{upper}")).unwrap() {
                returned = Some((upper, back));
                break;
            }
        }
        let (upper, (back, positions)) = returned.expect("a writer that cannot insert fills its channel");
        assert!(upper >= 3, "the channel holds two batches beside the one taken; full at {upper}");
        assert_eq!(back["word_counts"].rows, format!("row {upper}\n").into_bytes());
        assert_eq!(back["word_counts"].count, 1);
        assert_eq!(positions, format!("chat:0:{upper}"));
    }
}
