//! The CSV change sink: one `<dir>/<view>.csv` per view, in the update-contract format (the
//! view's columns, then `time`, then `diff`).
//!
//! ```text
//!   view rows (every worker) ──Exchange(→ worker 0)──► CsvSink(view) ──► <dir>/<view>.csv
//!                                                        │ holds a capability per open time
//!                                                        └─► (empty stream, probed: "flushed")
//! ```
//!
//! Every worker's share of a view is exchanged to worker 0, which alone writes the file. An
//! update waits until the input frontier has passed its time; then the time's updates are
//! sorted by row, consolidated (equal rows summed, zeros dropped) and appended, times in
//! increasing order, and the file is flushed. So a file holds complete times only, its bytes
//! do not depend on the number of workers, and a row's multiplicity after summing its diffs
//! is that of the view. The operator keeps a capability for each time it has not yet written:
//! a probe on its output passes a time only once that time is in the file.
//!
//! Delivery: the file is rewritten from the start by each run, so a run that finishes leaves
//! exactly the view's changes; a crashed run leaves a prefix of whole times plus perhaps part
//! of one. Exactly-once across restarts is the ClickHouse sink's job.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::rc::Rc;

use dataflows::Diff;
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::VecCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::sinks::encode::{header, update_record, ViewRow};

/// What a sink shares with its worker: rows written, the first error, and optionally the
/// view's current contents (for the run summary; only for small views).
pub struct SinkShared<R> {
    pub rows_written: u64,
    pub error: Option<String>,
    pub contents: Option<HashMap<R, Diff>>,
}

pub type SinkHandle<R> = Rc<RefCell<SinkShared<R>>>;

/// Writes `rows` to `<dir>/<view>.csv` from worker 0; returns the sink's (empty) output stream,
/// whose frontier passes a time once that time is written and flushed, and the shared state.
pub fn csv_sink<'s, R: ViewRow>(
    rows: VecCollection<'s, u64, R>,
    dir: &Path,
    keep_contents: bool,
) -> (Stream<'s, u64, Vec<()>>, SinkHandle<R>) {
    let shared = Rc::new(RefCell::new(SinkShared {
        rows_written: 0,
        error: None,
        contents: keep_contents.then(HashMap::new),
    }));
    let writer_worker = rows.inner.scope().index() == 0;
    let path = dir.join(format!("{}.csv", R::VIEW));
    let mut writer = if writer_worker {
        match File::create(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|file| {
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(BufWriter::with_capacity(1 << 20, file));
                w.write_byte_record(&header::<R>())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(w)
            }) {
            Ok(w) => Some(w),
            Err(e) => {
                shared.borrow_mut().error = Some(e);
                None
            }
        }
    } else {
        None
    };
    let handle = Rc::clone(&shared);
    let exchange = Exchange::new(|_: &(R, u64, Diff)| 0);
    let stream = rows.inner.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        exchange,
        &format!("CsvSink({})", R::VIEW),
        move |_cap, _info| {
            let mut pending: BTreeMap<u64, (Capability<u64>, Vec<(R, Diff)>)> = BTreeMap::new();
            let mut record = csv::ByteRecord::new();
            move |(input, frontier), output| {
                let port = output.output_index();
                input.for_each_stamp(|cap, containers| {
                    for container in containers {
                        for (row, time, diff) in container.drain(..) {
                            pending
                                .entry(time)
                                .or_insert_with(|| (cap.delayed(&time, port), Vec::new()))
                                .1
                                .push((row, diff));
                        }
                    }
                });
                let mut wrote = false;
                let mut shared = shared.borrow_mut();
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (time, (_cap, mut updates)) = entry.remove_entry();
                    consolidate(&mut updates);
                    if let Some(w) = writer.as_mut() {
                        for (row, diff) in &updates {
                            update_record(row, time, *diff, &mut record);
                            if let Err(e) = w.write_byte_record(&record) {
                                shared.error.get_or_insert_with(|| format!("{}: {e}", path.display()));
                                writer = None;
                                break;
                            }
                        }
                    }
                    shared.rows_written += updates.len() as u64;
                    if let Some(contents) = shared.contents.as_mut() {
                        for (row, diff) in updates {
                            match contents.entry(row) {
                                Entry::Occupied(mut e) => {
                                    *e.get_mut() += diff;
                                    if *e.get() == 0 {
                                        e.remove();
                                    }
                                }
                                Entry::Vacant(e) => {
                                    e.insert(diff);
                                }
                            }
                        }
                    }
                    wrote = true;
                }
                if wrote || frontier.is_empty() {
                    if let Some(w) = writer.as_mut() {
                        if let Err(e) = w.flush() {
                            shared.error.get_or_insert_with(|| format!("{}: {e}", path.display()));
                            writer = None;
                        }
                    }
                }
            }
        },
    );
    (stream, handle)
}
