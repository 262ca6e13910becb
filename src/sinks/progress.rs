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
//! (write, fsync, rename) at most every 200 ms while running and once more when the run ends,
//! with the final upper (see `worker`). Rows: `source,partition,next,upper` — the input
//! (a file list or a topic), its partition, the next line or offset to read, and the upper.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dataflows::operators::in_time_order;
use dataflows::Diff;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Exchange;

use crate::sinks::csv::Written;
use crate::sources::InputPosition;

/// What the progress operator knows; worker 0's copy is the one written.
#[derive(Default)]
pub struct ProgressState {
    positions: BTreeMap<(String, i32), i64>,
    last_write: Option<Instant>,
    error: Option<String>,
}

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
            let due = state.last_write.is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
            if is_writer && due && state.error.is_none() {
                if let Err(e) = write_file(&dir, &state.positions, time + 1) {
                    state.error = Some(format!("{e:#}"));
                }
                state.last_write = Some(Instant::now());
            }
        },
    );
    (out.inner, state)
}

/// Writes the progress file with the final `upper`.
pub fn write_progress(state: &ProgressHandle, dir: &Path, upper: u64) -> Result<()> {
    let state = state.borrow();
    if let Some(e) = &state.error {
        anyhow::bail!("recording progress: {e}");
    }
    write_file(dir, &state.positions, upper)
}

fn write_file(dir: &Path, positions: &BTreeMap<(String, i32), i64>, upper: u64) -> Result<()> {
    let path = dir.join(PROGRESS_FILE);
    let tmp: PathBuf = dir.join(format!("{PROGRESS_FILE}.tmp"));
    let mut writer = csv::Writer::from_path(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    writer.write_record(["source", "partition", "next", "upper"])?;
    if positions.is_empty() {
        writer.write_record(["", "0", "0", &upper.to_string()])?;
    }
    for ((source, partition), next) in positions {
        writer.write_record([source.as_str(), &partition.to_string(), &next.to_string(), &upper.to_string()])?;
    }
    let mut file = writer.into_inner().map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
    file.flush()?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// The upper recorded in `dir`, if a previous run left one.
pub fn read_upper(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(PROGRESS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let mut reader = csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut upper: Option<u64> = None;
    for record in reader.records() {
        let record = record.with_context(|| format!("reading {}", path.display()))?;
        let value: u64 =
            record.get(3).unwrap_or("").parse().with_context(|| format!("bad upper in {}", path.display()))?;
        upper = Some(upper.map_or(value, |u| u.min(value)));
    }
    Ok(upper)
}
