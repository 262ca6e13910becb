//! Helpers shared by the integration tests: running the binary, reading change files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::oracle::Views;

pub const CHAT_VIEWS: [&str; 5] = ["word_counts", "channel_activity", "user_counts", "top_words", "top_users"];
pub const NETWORK_VIEWS: [&str; 3] = ["connections", "reach", "top_connections"];

pub fn chatflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chatflow"))
}

/// Runs chatflow with `args` and fails the test, showing its output, unless it exits 0.
pub fn run_ok(args: &[&str]) -> Output {
    let output = chatflow().args(args).output().expect("chatflow starts");
    assert!(
        output.status.success(),
        "chatflow {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Generates a chat fixture with `chatflow produce`.
pub fn produce(dir: &Path, name: &str, count: u64, seed: u64, late: f64) -> PathBuf {
    let path = dir.join(name);
    run_ok(&[
        "produce",
        "--out-file",
        path_str(&path),
        "--count",
        &count.to_string(),
        "--seed",
        &seed.to_string(),
        "--channels",
        "12",
        "--users",
        "400",
        "--late-fraction",
        &late.to_string(),
    ]);
    path
}

/// The consolidated content of a change file: per row (without `time` and `diff`) the sum of
/// its diffs. Also checks the header and that times never decrease.
pub fn consolidated_file(path: &Path, columns: usize) -> BTreeMap<Vec<String>, i64> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = reader.headers().unwrap().clone();
    assert_eq!(header.len(), columns + 2, "{}: header {:?}", path.display(), header);
    assert_eq!(&header[columns], "time");
    assert_eq!(&header[columns + 1], "diff");
    let mut sums: BTreeMap<Vec<String>, i64> = BTreeMap::new();
    let mut last_time = 0u64;
    for record in reader.records() {
        let record = record.unwrap();
        let time: u64 = record[columns].parse().unwrap();
        assert!(time >= last_time, "{}: time went back from {last_time} to {time}", path.display());
        last_time = time;
        let diff: i64 = record[columns + 1].parse().unwrap();
        assert_ne!(diff, 0, "{}: a zero diff was written", path.display());
        let row: Vec<String> = record.iter().take(columns).map(str::to_owned).collect();
        *sums.entry(row).or_default() += diff;
    }
    sums.retain(|_, d| *d != 0);
    sums
}

/// Reads every chat view of `dir` consolidated, asserting each row has multiplicity 0 or 1.
pub fn read_views(dir: &Path, views: &[&str]) -> Views {
    let columns = |view: &str| match view {
        "word_counts" | "top_words" | "top_users" | "dead_letters" | "reach" => 4,
        "connections" => 3,
        "top_connections" => 6,
        "channel_activity" => 5,
        "user_counts" => 3,
        other => panic!("unknown view {other}"),
    };
    let mut out = Views::new();
    for view in views {
        let sums = consolidated_file(&dir.join(format!("{view}.csv")), columns(view));
        for (row, m) in &sums {
            assert_eq!(*m, 1, "{view}: row {row:?} has multiplicity {m}");
        }
        out.insert(view.to_string(), sums.into_keys().collect::<BTreeSet<_>>());
    }
    out
}

/// Asserts two sets of views are equal, reporting the first differences per view.
pub fn assert_views_eq(actual: &Views, expected: &Views, what: &str) {
    for (view, rows) in expected {
        let got = actual.get(view).unwrap_or_else(|| panic!("{what}: view {view} missing"));
        if got != rows {
            let missing: Vec<_> = rows.difference(got).take(5).collect();
            let extra: Vec<_> = got.difference(rows).take(5).collect();
            panic!(
                "{what}: view {view} differs ({} rows expected, {} found)\n  missing: {missing:?}\n  unexpected: {extra:?}",
                rows.len(),
                got.len()
            );
        }
    }
}

/// The shared data folder beside the checkout, if present.
pub fn shared_data(sub: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(sub);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {} is absent (real data lives beside the checkout in ../shared/data)", path.display());
        None
    }
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server of a test's own, run by one of the project's scripts (`kafka.sh`, `clickhouse.sh`)
/// on `port` with its data in `dir`: `server("start")`, `server("stop")`, …
pub fn own_server(script: &'static str, env_prefix: &'static str, port: u16, dir: &Path) -> impl Fn(&str) {
    let dir = dir.to_path_buf();
    move |action: &str| {
        let status = std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script))
            .arg(action)
            .env(format!("{env_prefix}_PORT"), port.to_string())
            .env(format!("{env_prefix}_DIR"), &dir)
            .status()
            .unwrap();
        assert!(status.success(), "scripts/{script} {action} failed");
    }
}
