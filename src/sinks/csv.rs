//! The CSV change sink: one `<dir>/<view>.csv` per view, in the update-contract format (the
//! view's columns, then `time`, then `diff`).
//!
//! ```text
//!   view rows ─► CsvEncode(view)            ──Exchange(→ worker 0)──► CsvWrite(view) ═══► csv-writer thread ──► <dir>/<view>.csv
//!   (every      per completed time: consolidate,                      per completed time:  merges the workers'
//!    worker)    encode, sort → one sorted run                         hand the runs over,  runs, appends, flushes,
//!                                                                     hold the time until  tells CsvWrite
//!                                                                     told ─► (empty, probed: "written")
//! ```
//!
//! Every worker consolidates and encodes its own share of each completed time and sorts it by
//! the encoded row (by a fixed-seed hash of it first, so that sorting compares integers: the
//! order within a time looks random but is the same in every run). Worker 0 receives every
//! worker's runs and hands each completed time's to the process's writer thread
//! ([`FileWriter`]), which merges them (summing equal rows, dropping zeros) and appends them,
//! times in increasing order, then flushes. So the expensive part runs on every worker, the
//! writing beside them, a file holds complete times only, its bytes do not depend on the
//! number of workers or processes, and a row's multiplicity after summing its diffs is that of
//! the view. Both stages hold a capability for each time they have not finished (`CsvWrite`
//! until the thread says the time is flushed): a probe on the writer passes a time once that
//! time is in the file.
//!
//! A large time (a graph load: millions of `reach` rows) goes another way: once a worker holds
//! [`part_bytes`] of its rows it hands them on unsorted as a part, and so on until the time is
//! complete; `CsvWrite` passes a time's parts to the thread as they come, which hashes their
//! rows and groups them by the hash's first 8 bits while the workers go on computing, and once
//! the time is complete sorts each group (two threads from 2^18 rows) and appends the groups in
//! order. The bytes are the same either way: rows in (hash, row) order, equal rows summed.
//!
//! Delivery: exactly once. A new run rewrites the files from the start; a run that finishes
//! leaves exactly the view's changes. A stopped or crashed run leaves a prefix of whole times
//! (plus perhaps part of one after a crash); `--resume` recomputes from the latest checkpoint
//! (or the beginning of the log; ingestion times are deterministic), cuts each file back to
//! the recorded upper (see `progress`) and appends only the updates at or after it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use dataflows::operators::InTimeOrder;
use dataflows::Diff;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::scheduling::SyncActivator;

use dataflows::ViewRow;

use crate::sinks::encode::{
    consolidate_entries, csv_header, group_of, row_hash, CsvFields, EncodedRows, Entry, GROUP_BITS,
};
use crate::sinks::freshness::{Freshness, Live};
use crate::sinks::{SinkError, Written};

/// One worker's updates of one time, or of part of a large time, encoded: consolidated and
/// sorted by (hash of the row, row) (see [`EncodedRows::consolidate`]; rows consolidated away
/// leave their bytes), or, for a part of a time larger than [`part_bytes`], as they came.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EncodedRun {
    rows: EncodedRows,
    sorted: bool,
}

impl EncodedRun {
    fn row(&self, i: usize) -> &[u8] {
        self.rows.row(i)
    }
    /// The sort key of row `i`.
    fn key(&self, i: usize) -> (u64, &[u8]) {
        (self.rows.hash(i), self.row(i))
    }
    /// Asks the CPU to fetch row `i`'s bytes into the cache (see [`prefetch`]).
    fn prefetch(&self, i: usize) {
        prefetch(&self.rows.bytes, self.rows.start(i));
    }
    fn diff(&self, i: usize) -> Diff {
        self.rows.diff(i)
    }
    fn len(&self) -> usize {
        self.rows.len()
    }
}

