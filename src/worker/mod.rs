//! The one place that wires sources → dataflows → sinks and steps a worker.
//!
//! ```text
//!   Source ──route (decode)─┬─► chats ───────┐
//!  (files or Kafka)         ├─► posts ───────┤
//!                           ├─► viewers ─────┤
//!                           ├─► edges ───────┤
//!   --focus file ───────────┼─► focus ───────┼─► dataflows::all_views ─export─► Sink (CSV or ClickHouse) ─► probe
//!                           ├─► dead letters ┘                                   ▲
//!                           └─► positions ───────────────────────────────────────┘
//! ```
//!
//! Each worker reads its share of the inputs; the source gives every record its ingestion time
//! (see `sources::files` and `sources::kafka` for the rules) and tells how far the worker may
//! advance its inputs. A worker never has more than `max_inflight` records read but not yet
//! written, which bounds memory. As the probe passes times, the worker tells the sink
//! (`Sink::advance`), which makes them durable. `measure` measures latency and freshness;
//! `stop` is how the workers of a run stop together and agree on its upper; `route` decodes
//! records into the inputs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::rc::Rc;

use dataflows::horizon::{Held, Horizon};
use dataflows::{Chat, DeadLetter, Diff, Name, Post, Viewers};
use differential_dataflow::input::{Input as _, InputSession};
use hdrhistogram::Histogram;
use timely::dataflow::operators::Probe;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use crate::clickhouse::Target;
use crate::profile::OperatorProfile;
use crate::sinks::clickhouse::ClickHouseSink;
use crate::sinks::csv::CsvSink;
use crate::sinks::freshness::Freshness;
use crate::sinks::{Exports, Sink, SinkError};
use crate::sources::files::{Pace, Replay};
use crate::sources::kafka::{KafkaOptions, KafkaSource};
use crate::sources::{InputPosition, Record, Source, SourceError};

pub mod checkpoint;
mod measure;
mod route;
mod stop;

use checkpoint::{CheckpointJob, Checkpointer, Phase, Saved};
use measure::Measure;
use route::{Inputs, Marks, Router};
use stop::{InputState, Notices};

/// Set by SIGINT/SIGTERM: workers stop reading, finish what is complete and exit.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Where a run's events come from.
#[derive(Clone, Debug)]
pub enum Input {
    /// Event JSONL files, `batch` lines per tick, released at a pace or as fast as read.
    Replay { files: Vec<PathBuf>, batch: u64, pace: Option<Pace> },
    /// Kafka topics (name, partition count).
    Kafka { options: KafkaOptions, topics: Vec<(String, usize)> },
}

impl Input {
    /// The sources' names as records carry them, in an order every worker and process shares.
    pub fn sources(&self) -> Vec<String> {
        match self {
            Input::Replay { files, .. } => files.iter().map(|f| f.display().to_string()).collect(),
            Input::Kafka { topics, .. } => topics.iter().map(|(topic, _)| topic.clone()).collect(),
        }
    }
}

/// What a pipeline run does, the same for every worker.
#[derive(Clone, Debug)]
pub struct Job {
    pub input: Input,
    pub out: PathBuf,
    pub views: dataflows::Config,
    /// Users for reach and top_connections; `None`: every user.
    pub focus: Option<Vec<String>>,
    /// Records the input may run ahead of the written output.
    pub max_inflight: u64,
    /// Record time spent per operator (timely's scheduling log).
    pub profile: bool,
    /// Resuming a deployment: the change files hold every update before this time already.
    pub resume_upper: Option<u64>,
    /// Write to ClickHouse instead of change files.
    pub clickhouse: Option<ClickHouseJob>,
    /// Live records' freshness at the committed cut, for this process.
    pub freshness: Freshness,
    /// Checkpoints to take, and the one to resume from (see `checkpoint`).
    pub checkpoint: Option<CheckpointJob>,
}

/// The ClickHouse sink of a run.
#[derive(Clone, Debug)]
pub struct ClickHouseJob {
    pub target: Target,
    /// The committed cut the run starts from: updates before it are in the tables already.
    pub start: u64,
    /// Workers of all processes.
    pub workers: u32,
    /// This process's writer.
    pub writer: crate::sinks::clickhouse::Writer,
}

/// Shared with the main thread for the progress bar.
#[derive(Default)]
pub struct Progress {
    /// Bytes of input read by the worker furthest ahead.
    pub bytes: AtomicU64,
    /// Workers of this process that have finished.
    pub finished: AtomicU64,
    /// Records read by this process's workers.
    pub records: AtomicU64,
}

