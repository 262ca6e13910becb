//! The network views against the sparse-matrix oracle: random weighted graphs with adds and
//! deletes in random order (checked after every time), deleting half of a graph, the real
//! MUSAE and viewer-overlap graphs, chat mentions as edges, and the edge-list importer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use dataflows::network::{network_views, NetworkConfig};
use dataflows::{Diff, Name};
use differential_dataflow::input::Input;
use proptest::prelude::*;
use timely::dataflow::ProbeHandle;

use crate::oracle::{self, read_edges, EdgeUpdate, Views};
use crate::support::*;

/// Runs the network views over timed edge updates on `workers` threads and returns every
/// output update as (view, row, time, diff).
fn run_network(
    events: Vec<(u64, EdgeUpdate)>,
    focus: Option<Vec<String>>,
    workers: usize,
    hops: u32,
    n: usize,
) -> Captured {
    let captured: Captured = Arc::default();
    let sink = Arc::clone(&captured);
    let events = Arc::new(events);
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let probe = ProbeHandle::new();
        let sink = Arc::clone(&sink);
        let focus = focus.clone();
        let (mut edges_in, mut focus_in) = worker.dataflow::<u64, _, _>(|scope| {
            let (edges_in, edges) = scope.new_collection::<(Name, Name), Diff>();
            let (focus_in, focus_coll) = scope.new_collection::<Name, Diff>();
            let config = NetworkConfig { hops, top_n: n };
            let captured = Arc::clone(&sink);
            network_views(
                edges,
                focus.is_some().then_some(focus_coll),
                &config,
                &mut Capture { captured, probe: &probe },
            );
            (edges_in, focus_in)
        });
        if index == 0 {
            for user in focus.iter().flatten() {
                focus_in.insert(Name::from(user.as_str()));
            }
        }
        drop(focus_in);
        let mut mine: Vec<&(u64, EdgeUpdate)> = events.iter().skip(index).step_by(peers).collect();
        mine.sort_by_key(|(t, _)| *t);
        for (time, (src, dst, w)) in mine {
            edges_in.advance_to(*time);
            edges_in.update((Name::from(src.as_str()), Name::from(dst.as_str())), *w as Diff);
        }
        drop(edges_in);
        worker.step_while(|| !probe.done());
    })
    .expect("timely runs");
    captured
}

/// The views consolidated over all updates at times up to `t`, asserting multiplicities 0 or 1.
fn consolidated_at(captured: &Captured, t: u64) -> Views {
    let mut sums: BTreeMap<(String, Vec<String>), i64> = BTreeMap::new();
    for (view, row, time, diff) in captured.lock().unwrap().iter() {
        if *time <= t {
            *sums.entry((view.clone(), row.clone())).or_default() += diff;
        }
    }
    let mut views = Views::new();
    for view in NETWORK_VIEWS {
        views.entry(view.to_owned()).or_default();
    }
    for ((view, row), m) in sums {
        assert!(m == 0 || m == 1, "{view}: row {row:?} has multiplicity {m} at time {t}");
        if m == 1 {
            views.get_mut(&view).unwrap().insert(row);
        }
    }
    views
}

