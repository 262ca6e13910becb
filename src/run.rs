//! Starting a pipeline run: timely configuration, workers, progress bar, and the report the
//! `run` and `bench` commands print.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use dataflows::chat::ChatConfig;
use dataflows::horizon::Retention;
use dataflows::network::NetworkConfig;
use dataflows::posts::PostConfig;
use dataflows::CATALOG;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{PipelineArgs, TimelyArgs};
use crate::clickhouse::{self, Client, Target};
use crate::cluster::timely_config;
use crate::deployment::{self, fingerprint, Settings};
use crate::lock::OutLock;
use crate::metrics::Snapshot;
use crate::sinks::freshness::{Cut, Freshness};
use crate::sinks::progress::{read_upper, PROGRESS_FILE};
use crate::sources::files::{expand_inputs, Pace};
use crate::sources::kafka::{clear_bindings, partition_counts, require_topics, KafkaOptions};
use crate::sources::sniff::Kind;
use crate::worker::checkpoint::{self, CheckpointJob};
use crate::worker::{run_worker, ClickHouseJob, Input, Job, Progress, WorkerReport};

/// Set once the workers start: before, a signal exits at once (nothing is written yet); after,
/// it asks the workers to stop cleanly (`worker::STOP`).
pub static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

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
    pub clickhouse_url: Option<String>,
    pub clickhouse_database: Option<String>,
    /// Whether the sentiment view was on (lexica loaded).
    pub sentiment: bool,
    /// The time of the checkpoint the run resumed from, if it did.
    pub resumed_from: Option<u64>,
    /// What this process counted during the run (the metrics registry's growth).
    pub counts: Snapshot,
    /// Freshness of live records at the committed cut (produce → cut, µs; see
    /// `sinks::freshness`).
    pub freshness: Histogram<u64>,
    /// Produce → each stage on the way to the cut (`sinks::freshness::STAGES`), µs.
    pub freshness_stages: Vec<(&'static str, Histogram<u64>)>,
    /// The process's peak RSS (bytes) when its workers had read each multiple of
    /// [`RSS_EVERY`] records (sampled every 100 ms), for the soak benchmark.
    pub rss_at_records: Vec<(u64, u64)>,
}

/// Records between the peak-RSS samples of [`Outcome::rss_at_records`].
pub const RSS_EVERY: u64 = 1_000_000;

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
    /// With `--retention`: per windowed operator (in the order built), the windows (or keys of
    /// a window) this process's workers hold at the end and the ones they dropped, sealed.
    pub fn windows_held(&self) -> Vec<(String, dataflows::horizon::Held)> {
        let mut held: Vec<(String, dataflows::horizon::Held)> = Vec::new();
        for (name, h) in self.reports.iter().flat_map(|r| &r.held) {
            match held.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => {
                    sum.windows += h.windows;
                    sum.dropped += h.dropped;
                }
                None => held.push((name.clone(), *h)),
            }
        }
        held
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

/// A run checked and ready to start: nothing on disk or in ClickHouse has been touched yet.
pub struct Plan {
    pub job: Job,
    config: timely::Config,
    start: Start,
    process: u64,
    /// Workers of all processes.
    workers: u32,
    /// Workers of this process.
    local_workers: u32,
    /// Where ClickHouse output goes, if it does.
    clickhouse: Option<Target>,
    /// What the output depends on: recorded by a new deployment, checked by a resume.
    settings: Settings,
}

