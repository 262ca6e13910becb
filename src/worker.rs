//! The one place that wires sources → dataflows → sinks and steps a worker.
//!
//! ```text
//!   FileSource ─decode─┬─► chats ──► dataflows::chat::chat_views ────────┬─► CsvSink(word_counts) ──┐
//!                      │     └─(--mention-edges)─┐                          ├─► CsvSink(…)            │
//!                      ├─► edges ───────────────┴─► network::network_views ─┼─► CsvSink(connections) ─┼─► probe ("written")
//!   --focus file ──────┴─► focus ──────────────────┘                        │                         │
//!                      └─► dead letters ────────────────────────────────────┴─► CsvSink(dead_letters) ─┘
//! ```
//!
//! Each worker reads its share of the input log (see `sources::files` for the time rule),
//! advances its inputs tick by tick and steps the dataflow. It never runs more than
//! `max_inflight` lines ahead of the probe, which bounds memory. Worker 0 measures the latency of
//! each tick: from the moment it closed the tick's input to the moment the probe shows every
//! view's changes for that tick written to their files.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dataflows::chat::{chat_views, ChatConfig};
use dataflows::network::{mention_edges as mention_edges_of, network_views, NetworkConfig};
use dataflows::{
    ChannelActivity, Chat, Connection, DeadLetter, Diff, EdgeOp, Name, Reach, TopConnection, TopUser, TopWord,
    UserCount, WordCount,
};
use differential_dataflow::input::Input;
use hdrhistogram::Histogram;
use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use crate::profile::OperatorProfile;
use crate::sinks::csv::{csv_sink, SinkHandle};
use crate::sinks::encode::ViewRow;
use crate::sources::decode::{dead_letter, decode, Event, MAX_RECORD_BYTES};
use crate::sources::files::{FileSource, Line};

/// What a pipeline run does, the same for every worker.
#[derive(Clone, Debug)]
pub struct Job {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub chat: ChatConfig,
    pub network: NetworkConfig,
    /// Users for reach and top_connections; `None`: every user.
    pub focus: Option<Vec<String>>,
    /// Chat `@name` mentions add edges.
    pub mention_edges: bool,
    /// Input lines per tick.
    pub batch: u64,
    /// Lines the input may run ahead of the written output.
    pub max_inflight: u64,
    /// Record time spent per operator (timely's scheduling log).
    pub profile: bool,
}

/// Shared with the main thread for the progress bar.
#[derive(Default)]
pub struct Progress {
    /// Bytes of input scanned by the worker furthest ahead.
    pub bytes: AtomicU64,
    /// Workers of this process that have finished.
    pub finished: AtomicU64,
}

/// What one worker did.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub index: usize,
    /// Lines of the log this worker owned.
    pub lines: u64,
    pub chats: u64,
    pub edges: u64,
    pub dead_letters: u64,
    /// Well-formed events of kinds no view consumes yet (posts, viewer counts).
    pub unrouted: u64,
    pub blank: u64,
    pub ticks: u64,
    /// Worker 0 only: per-tick latency in microseconds.
    pub latency_us: Option<Histogram<u64>>,
    /// Worker 0 only: rows written per view.
    pub rows_written: Vec<(&'static str, u64)>,
    /// Worker 0 only, with `profile`: seconds spent per operator, busiest first.
    pub operator_seconds: Vec<(String, f64)>,
}