/// What one worker did. Counts of events, dead letters and rows are in the metrics registry.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub index: usize,
    /// Records (lines or Kafka messages) this worker read.
    pub records: u64,
    /// Times the worker advanced its inputs to.
    pub advances: u64,
    /// Whether the worker stopped on a signal rather than at the end of its input.
    pub interrupted: bool,
    /// Worker 0 only: latency per advance, in microseconds.
    pub latency_us: Option<Histogram<u64>>,
    /// With `profile`: seconds this worker spent per operator, busiest first.
    pub operator_seconds: Vec<(String, f64)>,
    /// Worker 0 only: the run's upper (see `stop`).
    pub upper: Option<u64>,
    /// With `--retention`: per windowed operator, the windows this worker holds at the end
    /// and has dropped.
    pub held: Vec<(String, Held)>,
}

/// Why a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Exports(#[from] crate::sinks::ExportError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
}

impl From<dataflows::checkpoint::CheckpointError> for WorkerError {
    fn from(e: dataflows::checkpoint::CheckpointError) -> Self {
        WorkerError::Checkpoint(e.into())
    }
}

/// Builds the dataflow on `worker`, feeds it this worker's share of the inputs and steps it
/// until every view's changes are written (or a stop is complete).
pub fn run_worker(worker: &mut Worker, job: &Job, progress: &Progress) -> Result<WorkerReport, WorkerError> {
    match &job.clickhouse {
        Some(ch) => {
            let index = worker.index() as u32;
            let sink = ClickHouseSink::new(&ch.writer, index, ch.start, job.freshness.clone());
            run_with(worker, job, progress, sink)
        }
        None => run_with(worker, job, progress, CsvSink::new(&job.out, job.resume_upper, job.freshness.clone())),
    }
}

/// A worker at work: what its read and stop loops share.
struct Running<S: Sink> {
    index: usize,
    probe: ProbeHandle<u64>,
    /// Open while reading (closed once the run is sealed).
    inputs: Option<Inputs>,
    router: Router,
    source: Box<dyn Source>,
    sink: S,
    measure: Measure,
    notices: Notices,
    report: WorkerReport,
    /// The time the inputs are at.
    input_time: u64,
    /// The probe frontier the sink was last told of.
    told: Option<Option<u64>>,
    /// With `--retention`: what the windowed operators hold.
    horizon: Option<Rc<Horizon<u64>>>,
    /// With checkpoints: this worker's part in them, and the stamps it noted.
    checkpointer: Option<Checkpointer>,
    marks: Option<Rc<std::cell::RefCell<Marks>>>,
    out: PathBuf,
    freshness: Freshness,
}

fn run_with<S: Sink>(
    worker: &mut Worker,
    job: &Job,
    progress: &Progress,
    mut sink: S,
) -> Result<WorkerReport, WorkerError> {
    let index = worker.index();
    let profile = job.profile.then(|| OperatorProfile::install(worker));
    let probe = ProbeHandle::new();
    // A resumed run starts from its checkpoint's state (each operator finds its own while
    // the dataflow is built) and positions.
    let (restored, states) = match job.checkpoint.as_ref().and_then(|c| c.restore) {
        Some(time) => {
            if let Some(target) = job.checkpoint.as_ref().and_then(|c| c.store.as_ref()) {
                checkpoint::fetch(&job.out, time, index as u32, target)?;
            }
            let (saved, states) = checkpoint::read_worker(&job.out, time, index as u32)?;
            (Some(saved), Some(states))
        }
        None => (None, None),
    };
    let registry = dataflows::checkpoint::install(states);
    let built = build(worker, job, &mut sink, &probe);
    dataflows::checkpoint::uninstall(&registry)?;
    let (mut inputs, mut focus, horizon) = built?;
    let notices = Notices::build(worker);
    // The focus set is static: worker 0 enters it at time 0, then every worker closes it. (A
    // restored checkpoint holds it already.)
    if index == 0 && restored.is_none() {
        for user in job.focus.iter().flatten() {
            focus.insert(Name::from(user.as_str()));
        }
    }
    drop(focus);
    sink.check()?;
    let resume = restored.as_ref().map(|s| s.resume.as_slice()).unwrap_or_default();
    let mut source: Box<dyn Source> = match &job.input {
        Input::Replay { files, batch, pace } => {
            let mut replay = Replay::new(files.clone(), index, worker.peers(), *batch, pace.clone());
            replay.resume(resume)?;
            Box::new(replay)
        }
        Input::Kafka { options, topics } => {
            let mut kafka = KafkaSource::new(options, topics, index, worker.peers(), resume)?;
            if job.checkpoint.is_some() {
                kafka.track_positions();
            }
            Box::new(kafka)
        }
    };
    let marks = job
        .checkpoint
        .as_ref()
        .map(|_| Rc::new(std::cell::RefCell::new(Marks::new(restored.as_ref().and_then(|s| s.stamp)))));
    inputs.marks = marks.clone();
    let mut input_time = 0;
    if let Some(saved) = &restored {
        // The watermark goes on from the stamps before the checkpoint; then every input
        // starts at its time.
        if let (Some(stamp), true) = (saved.stamp, inputs.stamping) {
            inputs.stamps.update_at(stamp, 0, 1);
        }
        inputs.advance_to(saved.time);
        input_time = saved.time;
        source.forget_before(saved.time);
        tracing::info!(worker = index, time = saved.time, positions = ?saved.resume, "resuming from a checkpoint");
    }
    let mut running = Running {
        index,
        probe,
        inputs: Some(inputs),
        router: Router::new(index, job.input.sources()),
        horizon,
        source,
        sink,
        measure: Measure::new(index),
        notices,
        report: WorkerReport { index, ..Default::default() },
        input_time,
        told: None,
        checkpointer: job.checkpoint.clone().map(|c| Checkpointer::new(c, registry)),
        marks,
        out: job.out.clone(),
        freshness: job.freshness.clone(),
    };
    running.read(worker, job.max_inflight, progress)?;
    let (upper, exhausted) = running.stop(worker)?;
    // The last checkpoint, unless the run read all of its files: resuming it has nothing to
    // read (a Kafka run that caught up goes on from there; a stopped run, from its upper).
    let last_checkpoint = running.checkpointer.is_some() && !(exhausted && matches!(job.input, Input::Replay { .. }));
    running.finish(worker, upper, last_checkpoint, profile)
}

