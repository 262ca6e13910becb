//! The one place that wires sources → dataflows → sinks and steps a worker.
//!
//! ```text
//!   Source ──decode─┬─► chats ──► dataflows::chat::chat_views ────────┬─► CsvSink(word_counts) ──┐
//!  (files or Kafka) │     └─(--mention-edges)─┐                          ├─► CsvSink(…)            │
//!                   ├─► edges ───────────────┴─► network::network_views ─┼─► CsvSink(connections) ─┼─► probe ("written")
//!   --focus file ───┼─► focus ──────────────────┘                        │                         │
//!                   ├─► dead letters ────────────────────────────────────┴─► CsvSink(dead_letters) ─┤
//!                   └─► positions ───────────────────────────────────────────► Progress ◄───────────┘
//! ```
//!
//! Each worker reads its share of the inputs; the source gives every record its ingestion time
//! (see `sources::files` and `sources::kafka` for the rules) and tells how far the worker may
//! advance its inputs. A worker never has more than `max_inflight` records read but not yet
//! written, which bounds memory. Worker 0 measures the latency of each advance: from the
//! moment it closed a time's input to the moment the probe shows every view's changes for it
//! written; every worker measures the freshness of live records (produce → written).
//!
//! ## Stopping
//!
//! Every worker broadcasts its input time as it advances (a *notice*), and a final notice when
//! it stops reading: *stopped* (SIGINT/SIGTERM) or *exhausted*. An exhausted worker seals its
//! source at its end time at once (see `sources::kafka`: no later record can land below it)
//! and advances its inputs there, so what it read completes; while other workers still read,
//! it follows them, sealing again at the largest input time it has seen, so that it never
//! holds back the frontier another worker's back-pressure waits on. Once every worker's final
//! notice is in:
//! - if every source is exhausted, the largest of their times `E` is the run's *upper*: each
//!   worker seals at `E`, advances its inputs to `E` and closes them, and the workers step
//!   until everything is written;
//! - otherwise (a stop was asked for), the least input time is the upper: every update before
//!   it is complete, and the workers step until the probe passes it.
//!
//! Worker 0 records the upper, with the positions read, in `<out>/_progress.csv`: a `--resume`
//! run recomputes from the beginning of the log and appends only the changes at or after it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataflows::chat::{chat_views, ChatConfig};
use dataflows::network::{mention_edges as mention_edges_of, network_views, NetworkConfig};
use dataflows::{
    ChannelActivity, Chat, Connection, DeadLetter, Diff, EdgeOp, Name, Reach, TopConnection, TopUser, TopWord,
    UserCount, WordCount,
};
use differential_dataflow::input::{Input as _, InputSession};
use hdrhistogram::Histogram;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concatenate, Input as TimelyInput, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::profile::OperatorProfile;
use crate::sinks::clickhouse::{self, clickhouse_sink, Batch, Buffers, BuffersHandle, Target, Writer};
use crate::sinks::csv::{csv_sink, SinkHandle};
use crate::sinks::encode::ViewRow;
use crate::sinks::progress::{progress_writer, write_progress};
use crate::sources::decode::{dead_letter, decode, Event, MAX_RECORD_BYTES};
use crate::sources::files::Replay;
use crate::sources::kafka::{KafkaOptions, KafkaSource};
use crate::sources::{InputPosition, Record, Source};

/// Where a worker's input stands, as its notices tell the other workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum InputState {
    Reading,
    /// Told to stop: its input stays open at its time.
    Stopped,
    /// Its source is exhausted and sealed at its time.
    Exhausted,
}

/// Set by SIGINT/SIGTERM: workers stop reading, finish what is complete and exit.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Where a run's events come from.
#[derive(Clone, Debug)]
pub enum Input {
    /// Event JSONL files, `batch` lines per tick.
    Replay { files: Vec<PathBuf>, batch: u64 },
    /// Kafka topics (name, partition count).
    Kafka { options: KafkaOptions, topics: Vec<(String, usize)> },
}

