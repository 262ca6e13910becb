//! `--retention`: the views of the events that are not late, and the late ones as
//! `late_events` rows, equal the sequential oracle's (DESIGN.md's watermark rule) at one and
//! two workers and two processes; the late events are the same in every run; sealed windows'
//! state is dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;

use crate::mission::{event_strategy, run_all, test_lexica, Event};
use crate::oracle::{self, Lexica};
use crate::support::*;

/// Chat, posts and viewer counts with late events (up to 5 minutes behind), plus edge events
/// whose `ts` runs ahead of the chat (they move the watermark too) and dead letters with a
/// far-future `ts` (they must not). Every event has a `ts` of its own (a duplicate is moved on
/// by a millisecond), so an event is known by its kind and `ts`.
pub(crate) fn late_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("late.jsonl");
    produce_kinds(
        &path,
        "chat,posts,viewers",
        12_000,
        5,
        &[
            "--channels",
            "6",
            "--users",
            "200",
            "--rate",
            "10",
            "--late-fraction",
            "0.08",
            "--viewers-interval-ms",
            "3000",
        ],
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut ts = event["ts"].as_i64().unwrap();
        while !seen.insert(ts) {
            ts += 1;
        }
        event["ts"] = ts.into();
        let line = &event.to_string();
        out.push_str(line);
        out.push('\n');
        if i % 2500 == 1000 {
            let ts: serde_json::Value = serde_json::from_str(line).unwrap();
            let mut ahead = ts["ts"].as_i64().unwrap() + 150_000;
            while !seen.insert(ahead) {
                ahead += 1;
            }
            out.push_str(&format!("{{\"ts\":{ahead},\"src\":\"a{i}\",\"dst\":\"b\",\"weight\":2}}\n"));
            out.push_str("{\"ts\":9999999999999,\"channel\":\"nowhere\"}\n");
        }
    }
    std::fs::write(&path, out).unwrap();
    path
}

/// The views `--retention 60 --batch 300` must give for `fixture`.
pub(crate) fn expected(fixture: &Path, lexica: &Lexica) -> oracle::Views {
    let (kept, late) = oracle::retention(&[fixture], 300, 60, 60, 300);
    views_of(&kept, late, fixture, lexica)
}

/// Every view of the events (JSON lines) `kept`, the edges of `fixture` (never late) and the
/// late events `late`.
fn views_of(
    kept: &str,
    late: std::collections::BTreeSet<Vec<String>>,
    fixture: &Path,
    lexica: &Lexica,
) -> oracle::Views {
    let kept_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(kept_file.path(), kept).unwrap();
    let msgs = oracle::read_chats(kept_file.path());
    let mut views = oracle::chat_views(&msgs, 60, 10);
    views.extend(oracle::sentiment(&msgs, lexica, 60));
    views.extend(oracle::engagement(&msgs, &oracle::read_viewers(kept_file.path()), 60));
    views.extend(oracle::post_views(&oracle::read_posts(kept_file.path()), 300, 10));
    views.extend(oracle::network_views(&oracle::read_edges(fixture), None, 2, 30));
    views.insert("late_events".into(), late);
    views
}