/// Checks every argument of a run (inputs, focus file, output directory, timely's flags, the
/// Kafka topics) without creating, truncating or deleting anything, so that a failed start
/// leaves the output directory as it was.
pub fn plan(args: &PipelineArgs, out: std::path::PathBuf, start: Start, timely: &TimelyArgs) -> Result<Plan> {
    let config = timely_config(timely)?;
    check_out_dir(&out)?;
    let input = match &args.kafka.kafka {
        Some(brokers) => {
            let asked = args.kafka.topics.names();
            let topics = partition_counts(brokers, &args.kafka.kafka_config, &asked)?;
            require_topics(&topics, &asked, brokers)?;
            let options = KafkaOptions {
                brokers: brokers.clone(),
                topics: topics.iter().map(|(t, _)| t.clone()).collect(),
                client_config: args.kafka.kafka_config.clone(),
                tick_ms: args.kafka.tick_ms,
                idle_ms: args.kafka.idle_ms,
                until_caught_up: args.kafka.until_caught_up,
                clock_dir: out.clone(),
                clock_store: None,
            };
            Input::Kafka { options, topics }
        }
        None => {
            let files = expand_inputs(&args.replay).map_err(|e| anyhow!("--replay: {e}"))?;
            if files.is_empty() {
                let named: Vec<String> = args.replay.iter().map(|p| p.display().to_string()).collect();
                return Err(anyhow!("--replay {}: no *.jsonl files to read", named.join(" ")));
            }
            let empty: Vec<String> = files
                .iter()
                .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.len() == 0))
                .map(|f| f.display().to_string())
                .collect();
            if empty.len() == files.len() {
                return Err(anyhow!("--replay: every input is empty ({}): nothing to run", empty.join(", ")));
            }
            Input::Replay { files, batch: args.batch, pace: args.replay_rate.map(Pace::new) }
        }
    };
    let focus = match &args.focus {
        Some(path) => Some(read_focus(path)?),
        None => None,
    };
    let lexica = match &args.lexicon_dir {
        Some(dir) => Some(std::sync::Arc::new(crate::lexica::load(dir)?)),
        None => None,
    };
    let clickhouse = args
        .clickhouse
        .clickhouse
        .as_ref()
        .map(|url| Target { url: url.clone(), database: args.clickhouse.database.clone() });
    if let Some(target) = &clickhouse {
        clickhouse::check_database(&target.database).context("--database")?;
        // Process 0 speaks for its cluster: the others cannot start without it.
        if timely.process == 0 && !args.clickhouse.take_over {
            check_no_other_writer(target)?;
        }
    }
    if start == Start::Resume && clickhouse.is_none() {
        read_upper(&out)?;
    }
    let settings = deployment_settings(args, &input, focus.as_deref())?;
    let retention = args.retention.map(|seconds| Retention { seconds, sources: input.sources().into() });
    Ok(Plan {
        job: Job {
            input,
            out,
            views: dataflows::Config {
                chat: ChatConfig { window_secs: args.window, top_k: args.top_k },
                network: NetworkConfig { hops: args.hops, top_n: args.top_connections },
                mention_edges: args.mention_edges,
                posts: PostConfig { window_secs: args.post_window, top_k: args.top_k },
                sentiment: lexica,
                retention,
            },
            focus,
            max_inflight: args.max_inflight,
            profile: false,
            resume_upper: None,
            clickhouse: None,
            checkpoint: (!args.no_checkpoints).then(|| CheckpointJob {
                interval: (args.checkpoint_interval > 0).then(|| Duration::from_secs(args.checkpoint_interval)),
                restore: None,
                store: None,
            }),
            freshness: Freshness::new(
                match (&clickhouse, timely.process) {
                    (Some(_), _) => Cut::Writers(timely.workers as usize),
                    (None, 0) => Cut::Writers(1),
                    (None, _) => Cut::Probe,
                },
                clickhouse.as_ref().map(|_| timely.workers as usize),
            ),
        },
        config,
        start,
        process: timely.process,
        workers: (timely.workers * timely.processes) as u32,
        local_workers: timely.workers as u32,
        clickhouse,
        settings,
    })
}

/// How recent another run's progress in the database must be for it to count as alive.
const ALIVE_WITHIN_MS: i64 = 60_000;

/// One writer per database: refuses to start when another run wrote progress to `target`
/// within the last minute, unless that run is certainly gone (started on this machine by a
/// process that has ended). `--take-over` skips the check.
fn check_no_other_writer(target: &Target) -> Result<()> {
    let client = Client::new(&target.url);
    let last = clickhouse::cut::last_writer(&client, &target.database)
        .with_context(|| format!("reading the progress of database {} on {}", target.database, target.url))?;
    let Some(last) = last else { return Ok(()) };
    if last.age_ms >= ALIVE_WITHIN_MS || last.is_gone() {
        return Ok(());
    }
    let who = match (&last.host, last.pid) {
        (Some(host), Some(pid)) => format!("started by pid {pid} on {host}"),
        _ => "that did not record its process".to_owned(),
    };
    Err(anyhow!(
        "database {} on {} is being written by another chatflow run ({who}; its latest progress is {:.1} s old): \
         stop that run first, or pass --take-over if it is gone",
        target.database,
        target.url,
        last.age_ms.max(0) as f64 / 1000.0
    ))
}