/// What a pipeline run does, the same for every worker.
#[derive(Clone, Debug)]
pub struct Job {
    pub input: Input,
    pub out: PathBuf,
    pub chat: ChatConfig,
    pub network: NetworkConfig,
    /// Users for reach and top_connections; `None`: every user.
    pub focus: Option<Vec<String>>,
    /// Chat `@name` mentions add edges.
    pub mention_edges: bool,
    /// Records the input may run ahead of the written output.
    pub max_inflight: u64,
    /// Record time spent per operator (timely's scheduling log).
    pub profile: bool,
    /// Resuming a deployment: the change files hold every update before this time already.
    pub resume_upper: Option<u64>,
    /// Write to ClickHouse instead of change files.
    pub clickhouse: Option<ClickHouseJob>,
}

/// The ClickHouse sink of a run.
#[derive(Clone, Debug)]
pub struct ClickHouseJob {
    pub target: Target,
    /// The committed cut the run starts from: updates before it are in the tables already.
    pub start: u64,
    /// Workers of all processes.
    pub workers: u32,
}

/// Shared with the main thread for the progress bar.
#[derive(Default)]
pub struct Progress {
    /// Bytes of input read by the worker furthest ahead.
    pub bytes: AtomicU64,
    /// Workers of this process that have finished.
    pub finished: AtomicU64,
}

/// What one worker did.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub index: usize,
    /// Records (lines or Kafka messages) this worker read.
    pub records: u64,
    pub chats: u64,
    pub edges: u64,
    pub dead_letters: u64,
    /// Well-formed events of kinds no view consumes yet (posts, viewer counts).
    pub unrouted: u64,
    pub blank: u64,
    /// Times the worker advanced its inputs to.
    pub advances: u64,
    /// Whether the worker stopped on a signal rather than at the end of its input.
    pub interrupted: bool,
    /// Worker 0 only: latency per advance, in microseconds.
    pub latency_us: Option<Histogram<u64>>,
    /// Live records only: from produce (Kafka timestamp) to written, in microseconds.
    pub freshness_us: Option<Histogram<u64>>,
    /// Worker 0 only: rows written per view.
    pub rows_written: Vec<(&'static str, u64)>,
    /// Worker 0 only, with `profile`: seconds spent per operator, busiest first.
    pub operator_seconds: Vec<(String, f64)>,
    /// Worker 0 only: the run's upper (see the module doc).
    pub upper: Option<u64>,
}

/// The inputs a worker feeds.
struct Inputs {
    chats: InputSession<u64, Chat, Diff>,
    edges: InputSession<u64, (Name, Name), Diff>,
    dead: InputSession<u64, DeadLetter, Diff>,
    positions: InputSession<u64, InputPosition, Diff>,
}

