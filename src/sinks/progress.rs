//! The progress record, `<out>/_progress.csv`: how far the inputs have been read, and the
//! *upper* below which every update is in the change files.
//!
//! ```text
//!   positions (every worker, at the time its input advanced) ──┐
//!   sinks' written frontier (no data) ─────────────────────────┴─Exchange(→ worker 0)─► Progress ─► _progress.csv
//! ```
//!
//! The positions are gated by the sinks' frontier, so a time's progress is recorded only after
//! its data: the file never claims more than the change files hold. While running, a thread
//! of worker 0 rewrites the file (write, fsync, rename) with the latest upper, at most every
//! 20 ms, so the worker never waits for the disk; when the run ends worker 0 writes it once
//! more with the final upper (see `worker`). Rows: `source,partition,next,upper` — the input
//! (a file list or a topic), its partition, the next line or offset to read, and the upper;
//! then a row `file:<view>,0,<length>,upper` per change file: its length in bytes once every
//! update before the upper is in it, where a resume cuts it (without reading it).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataflows::operators::in_time_order;
use dataflows::Diff;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Exchange;

use crate::sinks::freshness::Freshness;
use crate::sinks::{SinkError, Written};
use crate::sources::InputPosition;

/// What the progress operator knows; worker 0's copy is the one written.
#[derive(Default)]
pub struct ProgressState {
    positions: Positions,
    /// Each change file's length at the upper recorded (worker 0).
    lengths: BTreeMap<&'static str, u64>,
    /// The change files' writers, which note their lengths after each time.
    views: Vec<crate::sinks::csv::SinkHandle>,
    /// Worker 0: the thread that writes the record.
    background: Option<Background>,
    /// The final upper is written: nothing more is (see `write_progress`).
    finished: bool,
}

/// The least time between two writes of the progress record while running.
const EVERY: Duration = Duration::from_millis(20);

pub type ProgressHandle = Rc<RefCell<ProgressState>>;

/// The next line or offset to read per (source, partition).
type Positions = BTreeMap<(String, i32), i64>;

pub const PROGRESS_FILE: &str = "_progress.csv";

/// Records `positions` once the `written` frontier has passed them; returns the operator's
/// (empty) output, whose frontier passes a time once its progress is taken into account.
/// Each upper written is told to `freshness`.
pub fn progress_writer<'s>(
    positions: VecCollection<'s, u64, InputPosition>,
    written: Written<'s>,
    dir: &Path,
    freshness: Freshness,
    views: Vec<crate::sinks::csv::SinkHandle>,
) -> (Written<'s>, ProgressHandle) {
    let gate = written.as_collection().flat_map(|()| None::<InputPosition>);
    let state: ProgressHandle = Rc::default();
    state.borrow_mut().views = views;
    let shared = Rc::clone(&state);
    if positions.inner.scope().index() == 0 {
        state.borrow_mut().background = Some(Background::spawn(dir, freshness));
    }
    let out = in_time_order(
        positions.concat(gate),
        Exchange::new(|_: &(InputPosition, u64, Diff)| 0),
        "Progress",
        move |time: &u64, updates: Vec<(InputPosition, Diff)>, _emit: &mut dyn FnMut((), Diff)| {
            let mut state = shared.borrow_mut();
            for (position, diff) in updates {
                if diff > 0 {
                    let next = state.positions.entry((position.source, position.partition)).or_insert(position.next);
                    *next = (*next).max(position.next);
                }
            }
            state.take_lengths(time + 1);
            if !state.finished {
                if let Some(background) = &state.background {
                    background.offer(&state.positions, &state.lengths, time + 1);
                }
            }
        },
    );
    (out.inner, state)
}

impl ProgressState {
    /// Takes each change file's length once every time before `upper` is in it.
    fn take_lengths(&mut self, upper: u64) {
        for view in &self.views {
            let mut view = view.borrow_mut();
            let mut length = *self.lengths.entry(view.view).or_insert(view.opened);
            while view.lengths.front().is_some_and(|(t, _)| *t < upper) {
                length = view.lengths.pop_front().expect("checked").1;
            }
            self.lengths.insert(view.view, length);
        }
    }

    /// The first failure to write the record, if any.
    pub fn take_error(&mut self) -> Option<SinkError> {
        self.background.as_ref().and_then(Background::take_error)
    }
}

/// Worker 0's progress writer thread: it writes the latest upper offered (with the positions
/// that go with it) as soon as the previous write is `EVERY` ago, so the worker never waits
/// for a write or an fsync.
struct Background {
    shared: Arc<(Mutex<Offered>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

type Lengths = BTreeMap<&'static str, u64>;

#[derive(Default)]
struct Offered {
    next: Option<(Positions, Lengths, u64)>,
    error: Option<SinkError>,
    closed: bool,
}

impl Background {
    fn spawn(dir: &Path, freshness: Freshness) -> Background {
        let shared: Arc<(Mutex<Offered>, Condvar)> = Arc::default();
        let theirs = Arc::clone(&shared);
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let (offered, wake) = &*theirs;
                loop {
                    let (positions, lengths, upper) = {
                        let mut o = lock(offered);
                        while o.next.is_none() && !o.closed {
                            o = wake.wait(o).unwrap_or_else(|p| p.into_inner());
                        }
                        match o.next.take() {
                            Some(next) => next,
                            None => return,
                        }
                    };
                    let started = Instant::now();
                    match write_file(&dir, &positions, &lengths, upper) {
                        Ok(()) => written(&freshness, upper),
                        Err(e) => {
                            lock(offered).error = Some(e);
                            return;
                        }
                    }
                    std::thread::sleep(EVERY.saturating_sub(started.elapsed()));
                }
            })
            .expect("spawning the progress writer");
        Background { shared, thread: Some(thread) }
    }

