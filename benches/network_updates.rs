//! Usage: cargo bench --bench network_updates [-- [--graph FILE] [--changes N] [--hops 2|3] [--focus FILE] [-w N] [--profile]]
//!
//! Loads a graph (an edge list CSV or edge-event JSONL; default: MUSAE ENGB from
//! ../shared/data) through the network views into CSV change files, then applies `N` (default
//! 10,000) single-edge changes one at a time — each its own timely time, half deleting a
//! current edge, half adding a random one — and measures each change's latency from closing
//! its input to the probe showing its changes written. Prints one JSON line: load seconds,
//! peak RSS, latency p50/p99/max in microseconds, the rows each change wrote (p50/p99/max,
//! all workers' views) and the latency per row of the slowest 1 %, and, when the benchmarks'
//! venv has scipy,
//! the same walks by a plain sparse product (`scripts/lib/walks_scipy.py`) and the load's
//! ratio to it (`scripts/bench.sh network` makes the venv and runs the standard graphs).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatflow::sinks::csv::CsvSink;
use chatflow::sinks::freshness::{Cut, Freshness};
use chatflow::sinks::{Sink, Written};
use chatflow::sources::decode::{decode, Event};
use chatflow::sources::import::{import, ImportFormat, ImportOptions};
use dataflows::network::{network_views, NetworkConfig};
use dataflows::{Diff, EdgeOp, Name};
use differential_dataflow::input::Input;
use differential_dataflow::AsCollection;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use timely::dataflow::operators::{Concatenate, Inspect, Probe};
use timely::dataflow::ProbeHandle;

/// Load seconds and each change's (latency in µs, rows written), from worker 0.
type Measured = (f64, Vec<(u64, u64)>);

/// The network views into CSV change files, counting the rows (all workers').
struct ToCsv<'s> {
    sink: CsvSink,
    written: Vec<Written<'s>>,
    rows: Arc<AtomicU64>,
}

impl<'s> dataflows::Exporter<'s, u64> for ToCsv<'s> {
    fn export<R: dataflows::ViewRow>(&mut self, rows: differential_dataflow::VecCollection<'s, u64, R>) {
        // Counted a batch at a time: one shared counter touched per row would be part of what
        // the changes' latency measures.
        let counted = Arc::clone(&self.rows);
        let rows = rows.inner.inspect_core(move |event| {
            if let Ok((_, batch)) = event {
                counted.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        });
        let rows = rows.as_collection();
        self.written.push(self.sink.export(rows));
    }
}