/// Builds the views' dataflow: its inputs, exported to `sink`, probed by `probe`. Returns the
/// inputs and the focus input.
fn build<S: Sink>(
    worker: &mut Worker,
    job: &Job,
    sink: &mut S,
    probe: &ProbeHandle<u64>,
) -> Result<(Inputs, InputSession<u64, Name, Diff>, Option<Rc<Horizon<u64>>>), WorkerError> {
    worker.dataflow::<u64, _, _>(|scope| {
        let (chats_in, chats) = scope.new_collection::<Chat, Diff>();
        let (posts_in, posts) = scope.new_collection::<Post, Diff>();
        let (viewers_in, viewers) = scope.new_collection::<Viewers, Diff>();
        let (edges_in, edges) = scope.new_collection::<(Name, Name), Diff>();
        let (focus_in, focus) = scope.new_collection::<Name, Diff>();
        let (dead_in, dead_letters) = scope.new_collection::<DeadLetter, Diff>();
        let (positions_in, positions) = scope.new_collection::<InputPosition, Diff>();
        let (stamps_in, stamps) = scope.new_collection::<i64, Diff>();
        let focus = job.focus.is_some().then_some(focus);
        let inputs = dataflows::Inputs { chats, posts, viewers, edges, focus, dead_letters, stamps };
        let mut exports = Exports::new(sink);
        let horizon = dataflows::all_views(inputs, &job.views, &mut exports);
        exports.finish(positions)?.probe_with(probe);
        let inputs = Inputs {
            chats: chats_in,
            posts: posts_in,
            viewers: viewers_in,
            edges: edges_in,
            dead: dead_in,
            positions: positions_in,
            stamps: stamps_in,
            pending_stamps: Vec::new(),
            stamping: job.views.retention.is_some(),
            marks: None,
        };
        Ok((inputs, focus_in, horizon))
    })
}

impl<S: Sink> Running<S> {
    /// Measures what the probe shows complete and tells the sink when it moved.
    fn observe(&mut self) -> Result<(), WorkerError> {
        let frontier = self.probe.with_frontier(|f| f.first().copied());
        let produced = self.measure.observe(frontier);
        if self.told != Some(frontier) || !produced.is_empty() {
            self.sink.advance(frontier, &self.source.positions(), produced)?;
            self.told = Some(frontier);
            // No checkpoint can be at a time the probe has passed (every worker's input is
            // at or past it): what is kept for earlier times goes.
            if let (Some(time), true) = (frontier, self.checkpointer.is_some()) {
                self.source.forget_before(time);
                if let Some(marks) = &self.marks {
                    marks.borrow_mut().before(time);
                }
            }
            for (operator, held) in self.horizon.iter().flat_map(|h| h.held()) {
                crate::metrics::windows_held(self.index, &operator, &held);
            }
        }
        self.sink.check()?;
        Ok(())
    }