fn edge_strategy() -> impl Strategy<Value = EdgeUpdate> {
    let user = prop::sample::select(vec!["a", "b", "c", "d", "e", "f", "g"]);
    (user.clone(), user, 1i64..5, prop::bool::weighted(0.3))
        .prop_map(|(s, d, w, del)| (s.to_owned(), d.to_owned(), if del { -w } else { w }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Random weighted graphs, adds and deletes in random order at a few times: after every
    /// time the views equal the oracle over the events so far.
    #[test]
    fn random_graphs_match_the_oracle_after_every_time(
        events in prop::collection::vec((0u64..6, edge_strategy()), 0..40),
        hops in 2u32..4,
        n in 1usize..4,
        focused in any::<bool>(),
        workers in prop::sample::select(vec![1usize, 2, 4]),
    ) {
        let focus = focused.then(|| vec!["a".to_owned(), "c".to_owned(), "zz".to_owned()]);
        let captured = run_network(events.clone(), focus.clone(), workers, hops, n);
        for t in 0..6u64 {
            let so_far: Vec<EdgeUpdate> = events.iter().filter(|(time, _)| *time <= t).map(|(_, e)| e.clone()).collect();
            let expected = oracle::network_views(&so_far, focus.as_deref(), hops, n);
            assert_views_eq(&consolidated_at(&captured, t), &expected, &format!("time {t}, -w {workers}, hops {hops}"));
        }
    }

    /// Load a graph, delete a random half of its edges in random order: the same as loading
    /// only the other half.
    #[test]
    fn deleting_half_equals_loading_the_rest(
        (graph, deleted) in prop::collection::vec(edge_strategy().prop_map(|(s, d, w)| (s, d, w.abs())), 1..30)
            .prop_flat_map(|g| {
                let n = g.len();
                (Just(g), prop::sample::subsequence((0..n).collect::<Vec<_>>(), n / 2).prop_shuffle())
            }),
        workers in prop::sample::select(vec![1usize, 2, 4]),
    ) {
        let mut events: Vec<(u64, EdgeUpdate)> = graph.iter().cloned().map(|e| (0, e)).collect();
        for (i, &d) in deleted.iter().enumerate() {
            let (s, t, w) = &graph[d];
            // Deleted in the other direction half of the time: strength is undirected.
            let (s, t) = if i % 2 == 0 { (s, t) } else { (t, s) };
            events.push((1 + i as u64, (s.clone(), t.clone(), -w)));
        }
        let rest: Vec<(u64, EdgeUpdate)> =
            graph.iter().enumerate().filter(|(i, _)| !deleted.contains(i)).map(|(_, e)| (0, e.clone())).collect();
        let end = deleted.len() as u64 + 1;
        let after_deletes = consolidated_at(&run_network(events, None, workers, 3, 3), end);
        let only_rest = consolidated_at(&run_network(rest.clone(), None, workers, 3, 3), end);
        assert_views_eq(&after_deletes, &only_rest, "deleted half vs the other half");
        let expected = oracle::network_views(&rest.into_iter().map(|(_, e)| e).collect::<Vec<_>>(), None, 3, 3);
        assert_views_eq(&only_rest, &expected, "the other half vs the oracle");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Two hubs joined to 80 users, then single edges added and deleted one time after
    /// another: the small changes take the incremental path (long rows changed in place, the
    /// shown rows re-ranked from the changed users), checked against the oracle at every time.
    #[test]
    fn hubs_with_single_changes_match_the_oracle(
        spokes in prop::collection::vec((0usize..2, 0usize..80, 1i64..4), 60..120),
        changes in prop::collection::vec((0usize..82, 0usize..82, 1i64..4, any::<Option<prop::sample::Index>>()), 1..8),
        hops in 2u32..4,
        n in 1usize..6,
        focused in any::<bool>(),
        workers in prop::sample::select(vec![1usize, 2]),
    ) {
        // Users 80 and 81 are the hubs.
        let name = |i: usize| if i >= 80 { format!("hub{}", i - 80) } else { format!("u{i:02}") };
        let mut events: Vec<(u64, EdgeUpdate)> =
            spokes.iter().map(|&(h, u, w)| (0, (name(80 + h), name(u), w))).collect();
        // A change adds a random edge, or takes weight off a spoke (perhaps all of it): a
        // shown user's score falls.
        for (i, &(a, b, w, spoke)) in changes.iter().enumerate() {
            let change = match spoke {
                Some(index) => {
                    let (h, u, _) = spokes[index.index(spokes.len())];
                    (name(80 + h), name(u), -w)
                }
                None => (name(a), name(b), w),
            };
            events.push((1 + i as u64, change));
        }
        let focus = focused.then(|| vec![name(80), name(3), name(17), name(42)]);
        let captured = run_network(events.clone(), focus.clone(), workers, hops, n);
        for t in 0..=changes.len() as u64 {
            let so_far: Vec<EdgeUpdate> = events.iter().filter(|(time, _)| *time <= t).map(|(_, e)| e.clone()).collect();
            let expected = oracle::network_views(&so_far, focus.as_deref(), hops, n);
            assert_views_eq(&consolidated_at(&captured, t), &expected, &format!("time {t}, -w {workers}, hops {hops}, n {n}"));
        }
    }
}

/// A graph with hubs (preferential attachment, 60 users), three hops, ten focus users shown
/// three connections each, then 400 single-edge changes, one per time, half deleting an edge and
/// half adding one. Focus users' long rows are kept dense, and their kept rankings shrink as
/// shown users' scores fall until they are ranked again: after every time the views equal the
/// oracle's, at one and two workers.
#[test]
fn many_single_changes_keep_the_rankings_exact() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let name = |i: usize| format!("u{i:03}");
    let mut edges: Vec<(usize, usize)> = vec![(0, 1)];
    let mut ends: Vec<usize> = vec![0, 1];
    for u in 2..60 {
        for _ in 0..2 {
            let v = ends[next(ends.len())];
            if v != u {
                edges.push((u, v));
                ends.extend([u, v]);
            }
        }
    }
    let mut events: Vec<(u64, EdgeUpdate)> = edges.iter().map(|&(a, b)| (0, (name(a), name(b), 1))).collect();
    let changes = 400u64;
    for t in 1..=changes {
        if next(2) == 0 {
            let (a, b) = edges.swap_remove(next(edges.len()));
            events.push((t, (name(a), name(b), -1)));
        } else {
            let (a, b) = (next(60), next(60));
            edges.push((a, b));
            events.push((t, (name(a), name(b), 1)));
        }
    }
    let focus: Vec<String> = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55].into_iter().map(name).collect();
    for workers in [1, 2] {
        let captured = run_network(events.clone(), Some(focus.clone()), workers, 3, 3);
        let mut updates = captured.lock().unwrap().clone();
        updates.sort_by_key(|(_, _, time, _)| *time);
        let mut updates = updates.into_iter().peekable();
        let mut sums: BTreeMap<(String, Vec<String>), i64> = BTreeMap::new();
        for t in 0..=changes {
            while let Some((view, row, _, diff)) = updates.next_if(|(_, _, time, _)| *time <= t) {
                *sums.entry((view, row)).or_default() += diff;
            }
            let mut actual = Views::new();
            for view in NETWORK_VIEWS {
                actual.entry(view.to_owned()).or_default();
            }
            for ((view, row), m) in &sums {
                assert!(*m == 0 || *m == 1, "{view}: row {row:?} has multiplicity {m} at time {t}");
                if *m == 1 {
                    actual.get_mut(view).unwrap().insert(row.clone());
                }
            }
            let so_far: Vec<EdgeUpdate> =
                events.iter().filter(|(time, _)| *time <= t).map(|(_, e)| e.clone()).collect();
            let expected = oracle::network_views(&so_far, Some(&focus), 3, 3);
            assert_views_eq(&actual, &expected, &format!("time {t}, -w {workers}"));
        }
    }
}

/// A `del` that retracts nothing leaves the pair absent, and a later `add` counts from the
/// true total, in any order.
#[test]
fn over_deletion_is_order_independent() {
    let e = |s: &str, d: &str, w: i64| (s.to_owned(), d.to_owned(), w);
    let orders = [
        vec![e("a", "b", -3), e("a", "b", 2), e("b", "a", 2), e("a", "c", 1)],
        vec![e("a", "b", 2), e("b", "a", 2), e("a", "b", -3), e("a", "c", 1)],
        vec![e("b", "a", 2), e("a", "b", -3), e("a", "c", 1), e("a", "b", 2)],
    ];
    let expected = oracle::network_views(&orders[0], None, 2, 5);
    let row = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(expected["connections"].contains(&row(&["a", "b", "1"])));
    for events in orders {
        let timed: Vec<(u64, EdgeUpdate)> = events.into_iter().enumerate().map(|(i, e)| (i as u64, e)).collect();
        for workers in [1, 2] {
            let captured = run_network(timed.clone(), None, workers, 2, 5);
            assert_views_eq(&consolidated_at(&captured, 10), &expected, "over-deletion");
        }
    }
}

fn import_edges(files: &[&Path], out: &Path) -> String {
    let mut args = vec!["import", "--from", "edges-csv", "--out-file", path_str(out)];
    args.extend(files.iter().map(|f| path_str(f)));
    String::from_utf8_lossy(&run_ok(&args).stderr).into_owned()
}

fn run_network_views(input: &[&Path], out: &Path, extra: &[&str]) -> Views {
    let mut args = vec!["run", "--out", path_str(out), "--replay"];
    args.extend(input.iter().map(|f| path_str(f)));
    args.extend_from_slice(extra);
    run_ok(&args);
    read_views(out, &NETWORK_VIEWS)
}

/// MUSAE ENGB (35 k edges), hops 2 over all users, through the binary at -w 1 and -w 2.
#[test]
fn musae_engb_hops_2_all_users() {
    let Some(csv) = shared_data("musae-twitch/input/edges/ENGB_edges.csv") else { return };
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("engb.jsonl");
    let report = import_edges(&[&csv], &events);
    assert!(report.contains("imported 35324 events, 0 lines could not be parsed"), "{report}");
    let edges = read_edges(&events);
    let expected = oracle::network_views(&edges, None, 2, 30);
    assert!(expected["reach"].len() > 100_000, "reach has {} rows", expected["reach"].len());
    for workers in ["1", "2"] {
        let out = dir.path().join(format!("out{workers}"));
        let actual = run_network_views(&[&events], &out, &["-w", workers]);
        assert_views_eq(&actual, &expected, &format!("ENGB -w {workers}"));
    }
}

/// MUSAE DE (153 k edges), hops 3 over a focus set of 100 users.
#[test]
fn musae_de_hops_3_focus_100() {
    let Some(csv) = shared_data("musae-twitch/input/edges/DE_edges.csv") else { return };
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("de.jsonl");
    import_edges(&[&csv], &events);
    let edges = read_edges(&events);
    // 100 users spread over the id range, some of them hubs.
    let focus: Vec<String> = (0..100).map(|i| ((i * 9498) / 100).to_string()).collect();
    let focus_file = dir.path().join("focus.txt");
    std::fs::write(&focus_file, focus.join("\n") + "\n").unwrap();
    let expected = oracle::network_views(&edges, Some(&focus), 3, 30);
    let out = dir.path().join("out");
    let actual = run_network_views(&[&events], &out, &["-w", "2", "--hops", "3", "--focus", path_str(&focus_file)]);
    assert_views_eq(&actual, &expected, "DE hops 3, focus 100");
}

/// Viewer-overlap snapshots: one month loaded, then the difference to the next month applied
/// as add/del events, equals the next month loaded from scratch.
#[test]
fn viewer_overlap_month_to_month() {
    let Some(dir_data) = shared_data("twitch-viewer-overlap/Visualization/GephiData") else { return };
    let january = dir_data.join("01.17.2021.13.37.23EDGELIST.csv");
    let february = dir_data.join("02.03.2021.21.30.16EDGELIST.csv");
    let dir = tempfile::tempdir().unwrap();
    let (jan, feb) = (dir.path().join("jan.jsonl"), dir.path().join("feb.jsonl"));
    import_edges(&[&january], &jan);
    import_edges(&[&february], &feb);
    let totals = |edges: &[EdgeUpdate]| {
        let mut t: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (s, d, w) in edges {
            let pair = if s < d { (s.clone(), d.clone()) } else { (d.clone(), s.clone()) };
            *t.entry(pair).or_default() += w;
        }
        t
    };
    let (before, after) = (totals(&read_edges(&jan)), totals(&read_edges(&feb)));
    let mut diff = String::new();
    let pairs: std::collections::BTreeSet<_> = before.keys().chain(after.keys()).collect();
    for pair in pairs {
        let change = after.get(pair).copied().unwrap_or(0) - before.get(pair).copied().unwrap_or(0);
        if change != 0 {
            let op = if change > 0 { "add" } else { "del" };
            diff += &format!(
                "{}\n",
                serde_json::json!({"ts": 1, "src": pair.1, "dst": pair.0, "weight": change.abs(), "op": op})
            );
        }
    }
    let diff_file = dir.path().join("jan-to-feb.jsonl");
    std::fs::write(&diff_file, diff).unwrap();
    // Focus on the channels common to both months, to keep the walks small.
    let focus: Vec<String> =
        after.keys().map(|p| p.0.clone()).filter(|u| before.keys().any(|q| &q.0 == u)).take(150).collect();
    let focus_file = dir.path().join("focus.txt");
    std::fs::write(&focus_file, focus.join("\n")).unwrap();
    let flags = ["-w", "2", "--focus", path_str(&focus_file), "--batch", "500"];
    let incremental = run_network_views(&[&jan, &diff_file], &dir.path().join("inc"), &flags);
    let scratch = run_network_views(&[&feb], &dir.path().join("scratch"), &flags);
    assert!(incremental["connections"].len() > 1000);
    assert_views_eq(&incremental, &scratch, "January + difference vs February");
    assert_views_eq(&scratch, &oracle::network_views(&read_edges(&feb), Some(&focus), 2, 30), "February vs oracle");
}

/// With --mention-edges, `@name` in chat adds an edge (author, name, 1), in one graph with the
/// edge events.
#[test]
fn chat_mentions_become_edges() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.jsonl");
    let lines = [
        r#"{"ts":1,"channel":"c","user":"alice","text":"hi @Bob and @carol!"}"#,
        r#"{"ts":2,"channel":"c","user":"bob","text":"@alice hello, @bob is me"}"#,
        r#"{"ts":3,"src":"carol","dst":"dave","weight":4}"#,
        r#"{"ts":4,"channel":"c","user":"dave","text":"mail me at dave@example"}"#,
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let e = |s: &str, d: &str, w: i64| (s.to_owned(), d.to_owned(), w);
    let edges = [
        e("alice", "bob", 1),
        e("alice", "carol", 1),
        e("bob", "alice", 1),
        e("carol", "dave", 4),
        e("dave", "example", 1),
    ];
    let expected = oracle::network_views(&edges, None, 3, 30);
    let actual = run_network_views(&[&input], &dir.path().join("out"), &["--mention-edges", "--hops", "3", "-w", "2"]);
    assert_views_eq(&actual, &expected, "mentions");
    let without = run_network_views(&[&input], &dir.path().join("plain"), &[]);
    assert_eq!(without["connections"].len(), 1, "without the flag only the edge event counts");
}

#[test]
fn edge_lists_with_the_real_traps() {
    let dir = tempfile::tempdir().unwrap();
    let weighted = dir.path().join("overlap.csv");
    std::fs::write(
        &weighted,
        "Source, Target, Weights\r\r\nNinja,Xposed,238\r\r\nNinja,\"Shroud\",\"1,234\"\r\r\nA,B,12.5\r\r\nA,B,1,2\r\r\n\r\r\nC,D,-3\r\r\nE,,4\r\r\n",
    )
    .unwrap();
    let plain = dir.path().join("musae.csv");
    std::fs::write(&plain, "from,to\n1,2\n2,3\n").unwrap();
    let headerless = dir.path().join("raw.csv");
    std::fs::write(&headerless, "x,y,5\ny,z\n").unwrap();
    let labels = dir.path().join("labels.csv");
    std::fs::write(&labels, "ID,Label,Count\r\r\nNinja,Ninja,5\r\r\n").unwrap();
    let out = dir.path().join("edges.jsonl");
    let report = import_edges(&[&weighted, &plain, &headerless, &labels], &out);
    let edges = read_edges(&out);
    let e = |s: &str, d: &str, w: i64| (s.to_owned(), d.to_owned(), w);
    assert_eq!(
        edges,
        vec![
            e("Ninja", "Xposed", 238),
            e("Ninja", "Shroud", 1234),
            e("C", "D", -3),
            e("1", "2", 1),
            e("2", "3", 1),
            e("x", "y", 5)
        ]
    );
    for expected in [
        "overlap.csv:4: weight \"12.5\" is not an integer",
        "overlap.csv:5: expected 3 fields, found 4",
        "overlap.csv:8: empty source or target",
        "raw.csv:2: expected 3 fields, found 2",
        "labels.csv:1: not an edge list",
    ] {
        assert!(report.contains(expected), "{expected:?} not in {report}");
    }
}

/// Walks beyond 64 bits are exact: two pairs of strength 2³² through a hub make 2⁶⁴ two-hop
/// walks and 2⁹⁷ three-hop ones (they used to wrap around silently), at -w 1 and -w 2.
#[test]
fn walks_beyond_64_bits_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("edges.jsonl");
    let edge = |s: &str, d: &str| format!(r#"{{"ts":1,"src":"{s}","dst":"{d}","weight":2147483648}}"#);
    let lines = [edge("x", "h"), edge("h", "x"), edge("h", "y"), edge("y", "h")];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let expected = oracle::network_views(&read_edges(&input), None, 3, 30);
    let row = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(expected["reach"].contains(&row(&["x", "y", "2", "18446744073709551616"])), "{:?}", expected["reach"]);
    assert!(expected["reach"].contains(&row(&["x", "h", "3", &(1i128 << 97).to_string()])));
    for workers in ["1", "2"] {
        let out = dir.path().join(format!("out{workers}"));
        let views = run_network_views(&[&input], &out, &["-w", workers, "--hops", "3"]);
        assert_views_eq(&views, &expected, &format!("-w {workers}"));
    }
}

/// Weights at the bound (2³¹) sum exactly; a weight beyond it (here the two `add`s of
/// i64::MAX that used to wrap around and make the pair vanish) is a dead letter naming it,
/// and the pair keeps its true strength.
#[test]
fn weights_at_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("edges.jsonl");
    let lines = [
        r#"{"ts":1,"src":"a","dst":"b","weight":2147483648}"#,
        r#"{"ts":2,"src":"b","dst":"a","weight":2147483648}"#,
        r#"{"ts":3,"src":"a","dst":"b","weight":9223372036854775807}"#,
        r#"{"ts":4,"src":"a","dst":"b","weight":9223372036854775807}"#,
        r#"{"ts":5,"src":"c","dst":"d","weight":-2147483649,"op":"del"}"#,
        r#"{"ts":6,"src":"c","dst":"d","weight":-2147483648,"op":"del"}"#,
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    for workers in ["1", "2"] {
        let out = dir.path().join(format!("out{workers}"));
        let views = run_network_views(&[&input], &out, &["-w", workers, "--batch", "1"]);
        let row = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let expected: std::collections::BTreeSet<_> =
            [row(&["a", "b", "4294967296"]), row(&["c", "d", "2147483648"])].into();
        assert_eq!(views["connections"], expected, "-w {workers}");
        let dead = consolidated_file(&out.join("dead_letters.csv"), 4);
        let mut reasons: Vec<(String, String)> = dead.keys().map(|r| (r[1].clone(), r[2].clone())).collect();
        reasons.sort();
        assert_eq!(reasons.len(), 3, "{dead:#?}");
        for ((position, reason), (line, weight)) in
            reasons.iter().zip([("3", "9223372036854775807"), ("4", "9223372036854775807"), ("5", "-2147483649")])
        {
            assert_eq!(position, line);
            assert!(reason.contains(&format!("weight {weight}, outside")), "{reason}");
        }
    }
}
