//! The Kafka source: topics of chat, edge and post events (JSON), read with librdkafka.
//!
//! Delivery: every record of every owned partition is read once per run, from the beginning of
//! the log or from the offsets of the checkpoint a resumed run starts from (each partition's
//! clock going on from the greatest timestamp before that offset, which the checkpoint keeps);
//! no offsets are committed to Kafka. Restarts are exactly-once because ingestion
//! time is a function of the log (plus the recorded clock bindings below): a run that replays
//! the log gives every record the same time, and the sinks skip what they already hold.
//!
//! ## Partition ownership
//!
//! Partition `p` of every topic belongs to worker `p mod peers`, `peers` being the workers of
//! all processes. Partitions are assigned by hand (`assign`, no consumer group, no
//! rebalancing), so the processes of a `-n 2` run split the work without talking to Kafka or
//! to each other about it. Each worker has one consumer per owned partition (see
//! `TopicReader`), and reads first from the partition whose time is least.
//!
//! ## Ingestion time: the clock of a partition
//!
//! The record at offset `o` of a partition gets the time
//!
//! ```text
//!     time(o) = max( ceil_tick( max{ ts(o') : o' ≤ o } ),  floor(o) )
//! ```
//!
//! where `ts` is the record's Kafka timestamp (the producer's create time; `chatflow produce`
//! sets it to the event's `ts`), `ceil_tick` rounds up to a multiple of `--tick-ms`, and
//! `floor(o)` is the largest time of the partition's clock bindings `(o_b, t_b)` with
//! `o_b ≤ o`. Without bindings the time is a function of the partition's own prefix: late
//! events (older `ts`) take the running maximum, so times never go back, and the interleaving
//! of partitions does not matter. A worker's frontier is the least time any of its partitions
//! can still give (its next time), leaving out partitions that are finished.
//!
//! ## Idle partitions and reclocking
//!
//! A partition that receives nothing would hold its time, and with it every view, forever. So
//! once a partition has been at its end for `--idle-ms`, its worker *binds* its next offset
//! to a later time: the largest next time among the worker's partitions, or the wall clock
//! less the idle time, whichever is later. The binding is appended to
//! `<out>/_clock.w<worker>.csv` and fsynced *before* the partition's floor rises, so the
//! frontier never passes a time that a restart could not reproduce: every record that arrives
//! later gets at least the bound time (nothing lands behind the frontier, nothing is lost),
//! and a run that resumes the deployment (`--resume`) reads the bindings back and gives every
//! record the same time. This choice, made at run time and recorded, is what Materialize calls
//! reclocking; it is the only input to ingestion time besides the log.
//!
//! ```text
//!  partition ──poll──► (offset, ts) ──► running max ts ↑ tick ─┐
//!      │                                                        ├─ max ──► time of the record
//!      │               bindings (o_b ≤ offset) ──► floor ───────┘
//!      └─ at its end for --idle-ms ──► bind(next offset, target) ──► _clock.w<i>.csv (fsync) ──► floor
//! ```
//!
//! ## The watermark (`--retention`)
//!
//! The watermark of time `t` is the greatest event `ts` (the JSON field, not the Kafka
//! timestamp) of the records of every partition whose time is below `t` (see
//! `dataflows::horizon`). Since a record's time is a function of its partition's prefix and
//! the recorded clock bindings, so is the watermark: a restart that reads the same records
//! with the same bindings seals the same windows and writes the same `late_events`. (A record
//! far in the future, `ts` = i64::MAX say, seals every window before it: the watermark trusts
//! the producers' clocks as ingestion time does.)
//!
//! ## The end of a caught-up run
//!
//! With `--until-caught-up` every partition stops at the end offset seen at start. The run's
//! last ticks can only be declared complete if no later record can land in them, so a worker
//! whose partitions are all finished *seals* them (see `worker`): binds their end offsets to a
//! time above every time it gave ([`Source::end_time`]), recorded and fsynced like an idle
//! binding, before its input advances there; while other workers still read it seals again at
//! their input times; and at the end every worker seals at the run's end time `E`, the
//! largest of all. The run's upper is then `E`, every change is written, and a later
//! `--resume` gives records that arrived after the end times ≥ `E`.
//!
//! ## Freshness
//!
//! A record's produce time, for the freshness figures, is the partition's running maximum of
//! the timestamps up to it (the same maximum its time is made from): an in-order record's own
//! timestamp, and for a late event (whose timestamp is its old event time) the timestamp of
//! the latest record before it, about when it was really produced. Counting from a late
//! event's own timestamp would report its lateness (up to minutes) as staleness.
//!
//! ## Errors
//!
//! A record without payload or over 1 MiB is handed on as such and becomes a dead letter with
//! `source` = topic and `position` = `partition:offset`. Broker errors are logged and retried
//! by librdkafka (a broker restart is survived); a missing topic is skipped with a warning.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use crate::sources::decode::{MAX_RAW_BYTES, MAX_RECORD_BYTES};
use crate::sources::{Context, InputPosition, Position, Record, ResumeAt, Source, SourceError};

