//! The ClickHouse sink: one change table per view (see `clickhouse::schema`), progress rows,
//! and so the committed cut (see `clickhouse::cut`).
//!
//! ```text
//!   view rows ─Exchange(hash of row)─► ChEncode(view): per completed time, consolidate and
//!                                       encode as TabSeparated rows into the worker's buffers
//!   worker loop: the probe passes f ──► Batch { rows per view, upper f } ──bounded channel──►
//!   writer thread (one per worker): coalesce (≥ 250 ms apart) ─► INSERT each view's rows ─►
//!   INSERT _progress (view, worker, upper f) ─► retry with backoff until both are in
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
//! A run reads the cut `C`, rebuilds its state by reading its sources from the beginning (the
//! Kafka clock bindings in `--out` make the times the same), skips every update before `C`
//! and writes the rest: what was already there is collapsed, nothing is lost.
//!
//! ## Back-pressure and outages
//!
//! See `writer`: two batches in flight at most, retries forever with backoff while running.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;

use dataflows::operators::in_time_order;
use dataflows::{Diff, Fields, ViewRow};
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Exchange;

use crate::clickhouse::Target;
use crate::sinks::encode::TsvFields;
use crate::sinks::freshness::Freshness;
use crate::sinks::{Sink, SinkError, Written};
use crate::sources::InputPosition;

pub mod writer;

use writer::{Batch, Writer};

/// A view's encoded rows not yet handed to the writer, and how many.
#[derive(Default)]
pub struct ViewRows {
    pub rows: Vec<u8>,
    pub count: u64,
}

/// What a worker's sink operators have encoded and not yet handed over, by view name.
pub type BuffersHandle = Rc<RefCell<BTreeMap<&'static str, ViewRows>>>;

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
    in_time_order(
        rows,
        Exchange::new(|u: &(R, u64, Diff)| fixed_hash(&u.0)),
        &format!("ChEncode({view})"),
        move |time: &u64, mut updates: Vec<(R, Diff)>, _emit: &mut dyn FnMut((), Diff)| {
            if *time < skip {
                return;
            }
            differential_dataflow::consolidation::consolidate(&mut updates);
            let mut buffers = buffers.borrow_mut();
            let buffer = buffers.entry(view).or_default();
            for (row, diff) in updates {
                let mut f = TsvFields::new(&mut buffer.rows);
                row.fields(&mut f);
                f.int(*time as i64);
                f.int(diff as i64);
                buffer.rows.push(b'\n');
                buffer.count += 1;
            }
        },
    )
    .inner
}

/// The ClickHouse sink of one worker: its sink operators' buffers and its writer thread.
pub struct ClickHouseSink {
    buffers: BuffersHandle,
    writer: Writer,
    /// Updates before this time are in the tables already (the run's starting cut).
    start: u64,
    /// The upper last handed to the writer.
    handed: u64,
    /// Where live records complete in the dataflow wait for the committed cut.
    freshness: Freshness,
}

impl ClickHouseSink {
    /// `start`: the committed cut the run starts from; `workers`: of all processes; the
    /// writer tells `freshness` each upper it records.
    pub fn new(
        target: &Target,
        worker: u32,
        workers: u32,
        start: u64,
        stop: &'static AtomicBool,
        freshness: Freshness,
    ) -> Self {
        let writer = Writer::spawn(target, worker, workers, start, stop, freshness.clone());
        ClickHouseSink { buffers: BuffersHandle::default(), writer, start, handed: start, freshness }
    }

    fn hand_over(&mut self, upper: u64, positions: &[InputPosition]) -> Result<(), SinkError> {
        let views = std::mem::take(&mut *self.buffers.borrow_mut());
        let positions: Vec<String> =
            positions.iter().map(|p| format!("{}:{}:{}", p.source, p.partition, p.next)).collect();
        self.writer.send(Batch { upper, views, positions: positions.join(";") })?;
        self.handed = upper;
        Ok(())
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
        produced: Vec<(u64, i64)>,
    ) -> Result<(), SinkError> {
        self.freshness.complete(produced);
        match upper {
            Some(upper) if upper > self.handed => self.hand_over(upper, positions),
            _ => Ok(()),
        }
    }

    /// The writer's failures surface when a batch is handed over.
    fn check(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn finish(mut self, upper: u64, positions: &[InputPosition]) -> Result<(), SinkError> {
        // Everything complete is buffered: hand it over with the run's upper and wait for it.
        if upper > self.handed {
            self.hand_over(upper, positions)?;
        }
        self.writer.finish()
    }
}
