//! Starting a pipeline run: timely configuration, workers, progress bar, and the report the
//! `run` and `bench` commands print.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use dataflows::chat::ChatConfig;
use dataflows::network::NetworkConfig;
use dataflows::CATALOG;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{PipelineArgs, TimelyArgs};
use crate::clickhouse::{self, Client, Target};
use crate::cluster::timely_config;
use crate::metrics::Snapshot;
use crate::sinks::progress::{read_upper, PROGRESS_FILE};
use crate::sources::files::expand_inputs;
use crate::sources::kafka::{clear_bindings, partition_counts, require_topics, KafkaOptions};
use crate::worker::{run_worker, ClickHouseJob, Input, Job, Progress, WorkerReport};

/// The result of one process's part of a run.
#[derive(Debug)]
pub struct Outcome {
    pub reports: Vec<WorkerReport>,
    pub seconds: f64,
    pub processes: u64,
    pub workers: u64,
    pub input_bytes: u64,
    /// `database on url` when the run wrote to ClickHouse.
    pub clickhouse: Option<String>,
    /// What this process counted during the run (the metrics registry's growth).
    pub counts: Snapshot,
}

impl Outcome {
    /// Well-formed events read by this process (of `kind`: chat, edge, post, viewers).
    pub fn events_of(&self, kind: Option<&str>) -> u64 {
        let filter: Vec<(&str, &str)> = kind.map(|k| ("kind", k)).into_iter().collect();
        self.counts.sum("chatflow_events_total", &filter)
    }
    pub fn events(&self) -> u64 {
        self.events_of(None)
    }
    pub fn dead_letters(&self) -> u64 {
        self.counts.sum("chatflow_dead_letters_total", &[])
    }
    pub fn latency(&self) -> Option<&Histogram<u64>> {
        self.reports.iter().find_map(|r| r.latency_us.as_ref())
    }
    /// Freshness of live records over this process's workers (produce → written).
    pub fn freshness(&self) -> Histogram<u64> {
        let mut all = crate::metrics::histogram();
        for h in self.reports.iter().filter_map(|r| r.freshness_us.as_ref()) {
            all.add(h).expect("same bounds");
        }
        all
    }
    /// The run's upper, as worker 0 recorded it.
    pub fn upper(&self) -> Option<u64> {
        self.reports.iter().find_map(|r| r.upper)
    }
    /// Whether the run was stopped by a signal.
    pub fn interrupted(&self) -> bool {
        self.reports.iter().any(|r| r.interrupted)
    }
    /// Whether this process holds worker 0, which writes the change files.
    pub fn wrote_files(&self) -> bool {
        self.clickhouse.is_none() && self.reports.iter().any(|r| r.index == 0)
    }
    /// Rows written per view by this process's workers (the views it writes, in catalog order).
    pub fn rows_written(&self) -> Vec<(&'static str, u64)> {
        CATALOG
            .iter()
            .filter(|v| self.counts.has("chatflow_rows_written_total", &[("view", v.name)]))
            .map(|v| (v.name, self.counts.sum("chatflow_rows_written_total", &[("view", v.name)])))
            .collect()
    }
}

/// How a run treats what an earlier run left in its output directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new deployment: change files, progress and clock bindings start afresh.
    FromBeginning,
    /// Continue the deployment: keep the clock bindings and append what the files lack.
    Resume,
}

