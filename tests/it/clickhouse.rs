//! The ClickHouse sink and `chatflow query` against a real server (started by scripts/test.sh
//! on 127.0.0.1:8123; each test uses databases of its own): fixture → ClickHouse equals the
//! oracle at -w 1 and -w 2, kill -9 at random moments with the Kafka source, an outage of the
//! server, `--as-of`, and injection strings as data.

use std::collections::BTreeSet;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chatflow::clickhouse::{committed_cut, Client};
use chatflow::produce::kafka::TopicWriter;
use dataflows::view;

use crate::oracle::{self, Msg, Views};
use crate::support::*;

const SERVER: &str = "127.0.0.1:8123";
const KAFKA: &str = "127.0.0.1:9092";

fn reachable(addr: &str) -> bool {
    let addr = addr.to_socket_addrs().unwrap().next().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// The shared server's URL, or a clear failure: these tests need it running.
pub fn server() -> String {
    if !reachable(SERVER) {
        panic!("no ClickHouse server on {SERVER}: start one with `scripts/clickhouse.sh start` (scripts/test.sh does this)");
    }
    format!("http://{SERVER}")
}

/// A database name no other test or run uses.
pub fn database(name: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("t_{name}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// `chatflow query <view> --format csv` of `db`, as a set of rows (each at most once).
fn query(url: &str, db: &str, v: &str, extra: &[&str]) -> BTreeSet<Vec<String>> {
    let mut args = vec!["query", v, "--format", "csv", "--clickhouse", url, "--database", db];
    args.extend(extra);
    let output = run_ok(&args);
    let mut reader = csv::Reader::from_reader(&output.stdout[..]);
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), view(v).unwrap().column_names(), "{v}: header");
    let mut rows = BTreeSet::new();
    for record in reader.records() {
        let row: Vec<String> = record.unwrap().iter().map(str::to_owned).collect();
        assert!(rows.insert(row.clone()), "{v}: row {row:?} twice");
    }
    rows
}

fn query_views(url: &str, db: &str, views: &[&str], extra: &[&str]) -> Views {
    views.iter().map(|v| (v.to_string(), query(url, db, v, extra))).collect()
}

/// No `(row, time)` below the cut is stored with two different diffs (so collapsing copies
/// is exact), and the number of stored copies, for the report.
fn check_copies(url: &str, db: &str, v: &str) -> (u64, u64) {
    let client = Client::new(url);
    let cut = committed_cut(&client, db).unwrap().expect("progress recorded");
    let columns: Vec<String> = view(v).unwrap().column_names().iter().map(|c| format!("`{c}`")).collect();
    let columns = columns.join(", ");
    let answer = client
        .execute(&format!(
            "SELECT count(), sum(c), sum(u > 1) FROM (SELECT {columns}, time, count() AS c, uniqExact(diff) AS u \
             FROM {db}.{v} WHERE time < {cut} GROUP BY {columns}, time) FORMAT TabSeparated"
        ))
        .unwrap();
    let f: Vec<u64> = answer.trim().split('\t').map(|x| x.parse().unwrap()).collect();
    assert_eq!(f[2], 0, "{v}: a (row, time) is stored with different diffs");
    (f[0], f[1])
}

fn all_views() -> Vec<&'static str> {
    dataflows::CATALOG.iter().map(|v| v.name).collect()
}

/// The inputs of a run of every view: chat (with late events), edges (with four heavy ones
/// whose walks exceed 64 bits), posts and viewer counts, and one line that is not JSON.
struct Mixed {
    chat: std::path::PathBuf,
    edges: std::path::PathBuf,
    others: std::path::PathBuf,
    /// All of them in one file.
    mixed: std::path::PathBuf,
    lexicon_dir: std::path::PathBuf,
}

fn mixed_fixture(dir: &Path, messages: u64, edge_events: u64, others_events: u64, seed: u64) -> Mixed {
    let chat = produce(dir, "chat.jsonl", messages, seed, 0.02);
    let edges = dir.join("edges.jsonl");
    let users = (edge_events / 10).to_string();
    run_ok(&[
        "produce",
        "--kind",
        "edges",
        "--out",
        path_str(&edges),
        "--count",
        &edge_events.to_string(),
        "--user-ids",
        &users,
    ]);
    // Two pairs of strength 2³² through a hub: 2⁶⁴ two-hop walks.
    let mut text = std::fs::read_to_string(&edges).unwrap();
    for (s, d) in [("heavy_x", "heavy_h"), ("heavy_h", "heavy_x"), ("heavy_h", "heavy_y"), ("heavy_y", "heavy_h")] {
        text += &format!("{{\"ts\":1740787200000,\"src\":\"{s}\",\"dst\":\"{d}\",\"weight\":2147483648}}\n");
    }
    std::fs::write(&edges, text).unwrap();
    let others = dir.join("others.jsonl");
    let (count, seed) = (others_events.to_string(), (seed + 1).to_string());
    run_ok(&["produce", "--kind", "posts,viewers", "--out", path_str(&others), "--count", &count, "--seed", &seed]);
    let mixed = dir.join("mixed.jsonl");
    let mut bytes = std::fs::read(&chat).unwrap();
    bytes.extend(std::fs::read(&edges).unwrap());
    bytes.extend(std::fs::read(&others).unwrap());
    bytes.extend(b"not json\n");
    std::fs::write(&mixed, bytes).unwrap();
    let lexicon_dir = crate::mission::test_lexica(dir);
    Mixed { chat, edges, others, mixed, lexicon_dir }
}

