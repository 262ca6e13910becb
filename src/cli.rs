//! The command line: clap definitions only, no I/O.
//!
//! `run` and `bench` take timely's own flags with timely's meanings: `-w` worker threads per
//! process, `-n` processes, `-p` this process's index, `-h` a hostfile (one `host:port` per
//! process). Because `-h` is the hostfile, help is `--help` only on those commands.

use std::path::PathBuf;

use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand, ValueEnum};

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
    /// Convert real chat logs or edge lists into event JSONL (written to stdout or --out).
    Import(ImportArgs),
    /// Generate synthetic chat traffic (a seeded, realistic fixture).
    Produce(ProduceArgs),
    /// Replay fixtures through the pipeline and report throughput, latency and memory as JSON.
    Bench(BenchArgs),
    /// Score chat messages (JSON lines on stdin) by the sentiment rule: each comes back with
    /// its score and class.
    Score(ScoreArgs),
    /// Serve the views over HTTP (a JSON API, live updates, a dashboard) and the metrics.
    Serve(ServeArgs),
    /// Read a view's current rows (or those at --as-of) from a run's change files (--dir) or
    /// from ClickHouse.
    Query(QueryArgs),
}

/// ClickHouse output: where the change tables live. Credentials: CHATFLOW_CH_USER and
/// CHATFLOW_CH_PASSWORD in the environment.
#[derive(Args, Debug, Clone)]
pub struct ClickHouseArgs {
    /// Write the views' changes to this ClickHouse server (HTTP URL; `host:port` means http)
    /// instead of change files.
    #[arg(long, value_name = "URL", value_parser = clickhouse_url)]
    pub clickhouse: Option<String>,
    /// The database of the change tables (created if absent).
    #[arg(long, default_value = "chatflow", requires = "clickhouse")]
    pub database: String,
    /// Write the database even though another run wrote its progress within the last minute
    /// (a run on another machine that is gone, or one to replace).
    #[arg(long = "take-over", requires = "clickhouse")]
    pub take_over: bool,
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
    /// Only rows of this place (place_activity).
    #[arg(long)]
    pub place: Option<String>,
    /// The state at this time (every update at or before it); it must be below the cut.
    #[arg(long = "as-of", value_name = "TIME", allow_negative_numbers = true, value_parser = whole::<u64>(0, NO_MAX))]
    pub as_of: Option<u64>,
    /// At most this many rows (in the order of the view's columns).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole::<u64>(0, NO_MAX))]
    pub limit: Option<u64>,
    /// How to print the rows.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Read the change files of this run output directory (a `run --out`) instead of ClickHouse.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["clickhouse", "database"])]
    pub dir: Option<PathBuf>,
    /// The ClickHouse server (HTTP URL; `host:port` means http) [default: http://127.0.0.1:8123].
    #[arg(long, value_name = "URL", value_parser = clickhouse_url)]
    pub clickhouse: Option<String>,
    /// The ClickHouse database the run wrote [default: chatflow].
    #[arg(long)]
    pub database: Option<String>,
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Directory of the sentiment lexica (emote_average.tsv, emoji_average.tsv, vader_average.tsv).
    #[arg(long = "lexicon-dir", value_name = "DIR")]
    pub lexicon_dir: PathBuf,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("store").args(["from", "clickhouse"]).required(true).multiple(false)))]
