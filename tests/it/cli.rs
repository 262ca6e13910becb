//! The `chatflow` binary end to end: fixture files in, change files out, compared with the
//! oracle at several worker counts, batch sizes, arrival orders and as two processes.

use std::path::Path;

use crate::oracle::{self, read_chats};
use crate::support::*;

fn run_views_of(input: &Path, out: &Path, extra: &[&str]) -> crate::oracle::Views {
    let mut args = vec!["run", "--replay", path_str(input), "--out", path_str(out)];
    args.extend_from_slice(extra);
    run_ok(&args);
    read_views(out, &CHAT_VIEWS)
}

fn read_bytes(dir: &Path, view: &str) -> Vec<u8> {
    std::fs::read(dir.join(format!("{view}.csv"))).unwrap()
}

/// Each of `views` has byte-identical change files in `a` and `b` (`what` says why they should).
fn assert_same_files(a: &Path, b: &Path, views: &[&str], what: &str) {
    for view in views {
        assert!(read_bytes(a, view) == read_bytes(b, view), "{view}.csv: {what}");
    }
}

#[test]
fn generated_fixture_matches_oracle_at_1_2_4_workers() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 30_000, 11, 0.02);
    let expected = oracle::chat_views(&read_chats(&fixture), 60, 10);
    assert!(expected["word_counts"].len() > 1000, "the fixture is too small to test much");
    let mut first: Option<std::path::PathBuf> = None;
    for workers in ["1", "2", "4"] {
        let out = dir.path().join(format!("out-w{workers}"));
        let actual = run_views_of(&fixture, &out, &["-w", workers, "--batch", "1000"]);
        assert_views_eq(&actual, &expected, &format!("-w {workers}"));
        // Sorted, consolidated times: the files do not depend on the number of workers.
        match &first {
            None => first = Some(out),
            Some(base) => assert_same_files(base, &out, &CHAT_VIEWS, &format!("differs between -w 1 and -w {workers}")),
        }
    }
    // All 30,000 messages at one time: its word_counts (1.5 MB) is more than a change file's
    // buffer, so the writer thread writes it, where the small times above are written by
    // worker 0 itself.
    let one_time = dir.path().join("out-one-time");
    let actual = run_views_of(&fixture, &one_time, &["-w", "2", "--batch", "30000"]);
    assert_views_eq(&actual, &expected, "-w 2, one time");
    // The encoders hand on every 4 KiB of a time's rows unsorted (as they do a graph load's
    // millions of rows), for the writer thread to group and sort: the same files, at every
    // worker count, for many small times and for one large one.
    let base = first.unwrap();
    for workers in ["1", "2", "4"] {
        for (batch, same_as) in [("1000", &base), ("30000", &one_time)] {
            let out = dir.path().join(format!("out-parts-w{workers}-b{batch}"));
            let args =
                ["run", "--replay", path_str(&fixture), "--out", path_str(&out), "-w", workers, "--batch", batch];
            run_ok_env(&[("CHATFLOW_PART_BYTES", "4096")], &args);
            assert_same_files(same_as, &out, &CHAT_VIEWS, &format!("in parts at -w {workers}, --batch {batch}"));
        }
    }
}

/// The run summary's "busiest channels": the five channels with the most messages (ties by
/// name), each with its top five words and top three users, as the oracle ranks them.
#[test]
fn the_summary_shows_the_busiest_channels_and_their_leaders() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 20_000, 5, 0.0);
    let expected = oracle::chat_views(&read_chats(&fixture), 60, 10);
    let out = dir.path().join("out");
    let output = run_ok(&["run", "--replay", path_str(&fixture), "--out", path_str(&out), "-w", "2"]);
    let stdout = String::from_utf8_lossy(&output.stdout);

    let mut messages: std::collections::BTreeMap<&str, i64> = Default::default();
    for row in &expected["channel_activity"] {
        *messages.entry(&row[0]).or_default() += row[2].parse::<i64>().unwrap();
    }
    let mut busiest: Vec<(&str, i64)> = messages.into_iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    assert!(busiest.len() > 5, "the fixture has too few channels to choose the busiest");
    let leaders = |view: &str, channel: &str, keep: usize| -> String {
        let mut rows: Vec<&Vec<String>> = expected[view].iter().filter(|r| r[0] == channel).collect();
        rows.sort_by_key(|r| r[1].parse::<u32>().unwrap());
        let shown: Vec<String> = rows.iter().take(keep).map(|r| format!("{} ({})", r[2], r[3])).collect();
        shown.join(", ")
    };
    let mut lines = vec!["busiest channels:".to_owned()];
    for (channel, n) in busiest.iter().take(5) {
        lines.push(format!("  {channel:<16} {n:>9} messages  top words: {}", leaders("top_words", channel, 5)));
        lines.push(format!("  {:<16} {:>9}           top users: {}", "", "", leaders("top_users", channel, 3)));
    }
    let expected_text = lines.join("\n") + "\n";
    assert!(stdout.contains(&expected_text), "the summary:\n{stdout}\nlacks:\n{expected_text}");
}

