//! `chatflow import`: the CSV and IRC log readers, with the traps of the real files and
//! malformed, truncated, oversized and non-UTF-8 lines.

use std::path::Path;

use crate::oracle::{read_chats, Msg};
use crate::support::*;

fn import(format: &str, files: &[&Path]) -> (Vec<Msg>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let mut args = vec!["import", "--from", format, "--out-file", path_str(&out)];
    args.extend(files.iter().map(|f| path_str(f)));
    let output = run_ok(&args);
    (read_chats(&out), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn msg(ts: i64, channel: &str, user: &str, text: &str) -> Msg {
    Msg { ts, channel: channel.into(), user: user.into(), text: text.into() }
}

#[test]
fn irc_log_fixture() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/irc-sample.log");
    let (msgs, report) = import("twitch-irc", &[&fixture]);
    let t = |s: i64| 1_714_759_200_000 + s * 1000; // 2024-05-03T18:00:00Z + s
    assert_eq!(
        msgs,
        vec![
            msg(t(1), "samplechan", "alice", "PogChamp what a play"),
            msg(t(2), "samplechan", "bob", "KEKW KEKW"),
            msg(t(2), "samplechan", "carol", "@bob same :)"),
            msg(t(2), "samplechan", "dave", "waves at chat"),
            msg(t(4), "samplechan", "alice", "PogChamp what a play"),
            msg(t(65), "samplechan", "emile", "très bien, ça marche"),
            msg(t(67), "samplechan", "gina", "last one GG"),
        ]
    );
    assert!(report.contains("imported 7 events"), "{report}");
    assert!(report.contains("skipped 9 server lines"), "{report}");
    assert!(report.contains("2 lines could not be parsed"), "{report}");
    assert!(report.contains("irc-sample.log:25: PRIVMSG without text"), "{report}");
    assert!(report.contains("irc-sample.log:27: bad timestamp"), "{report}");
}

#[test]
fn irc_bad_lines_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.log");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b":early!early@early PRIVMSG #c :before any timestamp\r\n"); // 1
    bytes.extend_from_slice(b"2024-01-01_00:00:00 ;;; :ok!ok@ok PRIVMSG #c :fine\r\n"); // 2
    bytes.extend_from_slice(b"2024-01-01_00:00:01 ;;; :u!u@u PRIVMSG #c :\xff\xfe\r\n"); // 3: not UTF-8
    bytes.extend_from_slice(b"2024-01-01_00:00:02 ;;; complete garbage\r\n"); // 4
    bytes.extend_from_slice(b"2024-01-01_00:00:03 ;;; :u!u@u PRIVMSG #c :"); // 5: oversized
    bytes.extend(std::iter::repeat_n(b'y', 1_100_000));
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(b"2024-01-01_00:00:04 ;;; :u!u@u PRIVMSG #c :trunc"); // 6: no line end, still a message
    std::fs::write(&path, &bytes).unwrap();
    let (msgs, report) = import("twitch-irc", &[&path]);
    assert_eq!(msgs, vec![msg(1_704_067_200_000, "c", "ok", "fine"), msg(1_704_067_204_000, "c", "u", "trunc")]);
    for expected in [
        "bad.log:1: message before any timestamp",
        "bad.log:3: invalid UTF-8",
        "bad.log:4: not an IRC line",
        "bad.log:5: line of 1100045 bytes exceeds the limit",
    ] {
        assert!(report.contains(expected), "{expected:?} not in {report}");
    }
}

#[test]
fn csv_logs_with_the_real_traps() {
    let dir = tempfile::tempdir().unwrap();
    let headerless = dir.path().join("chat_logs.csv");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"\n"); // 1: leading blank line
    bytes.extend_from_slice(b"2025-02-17T00:18:16.177235,fortnite,vinny,Ohno Ohno\r\n"); // 2
    bytes.extend_from_slice(b"2025-02-17T00:18:16.2,kaza,lol1,\"a, quoted \"\"text\"\"\"\r\n"); // 3
    bytes.extend_from_slice(b"2025-02-17T00:18:17,kaza,me,\x01ACTION dances\x01\r\n"); // 4
    bytes.extend_from_slice("2025-02-17T00:18:18,kaza,dup,again \u{e0000}\r\n".as_bytes()); // 5
    bytes.extend_from_slice(b"not a time,kaza,x,y\r\n"); // 6
    bytes.extend_from_slice(b"2025-02-17T00:18:19,kaza\r\n"); // 7: too few fields
    bytes.extend_from_slice(b"2025-02-17T00:18:20,kaza,u,\xff bytes\r\n"); // 8: not UTF-8
    bytes.extend_from_slice(b"2025-02-17T00:18:21,#kaza,multi,\"two\nlines\"\r\n"); // 9-10
    bytes.extend_from_slice(b"2025-02-17T00:18:22,kaza,big,"); // 11: oversized
    bytes.extend(std::iter::repeat_n(b'z', 1_100_000));
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(b"2025-02-17T00:18:23,kaza,cut,\"unterminated"); // 12: truncated at EOF
    std::fs::write(&headerless, &bytes).unwrap();

    let with_header = dir.path().join("formatted.csv");
    std::fs::write(&with_header, "time,username,channel,message\n2019-04-30 08:56:59,collect,admiral,IF HENRIK\n")
        .unwrap();

    let (msgs, report) = import("twitch-csv", &[&headerless, &with_header]);
    let t0 = 1_739_751_496_000; // 2025-02-17T00:18:16Z
    assert_eq!(
        msgs,
        vec![
            msg(t0 + 177, "fortnite", "vinny", "Ohno Ohno"),
            msg(t0 + 200, "kaza", "lol1", "a, quoted \"text\""),
            msg(t0 + 1000, "kaza", "me", "dances"),
            msg(t0 + 2000, "kaza", "dup", "again"),
            msg(t0 + 5000, "kaza", "multi", "two\nlines"),
            msg(1_556_614_619_000, "admiral", "collect", "IF HENRIK"),
        ]
    );
    for expected in [
        "chat_logs.csv:6: bad timestamp",
        "chat_logs.csv:7: expected 4 fields, found 2",
        "chat_logs.csv:8: invalid UTF-8",
        "chat_logs.csv:11: record of 1100026 bytes exceeds the limit",
    ] {
        assert!(report.contains(expected), "{expected:?} not in {report}");
    }
    // The unterminated last record is cut at the end of the file: reported, not imported.
    assert!(report.contains("chat_logs.csv:12: truncated"), "{report}");
    // Without the cut, a last line without a line end is a message like any other.
    let no_newline = dir.path().join("no_newline.csv");
    std::fs::write(&no_newline, "2025-02-17T00:18:16,c,u,\"fine, \"\"quoted\"\"\"").unwrap();
    let (msgs, _) = import("twitch-csv", &[&no_newline]);
    assert_eq!(msgs, vec![msg(t0, "c", "u", "fine, \"quoted\"")]);
}