#[command(args_override_self = true)]
pub struct ServeArgs {
    /// Read flags from this TOML file (`window = 30`, `resume = true`, `replay = ["a.jsonl"]`:
    /// keys are the long flags); the command line overrides it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on; any address but loopback needs --token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Serve the change files of this run output directory (a `run --out`).
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,
    /// Serve the views of this ClickHouse server (HTTP URL; `host:port` means http).
    #[arg(long, value_name = "URL", value_parser = clickhouse_url)]
    pub clickhouse: Option<String>,
    /// The ClickHouse database the run wrote.
    #[arg(long, default_value = "chatflow", requires = "clickhouse")]
    pub database: String,
    /// Every request must carry `Authorization: Bearer <TOKEN>` (required off loopback).
    #[arg(long, env = "CHATFLOW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve /metrics without the token.
    #[arg(long = "metrics-public")]
    pub metrics_public: bool,
    /// Requests per second allowed to one client address, with bursts of twice as many (0: no limit).
    #[arg(long = "rate-limit", value_name = "PER_SECOND", default_value_t = 200, allow_negative_numbers = true,
          value_parser = whole::<u32>(0, 1_000_000))]
    pub rate_limit: u32,
}

/// timely's process and worker flags.
#[derive(Args, Debug, Clone)]
pub struct TimelyArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "threads", alias = "workers", default_value_t = 1, allow_negative_numbers = true,
          value_parser = whole::<u64>(1, 1024))]
    pub workers: u64,
    /// Number of processes.
    #[arg(short = 'n', long = "processes", default_value_t = 1, allow_negative_numbers = true,
          value_parser = whole::<u64>(1, 1024))]
    pub processes: u64,
    /// Index of this process, 0-based (below -n).
    #[arg(short = 'p', long = "process", default_value_t = 0, allow_negative_numbers = true,
          value_parser = whole::<u64>(0, 1023))]
    pub process: u64,
    /// File with one `host:port` per process (default: 127.0.0.1 from port 2101). Help is --help.
    #[arg(short = 'h', long = "hostfile", value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
}

/// Kafka input: brokers, topics, client settings, and how the source keeps time.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Read events from these Kafka brokers (host:port,...) instead of files.
    #[arg(long, value_name = "BROKERS")]
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
    #[arg(long = "tick-ms", value_name = "MS", default_value_t = 1000, allow_negative_numbers = true,
          value_parser = whole::<u64>(1, NO_MAX))]
    pub tick_ms: u64,
    /// A partition at its end for this long is bound to a later time (see the source's doc).
    #[arg(long = "idle-ms", value_name = "MS", default_value_t = 1000, allow_negative_numbers = true,
          value_parser = whole::<u64>(1, NO_MAX))]
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
    /// Topic of viewer-count events ("" to skip).
    #[arg(long = "viewers-topic", default_value = "viewers")]
    pub viewers_topic: String,
}

impl TopicArgs {
    /// The topics, in order chat, edges, posts, viewers, leaving out empty names.
    pub fn names(&self) -> Vec<String> {
        [&self.chat_topic, &self.edges_topic, &self.posts_topic, &self.viewers_topic]
            .into_iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect()
    }
}

/// A whole number in `min..=max` (`max` = `NO_MAX`: no upper bound); errors say the range in
/// words. Negative input parses, so `--window -5` is a range error, not an unknown flag.
pub fn whole<T: TryFrom<i128>>(min: i128, max: i128) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync {
    move |s: &str| {
        let range = match max {
            NO_MAX => format!("{min} or more"),
            _ => format!("between {min} and {max}"),
        };
        let n: i128 = s.trim().parse().map_err(|_| format!("not a whole number; give one of {range}"))?;
        if n < min || n > max {
            return Err(format!("out of range: must be {range}"));
        }
        T::try_from(n).map_err(|_| format!("too large: must be {range}"))
    }
}

/// No upper bound for `whole`.
pub const NO_MAX: i128 = i128::MAX;

/// A fraction from 0 to 1.
fn fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        Ok(_) => Err("out of range: must be between 0 and 1 (0.01 is 1 %)".into()),
        Err(_) => Err("not a number; give a fraction between 0 and 1".into()),
    }
}

/// A number above 0.
fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        Ok(_) => Err("out of range: must be more than 0".into()),
        Err(_) => Err("not a number; give one more than 0".into()),
    }
}