#[test]
fn batch_sizes_and_arrival_order_agree() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 2_000, 5, 0.05);
    let expected = oracle::chat_views(&read_chats(&fixture), 60, 3);
    // A shuffled copy: the same events in another arrival order.
    let mut lines: Vec<String> = std::fs::read_to_string(&fixture).unwrap().lines().map(str::to_owned).collect();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for i in (1..lines.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        lines.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let shuffled = dir.path().join("shuffled.jsonl");
    std::fs::write(&shuffled, lines.join("\n") + "\n").unwrap();

    let cases: [(&Path, &str, &[&str]); 4] = [
        (&fixture, "all at one time", &["--batch", "1000000000"]),
        (&fixture, "one time per event", &["--batch", "1", "-w", "2"]),
        (&shuffled, "shuffled, one time per event", &["--batch", "1"]),
        (&shuffled, "shuffled, batches of 37", &["--batch", "37", "-w", "3"]),
    ];
    for (i, (input, name, flags)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let mut args = flags.to_vec();
        args.extend(["--top-k", "3"]);
        let actual = run_views_of(input, &out, &args);
        assert_views_eq(&actual, &expected, name);
    }
    // One time per event really gives each line its own time.
    let per_event = consolidated_times(&dir.path().join("out1/user_counts.csv"));
    assert!(per_event > 1_500, "expected ~2000 distinct times, found {per_event}");
}

/// A paced replay (`--replay-rate`) writes the same change files as an unpaced one, takes at
/// least the time its rate gives, and measures the freshness of every line at the committed cut.
#[test]
fn paced_replay_equals_unpaced_and_measures_freshness() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 3_000, 21, 0.02);
    let lines = std::fs::read_to_string(&fixture).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
    let expected = oracle::chat_views(&read_chats(&fixture), 60, 10);
    for workers in ["1", "2"] {
        let plain = dir.path().join(format!("plain-w{workers}"));
        run_views_of(&fixture, &plain, &["-w", workers, "--batch", "100"]);
        let paced = dir.path().join(format!("paced-w{workers}"));
        let began = std::time::Instant::now();
        let mut args = vec!["run", "--replay", path_str(&fixture), "--out", path_str(&paced)];
        args.extend(["-w", workers, "--batch", "100", "--replay-rate", "20000"]);
        let output = run_ok(&args);
        // 3,000 lines at 20,000 a second cannot be read in less than 0.15 s.
        assert!(began.elapsed().as_secs_f64() >= 0.15, "the rate was not kept: {:?}", began.elapsed());
        assert_views_eq(&read_views(&paced, &CHAT_VIEWS), &expected, &format!("paced, -w {workers}"));
        assert_same_files(&plain, &paced, &CHAT_VIEWS, &format!("paced differs, -w {workers}"));
        let summary = String::from_utf8_lossy(&output.stdout);
        let wanted = format!("freshness (produce → the committed cut in _progress.csv) of {lines} live records");
        assert!(summary.contains(&wanted), "-w {workers}: expected {wanted:?} in:\n{summary}");
        // Where the time went: read and complete, no writer thread to hand rows to.
        let stages = summary.lines().find(|l| l.contains("produce → each stage")).unwrap_or_default();
        assert!(stages.contains("read ") && stages.contains("complete "), "-w {workers}: stages in:\n{summary}");
        assert!(!stages.contains("handed"), "-w {workers}: no writer thread, yet:\n{summary}");
    }
}