/// Asks the CPU to fetch `bytes[at]` into the cache. Rows sorted by hash are read in an order
/// that jumps around their bytes (a graph load's 3 M `reach` rows: 100 MB), and without this
/// the writer waited on a cache miss per row.
fn prefetch(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(byte) = bytes.get(at) {
        // SAFETY: a prefetch is a hint; it never faults, and the address is in bounds.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(byte as *const u8 as *const i8) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

/// How many bytes of one time's rows a worker's encoder holds before it hands them on
/// unsorted, as a part of the time (4 MiB; `CHATFLOW_PART_BYTES` sets it, so that tests send
/// small fixtures this way too). The writer thread groups each part's rows by their hash's first
/// bits as it comes, while the workers go on, and sorts each group once the time is complete:
/// a graph load's 3 M `reach` rows were sorted by worker 0 after its walks, then written.
pub fn part_bytes() -> usize {
    static PART_BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PART_BYTES.get_or_init(|| {
        std::env::var("CHATFLOW_PART_BYTES").ok().and_then(|v| v.parse().ok()).filter(|&b| b > 0).unwrap_or(4 << 20)
    })
}

/// What a view's writer shares with its worker: the first error, and where it stops.
#[derive(Default)]
pub struct SinkShared {
    pub error: Option<SinkError>,
    /// Set when the sink finishes at a run's upper: nothing at or after it is written (a
    /// stopped run's later times complete with part of their input once the inputs close).
    pub limit: Option<u64>,
    /// The view's name.
    pub view: &'static str,
    /// Worker 0: the file's length when it was opened, its length now, and its length after
    /// each time written that the progress record has not taken yet.
    pub opened: u64,
    pub length: u64,
    pub lengths: std::collections::VecDeque<(u64, u64)>,
}

pub type SinkHandle = Rc<RefCell<SinkShared>>;

/// Writes `rows` to `<dir>/<view>.csv` with `files`, the process's writer, given on worker 0
/// only (which alone writes); returns the writer's (empty) output stream, whose frontier
/// passes a time once that time is written and flushed, and the shared state.
///
/// With `resume = Some((upper, length))`, the file already holds every update before `upper`:
/// it is cut back to those (a crash may have left more; `length`, if the progress record
/// gives it, is where they end) and appended to, and earlier times are skipped.
pub fn csv_sink<'s, R: ViewRow>(
    rows: VecCollection<'s, u64, R>,
    dir: &Path,
    resume: Option<(u64, Option<u64>)>,
    files: Option<&FileWriter>,
) -> (Written<'s>, SinkHandle) {
    let shared: SinkHandle = Rc::default();
    let writer_worker = files.is_some();
    let view = R::DEF;
    shared.borrow_mut().view = view.name;
    let path = dir.join(format!("{}.csv", view.name));
    let mut writer = None;
    if writer_worker {
        match open_change_file(&path, view.columns.len(), csv_header(view), resume) {
            Ok((w, length)) => {
                writer = Some(w);
                let mut shared = shared.borrow_mut();
                (shared.opened, shared.length) = (length, length);
            }
            Err(source) => shared.borrow_mut().error = Some(SinkError::Io { path: path.clone(), source }),
        }
    }
    let resume = resume.map(|(upper, _)| upper);
    let skip = resume.unwrap_or(0);
    // Buffers of a time that worker 0 wrote itself, cleared, for a later time's rows to start
    // in: a single change at a hub (25 k rows) after small ones grew its buffers by doubling,
    // copying its rows about once more into fresh memory (MUSAE DE, 1,500 single changes: 1.5 %
    // fewer instructions).
    let spare: Rc<RefCell<Option<EncodedRows>>> = Rc::default();
    let recycled = Rc::clone(&spare);

    // Each row is encoded as it arrives (a time's typed rows are never held: a graph load's
    // millions of `reach` rows would be held twice, in the channel and in the buffer), then a
    // completed time's rows are sorted by their bytes and equal rows summed: consolidation on
    // the bytes, which identify a row as well as the row itself does. A time's rows beyond
    // `part_bytes()` leave unsorted as they come, for the writer thread to sort.
    let part_bytes = part_bytes();
    let runs = rows
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<(EncodedRun, u64, Diff)>>, _, _, _>(
            Pipeline,
            &format!("CsvEncode({})", view.name),
            move |_cap, _info| {
                let mut times = InTimeOrder::<u64, Pending>::default();
                // Buffers a quarter larger than `n` rows took (grown by doubling, they were
                // copied about once more; sized by the capacity, one large time would make
                // every later one reserve as much).
                let room = |rows: &EncodedRows| {
                    let n = (rows.bytes.len(), rows.rows.len());
                    (n.0 + n.0 / 4, n.1 + n.1 / 4)
                };
                move |(input, frontier), output| {
                    let port = output.output_index();
                    times.absorb(input, [port], |pending: &mut Pending, row: R, diff| {
                        pending.rows.push(|bytes| row.fields(&mut CsvFields::new(bytes)), diff)
                    });
                    for (time, [cap], pending) in times.pending_mut() {
                        if pending.rows.bytes.len() >= part_bytes {
                            let next = EncodedRows::with_capacity(room(&pending.rows));
                            let part = std::mem::replace(&mut pending.rows, next);
                            pending.parted = true;
                            if *time >= skip {
                                output.session(cap).give((EncodedRun { rows: part, sorted: false }, *time, 1));
                            }
                        }
                    }
                    while let Some((time, [cap], mut pending)) = times.next_complete(frontier) {
                        // The rows leave for the writer; the next time's start in buffers
                        // sized by these (or handed back by the writer).
                        let used = room(&pending.rows);
                        let next = match spare.borrow_mut().take() {
                            Some(mut buffers) => {
                                buffers.reserve(used);
                                buffers
                            }
                            None => EncodedRows::with_capacity(used),
                        };
                        let mut rows = std::mem::replace(&mut pending.rows, next);
                        // The last part of a time that was handed on in parts is left unsorted
                        // for the writer thread too.
                        let sorted = !std::mem::take(&mut pending.parted);
                        if time >= skip {
                            if sorted {
                                rows.consolidate();
                            }
                            if !rows.is_empty() {
                                output.session(&cap).give((EncodedRun { rows, sorted }, time, 1));
                            }
                        }
                        times.recycle(pending);
                    }
                }
            },
        )
        .as_collection();

    let handle = Rc::clone(&shared);
    let written = write_stage(runs, files.zip(writer), shared, path, recycled);
    (written, handle)
}

/// A time's rows in a worker's encoder, and whether part of them has left already.
#[derive(Default)]
struct Pending {
    rows: EncodedRows,
    parted: bool,
}

/// `CsvWrite(view)`: worker 0 receives every worker's runs; once a time is complete it hands
/// them to the process's [`FileWriter`] and holds the time's capability until the writer says
/// the time is in the file, so the returned (empty) stream's frontier passes a time only once
/// that time is written and flushed. A time whose rows fit the file's buffer
/// ([`INLINE_BYTES`]), with none of the file's in flight, is written at once by the worker
/// instead: one copy and one write call, where waking the thread and being woken by it added
/// 40–70 µs to the median single edge change on MUSAE DE.
fn write_stage<'s>(
    runs: VecCollection<'s, u64, EncodedRun>,
    writer: Option<(&FileWriter, BufWriter<File>)>,
    shared: SinkHandle,
    path: std::path::PathBuf,
    spare: Rc<RefCell<Option<EncodedRows>>>,
) -> Written<'s> {
    let view = shared.borrow().view;
    // Only the writer counts: a process without worker 0 writes no change file.
    let rows_metric = writer.as_ref().map(|_| crate::metrics::rows_written(view));
    let mut file = writer.map(|(files, w)| files.open(w));
    let scope = runs.inner.scope();
    let name = format!("CsvWrite({view})");
    runs.inner.unary_frontier::<CapacityContainerBuilder<Vec<((), u64, Diff)>>, _, _, _>(
        Exchange::new(|_: &(EncodedRun, u64, Diff)| 0),
        &name,
        move |_cap, info| {
            let flushed = Arc::new(Flushed::new(scope.worker().sync_activator_for(info.address.to_vec())));
            // Each time's runs until the time is complete, with a capability for it.
            let mut times = InTimeOrder::<u64, Held>::default();
            // Times handed to the writer, oldest first.
            let mut in_flight: VecDeque<Capability<u64>> = VecDeque::new();
            let limit = Rc::clone(&shared);
            // A time written: its rows counted, the file's length after it noted for the
            // progress record.
            let record = move |time: u64, outcome: std::io::Result<(u64, u64)>| {
                let mut shared = shared.borrow_mut();
                match outcome {
                    Ok((rows, bytes)) => {
                        rows_metric.iter().for_each(|m| m.increment(rows));
                        shared.length += bytes;
                        let length = shared.length;
                        shared.lengths.push_back((time, length));
                    }
                    Err(source) => {
                        shared.error.get_or_insert(SinkError::Io { path: path.clone(), source });
                    }
                }
            };
            move |(input, frontier), output| {
                let port = output.output_index();
                times.absorb(input, [port], |held: &mut Held, run, diff| held.runs.push((run, diff)));
                // A time with a part left unsorted is sorted by the writer thread: its runs go
                // there as they come, to be grouped while the time is still being computed.
                if let Some(f) = file.as_ref() {
                    let stop = limit.borrow().limit;
                    for (&time, _, held) in times.pending_mut() {
                        if stop.is_some_and(|stop| time >= stop) {
                            continue;
                        }
                        held.streaming |= held.runs.iter().any(|(run, _)| !run.sorted);
                        if held.streaming {
                            for (run, weight) in held.runs.drain(..) {
                                f.part(time, run, weight);
                            }
                        }
                    }
                }
                while let Some((time, [cap], held)) = times.next_complete(frontier) {
                    let Some(f) = file.as_ref() else { continue };
                    if limit.borrow().limit.is_some_and(|limit| time >= limit) {
                        if held.streaming {
                            f.finish(time, None);
                        }
                        continue;
                    }
                    let runs = held.runs;
                    let bytes: usize = runs.iter().map(|(run, _)| run.rows.bytes.len()).sum();
                    let handed = if held.streaming {
                        f.finish(time, Some(&flushed))
                    } else if in_flight.is_empty() && bytes < INLINE_BYTES {
                        record(time, f.write_now(time, &runs));
                        // The largest run's buffers (under 1 MiB of rows) go back to the encoder.
                        if let Some((EncodedRun { rows: mut buffers, .. }, _)) =
                            runs.into_iter().max_by_key(|(run, _)| run.rows.bytes.capacity())
                        {
                            let mut spare = spare.borrow_mut();
                            if spare.as_ref().is_none_or(|s| s.bytes.capacity() < buffers.bytes.capacity()) {
                                buffers.clear();
                                *spare = Some(buffers);
                            }
                        }
                        continue;
                    } else {
                        f.write(time, runs, &flushed)
                    };
                    if handed {
                        in_flight.push_back(cap);
                    } else {
                        file = None;
                        record(time, Err(std::io::Error::other("the change files' writer thread is gone")));
                    }
                }
                for (time, outcome) in flushed.take() {
                    let cap = in_flight.pop_front().expect("a time in flight for each one written");
                    debug_assert_eq!(*cap.time(), time);
                    record(time, outcome);
                }
            }
        },
    )
}

