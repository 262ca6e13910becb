//! The ClickHouse sink: one change table per view (see `clickhouse::schema`), progress rows,
//! and so the committed cut (see `clickhouse::cut`).
//!
//! ```text
//!   view rows ─Exchange(hash of row)─► ChEncode(view): per completed time, consolidate and
//!                                       encode as TabSeparated rows into the worker's buffers
//!   worker loop: the probe passes f ──► Batch { worker, rows per view, upper f } ──bounded channel──►
//!   writer thread (one per process): coalesce its workers' batches (≥ 250 ms apart) ─►
//!   INSERT each view's rows ─► INSERT _progress (view, worker, upper f per worker) ─►
//!   retry with backoff until both are in
//! ```
//!
//! ## Delivery: exactly once
//!
//! A row of a view at a time is produced by exactly one worker (rows are exchanged by a hash
//! of the row) and its diff there is the consolidated change of the view at that time, a
//! function of the log: writing it twice writes the same `(row, time, diff)`, which the
//! engine collapses in its merges and readers collapse at once (`any(diff)` per
//! `(row, time)`). So a retried insert, a crash between an insert and its progress record, or
//! a restart that rewrites what was already there never counts an update twice.
//!
//! ## Restarts
//!
//! A run reads the cut `C`, restores the state of the latest checkpoint (at a time `c ≤ C`; see
//! `worker::checkpoint`) and reads its sources from that checkpoint's positions, or from the
//! beginning without one (the Kafka clock bindings in `--out` make the times the same), skips
//! every update before `C` and writes the rest: what was already there is collapsed, nothing
//! is lost.
//!
//! ## Back-pressure and outages
//!
//! See `writer`: two batches in flight at most, retries forever with backoff while running.

use std::cell::RefCell;
use std::rc::Rc;

use dataflows::operators::accumulate_in_time_order;
use dataflows::{Diff, ViewRow};
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Exchange;

use crate::sinks::encode::{EncodedRows, TsvFields};
use crate::sinks::freshness::{Freshness, Live};
use crate::sinks::{Sink, SinkError, Written};
use crate::sources::InputPosition;

pub mod writer;

pub use writer::Writer;
use writer::{Views, WriterHandle};

/// A view's encoded rows not yet handed to the writer, and how many.
#[derive(Default)]
pub struct ViewRows {
    pub rows: Vec<u8>,
    pub count: u64,
}

/// What a worker's sink operators have encoded and not yet handed over, by view name.
pub type BuffersHandle = Rc<RefCell<Views>>;

fn fixed_hash<T: std::hash::Hash>(value: &T) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x6368_5f73_696e_6b21).hash_one(value)
}

/// Encodes `rows` of each completed time at or after `skip` into the view's buffer. Returns
/// the (empty) output, whose frontier passes a time once it is buffered.
pub fn clickhouse_sink<'s, R: ViewRow>(
    rows: VecCollection<'s, u64, R>,
    buffers: &BuffersHandle,
    skip: u64,
) -> Written<'s> {
    let buffers = Rc::clone(buffers);
    let view = R::DEF.name;
    // Each row is encoded as it arrives and a completed time's rows consolidated on their
    // bytes (sorting typed rows compared their strings: ChEncode took almost a third of a
    // replay's operator time).
    let absorb = |pending: &mut EncodedRows, row: R, diff: Diff| {
        pending.push(|bytes| row.fields(&mut TsvFields::new(bytes)), diff);
    };
    accumulate_in_time_order(
        rows,
        Exchange::new(|u: &(R, u64, Diff)| fixed_hash(&u.0)),
        &format!("ChEncode({view})"),
        absorb,
        move |time: &u64, pending: &mut EncodedRows, _emit: &mut dyn FnMut((), Diff)| {
            if *time < skip {
                pending.clear();
                return;
            }
            pending.consolidate();
            let mut buffers = buffers.borrow_mut();
            let buffer = buffers.entry(view).or_default();
            let mut numbers = itoa::Buffer::new();
            let time = numbers.format(*time).as_bytes().to_vec();
            for i in 0..pending.len() {
                buffer.rows.extend_from_slice(pending.row(i));
                buffer.rows.push(b'\t');
                buffer.rows.extend_from_slice(&time);
                buffer.rows.push(b'\t');
                buffer.rows.extend_from_slice(numbers.format(pending.diff(i)).as_bytes());
                buffer.rows.push(b'\n');
            }
            buffer.count += pending.len() as u64;
            pending.clear();
        },
    )
    .inner
}