    /// Reads until the source is exhausted or a stop is requested.
    fn read(&mut self, worker: &mut Worker, max_inflight: u64, progress: &Progress) -> Result<(), WorkerError> {
        let mut last_log = Instant::now();
        loop {
            if STOP.load(Ordering::Relaxed) {
                self.report.interrupted = true;
                return Ok(());
            }
            self.observe()?;
            // A checkpoint round may hold the input at a time.
            let hold = self.checkpoint_step()?;
            // Back-pressure: wait while too many records are in flight, but only while the
            // dataflow still has work it can finish. Records at times the inputs have not
            // closed yet (one Kafka partition ahead of another) cannot complete before more is
            // read; waiting for them would deadlock.
            if self.measure.in_flight(self.report.records) > max_inflight && self.probe.less_than(&self.input_time) {
                worker.step_or_park(Some(Duration::from_millis(1)));
                continue;
            }
            let before = self.report.records;
            self.read_some()?;
            progress.bytes.fetch_max(self.source.bytes_read(), Ordering::Relaxed);
            progress.records.fetch_add(self.report.records - before, Ordering::Relaxed);
            match self.source.frontier().map(|time| time.min(hold)) {
                Some(time) if time > self.input_time => {
                    let inputs = self.inputs.as_mut().expect("inputs are open while reading");
                    // At every advance, moved or not: the progress record's upper follows
                    // the times these updates are at, so an idle input's cut moves on too.
                    for position in self.source.positions() {
                        inputs.positions.update_at(position, self.input_time, 1);
                    }
                    self.measure.closed(self.input_time, self.report.records);
                    inputs.advance_to(time);
                    self.input_time = time;
                    self.report.advances += 1;
                    self.notices.send(time, InputState::Reading);
                }
                Some(_) => {}
                None => return Ok(()),
            }
            if last_log.elapsed() >= Duration::from_secs(2) {
                let (worker, records, input_time) = (self.index, self.report.records, self.input_time);
                tracing::debug!(worker, records, input_time, frontier = ?self.source.frontier(), "reading");
                last_log = Instant::now();
            }
            let idle = self.report.records == before;
            worker.step_or_park(Some(if idle { Duration::from_millis(1) } else { Duration::ZERO }));
        }
    }

    /// Reads what the source has ready into the inputs.
    fn read_some(&mut self) -> Result<(), WorkerError> {
        let Running { source, inputs, router, measure, report, input_time, .. } = self;
        let inputs = inputs.as_mut().expect("inputs are open while reading");
        source.read(4096, &mut |record: Record| {
            report.records += 1;
            if router.route(&record, inputs, *input_time) {
                if let Some(produced) = record.produced_ms {
                    measure.produced(record.time.max(*input_time), produced);
                }
            }
        })?;
        router.flush();
        Ok(())
    }

    /// Closes the run: the sink makes everything before `upper` durable, every worker waits
    /// for the others' sinks (see `stop`), and the report.
    fn finish(
        mut self,
        worker: &mut Worker,
        upper: u64,
        last_checkpoint: bool,
        profile: Option<OperatorProfile>,
    ) -> Result<WorkerReport, WorkerError> {
        // The sink learns the last frontier, then makes everything before the upper durable.
        self.observe()?;
        // The last checkpoint: every time before the upper is processed, none at or after it
        // (see `stop`); it is complete once every sink has finished.
        if last_checkpoint {
            self.save_checkpoint(upper)?;
        }
        let positions = self.source.positions();
        self.sink.finish(upper, &positions)?;
        let out = self.out.clone();
        let store = self.checkpointer.as_ref().and_then(|c| c.job.store.clone());
        let Running { notices, mut report, inputs, measure, horizon, .. } = self;
        report.held = horizon.map(|h| h.held()).unwrap_or_default();
        // Only now may the inputs close (see `stop`).
        let peers = notices.peers() as u32;
        notices.finish(worker, upper);
        if last_checkpoint && report.index == 0 {
            checkpoint::complete(&out, store.as_ref(), upper, peers)?;
            tracing::info!(time = upper, "checkpoint complete (the run's end)");
        }
        drop(inputs);
        let (index, records, interrupted) = (report.index, report.records, report.interrupted);
        tracing::info!(worker = index, records, upper, interrupted, "worker finished");
        if index == 0 {
            report.upper = Some(upper);
            report.latency_us = Some(measure.latency_us);
        }
        report.operator_seconds = profile.map(|p| p.seconds()).unwrap_or_default();
        Ok(report)
    }
}

