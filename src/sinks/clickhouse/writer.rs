//! A worker's ClickHouse writer thread: inserts the batches its worker hands over, then the
//! progress rows that cover them.
//!
//! ## Back-pressure and outages
//!
//! The channel to the writer holds two batches; a worker that cannot hand one over waits, and
//! its input with it, so memory stays bounded while ClickHouse is slow or down. The writer
//! retries failed inserts forever with backoff (100 ms doubling to 5 s); after a stop was
//! asked for it gives up once ClickHouse has been failing for 60 s. Retries and failures are
//! counted in the metrics registry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataflows::CATALOG;

use crate::clickhouse::cut::progress_rows;
use crate::clickhouse::schema::{insert_target, PROGRESS_TABLE};
use crate::clickhouse::{ClickHouseError, Client, Target};
use crate::sinks::clickhouse::ViewRows;
use crate::sinks::freshness::Freshness;
use crate::sinks::SinkError;

/// One hand-over from a worker to its writer.
pub struct Batch {
    /// Every update of this worker before `upper` is in `views` or was handed over before.
    pub upper: u64,
    pub views: BTreeMap<&'static str, ViewRows>,
    pub positions: String,
}

/// A worker's writer thread.
pub struct Writer {
    worker: u32,
    sender: Option<SyncSender<Batch>>,
    thread: Option<JoinHandle<Result<(), ClickHouseError>>>,
}

/// Who writes and where.
struct WriterConfig {
    client: Client,
    db: String,
    worker: u32,
    workers: u32,
    run: u64,
    stop: &'static AtomicBool,
    freshness: Freshness,
}

impl Writer {
    /// The writer of `worker` (of `workers` in all) for the run starting at cut `run`; it
    /// tells `freshness` each upper recorded in `_progress`.
    pub fn spawn(
        target: &Target,
        worker: u32,
        workers: u32,
        run: u64,
        stop: &'static AtomicBool,
        freshness: Freshness,
    ) -> Writer {
        let (sender, receiver) = sync_channel(2);
        let client = Client::new(&target.url);
        let db = target.database.clone();
        let config = WriterConfig { client, db, worker, workers, run, stop, freshness };
        let thread = std::thread::Builder::new()
            .name(format!("clickhouse-w{worker}"))
            .spawn(move || write_loop(receiver, config))
            .expect("spawning the ClickHouse writer");
        Writer { worker, sender: Some(sender), thread: Some(thread) }
    }

    /// Hands `batch` over, waiting while the writer is two batches behind (back-pressure).
    pub fn send(&mut self, batch: Batch) -> Result<(), SinkError> {
        let sender = self.sender.as_ref().expect("the writer is open until finish");
        if sender.send(batch).is_err() {
            return Err(self.finish().err().unwrap_or(SinkError::WriterStopped(self.worker)));
        }
        Ok(())
    }

    /// Waits until everything handed over is written.
    pub fn finish(&mut self) -> Result<(), SinkError> {
        self.sender = None;
        match self.thread.take() {
            Some(thread) => Ok(thread.join().map_err(|_| SinkError::WriterPanicked(self.worker))??),
            None => Err(SinkError::WriterStopped(self.worker)),
        }
    }
}

/// Receives a batch and whatever follows within the flush interval (or until 64 MiB);
/// `None` once the worker has hung up and nothing is left.
fn next_batch(receiver: &Receiver<Batch>, last_flush: Instant, open: &mut bool) -> Option<Batch> {
    const MIN_INTERVAL: Duration = Duration::from_millis(250);
    const MAX_BYTES: usize = 64 << 20;
    let mut acc = receiver.recv().ok()?;
    let bytes = |batch: &Batch| batch.views.values().map(|v| v.rows.len()).sum::<usize>();
    let mut size = bytes(&acc);
    loop {
        let wait = MIN_INTERVAL.saturating_sub(last_flush.elapsed());
        if size >= MAX_BYTES || wait.is_zero() {
            // Take what is already waiting, up to the size limit.
            while size < MAX_BYTES {
                match receiver.try_recv() {
                    Ok(next) => {
                        size += bytes(&next);
                        merge(&mut acc, next);
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
                merge(&mut acc, next);
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
    let WriterConfig { client, db, worker, workers, run, stop, freshness } = config;
    // Every view of the catalog is written by this process, rows or not.
    for v in CATALOG {
        crate::metrics::rows_written(v.name).increment(0);
    }
    let mut last_flush = Instant::now() - Duration::from_secs(1);
    let mut open = true;
    while open {
        let Some(acc) = next_batch(&receiver, last_flush, &mut open) else { break };
        last_flush = Instant::now();
        let rows: u64 = acc.views.values().map(|b| b.count).sum();
        for (view, buffer) in acc.views.iter().filter(|(_, b)| b.count > 0) {
            let def = dataflows::view(view).expect("buffers are keyed by catalog names");
            retry(stop, || client.insert(&insert_target(&db, def), &buffer.rows))?;
            crate::metrics::rows_written(view).increment(buffer.count);
        }
        let mut progress = Vec::new();
        progress_rows(&mut progress, worker, workers, run, acc.upper, &acc.positions);
        retry(stop, || client.insert(&format!("{db}.{PROGRESS_TABLE}"), &progress))?;
        crate::metrics::set_worker_upper(worker, acc.upper);
        freshness.written(worker, acc.upper);
        tracing::debug!(worker, upper = acc.upper, rows, ms = last_flush.elapsed().as_millis() as u64, "flushed");
    }
    Ok(())
}

fn merge(acc: &mut Batch, next: Batch) {
    for (view, more) in next.views {
        let buffer = acc.views.entry(view).or_default();
        buffer.rows.extend_from_slice(&more.rows);
        buffer.count += more.count;
    }
    acc.upper = acc.upper.max(next.upper);
    acc.positions = next.positions;
}

/// Runs `attempt` until it succeeds, backing off from 100 ms to 5 s; after a stop was asked
/// for, gives up once it has been failing for 60 s.
fn retry(stop: &AtomicBool, mut attempt: impl FnMut() -> Result<(), ClickHouseError>) -> Result<(), ClickHouseError> {
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
                crate::metrics::insert_retry();
                let since = *failing_since.get_or_insert_with(Instant::now);
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(error = %e, failures, "ClickHouse insert failed; retrying");
                }
                if stop.load(Ordering::Relaxed) && since.elapsed() > Duration::from_secs(60) {
                    crate::metrics::insert_failure();
                    tracing::error!(error = %e, "giving up on ClickHouse after a stop was asked for");
                    return Err(e);
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
