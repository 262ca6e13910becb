//! API latency under load: 16 concurrent clients asking `chatflow serve` for
//! `/api/views/top_words?channel=<busiest>`, over the CSV change files of a run and (when a
//! ClickHouse server answers on 127.0.0.1:8123) over ClickHouse.
//!
//! `cargo bench --bench serve_load [-- <events> <requests per client>]` (defaults 200000 and
//! 200) generates a chat fixture, runs it into a change directory (and a database), starts the
//! server on a free loopback port, and prints one JSON line per store: requests, seconds,
//! requests/s and latency p50/p99/max in microseconds.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;

fn chatflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chatflow"))
}

fn run(args: &[&str]) {
    let status = chatflow().args(args).stdout(Stdio::null()).status().expect("chatflow starts");
    assert!(status.success(), "chatflow {args:?} failed");
}

/// `chatflow serve` with `args`; returns the process and its address once it listens.
#[allow(clippy::zombie_processes, reason = "the caller kills and waits")]
fn serve(args: &[&str]) -> (Child, String) {
    let mut child = chatflow()
        .args(["serve", "--listen", "127.0.0.1:0", "--rate-limit", "0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("chatflow serve starts");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).expect("reads") > 0, "chatflow serve ended before listening");
        if let Some(address) = line.trim().strip_prefix("chatflow serve: listening on http://") {
            let address = address.to_owned();
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return (child, address);
        }
    }
}

/// `CLIENTS` threads of `requests` GETs each; prints the figures as one JSON line.
fn load(store: &str, address: &str, path: &str, requests: usize) {
    let url = format!("http://{address}{path}");
    // Warm up (and check) once.
    let body = ureq::get(&url).call().expect("the API answers").into_string().expect("text");
    assert!(body.contains("\"rows\""), "{body}");
    let began = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
                let mut latencies = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
                for _ in 0..requests {
                    let start = Instant::now();
                    let response = agent.get(&url).call().expect("the API answers");
                    response.into_string().expect("text");
                    latencies.record(start.elapsed().as_micros() as u64).expect("in range");
                }
                latencies
            })
        })
        .collect();
    let mut all = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for t in threads {
        all.add(t.join().expect("client thread")).expect("same bounds");
    }
    let seconds = began.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "store": store, "path": path, "clients": CLIENTS, "requests": all.len(), "seconds": seconds,
            "requests_per_s": all.len() as f64 / seconds,
            "latency_us": {"p50": all.value_at_quantile(0.5), "p99": all.value_at_quantile(0.99), "max": all.max()},
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let events: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let dir = tempfile::tempdir().expect("a scratch directory");
    let fixture = dir.path().join("chat.jsonl");
    let fixture = fixture.to_str().expect("UTF-8 path");
    run(&["produce", "--out", fixture, "--count", &events.to_string(), "--seed", "42"]);
    let out = dir.path().join("out");
    let out = out.to_str().expect("UTF-8 path");
    run(&["run", "--replay", fixture, "--out", out]);
    let path = "/api/views/top_words?channel=xqc";

    let (mut server, address) = serve(&["--from", out]);
    load("csv", &address, path, requests);
    let _ = server.kill();
    let _ = server.wait();

    let clickhouse = "127.0.0.1:8123";
    let reachable =
        std::net::TcpStream::connect_timeout(&clickhouse.parse().expect("address"), Duration::from_secs(1)).is_ok();
    if !reachable {
        eprintln!("serve_load: no ClickHouse on {clickhouse} (scripts/clickhouse.sh start); the CSV store only");
        return;
    }
    let database = format!("bench_serve_{}", std::process::id());
    run(&[
        "run",
        "--replay",
        fixture,
        "--out",
        out,
        "--clickhouse",
        clickhouse,
        "--database",
        &database,
        "--from-beginning",
    ]);
    let (mut server, address) = serve(&["--clickhouse", clickhouse, "--database", &database]);
    load("clickhouse", &address, path, requests);
    let _ = server.kill();
    let _ = server.wait();
    let _ = ureq::post(&format!("http://{clickhouse}/")).send_string(&format!("DROP DATABASE IF EXISTS {database}"));
}