#[test]
fn fixture_to_clickhouse_equals_the_oracle_at_1_and_2_workers() {
    let url = server();
    let dir = tempfile::tempdir().unwrap();
    let Mixed { chat, edges, others, mixed, lexicon_dir } = mixed_fixture(dir.path(), 20_000, 3_000, 6_000, 61);

    let msgs = oracle::read_chats(&chat);
    let mut expected = oracle::chat_views(&msgs, 60, 10);
    expected.extend(oracle::network_views(&oracle::read_edges(&edges), None, 2, 30));
    expected.extend(oracle::sentiment(&msgs, &oracle::Lexica::read(&lexicon_dir), 60));
    expected.extend(oracle::engagement(&msgs, &oracle::read_viewers(&others), 60));
    expected.extend(oracle::post_views(&oracle::read_posts(&others), 300, 10));
    let replayed = dir.path().join("replay");
    run_ok(&[
        "run",
        "--replay",
        path_str(&mixed),
        "--out",
        path_str(&replayed),
        "--lexicon-dir",
        path_str(&lexicon_dir),
    ]);
    expected.insert("dead_letters".into(), read_views(&replayed, &["dead_letters"]).remove("dead_letters").unwrap());
    assert_eq!(expected["dead_letters"].len(), 1);

    for workers in ["1", "2"] {
        let db = database(&format!("fixture_w{workers}"));
        let out = dir.path().join(format!("out-w{workers}"));
        let flags = ["--batch", "2000", "-w", workers, "--lexicon-dir", path_str(&lexicon_dir)];
        let output = replay_to_clickhouse(&mixed, &url, &db, &out, &flags);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("changes written to ClickHouse"), "{stdout}");
        assert_views_eq(&query_views(&url, &db, &all_views(), &[]), &expected, &format!("ClickHouse -w {workers}"));
        for v in all_views() {
            check_copies(&url, &db, v);
        }
        // `query --dir` over the change files answers as ClickHouse does: same rows, order,
        // limits, filters and printing.
        let channel = expected["top_words"].iter().next().unwrap()[0].clone();
        for v in all_views() {
            let filters: [&[&str]; 5] = [
                &[],
                &["--limit", "3"],
                &["--format", "json", "--limit", "20"],
                &["--channel", &channel],
                &["--place", "Melbourne"],
            ];
            for extra in filters {
                let filter =
                    extra.first().and_then(|f| f.strip_prefix("--")).filter(|f| ["channel", "place"].contains(f));
                if filter.is_some_and(|f| view(v).unwrap().filter_columns(f).is_empty()) {
                    continue;
                }
                let mut from_files = vec!["query", v, "--dir", path_str(&replayed)];
                from_files.extend(extra);
                let mut from_clickhouse = vec!["query", v, "--clickhouse", &url, "--database", &db];
                from_clickhouse.extend(extra);
                let (files, clickhouse) = (run_ok(&from_files).stdout, run_ok(&from_clickhouse).stdout);
                assert!(files == clickhouse, "{v} {extra:?}: --dir and ClickHouse answer differently");
            }
        }
    }
}

fn load_topics(fixture: &Path, prefix: &str) {
    run_ok(&[
        "produce",
        "--kafka",
        KAFKA,
        "--from",
        path_str(fixture),
        "--partitions",
        "4",
        "--chat-topic",
        &format!("{prefix}-chat"),
        "--edges-topic",
        "",
        "--posts-topic",
        "",
        "--viewers-topic",
        "",
    ]);
}

/// `count` generated chat messages (seed `seed`) loaded into a topic of their own on the shared
/// broker (4 partitions): the fixture and the topic.
fn chat_topic(dir: &Path, name: &str, count: u64, seed: u64) -> (PathBuf, String) {
    assert!(
        reachable(KAFKA),
        "no Kafka broker on {KAFKA}: start one with `scripts/kafka.sh start` (scripts/test.sh does this)"
    );
    let fixture = produce(dir, "chat.jsonl", count, seed, 0.01);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let prefix = format!("{name}-{}-{nanos}", std::process::id());
    load_topics(&fixture, &prefix);
    (fixture, format!("{prefix}-chat"))
}