/// A time's runs at the writer stage until the time is complete, and whether they go to the
/// writer thread as they come (a part of the time was left unsorted).
#[derive(Default)]
struct Held {
    runs: Vec<(EncodedRun, Diff)>,
    streaming: bool,
}

/// Below how many bytes of rows a time is written by the worker itself (see [`write_stage`]):
/// the size of a change file's buffer.
const INLINE_BYTES: usize = FILE_BUFFER;

/// The size of a change file's write buffer.
const FILE_BUFFER: usize = 1 << 20;

/// The thread that merges and writes worker 0's change files, one time after another in the
/// order their times complete: the files' bytes are written beside the workers, not by worker
/// 0 between its own share of the work (at `-w 2` on the peer workload it was busy 0.3 s
/// longer than worker 1). One thread per process, so writing takes at most one core.
pub struct FileWriter {
    jobs: mpsc::Sender<Job>,
}

/// Time the writer threads of this process spent merging and writing (reported by `chatflow bench`).
static WRITING_NANOS: AtomicU64 = AtomicU64::new(0);

/// Seconds this process's change-file writers spent merging and writing runs so far.
pub fn writing_seconds() -> f64 {
    WRITING_NANOS.load(Ordering::Relaxed) as f64 / 1e9
}

/// A change file, written by the thread or (a small time with none in flight) the worker;
/// `None` after a failed write.
type SharedFile = Arc<Mutex<Option<BufWriter<File>>>>;

/// What the writer thread is asked to do for a file.
enum Job {
    /// Merge time `time`'s sorted runs and append them; then tell `flushed`.
    Runs { file: SharedFile, time: u64, runs: Vec<(EncodedRun, Diff)>, flushed: Arc<Flushed> },
    /// Part of time `time`'s rows (each diff times `weight`), to group now and sort once the
    /// time is complete.
    Part { file: SharedFile, time: u64, run: EncodedRun, weight: Diff },
    /// Every part of time `time` has come: sort them and append them, then tell `flushed`; or,
    /// without `flushed` (a run that stops before `time`), drop them.
    Finish { file: SharedFile, time: u64, flushed: Option<Arc<Flushed>> },
}