/// `max` or a factor above 0.
fn speed(s: &str) -> Result<String, String> {
    match s.trim() {
        "max" => Ok("max".into()),
        factor => positive(factor).map(|_| factor.to_owned()).map_err(|e| format!("{e}, or `max`")),
    }
}

/// A ClickHouse HTTP URL; `host:port` gets `http://` in front.
pub fn clickhouse_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let (scheme, rest) = s.split_once("://").unwrap_or(("http", s));
    let host = rest.trim_end_matches('/');
    match scheme {
        "http" | "https" if !host.is_empty() && !host.starts_with([':', '/']) => Ok(format!("{scheme}://{host}")),
        "http" | "https" => Err(format!("{s:?} names no host; give host:port, e.g. 127.0.0.1:8123")),
        _ => Err(format!("{s:?} is not an http:// or https:// URL")),
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// What every pipeline run needs: inputs, view parameters, time assignment. The input is
/// `--replay` or `--kafka`, exactly one.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("input").args(["replay", "kafka"]).required(true).multiple(false)))]
pub struct PipelineArgs {
    /// Event JSONL files or directories (every *.jsonl in them, sorted by name).
    #[arg(long, num_args = 1.., value_name = "FILE|DIR")]
    pub replay: Vec<PathBuf>,
    /// Release the replayed lines at this many a second, as if produced live (freshness
    /// is measured from each line's release); default: as fast as they can be read.
    #[arg(long = "replay-rate", value_name = "LINES_PER_S", requires = "replay", value_parser = positive)]
    pub replay_rate: Option<f64>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Tumbling window of the chat views, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, allow_negative_numbers = true,
          value_parser = whole::<i64>(1, 31_536_000))]
    pub window: i64,
    /// Seal a window (chat, post) once the watermark, the greatest event ts read before, is
    /// this many seconds past its end: its state is dropped, its rows stay, and an event
    /// arriving for it later becomes a late_events row. Default: keep every window.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, value_parser = whole::<i64>(0, 315_360_000))]
    pub retention: Option<i64>,
    /// Seconds between two checkpoints of the operators' state, which a --resume starts
    /// from instead of reading the input again from the beginning (0: only at the end of the
    /// run; see also --no-checkpoints).
    #[arg(long = "checkpoint-interval", value_name = "SECONDS", default_value_t = 60, allow_negative_numbers = true,
          value_parser = whole::<u64>(0, 31_536_000))]
    pub checkpoint_interval: u64,
    /// Take no checkpoints: a --resume reads the input again from the beginning.
    #[arg(long = "no-checkpoints")]
    pub no_checkpoints: bool,
    /// Rows kept per channel by top_words and top_users.
    #[arg(long = "top-k", value_name = "K", default_value_t = 10, allow_negative_numbers = true,
          value_parser = whole::<usize>(1, 10_000))]
    pub top_k: usize,
    /// Input lines per ingestion tick: line g of the inputs gets time floor(g / batch).
    #[arg(long, value_name = "LINES", default_value_t = 10_000, allow_negative_numbers = true,
          value_parser = whole::<u64>(1, NO_MAX))]
    pub batch: u64,
    /// How many input records may be in flight ahead of the written output (bounds memory).
    #[arg(long = "max-inflight", value_name = "RECORDS", default_value_t = 30_000, allow_negative_numbers = true,
          value_parser = whole::<u64>(1, NO_MAX))]
    pub max_inflight: u64,
    /// Longest walks reported by `reach` (2 or 3 hops).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = whole::<u32>(2, 3))]
    pub hops: u32,
    /// Rows kept per focus user by top_connections.
    #[arg(long = "top-connections", value_name = "N", default_value_t = 30, allow_negative_numbers = true,
          value_parser = whole::<usize>(1, 10_000))]
    pub top_connections: usize,
    /// Fail (exit 3, after writing) when more than this fraction of the input lines are dead
    /// letters; the default fails only when every line is.
    #[arg(long = "max-dead-letter-ratio", value_name = "FRACTION", default_value_t = 1.0,
          allow_negative_numbers = true, value_parser = fraction)]
    pub max_dead_letter_ratio: f64,
    /// Users for reach and top_connections, one per line (default: every user of the graph).
    #[arg(long, value_name = "FILE")]
    pub focus: Option<PathBuf>,
    /// A chat message's `@name` also adds an edge (author, name, weight 1).
    #[arg(long = "mention-edges")]
    pub mention_edges: bool,
    /// Directory of the sentiment lexica (emote_average.tsv, emoji_average.tsv,
    /// vader_average.tsv); without it the sentiment view is off (empty).
    #[arg(long = "lexicon-dir", value_name = "DIR")]
    pub lexicon_dir: Option<PathBuf>,
    /// Tumbling window of place_activity, in seconds.
    #[arg(long = "post-window", value_name = "SECONDS", default_value_t = 300, allow_negative_numbers = true,
          value_parser = whole::<i64>(1, 31_536_000))]
    pub post_window: i64,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true, args_override_self = true)]