type Result<T, E = SourceError> = std::result::Result<T, E>;

/// What the Kafka source of a run reads and how it keeps time.
#[derive(Clone, Debug)]
pub struct KafkaOptions {
    pub brokers: String,
    /// Topics to read; those missing on the broker are skipped.
    pub topics: Vec<String>,
    /// librdkafka settings passed through (`--kafka-config key=value`).
    pub client_config: Vec<(String, String)>,
    pub tick_ms: u64,
    pub idle_ms: u64,
    /// Stop each partition at the end offset seen at start.
    pub until_caught_up: bool,
    /// Where the clock bindings are kept (the output directory).
    pub clock_dir: PathBuf,
    /// With ClickHouse: the deployment's database, which keeps the bindings too (a fresh
    /// machine resumes from it).
    pub clock_store: Option<crate::clickhouse::Target>,
}

/// A client configuration for the brokers, with chatflow's settings and the user's.
pub fn client_config(brokers: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in extra {
        config.set(key, value);
    }
    config
}

/// A consumer context that does not report reaching a partition's end as an error: the source
/// asks for those events (`enable.partition.eof`) to notice idle partitions.
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition arrives both as its own variant and as a global error code.
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!(error = %error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// The context of a source's consumer (one partition): quiet about partition ends, and keeps
/// the broker's end offset (high watermark) from the client's statistics, for the lag.
struct Reading {
    high: AtomicI64,
}

impl ClientContext for Reading {
    fn error(&self, error: KafkaError, reason: &str) {
        QuietEof.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let high = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|(&p, _)| p >= 0)
            .map(|(_, p)| p.hi_offset)
            .max();
        if let Some(high) = high.filter(|h| *h >= 0) {
            self.high.store(high, Ordering::Relaxed);
        }
    }
}

impl ConsumerContext for Reading {}

/// Partition counts of `topics` (missing topics are left out; the caller says whether that matters).
pub fn partition_counts(brokers: &str, extra: &[(String, String)], topics: &[String]) -> Result<Vec<(String, usize)>> {
    let consumer: BaseConsumer<QuietEof> = client_config(brokers, extra)
        .set("allow.auto.create.topics", "false")
        .create_with_context(QuietEof)
        .context("creating a Kafka client")?;
    let mut out = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("reading metadata of topic {topic} from {brokers}"))?;
        match metadata.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                out.push((topic.clone(), t.partitions().len()))
            }
            _ => {}
        }
    }
    Ok(out)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One owned partition's reading position and clock.
struct Partition {
    partition: i32,
    next_offset: i64,
    /// Largest record timestamp so far (ms), or -1.
    max_ts: i64,
    floor: u64,
    /// Recorded bindings not yet reached, by offset.
    bindings: VecDeque<(i64, u64)>,
    at_end_since: Option<Instant>,
    last_bound: Option<Instant>,
    /// With `--until-caught-up`: the end offset seen at start.
    end: Option<i64>,
    /// Records not yet read (see `KafkaSource::report_lag`).
    lag: metrics::Gauge,
    /// With checkpoints: where each time began, `(time, offset, max_ts before it)`, since
    /// the last checkpoint (see [`Source::resume_at`]).
    history: VecDeque<(u64, i64, i64)>,
}