/// One file's end of the [`FileWriter`].
pub struct FileHandle {
    jobs: mpsc::Sender<Job>,
    file: SharedFile,
}

/// The times of one file written (or failed), oldest first, and the operator to wake for them.
struct Flushed {
    done: Mutex<Vec<(u64, std::io::Result<(u64, u64)>)>>,
    activator: SyncActivator,
}

impl Flushed {
    fn new(activator: SyncActivator) -> Self {
        Flushed { done: Mutex::new(Vec::new()), activator }
    }
    fn take(&self) -> Vec<(u64, std::io::Result<(u64, u64)>)> {
        std::mem::take(&mut *lock(&self.done))
    }
    fn tell(&self, time: u64, outcome: std::io::Result<(u64, u64)>) {
        lock(&self.done).push((time, outcome));
        // The worker may be gone (a run that stopped): nothing waits for this time then.
        let _ = self.activator.activate();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes `time`'s rows into `file` with `write`; after a failure the file is written no more.
fn write_shared(
    file: &SharedFile,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<(u64, u64)>,
) -> std::io::Result<(u64, u64)> {
    let mut file = lock(file);
    let Some(w) = file.as_mut() else {
        return Err(std::io::Error::other("not written after an earlier error"));
    };
    let outcome = write(w);
    if outcome.is_err() {
        *file = None;
    }
    outcome
}

/// A large time's rows at the writer thread, as its parts come, grouped by the first
/// [`GROUP_BITS`] bits of their hashes: each group with its rows' bytes and their entries
/// (offsets into those bytes). Once the time is complete each group is sorted and written,
/// groups in order, which is the order of the rows' (hash, bytes). A group's bytes are its
/// own so that sorting and writing it read them from the cache: with the parts' bytes in one
/// buffer (a graph load's 100 MB), each row written was a cache miss, and writing was two
/// thirds of the time after the workers were done.
#[derive(Default)]
struct Grouped {
    groups: Vec<Group>,
    /// Room for sorting a group.
    scratch: Vec<Entry>,
    /// A group's rows' bytes went beyond what 32-bit offsets reach (4 GiB).
    overflow: bool,
}

/// One group of a [`Grouped`] time.
#[derive(Default)]
struct Group {
    bytes: Vec<u8>,
    rows: Vec<Entry>,
}

impl Grouped {
    /// Adds the rows of `run`, each diff times `weight` (hashing them unless it is sorted: a
    /// part's rows are hashed here rather than by the worker, the ENGB load 3 % faster).
    fn add(&mut self, EncodedRun { rows: run, sorted }: &EncodedRun, weight: Diff) {
        if self.groups.is_empty() {
            self.groups.resize_with(1 << GROUP_BITS, Group::default);
        }
        for &(hash, start, end, diff) in &run.rows {
            let row = &run.bytes[start as usize..end as usize];
            let hash = if *sorted { hash } else { row_hash(row) };
            let group = &mut self.groups[group_of(hash)];
            // Offsets are 32 bits, as in each worker's runs.
            let (Ok(start), Ok(end)) = (u32::try_from(group.bytes.len()), u32::try_from(group.bytes.len() + row.len()))
            else {
                self.overflow = true;
                return;
            };
            group.bytes.extend_from_slice(row);
            group.rows.push((hash, start, end, diff * weight));
        }
    }

    /// Sorts each group, sums equal rows and appends them at `time`; returns the lines and
    /// bytes written.
    fn write(&mut self, w: &mut BufWriter<File>, time: u64) -> std::io::Result<(u64, u64)> {
        if self.overflow {
            return Err(std::io::Error::other(
                "a time's rows took more than 4 GiB, more than a change file's writer holds",
            ));
        }
        // A group sorted and its lines rendered into `out`.
        let render = |group: &mut Group, scratch: &mut Vec<Entry>, lines: &mut Lines, out: &mut Vec<u8>| {
            let Group { bytes, rows } = group;
            consolidate_entries(|r| &bytes[r.1 as usize..r.2 as usize], rows, scratch, GROUP_BITS);
            out.clear();
            for &(_, start, end, diff) in rows.iter() {
                lines.render(out, &bytes[start as usize..end as usize], diff);
            }
        };
        let (mut lines, mut out) = (Lines::new(time), Vec::new());
        // A group's lines go to the file at once, not copied into the writer's buffer first.
        w.flush()?;
        let w = w.get_mut();
        if self.groups.iter().map(|g| g.rows.len()).sum::<usize>() < TWO_THREADS_FROM {
            for group in &mut self.groups {
                render(group, &mut self.scratch, &mut lines, &mut out);
                w.write_all(&out)?;
            }
            return Ok(lines.counts());
        }
        // A time of many rows: this thread sorts and renders the even groups, a helper the odd
        // ones, and this thread writes them in order. Once the time is complete the workers
        // have nothing more of it to do, and writing a graph load's 3 M `reach` rows took a
        // quarter of the load after the walks were done (a third of it sorting).
        let (mut evens, mut odds) = (Vec::new(), Vec::new());
        for (g, group) in self.groups.iter_mut().enumerate() {
            if g % 2 == 0 {
                evens.push(group)
            } else {
                odds.push(group)
            }
        }
        let scratch = &mut self.scratch;
        std::thread::scope(|scope| {
            let (rendered, from_helper) = mpsc::sync_channel::<Vec<u8>>(2);
            let (give_back, returned) = mpsc::channel::<Vec<u8>>();
            let helper = scope.spawn(move || {
                let (mut lines, mut scratch) = (Lines::new(time), Vec::new());
                for group in odds {
                    let mut out = returned.try_recv().unwrap_or_default();
                    render(group, &mut scratch, &mut lines, &mut out);
                    if rendered.send(out).is_err() {
                        break;
                    }
                }
                lines.counts()
            });
            let written: std::io::Result<()> = (|| {
                for group in evens {
                    render(group, scratch, &mut lines, &mut out);
                    w.write_all(&out)?;
                    if let Ok(theirs) = from_helper.recv() {
                        w.write_all(&theirs)?;
                        let _ = give_back.send(theirs);
                    }
                }
                Ok(())
            })();
            // A failed write: the helper stops at its next group.
            drop(from_helper);
            let (theirs, their_bytes) = helper.join().expect("the change files' sorting helper");
            written?;
            let (mine, my_bytes) = lines.counts();
            Ok((mine + theirs, my_bytes + their_bytes))
        })
    }

    /// No rows; the groups keep their allocations unless they hold more than
    /// [`SPARE_GROUPED_BYTES`] (a graph load's 180 MB are not held for the small times after
    /// it).
    fn clear(&mut self) {
        let held: usize =
            self.groups.iter().map(|g| g.bytes.capacity() + g.rows.capacity() * std::mem::size_of::<Entry>()).sum();
        if held > SPARE_GROUPED_BYTES {
            self.groups = Vec::new();
            self.scratch = Vec::new();
        }
        for group in &mut self.groups {
            group.bytes.clear();
            group.rows.clear();
        }
        self.overflow = false;
    }
}

/// From how many rows [`Grouped`] sorts and renders its groups on two threads.
const TWO_THREADS_FROM: usize = 1 << 18;

/// At most how many bytes of rows and entries the writer thread's emptied [`Grouped`] keeps
/// room for.
const SPARE_GROUPED_BYTES: usize = 64 << 20;

impl FileWriter {
    /// Starts the thread; it ends once every handle is dropped, after the files' last writes.
    pub fn spawn() -> FileWriter {
        let (jobs, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("csv-writer".into())
            .spawn(move || {
                // The large times whose parts are coming, by file and time; and one emptied, for
                // the next.
                let mut grouped: HashMap<(usize, u64), Grouped> = HashMap::new();
                let mut spare: Option<Grouped> = None;
                for job in receiver {
                    let began = std::time::Instant::now();
                    // A time written (or failed), to tell.
                    let told = match job {
                        Job::Runs { file, time, runs, flushed } => {
                            Some((flushed, time, write_shared(&file, |w| write_merged(w, time, &runs))))
                        }
                        Job::Part { file, time, run, weight } => {
                            let key = (Arc::as_ptr(&file) as usize, time);
                            grouped.entry(key).or_insert_with(|| spare.take().unwrap_or_default()).add(&run, weight);
                            None
                        }
                        Job::Finish { file, time, flushed } => {
                            let mut rows = grouped.remove(&(Arc::as_ptr(&file) as usize, time)).unwrap_or_default();
                            let told = flushed.map(|f| (f, time, write_shared(&file, |w| rows.write(w, time))));
                            rows.clear();
                            spare = Some(rows);
                            told
                        }
                    };
                    WRITING_NANOS.fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    if let Some((flushed, time, outcome)) = told {
                        flushed.tell(time, outcome);
                    }
                }
            })
            .expect("spawning the change files' writer");
        FileWriter { jobs }
    }

    /// `w`, to be written through the thread.
    fn open(&self, w: BufWriter<File>) -> FileHandle {
        FileHandle { jobs: self.jobs.clone(), file: Arc::new(Mutex::new(Some(w))) }
    }
}

impl FileHandle {
    /// Asks the thread to merge and append `time`'s runs; false if the thread is gone.
    fn write(&self, time: u64, runs: Vec<(EncodedRun, Diff)>, flushed: &Arc<Flushed>) -> bool {
        let job = Job::Runs { file: Arc::clone(&self.file), time, runs, flushed: Arc::clone(flushed) };
        self.jobs.send(job).is_ok()
    }

    /// Hands the thread part of `time`'s rows, each diff times `weight` ([`Job::Part`]).
    fn part(&self, time: u64, run: EncodedRun, weight: Diff) {
        // A thread that is gone is found by `finish`.
        let _ = self.jobs.send(Job::Part { file: Arc::clone(&self.file), time, run, weight });
    }

    /// Tells the thread that `time`'s parts have all come: to write them and tell `flushed`, or,
    /// without it, to drop them; false if the thread is gone.
    fn finish(&self, time: u64, flushed: Option<&Arc<Flushed>>) -> bool {
        let job = Job::Finish { file: Arc::clone(&self.file), time, flushed: flushed.map(Arc::clone) };
        self.jobs.send(job).is_ok()
    }

    /// Merges and appends `time`'s runs on this thread (none of the file's are in flight).
    fn write_now(&self, time: u64, runs: &[(EncodedRun, Diff)]) -> std::io::Result<(u64, u64)> {
        write_shared(&self.file, |w| write_merged(w, time, runs))
    }
}

/// Opens a view's change file: new, with its header; or, when resuming at `upper`, cut back to
/// its updates before `upper`: to the length the progress record gives for it, or (a record
/// without lengths) before the first line at or after `upper`, found by reading the file.
/// `columns`: the view's columns (the `time` column follows them). Returns the writer and the
/// file's length.
fn open_change_file(
    path: &Path,
    columns: usize,
    header: Vec<u8>,
    resume: Option<(u64, Option<u64>)>,
) -> std::io::Result<(BufWriter<File>, u64)> {
    if let Some((upper, length)) = resume {
        if path.exists() {
            let cut = if length.is_some() {
                length
            } else {
                let mut reader = csv::ReaderBuilder::new().has_headers(true).from_path(path)?;
                let time_col = columns;
                let mut cut = None;
                let mut record = csv::ByteRecord::new();
                loop {
                    let start = reader.position().byte();
                    match reader.read_byte_record(&mut record) {
                        Ok(false) => break,
                        Ok(true) => {}
                        // A torn last line (a crash mid-write) goes with everything after it.
                        Err(_) => {
                            cut = Some(start);
                            break;
                        }
                    }
                    let time = std::str::from_utf8(record.get(time_col).unwrap_or(b""))
                        .ok()
                        .and_then(|t| t.parse::<u64>().ok());
                    if time.is_none_or(|t| t >= upper) {
                        cut = Some(record.position().map_or(start, |p| p.byte()));
                        break;
                    }
                }
                cut
            };
            let file = std::fs::OpenOptions::new().write(true).open(path)?;
            if let Some(cut) = cut {
                file.set_len(cut)?;
            }
            let mut file = file;
            use std::io::Seek;
            let length = file.seek(std::io::SeekFrom::End(0))?;
            return Ok((BufWriter::with_capacity(FILE_BUFFER, file), length));
        }
    }
    let mut w = BufWriter::with_capacity(FILE_BUFFER, File::create(path)?);
    // At once, so that a reader of a view with no rows yet sees its columns.
    w.write_all(&header)?;
    w.flush()?;
    Ok((w, header.len() as u64))
}

/// How many rows ahead of the one being written [`write_merged`] prefetches.
const PREFETCH_ROWS: usize = 16;

/// Merges sorted runs, summing equal rows, and appends `row,time,diff` lines; returns the
/// number of lines and of bytes written.
///
/// There is a run per worker that had rows, so a few: one or two are merged head to head; from
/// three, the next row is found by a linear scan of the runs' heads, which is cheaper than a
/// heap's pushes and pops at these sizes.
fn write_merged(w: &mut BufWriter<File>, time: u64, runs: &[(EncodedRun, Diff)]) -> std::io::Result<(u64, u64)> {
    let mut lines = Lines::new(time);
    let mut line = |w: &mut BufWriter<File>, row: &[u8], diff: Diff| lines.put(w, row, diff);
    if runs.len() <= 2 {
        // One run (`-w 1`, or one worker had rows) or two (`-w 2`): merged head to head, one
        // comparison per row written (a lone run against an empty one, so its rows are
        // written in order with none), where the scan of the runs' heads below compared each
        // head twice (as the least, then for equality) and took twice the writer's time per
        // row of one run.
        let empty = (EncodedRun::default(), 1);
        let (&(ref a, wa), &(ref b, wb)) = (runs.first().unwrap_or(&empty), runs.get(1).unwrap_or(&empty));
        // Row `i` of `run` with `diff`, a later row's bytes asked for first.
        let mut put = |w: &mut BufWriter<File>, run: &EncodedRun, i: usize, diff: Diff| {
            if i + PREFETCH_ROWS < run.len() {
                run.prefetch(i + PREFETCH_ROWS);
            }
            line(w, run.row(i), diff)
        };
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a.key(i).cmp(&b.key(j)) {
                std::cmp::Ordering::Less => {
                    put(w, a, i, a.diff(i) * wa)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    put(w, b, j, b.diff(j) * wb)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    put(w, a, i, a.diff(i) * wa + b.diff(j) * wb)?;
                    (i, j) = (i + 1, j + 1);
                }
            }
        }
        for i in i..a.len() {
            put(w, a, i, a.diff(i) * wa)?;
        }
        for j in j..b.len() {
            put(w, b, j, b.diff(j) * wb)?;
        }
    } else {
        // Each run's next row.
        let mut next = vec![0usize; runs.len()];
        loop {
            // The run whose next row is the least (the first of equal ones): its row is
            // written without comparing it with itself.
            let mut least: Option<usize> = None;
            for (r, (run, _)) in runs.iter().enumerate() {
                if next[r] < run.len() && least.is_none_or(|l| run.key(next[r]) < runs[l].0.key(next[l])) {
                    least = Some(r);
                }
            }
            let Some(l) = least else { break };
            let key = runs[l].0.key(next[l]);
            let mut diff = 0;
            for (r, (run, weight)) in runs.iter().enumerate() {
                let i = next[r];
                if r == l || (i < run.len() && run.key(i) == key) {
                    diff += run.diff(i) * weight;
                    next[r] = i + 1;
                    if i + PREFETCH_ROWS < run.len() {
                        run.prefetch(i + PREFETCH_ROWS);
                    }
                }
            }
            line(w, key.1, diff)?;
        }
    }
    w.flush()?;
    Ok(lines.counts())
}

/// A time's `row,time,diff` lines, counted as they are written (rows with diff 0 are not).
struct Lines {
    /// A line's end (`,time,diff` and the line feed), made once for diffs 1 and -1 (nearly
    /// every row: one write for the row, one for its end).
    insert: Vec<u8>,
    retract: Vec<u8>,
    time: u64,
    written: u64,
    bytes: u64,
}

impl Lines {
    fn new(time: u64) -> Self {
        Lines { insert: Self::end(time, 1), retract: Self::end(time, -1), time, written: 0, bytes: 0 }
    }

    fn end(time: u64, diff: Diff) -> Vec<u8> {
        format!(",{time},{diff}\n").into_bytes()
    }

    /// Hands the line of `row` with `diff` (none for 0) to `put`, its row and then its end.
    #[inline]
    fn line<E>(&mut self, row: &[u8], diff: Diff, mut put: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if diff != 0 {
            let other;
            let end = match diff {
                1 => &self.insert,
                -1 => &self.retract,
                _ => {
                    other = Self::end(self.time, diff);
                    &other
                }
            };
            put(row)?;
            put(end)?;
            self.written += 1;
            self.bytes += (row.len() + end.len()) as u64;
        }
        Ok(())
    }

    /// Writes the line of `row` with `diff` (none for 0) to `w`.
    #[inline]
    fn put(&mut self, w: &mut BufWriter<File>, row: &[u8], diff: Diff) -> std::io::Result<()> {
        self.line(row, diff, |bytes| w.write_all(bytes))
    }

    /// Appends the line of `row` with `diff` (none for 0) to `out`.
    #[inline]
    fn render(&mut self, out: &mut Vec<u8>, row: &[u8], diff: Diff) {
        let _ = self.line(row, diff, |bytes| -> Result<(), std::convert::Infallible> {
            out.extend_from_slice(bytes);
            Ok(())
        });
    }

    /// The lines and bytes written.
    fn counts(&self) -> (u64, u64) {
        (self.written, self.bytes)
    }
}

/// The CSV sink of one worker: every view's change file (written by worker 0) and the
/// progress record.
pub struct CsvSink {
    dir: std::path::PathBuf,
    resume: Option<u64>,
    /// Resuming: each file's length at the upper, as the progress record gives it.
    lengths: std::collections::BTreeMap<String, u64>,
    views: Vec<SinkHandle>,
    progress: Option<crate::sinks::progress::ProgressHandle>,
    freshness: Freshness,
    /// Worker 0's writer thread, started with its first view.
    files: Option<FileWriter>,
}

impl CsvSink {
    /// Change files in `dir`; with `resume = Some(upper)` they hold every update before
    /// `upper` already (see the module doc). Live records are fresh once the progress record
    /// passes them (`freshness`).
    pub fn new(dir: &Path, resume: Option<u64>, freshness: Freshness) -> CsvSink {
        let lengths = match resume {
            Some(_) => crate::sinks::progress::read_lengths(dir),
            None => Default::default(),
        };
        CsvSink { dir: dir.to_path_buf(), resume, lengths, views: Vec::new(), progress: None, freshness, files: None }
    }
}

impl crate::sinks::Sink for CsvSink {
    fn export<'s, R: ViewRow>(&mut self, rows: VecCollection<'s, u64, R>) -> Written<'s> {
        let length = self.lengths.get(R::DEF.name).copied();
        if rows.inner.scope().index() == 0 && self.files.is_none() {
            self.files = Some(FileWriter::spawn());
        }
        let resume = self.resume.map(|upper| (upper, length));
        let (written, handle) = csv_sink(rows, &self.dir, resume, self.files.as_ref());
        self.views.push(handle);
        written
    }