impl Inputs {
    fn advance_to(&mut self, time: u64) {
        self.chats.advance_to(time);
        self.edges.advance_to(time);
        self.dead.advance_to(time);
        self.positions.advance_to(time);
        self.chats.flush();
        self.edges.flush();
        self.dead.flush();
        self.positions.flush();
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Builds the dataflow on `worker`, feeds it this worker's share of the inputs and steps it
/// until every view's changes are written (or a stop is complete).
pub fn run_worker(worker: &mut Worker, job: &Job, progress: &Progress) -> anyhow::Result<WorkerReport> {
    let index = worker.index();
    let peers = worker.peers();
    let probe = ProbeHandle::new();
    let out = job.out.clone();
    let chat_config = job.chat.clone();
    let network_config = job.network.clone();
    let (focus_given, mention_edges, resume) = (job.focus.is_some(), job.mention_edges, job.resume_upper);
    let profile = job.profile.then(|| OperatorProfile::install(worker));

    let ch_job = job.clickhouse.clone();
    let ch_buffers: BuffersHandle =
        Rc::new(RefCell::new(Buffers { views: vec![(Vec::new(), 0); clickhouse::views().len()] }));
    let (inputs, focus_in, sinks, progress_state) = worker.dataflow::<u64, _, _>(|scope| {
        let (chats_in, chats) = scope.new_collection::<Chat, Diff>();
        let (edges_in, mut edges) = scope.new_collection::<(Name, Name), Diff>();
        let (focus_in, focus) = scope.new_collection::<Name, Diff>();
        let (dead_in, dead) = scope.new_collection::<DeadLetter, Diff>();
        let (positions_in, positions) = scope.new_collection::<InputPosition, Diff>();
        if mention_edges {
            edges = edges.concat(mention_edges_of(chats.clone()));
        }
        let views = chat_views(chats, &chat_config);
        let network = network_views(edges, focus_given.then_some(focus), &network_config);

        let inputs = Inputs { chats: chats_in, edges: edges_in, dead: dead_in, positions: positions_in };
        if let Some(ch) = &ch_job {
            // The same order as `clickhouse::views()`: the index is the view's buffer.
            let (b, skip) = (&ch_buffers, ch.start);
            let written = vec![
                clickhouse_sink(views.word_counts, b, 0, skip),
                clickhouse_sink(views.channel_activity, b, 1, skip),
                clickhouse_sink(views.user_counts, b, 2, skip),
                clickhouse_sink(views.top_words, b, 3, skip),
                clickhouse_sink(views.top_users, b, 4, skip),
                clickhouse_sink(network.connections, b, 5, skip),
                clickhouse_sink(network.reach, b, 6, skip),
                clickhouse_sink(network.top_connections, b, 7, skip),
                clickhouse_sink(dead, b, 8, skip),
            ];
            scope.concatenate(written).probe_with(&probe);
            drop(positions);
            return (inputs, focus_in, Vec::new(), None);
        }
        let mut sinks: Vec<(&'static str, SinkHandle)> = Vec::new();
        let mut written = Vec::new();
        let mut sink = |stream_and_handle: (_, SinkHandle), view: &'static str| {
            written.push(stream_and_handle.0);
            sinks.push((view, stream_and_handle.1));
        };
        sink(csv_sink(views.word_counts, &out, resume), WordCount::VIEW);
        sink(csv_sink(views.channel_activity, &out, resume), ChannelActivity::VIEW);
        sink(csv_sink(views.user_counts, &out, resume), UserCount::VIEW);
        sink(csv_sink(views.top_words, &out, resume), TopWord::VIEW);
        sink(csv_sink(views.top_users, &out, resume), TopUser::VIEW);
        sink(csv_sink(network.connections, &out, resume), Connection::VIEW);
        sink(csv_sink(network.reach, &out, resume), Reach::VIEW);
        sink(csv_sink(network.top_connections, &out, resume), TopConnection::VIEW);
        sink(csv_sink(dead, &out, resume), DeadLetter::VIEW);
        let all_written = scope.concatenate(written);
        let (progress_stream, progress_state) = progress_writer(positions, all_written, &out);
        progress_stream.probe_with(&probe);
        (inputs, focus_in, sinks, Some(progress_state))
    });

    // Notices, seen by every worker: each worker's input time as it advances, then its final
    // state (stopped, or exhausted). All at timely time 0: they are read as they arrive.
    type Notice = (usize, u64, InputState);
    let notices: Rc<RefCell<HashMap<usize, (u64, InputState)>>> = Rc::default();
    let mut notice_in = InputHandle::<u64, CapacityContainerBuilder<Vec<Notice>>>::new();
    let seen = Rc::clone(&notices);
    worker.dataflow::<u64, _, _>(|scope| {
        scope.input_from(&mut notice_in).broadcast().inspect(move |(worker, time, state)| {
            let mut seen = seen.borrow_mut();
            let entry = seen.entry(*worker).or_insert((0, InputState::Reading));
            entry.0 = entry.0.max(*time);
            if *state != InputState::Reading {
                entry.1 = *state;
            }
        });
    });

    // The focus set is static: worker 0 enters it at time 0, then every worker closes it.
    let mut focus_in = focus_in;
    if index == 0 {
        for user in job.focus.iter().flatten() {
            focus_in.insert(Name::from(user.as_str()));
        }
    }
    drop(focus_in);
    let sink_error = |sinks: &[(&'static str, SinkHandle)]| sinks.iter().find_map(|(_, s)| s.borrow().error.clone());
    if let Some(e) = sink_error(&sinks) {
        anyhow::bail!(e);
    }

    let mut source: Box<dyn Source> = match &job.input {
        Input::Replay { files, batch } => Box::new(Replay::new(files.clone(), index, peers, *batch)),
        Input::Kafka { options, topics } => Box::new(KafkaSource::new(options, topics, index, peers)?),
    };
    let mut inputs = Some(inputs);
    let mut report = WorkerReport { index, ..Default::default() };
    let measure = index == 0;
    let mut latency = histogram();
    let mut freshness = histogram();
    // Times the inputs have advanced past, with when (latency) and how many records had been
    // read by then (back-pressure).
    let mut closed: VecDeque<(u64, Instant, u64)> = VecDeque::new();
    // Live records' produce times, by ingestion time.
    let mut produced: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    let mut input_time = 0u64;
    let mut read_done = 0u64;
    let mut last_positions: Vec<InputPosition> = Vec::new();
    let mut last_log = Instant::now();
    // ClickHouse: the writer, the upper last handed to it, and the produce times of records
    // complete but not yet handed over (their freshness is measured when they are recorded).
    let mut writer =
        job.clickhouse.as_ref().map(|ch| Writer::spawn(&ch.target, index as u32, ch.workers, ch.start, &STOP));
    let mut handed = job.clickhouse.as_ref().map_or(0, |ch| ch.start);
    let mut deferred: Option<Vec<i64>> = writer.as_ref().map(|_| Vec::new());
    let hand_over = |writer: &mut Option<Writer>,
                     handed: &mut u64,
                     deferred: &mut Option<Vec<i64>>,
                     upper: Option<u64>,
                     source: &dyn Source|
     -> anyhow::Result<()> {
        let Some(writer) = writer.as_mut() else { return Ok(()) };
        let upper = upper.or_else(|| probe.with_frontier(|f| f.first().copied()));
        let Some(upper) = upper.filter(|u| *u > *handed) else { return Ok(()) };
        let views =
            ch_buffers.borrow_mut().views.iter_mut().map(|(b, n)| (std::mem::take(b), std::mem::take(n))).collect();
        let positions: Vec<String> =
            source.positions().iter().map(|p| format!("{}:{}:{}", p.source, p.partition, p.next)).collect();
        let produced = deferred.as_mut().map(std::mem::take).unwrap_or_default();
        writer.send(Batch { upper, views, produced, positions: positions.join(";") })?;
        *handed = upper;
        Ok(())
    };

    let observe = |closed: &mut VecDeque<(u64, Instant, u64)>,
                   produced: &mut BTreeMap<u64, Vec<i64>>,
                   latency: &mut Histogram<u64>,
                   freshness: &mut Histogram<u64>,
                   read_done: &mut u64,
                   deferred: &mut Option<Vec<i64>>| {
        let frontier = probe.with_frontier(|f| f.first().copied());
        let done = |t: u64| frontier.is_none_or(|f| f > t);
        while let Some(&(time, at, read)) = closed.front() {
            if !done(time) {
                break;
            }
            if measure {
                latency.saturating_record(at.elapsed().as_micros().max(1) as u64);
            }
            *read_done = read;
            closed.pop_front();
        }
        while let Some(entry) = produced.first_entry() {
            if !done(*entry.key()) {
                break;
            }
            let now = now_ms();
            match deferred.as_mut() {
                Some(deferred) => deferred.extend(entry.remove()),
                None => {
                    for p in entry.remove() {
                        freshness.saturating_record(((now - p).max(0) as u64 * 1000).max(1));
                    }
                }
            }
        }
    };

    // Read until the source is exhausted or a stop is requested.
    loop {
        if STOP.load(Ordering::Relaxed) {
            report.interrupted = true;
            break;
        }
        observe(&mut closed, &mut produced, &mut latency, &mut freshness, &mut read_done, &mut deferred);
        hand_over(&mut writer, &mut handed, &mut deferred, None, &*source)?;
        // Back-pressure: wait while too many records are in flight, but only while the dataflow
        // still has work it can finish. Records at times the inputs have not closed yet (one
        // Kafka partition ahead of another) cannot complete before more is read; waiting for
        // them would deadlock.
        if report.records - read_done > job.max_inflight && probe.less_than(&input_time) {
            worker.step_or_park(Some(Duration::from_millis(1)));
            continue;
        }
        let before = report.records;
        let ins = inputs.as_mut().expect("inputs are open while reading");
        source.read(4096, &mut |record: Record| {
            route(record, ins, &mut report, input_time, &mut produced);
        })?;
        progress.bytes.fetch_max(source.bytes_read(), Ordering::Relaxed);
        match source.frontier() {
            Some(time) if time > input_time => {
                let positions = source.positions();
                if positions != last_positions {
                    for position in &positions {
                        ins.positions.update_at(position.clone(), input_time, 1);
                    }
                    last_positions = positions;
                }
                closed.push_back((input_time, Instant::now(), report.records));
                ins.advance_to(time);
                input_time = time;
                report.advances += 1;
                notice_in.send((index, input_time, InputState::Reading));
                notice_in.flush();
            }
            Some(_) => {}
            None => break,
        }
        let idle = report.records == before;
        if last_log.elapsed() >= Duration::from_secs(2) {
            tracing::debug!(worker = index, records = report.records, input_time, frontier = ?source.frontier(), "reading");
            last_log = Instant::now();
        }
        worker.step_or_park(Some(if idle { Duration::from_millis(1) } else { Duration::ZERO }));
        if let Some(e) = sink_error(&sinks) {
            anyhow::bail!(e);
        }
    }

    // Stop: record where this worker's input stopped, close it if exhausted, and wait for the
    // upper (the least of all workers' stop times) to be written.
    if let Some(ins) = inputs.as_mut() {
        for position in source.positions() {
            ins.positions.update_at(position, input_time, 1);
        }
        ins.positions.flush();
    }
    // An exhausted source is sealed at once at its own end, so that the records it gave
    // complete; while others still read, it follows them (sealing again at their input time),
    // so that it never holds back the frontier they wait on.
    let exhausted = !report.interrupted;
    let seal_at = |time: u64, source: &mut Box<dyn Source>, inputs: &mut Option<Inputs>| -> anyhow::Result<()> {
        source.seal(time)?;
        if let Some(ins) = inputs.as_mut() {
            ins.advance_to(time);
        }
        Ok(())
    };
    if exhausted {
        input_time = source.end_time().max(input_time);
        seal_at(input_time, &mut source, &mut inputs)?;
    }
    let state = if exhausted { InputState::Exhausted } else { InputState::Stopped };
    notice_in.send((index, input_time, state));
    notice_in.flush();
    closed.push_back((input_time, Instant::now(), report.records));
    let mut upper = None;
    let mut sealed = false;
    let mut last_follow = Instant::now();
    let upper = loop {
        worker.step_or_park(Some(Duration::from_millis(1)));
        observe(&mut closed, &mut produced, &mut latency, &mut freshness, &mut read_done, &mut deferred);
        hand_over(&mut writer, &mut handed, &mut deferred, None, &*source)?;
        if let Some(e) = sink_error(&sinks) {
            anyhow::bail!(e);
        }
        let all_final = {
            let notices = notices.borrow();
            notices.len() == peers && notices.values().all(|(_, state)| *state != InputState::Reading)
        };
        if upper.is_none() && !all_final && exhausted && last_follow.elapsed() >= Duration::from_millis(50) {
            let ahead = notices.borrow().values().map(|(time, _)| *time).max().unwrap_or(0);
            if ahead > input_time {
                input_time = ahead;
                seal_at(input_time, &mut source, &mut inputs)?;
                notice_in.send((index, input_time, InputState::Exhausted));
                notice_in.flush();
                last_follow = Instant::now();
            }
        }
        if upper.is_none() && all_final {
            let notices = notices.borrow();
            upper = Some(if notices.values().all(|(_, state)| *state == InputState::Exhausted) {
                // Every source is exhausted: seal at the largest end, then close.
                let end = notices.values().map(|(time, _)| *time).max().expect("peers > 0").max(input_time);
                seal_at(end, &mut source, &mut inputs)?;
                inputs = None;
                sealed = true;
                end
            } else {
                notices.values().map(|(time, _)| *time).min().expect("peers > 0")
            });
        }
        if let Some(upper) = upper {
            // A stopped run needs only what is before the upper; an exhausted one waits for
            // everything, so the summary counts every row written.
            if probe.done() || (!sealed && !probe.less_than(&upper)) {
                break upper;
            }
        }
    };
    drop(inputs);
    notice_in.advance_to(1);
    drop(notice_in);

    tracing::info!(
        worker = index,
        records = report.records,
        chats = report.chats,
        edges = report.edges,
        dead_letters = report.dead_letters,
        upper,
        interrupted = report.interrupted,
        "worker finished"
    );
    if let Some(mut w) = writer.take() {
        // Everything complete is buffered: hand it over with the run's upper and wait for it.
        let last = if probe.done() { upper } else { probe.with_frontier(|f| f.first().copied()).unwrap_or(upper) };
        let mut open = Some(w);
        let last = last.max(handed);
        hand_over(&mut open, &mut handed, &mut deferred, Some(last), &*source)?;
        w = open.expect("still open");
        let written = w.finish()?;
        report.rows_written = clickhouse::views().iter().map(|v| v.name).zip(written.rows).collect();
        freshness = written.freshness_us;
    }
    if index == 0 {
        if let Some(state) = &progress_state {
            write_progress(state, &out, upper)?;
            report.rows_written = sinks.iter().map(|(view, s)| (*view, s.borrow().rows_written)).collect();
        }
        report.upper = Some(upper);
        report.latency_us = Some(latency);
        report.operator_seconds = profile.map(|p| p.seconds()).unwrap_or_default();
    }
    report.freshness_us = Some(freshness);
    Ok(report)
}

/// Decodes a record and enters it into the inputs at its time.
fn route(
    record: Record,
    inputs: &mut Inputs,
    report: &mut WorkerReport,
    input_time: u64,
    produced: &mut BTreeMap<u64, Vec<i64>>,
) {
    report.records += 1;
    // A source never gives a time below its frontier; the max only guards the invariant.
    let time = record.time.max(input_time);
    let position = record.position.to_string();
    let Some(bytes) = record.bytes else {
        inputs.dead.update_at(dead_letter(record.source, position, "record has no payload".into(), b""), time, 1);
        report.dead_letters += 1;
        return;
    };
    if let Some(length) = record.oversized {
        let error = format!("record of {length} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes");
        inputs.dead.update_at(dead_letter(record.source, position, error, bytes), time, 1);
        report.dead_letters += 1;
        return;
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        report.blank += 1;
        return;
    }
    match decode(bytes) {
        Ok(Event::Chat(chat)) => {
            inputs.chats.update_at(chat, time, 1);
            report.chats += 1;
        }
        Ok(Event::Edge(edge)) => {
            let sign = if edge.op == EdgeOp::Del { -1 } else { 1 };
            inputs.edges.update_at((edge.src, edge.dst), time, sign * edge.weight as Diff);
            report.edges += 1;
        }
        Ok(_) => report.unrouted += 1,
        Err(error) => {
            inputs.dead.update_at(dead_letter(record.source, position, error, bytes), time, 1);
            report.dead_letters += 1;
        }
    }
    // Freshness is measured for live records only (produced within the last ten minutes).
    if let Some(p) = record.produced_ms {
        if now_ms() - p < 600_000 {
            produced.entry(time).or_default().push(p);
        }
    }
}