/// The settings the deployment's times and rows depend on (see `deployment`).
fn deployment_settings(args: &PipelineArgs, input: &Input, focus: Option<&[String]>) -> Result<Settings> {
    let mut settings = Settings::default();
    match input {
        Input::Kafka { .. } => {
            settings.set("input", "kafka");
            settings.set("--tick-ms", args.kafka.tick_ms);
        }
        Input::Replay { .. } => {
            settings.set("input", "replay");
            settings.set("--batch", args.batch);
        }
    }
    settings.set("--window", args.window);
    settings.set("--top-k", args.top_k);
    settings.set("--post-window", args.post_window);
    settings.set("--hops", args.hops);
    settings.set("--top-connections", args.top_connections);
    settings.set("--mention-edges", args.mention_edges);
    if let Some(seconds) = args.retention {
        settings.set("--retention", seconds);
    }
    if let Some(dir) = &args.lexicon_dir {
        let mut bytes = Vec::new();
        for name in crate::lexica::FILES {
            let path = dir.join(name);
            bytes.extend(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        }
        settings.set("--lexicon-dir", fingerprint(&bytes));
    }
    if let Some(users) = focus {
        settings.set("--focus", fingerprint(users.join("\n").as_bytes()));
    }
    Ok(settings)
}

/// An output directory is a directory this process can write in, or can be created.
fn check_out_dir(out: &std::path::Path) -> Result<()> {
    let shown = out.display();
    match std::fs::metadata(out) {
        Ok(meta) if !meta.is_dir() => {
            Err(anyhow!("--out {shown} is a file, not a directory: name a directory for the change files"))
        }
        Ok(_) => match tempfile::tempfile_in(out) {
            Ok(_) => Ok(()),
            Err(e) => Err(anyhow!("--out {shown}: cannot write in this directory ({e})")),
        },
        Err(_) => {
            let parent = out.ancestors().skip(1).find(|a| a.as_os_str().is_empty() || a.exists());
            match parent {
                Some(p) if !p.as_os_str().is_empty() && !p.is_dir() => {
                    Err(anyhow!("--out {shown} cannot be created: {} is a file", p.display()))
                }
                _ => Ok(()),
            }
        }
    }
}

impl Plan {
    /// Readies the output for the run: the ClickHouse tables and the committed cut, the output
    /// directory, and (for a new deployment) the old progress record and clock bindings
    /// cleared. The first step that touches anything.
    ///
    /// Returns the lock on the output directory, held for the whole run (see `lock`).
    fn prepare(&mut self) -> Result<OutLock> {
        let out = self.job.out.clone();
        let created = !out.exists();
        std::fs::create_dir_all(&out).map_err(|e| anyhow!("--out {} cannot be created ({e})", out.display()))?;
        let prepared = crate::lock::lock(&out, self.process).and_then(|lock| self.prepare_sinks().map(|()| lock));
        if prepared.is_err() && created {
            let _ = std::fs::remove_file(crate::lock::lock_path(&out, self.process));
            let _ = std::fs::remove_dir(&out);
        }
        prepared
    }

    fn prepare_sinks(&mut self) -> Result<()> {
        let out = &self.job.out.clone();
        if let Some(target) = &self.clickhouse {
            let client = Client::new(&target.url);
            // A new deployment: process 0 alone drops the tables (another process dropping
            // them later would take process 0's start rows with them) and every process starts
            // at 0 without reading what may not be dropped yet.
            let fresh = self.start == Start::FromBeginning;
            let cut = clickhouse::prepare(&client, &target.database, fresh && self.process == 0)
                .with_context(|| format!("preparing database {} on {}", target.database, target.url))?;
            let cut = if fresh { None } else { cut };
            let start = match cut {
                Some(cut) => {
                    let kept = clickhouse::store::read_settings(&client, &target.database)
                        .with_context(|| format!("reading the settings of database {}", target.database))?;
                    deployment::check(out, &self.settings, kept.map(deployment::Settings))?;
                    tracing::info!(cut, "resuming: ClickHouse holds every update before the committed cut");
                    let latest = clickhouse::store::latest(&client, &target.database)
                        .with_context(|| format!("reading the checkpoints of database {}", target.database))?;
                    // Process 0 marks checkpoints in the folder (see `checkpoint::complete`).
                    if let (Some((time, workers)), 0) = (latest, self.process) {
                        if checkpoint::catch_up(out, time, workers)? {
                            tracing::info!(time, "the staging folder's marker caught up with the database's");
                        }
                    }
                    restore_checkpoint(&mut self.job, latest, self.workers, cut);
                    cut
                }
                None => {
                    // A new deployment: the clock bindings of an older one must not apply.
                    clear_bindings(out)?;
                    checkpoint::clear(out)?;
                    deployment::record(out, &self.settings)?;
                    if self.process == 0 {
                        clickhouse::store::record_settings(&client, &target.database, &self.settings.0)?;
                    }
                    0
                }
            };
            if self.process == 0 {
                clickhouse::record_start(&client, &target.database, self.workers, start)?;
            }
            // What a restart needs lives in the database too: a fresh machine resumes from it.
            if let Input::Kafka { options, .. } = &mut self.job.input {
                options.clock_store = Some(target.clone());
            }
            if let Some(checkpoint) = self.job.checkpoint.as_mut() {
                checkpoint.store = Some(target.clone());
            }
            let writer = crate::sinks::clickhouse::Writer::spawn(
                target,
                self.local_workers,
                self.workers,
                start,
                &crate::worker::STOP,
                self.job.freshness.clone(),
            );
            self.job.clickhouse = Some(ClickHouseJob { target: target.clone(), start, workers: self.workers, writer });
            return Ok(());
        }
        self.job.resume_upper = match self.start {
            Start::Resume => {
                let upper = read_upper(out)?;
                match upper {
                    Some(upper) => {
                        deployment::check(out, &self.settings, None)?;
                        tracing::info!(upper, "resuming: the change files hold every update before the upper");
                        restore_checkpoint(&mut self.job, checkpoint::latest(out), self.workers, upper);
                    }
                    None => {
                        tracing::warn!(out = %out.display(), "nothing to resume; starting from the beginning");
                        checkpoint::clear(out)?;
                        deployment::record(out, &self.settings)?;
                    }
                }
                // Without a progress record the files may hold anything: start them again.
                Some(upper.unwrap_or(0))
            }
            Start::FromBeginning => {
                clear_bindings(out)?;
                checkpoint::clear(out)?;
                let _ = std::fs::remove_file(out.join(PROGRESS_FILE));
                deployment::record(out, &self.settings)?;
                None
            }
        };
        Ok(())
    }
}

/// Reads a focus file: one user per line; blank lines and lines starting with `#` are skipped.
pub fn read_focus(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading focus file {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect())
}

/// Connects this process to its peers, prepares the output (`Plan::prepare`), runs the job
/// on this process's workers and waits for them, drawing a progress bar on a terminal.
/// Until the workers start, a signal ends the process at once (see `STARTED`).
pub fn execute(mut plan: Plan, timely: &TimelyArgs) -> Result<Outcome> {
    if timely.processes > 1 {
        eprintln!(
            "chatflow: process {} of {} waiting for its peers (start the others with -p; Ctrl-C to give up)",
            timely.process, timely.processes
        );
    }
    let config = std::mem::replace(&mut plan.config, timely::Config::thread());
    let (builders, others) = match config.communication {
        timely::CommunicationConfig::Cluster { threads, process, addresses, .. } => {
            crate::cluster::connect(&addresses, process, threads)
                .map_err(|e| anyhow!("connecting the processes: {e}"))?
        }
        other => other.try_build().map_err(|e| anyhow!("connecting the processes: {e}"))?,
    };
    // Held until the run ends: no other run writes this --out meanwhile.
    let _lock = plan.prepare()?;
    let job = plan.job;
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
    let clickhouse_url = job.clickhouse.as_ref().map(|ch| ch.target.url.clone());
    let sentiment = job.views.sentiment.is_some();
    let resumed_from = job.checkpoint.as_ref().and_then(|c| c.restore);
    let clickhouse_database = job.clickhouse.as_ref().map(|ch| ch.target.database.clone());
    let freshness = job.freshness.clone();
    let job = Arc::new(job);
    let worker_progress = Arc::clone(&progress);
    STARTED.store(true, Ordering::SeqCst);
    let guards = timely::execute::execute_from(builders, others, config.worker, move |worker| {
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
    let mut rss_at_records = Vec::new();
    let sample_rss = |samples: &mut Vec<(u64, u64)>| {
        let next = (samples.len() as u64 + 1) * RSS_EVERY;
        if progress.records.load(Ordering::Relaxed) >= next {
            samples.push((next, peak_rss_bytes().unwrap_or(0)));
        }
    };
    while guards.guards().iter().any(|g| !g.is_finished()) {
        bar.set_position(progress.bytes.load(Ordering::Relaxed));
        sample_rss(&mut rss_at_records);
        std::thread::sleep(Duration::from_millis(100));
    }
    sample_rss(&mut rss_at_records);
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
        clickhouse_url,
        clickhouse_database,
        sentiment,
        resumed_from,
        counts: crate::metrics::snapshot().since(&counted_before),
        freshness: freshness.histogram(),
        freshness_stages: freshness.stages(),
        rss_at_records,
    })
}

/// The summary `chatflow run` prints.
pub fn summary(outcome: &Outcome, out: &std::path::Path) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let events = outcome.events();
    let chats = outcome.events_of(Some("chat"));
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
    let mut kinds = vec![plural(chats, "chat message")];
    for (kind, name) in [("edge", "edge event"), ("post", "post"), ("viewers", "viewer count")] {
        let n = outcome.events_of(Some(kind));
        if n > 0 {
            kinds.push(plural(n, name));
        }
    }
    let _ = writeln!(s, "  {}", kinds.join(", "));
    if let Some(time) = outcome.resumed_from {
        let _ = writeln!(
            s,
            "  resumed from the checkpoint at time {time}: its state, and the input read from its positions on"
        );
    }
    if chats > 0 && !outcome.sentiment {
        let _ = writeln!(
            s,
            "  sentiment is off: --lexicon-dir DIR (with emote_average.tsv, emoji_average.tsv, vader_average.tsv) turns it on"
        );
    }
    let held = outcome.windows_held();
    if !held.is_empty() {
        let late = outcome.rows_written().iter().find(|(v, _)| *v == "late_events").map_or(0, |(_, n)| *n);
        let list = |f: fn(&dataflows::horizon::Held) -> u64| {
            held.iter().map(|(name, h)| format!("{} {}", f(h), name)).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(s, "  retention: {} late events; sealed windows dropped: {}", late, list(|h| h.dropped));
        let _ = writeln!(s, "    windows held at the end: {}", list(|h| h.windows as u64));
    }
    if outcome.interrupted() {
        let _ = writeln!(s, "  stopped on a signal; --resume continues from here");
    }
    if let Some(upper) = outcome.upper() {
        let place = match &outcome.clickhouse {
            Some(_) => "in ClickHouse (the upper is in its _progress table)".to_string(),
            None => format!("in {} (the upper is in _progress.csv)", out.display()),
        };
        let _ = match upper {
            0 => writeln!(s, "  no time is complete yet: nothing is written {place}"),
            _ => writeln!(s, "  every change up to time {} is written {place}", upper - 1),
        };
    }
    let fresh = &outcome.freshness;
    if !fresh.is_empty() {
        let _ = writeln!(
            s,
            "  freshness (produce → {}) of {} live records: p50 {:.1} ms, p99 {:.1} ms",
            if outcome.clickhouse.is_some() {
                "the committed cut in ClickHouse"
            } else {
                "the committed cut in _progress.csv"
            },
            fresh.len(),
            fresh.value_at_quantile(0.5) as f64 / 1000.0,
            fresh.value_at_quantile(0.99) as f64 / 1000.0
        );
        let stages: Vec<String> = outcome
            .freshness_stages
            .iter()
            .filter(|(stage, hist)| *stage != "cut" && !hist.is_empty())
            .map(|(stage, hist)| {
                let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
                format!("{stage} {:.1}/{:.1}", ms(0.5), ms(0.99))
            })
            .collect();
        if !stages.is_empty() {
            let _ = writeln!(s, "    produce → each stage, p50/p99 ms: {}", stages.join(", "));
        }
    }
    let rows = outcome.rows_written();
    if !rows.is_empty() {
        match &outcome.clickhouse {
            Some(target) => {
                let _ = writeln!(s, "changes written to ClickHouse database {target} (this process's workers):");
                for (view, rows) in &rows {
                    let _ = writeln!(s, "  {view}: {}", plural(*rows, "row"));
                }
            }
            None => {
                let _ = writeln!(s, "changes written to {}:", out.display());
                for (view, rows) in &rows {
                    let _ = writeln!(s, "  {view}.csv: {}", plural(*rows, "row"));
                }
            }
        }
    }
    let glimpse = if outcome.wrote_files() { glimpse(out, 5) } else { Vec::new() };
    if !glimpse.is_empty() {
        let _ = writeln!(s, "busiest channels:");
        for g in &glimpse {
            let words: Vec<String> = g.top_words.iter().map(|(w, c)| format!("{w} ({c})")).collect();
            let users: Vec<String> = g.top_users.iter().map(|(u, c)| format!("{u} ({c})")).collect();
            let _ = writeln!(s, "  {:<16} {:>9} messages  top words: {}", g.channel, g.messages, words.join(", "));
            let _ = writeln!(s, "  {:<16} {:>9}           top users: {}", "", "", users.join(", "));
        }
    }
    if let Some(next) = next_step(outcome, out, glimpse.first().map(|g| g.channel.as_str())) {
        let _ = writeln!(s, "next: {next}");
    }
    s
}

/// The command to try after a run: resume it, or ask a view.
fn next_step(outcome: &Outcome, out: &std::path::Path, busiest: Option<&str>) -> Option<String> {
    if outcome.interrupted() {
        return Some("run the same command with --resume to continue from here".into());
    }
    if outcome.upper().is_none_or(|u| u == 0) {
        return None;
    }
    let filter = match busiest {
        Some(channel) => format!(" --channel {}", shell_word(channel)),
        None => String::new(),
    };
    let (view, rows) = if outcome.events_of(Some("chat")) > 0 {
        ("top_words", "the top words")
    } else {
        ("top_connections", "the strongest connections")
    };
    match &outcome.clickhouse {
        Some(_) if outcome.reports.iter().any(|r| r.index == 0) => Some(format!(
            "chatflow query {view}{filter} --clickhouse {} --database {}   ({rows}, read from ClickHouse)",
            outcome.clickhouse_url.as_deref().unwrap_or(""),
            outcome.clickhouse_database.as_deref().unwrap_or("")
        )),
        None if outcome.wrote_files() => Some(format!(
            "chatflow query {view} --dir {}{filter}   ({rows} now; --as-of T for an earlier time)",
            shell_word(&out.display().to_string())
        )),
        _ => None,
    }
}

/// `s` as one shell word: as it is when that is safe, else single-quoted.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `part` of `whole` in percent, with two decimals below 1 %.
pub fn percent(part: u64, whole: u64) -> String {
    let p = 100.0 * part as f64 / whole.max(1) as f64;
    if p < 1.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.1} %")
    }
}