fn consolidated_times(path: &Path) -> usize {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let time_col = reader.headers().unwrap().iter().position(|h| h == "time").unwrap();
    let times: std::collections::BTreeSet<String> = reader.records().map(|r| r.unwrap()[time_col].to_owned()).collect();
    times.len()
}

#[test]
fn two_processes_equal_one() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 8_000, 3, 0.01);
    let chats = read_chats(&fixture);
    let expected = oracle::chat_views(&chats, 60, 10);
    // Mentions make a graph too, so the network views cross processes as well.
    let expected_network = oracle::network_views(&oracle::mention_edges(&chats), None, 2, 30);
    assert!(expected_network["reach"].len() > 1000);
    let single = dir.path().join("single");
    run_views_of(&fixture, &single, &["--batch", "500", "--mention-edges"]);

    let out = dir.path().join("cluster");
    let (fixture_path, out_path) = (path_str(&fixture), path_str(&out));
    run_two_processes(
        dir.path(),
        &["run", "--replay", fixture_path, "--out", out_path, "--batch", "500", "--mention-edges", "-w", "2"],
    );
    assert_views_eq(&read_views(&out, &CHAT_VIEWS), &expected, "-n 2 -w 2");
    assert_views_eq(&read_views(&out, &NETWORK_VIEWS), &expected_network, "-n 2 -w 2, mentions");
    let views: Vec<&str> = CHAT_VIEWS.iter().chain(&NETWORK_VIEWS).copied().collect();
    assert_same_files(&single, &out, &views, "differs between one process and two");
}