impl Partition {
    /// The least time the partition's next record can get.
    fn time(&self, tick: u64) -> u64 {
        let clock = if self.max_ts <= 0 { 0 } else { (self.max_ts as u64).div_ceil(tick) * tick };
        clock.max(self.floor)
    }

    fn apply_bindings(&mut self) {
        while let Some(&(offset, time)) = self.bindings.front() {
            if offset > self.next_offset {
                break;
            }
            self.floor = self.floor.max(time);
            self.bindings.pop_front();
        }
    }

    fn finished(&self) -> bool {
        self.end.is_some_and(|end| self.next_offset >= end)
    }
}

/// One topic of a worker: its owned partitions, each with a consumer of its own.
///
/// One consumer per partition, not one per topic: a broker may fill a fetch response for
/// several partitions from the first alone (tansu does), so that one partition's whole backlog
/// arrives before another's first record and the frontier cannot move until it has.
struct TopicReader {
    topic: String,
    partitions: Vec<Partition>,
    consumers: Vec<BaseConsumer<Reading>>,
}

/// The Kafka source of one worker.
pub struct KafkaSource {
    readers: Vec<TopicReader>,
    /// The database that keeps the bindings too, if any.
    store: Option<(crate::clickhouse::Client, String)>,
    /// Whether checkpoints are taken: keep each partition's `history`.
    track: bool,
    tick_ms: u64,
    idle: Duration,
    clock_path: PathBuf,
    clock_file: Option<File>,
    bytes: u64,
}

/// Reads every `_clock.w*.csv` of `dir`: bindings per (topic, partition), by offset, the
/// largest time kept per offset.
pub fn read_bindings(dir: &Path) -> Result<BTreeMap<(String, i32), BTreeMap<i64, u64>>> {
    let mut out: BTreeMap<(String, i32), BTreeMap<i64, u64>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(out) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("_clock.w") && name.ends_with(".csv")) {
            continue;
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_path(entry.path())
            .map_err(|source| SourceError::Clock { path: entry.path(), source })?;
        for record in reader.records() {
            // A torn last line (a crash while appending) is not a binding that took effect.
            let Ok(record) = record else { continue };
            if record.len() != 4 {
                continue;
            }
            let (Ok(partition), Ok(offset), Ok(time)) = (record[1].parse(), record[2].parse(), record[3].parse())
            else {
                continue;
            };
            let slot = out.entry((record[0].to_owned(), partition)).or_default().entry(offset).or_insert(0);
            *slot = (*slot).max(time);
        }
    }
    Ok(out)
}