/// The ClickHouse sink of one worker: its sink operators' buffers and its end of the
/// process's writer.
pub struct ClickHouseSink {
    buffers: BuffersHandle,
    writer: WriterHandle,
    /// The worker's index.
    worker: u32,
    /// Updates before this time are in the tables already (the run's starting cut).
    start: u64,
    /// The upper last handed to the writer.
    handed: u64,
    /// Where live records complete in the dataflow wait for the committed cut.
    freshness: Freshness,
    /// An upper (with the sources' positions then) whose rows stay in `buffers` because the
    /// writer was busy: handed over at the next chance.
    deferred: Option<(u64, String)>,
}

/// How many bytes of rows a worker keeps while the writer is busy before it waits for it.
const HOLD_BYTES: usize = 16 << 20;

impl ClickHouseSink {
    /// `start`: the committed cut the run starts from; `writer`: the process's writer, which
    /// tells `freshness` each upper it records.
    pub fn new(writer: &Writer, worker: u32, start: u64, freshness: Freshness) -> Self {
        ClickHouseSink {
            buffers: BuffersHandle::default(),
            writer: writer.handle(worker),
            worker,
            start,
            handed: start,
            freshness,
            deferred: None,
        }
    }

    /// Hands the rows of `views` over with `upper` (and `positions`): at once if the writer
    /// has room; else they go back to the buffers and wait for the next chance (a worker that
    /// waited for the writer stopped reading its input, and every record behind it was late),
    /// unless they have grown to [`HOLD_BYTES`], when the worker waits.
    fn hand_over(&mut self, upper: u64, views: Views, positions: String) -> Result<(), SinkError> {
        let bytes: usize = views.values().map(|v| v.rows.len()).sum();
        if bytes >= HOLD_BYTES {
            self.writer.send(upper, views, positions)?;
        } else if let Some((views, positions)) = self.writer.try_send(upper, views, positions)? {
            // `take` emptied the buffers just now and nothing completed since.
            *self.buffers.borrow_mut() = views;
            self.deferred = Some((upper, positions));
            return Ok(());
        }
        self.handed = upper;
        self.deferred = None;
        self.freshness.handed(self.worker, upper);
        Ok(())
    }

    fn take(&mut self, positions: &[InputPosition]) -> (Views, String) {
        let views = std::mem::take(&mut *self.buffers.borrow_mut());
        let positions: Vec<String> =
            positions.iter().map(|p| format!("{}:{}:{}", p.source, p.partition, p.next)).collect();
        (views, positions.join(";"))
    }
}

impl Sink for ClickHouseSink {
    fn export<'s, R: ViewRow>(&mut self, rows: VecCollection<'s, u64, R>) -> Written<'s> {
        clickhouse_sink(rows, &self.buffers, self.start)
    }

    /// Positions travel with each batch (see `advance`), not through the dataflow.
    fn complete<'s>(&mut self, written: Written<'s>, _positions: VecCollection<'s, u64, InputPosition>) -> Written<'s> {
        written
    }

    fn advance(
        &mut self,
        upper: Option<u64>,
        positions: &[InputPosition],
        produced: Vec<Live>,
    ) -> Result<(), SinkError> {
        self.freshness.complete(produced);
        match upper {
            Some(upper) if upper > self.handed => {
                let (views, positions) = self.take(positions);
                self.hand_over(upper, views, positions)
            }
            _ => Ok(()),
        }
    }

    /// Hands over rows the writer had no room for (called on every pass of the worker's
    /// loop); the writer's failures surface when a batch is handed over.
    fn check(&mut self) -> Result<(), SinkError> {
        match self.deferred.take() {
            Some((upper, positions)) => {
                let views = std::mem::take(&mut *self.buffers.borrow_mut());
                self.hand_over(upper, views, positions)
            }
            None => Ok(()),
        }
    }

    fn finish(mut self, upper: u64, positions: &[InputPosition]) -> Result<(), SinkError> {
        // Everything complete is buffered: hand it over with the run's upper and wait for it.
        let (views, positions) = self.take(positions);
        self.writer.finish(upper.max(self.handed), views, positions)
    }
}
