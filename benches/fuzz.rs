//! Usage: cargo bench --bench fuzz [-- [--inputs N] [--seed S] [--target NAME]...]
//!
//! Runs the fuzz harness (`chatflow::fuzz`: the event decoder and every importer, on mutated
//! real records and arbitrary bytes) for `N` inputs per target (default 10,000,000), the
//! targets spread over the machine's cores, and prints one JSON line per target: inputs,
//! accepted, rejected (dead letters or reported lines), seconds, inputs/s and the slowest
//! input in µs. Exits 1, naming the seed and the input, at the first input that panicked or
//! broke an invariant.

use chatflow::fuzz::{fuzz, Target};

fn main() {
    let mut inputs: u64 = 10_000_000;
    let mut seed: u64 = 0xf022;
    let mut names: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--inputs" => inputs = value().parse().expect("--inputs N"),
            "--seed" => seed = value().parse().expect("--seed S"),
            "--target" => names.push(value()),
            "--bench" => {}
            other => panic!("unknown argument {other} (see the doc at the top of benches/fuzz.rs)"),
        }
    }
    let targets: Vec<Target> =
        Target::ALL.into_iter().filter(|t| names.is_empty() || names.iter().any(|n| n == t.name())).collect();
    assert!(!targets.is_empty(), "no target named {names:?}; targets: {:?}", Target::ALL.map(|t| t.name()));
    // Panics are caught and reported by the harness; keep their default messages off stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(targets.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&target) = targets.get(i) else { break };
                match fuzz(target, inputs, seed) {
                    Ok(report) => {
                        let mut line = serde_json::to_value(&report).expect("a report is JSON");
                        line["inputs_per_s"] = (report.inputs as f64 / report.seconds).round().into();
                        println!("{line}");
                    }
                    Err(failure) => {
                        eprintln!("fuzz: {failure}");
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    if failed.into_inner() {
        std::process::exit(1);
    }
}
