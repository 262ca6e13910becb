//! The progress record, `<out>/_progress.csv`: how far the inputs have been read, and the
//! *upper* below which every update is in the change files.
//!
//! ```text
//!   positions (every worker, at the time its input advanced) ──┐
//!   sinks' written frontier (no data) ─────────────────────────┴─Exchange(→ worker 0)─► Progress ─► _progress.csv
//! ```
//!
//! The positions are gated by the sinks' frontier, so a time's progress is recorded only after
//! its data: the file never claims more than the change files hold. Worker 0 rewrites the file
//! (write, fsync, rename) at most every 200 ms while running (an upper held back by that is
//! written once due, see `flush_due`) and once more when the run ends, with the final upper
//! (see `worker`). Rows: `source,partition,next,upper` — the input
//! (a file list or a topic), its partition, the next line or offset to read, and the upper.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use dataflows::operators::in_time_order;
use dataflows::Diff;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Exchange;

use crate::sinks::{SinkError, Written};
use crate::sources::InputPosition;

/// What the progress operator knows; worker 0's copy is the one written.
#[derive(Default)]
pub struct ProgressState {
    positions: BTreeMap<(String, i32), i64>,
    last_write: Option<Instant>,
    pub(crate) error: Option<SinkError>,
    /// Whether this worker writes the file (worker 0).
    writer: bool,
    /// The final upper is written: nothing more is (see `write_progress`).
    finished: bool,
    /// An upper held back by the rate limit, written by `flush_due` once it is due.
    pending: Option<u64>,
}

/// The least time between two writes of the progress record while running.
const EVERY: Duration = Duration::from_millis(200);

pub type ProgressHandle = Rc<RefCell<ProgressState>>;

pub const PROGRESS_FILE: &str = "_progress.csv";

/// Records `positions` once the `written` frontier has passed them; returns the operator's
/// (empty) output, whose frontier passes a time once its progress is taken into account.
pub fn progress_writer<'s>(
    positions: VecCollection<'s, u64, InputPosition>,
    written: Written<'s>,
    dir: &Path,
) -> (Written<'s>, ProgressHandle) {
    let gate = written.as_collection().flat_map(|()| None::<InputPosition>);
    let state: ProgressHandle = Rc::default();
    let shared = Rc::clone(&state);
    let dir = dir.to_path_buf();
    let is_writer = positions.inner.scope().index() == 0;
    state.borrow_mut().writer = is_writer;
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
            if is_writer && state.error.is_none() && !state.finished {
                state.pending = Some(time + 1);
                state.write_if_due(&dir);
            }
        },
    );
    (out.inner, state)
}

impl ProgressState {
    /// Writes the pending upper if the last write is `EVERY` ago.
    fn write_if_due(&mut self, dir: &Path) {
        let due = self.last_write.is_none_or(|t| t.elapsed() >= EVERY);
        if let (true, Some(upper)) = (due, self.pending) {
            match write_file(dir, &self.positions, upper) {
                Ok(()) => crate::metrics::set_upper(upper),
                Err(e) => self.error = Some(e),
            }
            self.pending = None;
            self.last_write = Some(Instant::now());
        }
    }
}

/// Writes an upper the rate limit held back, once it is due: the last times of a burst are
/// recorded within `EVERY` even if no later time comes (called by the worker between steps).
pub fn flush_due(state: &ProgressHandle, dir: &Path) {
    let mut state = state.borrow_mut();
    if state.writer && state.error.is_none() && !state.finished {
        state.write_if_due(dir);
    }
}

/// Writes the progress file with the final `upper` (on worker 0; elsewhere nothing); the
/// operator writes nothing after it.
pub fn write_progress(state: &ProgressHandle, dir: &Path, upper: u64) -> Result<(), SinkError> {
    let mut state = state.borrow_mut();
    if let Some(e) = state.error.take() {
        return Err(e);
    }
    if !state.writer {
        return Ok(());
    }
    write_file(dir, &state.positions, upper)?;
    // Times past a stopped run's upper may complete later with part of their input: the
    // final record stands.
    state.finished = true;
    crate::metrics::set_upper(upper);
    Ok(())
}

/// Writes the file beside its final name, fsyncs it and renames it into place.
fn write_file(dir: &Path, positions: &BTreeMap<(String, i32), i64>, upper: u64) -> Result<(), SinkError> {
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
    let mut file = writer.into_inner().map_err(|e| failed(e.into_error()))?;
    file.flush().map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&tmp, &path).map_err(|source| SinkError::Io { path: path.clone(), source })
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