/// Deletes the clock bindings of `dir` (a new deployment).
pub fn clear_bindings(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("_clock.w") && name.ends_with(".csv") {
            std::fs::remove_file(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// A consumer of one partition with the source's settings, assigned from `from`.
fn partition_consumer(
    options: &KafkaOptions,
    topic: &str,
    partition: i32,
    from: Offset,
) -> Result<BaseConsumer<Reading>> {
    // Fetches of at most 1.25 MiB (librdkafka's default is 50 MiB): a broker that serves
    // fetches one after another (tansu) would otherwise hand out a whole backlog before
    // another partition's first record (measured: the frontier stood still for 2 s of a 3 s
    // catch-up with 4 MiB, moved at once with 1.25 MiB). Yet above the largest record a broker
    // takes by default (1 MiB), which a broker that keeps to the limit (tansu) would never
    // hand out. Records over it need --kafka-config max.partition.fetch.bytes=… (and
    // fetch.max.bytes).
    let defaults = [
        ("fetch.max.bytes".to_string(), "1310720".to_string()),
        ("max.partition.fetch.bytes".to_string(), "1310720".to_string()),
        // Prefetched per partition (librdkafka's default is 64 MiB per consumer).
        ("queued.max.messages.kbytes".to_string(), "16384".to_string()),
        // A fetch waits at most 20 ms for data (librdkafka's 500 ms put about half a second
        // into every record's freshness against tansu: 50,000 msg/s into change files, p50
        // 600 → 137 ms, p99 971 → 502 ms).
        ("fetch.wait.max.ms".to_string(), "20".to_string()),
    ];
    let settings: Vec<(String, String)> = defaults.into_iter().chain(options.client_config.iter().cloned()).collect();
    let consumer: BaseConsumer<Reading> = client_config(&options.brokers, &settings)
        .set("group.id", "chatflow")
        // For the lag: the statistics carry the partition's end offset.
        .set("statistics.interval.ms", "1000")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false")
        .create_with_context(Reading { high: AtomicI64::new(-1) })
        .context("creating a Kafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, from)
        .with_context(|| format!("assigning partition {partition} of {topic}"))?;
    consumer.assign(&assignment).with_context(|| format!("assigning partition {partition} of {topic}"))?;
    Ok(consumer)
}

/// The partition's end offset now; a broker that is restarting refuses at once, so this
/// retries for a minute.
fn end_offset(consumer: &BaseConsumer<Reading>, topic: &str, partition: i32) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok((_, high)) => return Ok(high),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(topic, partition, error = %e, "reading the end offset; retrying");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e).with_context(|| format!("reading the end offset of {topic}/{partition}")),
        }
    }
}

/// What a plain consumer read (see [`read_plainly`]).
#[derive(Debug)]
pub struct PlainRead {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// The sum of the partitions' end offsets seen at start: the records the log claims.
    pub end_offsets: u64,
    /// Offsets below the end that no record was returned for (gaps in a partition's log).
    pub skipped_offsets: u64,
}