pub struct RunArgs {
    /// Read flags from this TOML file (`window = 30`, `resume = true`, `replay = ["a.jsonl"]`:
    /// keys are the long flags); the command line overrides it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Directory for the change files, one <view>.csv per view.
    #[arg(long, value_name = "DIR", default_value = "out")]
    pub out: PathBuf,
    /// Continue the deployment in --out: keep its clock bindings, recompute from the beginning
    /// of the log and append only what its change files lack.
    #[arg(long, conflicts_with = "from_beginning")]
    pub resume: bool,
    /// Start a new deployment in --out (the default): clear its files and clock bindings.
    #[arg(long = "from-beginning")]
    pub from_beginning: bool,
    /// Also serve the views and this run's live metrics over HTTP (as `chatflow serve`) on
    /// this address, during the run and after it until interrupted.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<std::net::SocketAddr>,
    /// With --serve: every request must carry `Authorization: Bearer <TOKEN>` (required off
    /// loopback).
    #[arg(long, env = "CHATFLOW_TOKEN", hide_env_values = true, requires = "serve")]
    pub token: Option<String>,
    /// With --serve: serve /metrics without the token.
    #[arg(long = "metrics-public", requires = "serve")]
    pub metrics_public: bool,
    #[command(flatten)]
    pub timely: TimelyArgs,
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true, args_override_self = true)]
pub struct BenchArgs {
    /// Read flags from this TOML file (`window = 30`, `resume = true`, `replay = ["a.jsonl"]`:
    /// keys are the long flags); the command line overrides it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Keep the change files in this directory (default: a temporary one, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also report the time spent in each named operator, summed over the workers, and each
    /// worker's total (`operator_seconds`, `worker_operator_seconds`; the change files'
    /// writer thread is always reported, as `writer_thread_seconds`).
    #[arg(long)]
    pub profile: bool,
    /// With --kafka: only read the topics to the end offsets seen at start, with the source's
    /// consumers and settings on as many threads as -w, and report records/s: the broker's
    /// rate for chatflow's consumers, to compare a run with. No views are computed.
    #[arg(long = "plain-consumer", requires = "kafka")]
    pub plain_consumer: bool,
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
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Write the events to this file instead of stdout.
    #[arg(long = "out", alias = "out-file", value_name = "FILE")]
    pub out_file: Option<PathBuf>,
    /// The `ts` given to imported edges (edge lists carry no time), ms since the epoch.
    #[arg(long = "edge-ts", value_name = "MS", default_value_t = 0, allow_negative_numbers = true,
          value_parser = whole::<i64>(0, i64::MAX as i128))]
    pub edge_ts: i64,
    /// Fail (exit 3, after writing) when more than this fraction of the lines cannot be
    /// imported; the default fails only when none can.
    #[arg(long = "max-dead-letter-ratio", value_name = "FRACTION", default_value_t = 1.0,
          allow_negative_numbers = true, value_parser = fraction)]
    pub max_dead_letter_ratio: f64,
}

