//! The command line: clap definitions only, no I/O.
//!
//! `run` and `bench` take timely's own flags with timely's meanings: `-w` worker threads per
//! process, `-n` processes, `-p` this process's index, `-h` a hostfile (one `host:port` per
//! process). Because `-h` is the hostfile, help is `--help` only on those commands.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::sources::import::ImportFormat;

#[derive(Parser, Debug)]
#[command(name = "chatflow", version, about = "Incremental analytics for social streams on differential dataflow")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the pipeline: read events, maintain every view, write each view's changes.
    Run(RunArgs),
    /// Convert real chat logs or edge lists into event JSONL (written to stdout or --out-file).
    Import(ImportArgs),
    /// Generate synthetic chat traffic (a seeded, realistic fixture).
    Produce(ProduceArgs),
    /// Replay fixtures through the pipeline and report throughput, latency and memory as JSON.
    Bench(BenchArgs),
    /// Read a view from ClickHouse at the committed cut (or at --as-of).
    Query(QueryArgs),
}

/// ClickHouse output: where the change tables live. Credentials: CHATFLOW_CH_USER and
/// CHATFLOW_CH_PASSWORD in the environment.
#[derive(Args, Debug, Clone)]
pub struct ClickHouseArgs {
    /// Write the views' changes to this ClickHouse server (HTTP URL) instead of CSV files.
    #[arg(long, value_name = "URL")]
    pub clickhouse: Option<String>,
    /// The database of the change tables (created if absent).
    #[arg(long, default_value = "chatflow", requires = "clickhouse")]
    pub database: String,
}

/// How `chatflow query` prints rows.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// A header with the view's column names, then one line per row.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// The names of the views, from the catalog.
fn view_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        dataflows::CATALOG.iter().map(|v| clap::builder::PossibleValue::new(v.name)),
    )
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The view (its columns are those of the README's table).
    #[arg(value_parser = view_names())]
    pub view: String,
    /// Only rows of this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Only rows of this user (connections: either end).
    #[arg(long)]
    pub user: Option<String>,
    /// The state at this time (every update at or before it); it must be below the cut.
    #[arg(long = "as-of")]
    pub as_of: Option<u64>,
    /// At most this many rows (in the order of the view's columns).
    #[arg(long)]
    pub limit: Option<u64>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// The ClickHouse server (HTTP URL).
    #[arg(long, default_value = "http://127.0.0.1:8123")]
    pub clickhouse: String,
    #[arg(long, default_value = "chatflow")]
    pub database: String,
}

/// timely's process and worker flags.
#[derive(Args, Debug, Clone)]
pub struct TimelyArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "threads", alias = "workers", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub workers: u64,
    /// Number of processes.
    #[arg(short = 'n', long = "processes", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub processes: u64,
    /// Index of this process, 0-based.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: u64,
    /// File with one `host:port` per process (default: 127.0.0.1 from port 2101).
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
}

/// Kafka input: brokers, topics, client settings, and how the source keeps time.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Read events from these Kafka brokers (host:port,...) instead of files.
    #[arg(long, value_name = "BROKERS", conflicts_with = "replay")]
    pub kafka: Option<String>,
    #[command(flatten)]
    pub topics: TopicArgs,
    /// A librdkafka setting passed through (SASL, TLS, ...); repeatable.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kafka_config: Vec<(String, String)>,
    /// Stop once every owned partition has been read up to the end offsets seen at start.
    #[arg(long = "until-caught-up")]
    pub until_caught_up: bool,
    /// Ingestion times are event times rounded up to this many milliseconds.
    #[arg(long = "tick-ms", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tick_ms: u64,
    /// A partition at its end for this long is bound to a later time (see the source's doc).
    #[arg(long = "idle-ms", default_value_t = 1000)]
    pub idle_ms: u64,
}

/// The topic of each kind of event, the same flags for `run` and `produce`.
#[derive(Args, Debug, Clone)]
pub struct TopicArgs {
    /// Topic of chat events ("" to skip).
    #[arg(long = "chat-topic", default_value = "chat")]
    pub chat_topic: String,
    /// Topic of edge events ("" to skip).
    #[arg(long = "edges-topic", default_value = "edges")]
    pub edges_topic: String,
    /// Topic of post events ("" to skip).
    #[arg(long = "posts-topic", default_value = "posts")]
    pub posts_topic: String,
}