/// `chatflow run --replay fixture` into ClickHouse, with `extra` flags; it must succeed.
fn replay_to_clickhouse(fixture: &Path, url: &str, db: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", "--replay", path_str(fixture), "--clickhouse", url, "--database", db];
    args.extend(["--out", path_str(out)]);
    args.extend(extra);
    run_ok(&args)
}

/// `chatflow run` from the Kafka topic `topic` (chat only) into ClickHouse, with `extra` flags.
fn kafka_to_clickhouse(topic: &str, url: &str, db: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "run",
        "--kafka",
        KAFKA,
        "--chat-topic",
        topic,
        "--edges-topic",
        "",
        "--posts-topic",
        "",
        "--viewers-topic",
        "",
    ];
    args.extend(["--clickhouse", url, "--database", db, "--out", path_str(out)]);
    args.extend(extra);
    args.into_iter().map(str::to_owned).collect()
}

#[test]
fn kill_9_at_random_moments_and_restart() {
    let url = server();
    let dir = tempfile::tempdir().unwrap();
    let (fixture, topic) = chat_topic(dir.path(), "kill", 300_000, 62);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let db = database("kill");
    let out = dir.path().join("out");
    let args = kafka_to_clickhouse(
        &topic,
        &url,
        &db,
        &out,
        &["--until-caught-up", "-w", "2", "--max-inflight", "2000", "--tick-ms", "100", "--checkpoint-interval", "1"],
    );
    let client = Client::new(&url);
    // Twenty runs, each killed with SIGKILL once it has been seen to commit: when the committed cut
    // has moved past the one before the run (so each run gets further than the last, however
    // slow the machine), then 0-250 ms later, jittered by the clock, so each CI run kills at other
    // moments; every third run instead once a checkpoint is being taken (a worker's state is
    // saved, the checkpoint not complete yet). A run that ends on its own first is not killed.
    let mut kills = 0;
    let mut during_checkpoint = 0;
    let mut cuts = Vec::new();
    for run in 0..20u32 {
        let before = committed_cut(&client, &db).ok().flatten().unwrap_or(0);
        let mut child = chatflow().args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut cut = None;
        let moved = poll_until(Duration::from_secs(180), || {
            // An error (no database or table yet) counts as nothing committed yet.
            cut = committed_cut(&client, &db).ok().flatten();
            cut.is_some_and(|c| c > before) || child.try_wait().unwrap().is_some()
        });
        if !moved {
            kill_and_fail(
                &mut child,
                format!("run {run}: the committed cut stayed at {cut:?} for 180 s (it was {before} before the run)"),
            );
        }
        let mid_checkpoint = run % 3 == 1
            && poll_until(Duration::from_secs(5), || {
                checkpoint_in_progress(&out).is_some() || child.try_wait().unwrap().is_some()
            })
            && checkpoint_in_progress(&out).is_some();
        if !mid_checkpoint {
            std::thread::sleep(Duration::from_millis((u64::from(nanos).rotate_right(run * 3)) % 250));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
            during_checkpoint += u32::from(mid_checkpoint);
        }
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success() || output.status.code().is_none(),
            "a run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        cuts.push(committed_cut(&client, &db).unwrap());
    }
    assert!(kills >= 15, "only {kills} runs were killed mid-run; slow the run down");
    assert!(during_checkpoint >= 2, "only {during_checkpoint} runs were killed while a checkpoint was taken");
    let committed: BTreeSet<u64> = cuts.iter().flatten().copied().filter(|c| *c > 0).collect();
    assert!(committed.len() >= 2, "the killed runs committed too little to resume from: cuts {cuts:?}");
    // The last run resumes from the latest checkpoint the database marks complete and reads only
    // what lies after its positions (its own count of records read). The database, not the
    // staging folder, says which: a checkpoint is marked complete there first and in the folder
    // after, so a kill between the two leaves the folder's marker behind (a CI run once expected
    // the folder's checkpoint at 0 where the run rightly resumed from the database's last one).
    let (at, _) = chatflow::clickhouse::store::latest(&client, &db)
        .unwrap()
        .expect("the killed runs completed a checkpoint in the database");
    let staged = out.join("_checkpoints").join(at.to_string());
    assert!(
        staged.is_dir(),
        "the checkpoint at {at} is complete in the database but not staged in {}",
        staged.display()
    );
    let positions = records_before(&staged);
    let output = run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let read = records_read(&stdout);
    assert_eq!(read, 300_000 - positions, "records read after resuming from the checkpoint at {at}:\n{stdout}");
    // The resumed run brought the folder's marker up to the database's (or past it).
    let folder = chatflow::worker::checkpoint::latest(&out);
    assert!(
        folder.is_some_and(|(time, _)| time >= at),
        "the staging folder's latest complete checkpoint {folder:?} lags the database's at {at}"
    );
    let expected = oracle::chat_views(&oracle::read_chats(&fixture), 60, 10);
    assert_views_eq(
        &query_views(&url, &db, &CHAT_VIEWS, &[]),
        &expected,
        &format!("after {kills} kills (cuts {cuts:?})"),
    );
    let mut copies = Vec::new();
    for v in CHAT_VIEWS {
        copies.push((v, check_copies(&url, &db, v)));
    }
    eprintln!(
        "kill -9 test: {kills} kills ({during_checkpoint} while a checkpoint was taken); cuts after each kill {cuts:?}; \
         the last run resumed at {at}, reading {read} records; (distinct (row, time), stored rows) per view {copies:?}"
    );
}