/// Reads every partition of `topics` from the beginning to the end offset seen at start with
/// the source's consumers and settings and nothing else (no decoding, no dataflow), on
/// `threads` threads that split the partitions as the workers do: the rate this broker serves
/// chatflow's consumers at, to compare a run with (`chatflow bench --plain-consumer`).
pub fn read_plainly(options: &KafkaOptions, topics: &[(String, usize)], threads: usize) -> Result<PlainRead> {
    let began = Instant::now();
    let reads: Vec<Result<[u64; 4]>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                scope.spawn(move || -> Result<[u64; 4]> {
                    let mut open = Vec::new();
                    let mut ends = 0;
                    for (topic, count) in topics {
                        for partition in (0..*count as i32).filter(|p| *p as usize % threads == index) {
                            let consumer = partition_consumer(options, topic, partition, Offset::Beginning)?;
                            let end = end_offset(&consumer, topic, partition)?;
                            ends += end.max(0) as u64;
                            open.push((consumer, end, 0i64));
                        }
                    }
                    let (mut records, mut bytes, mut skipped) = (0u64, 0u64, 0u64);
                    while !open.is_empty() {
                        let mut got = false;
                        for (consumer, _, next) in &mut open {
                            if let Some(Ok(message)) = consumer.poll(Duration::ZERO) {
                                got = true;
                                skipped += (message.offset() - *next).max(0) as u64;
                                *next = message.offset() + 1;
                                records += 1;
                                bytes += message.payload().map_or(0, |p| p.len()) as u64;
                            }
                        }
                        open.retain(|(_, end, next)| next < end);
                        if !got {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    Ok([records, bytes, ends, skipped])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a reading thread panicked")).collect()
    });
    let mut total = PlainRead { records: 0, bytes: 0, seconds: 0.0, end_offsets: 0, skipped_offsets: 0 };
    for read in reads {
        let [records, bytes, ends, skipped] = read?;
        total.records += records;
        total.bytes += bytes;
        total.end_offsets += ends;
        total.skipped_offsets += skipped;
    }
    total.seconds = began.elapsed().as_secs_f64();
    Ok(total)
}

impl KafkaSource {
    /// Opens the partitions of `topics` (name, partition count) that worker `index` of `peers`
    /// owns, from the beginning of the log or where `resume` says (a checkpoint's positions),
    /// with the recorded clock bindings.
    pub fn new(
        options: &KafkaOptions,
        topics: &[(String, usize)],
        index: usize,
        peers: usize,
        resume: &[ResumeAt],
    ) -> Result<Self> {
        let mut bindings = read_bindings(&options.clock_dir)?;
        let store = options.clock_store.as_ref().map(|t| (crate::clickhouse::Client::new(&t.url), t.database.clone()));
        if let Some((client, db)) = &store {
            for (key, stored) in crate::clickhouse::store::read_bindings(client, db)? {
                let kept = bindings.entry(key).or_default();
                for (offset, time) in stored {
                    let slot = kept.entry(offset).or_insert(time);
                    *slot = (*slot).max(time);
                }
            }
        }
        let mut readers = Vec::new();
        for (topic, count) in topics {
            let owned: Vec<i32> = (0..*count as i32).filter(|p| *p as usize % peers == index).collect();
            if owned.is_empty() {
                continue;
            }
            let mut partitions = Vec::new();
            let mut consumers = Vec::new();
            for &partition in &owned {
                let at = resume.iter().find(|r| r.source == *topic && r.partition == partition);
                let (next_offset, max_ts) = at.map_or((0, -1), |r| (r.next, r.max_ts));
                let from = if next_offset > 0 { Offset::Offset(next_offset) } else { Offset::Beginning };
                let consumer = partition_consumer(options, topic, partition, from)?;
                let end = if options.until_caught_up { Some(end_offset(&consumer, topic, partition)?) } else { None };
                let recorded = bindings.get(&(topic.clone(), partition)).cloned().unwrap_or_default();
                let mut p = Partition {
                    partition,
                    next_offset,
                    max_ts,
                    history: VecDeque::new(),
                    floor: 0,
                    bindings: recorded.into_iter().collect(),
                    at_end_since: None,
                    last_bound: None,
                    end,
                    lag: crate::metrics::kafka_lag(topic, partition),
                };
                p.apply_bindings();
                partitions.push(p);
                consumers.push(consumer);
            }
            tracing::info!(worker = index, topic, partitions = ?owned, "reading Kafka partitions");
            readers.push(TopicReader { topic: topic.clone(), partitions, consumers });
        }
        Ok(KafkaSource {
            readers,
            store,
            track: false,
            tick_ms: options.tick_ms.max(1),
            idle: Duration::from_millis(options.idle_ms),
            clock_path: options.clock_dir.join(format!("_clock.w{index}.csv")),
            clock_file: None,
            bytes: 0,
        })
    }

    /// Keeps what [`Source::resume_at`] needs (a run that takes checkpoints).
    pub fn track_positions(&mut self) {
        self.track = true;
    }

    /// Records `bindings` (topic, partition, offset, time): in the database first, if there is
    /// one, then appended to this worker's clock file, fsynced.
    fn append_bindings(&mut self, bindings: &[(String, i32, i64, u64)]) -> Result<()> {
        if let Some((client, db)) = &self.store {
            crate::clickhouse::store::record_bindings(client, db, bindings)?;
        }
        let lines: String =
            bindings.iter().map(|(topic, p, offset, time)| format!("{topic},{p},{offset},{time}\n")).collect();
        if self.clock_file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.clock_path)
                .with_context(|| format!("opening {}", self.clock_path.display()))?;
            self.clock_file = Some(file);
        }
        let file = self.clock_file.as_mut().expect("opened above");
        file.write_all(lines.as_bytes()).and_then(|_| file.sync_data()).context("recording clock bindings")
    }

    /// Sets each partition's lag gauge: the end offset of the latest statistics (every second)
    /// less the next offset to read; at the end of a partition, 0.
    fn report_lag(&self) {
        for reader in &self.readers {
            for (p, consumer) in reader.partitions.iter().zip(&reader.consumers) {
                let high = consumer.context().high.load(Ordering::Relaxed);
                if p.at_end_since.is_some() || p.finished() {
                    p.lag.set(0.0);
                } else if high >= 0 {
                    p.lag.set((high - p.next_offset).max(0) as f64);
                }
            }
        }
    }

    /// Binds idle partitions to a later time (recorded before it takes effect).
    fn bind_idle(&mut self) -> Result<()> {
        let tick = self.tick_ms;
        let local_max = self.readers.iter().flat_map(|r| &r.partitions).map(|p| p.time(tick)).max().unwrap_or(0);
        let wall = now_ms().saturating_sub(self.idle.as_millis() as u64) / tick * tick;
        let target = local_max.max(wall);
        let idle = self.idle;
        let mut lines = Vec::new();
        let mut raised = Vec::new();
        for (r, reader) in self.readers.iter().enumerate() {
            for (i, p) in reader.partitions.iter().enumerate() {
                let is_idle = p.at_end_since.is_some_and(|t| t.elapsed() >= idle)
                    && p.last_bound.is_none_or(|t| t.elapsed() >= idle)
                    && !p.finished();
                if is_idle && p.time(tick) < target {
                    lines.push((reader.topic.clone(), p.partition, p.next_offset, target));
                    raised.push((r, i));
                }
            }
        }
        if raised.is_empty() {
            return Ok(());
        }
        self.append_bindings(&lines)?;
        for (r, i) in raised {
            let reader = &mut self.readers[r];
            let p = &mut reader.partitions[i];
            p.floor = p.floor.max(target);
            p.last_bound = Some(Instant::now());
            tracing::debug!(
                topic = reader.topic,
                partition = p.partition,
                offset = p.next_offset,
                time = target,
                "idle partition bound"
            );
        }
        Ok(())
    }
}

