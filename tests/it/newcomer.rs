//! The command line as a newcomer meets it: `chatflow query --dir` against the oracle, exit
//! codes a script can trust, errors that name the thing and the fix, arguments checked before
//! the output directory is touched, and a signal that stops a run waiting for its peers.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use dataflows::{view, ColumnType, CATALOG};

use crate::oracle::{self, read_chats, Views};
use crate::support::*;

/// Runs chatflow, expecting exit code `code`; returns stdout and stderr.
fn run_code(args: &[&str], code: i32) -> (String, String) {
    let output = chatflow().args(args).output().expect("chatflow starts");
    check_code(&output, code, args)
}

fn check_code(output: &Output, code: i32, what: impl std::fmt::Debug) -> (String, String) {
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned());
    assert_eq!(output.status.code(), Some(code), "chatflow {what:?}:\nstdout:\n{stdout}\nstderr:\n{stderr}");
    (stdout, stderr)
}

fn assert_says(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "expected {w:?} in:\n{text}");
    }
}

/// Every file of `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect()
}

/// `chatflow query <view> --dir <dir> --format csv` plus `extra`, as rows in printed order.
fn query_dir(dir: &Path, v: &str, extra: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["query", v, "--dir", path_str(dir), "--format", "csv"];
    args.extend(extra);
    let output = run_ok(&args);
    let mut reader = csv::Reader::from_reader(&output.stdout[..]);
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), view(v).unwrap().column_names(), "{v}: header");
    reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect()
}