/// Builds the dataflow on `worker`, feeds it this worker's share of the inputs and steps it
/// until every view's changes are written.
pub fn run_worker(worker: &mut Worker, job: &Job, progress: &Progress) -> Result<WorkerReport, String> {
    let index = worker.index();
    let peers = worker.peers();
    let probe = ProbeHandle::new();
    let out = job.out.clone();
    let chat_config = job.chat.clone();
    let network_config = job.network.clone();
    let (focus_given, mention_edges) = (job.focus.is_some(), job.mention_edges);
    let profile = job.profile.then(|| OperatorProfile::install(worker));

    let (mut chats_in, mut edges_in, focus_in, mut dead_in, sinks) = worker.dataflow::<u64, _, _>(|scope| {
        let (chats_in, chats) = scope.new_collection::<Chat, Diff>();
        let (edges_in, mut edges) = scope.new_collection::<(Name, Name), Diff>();
        let (focus_in, focus) = scope.new_collection::<Name, Diff>();
        let (dead_in, dead) = scope.new_collection::<DeadLetter, Diff>();
        if mention_edges {
            edges = edges.concat(mention_edges_of(chats.clone()));
        }
        let views = chat_views(chats, &chat_config);
        let network = network_views(edges, focus_given.then_some(focus), &network_config);

        let mut sinks: Vec<(&'static str, SinkHandle)> = Vec::new();
        let mut streams = Vec::new();
        let mut sink = |stream_and_handle: (_, SinkHandle), view: &'static str| {
            streams.push(stream_and_handle.0);
            sinks.push((view, stream_and_handle.1));
        };
        sink(csv_sink(views.word_counts, &out), WordCount::VIEW);
        sink(csv_sink(views.channel_activity, &out), ChannelActivity::VIEW);
        sink(csv_sink(views.user_counts, &out), UserCount::VIEW);
        sink(csv_sink(views.top_words, &out), TopWord::VIEW);
        sink(csv_sink(views.top_users, &out), TopUser::VIEW);
        sink(csv_sink(network.connections, &out), Connection::VIEW);
        sink(csv_sink(network.reach, &out), Reach::VIEW);
        sink(csv_sink(network.top_connections, &out), TopConnection::VIEW);
        sink(csv_sink(dead, &out), DeadLetter::VIEW);
        scope.concatenate(streams).probe_with(&probe);
        (chats_in, edges_in, focus_in, dead_in, sinks)
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
        return Err(e);
    }

    let mut report = WorkerReport { index, ..Default::default() };
    let mut source = FileSource::new(job.inputs.clone(), index, peers);
    let inflight_ticks = (job.max_inflight / job.batch).max(1);
    let measure = index == 0;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    let mut closed: VecDeque<(u64, Instant)> = VecDeque::new();
    let observe = |closed: &mut VecDeque<(u64, Instant)>, latency: &mut Histogram<u64>| {
        let frontier = probe.with_frontier(|f| f.first().copied());
        while let Some(&(tick, at)) = closed.front() {
            if frontier.is_some_and(|f| f <= tick) {
                break;
            }
            latency.saturating_record(at.elapsed().as_micros().max(1) as u64);
            closed.pop_front();
        }
    };

    let mut tick = 0u64;
    loop {
        let end = tick.saturating_add(1).saturating_mul(job.batch);
        let more = source
            .read_until(end, |line: Line| {
                report.lines += 1;
                if let Some(length) = line.oversized {
                    let error = format!("line of {length} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes");
                    dead_in.insert(dead_letter(line.source, line.line_no.to_string(), error, line.bytes));
                    report.dead_letters += 1;
                    return;
                }
                if line.bytes.iter().all(u8::is_ascii_whitespace) {
                    report.blank += 1;
                    return;
                }
                match decode(line.bytes) {
                    Ok(Event::Chat(chat)) => {
                        chats_in.insert(chat);
                        report.chats += 1;
                    }
                    Ok(Event::Edge(edge)) => {
                        let sign = if edge.op == EdgeOp::Del { -1 } else { 1 };
                        edges_in.update((edge.src, edge.dst), sign * edge.weight as Diff);
                        report.edges += 1;
                    }
                    Ok(_) => report.unrouted += 1,
                    Err(error) => {
                        dead_in.insert(dead_letter(line.source, line.line_no.to_string(), error, line.bytes));
                        report.dead_letters += 1;
                    }
                }
            })
            .map_err(|e| format!("reading input: {e}"))?;
        // Every worker scans all bytes; the bar shows the one furthest ahead.
        progress.bytes.fetch_max(source.bytes_read(), Ordering::Relaxed);
        if !more {
            break;
        }
        tick += 1;
        chats_in.advance_to(tick);
        edges_in.advance_to(tick);
        dead_in.advance_to(tick);
        chats_in.flush();
        edges_in.flush();
        dead_in.flush();
        if measure {
            closed.push_back((tick - 1, Instant::now()));
        }
        worker.step();
        if measure {
            observe(&mut closed, &mut latency);
        }
        while probe.less_than(&tick.saturating_sub(inflight_ticks)) {
            worker.step_or_park(Some(std::time::Duration::from_millis(1)));
            if measure {
                observe(&mut closed, &mut latency);
            }
        }
        if let Some(e) = sink_error(&sinks) {
            return Err(e);
        }
    }
    progress.bytes.fetch_max(source.bytes_read(), Ordering::Relaxed);
    drop(chats_in);
    drop(edges_in);
    drop(dead_in);
    if measure {
        closed.push_back((tick, Instant::now()));
    }
    while !probe.done() {
        worker.step_or_park(Some(std::time::Duration::from_millis(1)));
        if measure {
            observe(&mut closed, &mut latency);
        }
    }
    if measure {
        observe(&mut closed, &mut latency);
    }
    if let Some(e) = sink_error(&sinks) {
        return Err(e);
    }

    report.ticks = tick + 1;
    tracing::info!(
        worker = index,
        lines = report.lines,
        chats = report.chats,
        dead_letters = report.dead_letters,
        ticks = report.ticks,
        "worker finished"
    );
    if index == 0 {
        report.latency_us = Some(latency);
        report.rows_written = sinks.iter().map(|(view, s)| (*view, s.borrow().rows_written)).collect();
        report.operator_seconds = profile.map(|p| p.seconds()).unwrap_or_default();
    }
    Ok(report)
}
