//! The command line: clap definitions only, no I/O.
//!
//! `run` and `bench` take timely's own flags with timely's meanings: `-w` worker threads per
//! process, `-n` processes, `-p` this process's index, `-h` a hostfile (one `host:port` per
//! process). Because `-h` is the hostfile, help is `--help` only on those commands.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

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

/// What every pipeline run needs: inputs, view parameters, time assignment.
#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// Event JSONL files or directories (every *.jsonl in them, sorted by name).
    #[arg(long, num_args = 1.., required = true, value_name = "FILE|DIR")]
    pub replay: Vec<PathBuf>,
    /// Tumbling window of the chat views, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..))]
    pub window: i64,
    /// Rows kept per channel by top_words and top_users.
    #[arg(long = "top-k", default_value_t = 10)]
    pub top_k: usize,
    /// Input lines per ingestion tick: line g of the inputs gets time floor(g / batch).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// How many input lines may be in flight ahead of the written output (bounds memory).
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
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Directory for the change files, one <view>.csv per view.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
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

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    /// Write the events to this JSONL file.
    #[arg(long = "out-file", required = true)]
    pub out_file: PathBuf,
    /// Number of chat messages.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Random seed: the same seed and flags give the same file.
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
    /// Messages per second of event time.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Event time of the first message, ms since the epoch (default 2025-03-01T00:00:00Z).
    #[arg(long = "start-ms", default_value_t = 1_740_787_200_000)]
    pub start_ms: i64,
}
