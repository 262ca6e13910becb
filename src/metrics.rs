//! The live metrics registry: what the workers, sources and sinks count as they run, in the
//! `metrics` crate's facade. One recorder per process fans out to
//! - the Prometheus recorder (`metrics-exporter-prometheus`, no HTTP listener of its own): its
//!   text is what `/metrics` serves ([`render`]);
//! - a registry of counter and gauge values that the run's summary and `chatflow bench` read
//!   back at the end ([`snapshot`]).
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `chatflow_records_total` | source, partition | records read (lines or Kafka messages) |
//! | `chatflow_events_total` | source, partition, kind | well-formed events (chat, edge, post, viewers) |
//! | `chatflow_dead_letters_total` | source, partition | records that became dead letters |
//! | `chatflow_rows_written_total` | view | change rows made durable |
//! | `chatflow_clickhouse_insert_retries_total` | | failed ClickHouse inserts that were retried |
//! | `chatflow_clickhouse_insert_failures_total` | | inserts given up on |
//! | `chatflow_batch_latency_seconds` | | input time closed → every view written (worker 0) |
//! | `chatflow_freshness_seconds` | | live record produced → the committed cut passes it (`sinks::freshness`) |
//! | `chatflow_freshness_stage_seconds` | stage | live record produced → `read` by a worker, `complete` in the dataflow, `handed` to the ClickHouse writer by every worker (`sinks::freshness`) |
//! | `chatflow_freshness_latest_seconds` | | the oldest live record the cut passed last: produced → the cut |
//! | `chatflow_kafka_lag` | source, partition | records in the partition not yet read (the broker's end offset as last fetched − the next offset) |
//! | `chatflow_written_upper` | worker | every update before it is durable (CSV: `worker` 0 for the files) |
//!
//! For files, `partition` is the worker that reads the lines (each worker owns every
//! `peers`-th line of the log); for Kafka it is the partition.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use hdrhistogram::Histogram as Hdr;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::FanoutBuilder;
use metrics_util::registry::{AtomicStorage, Registry};