    /// The record may say `upper` with these positions and file lengths (replacing an offer
    /// not yet written).
    fn offer(&self, positions: &Positions, lengths: &Lengths, upper: u64) {
        let (offered, wake) = &*self.shared;
        let mut o = lock(offered);
        if o.error.is_none() {
            o.next = Some((positions.clone(), lengths.clone(), upper));
            wake.notify_one();
        }
    }

    fn take_error(&self) -> Option<SinkError> {
        lock(&self.shared.0).error.take()
    }

    /// Writes what was offered, then stops the thread; the first failure, if any.
    fn close(&mut self) -> Option<SinkError> {
        lock(&self.shared.0).closed = true;
        self.shared.1.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.take_error()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.close();
    }
}

fn lock(offered: &Mutex<Offered>) -> std::sync::MutexGuard<'_, Offered> {
    offered.lock().unwrap_or_else(|p| p.into_inner())
}

/// The record says `upper`: the registry and the freshness tracker learn it.
fn written(freshness: &Freshness, upper: u64) {
    crate::metrics::set_upper(upper);
    freshness.written(0, upper);
}

/// Writes the progress file with the final `upper` (on worker 0, after what its thread had
/// left to write; elsewhere nothing); the operator writes nothing after it.
pub fn write_progress(state: &ProgressHandle, dir: &Path, upper: u64, freshness: &Freshness) -> Result<(), SinkError> {
    let mut state = state.borrow_mut();
    if let Some(e) = state.take_error() {
        return Err(e);
    }
    let Some(mut background) = state.background.take() else { return Ok(()) };
    if let Some(e) = background.close() {
        return Err(e);
    }
    state.take_lengths(upper);
    write_file(dir, &state.positions, &state.lengths, upper)?;
    // Times past a stopped run's upper may complete later with part of their input: the
    // final record stands.
    state.finished = true;
    written(freshness, upper);
    Ok(())
}

/// Writes the file beside its final name, fsyncs it and renames it into place.
fn write_file(dir: &Path, positions: &Positions, lengths: &Lengths, upper: u64) -> Result<(), SinkError> {
    let path = dir.join(PROGRESS_FILE);
    let tmp: PathBuf = dir.join(format!("{PROGRESS_FILE}.tmp"));
    let failed = |source: std::io::Error| SinkError::Io { path: tmp.clone(), source };
    let mut writer = csv::Writer::from_path(&tmp).map_err(|e| failed(e.into()))?;
    let mut write = |record: [&str; 4]| writer.write_record(record).map_err(|e| failed(e.into()));
    write(["source", "partition", "next", "upper"])?;
    let upper = upper.to_string();
    if positions.is_empty() {
        write(["", "0", "0", &upper])?;
    }
    for ((source, partition), next) in positions {
        write([source.as_str(), &partition.to_string(), &next.to_string(), &upper])?;
    }
    for (view, length) in lengths {
        write([&format!("{LENGTH_PREFIX}{view}"), "0", &length.to_string(), &upper])?;
    }
    let mut file = writer.into_inner().map_err(|e| failed(e.into_error()))?;
    file.flush().map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&tmp, &path).map_err(|source| SinkError::Io { path: path.clone(), source })
}

/// A row of the record whose source is this prefix and a view's name gives, as `next`, that
/// view's change file's length at the upper: a resume cuts the file there without reading it.
pub const LENGTH_PREFIX: &str = "file:";

/// The change files' lengths at the recorded upper, by view (none if the record has none or
/// cannot be read: the files are then read to find the cut).
pub fn read_lengths(dir: &Path) -> BTreeMap<String, u64> {
    let mut lengths = BTreeMap::new();
    let Ok(mut reader) = csv::Reader::from_path(dir.join(PROGRESS_FILE)) else { return lengths };
    for record in reader.records().flatten() {
        if let (Some(view), Some(Ok(length))) =
            (record.get(0).and_then(|s| s.strip_prefix(LENGTH_PREFIX)), record.get(2).map(str::parse::<u64>))
        {
            lengths.insert(view.to_owned(), length);
        }
    }
    lengths
}

/// The upper recorded in `dir`, if a previous run left one.
pub fn read_upper(dir: &Path) -> Result<Option<u64>, SinkError> {
    let path = dir.join(PROGRESS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bad = |reason: String| SinkError::BadProgress { path: path.clone(), reason };
    let mut reader = csv::Reader::from_path(&path).map_err(|e| bad(e.to_string()))?;
    let mut upper: Option<u64> = None;
    for record in reader.records() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let value: u64 = record.get(3).unwrap_or("").parse().map_err(|_| bad(format!("bad upper in {record:?}")))?;
        upper = Some(upper.map_or(value, |u| u.min(value)));
    }
    Ok(upper)
}