impl<S: Sink> Running<S> {
    /// Saves this worker's state at `time`: every time before it is processed, none after.
    fn save_checkpoint(&mut self, time: u64) -> Result<(), WorkerError> {
        let began = Instant::now();
        let cp = self.checkpointer.as_ref().expect("checkpoints are on");
        let saved = Saved {
            time,
            worker: self.index as u32,
            workers: self.notices.peers() as u32,
            stamp: self.marks.as_ref().and_then(|m| m.borrow_mut().before(time)),
            resume: self.source.resume_at(time),
        };
        let bytes = checkpoint::write_worker(&self.out, &saved, &cp.registry)?;
        if let Some(target) = &cp.job.store {
            checkpoint::upload(&self.out, time, saved.worker, target)?;
        }
        let ms = began.elapsed().as_secs_f64() * 1000.0;
        crate::metrics::checkpoint_saved(self.index, bytes, ms);
        tracing::info!(worker = self.index, time, bytes, ms, "checkpoint saved");
        Ok(())
    }

    /// Takes this worker's part in a checkpoint round (see `checkpoint`); returns the time its
    /// input may not pass now (`u64::MAX`: none).
    fn checkpoint_step(&mut self) -> Result<u64, WorkerError> {
        let Some(cp) = self.checkpointer.as_mut() else { return Ok(u64::MAX) };
        let peers = self.notices.peers();
        if self.index == 0 && cp.phase == Phase::Idle {
            let due = cp.job.interval.is_some_and(|every| cp.last.elapsed() >= every);
            let asked = self.notices.rounds.borrow().range(cp.round + 1..).any(|(_, r)| r.asked);
            if due && !asked {
                self.notices.send(self.input_time, InputState::Pause(cp.round + 1));
            }
        }
        let abandon = self.notices.any_final();
        if abandon {
            // No round completes once a worker has stopped reading; the end takes the last.
            cp.completing.clear();
        }
        match cp.phase {
            Phase::Idle => {
                if self.index != 0 {
                    // Worker 0 forgets the rounds it completes; the others, those they are done with.
                    self.notices.rounds.borrow_mut().retain(|r, _| *r > cp.round);
                }
                let next = self.notices.rounds.borrow().range(cp.round + 1..).find(|(_, r)| r.asked).map(|(r, _)| *r);
                if let Some(round) = next.filter(|_| !abandon) {
                    cp.round = round;
                    cp.phase = Phase::Paused(round);
                    self.notices.send(self.input_time, InputState::Paused(round));
                }
            }
            Phase::Paused(_) | Phase::Agreed(..) if abandon => {
                cp.phase = Phase::Idle;
                cp.last = Instant::now();
            }
            Phase::Paused(round) => {
                let rounds = self.notices.rounds.borrow();
                let paused = rounds.get(&round).map(|r| &r.paused);
                if let Some(times) = paused.filter(|p| p.len() == peers) {
                    let time = times.values().copied().max().expect("peers > 0");
                    cp.phase = Phase::Agreed(round, time);
                }
            }
            Phase::Agreed(round, time) => {
                if self.input_time == time && !self.probe.less_than(&time) {
                    self.save_checkpoint(time)?;
                    let cp = self.checkpointer.as_mut().expect("checkpoints are on");
                    cp.phase = Phase::Durable(round, time);
                }
            }
            Phase::Durable(round, time) => {
                if self.freshness.cut().is_some_and(|cut| cut >= time) {
                    self.notices.send(time, InputState::Saved(round));
                    self.source.forget_before(time);
                    let cp = self.checkpointer.as_mut().expect("checkpoints are on");
                    cp.phase = Phase::Idle;
                    cp.last = Instant::now();
                    if self.index == 0 {
                        cp.completing.push((round, time));
                    }
                }
            }
        }
        let cp = self.checkpointer.as_mut().expect("checkpoints are on");
        // Worker 0 marks a round complete once every worker has saved it.
        while let Some(&(round, time)) = cp.completing.first() {
            let done = self.notices.rounds.borrow().get(&round).is_some_and(|r| r.saved.len() == peers);
            if !done {
                break;
            }
            checkpoint::complete(&self.out, cp.job.store.as_ref(), time, peers as u32)?;
            tracing::info!(round, time, "checkpoint complete");
            cp.completing.remove(0);
            self.notices.rounds.borrow_mut().retain(|r, _| *r > round);
        }
        Ok(match cp.phase {
            Phase::Paused(_) => self.input_time,
            Phase::Agreed(_, time) => time,
            Phase::Idle | Phase::Durable(..) => u64::MAX,
        })
    }
}