fn main() {
    chatflow::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let graph = flag("--graph")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/data/musae-twitch/input/edges/ENGB_edges.csv"));
    let changes: usize = flag("--changes").map_or(10_000, |c| c.parse().expect("--changes N"));
    let hops: u32 = flag("--hops").map_or(2, |h| h.parse().expect("--hops 2|3"));
    let workers: usize = flag("-w").map_or(1, |w| w.parse().expect("-w N"));
    let profile = args.iter().any(|a| a == "--profile");
    let focus: Option<Vec<String>> = flag("--focus").map(|f| {
        std::fs::read_to_string(f)
            .expect("focus file")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    });

    // Edge events, from an edge list (imported in memory) or JSONL.
    let bytes = if graph.extension().is_some_and(|e| e == "csv") {
        let mut out = Vec::new();
        import(ImportFormat::EdgesCsv, &[&graph], &ImportOptions::default(), &mut out).expect("import the edge list");
        out
    } else {
        std::fs::read(&graph).expect("read the graph")
    };
    let edges: Vec<(Name, Name, Diff)> = bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| match decode(line) {
            Ok(Event::Edge(e)) => Some((e.src, e.dst, if e.op == EdgeOp::Del { -e.weight } else { e.weight } as Diff)),
            _ => None,
        })
        .collect();
    let edge_count = edges.len();
    let edges = Arc::new(edges);
    let result: Arc<Mutex<Option<Measured>>> = Arc::default();
    let out = tempfile::tempdir().expect("scratch dir");
    let out_dir = out.path().to_path_buf();
    let result_slot = Arc::clone(&result);
    let rows_written = Arc::new(AtomicU64::new(0));

    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let probe = ProbeHandle::new();
        let focus = focus.clone();
        let operators = profile.then(|| chatflow::profile::OperatorProfile::install(worker));
        let (mut edges_in, mut focus_in) = worker.dataflow::<u64, _, _>(|scope| {
            let (edges_in, edges) = scope.new_collection::<(Name, Name), Diff>();
            let (focus_in, focus_coll) = scope.new_collection::<Name, Diff>();
            let mut to_csv = ToCsv {
                sink: CsvSink::new(&out_dir, None, Freshness::new(Cut::Probe, None)),
                written: Vec::new(),
                rows: Arc::clone(&rows_written),
            };
            network_views(
                edges,
                focus.is_some().then_some(focus_coll),
                &NetworkConfig { hops, top_n: 30 },
                &mut to_csv,
            );
            scope.concatenate(to_csv.written).probe_with(&probe);
            (edges_in, focus_in)
        });
        if index == 0 {
            for user in focus.iter().flatten() {
                focus_in.insert(Name::from(user.as_str()));
            }
        }
        drop(focus_in);

        // Load: every edge at time 0, shared among the workers.
        let start = Instant::now();
        for (src, dst, w) in edges.iter().skip(index).step_by(peers) {
            edges_in.update((src.clone(), dst.clone()), *w);
        }
        edges_in.advance_to(1);
        edges_in.flush();
        // Parked while idle, as `chatflow run` waits: a spinning worker would take a core from
        // the change files' writer thread.
        while probe.less_than(&1) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        let load = start.elapsed().as_secs_f64();
        let at_load = operators.as_ref().map(|p| p.seconds()).unwrap_or_default();
        if index == 0 && profile {
            eprintln!(
                "load: {load:.3} s; writer thread {:.3} s; per operator:",
                chatflow::sinks::csv::writing_seconds()
            );
            for (name, secs) in at_load.iter().take(12) {
                eprintln!("{secs:8.3}  {name}");
            }
            eprintln!("changes: per operator:");
        }

        // Single-edge changes, one per time, all from worker 0 (the same seeded sequence).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut current: Vec<(Name, Name, Diff)> = edges.iter().filter(|e| e.2 > 0).cloned().collect();
        let nodes: Vec<Name> = current.iter().flat_map(|(a, b, _)| [a.clone(), b.clone()]).collect();
        let mut measured: Vec<(u64, u64)> = Vec::with_capacity(changes);
        for i in 0..changes as u64 {
            let time = 1 + i;
            if index == 0 {
                if rng.gen_bool(0.5) && !current.is_empty() {
                    let (a, b, w) = current.swap_remove(rng.gen_range(0..current.len()));
                    edges_in.update((a, b), -w);
                } else {
                    let a = nodes[rng.gen_range(0..nodes.len())].clone();
                    let b = nodes[rng.gen_range(0..nodes.len())].clone();
                    edges_in.update((a.clone(), b.clone()), 1);
                    current.push((a, b, 1));
                }
            }
            edges_in.advance_to(time + 1);
            edges_in.flush();
            let sent = Instant::now();
            let rows_before = rows_written.load(Ordering::Relaxed);
            while probe.less_than(&(time + 1)) {
                worker.step_or_park(Some(Duration::from_micros(50)));
            }
            // Every worker's rows of this time passed the count before the probe passed it.
            let rows = rows_written.load(Ordering::Relaxed) - rows_before;
            measured.push((sent.elapsed().as_micros().max(1) as u64, rows));
        }
        if index == 0 {
            if let Some(p) = &operators {
                // Time per operator during the changes only (after the load).
                let mut during: Vec<(String, f64)> = p
                    .seconds()
                    .into_iter()
                    .map(|(name, secs)| {
                        let before = at_load.iter().find(|(n, _)| *n == name).map_or(0.0, |(_, s)| *s);
                        (name, secs - before)
                    })
                    .collect();
                during.sort_by(|a, b| b.1.total_cmp(&a.1));
                for (name, secs) in during.iter().take(12) {
                    eprintln!("{secs:8.3}  {name}");
                }
            }
            *result_slot.lock().unwrap() = Some((load, measured));
        }
    })
    .expect("timely runs");

    let (load, mut measured) = result.lock().unwrap().take().expect("worker 0 reports");
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut rows = Histogram::<u64>::new_with_bounds(1, 1 << 40, 3).expect("histogram bounds");
    for &(us, n) in &measured {
        latency.saturating_record(us);
        rows.saturating_record(n.max(1));
    }
    // The slowest 1 % of changes: how much of their latency is rows written.
    measured.sort_unstable();
    let slowest = &measured[measured.len() - measured.len().div_ceil(100)..];
    let (tail_us, tail_rows) = slowest.iter().fold((0, 0), |(u, r), &(us, n)| (u + us, r + n));
    let peak_rss = chatflow::run::peak_rss_bytes().unwrap_or(0);
    let scipy = scipy_reference(&root, &graph, hops, flag("--focus").as_deref());
    let versus = scipy.as_ref().and_then(|r| r["multiply_seconds"].as_f64()).map(|s| load / s);
    let report = serde_json::json!({
        "bench": "network_updates",
        "graph": graph.display().to_string(),
        "edges": edge_count,
        "hops": hops,
        "workers": workers,
        "load_seconds": (load * 1000.0).round() / 1000.0,
        "changes": changes,
        "latency_us": {"p50": latency.value_at_quantile(0.5), "p99": latency.value_at_quantile(0.99), "max": latency.max()},
        "rows_per_change": {"p50": rows.value_at_quantile(0.5), "p99": rows.value_at_quantile(0.99), "max": rows.max()},
        "slowest_1pct_ns_per_row": (tail_us * 1000).checked_div(tail_rows),
        "peak_rss_bytes": peak_rss,
        "scipy": scipy,
        "load_vs_scipy_multiply": versus.map(|v| (v * 10.0).round() / 10.0),
    });
    println!("{report}");
}

/// The same walks by a plain sparse-matrix product (`scripts/lib/walks_scipy.py`, scipy on one
/// thread), when the benchmarks' venv has scipy (`scripts/bench.sh network` makes it) and the
/// graph is an edge list CSV; its JSON line, or `None` with the reason on stderr.
fn scipy_reference(
    root: &std::path::Path,
    graph: &std::path::Path,
    hops: u32,
    focus: Option<&str>,
) -> Option<serde_json::Value> {
    let python = root.join("target/bench/venv/bin/python");
    if graph.extension().is_none_or(|e| e != "csv") {
        eprintln!("network_updates: the scipy reference reads edge list CSVs only; not compared");
        return None;
    }
    if !python.exists() {
        eprintln!(
            "network_updates: no {} (scripts/bench.sh network makes it); not compared with scipy",
            python.display()
        );
        return None;
    }
    let mut command = std::process::Command::new(&python);
    command.arg(root.join("scripts/lib/walks_scipy.py")).arg(graph).args(["--hops", &hops.to_string()]);
    if let Some(focus) = focus {
        command.args(["--focus", focus]);
    }
    match command.output() {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).ok(),
        Ok(out) => {
            eprintln!("network_updates: walks_scipy.py failed: {}", String::from_utf8_lossy(&out.stderr));
            None
        }
        Err(e) => {
            eprintln!("network_updates: running {}: {e}", python.display());
            None
        }
    }
}