/// Counter and gauge values kept for reading back (histograms go to Prometheus only).
#[derive(Clone)]
struct Values(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for Values {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0.get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0.get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

struct Installed {
    prometheus: PrometheusHandle,
    values: Values,
}

static INSTALLED: OnceLock<Option<Installed>> = OnceLock::new();

/// Installs the process's recorder (once; later calls do nothing). Returns false if another
/// recorder was installed first, in which case nothing can be read back.
pub fn install() -> bool {
    INSTALLED
        .get_or_init(|| {
            let prometheus = PrometheusBuilder::new().build_recorder();
            let handle = prometheus.handle();
            let values = Values(Arc::new(Registry::atomic()));
            let fanout = FanoutBuilder::default().add_recorder(prometheus).add_recorder(values.clone()).build();
            metrics::set_global_recorder(fanout).ok()?;
            describe();
            Some(Installed { prometheus: handle, values })
        })
        .is_some()
}

fn describe() {
    metrics::describe_counter!("chatflow_records_total", "records read (lines or Kafka messages)");
    metrics::describe_counter!("chatflow_events_total", "well-formed events read, by kind");
    metrics::describe_counter!("chatflow_dead_letters_total", "records that became dead letters");
    metrics::describe_counter!("chatflow_rows_written_total", "change rows made durable, per view");
    metrics::describe_counter!("chatflow_clickhouse_insert_retries_total", "failed ClickHouse inserts, retried");
    metrics::describe_counter!("chatflow_clickhouse_insert_failures_total", "ClickHouse inserts given up on");
    metrics::describe_histogram!("chatflow_batch_latency_seconds", Unit::Seconds, "input time closed → written");
    metrics::describe_histogram!(
        "chatflow_freshness_seconds",
        Unit::Seconds,
        "live record produced → the committed cut passes it"
    );
    metrics::describe_histogram!(
        "chatflow_freshness_stage_seconds",
        Unit::Seconds,
        "live record produced → read, complete in the dataflow, handed to the writer"
    );
    metrics::describe_gauge!("chatflow_written_upper", "every update before this time is durable");
    metrics::describe_gauge!(
        "chatflow_freshness_latest_seconds",
        "the oldest live record the cut passed last: its age"
    );
    metrics::describe_gauge!("chatflow_kafka_lag", "records of the partition not yet read");
    metrics::describe_gauge!("chatflow_windows_held", "with --retention: windows a windowed operator holds");
    metrics::describe_counter!("chatflow_windows_dropped_total", "with --retention: sealed windows dropped");
}

/// With `--retention`: what the windowed operator `operator` of `worker` holds now and has
/// dropped so far (a total kept by the operator).
pub fn windows_held(worker: usize, operator: &str, held: &dataflows::horizon::Held) {
    let labels = [("worker", worker.to_string()), ("operator", operator.to_owned())];
    metrics::gauge!("chatflow_windows_held", &labels).set(held.windows as f64);
    metrics::counter!("chatflow_windows_dropped_total", &labels).absolute(held.dropped);
}

/// `worker` saved its part of a checkpoint: `bytes` in `ms` milliseconds.
pub fn checkpoint_saved(worker: usize, bytes: u64, ms: f64) {
    let labels = [("worker", worker.to_string())];
    metrics::gauge!("chatflow_checkpoint_bytes", &labels).set(bytes as f64);
    metrics::gauge!("chatflow_checkpoint_seconds", &labels).set(ms / 1000.0);
    metrics::counter!("chatflow_checkpoints_total", &labels).increment(1);
}

/// The Prometheus text of every metric, if the registry is installed.
pub fn render() -> Option<String> {
    INSTALLED.get()?.as_ref().map(|i| i.prometheus.render())
}

/// Whether `labels` include every `(label, value)` of `filter`.
fn matches(labels: &[(String, String)], filter: &[(&str, &str)]) -> bool {
    filter.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

/// A series: a metric's name and its labels.
type Series = (String, Vec<(String, String)>);

/// Counter and gauge values at one moment, by name and labels.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    counters: BTreeMap<Series, u64>,
    gauges: BTreeMap<Series, f64>,
}

/// The values now (empty if the registry is not installed).
pub fn snapshot() -> Snapshot {
    let mut snapshot = Snapshot::default();
    if let Some(Some(installed)) = INSTALLED.get() {
        let registry = &installed.values.0;
        let series = |key: &Key| {
            let labels = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
            (key.name().to_owned(), labels)
        };
        for (key, counter) in registry.get_counter_handles() {
            snapshot.counters.insert(series(&key), counter.load(Ordering::Relaxed));
        }
        for (key, gauge) in registry.get_gauge_handles() {
            snapshot.gauges.insert(series(&key), f64::from_bits(gauge.load(Ordering::Relaxed)));
        }
    }
    snapshot
}

impl Snapshot {
    /// The sum of counter `name` over the series whose labels include every `(label, value)`
    /// of `filter`.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> u64 {
        self.counters.iter().filter(|((n, labels), _)| n == name && matches(labels, filter)).map(|(_, v)| v).sum()
    }

    /// The values label `label` takes in the series of counter `name`.
    pub fn labels(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .counters
            .keys()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, labels)| labels.iter().filter(|(k, _)| k == label).map(|(_, v)| v.clone()))
            .collect();
        values.sort();
        values.dedup();
        values
    }

    /// The series of gauge `name`: labels and value.
    pub fn gauges(&self, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
        self.gauges.iter().filter(|((n, _), _)| n == name).map(|((_, labels), v)| (labels.clone(), *v)).collect()
    }

    /// Whether counter `name` has a series with labels including `filter`.
    pub fn has(&self, name: &str, filter: &[(&str, &str)]) -> bool {
        self.counters.keys().any(|(n, labels)| n == name && matches(labels, filter))
    }

    /// The counters' growth since `earlier`; the gauges as they are now.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let counters =
            self.counters.iter().map(|(k, v)| (k.clone(), v - earlier.counters.get(k).copied().unwrap_or(0))).collect();
        Snapshot { counters, gauges: self.gauges.clone() }
    }
}

/// A source partition's counters, registered once and updated in place.
pub struct SourceCounters {
    pub records: Counter,
    pub dead_letters: Counter,
    /// By kind (`EventKind as usize`).
    pub events: [Counter; 4],
}