/// The order of the view's columns, numbers as numbers (the oracle's own comparison).
fn typed_order(v: &str, a: &[String], b: &[String]) -> Ordering {
    let def = view(v).unwrap();
    for ((column, x), y) in def.columns.iter().zip(a).zip(b) {
        let o = match column.ty {
            ColumnType::Int | ColumnType::Wide => x.parse::<i128>().unwrap().cmp(&y.parse::<i128>().unwrap()),
            ColumnType::Text => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn sorted(v: &str, rows: impl IntoIterator<Item = Vec<String>>) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = rows.into_iter().collect();
    rows.sort_by(|a, b| typed_order(v, a, b));
    rows
}

/// Every view the oracle computes for the first `lines` lines of `input`: chat, the network of
/// the mentions, sentiment (with `lexica`), engagement and posts.
fn expected_views(input: &Path, lines: usize, lexica: &oracle::Lexica) -> Views {
    let text = std::fs::read_to_string(input).unwrap();
    let head: String = text.lines().take(lines).flat_map(|l| [l, "\n"]).collect();
    let part = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(part.path(), head).unwrap();
    let msgs = read_chats(part.path());
    let mut views = oracle::chat_views(&msgs, 60, 10);
    views.extend(oracle::network_views(&oracle::mention_edges(&msgs), None, 2, 30));
    views.extend(oracle::sentiment(&msgs, lexica, 60));
    views.extend(oracle::engagement(&msgs, &oracle::read_viewers(part.path()), 60));
    views.extend(oracle::post_views(&oracle::read_posts(part.path()), 300, 10));
    // Without --retention nothing is late.
    views.insert("late_events".into(), Default::default());
    views
}

#[test]
fn query_dir_equals_the_oracle_now_and_as_of_at_1_and_2_workers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.jsonl");
    run_ok(&[
        "produce",
        "--kind",
        "chat,posts,viewers",
        "--out",
        path_str(&input),
        "--count",
        "12000",
        "--seed",
        "71",
        "--channels",
        "12",
        "--users",
        "400",
        "--late-fraction",
        "0.02",
        "--viewers-interval-ms",
        "2000",
    ]);
    let mut bytes = std::fs::read(&input).unwrap();
    bytes.extend(b"not json\n");
    std::fs::write(&input, bytes).unwrap();
    let lexicon_dir = crate::mission::test_lexica(dir.path());
    let lexica = oracle::Lexica::read(&lexicon_dir);
    let mut all = expected_views(&input, 12_000, &lexica);
    let dead = [path_str(&input).to_owned(), "12001".into()];
    assert!(all["reach"].len() > 100 && all["top_connections"].len() > 10, "too few mentions to test the network");
    assert!(all["place_activity"].len() > 20 && all["sentiment"].len() > 20 && all["top_retweeted"].len() == 10);

    for workers in ["1", "2"] {
        let out = dir.path().join(format!("out-w{workers}"));
        run_ok(&[
            "run",
            "--replay",
            path_str(&input),
            "--out",
            path_str(&out),
            "--batch",
            "1000",
            "--mention-edges",
            "--lexicon-dir",
            path_str(&lexicon_dir),
            "-w",
            workers,
        ]);
        // The dead letter: its source and line; the reason and raw text as the files hold them.
        let letters = query_dir(&out, "dead_letters", &[]);
        assert_eq!(letters.len(), 1, "{letters:?}");
        assert_eq!(letters[0][..2], dead[..], "-w {workers}");
        all.insert("dead_letters".into(), letters.into_iter().collect());

        for def in CATALOG {
            let v = def.name;
            let got = query_dir(&out, v, &[]);
            let want = sorted(v, all[v].iter().cloned());
            assert!(got == want, "-w {workers}: {v} differs ({} rows, {} expected)", got.len(), want.len());
            // --limit takes the first rows of that order.
            assert_eq!(
                query_dir(&out, v, &["--limit", "7"]),
                want.iter().take(7).cloned().collect::<Vec<_>>(),
                "{v} --limit"
            );
        }
        // Filters: a channel's rows; a user's rows (connections: either end); a place's.
        let channel = &all["top_words"].iter().next().unwrap()[0].clone();
        for v in ["word_counts", "top_words", "user_counts"] {
            let want = sorted(v, all[v].iter().filter(|r| &r[0] == channel).cloned());
            assert_eq!(query_dir(&out, v, &["--channel", channel]), want, "{v} --channel {channel}");
        }
        let user = &all["connections"].iter().next().unwrap()[1];
        let want = sorted("connections", all["connections"].iter().filter(|r| &r[0] == user || &r[1] == user).cloned());
        assert!(!want.is_empty());
        assert_eq!(query_dir(&out, "connections", &["--user", user]), want, "connections --user {user}");
        let place = all["place_activity"].iter().next().unwrap()[0].clone();
        let want = sorted("place_activity", all["place_activity"].iter().filter(|r| r[0] == place).cloned());
        assert_eq!(query_dir(&out, "place_activity", &["--place", &place]), want, "place_activity --place {place}");

        // As of T: line g has time floor(g / 1000), so the state at T holds lines 0..(T+1)*1000.
        for t in [0usize, 5, 11] {
            let before = expected_views(&input, (t + 1) * 1000, &lexica);
            for (v, rows) in &before {
                let got = query_dir(&out, v, &["--as-of", &t.to_string()]);
                assert!(got == sorted(v, rows.iter().cloned()), "-w {workers}: {v} as of {t} differs");
            }
        }
        // The last line (the dead letter) is at time 12: the cut is 13; 13 is not written yet.
        let (_, stderr) = run_code(&["query", "word_counts", "--dir", path_str(&out), "--as-of", "13"], 1);
        assert_says(&stderr, &["not committed", "13"]);
    }
    let (_, stderr) = run_code(&["query", "top_words", "--dir", path_str(dir.path())], 1);
    assert_says(&stderr, &["_progress.csv", "chatflow run"]);
}

#[test]
fn the_summary_names_a_next_command_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let chat = produce(dir.path(), "chat.jsonl", 3_000, 72, 0.0);
    let out = dir.path().join("out");
    let output = run_ok(&["run", "--replay", path_str(&chat), "--out", path_str(&out)]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains(" 1 rows") && !stdout.contains(" 1 edge events"), "{stdout}");
    assert_says(&stdout, &["every change up to time 0 is written"]);
    let next =
        stdout.lines().find_map(|l| l.strip_prefix("next: ")).unwrap_or_else(|| panic!("no next step:\n{stdout}"));
    let command = next.split("   (").next().unwrap();
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[..3], ["chatflow", "query", "top_words"], "{next}");
    let answer = run_ok(&words[1..]);
    let shown = String::from_utf8_lossy(&answer.stdout);
    assert!(shown.lines().count() > 3, "{command} printed:\n{shown}");
}