/// "windows held at the end" and "dropped" of `name` in a run's summary.
fn held(stdout: &str, name: &str) -> (u64, u64) {
    let find = |prefix: &str| {
        let line = stdout.lines().find(|l| l.contains(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in\n{stdout}"));
        // "…: 20 Count: word_counts, 20 Count: channel_activity, …"
        let at = line.find(name).unwrap_or_else(|| panic!("no {name} in {line:?}"));
        let before = line[..at].trim_end();
        before.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    (find("windows held at the end"), find("sealed windows dropped"))
}

#[test]
fn retention_equals_the_oracle_at_1_and_2_workers_and_two_processes() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = late_fixture(dir.path());
    let lexicon_dir = test_lexica(dir.path());
    let want = expected(&fixture, &Lexica::read(&lexicon_dir));
    // The test can fail: late events of every kind, and views that differ from keeping all.
    let late = &want["late_events"];
    for kind in ["chat", "post", "viewers"] {
        assert!(late.iter().filter(|r| r[2] == kind).count() >= 3, "too few late {kind} events: {late:?}");
    }
    let all = oracle::chat_views(&oracle::read_chats(&fixture), 60, 10);
    assert_ne!(all["word_counts"], want["word_counts"], "no late event was beyond the horizon");

    let views: Vec<&str> = want.keys().map(String::as_str).collect();
    let flags = ["--batch", "300", "--retention", "60", "--lexicon-dir", path_str(&lexicon_dir)];
    let mut runs = Vec::new();
    for workers in ["1", "2"] {
        let out = dir.path().join(format!("w{workers}"));
        let mut args = vec!["run", "--replay", path_str(&fixture), "--out", path_str(&out), "-w", workers];
        args.extend(flags);
        let output = run_ok(&args);
        assert_views_eq(&read_views(&out, &views), &want, &format!("--retention 60 -w {workers}"));
        if workers == "1" {
            // Every (channel, window) that ever had state was dropped or is still held, and
            // most were dropped.
            let stdout = String::from_utf8_lossy(&output.stdout);
            let (held, dropped) = held(&stdout, "Count: channel_activity");
            assert_eq!(held + dropped, want["channel_activity"].len() as u64, "{stdout}");
            assert!(held * 4 < dropped, "state not bounded: {held} windows held, {dropped} dropped\n{stdout}");
            // The horizon is a setting of the deployment: a resume with another is refused,
            // and one without any too (its windows would not be sealed).
            for other in [&["--retention", "120"][..], &[]] {
                let mut resume = vec!["run", "--replay", path_str(&fixture), "--out", path_str(&out), "--resume"];
                resume.extend(["--batch", "300", "--lexicon-dir", path_str(&lexicon_dir)]);
                resume.extend(other);
                let refused = chatflow().args(&resume).output().unwrap();
                let stderr = String::from_utf8_lossy(&refused.stderr);
                let named =
                    if other.is_empty() { "--retention was 60, is (none)" } else { "--retention was 60, is 120" };
                assert!(refused.status.code() == Some(1) && stderr.contains(named), "{other:?}: {stderr}");
            }
        }
        runs.push(out);
    }
    let out = dir.path().join("n2");
    let mut args = vec!["run", "--replay", path_str(&fixture), "--out", path_str(&out), "-w", "1"];
    args.extend(flags);
    run_two_processes(dir.path(), &args);
    assert_views_eq(&read_views(&out, &views), &want, "--retention 60 -n 2");
    runs.push(out);
    // The late events, like every change file, are the same bytes in every run.
    for view in &views {
        let read = |d: &Path| std::fs::read(d.join(format!("{view}.csv"))).unwrap();
        for run in &runs[1..] {
            assert!(read(&runs[0]) == read(run), "{view}.csv differs between {:?} and {run:?}", runs[0]);
        }
    }
}

/// Through Kafka the ingestion times are the partitions' clocks, which the oracle does not
/// model; what must hold is that the late events are events of the log, sealed by the
/// watermark they name, the same in every run (-w 2, two processes), and that every view is
/// the oracle's view of the other events.
#[test]
fn retention_through_kafka_is_the_same_in_every_run_and_consistent() {
    let broker = crate::kafka::broker();
    let dir = tempfile::tempdir().unwrap();
    // Without the dead letters: `produce --from` would send them stamped with the wall clock,
    // which moves their partition's clock years ahead.
    let fixture = late_fixture(dir.path());
    let text = std::fs::read_to_string(&fixture).unwrap();
    std::fs::write(
        &fixture,
        text.lines().filter(|l| !l.contains("nowhere")).flat_map(|l| [l, "\n"]).collect::<String>(),
    )
    .unwrap();
    let lexicon_dir = test_lexica(dir.path());
    let prefix = crate::kafka::unique("retention");
    crate::kafka::load_topics(&fixture, &prefix, broker);
    let flags = ["--until-caught-up", "--retention", "60", "--lexicon-dir", path_str(&lexicon_dir)];
    let w2 = dir.path().join("kafka-w2");
    let mut args = crate::kafka::kafka_run(&prefix, broker, &w2, &flags);
    args.extend(["-w".to_owned(), "2".to_owned()]);
    run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let n2 = dir.path().join("kafka-n2");
    let args = crate::kafka::kafka_run(&prefix, broker, &n2, &flags);
    run_two_processes(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());

    let views: Vec<&str> = dataflows::CATALOG.iter().map(|v| v.name).filter(|v| *v != "dead_letters").collect();
    let got = read_views(&w2, &views);
    assert_views_eq(&read_views(&n2, &views), &got, "--retention through Kafka, -n 2 against -w 2");
    let late = &got["late_events"];
    // Each late row is an event of the log, and the watermark it names seals its window.
    let text = std::fs::read_to_string(&fixture).unwrap();
    let events: std::collections::HashMap<(&str, i64), &str> = text
        .lines()
        .filter_map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).ok()?;
            let kind = oracle::kind_of(&event)?;
            Some(((kind, event["ts"].as_i64()?), line))
        })
        .collect();
    let mut late_lines = std::collections::HashSet::new();
    for row in late {
        let (kind, ts, watermark): (&str, i64, i64) = (&row[2], row[3].parse().unwrap(), row[4].parse().unwrap());
        let line = events.get(&(kind, ts)).unwrap_or_else(|| panic!("late row {row:?} is no event of the log"));
        assert!(
            oracle::late(kind, ts, Some(watermark), 60, 60, 300),
            "{row:?}: its window is not sealed by {watermark}"
        );
        assert!(row[0].starts_with(&prefix) && row[1].contains(':'), "{row:?}: topic and partition:offset");
        late_lines.insert(*line);
    }
    for kind in ["chat", "post", "viewers"] {
        assert!(late.iter().filter(|r| r[2] == kind).count() >= 3, "too few late {kind} events: {late:?}");
    }
    let kept: String = text.lines().filter(|l| !late_lines.contains(l)).flat_map(|l| [l, "\n"]).collect();
    let want = views_of(&kept, late.clone(), &fixture, &Lexica::read(&lexicon_dir));
    assert_views_eq(&got, &want, "--retention through Kafka: the views of the events not late");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any ingestion times (several events at a time, gaps, late and early `ts`), any horizon,
    /// one to three workers: the views of the events that are not late, and the late ones as
    /// rows, equal DESIGN.md's rule computed plainly.
    #[test]
    fn sealed_views_equal_the_rule_at_any_times_and_workers(
        timed in prop::collection::vec((event_strategy(), 0u64..12), 0..60),
        retention in prop::sample::select(vec![0i64, 30, 120]),
        workers in prop::sample::select(vec![1usize, 2, 3]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let lexicon_dir = test_lexica(dir.path());
        let lexica = Arc::new(chatflow::lexica::load(&lexicon_dir).unwrap());
        // The rule: the watermark of time t is the greatest ts at times before t.
        let watermark = |t: u64| timed.iter().filter(|(_, s)| *s < t).map(|(e, _)| e.ts()).max();
        let (mut msgs, mut posts, mut viewers) = (Vec::new(), Vec::new(), Vec::new());
        let mut late = std::collections::BTreeSet::new();
        for (i, (event, time)) in timed.iter().enumerate() {
            let kind = match event {
                Event::Chat(_) => "chat",
                Event::Post(_) => "post",
                Event::Viewers(_) => "viewers",
            };
            let mark = watermark(*time);
            if oracle::late(kind, event.ts(), mark, retention, 60, 300) {
                let mark = mark.unwrap_or_default().to_string();
                late.insert(vec!["s".into(), (i + 1).to_string(), kind.into(), event.ts().to_string(), mark]);
                continue;
            }
            match event {
                Event::Chat(m) => msgs.push(m.clone()),
                Event::Post(p) => posts.push(p.clone()),
                Event::Viewers(v) => viewers.push(v.clone()),
            }
        }
        let mut want = oracle::chat_views(&msgs, 60, 3);
        want.extend(oracle::sentiment(&msgs, &Lexica::read(&lexicon_dir), 60));
        want.extend(oracle::engagement(&msgs, &viewers, 60));
        want.extend(oracle::post_views(&posts, 300, 3));
        want.insert("late_events".into(), late);
        let events = timed.into_iter().map(|(e, t)| (t, e)).collect();
        let got = run_all(events, workers, lexica, Some(retention));
        assert_views_eq(&got, &want, &format!("--retention {retention}, {workers} workers"));
    }
}