impl Source for KafkaSource {
    /// Reads the partition with the least time first (the one holding the frontier back), one
    /// record at a time, so that partitions advance together and the frontier with them
    /// instead of one partition's backlog being read before another's first record.
    fn read(&mut self, budget: usize, each: &mut dyn FnMut(Record)) -> Result<()> {
        let tick = self.tick_ms;
        let mut drained: Vec<Vec<bool>> =
            self.readers.iter().map(|r| r.partitions.iter().map(|p| p.finished()).collect()).collect();
        for _ in 0..budget {
            let mut next: Option<(u64, usize, usize)> = None;
            for (r, reader) in self.readers.iter().enumerate() {
                for (i, p) in reader.partitions.iter().enumerate() {
                    let time = p.time(tick);
                    if !drained[r][i] && next.is_none_or(|(t, _, _)| time < t) {
                        next = Some((time, r, i));
                    }
                }
            }
            let Some((_, r, i)) = next else { break };
            let reader = &mut self.readers[r];
            let message = match reader.consumers[i].poll(Duration::ZERO) {
                None => {
                    drained[r][i] = true;
                    continue;
                }
                Some(Ok(message)) => message,
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    reader.partitions[i].at_end_since.get_or_insert_with(Instant::now);
                    drained[r][i] = true;
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = reader.topic, error = %e, "Kafka error; retrying");
                    drained[r][i] = true;
                    continue;
                }
            };
            let p = &mut reader.partitions[i];
            let offset = message.offset();
            if p.finished() || offset < p.next_offset {
                drained[r][i] |= p.finished();
                continue;
            }
            p.next_offset = offset;
            p.apply_bindings();
            let max_ts_before = p.max_ts;
            // Freshness counts from the partition's latest timestamp so far, not the record's
            // own: a late event carries its old event time, but was produced about when the
            // events around it were (see the module doc).
            let produced_ms = message.timestamp().to_millis().map(|ts| {
                p.max_ts = p.max_ts.max(ts);
                p.max_ts
            });
            let time = p.time(tick);
            if self.track && p.history.back().is_none_or(|(t, _, _)| time > *t) {
                p.history.push_back((time, offset, max_ts_before));
            }
            p.next_offset = offset + 1;
            p.apply_bindings();
            p.at_end_since = None;
            drained[r][i] |= p.finished();
            let payload = message.payload();
            let length = payload.map_or(0, |b| b.len());
            self.bytes += length as u64;
            let oversized = (length > MAX_RECORD_BYTES).then_some(length as u64);
            let bytes = payload.map(|b| if oversized.is_some() { &b[..MAX_RAW_BYTES] } else { b });
            each(Record {
                time,
                source: &reader.topic,
                position: Position::Offset { partition: p.partition, offset },
                bytes,
                oversized,
                produced_ms,
            });
        }
        self.report_lag();
        self.bind_idle()
    }

    fn frontier(&self) -> Option<u64> {
        self.readers.iter().flat_map(|r| &r.partitions).filter(|p| !p.finished()).map(|p| p.time(self.tick_ms)).min()
    }

    fn positions(&self) -> Vec<InputPosition> {
        self.readers
            .iter()
            .flat_map(|r| {
                r.partitions.iter().map(|p| InputPosition {
                    source: r.topic.clone(),
                    partition: p.partition,
                    next: p.next_offset,
                })
            })
            .collect()
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn resume_at(&self, time: u64) -> Vec<ResumeAt> {
        let mut at = Vec::new();
        for reader in &self.readers {
            for p in &reader.partitions {
                // The first record read at or after `time`; none yet: the next one (the
                // partition's clock is at `time` or later, so it is the one).
                let (next, max_ts) = match p.history.iter().find(|(t, _, _)| *t >= time) {
                    Some(&(_, offset, max_ts)) => (offset, max_ts),
                    None => (p.next_offset, p.max_ts),
                };
                at.push(ResumeAt { source: reader.topic.clone(), partition: p.partition, next, max_ts });
            }
        }
        at
    }

    fn forget_before(&mut self, time: u64) {
        for p in self.readers.iter_mut().flat_map(|r| &mut r.partitions) {
            while p.history.front().is_some_and(|(t, _, _)| *t < time) {
                p.history.pop_front();
            }
        }
    }

    fn end_time(&self) -> u64 {
        let tick = self.tick_ms;
        let next = self.readers.iter().flat_map(|r| &r.partitions).map(|p| p.time(tick)).max().unwrap_or(0);
        // A record can get its partition's next time itself, so the end is the tick after.
        (next + 1).div_ceil(tick) * tick
    }

    /// Binds every owned partition's end offset to `time`, recorded like an idle binding.
    fn seal(&mut self, time: u64) -> Result<()> {
        let tick = self.tick_ms;
        let mut lines = Vec::new();
        for reader in &self.readers {
            for p in reader.partitions.iter().filter(|p| p.time(tick) < time) {
                lines.push((reader.topic.clone(), p.partition, p.next_offset, time));
            }
        }
        if !lines.is_empty() {
            self.append_bindings(&lines)?;
        }
        for p in self.readers.iter_mut().flat_map(|r| &mut r.partitions) {
            p.floor = p.floor.max(time);
        }
        Ok(())
    }
}

/// The topics and their partition counts, for logs.
pub fn describe(topics: &[(String, usize)]) -> String {
    topics.iter().map(|(t, n)| format!("{t} ({n} partitions)")).collect::<Vec<_>>().join(", ")
}

/// Fails unless some topic exists; warns of the missing ones.
pub fn require_topics(topics: &[(String, usize)], asked: &[String], brokers: &str) -> Result<()> {
    if topics.is_empty() {
        return Err(SourceError::NoTopics { asked: asked.to_vec(), brokers: brokers.to_owned() });
    }
    for topic in asked.iter().filter(|a| !topics.iter().any(|(t, _)| t == *a)) {
        tracing::warn!(topic, "topic not found; skipped");
    }
    tracing::info!(topics = describe(topics), "reading Kafka");
    Ok(())
}