/// A worker on a fresh machine: a Kafka → ClickHouse deployment keeps its checkpoints,
/// positions and clock bindings in its database, so a run with an empty `--out` resumes from
/// the latest checkpoint there, reads only what lies after its positions, and the views are
/// exact.
#[test]
fn a_fresh_machine_resumes_from_the_checkpoint_in_the_database() {
    let url = server();
    let dir = tempfile::tempdir().unwrap();
    let (fixture, topic) = chat_topic(dir.path(), "fresh", 150_000, 65);
    let db = database("fresh");
    let client = Client::new(&url);
    let first = dir.path().join("first-machine");
    let slow =
        ["--until-caught-up", "-w", "2", "--max-inflight", "2000", "--tick-ms", "100", "--checkpoint-interval", "1"];
    let args = kafka_to_clickhouse(&topic, &url, &db, &first, &slow);
    let mut child = chatflow().args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let complete = |client: &Client| {
        client
            .execute(&format!("SELECT max(time) FROM {db}._checkpoints_complete FORMAT TabSeparated"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|t| *t > 0)
    };
    let seen =
        poll_until(Duration::from_secs(180), || complete(&client).is_some() || child.try_wait().unwrap().is_some());
    if !seen || child.try_wait().unwrap().is_some() {
        kill_and_fail(&mut child, "the run completed no checkpoint before its end (or in 180 s)".into());
    }
    child.kill().unwrap();
    let _ = child.wait();
    let at = complete(&client).unwrap();
    // The positions of that checkpoint, as the first machine's workers saved them.
    let before = records_before(&first.join("_checkpoints").join(at.to_string()));
    assert!(before > 0 && before < 150_000, "the checkpoint at {at} is not mid-log ({before} records before it)");
    // A fresh machine is held to the deployment's settings too: they are in the database.
    let other = dir.path().join("other-settings");
    let mut args =
        kafka_to_clickhouse(&topic, &url, &db, &other, &["--until-caught-up", "-w", "2", "--tick-ms", "100"]);
    args.extend(["--window".to_owned(), "30".to_owned()]);
    let refused = chatflow().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(refused.status.code() == Some(1) && stderr.contains("window was 60, is 30"), "{stderr}");
    // The second machine: a new, empty --out.
    let second = dir.path().join("second-machine");
    let args = kafka_to_clickhouse(&topic, &url, &db, &second, &["--until-caught-up", "-w", "2", "--tick-ms", "100"]);
    let output = run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        records_read(&stdout),
        150_000 - before,
        "records read on the fresh machine (checkpoint {at}):\n{stdout}"
    );
    let expected = oracle::chat_views(&oracle::read_chats(&fixture), 60, 10);
    assert_views_eq(&query_views(&url, &db, &CHAT_VIEWS, &[]), &expected, "resumed on a fresh machine");
    for v in CHAT_VIEWS {
        check_copies(&url, &db, v);
    }
}

/// A checkpoint of `out` some worker has saved that is not complete yet: its folder.
fn checkpoint_in_progress(out: &Path) -> Option<PathBuf> {
    std::fs::read_dir(out.join("_checkpoints")).ok()?.flatten().map(|e| e.path()).find(|dir| {
        !dir.join("COMPLETE").exists()
            && std::fs::read_dir(dir).is_ok_and(|mut files| {
                files.any(|f| f.is_ok_and(|f| f.file_name().to_string_lossy().ends_with(".bin")))
            })
    })
}

