//! Usage: cargo bench --bench chat_views [-- <messages> [<workers>...]]   (default: 1000000 1 2)
//!
//! Generates a seeded chat fixture (target/bench/), replays it through every chat view into CSV
//! change files, and prints one JSON line per worker count: events/s, peak RSS and per-batch
//! latency percentiles. `chatflow bench` measures the same with any input; this harness keeps
//! the input fixed so that runs compare.

use std::path::PathBuf;

use chatflow::cli::{Cli, Command, TimelyArgs};
use chatflow::run::{execute, peak_rss_bytes, plan, Start};
use clap::Parser;

fn main() {
    chatflow::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let count: u64 = args.first().map(|c| c.parse().expect("messages: a number")).unwrap_or(1_000_000);
    let workers: Vec<u64> = if args.len() > 1 {
        args[1..].iter().map(|w| w.parse().expect("workers: a number")).collect()
    } else {
        vec![1, 2]
    };

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    let fixture = dir.join(format!("chat-{count}-seed42.jsonl"));
    if !fixture.exists() {
        let path = fixture.to_str().expect("UTF-8 path");
        let Command::Produce(produce) =
            Cli::parse_from(["chatflow", "produce", "--count", &count.to_string(), "--seed", "42", "--out", path])
                .command
        else {
            unreachable!("parsed a produce command")
        };
        chatflow::produce::produce_file(&produce, &fixture).expect("write the fixture");
    }
    for w in workers {
        let out = tempfile::tempdir().expect("scratch dir");
        let Command::Bench(bench) =
            Cli::parse_from(["chatflow", "bench", "--replay", fixture.to_str().expect("UTF-8 path")]).command
        else {
            unreachable!("parsed a bench command")
        };
        let pipeline = bench.pipeline;
        let timely = TimelyArgs { workers: w, processes: 1, process: 0, hostfile: None };
        let outcome =
            execute(plan(&pipeline, out.path().to_path_buf(), Start::FromBeginning, &timely).expect("plan"), &timely)
                .expect("run");
        let h = outcome.latency().expect("worker 0 measures latency");
        println!(
            "{{\"bench\":\"chat_views\",\"messages\":{},\"workers\":{w},\"seconds\":{:.3},\"events_per_s\":{:.0},\"peak_rss_bytes\":{},\"batch_latency_us\":{{\"p50\":{},\"p99\":{},\"max\":{}}}}}",
            outcome.events(),
            outcome.seconds,
            outcome.events() as f64 / outcome.seconds,
            peak_rss_bytes().unwrap_or(0),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
}