#[test]
fn bad_input_becomes_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.jsonl");
    let good = |i: i64| {
        format!(r#"{{"ts":{},"channel":"c","user":"u{}","text":"hello world {}"}}"#, 1_700_000_000_000 + i, i % 3, i)
    };
    let mut bytes: Vec<u8> = Vec::new();
    let mut push = |line: &[u8]| {
        bytes.extend_from_slice(line);
        bytes.push(b'\n');
    };
    push(good(1).as_bytes()); // line 1
    push(b"this is not json"); // 2
    push(br#"{"ts":5,"channel":"c","text":"no user"}"#); // 3
    push(br#"{"ts":"five","channel":"c","user":"u","text":"wrong type"}"#); // 4
    push(b"{\"ts\":6,\"channel\":\"c\",\"user\":\"\xff\xfe\",\"text\":\"bad utf8\"}"); // 5
    push(br#"{"ts":7,"channel":"c","user":"u","te"#); // 6: truncated
    let mut huge = br#"{"ts":8,"channel":"c","user":"u","text":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 2 << 20));
    huge.extend_from_slice(br#""}"#);
    push(&huge); // 7: over 1 MiB
    push(b""); // 8: blank, not an event
    push(good(2).as_bytes()); // 9
    push(br#"{"ts":9}"#); // 10: no kind
    push(b"{\"ts\":10,\"channel\":\"c\",\"user\":\"u\",\"text\":\"crlf\"}\r"); // 11: CRLF is fine
    std::fs::write(&input, &bytes).unwrap();

    let out = dir.path().join("out");
    let output = run_ok(&["run", "--replay", path_str(&input), "--out", path_str(&out), "-w", "2", "--batch", "3"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("3 events read, 7 dead letters"), "summary: {stdout}");

    let dead = consolidated_file(&out.join("dead_letters.csv"), 4);
    let source = path_str(&input).to_owned();
    let expect = [
        ("2", "invalid JSON event"),
        ("3", "lacks field `user`"),
        ("4", "invalid type"),
        ("5", "invalid UTF-8"),
        ("6", "invalid JSON event"),
        ("7", "exceeds the limit of 1048576 bytes"),
        ("10", "not an event"),
    ];
    assert_eq!(dead.len(), expect.len(), "dead letters: {dead:#?}");
    for (position, error) in expect {
        let row = dead
            .keys()
            .find(|r| r[1] == position)
            .unwrap_or_else(|| panic!("no dead letter for line {position}: {dead:#?}"));
        assert_eq!(row[0], source);
        assert!(row[2].contains(error), "line {position}: error {:?} lacks {error:?}", row[2]);
        assert!(row[3].len() <= 1024, "raw of line {position} is {} bytes", row[3].len());
    }
    let raw7 = &dead.keys().find(|r| r[1] == "7").unwrap()[3];
    assert!(raw7.starts_with(r#"{"ts":8,"#) && raw7.len() == 1024);
    let raw5 = &dead.keys().find(|r| r[1] == "5").unwrap()[3];
    assert!(raw5.contains('\u{fffd}'), "non-UTF-8 bytes are replaced: {raw5:?}");

    let valid = read_chats(&input);
    assert_eq!(valid.len(), 3);
    assert_views_eq(&read_views(&out, &CHAT_VIEWS), &oracle::chat_views(&valid, 60, 10), "valid lines");
}

#[test]
fn directories_and_repeated_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let a = produce(&inputs, "a.jsonl", 1_500, 1, 0.0);
    let b = produce(&inputs, "b.jsonl", 1_500, 2, 0.0);
    std::fs::write(inputs.join("notes.txt"), "not an input\n").unwrap();
    let mut all = read_chats(&a);
    all.extend(read_chats(&b));
    let expected = oracle::chat_views(&all, 60, 10);
    let out = dir.path().join("out");
    // The directory and one of its files again: each file is read once.
    run_ok(&["run", "--replay", path_str(&inputs), path_str(&a), "--out", path_str(&out), "-w", "2"]);
    assert_views_eq(&read_views(&out, &CHAT_VIEWS), &expected, "directory input");
}

#[test]
fn timely_flags_and_help() {
    let help = run_ok(&["run", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--replay",
        "--out",
        "--window",
        "--top-k",
        "-w, --threads",
        "-n, --processes",
        "-p, --process",
        "-h, --hostfile",
    ] {
        assert!(text.contains(flag), "run --help lacks {flag}:\n{text}");
    }
    let bad = chatflow().args(["run", "--replay", "x.jsonl", "-n", "2", "-p", "2"]).output().unwrap();
    assert!(!bad.status.success());
    let missing = chatflow().args(["run", "--replay", "/nonexistent/x.jsonl"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/x.jsonl"));
}

/// The real Twitch chat logs, imported and replayed, against the oracle.
#[test]
fn real_twitch_chat_logs_match_oracle() {
    let Some(csv_dir) = shared_data("twitch-chat-csv") else {
        return;
    };
    let mut files: Vec<_> = std::fs::read_dir(&csv_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    if let Some(irc) = shared_data("twitch-chat-irc/formatted/admiralbulldog_4_30.csv") {
        files.push(irc);
    }
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("chat.jsonl");
    let mut args = vec!["import", "--from", "twitch-csv", "--out-file", path_str(&events)];
    args.extend(files.iter().map(|f| path_str(f)));
    let output = run_ok(&args);
    let report = String::from_utf8_lossy(&output.stderr);
    let msgs = read_chats(&events);
    assert!(msgs.len() > 900_000, "expected about a million messages, got {} ({report})", msgs.len());
    assert!(report.contains(&format!("imported {} events", msgs.len())), "{report}");
    assert!(!msgs.iter().any(|m| m.text.contains('\u{e0000}') || m.text.starts_with("\u{1}ACTION")));

    let expected = oracle::chat_views(&msgs, 60, 10);
    let out = dir.path().join("out");
    let actual = run_views_of(&events, &out, &["-w", "2"]);
    assert_views_eq(&actual, &expected, "real twitch chat");
}

/// A replay resumed after a crash (the progress record behind the files) completes the files
/// to those of one run; a resume with other settings than the deployment began with is refused
/// before it touches anything, naming each setting.
#[test]
fn a_resume_keeps_the_settings_the_deployment_began_with() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 5_000, 23, 0.02);
    let expected = oracle::chat_views(&read_chats(&fixture), 60, 10);
    let plain = dir.path().join("plain");
    run_views_of(&fixture, &plain, &["--batch", "100"]);
    let out = dir.path().join("out");
    run_views_of(&fixture, &out, &["--batch", "100", "-w", "2"]);
    // As a crash leaves it: the record says upper 17, the files hold more (and a torn line).
    // Without the files' lengths at the upper (a record of an older version), the resume
    // reads each file to find where the upper begins.
    let progress = out.join("_progress.csv");
    let text = std::fs::read_to_string(&progress).unwrap();
    let mut rewritten = String::new();
    for (i, line) in text.lines().filter(|l| !l.starts_with("file:")).enumerate() {
        let mut fields: Vec<&str> = line.split(',').collect();
        if i > 0 {
            *fields.last_mut().unwrap() = "17";
        }
        rewritten += &(fields.join(",") + "\n");
    }
    std::fs::write(&progress, rewritten).unwrap();
    let mut torn = std::fs::OpenOptions::new().append(true).open(out.join("word_counts.csv")).unwrap();
    std::io::Write::write_all(&mut torn, b"xqc,1740787200,\"torn").unwrap();
    drop(torn);
    let before: Vec<Vec<u8>> = CHAT_VIEWS.iter().map(|v| read_bytes(&out, v)).collect();
    for (flags, named) in [
        (&["--batch", "1000"][..], "--batch was 100, is 1000"),
        (&["--batch", "100", "--window", "30"][..], "--window was 60, is 30"),
    ] {
        let mut args = vec!["run", "--replay", path_str(&fixture), "--out", path_str(&out), "--resume"];
        args.extend_from_slice(flags);
        let output = chatflow().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{flags:?}: {stderr}");
        assert!(stderr.contains(named) && stderr.contains("--from-beginning"), "{flags:?}: {stderr}");
        let after: Vec<Vec<u8>> = CHAT_VIEWS.iter().map(|v| read_bytes(&out, v)).collect();
        assert!(after == before, "{flags:?}: a refused resume changed the files");
    }
    run_views_of(&fixture, &out, &["--batch", "100", "-w", "1", "--resume"]);
    assert_views_eq(&read_views(&out, &CHAT_VIEWS), &expected, "resumed");
    assert_same_files(&plain, &out, &CHAT_VIEWS, "the resumed files differ from one run's");
}

/// One writer per `--out`: a second run on the directory of a live run is refused, naming the
/// live run's process, and leaves the files alone; once the first is killed with -9 (the
/// kernel releases its lock), a resume runs and completes the files.
#[test]
fn a_second_run_on_a_live_output_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 3_000, 31, 0.0);
    let expected = oracle::chat_views(&read_chats(&fixture), 60, 10);
    let out = dir.path().join("out");
    // Paced: 3,000 lines at 50 a second stay alive for a minute.
    let mut live = chatflow()
        .args(["run", "--replay", path_str(&fixture), "--out", path_str(&out), "--batch", "100"])
        .args(["--replay-rate", "50"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = format!("pid {}", live.id());
    let lock = out.join("_lock.p0");
    let holds = poll_until(std::time::Duration::from_secs(60), || {
        std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&pid)) && out.join("_progress.csv").exists()
    });
    if !holds {
        kill_and_fail(&mut live, format!("the live run never recorded itself in {}", lock.display()));
    }
    let before: Vec<Vec<u8>> = CHAT_VIEWS.iter().map(|v| read_bytes(&out, v)).collect();
    for start in ["--resume", "--from-beginning"] {
        let output = chatflow()
            .args(["run", "--replay", path_str(&fixture), "--out", path_str(&out), "--batch", "100", start])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() != Some(1)
            || !stderr.contains("in use by another chatflow run")
            || !stderr.contains(&pid)
        {
            kill_and_fail(&mut live, format!("{start} beside a live run: {:?}\n{stderr}", output.status));
        }
    }
    // The live run may have written meanwhile; the refused ones wrote nothing of their own, so
    // the files only grew.
    for (view, old) in CHAT_VIEWS.iter().zip(&before) {
        let now = read_bytes(&out, view);
        if !now.starts_with(old) {
            kill_and_fail(&mut live, format!("{view}.csv was rewritten while the live run held it"));
        }
    }
    live.kill().unwrap();
    live.wait().unwrap();
    run_views_of(&fixture, &out, &["--batch", "100", "--resume"]);
    assert_views_eq(&read_views(&out, &CHAT_VIEWS), &expected, "resumed after kill -9");
}

/// A tmpfs of `kib` KiB mounted at a directory of its own, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &Path, kib: u64) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs", path_str(at)])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a {kib} KiB tmpfs at {} failed: this test needs root (as scripts/test.sh's network namespaces do)",
            at.display()
        );
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk under `--out` stops the run with exit 1 and a message naming the file and the
/// reason, and loses nothing that was committed: the directory, copied to a disk with room,
/// resumes to files byte-identical to one uninterrupted run.
#[test]
fn a_full_disk_stops_the_run_plainly_and_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 40_000, 43, 0.02);
    let plain = dir.path().join("plain");
    run_views_of(&fixture, &plain, &["--batch", "500"]);
    let bytes: u64 = CHAT_VIEWS.iter().map(|v| read_bytes(&plain, v).len() as u64).sum();
    let disk = SmallDisk::mount(&dir.path().join("small"), bytes / 2 / 1024);
    let out = disk.0.join("out");
    // Paced to about a second, so that the progress record is written several times before
    // the disk fills (the output does not depend on the pace).
    let output = chatflow()
        .args(["run", "--replay", path_str(&fixture), "--out", path_str(&out), "--batch", "500"])
        .args(["--replay-rate", "40000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device") && stderr.contains(path_str(&out)), "{stderr}");
    let progress =
        std::fs::read_to_string(out.join("_progress.csv")).expect("nothing was committed before the disk filled");
    let moved = dir.path().join("moved");
    let copied = std::process::Command::new("cp").args(["-r", path_str(&out), path_str(&moved)]).status().unwrap();
    assert!(copied.success());
    drop(disk);
    run_views_of(&fixture, &moved, &["--batch", "500", "--resume"]);
    let what = format!("resumed after a full disk (progress {progress:?}) differs from one run's");
    assert_same_files(&plain, &moved, &CHAT_VIEWS, &what);
}

/// A permission error under `--out` (the directory made read-only while the run, as an
/// unprivileged user, is writing it) stops the run with exit 1 and a message naming the file
/// and the reason, and loses nothing that was committed: once the directory is writable again,
/// a resume gives files byte-identical to one uninterrupted run. Root ignores permissions, so
/// the run is started as `nobody` (uid 65534) with `setpriv`, from a copy of the binary that
/// `nobody` can reach.
#[test]
fn a_permission_error_stops_the_run_plainly_and_loses_nothing_committed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fixture = produce(dir.path(), "chat.jsonl", 40_000, 44, 0.02);
    let plain = dir.path().join("plain");
    run_views_of(&fixture, &plain, &["--batch", "500"]);
    let binary = dir.path().join("chatflow");
    std::fs::copy(env!("CARGO_BIN_EXE_chatflow"), &binary).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let owned = std::process::Command::new("chown").args(["65534:65534", path_str(&out)]).status().unwrap();
    assert!(owned.success(), "chown of {} failed: this test needs root", out.display());
    let as_nobody = |extra: &[&str]| {
        let mut command = std::process::Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", path_str(&binary)]);
        command.args(["run", "--replay", path_str(&fixture), "--out", path_str(&out), "--batch", "500"]);
        command.args(extra);
        command
    };
    // Paced to four seconds at the least, so the run is still writing when the directory is
    // made read-only (right after its first progress record; the output does not depend on the
    // pace).
    let mut live = as_nobody(&["--replay-rate", "10000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) runs chatflow as nobody");
    if !poll_until(std::time::Duration::from_secs(60), || out.join("_progress.csv").exists()) {
        kill_and_fail(&mut live, "no progress record within 60 s".into());
    }
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
    if let Some(status) = live.try_wait().unwrap() {
        panic!("the run ended ({status}) before its directory was made read-only");
    }
    let output = live.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Permission denied") && stderr.contains(path_str(&out)), "{stderr}");
    let progress = std::fs::read_to_string(out.join("_progress.csv")).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    let resumed = as_nobody(&["--resume"]).output().unwrap();
    assert!(resumed.status.success(), "resume: {}", String::from_utf8_lossy(&resumed.stderr));
    let what = format!("resumed after a permission error (progress {progress:?}) differs from one run's");
    assert_same_files(&plain, &out, &CHAT_VIEWS, &what);
}
