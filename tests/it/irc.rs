//! The live Twitch chat bridge (`produce --from-irc`) against a loopback IRC server that this
//! test runs (the real protocol over TCP) and the shared Kafka broker: the server replays the
//! recorded raw lines of `fixtures/irc-sample.log` with `tmi-sent-ts` tags added, sends PINGs
//! and waits for the PONGs, and drops the connection once mid-stream; every PRIVMSG reaches
//! the topic exactly as `import --from twitch-irc` reads it from the same log, and nothing
//! else does.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use chatflow::sources::import::parse_timestamp;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::kafka::{broker, topic_payloads, unique};
use crate::support::*;

/// The log's IRC lines a server would have sent, each with its recorded time; lines whose
/// time cannot be read are left out (no server sent them at a known time).
fn recorded_lines(log: &Path) -> Vec<(i64, String)> {
    let text = String::from_utf8(std::fs::read(log).unwrap()).unwrap();
    let mut current = None;
    let mut lines = Vec::new();
    for line in text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()) {
        let irc = match line.split_once(" ;;; ") {
            Some((stamp, irc)) => {
                current = parse_timestamp(stamp);
                irc
            }
            None => line,
        };
        if let (Some(ts), false) = (current, irc.starts_with("START OF RECORDED")) {
            lines.push((ts, irc.to_owned()));
        }
    }
    lines
}

/// Adds `tmi-sent-ts` to a PRIVMSG's tags, as Twitch sends them.
fn tagged(ts: i64, line: &str) -> String {
    if !line.contains(" PRIVMSG ") {
        return line.to_owned();
    }
    match line.strip_prefix('@') {
        Some(rest) => format!("@tmi-sent-ts={ts};{rest}"),
        None => format!("@tmi-sent-ts={ts} {line}"),
    }
}

/// Reads client lines until one starts with `prefix`; returns every line read.
fn expect_line(reader: &mut impl BufRead, prefix: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap_or(0);
        assert!(n > 0, "the client closed before sending {prefix:?}; it sent {seen:?}");
        let line = line.trim_end().to_owned();
        seen.push(line.clone());
        if line.starts_with(prefix) {
            return seen;
        }
    }
}

/// The loopback server: two connections, the first dropped after `drop_after` lines.
fn serve(listener: TcpListener, script: Vec<String>, drop_after: usize, done: mpsc::Receiver<()>) -> Vec<String> {
    let mut heard = Vec::new();
    let mut next = 0;
    for connection in 0..2 {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut out = stream;
        let login = expect_line(&mut reader, "JOIN ");
        assert!(login.iter().any(|l| l.starts_with("CAP REQ") && l.contains("twitch.tv/tags")), "{login:?}");
        assert!(login.iter().any(|l| l.starts_with("NICK justinfan")), "{login:?}");
        assert!(login.last().unwrap().contains("#samplechan"), "{login:?}");
        heard.extend(login);
        let end = if connection == 0 { drop_after } else { script.len() };
        while next < end {
            let line = &script[next];
            next += 1;
            write!(out, "{line}\r\n").unwrap();
            if let Some(token) = line.strip_prefix("PING :") {
                heard.extend(expect_line(&mut reader, &format!("PONG :{token}")));
            }
        }
        if connection == 0 {
            // Mid-stream, the connection drops.
            out.shutdown(std::net::Shutdown::Both).unwrap();
            continue;
        }
        write!(out, "PING :still-there\r\n").unwrap();
        heard.extend(expect_line(&mut reader, "PONG :still-there"));
        let _ = done.recv_timeout(Duration::from_secs(300));
    }
    heard
}

/// Every record of partition 0 of `topic` from its beginning, waiting up to `deadline` for
/// `at_least` of them.
fn records(topic: &str, at_least: usize, deadline: Duration) -> Vec<String> {
    topic_payloads(topic, 1, at_least, deadline).into_iter().map(|p| String::from_utf8(p).unwrap()).collect()
}

#[test]
fn live_irc_chat_reaches_kafka_as_the_importer_reads_it() {
    let broker = broker();
    let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/irc-sample.log");
    let dir = tempfile::tempdir().unwrap();
    let imported = dir.path().join("imported.jsonl");
    run_ok(&["import", "--from", "twitch-irc", path_str(&log), "--out", path_str(&imported)]);
    let expected: Vec<String> = std::fs::read_to_string(&imported).unwrap().lines().map(str::to_owned).collect();
    assert!(expected.len() >= 6, "{expected:?}");

    let script: Vec<String> = recorded_lines(&log).into_iter().map(|(ts, l)| tagged(ts, &l)).collect();
    assert!(script.iter().filter(|l| l.starts_with("PING")).count() >= 1);
    // Drop the connection after the third PRIVMSG.
    let drop_after = script.iter().enumerate().filter(|(_, l)| l.contains(" PRIVMSG ")).nth(2).unwrap().0 + 1;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (done, wait) = mpsc::channel();
    let server = std::thread::spawn(move || serve(listener, script, drop_after, wait));

    let topic = format!("{}-chat", unique("irc"));
    let mut bridge = chatflow()
        .args(["produce", "--kafka", broker, "--from-irc", "samplechan", "--irc-server", &address])
        .args(["--chat-topic", &topic, "--partitions", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let got = records(&topic, expected.len(), Duration::from_secs(120));
    // One SIGTERM: the bridge flushes and ends.
    let status = std::process::Command::new("kill").args(["-TERM", &bridge.id().to_string()]).status().unwrap();
    assert!(status.success());
    let ended = poll_until(Duration::from_secs(60), || bridge.try_wait().unwrap().is_some());
    if !ended {
        kill_and_fail(&mut bridge, "the bridge did not stop on SIGTERM within 60 s".into());
    }
    let output = bridge.wait_with_output().unwrap();
    let log_text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the bridge failed: {log_text}");
    done.send(()).unwrap();
    let heard = server.join().unwrap();
    assert!(heard.iter().any(|l| l == "PONG :tmi.twitch.tv") && heard.iter().any(|l| l == "PONG :still-there"));
    assert_eq!(heard.iter().filter(|l| l.starts_with("JOIN ")).count(), 2, "it joined again after the drop: {heard:?}");

    // Exactly the importer's events, in the log's order, and nothing else.
    let all = records(&topic, expected.len(), Duration::from_secs(30));
    let parse = |l: &String| serde_json::from_str::<serde_json::Value>(l).unwrap();
    assert_eq!(all.iter().map(parse).collect::<Vec<_>>(), expected.iter().map(parse).collect::<Vec<_>>());
    assert_eq!(got.len(), all.len());
    let consumer: BaseConsumer = chatflow::sources::kafka::client_config(broker, &[]).create().unwrap();
    let (low, high) = consumer.fetch_watermarks(&topic, 0, Duration::from_secs(30)).unwrap();
    assert_eq!((high - low) as usize, expected.len(), "the topic holds other records too");
}
