//! `chatflow serve` on 127.0.0.1: the API equals `chatflow query` for every view and filter
//! (change files and ClickHouse), bad input is a 400, unknown paths (traversal too) a 404,
//! the token guards every request, injection strings stay data, and the event stream reports
//! a cut that moves.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// A running `chatflow serve` (or `run --serve`), killed when dropped.
pub struct Server {
    pub child: Child,
    pub address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` (its stderr piped here) and returns once it says where it listens, with
/// the rest of its log to read.
#[allow(clippy::zombie_processes, reason = "Server's Drop kills and waits")]
pub fn listening(command: &mut Command) -> (Server, BufReader<ChildStderr>) {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let status = child.wait();
            panic!("chatflow ended before listening ({status:?}):\n{log}");
        }
        if let Some(address) = line.trim().strip_prefix("chatflow serve: listening on http://") {
            return (Server { child, address: address.to_owned() }, stderr);
        }
        log.push_str(&line);
    }
}

/// Reads the rest of a log so that the process never blocks on a full pipe.
pub fn drain(stderr: BufReader<ChildStderr>) {
    let mut stderr = stderr;
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
}

/// Starts `chatflow serve` with `args` on a free loopback port; returns once it listens.
pub fn start(args: &[&str]) -> Server {
    let (server, stderr) =
        listening(chatflow().args(["serve", "--listen", "127.0.0.1:0"]).args(args).stdout(Stdio::null()));
    drain(stderr);
    server
}

/// GET `path` (with `token`, if any): the status and the body.
pub fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = ureq::get(&format!("http://{}{path}", server.address)).timeout(Duration::from_secs(60));
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    match request.call() {
        Ok(response) => (response.status(), response.into_string().unwrap()),
        Err(ureq::Error::Status(code, response)) => (code, response.into_string().unwrap()),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `chatflow query <view> --format json` with `store` and `extra` flags.
pub fn query_json(store: &[&str], view: &str, extra: &[&str]) -> Value {
    let mut args = vec!["query", view, "--format", "json"];
    args.extend(store);
    args.extend(extra);
    json(&String::from_utf8(run_ok(&args).stdout).unwrap())
}

/// Every view with no filter, with each filter it has, with --limit and --as-of: the API's
/// rows equal `chatflow query`'s.
fn api_equals_query(server: &Server, store: &[&str], channel: &str, user: &str, place: &str) {
    let mut checked = 0;
    for def in dataflows::CATALOG {
        let mut cases: Vec<(String, Vec<&str>)> = vec![
            (String::new(), vec![]),
            ("?limit=3".into(), vec!["--limit", "3"]),
            ("?as_of=0".into(), vec!["--as-of", "0"]),
        ];
        for (filter, value) in [("channel", channel), ("user", user), ("place", place)] {
            if !def.filter_columns(filter).is_empty() {
                let encoded: String = url_encode(value);
                cases.push((
                    format!("?{filter}={encoded}"),
                    vec![
                        if filter == "channel" {
                            "--channel"
                        } else if filter == "user" {
                            "--user"
                        } else {
                            "--place"
                        },
                        value,
                    ],
                ));
            }
        }
        for (params, flags) in cases {
            let (status, body) = get(server, &format!("/api/views/{}{params}", def.name), None);
            assert_eq!(status, 200, "{} {params}: {body}", def.name);
            let rows = json(&body)["rows"].clone();
            assert_eq!(rows, query_json(store, def.name, &flags), "{} {params}", def.name);
            checked += rows.as_array().unwrap().len();
        }
    }
    assert!(checked > 1000, "only {checked} rows compared");
}

pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn fixture_run(dir: &Path) -> std::path::PathBuf {
    let input = produce_mixed(dir, 8000, 91, b"");
    let out = dir.join("out");
    run_ok(&["run", "--replay", path_str(&input), "--out", path_str(&out), "--batch", "1000", "--mention-edges"]);
    out
}

#[test]
fn api_over_change_files_equals_query_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = fixture_run(dir.path());
    let server = start(&["--from", path_str(&out)]);
    let store = ["--dir", path_str(&out)];
    let channel = query_json(&store, "top_words", &["--limit", "1"])[0]["channel"].as_str().unwrap().to_owned();
    let user = query_json(&store, "connections", &["--limit", "1"])[0]["user_a"].as_str().unwrap().to_owned();
    let place = query_json(&store, "place_activity", &["--limit", "1"])[0]["place"].as_str().unwrap().to_owned();
    api_equals_query(&server, &store, &channel, &user, &place);

    // The catalog, the cut, channels, a user's connections.
    let catalog = json(&get(&server, "/api/views", None).1);
    assert_eq!(catalog["views"].as_array().unwrap().len(), dataflows::CATALOG.len());
    let cut = json(&get(&server, "/api/cut", None).1)["cut"].as_u64().unwrap();
    assert_eq!(cut, 8);
    let channels = json(&get(&server, "/api/channels", None).1);
    let mut messages: std::collections::BTreeMap<String, i64> = Default::default();
    for row in query_json(&store, "channel_activity", &[]).as_array().unwrap() {
        *messages.entry(row["channel"].as_str().unwrap().to_owned()).or_default() += row["messages"].as_i64().unwrap();
    }
    let mut busiest: Vec<(String, i64)> = messages.into_iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let listed: Vec<(String, i64)> = channels["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["channel"].as_str().unwrap().to_owned(), c["messages"].as_i64().unwrap()))
        .collect();
    assert_eq!(listed, busiest);
    let connections = json(&get(&server, &format!("/api/users/{}/connections", url_encode(&user)), None).1);
    assert_eq!(connections["rows"], query_json(&store, "top_connections", &["--user", &user]));

    // Bad input: 400 or 404 with a message, never a crash.
    for (path, status, words) in [
        ("/api/views/nope", 400, "no view"),
        ("/api/views/top_words?as_of=8", 400, "not committed"),
        ("/api/views/top_words?as_of=-1", 400, "whole number"),
        ("/api/views/top_words?limit=x", 400, "whole number"),
        ("/api/views/top_words?place=Oslo", 400, "no place column"),
        ("/api/views/top_words?sql=1", 400, "unknown parameter"),
        ("/nothing/here", 404, "no such page"),
    ] {
        let (got, body) = get(&server, path, None);
        assert_eq!(got, status, "{path}: {body}");
        assert!(json(&body)["error"].as_str().unwrap().contains(words), "{path}: {body}");
    }
    // Path traversal, sent as written (no client normalising it).
    for raw in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/api/../../Cargo.toml",
        "/assets/../../../Cargo.toml",
        "/assets/%2e%2e/%2e%2e/%2e%2e/Cargo.toml",
        "/assets/..%2f..%2f..%2fCargo.toml",
    ] {
        let mut stream = std::net::TcpStream::connect(&server.address).unwrap();
        write!(stream, "GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 400"), "{raw}: {answer}");
        assert!(!answer.contains("root:") && !answer.contains("[package]"), "{raw}: {answer}");
    }
    // The dashboard page.
    let (status, page) = get(&server, "/", None);
    assert!(status == 200 && page.contains("new EventSource(url)"));
    for (asset, words) in [
        ("/assets/uplot/uPlot.iife.min.js", "uPlot"),
        ("/assets/cytoscape/cytoscape.min.js", "cytoscape"),
        ("/assets/uplot/uPlot.min.css", ".u-legend"),
        ("/assets/cytoscape/LICENSE", "Copyright"),
    ] {
        let (status, body) = get(&server, asset, None);
        assert!(status == 200 && body.contains(words), "{asset}");
    }
    for missing in ["/assets/", "/assets/nope.js", "/assets/uplot/../../mod.rs", "/assets/%2e%2e/index.html"] {
        assert_eq!(get(&server, missing, None).0, 404, "{missing}");
    }
}

#[test]
fn token_and_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = fixture_run(dir.path());
    // Off loopback without a token: refused before listening.
    let refused = chatflow()
        .args(["serve", "--from", path_str(&out), "--listen", "0.0.0.0:0"])
        .env_remove("CHATFLOW_TOKEN")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs --token"));
    // With a token every request needs it; /metrics too unless --metrics-public.
    let server = start(&["--from", path_str(&out), "--token", "s3cret"]);
    for path in ["/api/cut", "/api/views/top_words", "/", "/metrics", "/api/stream"] {
        assert_eq!(get(&server, path, None).0, 401, "{path} without a token");
        assert_eq!(get(&server, path, Some("wrong")).0, 401, "{path} with a wrong token");
    }
    assert_eq!(get(&server, "/api/cut", Some("s3cret")).0, 200);
    assert_eq!(get(&server, "/metrics", Some("s3cret")).0, 200);
    drop(server);
    let server = start(&["--from", path_str(&out), "--token", "s3cret", "--metrics-public"]);
    assert_eq!(get(&server, "/metrics", None).0, 200);
    assert_eq!(get(&server, "/api/cut", None).0, 401);
}

#[test]
fn the_stream_reports_the_cut_moving_with_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let server = start(&["--from", path_str(&out)]);
    for (path, words) in [("/api/stream?views=nope", "no view"), ("/api/stream?sql=1", "unknown parameter")] {
        let (status, body) = get(&server, path, None);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(words), "{path}: {body}");
    }
    let stream = std::net::TcpStream::connect(&server.address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let request = "/api/stream?views=top_words,user_counts,channels&limit=5&place=ignored";
    write!(writer, "GET {request} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut next_event = || -> Value {
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
            if let Some(data) = line.trim().strip_prefix("data: ") {
                return json(data);
            }
        }
    };
    let first = next_event();
    assert_eq!(first["cut"], Value::Null, "nothing is committed in an empty directory: {first}");
    assert_eq!(first["views"], serde_json::json!({}), "no rows before a cut: {first}");
    let input = produce(dir.path(), "chat.jsonl", 3000, 5, 0.0);
    run_ok(&["run", "--replay", path_str(&input), "--out", path_str(&out), "--batch", "1000"]);
    // The progress record is rewritten while the run goes (at most every 20 ms), so the cut
    // may stop at 1 or 2 on its way to the run's upper, 3. Every event says what changed
    // since the one before: the rows before, less `removed`, plus `added`, are its rows.
    let mut shown = serde_json::json!({"top_words": [], "user_counts": []});
    let mut cuts = Vec::new();
    let moved = loop {
        let event = next_event();
        let cut = event["cut"].as_u64().unwrap_or_else(|| panic!("a cut after the run started: {event}"));
        assert!(cuts.last().is_none_or(|&c| c < cut), "the cut only moves forward: {cuts:?}, then {event}");
        cuts.push(cut);
        for view in ["top_words", "user_counts"] {
            assert_eq!(event["views"][view]["rows"], changed(&shown[view], &event["views"][view]), "{view} at {cut}");
            shown[view] = event["views"][view]["rows"].clone();
        }
        if cut == 3 {
            break event;
        }
    };
    // (A filter a view lacks is not applied.)
    let store = ["--dir", path_str(&out)];
    for view in ["top_words", "user_counts"] {
        let rows = query_json(&store, view, &["--limit", "5"]);
        assert_eq!(moved["views"][view]["rows"], rows, "{view}");
    }
    let channels = json(&get(&server, "/api/channels", None).1);
    assert_eq!(moved["channels"], channels["channels"]);
    // A run from the beginning again, of fewer messages: the rows that went are `removed`.
    let fewer = produce(dir.path(), "fewer.jsonl", 1000, 5, 0.0);
    run_ok(&["run", "--replay", path_str(&fewer), "--out", path_str(&out), "--batch", "1000"]);
    // (The new run removes the progress record before its files: a cut of null may come first.)
    let again = loop {
        let event = next_event();
        if event["cut"] != Value::Null {
            break event;
        }
    };
    assert_eq!(again["cut"], Value::from(1), "{again}");
    let before = query_json(&store, "top_words", &["--limit", "5"]);
    let (old, new) = (moved["views"]["top_words"]["rows"].as_array().unwrap(), before.as_array().unwrap());
    let gone: Vec<&Value> = old.iter().filter(|r| !new.contains(r)).collect();
    let came: Vec<&Value> = new.iter().filter(|r| !old.contains(r)).collect();
    assert!(!gone.is_empty(), "the counts changed");
    assert_eq!(again["views"]["top_words"]["removed"].as_array().unwrap().iter().collect::<Vec<_>>(), gone);
    assert_eq!(again["views"]["top_words"]["added"].as_array().unwrap().iter().collect::<Vec<_>>(), came);
}

/// The rows `before`, less the event's `removed`, plus its `added`, in the order of its rows.
fn changed(before: &Value, event: &Value) -> Value {
    let mut rows: Vec<Value> = before.as_array().unwrap().clone();
    for gone in event["removed"].as_array().unwrap() {
        let at = rows.iter().position(|r| r == gone).unwrap_or_else(|| panic!("removed {gone}, not shown: {event}"));
        rows.remove(at);
    }
    rows.extend(event["added"].as_array().unwrap().iter().cloned());
    let order = event["rows"].as_array().unwrap();
    rows.sort_by_key(|r| order.iter().position(|o| o == r).unwrap_or(usize::MAX));
    Value::from(rows)
}

#[test]
fn run_serve_refuses_a_port_in_use_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = dir.path().join("out");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let output = chatflow()
        .args(["run", "--replay", path_str(&fixtures), "--out", path_str(&out), "--serve", &address])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("--serve {address}: cannot listen")), "{stderr}");
    assert!(!out.exists(), "nothing ran: {stderr}");
}

#[test]
fn api_over_clickhouse_equals_query_and_keeps_injections_as_data() {
    let url = &crate::clickhouse::server();
    let dir = tempfile::tempdir().unwrap();
    let nasty = "x'); DROP TABLE word_counts; --";
    let line =
        format!("{}\n", serde_json::json!({"ts": 1740787200000i64, "channel": nasty, "user": nasty, "text": "hi"}));
    let input = produce_mixed(dir.path(), 8000, 92, line.as_bytes());
    let db = crate::clickhouse::database("serve");
    let out = dir.path().join("out");
    run_ok(&[
        "run",
        "--replay",
        path_str(&input),
        "--out",
        path_str(&out),
        "--clickhouse",
        url,
        "--database",
        &db,
        "--mention-edges",
    ]);
    let server = start(&["--clickhouse", url, "--database", &db]);
    let store = ["--clickhouse", url, "--database", &db];
    let user = query_json(&store, "connections", &["--limit", "1"])[0]["user_a"].as_str().unwrap().to_owned();
    api_equals_query(&server, &store, "xqc", &user, "Melbourne");
    let (status, body) = get(&server, &format!("/api/views/user_counts?channel={}", url_encode(nasty)), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["rows"][0]["user"], nasty);
    assert!(json(&get(&server, "/api/views/word_counts?limit=1", None).1)["rows"]
        .as_array()
        .is_some_and(|r| r.len() == 1));
    // An unreachable server is a 503.
    let dead = start(&["--clickhouse", &format!("127.0.0.1:{}", free_port()), "--database", &db]);
    let (status, body) = get(&dead, "/api/views/top_words", None);
    assert_eq!(status, 503, "{body}");
}

/// Parses Prometheus text: every line a comment or `name{labels} value`; returns
/// (name, labels, value) of each sample.
fn prometheus(text: &str) -> Vec<(String, String, f64)> {
    let sample = regex::Regex::new(r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$"#).unwrap();
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let c = sample.captures(l).unwrap_or_else(|| panic!("not Prometheus text: {l:?}"));
            let value = c[3].parse::<f64>().unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (c[1].to_owned(), c.get(2).map_or("", |m| m.as_str()).to_owned(), value)
        })
        .collect()
}

#[test]
fn run_serve_publishes_the_runs_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let input = produce_mixed(dir.path(), 6000, 93, b"bad line\nanother bad line\n");
    let out = dir.path().join("out");
    let (mut server, mut stderr) = listening(
        chatflow()
            .args(["run", "--replay", path_str(&input), "--out", path_str(&out), "-w", "2", "--serve", "127.0.0.1:0"])
            .args(["--retention", "0"])
            .stdout(Stdio::piped()),
    );
    let mut log = String::new();
    while !log.contains("still serving") {
        if stderr.read_line(&mut log).unwrap() == 0 {
            panic!("the run ended without serving:\n{log}");
        }
    }
    drain(stderr);
    let (status, text) = get(&server, "/metrics", None);
    assert_eq!(status, 200);
    let samples = prometheus(&text);
    let total = |name: &str| samples.iter().filter(|(n, _, _)| n == name).map(|(_, _, v)| *v as u64).sum::<u64>();
    assert_eq!((total("chatflow_events_total"), total("chatflow_dead_letters_total")), (6000, 2));
    assert!(samples.iter().any(|(n, l, _)| n == "chatflow_events_total" && l.contains("kind=\"post\"")));
    let rows: u64 = total("chatflow_rows_written_total");
    // The summary on stdout says the same.
    let child = &mut server.child;
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {stdout}");
    assert!(stdout.contains("6000 events read, 2 dead letters"), "{stdout}");
    let listed: u64 = stdout
        .lines()
        .filter_map(|l| l.trim().split_once(".csv: ").and_then(|(_, n)| n.split(' ').next()?.parse::<u64>().ok()))
        .sum();
    assert_eq!(rows, listed, "rows written: /metrics against the summary\n{stdout}");
    // The retention horizon: per windowed operator, held and dropped as the summary says.
    let summed = |prefix: &str| -> u64 {
        let line = stdout.lines().find(|l| l.contains(prefix)).unwrap_or_else(|| panic!("no {prefix:?}: {stdout}"));
        let list = line.split_once(prefix).unwrap().1;
        list.split(", ").map(|item| item.trim().split(' ').next().unwrap().parse::<u64>().unwrap()).sum()
    };
    let operators = samples.iter().filter(|(n, _, _)| n == "chatflow_windows_held").count();
    assert!(operators >= 2 * 6, "held windows of 6 operators on 2 workers: {operators} series");
    assert_eq!(total("chatflow_windows_held"), summed("windows held at the end: "), "{stdout}");
    assert_eq!(total("chatflow_windows_dropped_total"), summed("sealed windows dropped: "), "{stdout}");
}