/// A Twitch chat CSV of `n` messages, as the public logs look (a header, ISO times).
fn twitch_csv(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("chat.csv");
    let mut text = String::from("Timestamp,Channel,User,Message\n");
    for i in 0..n {
        text.push_str(&format!(
            "2025-02-17T00:{:02}:{:02}.5,chan{},user{},\"hello, world {i}\"\n",
            i / 60 % 60,
            i % 60,
            i % 3,
            i % 7
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// An edge list of `n` edges, `from,to`.
fn edge_list(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("edges.csv");
    let text: String =
        std::iter::once("from,to\n".to_owned()).chain((0..n).map(|i| format!("{},{}\n", i, i * 7 % 101))).collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_wrong_input_fails_and_says_which_command_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let csv = twitch_csv(dir.path(), 300);
    let edges = edge_list(dir.path(), 500);

    // A raw chat CSV replayed: every line a dead letter; exit 1, pointing at import.
    let out = dir.path().join("out");
    let (stdout, stderr) = run_code(&["run", "--replay", path_str(&csv), "--out", path_str(&out)], 1);
    assert_says(&stdout, &["0 events read, 301 dead letters"]);
    assert_says(
        &stderr,
        &["nothing was computed", "looks like a Twitch chat CSV", "chatflow import --from twitch-csv"],
    );

    // An edge list imported as chat: exit 1, pointing at edges-csv; --out left as it was.
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "old\n").unwrap();
    let args = ["import", "--from", "twitch-csv", path_str(&edges), "--out", path_str(&events)];
    let (_, stderr) = run_code(&args, 1);
    assert_says(&stderr, &["nothing was imported", "looks like an edge list", "--from edges-csv"]);
    assert_eq!(std::fs::read_to_string(&events).unwrap(), "old\n");

    // A chat CSV imported as an edge list: refused at its first line, exit 1, pointing back.
    let (_, stderr) = run_code(&["import", "--from", "edges-csv", path_str(&csv)], 1);
    assert_says(&stderr, &["not an edge list", "looks like a Twitch chat CSV", "--from twitch-csv"]);

    // The right command works, and the old `--out-file` spelling still does.
    run_ok(&["import", "--from", "twitch-csv", path_str(&csv), "--out-file", path_str(&events)]);
    assert_eq!(read_chats(&events).len(), 300);
}

#[test]
fn dead_letters_above_the_ratio_exit_3_after_writing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.jsonl");
    let good = |i: usize| {
        format!(r#"{{"ts":{},"channel":"c","user":"u{i}","text":"hi {i}"}}"#, 1_700_000_000_000u64 + i as u64)
    };
    let lines: Vec<String> = (0..10).map(|i| if i < 6 { good(i) } else { format!("bad {i}") }).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    // 4 of 10 lines are dead letters: fine by default, too many for 0.25.
    run_ok(&["run", "--replay", path_str(&input), "--out", path_str(&out)]);
    let args = ["run", "--replay", path_str(&input), "--out", path_str(&out), "--max-dead-letter-ratio", "0.25"];
    let (stdout, stderr) = run_code(&args, 3);
    assert_says(&stdout, &["6 events read, 4 dead letters"]);
    assert_says(&stderr, &["40.0 %", "(4 of 10)", "--max-dead-letter-ratio 0.25"]);
    assert_eq!(query_dir(&out, "user_counts", &[]).len(), 6, "the run wrote before failing");
    run_ok(&["run", "--replay", path_str(&input), "--out", path_str(&out), "--max-dead-letter-ratio", "0.5"]);

    // The same for import: 2 of 5 lines unparsable.
    let csv = dir.path().join("chat.csv");
    std::fs::write(
        &csv,
        "2025-02-17T00:00:01,c,u,hi\nnonsense\n2025-02-17T00:00:02,c,u,yo\nx,y\n2025-02-17T00:00:03,c,v,hey\n",
    )
    .unwrap();
    let (_, stderr) =
        run_code(&["import", "--from", "twitch-csv", path_str(&csv), "--max-dead-letter-ratio", "0.2"], 3);
    assert_says(&stderr, &["imported 3 events", "(2 of 5)"]);
    run_ok(&["import", "--from", "twitch-csv", path_str(&csv)]);
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let csv = twitch_csv(dir.path(), 50_000);
    let mut child = chatflow()
        .args(["import", "--from", "twitch-csv", path_str(&csv)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -1`: read one line, then close the pipe.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("{\"ts\":"), "{first}");
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let (_, stderr) = check_code(&output, 0, "import | head -1");
    assert!(!stderr.contains("error") && !stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn query_without_a_server_says_how_to_get_one() {
    let port = free_port().to_string();
    let (_, stderr) = run_code(&["query", "top_words", "--clickhouse", &format!("127.0.0.1:{port}")], 1);
    assert_says(&stderr, &[&format!("http://127.0.0.1:{port}"), "scripts/clickhouse.sh start", "--dir"]);
    assert!(!stderr.contains("EmptyHost") && !stderr.contains("SELECT"), "{stderr}");
    let (_, stderr) = run_code(&["query", "top_words", "--clickhouse", "ftp://x"], 2);
    assert_says(&stderr, &["not an http:// or https:// URL"]);
}

#[test]
fn a_failed_start_leaves_the_output_directory_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let chat = produce(dir.path(), "chat.jsonl", 2_000, 73, 0.0);
    let out = dir.path().join("out");
    run_ok(&["run", "--replay", path_str(&chat), "--out", path_str(&out)]);
    let before = snapshot(&out);
    assert!(before.keys().any(|p| p.ends_with("_progress.csv")));
    let base = ["run", "--replay", path_str(&chat), "--out", path_str(&out)];
    let focus = dir.path().join("no-such-focus.txt");
    let hosts = dir.path().join("no-such-hosts");
    let cases: [(&[&str], &[&str]); 5] = [
        (&["-n", "2", "-p", "5"], &["-p 5", "0 to 1"]),
        (&["-n", "2", "-p", "0", "-h", path_str(&hosts)], &["no-such-hosts", "hostfile"]),
        (&["--focus", path_str(&focus)], &["no-such-focus.txt"]),
        (&["--replay", "/nonexistent/x.jsonl"], &["/nonexistent/x.jsonl"]),
        (&["--resume", "--clickhouse", "127.0.0.1:1", "--database", "x;y"], &["--database"]),
    ];
    for (extra, words) in cases {
        let mut args = base.to_vec();
        if extra[0] == "--replay" {
            args = vec!["run", "--replay", extra[1], "--out", path_str(&out)];
        } else {
            args.extend(extra);
        }
        let (_, stderr) = run_code(&args, 1);
        assert_says(&stderr, words);
        assert!(snapshot(&out) == before, "{extra:?} changed the output directory");
    }

    // --out naming a file, a path under a file, a place that cannot be made.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (_, stderr) = run_code(&["run", "--replay", path_str(&chat), "--out", path_str(&file)], 1);
    assert_says(&stderr, &["is a file, not a directory"]);
    let under = file.join("sub");
    let (_, stderr) = run_code(&["run", "--replay", path_str(&chat), "--out", path_str(&under)], 1);
    assert_says(&stderr, &["cannot be created", "is a file"]);
    let (_, stderr) = run_code(&["run", "--replay", path_str(&chat), "--out", "/proc/chatflow-test"], 1);
    assert_says(&stderr, &["--out /proc/chatflow-test cannot be created"]);
}

#[test]
fn one_signal_stops_a_process_waiting_for_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let chat = produce(dir.path(), "chat.jsonl", 1_000, 74, 0.0);
    let out = dir.path().join("out");
    run_ok(&["run", "--replay", path_str(&chat), "--out", path_str(&out)]);
    let before = snapshot(&out);
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    let mut child = chatflow()
        .args([
            "run",
            "--replay",
            path_str(&chat),
            "--out",
            path_str(&out),
            "-n",
            "2",
            "-p",
            "0",
            "-h",
            path_str(&hosts),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it says it waits, then one SIGTERM.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("waiting for its peers") {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("the run ended before waiting for its peers:\n{said}");
        }
        said.push_str(&line);
    }
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let ended = poll_until(Duration::from_secs(60), || child.try_wait().unwrap().is_some());
    if !ended {
        let _ = child.kill();
        panic!("one SIGTERM did not stop a process waiting for its peers within 60 s");
    }
    let code = child.wait().unwrap().code();
    stderr.read_to_string(&mut said).unwrap();
    assert_eq!(code, Some(130), "{said}");
    assert_says(&said, &["stopped before the run started"]);
    assert!(snapshot(&out) == before, "the output directory changed");
}

#[test]
fn flags_say_what_is_wrong() {
    let cases: [(&[&str], &[&str]); 9] = [
        (&["run", "--replay", "x.jsonl", "--window", "-5"], &["'-5'", "--window", "between 1 and"]),
        (&["produce", "--count", "-1", "--out", "p.jsonl"], &["'-1'", "--count", "0 or more"]),
        (&["run", "--replay", "x.jsonl", "-w", "0"], &["'0'", "--threads", "between 1 and"]),
        (&["run", "--replay", "x.jsonl", "--top-k", "0"], &["--top-k", "between 1 and"]),
        (&["produce", "--late-fraction", "2", "--out", "p.jsonl"], &["--late-fraction", "between 0 and 1"]),
        (&["run", "-h"], &["hostfile", "--help"]),
        (&["bench", "--replay", "x.jsonl", "-h"], &["hostfile", "chatflow bench --help"]),
        (&["run"], &["--replay", "--kafka"]),
        (&["run", "--replay", "x.jsonl", "--kafka", "127.0.0.1:1"], &["cannot be used with"]),
    ];
    for (args, words) in cases {
        let (_, stderr) = run_code(args, 2);
        assert_says(&stderr, words);
    }
    let (help, _) = run_code(&["run", "--help"], 0);
    assert_says(&help, &["<--replay <FILE|DIR>...|--kafka <BROKERS>>", "--max-dead-letter-ratio"]);
    let (help, _) = run_code(&["query", "--help"], 0);
    assert_says(&help, &["--dir <DIR>", "--database", "The ClickHouse database"]);
}