/// `n thing` or `n things`.
pub fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// Why a run that finished must not exit 0: the exit code, and what to tell the person.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

/// Exit code of a run whose dead letters exceed `--max-dead-letter-ratio`.
pub const TOO_MANY_DEAD_LETTERS: i32 = 3;

/// Judges a finished run's input: nothing computed (every line a dead letter) is exit 1,
/// dead letters above `max_ratio` of the lines exit 3. When most lines are dead letters, a
/// hint says what the input looks like and which command reads it (from the input file with
/// the most dead letters). Returns the failure (if any) and the hint (if any).
pub fn judge(outcome: &Outcome, max_ratio: f64, out: &std::path::Path) -> (Option<Failure>, Option<String>) {
    let dead = outcome.dead_letters();
    let lines = outcome.events() + dead;
    let hint = (dead * 2 > lines).then(|| {
        let worst = outcome
            .counts
            .labels("chatflow_dead_letters_total", "source")
            .into_iter()
            .max_by_key(|source| outcome.counts.sum("chatflow_dead_letters_total", &[("source", source.as_str())]));
        let guessed = worst.as_ref().map(std::path::PathBuf::from).and_then(|file| {
            crate::sources::sniff::sniff_file(&file).filter(|k| *k != Kind::Events).map(|k| k.hint(&file))
        });
        let reasons = match &outcome.clickhouse {
            Some(_) => "the dead_letters table".to_string(),
            None => format!("{}/dead_letters.csv", out.display()),
        };
        match guessed {
            Some(hint) => format!("most lines ({dead} of {lines}) are dead letters; {hint}"),
            None => format!("most lines ({dead} of {lines}) are dead letters: {reasons} says why, line by line"),
        }
    });
    let failure = if dead > 0 && outcome.events() == 0 {
        Some(Failure {
            code: 1,
            message: format!("nothing was computed: all {} read are dead letters", plural(lines, "line")),
        })
    } else if lines == 0 && outcome.input_bytes > 0 && outcome.processes == 1 {
        Some(Failure { code: 1, message: "nothing was computed: the inputs hold only blank lines".into() })
    } else if dead as f64 > max_ratio * lines as f64 {
        Some(Failure {
            code: TOO_MANY_DEAD_LETTERS,
            message: format!(
                "{} of the lines ({dead} of {lines}) are dead letters, more than --max-dead-letter-ratio {max_ratio}",
                percent(dead, lines)
            ),
        })
    } else {
        None
    };
    (failure, hint)
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

/// The `n` channels with the most messages, with their top words and users, read back from the
/// change files in `out` (nothing if they cannot be read).
pub fn glimpse(out: &std::path::Path, n: usize) -> Vec<ChannelGlimpse> {
    use crate::query::{channel_messages, read_dir, read_dir_channels, Query};
    // The leaders are one pass over each ranking file (for all `n` channels): past a size (a
    // deployment of months) the summary leaves them to `chatflow query` rather than take
    // longer than the run.
    const READ_AT_MOST: u64 = 256 << 20;
    let size = |view: &str| std::fs::metadata(out.join(format!("{view}.csv"))).map_or(0, |m| m.len());
    let passes = size("channel_activity") + size("top_words") + size("top_users");
    if passes > READ_AT_MOST {
        return Vec::new();
    }
    let Ok(activity) = read_dir(out, &Query::all("channel_activity")) else {
        return Vec::new();
    };
    let busiest: Vec<(String, i64)> = channel_messages(&activity).into_iter().take(n).collect();
    let channels: Vec<&str> = busiest.iter().map(|(c, _)| c.as_str()).collect();
    // Rows come sorted by (channel, rank): the first `keep` of a channel are its leaders.
    let ranked = |view: &str, keep: usize| -> Vec<Vec<(String, i64)>> {
        let rows = read_dir_channels(out, &Query::all(view), &channels).map(|a| a.rows).unwrap_or_default();
        let leaders = |channel: &str| {
            let of_channel = rows.iter().filter(|r| r[0] == channel).take(keep);
            of_channel.map(|r| (r[2].clone(), r[3].parse().unwrap_or(0))).collect()
        };
        channels.iter().map(|c| leaders(c)).collect()
    };
    let (words, users) = (ranked("top_words", 5), ranked("top_users", 3));
    busiest
        .into_iter()
        .zip(words.into_iter().zip(users))
        .map(|((channel, messages), (top_words, top_users))| ChannelGlimpse { channel, messages, top_words, top_users })
        .collect()
}

/// A resume starts from the `latest` complete checkpoint, if the output holds it (it is at or
/// before `durable`, below which every update is written) and it was taken with as many
/// workers; otherwise it reads the input from the beginning.
fn restore_checkpoint(job: &mut Job, latest: Option<(u64, u32)>, run_workers: u32, durable: u64) {
    let Some(job) = job.checkpoint.as_mut() else { return };
    match latest {
        Some((time, workers)) if workers == run_workers && time <= durable => {
            tracing::info!(time, "resuming from the checkpoint at this time");
            job.restore = Some(time);
        }
        Some((time, workers)) => tracing::warn!(
            time,
            workers,
            durable,
            "the latest checkpoint does not fit this run (other workers, or past what is written): \
             reading the input from the beginning"
        ),
        None => tracing::info!("no checkpoint: reading the input from the beginning"),
    }
}