    fn complete<'s>(
        &mut self,
        written: Written<'s>,
        positions: VecCollection<'s, u64, crate::sources::InputPosition>,
    ) -> Written<'s> {
        let (done, state) = crate::sinks::progress::progress_writer(
            positions,
            written,
            &self.dir,
            self.freshness.clone(),
            self.views.clone(),
        );
        self.progress = Some(state);
        done
    }

    /// The files are flushed once the probe passes a time; live records are fresh once the
    /// progress record passes it too (or, in a process that writes none, the probe).
    fn advance(
        &mut self,
        upper: Option<u64>,
        _positions: &[crate::sources::InputPosition],
        produced: Vec<Live>,
    ) -> Result<(), SinkError> {
        self.freshness.complete(produced);
        if self.freshness.at_probe() {
            self.freshness.written(0, upper.unwrap_or(u64::MAX));
        }
        self.check()
    }

    fn check(&mut self) -> Result<(), SinkError> {
        let progress = self.progress.as_ref().and_then(|p| p.borrow_mut().take_error());
        match self.views.iter().find_map(|s| s.borrow_mut().error.take()).or(progress) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn finish(mut self, upper: u64, _positions: &[crate::sources::InputPosition]) -> Result<(), SinkError> {
        self.check()?;
        for view in &self.views {
            view.borrow_mut().limit = Some(upper);
        }
        if let Some(state) = &self.progress {
            crate::sinks::progress::write_progress(state, &self.dir, upper, &self.freshness)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A repeatable sequence of pseudo-random numbers (31 bits each) from `seed`.
    fn numbers(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        }
    }

    /// A run of `rows` (encoded as their text), consolidated as CsvEncode leaves it.
    fn run(rows: &[(String, Diff)]) -> EncodedRun {
        let mut pending = EncodedRows::default();
        for (row, diff) in rows {
            pending.push(|bytes| bytes.extend_from_slice(row.as_bytes()), *diff);
        }
        pending.consolidate();
        EncodedRun { rows: pending, sorted: true }
    }

    /// The writer thread appends each file's times in the order they were handed over, beside
    /// the worker's own writes of small times, and a failed write (a full device) is told
    /// back, with every later time of that file refused rather than written past the gap.
    #[test]
    fn the_writer_thread_appends_in_order_and_tells_failures() {
        timely::execute_directly(|worker| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("v.csv");
            let files = FileWriter::spawn();
            let good = files.open(BufWriter::new(File::create(&path).unwrap()));
            let full = files.open(BufWriter::new(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap()));
            let flushed = Arc::new(Flushed::new(worker.sync_activator_for(vec![0])));
            let rows = |time: u64| -> Vec<(EncodedRun, Diff)> {
                vec![(run(&(0..20_000).map(|i| (format!("t{time}r{i}"), 1)).collect::<Vec<_>>()), 1)]
            };
            for time in 0..3 {
                assert!(good.write(time, rows(time), &flushed));
            }
            // Told in order; waits for the thread's progress, not for a time.
            let mut told = Vec::new();
            while told.len() < 3 {
                told.extend(flushed.take().into_iter().map(|(time, outcome)| (time, outcome.unwrap().0)));
                std::thread::yield_now();
            }
            assert_eq!(told, vec![(0, 20_000), (1, 20_000), (2, 20_000)]);
            // The worker's own write of a small time follows them.
            assert_eq!(good.write_now(3, &[(run(&[("last".into(), 2)]), 1)]).unwrap().0, 1);
            let text = std::fs::read_to_string(&path).unwrap();
            let times: Vec<&str> = text.lines().map(|l| l.split(',').nth(1).unwrap()).collect();
            assert_eq!(times.len(), 60_001);
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "times out of order");
            assert_eq!(text.lines().last(), Some("last,3,2"));

            assert!(full.write(0, rows(0), &flushed));
            assert!(full.write(1, rows(1), &flushed));
            let mut failed = Vec::new();
            while failed.len() < 2 {
                failed
                    .extend(flushed.take().into_iter().map(|(time, outcome)| (time, outcome.unwrap_err().to_string())));
                std::thread::yield_now();
            }
            assert_eq!(failed[0].0, 0);
            assert!(failed[0].1.contains("No space left"), "{failed:?}");
            assert_eq!(failed[1], (1, "not written after an earlier error".to_owned()));
        });
    }

    /// A time handed to the writer thread in unsorted parts (of one worker or several, with
    /// weights, equal rows in different parts, some summing to zero) is written as merging the
    /// same rows consolidated into sorted runs writes it, whether its groups hold a few rows
    /// (sorted by comparisons) or many (scattered), on one thread or (from TWO_THREADS_FROM
    /// rows) two; a time whose run stops before it is dropped.
    #[test]
    fn a_time_in_unsorted_parts_is_written_as_merged_sorted_runs() {
        let mut next = numbers(11);
        let dir = tempfile::tempdir().unwrap();
        let files = FileWriter::spawn();
        for (case, (parts, rows, distinct)) in
            [(1, 10, 5), (3, 2_000, 700), (4, 40_000, 90_000), (3, TWO_THREADS_FROM / 2, 2_000_000)]
                .into_iter()
                .enumerate()
        {
            let parts: Vec<(Vec<(String, Diff)>, Diff)> = (0..parts)
                .map(|_| {
                    let rows = (0..rows).map(|_| (format!("r{}", next() % distinct), next() as Diff % 5 - 2)).collect();
                    (rows, if next().is_multiple_of(4) { -1 } else { 1 })
                })
                .collect();
            let merged_path = dir.path().join(format!("merged{case}.csv"));
            let mut w = BufWriter::new(File::create(&merged_path).unwrap());
            let runs: Vec<(EncodedRun, Diff)> = parts.iter().map(|(rows, weight)| (run(rows), *weight)).collect();
            let merged_counts = write_merged(&mut w, 7, &runs).unwrap();
            drop(w);

            let path = dir.path().join(format!("parts{case}.csv"));
            let handle = files.open(BufWriter::new(File::create(&path).unwrap()));
            timely::execute_directly(move |worker| {
                let flushed = Arc::new(Flushed::new(worker.sync_activator_for(vec![0])));
                for time in [6, 7] {
                    for (rows, weight) in &parts {
                        let mut unsorted = EncodedRows::default();
                        for (row, diff) in rows {
                            unsorted.push(|bytes| bytes.extend_from_slice(row.as_bytes()), *diff);
                        }
                        handle.part(time, EncodedRun { rows: unsorted, sorted: false }, *weight);
                    }
                }
                // Time 6 is dropped (a run that stopped before it), time 7 written.
                assert!(handle.finish(6, None));
                assert!(handle.finish(7, Some(&flushed)));
                let mut told = Vec::new();
                while told.is_empty() {
                    told = flushed.take();
                    std::thread::yield_now();
                }
                let (time, outcome) = told.pop().unwrap();
                assert_eq!((time, outcome.unwrap()), (7, merged_counts), "case {case}: lines and bytes counted");
            });
            let (written, expected) = (std::fs::read(&path).unwrap(), std::fs::read(&merged_path).unwrap());
            assert!(expected.len() > 10, "case {case}: too few rows to test");
            assert!(written == expected, "case {case}: differs from the merged runs");
        }
    }

    /// Merging none, one, two (head to head), three or four runs of different lengths writes each
    /// row once with the sum of its diffs over the runs, zeros left out, in (hash, row) order.
    #[test]
    fn merged_runs_sum_equal_rows_in_order() {
        let mut next = numbers(7);
        for count in 0..=4 {
            let runs: Vec<(EncodedRun, Diff)> = (0..count)
                .map(|r| {
                    let rows: Vec<(String, Diff)> =
                        (0..50 + 1500 * r).map(|_| (format!("r{}", next() % 500), next() as Diff % 5 - 2)).collect();
                    (run(&rows), if next().is_multiple_of(4) { -1 } else { 1 })
                })
                .collect();
            let mut expected: BTreeMap<(u64, Vec<u8>), Diff> = BTreeMap::new();
            for (run, weight) in &runs {
                for i in 0..run.len() {
                    *expected.entry((run.rows.hash(i), run.row(i).to_vec())).or_default() += run.diff(i) * weight;
                }
            }
            let want: String = expected
                .into_iter()
                .filter(|(_, d)| *d != 0)
                .map(|((_, row), d)| format!("{},9,{d}\n", String::from_utf8(row).unwrap()))
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("v.csv");
            let mut w = BufWriter::new(File::create(&path).unwrap());
            let (written, bytes) = write_merged(&mut w, 9, &runs).unwrap();
            drop(w);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), want, "{count} run(s)");
            // The progress record cuts a file back to the lengths these counts add up to.
            assert_eq!(bytes, want.len() as u64, "{count} run(s): bytes counted");
            assert_eq!(written as usize, want.lines().count());
        }
    }
}
