//! Helpers shared by the integration tests: running the binary, reading change files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataflows::{Exporter, ViewRow};
use differential_dataflow::VecCollection;
use timely::dataflow::ProbeHandle;

use crate::oracle::Views;

pub const CHAT_VIEWS: [&str; 5] = ["word_counts", "channel_activity", "user_counts", "top_words", "top_users"];
pub const NETWORK_VIEWS: [&str; 3] = ["connections", "reach", "top_connections"];

pub fn chatflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_chatflow"))
}

/// Runs chatflow with `args` and fails the test, showing its output, unless it exits 0.
pub fn run_ok(args: &[&str]) -> Output {
    run_ok_env(&[], args)
}

/// [`run_ok`] with the variables `env` set.
pub fn run_ok_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    let output = chatflow().envs(env.iter().copied()).args(args).output().expect("chatflow starts");
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
        "--out",
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

/// Generates `path` with `chatflow produce --kind kinds --count count --seed seed` and `flags`.
pub fn produce_kinds(path: &Path, kinds: &str, count: u64, seed: u64, flags: &[&str]) {
    let (count, seed) = (count.to_string(), seed.to_string());
    let mut args = vec!["produce", "--kind", kinds, "--out", path_str(path), "--count", &count, "--seed", &seed];
    args.extend(flags);
    run_ok(&args);
}

/// Generates `mixed.jsonl` in `dir`: chat, posts and viewer counts with `chatflow produce`,
/// then the lines of `appended` (bad input, say) after them.
pub fn produce_mixed(dir: &Path, count: u64, seed: u64, appended: &[u8]) -> PathBuf {
    let path = dir.join("mixed.jsonl");
    produce_kinds(&path, "chat,posts,viewers", count, seed, &[]);
    if !appended.is_empty() {
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(appended);
        std::fs::write(&path, bytes).unwrap();
    }
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
    let columns = |view: &str| dataflows::view(view).unwrap_or_else(|e| panic!("{e}")).columns.len();
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

/// Runs `chatflow <args> -n 2 -p <p> -h <hostfile>` as two processes (a hostfile of two free
/// loopback ports in `dir`) and fails the test, showing their output, unless both exit 0.
pub fn run_two_processes(dir: &Path, args: &[&str]) {
    let hostfile = dir.join("hosts");
    std::fs::write(&hostfile, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    run_together(
        (0..2)
            .map(|p| {
                let mut command = chatflow();
                command.args(args).args(["-n", "2", "-p", &p.to_string(), "-h", path_str(&hostfile)]);
                command
            })
            .collect(),
        &format!("chatflow {args:?}"),
    );
}

/// Starts every command at once (the processes of one cluster) and fails the test, showing
/// their output, unless all exit 0.
pub fn run_together(commands: Vec<Command>, what: &str) {
    let children: Vec<Child> = commands
        .into_iter()
        .map(|mut c| c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap())
        .collect();
    for (p, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "process {p} of {what} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` distinct ports, each free when chosen (all held until the last is found). A server
/// that listens on more than one port gets every one of them from here: a port derived from
/// another (ClickHouse's native port was its HTTP port + 877) may be in use by another test's
/// server (a ClickHouse of a test's own once exited at its start, likely so).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: [std::net::TcpListener; N] = std::array::from_fn(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|listener| listener.local_addr().unwrap().port())
}

/// A server of a test's own, run by one of the project's scripts (`kafka.sh`, `clickhouse.sh`)
/// on `port` with its data in `dir` (and `env`, more of the script's settings):
/// `server("start")`, `server("stop")`, …
pub fn own_server(
    script: &'static str,
    env_prefix: &'static str,
    port: u16,
    dir: &Path,
    env: &[(&'static str, String)],
) -> impl Fn(&str) {
    let dir = dir.to_path_buf();
    let env = env.to_vec();
    move |action: &str| {
        let status = std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(script))
            .arg(action)
            .env(format!("{env_prefix}_PORT"), port.to_string())
            .env(format!("{env_prefix}_DIR"), &dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .status()
            .unwrap();
        assert!(status.success(), "scripts/{script} {action} failed");
    }
}

/// Looks at `check` every 20 ms until it holds (true) or `deadline` has passed (false). Tests
/// wait for progress they observe, never for a fixed time; the deadline is only a last resort.
pub fn poll_until(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let began = Instant::now();
    loop {
        if check() {
            return true;
        }
        if began.elapsed() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills `child` (a run left behind would go on after the test) and fails the test with
/// `message` and the run's log (when its stderr is piped).
pub fn kill_and_fail(child: &mut Child, message: String) -> ! {
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut log);
    }
    panic!("{message}\nthe run's log:\n{log}");
}

/// Every update of the views a dataflow exports: (view, row, time, diff), the row's fields as
/// text in the order the view catalog gives.
pub type Captured = Arc<Mutex<Vec<(String, Vec<String>, u64, i64)>>>;

/// An exporter for tests: captures every view's updates and probes them with `probe`.
pub struct Capture<'a> {
    pub captured: Captured,
    pub probe: &'a ProbeHandle<u64>,
}

impl<'s> Exporter<'s, u64> for Capture<'_> {
    fn export<R: ViewRow>(&mut self, rows: VecCollection<'s, u64, R>) {
        let sink = Arc::clone(&self.captured);
        rows.inspect(move |(row, time, diff)| {
            sink.lock().unwrap().push((R::DEF.name.to_owned(), row.to_strings(), *time, *diff as i64))
        })
        .probe_with(self.probe);
    }
}

/// "N events read, M dead letters" of a run's summary: the records it read.
pub fn records_read(stdout: &str) -> u64 {
    let line = stdout.lines().next().unwrap_or_default();
    let number = |before: &str| -> u64 {
        let at = line.find(before).unwrap_or_else(|| panic!("no {before:?} in {line:?}"));
        line[..at].trim_end().rsplit([' ', ',']).next().unwrap().parse().unwrap()
    };
    number(" events read") + number(" dead letters")
}

/// The latest complete checkpoint of `out`: its time and the sum of its positions (the
/// records before it, every partition's log starting at offset 0).
pub fn complete_checkpoint(out: &Path) -> Option<(u64, u64)> {
    let (at, _) = chatflow::worker::checkpoint::latest(out)?;
    Some((at, records_before(&out.join("_checkpoints").join(at.to_string()))))
}

/// The records before the checkpoint in `dir`: the sum of the positions its workers saved
/// (`w<N>.positions.csv`; every partition's log starting at offset 0).
pub fn records_before(dir: &Path) -> u64 {
    let mut sum = 0;
    for file in std::fs::read_dir(dir).unwrap().flatten() {
        if file.file_name().to_string_lossy().ends_with(".positions.csv") {
            let text = std::fs::read_to_string(file.path()).unwrap();
            sum += text.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap()).sum::<u64>();
        }
    }
    sum
}