/// Builds the job of `args`, writing change files into `out`.
pub fn job(args: &PipelineArgs, out: std::path::PathBuf, start: Start, timely: &TimelyArgs) -> Result<Job> {
    let input = match &args.kafka.kafka {
        Some(brokers) => {
            let asked = args.kafka.topics.names();
            let topics = partition_counts(brokers, &args.kafka.kafka_config, &asked)?;
            for topic in asked.iter().filter(|t| !topics.iter().any(|(have, _)| have == *t)) {
                tracing::warn!(topic, "topic not found; skipped");
            }
            require_topics(&topics, &asked, brokers)?;
            let options = KafkaOptions {
                brokers: brokers.clone(),
                topics: topics.iter().map(|(t, _)| t.clone()).collect(),
                client_config: args.kafka.kafka_config.clone(),
                tick_ms: args.kafka.tick_ms,
                idle_ms: args.kafka.idle_ms,
                until_caught_up: args.kafka.until_caught_up,
                clock_dir: out.clone(),
            };
            Input::Kafka { options, topics }
        }
        None => {
            let files = expand_inputs(&args.replay)?;
            if files.is_empty() {
                return Err(anyhow!("no input files in {:?}", args.replay));
            }
            Input::Replay { files, batch: args.batch }
        }
    };
    let focus = match &args.focus {
        Some(path) => Some(read_focus(path)?),
        None => None,
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let clickhouse = match &args.clickhouse.clickhouse {
        None => None,
        Some(url) => {
            let target = Target { url: url.clone(), database: args.clickhouse.database.clone() };
            let client = Client::new(url);
            // A new deployment: process 0 alone drops the tables (another process dropping
            // them later would take process 0's start rows with them) and every process starts
            // at 0 without reading what may not be dropped yet.
            let fresh = matches!(start, Start::FromBeginning);
            let cut = clickhouse::prepare(&client, &target.database, fresh && timely.process == 0)
                .with_context(|| format!("preparing database {} on {url}", target.database))?;
            let cut = if fresh { None } else { cut };
            let start = match cut {
                Some(cut) => {
                    tracing::info!(cut, "resuming: ClickHouse holds every update before the committed cut");
                    cut
                }
                None => {
                    // A new deployment: the clock bindings of an older one must not apply.
                    clear_bindings(&out)?;
                    0
                }
            };
            let workers = (timely.workers * timely.processes) as u32;
            if timely.process == 0 {
                clickhouse::record_start(&client, &target.database, workers, start)?;
            }
            Some(ClickHouseJob { target, start, workers })
        }
    };
    let resume_upper = match start {
        _ if clickhouse.is_some() => None,
        Start::Resume => {
            let upper = read_upper(&out)?;
            match upper {
                Some(upper) => tracing::info!(upper, "resuming: the change files hold every update before the upper"),
                None => tracing::warn!(out = %out.display(), "nothing to resume; starting from the beginning"),
            }
            // Without a progress record the files may hold anything: start them again.
            Some(upper.unwrap_or(0))
        }
        Start::FromBeginning => {
            clear_bindings(&out)?;
            let _ = std::fs::remove_file(out.join(PROGRESS_FILE));
            None
        }
    };
    Ok(Job {
        input,
        out,
        views: dataflows::Config {
            chat: ChatConfig { window_secs: args.window, top_k: args.top_k },
            network: NetworkConfig { hops: args.hops, top_n: args.top_connections },
            mention_edges: args.mention_edges,
        },
        focus,
        max_inflight: args.max_inflight,
        profile: false,
        resume_upper,
        clickhouse,
    })
}

/// Reads a focus file: one user per line; blank lines and lines starting with `#` are skipped.
pub fn read_focus(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading focus file {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect())
}

/// Runs `job` on this process's workers and waits for them, drawing a progress bar on a
/// terminal.
pub fn execute(job: Job, timely: &TimelyArgs) -> Result<Outcome> {
    let config = timely_config(timely)?;
    std::fs::create_dir_all(&job.out).with_context(|| format!("creating {}", job.out.display()))?;
    let input_bytes: u64 = match &job.input {
        Input::Replay { files, .. } => files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum(),
        Input::Kafka { .. } => 0,
    };
    tracing::info!(bytes = input_bytes, out = %job.out.display(), "starting run");

    let progress = Arc::new(Progress::default());
    if !crate::metrics::install() {
        tracing::warn!("another metrics recorder is installed: the summary cannot count events or rows");
    }
    let counted_before = crate::metrics::snapshot();
    let start = Instant::now();
    let clickhouse = job.clickhouse.as_ref().map(|ch| format!("{} on {}", ch.target.database, ch.target.url));
    let job = Arc::new(job);
    let worker_progress = Arc::clone(&progress);
    let guards = timely::execute(config, move |worker| {
        let report = run_worker(worker, &job, &worker_progress);
        worker_progress.finished.fetch_add(1, Ordering::Relaxed);
        report
    })
    .map_err(|e| anyhow!("starting timely: {e}"))?;

    // A bar over the input's bytes for files; a spinner with the bytes read for Kafka.
    let (total, template) = if input_bytes > 0 {
        (Some(input_bytes), "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})")
    } else {
        (None, "{spinner} [{elapsed_precise}] {bytes} read ({bytes_per_sec})")
    };
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(template).expect("valid progress template"));
    while guards.guards().iter().any(|g| !g.is_finished()) {
        bar.set_position(progress.bytes.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();

    let mut reports = Vec::new();
    for result in guards.join() {
        match result {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(e)) => return Err(anyhow!("worker failed: {e}")),
            Err(panic) => return Err(anyhow!("worker panicked: {panic}")),
        }
    }
    reports.sort_by_key(|r| r.index);
    Ok(Outcome {
        reports,
        seconds: start.elapsed().as_secs_f64(),
        processes: timely.processes,
        workers: timely.workers,
        input_bytes,
        clickhouse,
        counts: crate::metrics::snapshot().since(&counted_before),
    })
}

/// The summary `chatflow run` prints.
pub fn summary(outcome: &Outcome, out: &std::path::Path) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let events = outcome.events();
    let unrouted = outcome.events_of(Some("post")) + outcome.events_of(Some("viewers"));
    let (chats, edges) = (outcome.events_of(Some("chat")), outcome.events_of(Some("edge")));
    let _ = writeln!(
        s,
        "chatflow: {} events read, {} dead letters, {:.2} s, {:.0} events/s ({} worker(s) × {} process(es){})",
        events,
        outcome.dead_letters(),
        outcome.seconds,
        events as f64 / outcome.seconds.max(1e-9),
        outcome.workers,
        outcome.processes,
        if outcome.processes > 1 { ", this process's share" } else { "" },
    );
    let _ = writeln!(s, "  {chats} chat messages, {edges} edge events");
    if outcome.interrupted() {
        let _ = writeln!(s, "  stopped on a signal; --resume continues from here");
    }
    if let Some(upper) = outcome.upper() {
        match &outcome.clickhouse {
            Some(_) => {
                let _ = writeln!(s, "  every change before time {upper} is in ClickHouse (_progress table)");
            }
            None => {
                let _ = writeln!(s, "  every change before time {upper} is written (_progress.csv)");
            }
        }
    }
    let fresh = outcome.freshness();
    if !fresh.is_empty() {
        let _ = writeln!(
            s,
            "  freshness (produce → {}) of {} live records: p50 {:.1} ms, p99 {:.1} ms",
            if outcome.clickhouse.is_some() { "recorded in ClickHouse's _progress" } else { "written" },
            fresh.len(),
            fresh.value_at_quantile(0.5) as f64 / 1000.0,
            fresh.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
    if unrouted > 0 {
        let _ = writeln!(s, "  {unrouted} edge/post/viewer events read; this build has no view for them yet");
    }
    let rows = outcome.rows_written();
    if !rows.is_empty() {
        match &outcome.clickhouse {
            Some(target) => {
                let _ = writeln!(s, "changes written to ClickHouse database {target} (this process's workers):");
                for (view, rows) in &rows {
                    let _ = writeln!(s, "  {view}: {rows} rows");
                }
            }
            None => {
                let _ = writeln!(s, "changes written to {}:", out.display());
                for (view, rows) in &rows {
                    let _ = writeln!(s, "  {view}.csv: {rows} rows");
                }
            }
        }
    }
    let glimpse = if outcome.wrote_files() { glimpse(out, 5) } else { Vec::new() };
    if !glimpse.is_empty() {
        let _ = writeln!(s, "busiest channels:");
        for g in glimpse {
            let words: Vec<String> = g.top_words.iter().map(|(w, c)| format!("{w} ({c})")).collect();
            let users: Vec<String> = g.top_users.iter().map(|(u, c)| format!("{u} ({c})")).collect();
            let _ = writeln!(s, "  {:<16} {:>9} messages  top words: {}", g.channel, g.messages, words.join(", "));
            let _ = writeln!(s, "  {:<16} {:>9}           top users: {}", "", "", users.join(", "));
        }
    }
    s
}

/// Peak resident memory of this process in bytes (VmHWM), where the OS tells it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The busiest channels and their leaders, for the run summary.
#[derive(Clone, Debug, Default)]
pub struct ChannelGlimpse {
    pub channel: String,
    pub messages: i64,
    pub top_words: Vec<(String, i64)>,
    pub top_users: Vec<(String, i64)>,
}

/// The current rows of a change file (diffs summed), or nothing if it cannot be read.
fn current_rows(path: &std::path::Path) -> Vec<csv::StringRecord> {
    let Ok(mut reader) = csv::Reader::from_path(path) else {
        return Vec::new();
    };
    let mut sums: std::collections::BTreeMap<Vec<String>, i64> = Default::default();
    for record in reader.records().flatten() {
        let n = record.len();
        if n < 2 {
            continue;
        }
        let diff: i64 = record[n - 1].parse().unwrap_or(0);
        *sums.entry(record.iter().take(n - 2).map(str::to_owned).collect()).or_default() += diff;
    }
    sums.into_iter().filter(|(_, d)| *d > 0).map(|(row, _)| csv::StringRecord::from(row)).collect()
}

/// The `n` channels with the most messages, with their top words and users, read back from the
/// change files in `out`.
pub fn glimpse(out: &std::path::Path, n: usize) -> Vec<ChannelGlimpse> {
    let mut messages: std::collections::HashMap<String, i64> = Default::default();
    for row in current_rows(&out.join("channel_activity.csv")) {
        *messages.entry(row[0].to_owned()).or_default() += row[2].parse::<i64>().unwrap_or(0);
    }
    let mut busiest: Vec<(String, i64)> = messages.into_iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    busiest.truncate(n);
    let ranked = |file: &str, channel: &str, keep: usize| -> Vec<(String, i64)> {
        let mut rows: Vec<(u32, String, i64)> = current_rows(&out.join(file))
            .iter()
            .filter(|r| &r[0] == channel)
            .map(|r| (r[1].parse().unwrap_or(0), r[2].to_owned(), r[3].parse().unwrap_or(0)))
            .collect();
        rows.sort();
        rows.into_iter().take(keep).map(|(_, item, count)| (item, count)).collect()
    };
    busiest
        .into_iter()
        .map(|(channel, messages)| ChannelGlimpse {
            top_words: ranked("top_words.csv", &channel, 5),
            top_users: ranked("top_users.csv", &channel, 3),
            channel,
            messages,
        })
        .collect()
}