impl TopicArgs {
    /// The topics, in order chat, edges, posts, leaving out empty names.
    pub fn names(&self) -> Vec<String> {
        [&self.chat_topic, &self.edges_topic, &self.posts_topic]
            .into_iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect()
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// What every pipeline run needs: inputs, view parameters, time assignment.
#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// Event JSONL files or directories (every *.jsonl in them, sorted by name).
    #[arg(long, num_args = 1.., required_unless_present = "kafka", value_name = "FILE|DIR")]
    pub replay: Vec<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Tumbling window of the chat views, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..))]
    pub window: i64,
    /// Rows kept per channel by top_words and top_users.
    #[arg(long = "top-k", default_value_t = 10)]
    pub top_k: usize,
    /// Input lines per ingestion tick: line g of the inputs gets time floor(g / batch).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// How many input records may be in flight ahead of the written output (bounds memory).
    #[arg(long = "max-inflight", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_inflight: u64,
    /// Longest walks reported by `reach` (2 or 3 hops).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=3))]
    pub hops: u32,
    /// Rows kept per focus user by top_connections.
    #[arg(long = "top-connections", default_value_t = 30)]
    pub top_connections: usize,
    /// Users for reach and top_connections, one per line (default: every user of the graph).
    #[arg(long, value_name = "FILE")]
    pub focus: Option<PathBuf>,
    /// A chat message's `@name` also adds an edge (author, name, weight 1).
    #[arg(long = "mention-edges")]
    pub mention_edges: bool,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Directory for the change files, one <view>.csv per view.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Continue the deployment in --out: keep its clock bindings, recompute from the beginning
    /// of the log and append only what its change files lack.
    #[arg(long, conflicts_with = "from_beginning")]
    pub resume: bool,
    /// Start a new deployment in --out (the default): clear its files and clock bindings.
    #[arg(long = "from-beginning")]
    pub from_beginning: bool,
    #[command(flatten)]
    pub timely: TimelyArgs,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Keep the change files in this directory (default: a temporary one, removed afterwards).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also report the time worker 0 spent in each named operator.
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub timely: TimelyArgs,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The format of the input logs.
    #[arg(long = "from", value_enum)]
    pub format: ImportFormat,
    /// Log files to convert, in order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the events here instead of stdout.
    #[arg(long = "out-file")]
    pub out_file: Option<PathBuf>,
    /// The `ts` given to imported edges (edge lists carry no time), ms since the epoch.
    #[arg(long = "edge-ts", default_value_t = 0)]
    pub edge_ts: i64,
}

/// What `chatflow produce` generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProduceKind {
    /// Chat messages.
    Chat,
    /// Edge events in batches, adds and (with --delete-fraction) deletes.
    Edges,
}

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    /// Write the events to this JSONL file.
    #[arg(long = "out-file", required_unless_present = "kafka", conflicts_with = "kafka")]
    pub out_file: Option<PathBuf>,
    /// Produce into these Kafka brokers instead, paced in real time.
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// Replay this event JSONL file into the topics (chat keyed by channel, edges by src).
    #[arg(long, requires = "kafka", value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// With --from: replay at this multiple of the events' own pace, or `max`.
    #[arg(long, default_value = "max")]
    pub speed: String,
    /// What to generate.
    #[arg(long, value_enum, default_value = "chat")]
    pub kind: ProduceKind,
    /// Number of events (default: 100000 into a file; until interrupted into Kafka).
    #[arg(long)]
    pub count: Option<u64>,
    /// Random seed: the same seed and flags give the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of channels (their popularity is Zipf-distributed).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub channels: u64,
    /// Number of users (their activity is Zipf-distributed).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub users: u64,
    /// Fraction of messages that arrive late, with a time up to 5 minutes before the stream's.
    #[arg(long = "late-fraction", default_value_t = 0.01)]
    pub late_fraction: f64,
    /// Chat messages per second (of event time; into Kafka also of wall time).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Event time of the first message, ms since the epoch (default 2025-03-01T00:00:00Z; into
    /// Kafka: now).
    #[arg(long = "start-ms")]
    pub start_ms: Option<i64>,
    /// Edges per batch (--kind edges).
    #[arg(long = "edges-per-batch", default_value_t = 10)]
    pub edges_per_batch: u64,
    /// Milliseconds between edge batches (--kind edges).
    #[arg(long = "batch-interval-ms", default_value_t = 60_000)]
    pub batch_interval_ms: u64,
    /// Edges join user ids 0..N (--kind edges).
    #[arg(long = "user-ids", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(2..))]
    pub user_ids: u64,
    /// Fraction of edge events that delete an earlier edge (--kind edges).
    #[arg(long = "delete-fraction", default_value_t = 0.0)]
    pub delete_fraction: f64,
    #[command(flatten)]
    pub topics: TopicArgs,
    /// Partitions of topics this command creates.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// A librdkafka setting passed through; repeatable.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kafka_config: Vec<(String, String)>,
}