/// The kinds of event, as the `kind` label names them; `SourceCounters::events` is indexed by
/// `EventKind as usize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Chat,
    Edge,
    Post,
    Viewers,
}

pub const EVENT_KINDS: [&str; 4] = ["chat", "edge", "post", "viewers"];

impl SourceCounters {
    pub fn new(source: &str, partition: &str) -> Self {
        let labels = [("source", source.to_owned()), ("partition", partition.to_owned())];
        SourceCounters {
            records: metrics::counter!("chatflow_records_total", &labels),
            dead_letters: metrics::counter!("chatflow_dead_letters_total", &labels),
            events: EVENT_KINDS.map(|kind| {
                metrics::counter!("chatflow_events_total", "source" => source.to_owned(), "partition" => partition.to_owned(), "kind" => kind)
            }),
        }
    }
}

pub fn rows_written(view: &'static str) -> Counter {
    metrics::counter!("chatflow_rows_written_total", "view" => view)
}

pub fn insert_retry() {
    metrics::counter!("chatflow_clickhouse_insert_retries_total").increment(1);
}

pub fn insert_failure() {
    metrics::counter!("chatflow_clickhouse_insert_failures_total").increment(1);
}

/// The CSV sink's upper (the change files as a whole).
pub fn set_upper(upper: u64) {
    set_worker_upper(0, upper);
}

/// A ClickHouse writer's upper: its worker's updates before it are in the tables.
pub fn set_worker_upper(worker: u32, upper: u64) {
    metrics::gauge!("chatflow_written_upper", "worker" => worker.to_string()).set(upper as f64);
}

/// A histogram of microseconds, from 1 µs to an hour, 3 significant digits.
pub fn histogram() -> Hdr<u64> {
    Hdr::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Records the freshness of live records produced at `produced` (ms since the epoch), made
/// durable now, in `hdr` (µs) and in the registry.
pub fn record_freshness(hdr: &mut Hdr<u64>, produced: &[i64]) {
    if produced.is_empty() {
        return;
    }
    let now = now_ms();
    let registry = metrics::histogram!("chatflow_freshness_seconds");
    let mut oldest = 0;
    for p in produced {
        let us = ((now - p).max(0) as u64 * 1000).max(1);
        hdr.saturating_record(us);
        registry.record(us as f64 / 1e6);
        oldest = oldest.max(us);
    }
    metrics::gauge!("chatflow_freshness_latest_seconds").set(oldest as f64 / 1e6);
}

/// Records that live records reached `stage` of their freshness `ms` after they were
/// produced, in `hdr` (µs) and in the registry.
pub fn record_stage(hdr: &mut Hdr<u64>, stage: &'static str, ms: impl IntoIterator<Item = i64>) {
    let registry = metrics::histogram!("chatflow_freshness_stage_seconds", "stage" => stage);
    for ms in ms {
        let us = (ms.max(0) as u64 * 1000).max(1);
        hdr.saturating_record(us);
        registry.record(us as f64 / 1e6);
    }
}

/// A Kafka partition's lag gauge.
pub fn kafka_lag(topic: &str, partition: i32) -> Gauge {
    metrics::gauge!("chatflow_kafka_lag", "source" => topic.to_owned(), "partition" => partition.to_string())
}

/// Records one batch's latency (µs).
pub fn record_latency(hdr: &mut Hdr<u64>, us: u64) {
    hdr.saturating_record(us);
    metrics::histogram!("chatflow_batch_latency_seconds").record(us as f64 / 1e6);
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_read_back_and_rendered() {
        assert!(super::install());
        let before = super::snapshot();
        let c = super::SourceCounters::new("t.jsonl", "0");
        c.records.increment(3);
        c.events[super::EventKind::Chat as usize].increment(2);
        c.dead_letters.increment(1);
        let delta = super::snapshot().since(&before);
        assert_eq!(delta.sum("chatflow_records_total", &[("source", "t.jsonl")]), 3);
        assert_eq!(delta.sum("chatflow_events_total", &[("kind", "chat")]), 2);
        assert_eq!(delta.sum("chatflow_dead_letters_total", &[]), 1);
        let text = super::render().unwrap();
        assert!(text.contains("chatflow_records_total{source=\"t.jsonl\",partition=\"0\"} 3"), "{text}");
    }
}