/// What `chatflow produce` generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProduceKind {
    /// Chat messages.
    Chat,
    /// Edge events in batches, adds and (with --delete-fraction) deletes.
    Edges,
    /// Posts with places (Zipf-popular), retweets and re-deliveries.
    Posts,
    /// Viewer counts of each channel, every --viewers-interval-ms.
    Viewers,
}

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    /// Write the events to this JSONL file.
    #[arg(
        long = "out",
        alias = "out-file",
        value_name = "FILE",
        required_unless_present = "kafka",
        conflicts_with = "kafka"
    )]
    pub out_file: Option<PathBuf>,
    /// Produce into these Kafka brokers instead, paced in real time.
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// Replay this event JSONL file into the topics (chat keyed by channel, edges by src).
    #[arg(long, requires = "kafka", value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Join these Twitch channels' chat anonymously and send every message to the chat topic,
    /// until interrupted (live chat; with --kafka).
    #[arg(long = "from-irc", value_name = "CHANNEL", num_args = 1.., requires = "kafka", conflicts_with = "from")]
    pub from_irc: Vec<String>,
    /// The IRC server of --from-irc (host:port).
    #[arg(long = "irc-server", value_name = "HOST:PORT", default_value = crate::produce::irc::TWITCH_IRC)]
    pub irc_server: String,
    /// With --from: replay at this multiple of the events' own pace, or `max`.
    #[arg(long, default_value = "max", allow_negative_numbers = true, value_parser = speed)]
    pub speed: String,
    /// What to generate: one kind, or several (`chat,viewers`) interleaved by event time.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "chat")]
    pub kind: Vec<ProduceKind>,
    /// Number of events (default: 100000 into a file; until interrupted into Kafka).
    #[arg(long, allow_negative_numbers = true, value_parser = whole::<u64>(0, NO_MAX))]
    pub count: Option<u64>,
    /// Random seed: the same seed and flags give the same events.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = whole::<u64>(0, u64::MAX as i128))]
    pub seed: u64,
    /// Number of channels (their popularity is Zipf-distributed).
    #[arg(long, default_value_t = 20, allow_negative_numbers = true, value_parser = whole::<u64>(1, 1_000_000))]
    pub channels: u64,
    /// Number of users (their activity is Zipf-distributed).
    #[arg(long, default_value_t = 5_000, allow_negative_numbers = true, value_parser = whole::<u64>(1, 100_000_000))]
    pub users: u64,
    /// Fraction of messages that arrive late, with a time up to 5 minutes before the stream's.
    #[arg(long = "late-fraction", default_value_t = 0.01, allow_negative_numbers = true, value_parser = fraction)]
    pub late_fraction: f64,
    /// Chat messages per second (of event time; into Kafka also of wall time).
    #[arg(long, default_value_t = 200.0, allow_negative_numbers = true, value_parser = positive)]
    pub rate: f64,
    /// Event time of the first message, ms since the epoch (default 2025-03-01T00:00:00Z; into
    /// Kafka: now).
    #[arg(long = "start-ms", value_name = "MS", allow_negative_numbers = true, value_parser = whole::<i64>(0, i64::MAX as i128))]
    pub start_ms: Option<i64>,
    /// Edges per batch (--kind edges).
    #[arg(long = "edges-per-batch", default_value_t = 10, allow_negative_numbers = true, value_parser = whole::<u64>(1, NO_MAX))]
    pub edges_per_batch: u64,
    /// Milliseconds between edge batches (--kind edges).
    #[arg(long = "batch-interval-ms", value_name = "MS", default_value_t = 60_000, allow_negative_numbers = true,
          value_parser = whole::<u64>(0, NO_MAX))]
    pub batch_interval_ms: u64,
    /// Edges join user ids 0..N (--kind edges).
    #[arg(long = "user-ids", value_name = "N", default_value_t = 1_000, allow_negative_numbers = true,
          value_parser = whole::<u64>(2, NO_MAX))]
    pub user_ids: u64,
    /// Number of places posts come from (--kind posts; Zipf-popular).
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = whole::<u64>(1, 1_000_000))]
    pub places: u64,
    /// Fraction of posts that are retweets (--kind posts).
    #[arg(long = "retweet-fraction", default_value_t = 0.3, allow_negative_numbers = true, value_parser = fraction)]
    pub retweet_fraction: f64,
    /// Fraction of posts delivered again, as an exact copy or with another `ts` (--kind posts).
    #[arg(long = "redeliver-fraction", default_value_t = 0.02, allow_negative_numbers = true, value_parser = fraction)]
    pub redeliver_fraction: f64,
    /// Milliseconds between two viewer counts of a channel (--kind viewers).
    #[arg(long = "viewers-interval-ms", value_name = "MS", default_value_t = 10_000, allow_negative_numbers = true,
          value_parser = whole::<u64>(1, NO_MAX))]
    pub viewers_interval_ms: u64,
    /// Fraction of edge events that delete an earlier edge (--kind edges).
    #[arg(long = "delete-fraction", default_value_t = 0.0, allow_negative_numbers = true, value_parser = fraction)]
    pub delete_fraction: f64,
    #[command(flatten)]
    pub topics: TopicArgs,
    /// Partitions of topics this command creates.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true, value_parser = whole::<i32>(1, 10_000))]
    pub partitions: i32,
    /// A librdkafka setting passed through; repeatable.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub kafka_config: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_flag_has_help() {
        let cli = Cli::command();
        for command in cli.get_subcommands() {
            for arg in command.get_arguments() {
                if matches!(arg.get_id().as_str(), "help" | "version") {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "chatflow {} {} has no --help text",
                    command.get_name(),
                    arg.get_id()
                );
            }
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn numbers_say_their_range() {
        let parse = whole::<u64>(1, NO_MAX);
        assert_eq!(parse("5"), Ok(5));
        assert_eq!(parse("0"), Err("out of range: must be 1 or more".into()));
        assert_eq!(parse("-5"), Err("out of range: must be 1 or more".into()));
        assert!(parse("five").unwrap_err().contains("not a whole number"));
        assert_eq!(whole::<u32>(2, 3)("4"), Err("out of range: must be between 2 and 3".into()));
        assert!(fraction("2").unwrap_err().contains("between 0 and 1"));
        assert_eq!(fraction("0.5"), Ok(0.5));
        assert!(positive("0").is_err());
        assert_eq!(speed("max"), Ok("max".into()));
        assert!(speed("-1").is_err());
    }

    #[test]
    fn clickhouse_urls() {
        assert_eq!(clickhouse_url("localhost:8123"), Ok("http://localhost:8123".into()));
        assert_eq!(clickhouse_url("https://ch.example:8443/"), Ok("https://ch.example:8443".into()));
        assert!(clickhouse_url("http://").is_err());
        assert!(clickhouse_url("ftp://x").is_err());
    }

    #[test]
    fn input_is_replay_or_kafka() {
        assert!(Cli::try_parse_from(["chatflow", "run"]).is_err());
        assert!(Cli::try_parse_from(["chatflow", "run", "--replay", "x", "--kafka", "b"]).is_err());
        assert!(Cli::try_parse_from(["chatflow", "run", "--kafka", "b"]).is_ok());
        assert!(Cli::try_parse_from(["chatflow", "run", "--replay", "x", "--window", "-5"]).is_err());
        let parsed = Cli::try_parse_from(["chatflow", "import", "--from", "twitch-csv", "a.csv", "--out", "e.jsonl"]);
        assert!(matches!(parsed.map(|c| c.command), Ok(Command::Import(ImportArgs { out_file: Some(_), .. }))));
    }
}