/// A live run from Kafka while messages keep coming; ClickHouse stops for 30 s (issue 15's
/// outage) and starts again: the run catches up (its cut passes every message sent) and the
/// views are exact.
#[test]
fn clickhouse_outage_of_30_s_mid_run() {
    let _ = server();
    assert!(
        reachable(KAFKA),
        "no Kafka broker on {KAFKA}: start one with `scripts/kafka.sh start` (scripts/test.sh does this)"
    );
    let [port, native] = free_ports();
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let ch =
        own_server("clickhouse.sh", "CLICKHOUSE", port, &server_dir, &[("CLICKHOUSE_TCP_PORT", native.to_string())]);
    ch("start");
    let url = format!("http://127.0.0.1:{port}");
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let topic = format!("outage-{}-{nanos}-chat", std::process::id());
    let mut writer = TopicWriter::new(KAFKA, &[]).unwrap();
    writer.ensure_topics(&[&topic], 4).unwrap();
    let db = database("outage");
    let out = dir.path().join("out");
    let mut child = chatflow()
        .args(kafka_to_clickhouse(&topic, &url, &db, &out, &["-w", "2", "--tick-ms", "200", "--idle-ms", "300"]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let now_ms = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    // The run's log, read as it comes: the outage must reach the writer (a failed insert).
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = std::sync::Arc::clone(&log);
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
                if n == 0 {
                    break;
                }
                log.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let client = Client::new(&url);
    let mut sent: Vec<Msg> = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Phases: writing (until a cut is committed), down (at least 30 s, and until an insert
        // has failed), up again (2 s more of traffic).
        let began = Instant::now();
        let mut phase = 0;
        let mut since = Instant::now();
        let mut i = 0usize;
        while phase < 3 {
            for _ in 0..20 {
                let m = Msg {
                    ts: now_ms(),
                    channel: format!("c{}", i % 7),
                    user: format!("u{}", i % 53),
                    text: format!("outage {} w{}", ["kappa", "pog", "gg"][i % 3], i % 13),
                };
                let line =
                    serde_json::json!({"ts": m.ts, "channel": m.channel, "user": m.user, "text": m.text}).to_string();
                writer.send(&topic, Some(&m.channel), line.as_bytes(), m.ts).unwrap();
                sent.push(m);
                i += 1;
            }
            writer.poll();
            // 400 messages a second: 12 k or more wait in the broker when ClickHouse returns,
            // which the run must catch up on (a slow machine included) while more come.
            std::thread::sleep(Duration::from_millis(50));
            match phase {
                // Until the run has made its tables, there is no cut yet.
                0 if i.is_multiple_of(100) && committed_cut(&client, &db).ok().flatten().unwrap_or(0) > 0 => {
                    ch("stop");
                    (phase, since) = (1, Instant::now());
                }
                0 => assert!(began.elapsed() < Duration::from_secs(90), "nothing was committed in 90 s"),
                1 if since.elapsed() >= Duration::from_secs(30) && log.lock().unwrap().contains("retrying") => {
                    assert!(child.try_wait().unwrap().is_none(), "the run ended while ClickHouse was down");
                    ch("start");
                    (phase, since) = (2, Instant::now());
                }
                1 => assert!(since.elapsed() < Duration::from_secs(90), "no insert failed in 90 s of outage"),
                2 if since.elapsed() >= Duration::from_secs(2) => phase = 3,
                _ => {}
            }
        }
        writer.flush().unwrap();
        // Caught up once the views at the committed cut hold every message sent. (The cut
        // passing the last message's event time is not enough: a partition found at its end
        // while records are still on their way is bound to a later ingestion time, and on a
        // loaded machine that happens; see `sources::kafka`.)
        let expected = oracle::chat_views(&sent, 60, 10);
        let caught_up = poll_until(Duration::from_secs(180), || query_views(&url, &db, &CHAT_VIEWS, &[]) == expected);
        if !caught_up {
            let cut = committed_cut(&client, &db).ok().flatten();
            let last = sent.last().map(|m| m.ts);
            let log = log.lock().unwrap();
            let tail: String =
                log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            assert_views_eq(
                &query_views(&url, &db, &CHAT_VIEWS, &[]),
                &expected,
                &format!(
                    "180 s after the outage, the views at the cut (now {cut:?}; last message sent at {last:?}) \
                     did not hold every message sent; the run's log ends:\n{tail}\n"
                ),
            );
        }
    }));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let result = result.and_then(|()| {
        std::panic::catch_unwind(|| {
            let log = log.lock().unwrap();
            assert!(status.success(), "{log}");
            let expected = oracle::chat_views(&sent, 60, 10);
            assert_views_eq(&query_views(&url, &db, &CHAT_VIEWS, &[]), &expected, "across a ClickHouse outage");
        })
    });
    ch("stop");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn as_of_a_time_mid_run_is_the_state_at_that_time() {
    let url = server();
    let dir = tempfile::tempdir().unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 30_000, 64, 0.02);
    let db = database("asof");
    let out = dir.path().join("out");
    replay_to_clickhouse(&fixture, &url, &db, &out, &["--batch", "1000", "-w", "2"]);
    let msgs = oracle::read_chats(&fixture);
    // Line g has time floor(g / 1000): the state at T holds the first (T + 1) * 1000 lines.
    for t in [0u64, 12, 29] {
        let expected = oracle::chat_views(&msgs[..((t as usize + 1) * 1000).min(msgs.len())], 60, 10);
        let at = t.to_string();
        assert_views_eq(&query_views(&url, &db, &CHAT_VIEWS, &["--as-of", &at]), &expected, &format!("as of {t}"));
    }
    let early = oracle::chat_views(&msgs[..1000], 60, 10);
    assert_ne!(early["word_counts"], oracle::chat_views(&msgs, 60, 10)["word_counts"]);
    // A time not committed yet is refused, not answered with a partial state.
    let output = chatflow()
        .args(["query", "word_counts", "--clickhouse", &url, "--database", &db, "--as-of", "30"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not committed"));
}

#[test]
fn injection_strings_are_data() {
    let url = server();
    let dir = tempfile::tempdir().unwrap();
    let evil_channel = "x'); DROP TABLE word_counts; --";
    let evil_user = "u\"; DROP DATABASE default; -- \\ \t end";
    let msgs: Vec<Msg> = (0..300)
        .map(|i| Msg {
            ts: 1_740_787_200_000 + i * 1000,
            channel: if i % 2 == 0 { evil_channel.into() } else { "plain".into() },
            user: if i % 3 == 0 { evil_user.into() } else { format!("user{}", i % 7) },
            text: format!("kappa word{} ' \" ; --", i % 5),
        })
        .collect();
    let fixture = dir.path().join("evil.jsonl");
    let lines: Vec<String> = msgs
        .iter()
        .map(|m| serde_json::json!({"ts": m.ts, "channel": m.channel, "user": m.user, "text": m.text}).to_string())
        .collect();
    std::fs::write(&fixture, lines.join("\n") + "\n").unwrap();
    let db = database("inject");
    let out = dir.path().join("out");
    replay_to_clickhouse(&fixture, &url, &db, &out, &[]);
    let expected = oracle::chat_views(&msgs, 60, 10);
    let of = |view: &str, column: usize, value: &str| -> BTreeSet<Vec<String>> {
        expected[view].iter().filter(|r| r[column] == value).cloned().collect()
    };
    let got = query(&url, &db, "word_counts", &["--channel", evil_channel]);
    assert!(!got.is_empty());
    assert_eq!(got, of("word_counts", 0, evil_channel));
    let got = query(&url, &db, "user_counts", &["--user", evil_user]);
    assert_eq!(got, of("user_counts", 1, evil_user));
    assert_eq!(got.len(), 2);
    let both = query(&url, &db, "user_counts", &["--user", evil_user, "--channel", "plain"]);
    assert_eq!(both.len(), 1);
    // Everything is still there, and JSON output carries the strings intact.
    assert_views_eq(&query_views(&url, &db, &CHAT_VIEWS, &[]), &expected, "after the injection attempts");
    let json = run_ok(&[
        "query",
        "user_counts",
        "--format",
        "json",
        "--clickhouse",
        &url,
        "--database",
        &db,
        "--user",
        evil_user,
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows[0]["user"], evil_user);
    assert!(rows[0]["messages"].is_i64());
}

/// One writer per database: a run on a database another live run writes (from another --out)
/// is refused before it touches anything, naming that run's process; once that process is
/// killed it is known to be gone and a resume runs without `--take-over`; a writer recorded on
/// another machine within the last minute needs `--take-over`.
#[test]
fn a_second_writer_of_a_database_is_refused_unless_it_takes_over() {
    let url = server();
    let client = Client::new(&url);
    let dir = tempfile::tempdir().unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 3_000, 65, 0.0);
    let expected = oracle::chat_views(&oracle::read_chats(&fixture), 60, 10);
    let db = database("writer");
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec!["run", "--replay", path_str(&fixture), "--clickhouse", &url, "--database", &db];
        args.extend(["--out", path_str(out), "--batch", "100"]);
        args.extend(extra);
        chatflow().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    // Paced: 3,000 lines at 50 a second stay alive for a minute.
    let mut live = run(&first, &["--replay-rate", "50"]);
    let pid = format!("pid {}", live.id());
    if !poll_until(Duration::from_secs(60), || committed_cut(&client, &db).ok().flatten().is_some_and(|c| c > 0)) {
        kill_and_fail(&mut live, "the live run committed nothing in 60 s".into());
    }
    for start in ["--resume", "--from-beginning"] {
        let output = run(&second, &[start]).wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let named = stderr.contains("being written by another chatflow run") && stderr.contains(&pid);
        if output.status.code() != Some(1) || !named || !stderr.contains("--take-over") {
            kill_and_fail(&mut live, format!("{start} beside a live writer: {:?}\n{stderr}", output.status));
        }
    }
    live.kill().unwrap();
    live.wait().unwrap();
    let output = run(&first, &["--resume"]).wait_with_output().unwrap();
    assert!(output.status.success(), "after kill -9: {}", String::from_utf8_lossy(&output.stderr));
    assert_views_eq(&query_views(&url, &db, &CHAT_VIEWS, &[]), &expected, "resumed after the writer was killed");

    // A run on another machine, seconds ago.
    client
        .execute(&format!(
            "INSERT INTO {db}._progress VALUES ('word_counts', 0, 1, 0, 0, 'start pid=4242 host=elsewhere', {})",
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()
        ))
        .unwrap();
    let output = run(&second, &["--from-beginning"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("started by pid 4242 on elsewhere"), "{stderr}");
    let output = run(&second, &["--from-beginning", "--take-over"]).wait_with_output().unwrap();
    assert!(output.status.success(), "--take-over: {}", String::from_utf8_lossy(&output.stderr));
    assert_views_eq(&query_views(&url, &db, &CHAT_VIEWS, &[]), &expected, "taken over");
}

/// The example service configuration (`deploy/run.toml`, Kafka → ClickHouse, `resume = true`),
/// with the command line overriding its addresses, topics and threads: a first start begins
/// the deployment, a second continues it, and the views equal the oracle with no row twice.
#[test]
fn the_example_service_configuration_runs() {
    let url = server();
    let dir = tempfile::tempdir().unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 3_000, 66, 0.02);
    let expected = oracle::chat_views(&oracle::read_chats(&fixture), 60, 10);
    let prefix = database("service");
    load_topics(&fixture, &prefix);
    let db = database("service");
    let out = dir.path().join("out");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/run.toml");
    let topic = format!("{prefix}-chat");
    for round in ["first start", "restart"] {
        let mut args = vec!["run", "--config", path_str(&config), "--kafka", KAFKA, "--chat-topic", &topic];
        args.extend(["--edges-topic", "", "--posts-topic", "", "--viewers-topic", "", "--until-caught-up"]);
        args.extend(["--clickhouse", &url, "--database", &db, "--out", path_str(&out), "-w", "1"]);
        let output = run_ok(&args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        // The restart re-reads the topic and finds nothing new: whether its last ticks give
        // rows depends on where the first run's end time fell, so only the first must write.
        let wrote = stdout.contains("changes written to ClickHouse");
        assert!(wrote || round == "restart", "{round}: {stdout}");
        assert!(stdout.contains("is written in ClickHouse"), "{round}: {stdout}");
        assert_views_eq(&query_views(&url, &db, &CHAT_VIEWS, &[]), &expected, round);
        for v in CHAT_VIEWS {
            check_copies(&url, &db, v);
        }
    }
    let settings = std::fs::read_to_string(out.join("_deployment.csv")).unwrap();
    assert!(settings.contains("--tick-ms,1000") && settings.contains("--window,60"), "{settings}");
}

/// Every statement chatflow sends (DDL, inserts, the cut and writer checks, each view's query
/// with each filter, `--as-of`, the server's reads), recorded from runs against the test
/// server (ClickHouse 18.16), is accepted by a current ClickHouse (chdb-core, ClickHouse 26.9
/// embedded, in the venv scripts/test.sh makes) and answered alike, replayed in order with its
/// data (`scripts/lib/chdb_check.py`).
#[test]
fn a_current_clickhouse_accepts_every_statement() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chdb-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh makes it (a venv with chdb-core, ClickHouse 26.9 embedded)",
        python.display()
    );
    let url = server();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sql.jsonl");
    let logged = |args: &[&str]| {
        let output = chatflow().args(args).env("CHATFLOW_SQL_LOG", &log).output().unwrap();
        assert!(output.status.success(), "chatflow {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let Mixed { mixed, lexicon_dir, .. } = mixed_fixture(dir.path(), 4_000, 500, 2_000, 67);
    let db = database("current");
    let out = dir.path().join("out");
    let base = ["run", "--replay", path_str(&mixed), "--clickhouse", &url, "--database", &db, "--out", path_str(&out)];
    let mut args = base.to_vec();
    args.extend(["--batch", "500", "-w", "2", "--lexicon-dir", path_str(&lexicon_dir)]);
    // Paced, with a checkpoint every second: checkpoints are stored, completed and the older
    // dropped; the resume reads the latest back.
    let mut paced = args.clone();
    paced.extend(["--replay-rate", "2000", "--checkpoint-interval", "1"]);
    logged(&paced);
    args.push("--resume");
    logged(&args);
    // From Kafka: the clock bindings are read and recorded, and the caught-up run's checkpoint.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    let prefix = format!("current-{}-{nanos}", std::process::id());
    load_topics(&produce(dir.path(), "chat.jsonl", 3_000, 68, 0.01), &prefix);
    let kafka_db = database("current_kafka");
    let kafka_out = dir.path().join("kafka-out");
    let kafka_args =
        kafka_to_clickhouse(&format!("{prefix}-chat"), &url, &kafka_db, &kafka_out, &["--until-caught-up"]);
    logged(&kafka_args.iter().map(String::as_str).collect::<Vec<_>>());
    let store = ["--clickhouse", url.as_str(), "--database", db.as_str()];
    let channel = query(&url, &db, "top_words", &[]).into_iter().next().unwrap()[0].clone();
    let user = query(&url, &db, "user_counts", &[]).into_iter().next().unwrap()[1].clone();
    let place = query(&url, &db, "place_activity", &[]).into_iter().next().unwrap()[0].clone();
    for v in all_views() {
        let def = view(v).unwrap();
        let mut cases: Vec<Vec<String>> =
            vec![vec![], vec!["--limit".into(), "3".into()], vec!["--as-of".into(), "3".into()]];
        for (filter, value) in [("channel", &channel), ("user", &user), ("place", &place)] {
            if !def.filter_columns(filter).is_empty() {
                cases.push(vec![format!("--{filter}"), value.clone()]);
            }
        }
        for extra in &cases {
            let mut args = vec!["query", v, "--format", "csv"];
            args.extend(store);
            args.extend(extra.iter().map(String::as_str));
            logged(&args);
        }
    }
    // The server's reads: the cut and when it was committed, a view, a user's connections.
    let mut serve = chatflow();
    serve.args(["serve", "--listen", "127.0.0.1:0"]).args(store).env("CHATFLOW_SQL_LOG", &log);
    let (server, stderr) = crate::serve::listening(serve.stdout(Stdio::null()));
    crate::serve::drain(stderr);
    for path in ["/api/cut".to_owned(), "/api/channels".into(), format!("/api/users/{user}/connections")] {
        let (status, body) = crate::serve::get(&server, &path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
    }
    drop(server);

    let text = std::fs::read_to_string(&log).unwrap();
    for kind in ["\"execute\"", "\"insert\"", "\"select_with\""] {
        assert!(text.lines().filter(|l| l.contains(kind)).count() > 3, "few {kind} statements logged");
    }
    // What a restart needs went through the database too.
    for statement in [
        "_checkpoints (time, worker, part, bytes)",
        "_checkpoints_complete (time, workers)",
        "DROP PARTITION",
        "_clock (topic, partition, offset, time)",
        "GROUP BY part ORDER BY part",
    ] {
        assert!(text.contains(statement), "no statement with {statement:?} logged");
    }
    let check = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/chdb_check.py"))
        .arg(&log)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}\n{}", String::from_utf8_lossy(&check.stderr));
    eprintln!("{report}");
}

/// HTTPS: a server of this test's own (ClickHouse 18.16) serving HTTPS with a certificate
/// for 127.0.0.1 signed by a CA the test makes. Without that CA a run is refused naming the
/// certificate; with `CHATFLOW_CH_CA` a run and `query` over https:// equal the oracle.
#[test]
fn https_with_a_certificate_authority_of_the_tests_own() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "chatflow test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (ca_pem, cert_pem, key_pem) =
        (dir.path().join("ca.pem"), dir.path().join("server.pem"), dir.path().join("server.key"));
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();

    let [http, https, native] = free_ports();
    let data = dir.path().join("server");
    let path = |p: &Path| p.to_str().expect("a UTF-8 temporary path").to_owned();
    let settings = [
        ("CLICKHOUSE_HTTPS_PORT", https.to_string()),
        ("CLICKHOUSE_TCP_PORT", native.to_string()),
        ("CLICKHOUSE_CERT", path(&cert_pem)),
        ("CLICKHOUSE_KEY", path(&key_pem)),
    ];
    let script = own_server("clickhouse.sh", "CLICKHOUSE", http, &data, &settings);
    script("start");
    let result = std::panic::catch_unwind(|| {
        let fixture = produce(dir.path(), "chat.jsonl", 2_000, 69, 0.02);
        let expected = oracle::chat_views(&oracle::read_chats(&fixture), 60, 10);
        let url = format!("https://127.0.0.1:{https}");
        let out = dir.path().join("out");
        let args =
            ["run", "--replay", path_str(&fixture), "--clickhouse", &url, "--database", "tls", "--out", path_str(&out)];
        let refused = chatflow().args(args).env_remove("CHATFLOW_CH_CA").output().unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("UnknownIssuer") && stderr.contains("CHATFLOW_CH_CA"), "{stderr}");
        let output = chatflow().args(args).env("CHATFLOW_CH_CA", &ca_pem).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let mut views = Views::new();
        for v in CHAT_VIEWS {
            let output = chatflow()
                .args(["query", v, "--format", "csv", "--clickhouse", &url, "--database", "tls"])
                .env("CHATFLOW_CH_CA", &ca_pem)
                .output()
                .unwrap();
            assert!(output.status.success(), "query {v}: {}", String::from_utf8_lossy(&output.stderr));
            let mut reader = csv::Reader::from_reader(&output.stdout[..]);
            views.insert(
                v.to_owned(),
                reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect(),
            );
        }
        assert_views_eq(&views, &expected, "over HTTPS");
    });
    script("stop");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
