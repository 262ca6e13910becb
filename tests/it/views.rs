//! The chat dataflows against the oracle, driven directly (no files): batch equals streaming.
//!
//! The same events (a) all at one time, (b) one time per event, (c) in a shuffled arrival
//! order with one time per event, on 1, 2 and 4 workers, must all consolidate to the oracle's
//! views. Proptest generates the events, with late events, shared words, rank ties, unicode
//! case rules and negative timestamps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dataflows::chat::{chat_views, ChatConfig};
use dataflows::{Chat, Diff, Name};
use differential_dataflow::input::Input;
use differential_dataflow::VecCollection;
use proptest::prelude::*;
use timely::dataflow::ProbeHandle;

use crate::oracle::{self, Msg, Views};
use crate::support::{Capture, Captured};

/// Runs the chat views over `events` (time, message) on `workers` threads and returns the
/// consolidated views, asserting every row has multiplicity 0 or 1.
pub fn run_views(events: Vec<(u64, Msg)>, workers: usize, window: i64, k: usize) -> Views {
    let captured: Captured = Arc::default();
    let events = Arc::new(events);
    let sink = Arc::clone(&captured);
    timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let probe = ProbeHandle::new();
        let captured = Arc::clone(&sink);
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, chats) = scope.new_collection::<Chat, Diff>();
            let config = ChatConfig { window_secs: window, top_k: k };
            chat_views(chats, &config, None, &mut Capture { captured, probe: &probe });
            input
        });
        // Worker i feeds events i, i + peers, …, in time order.
        let mut mine: Vec<&(u64, Msg)> = events.iter().skip(index).step_by(peers).collect();
        mine.sort_by_key(|(t, _)| *t);
        for (time, m) in mine {
            input.advance_to(*time);
            input.insert(Chat {
                ts: m.ts,
                channel: Name::from(m.channel.as_str()),
                user: Name::from(m.user.as_str()),
                text: m.text.clone(),
                origin: Default::default(),
            });
        }
        drop(input);
        worker.step_while(|| !probe.done());
    })
    .expect("timely runs");

    let mut sums: BTreeMap<(String, Vec<String>), i64> = BTreeMap::new();
    for (view, row, _, diff) in captured.lock().unwrap().drain(..) {
        *sums.entry((view, row)).or_default() += diff;
    }
    let mut views = Views::new();
    for view in crate::support::CHAT_VIEWS {
        views.entry(view.to_owned()).or_default();
    }
    for ((view, row), m) in sums.iter() {
        assert!(*m == 0 || *m == 1, "{view}: row {row:?} has multiplicity {m}");
        if *m == 1 {
            views.get_mut(view).unwrap().insert(row.clone());
        }
    }
    views
}

fn msg_strategy() -> impl Strategy<Value = Msg> {
    let token = prop::sample::select(vec![
        "Kappa",
        "kappa",
        "KAPPA",
        "pog",
        "Pog!",
        "gg",
        "GG",
        "ΣΑΣ",
        "σας",
        "İx",
        "x²",
        "日本",
        "🔥",
        "a_b",
        "12",
        "٣٤",
        "café",
        "CAFÉ",
        "don't",
        "e\u{301}",
        "hi\u{e0000}",
        "",
        "...",
        "@u1",
    ]);
    (
        -90_000i64..400_000,
        prop::sample::select(vec!["a", "b", "Ch"]),
        prop::sample::select(vec!["u1", "u2", "u3", "ü"]),
        prop::collection::vec(token, 0..6),
    )
        .prop_map(|(ts, channel, user, tokens)| Msg {
            ts,
            channel: channel.to_owned(),
            user: user.to_owned(),
            text: tokens.join(" "),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// (a) all at one time, (b) one time per event, (c) shuffled arrival: all equal the oracle.
    #[test]
    fn batch_equals_streaming(
        (msgs, shuffled) in prop::collection::vec(msg_strategy(), 0..60)
            .prop_flat_map(|msgs| (Just(msgs.clone()), Just(msgs).prop_shuffle())),
        window in prop::sample::select(vec![1i64, 60]),
        k in 1usize..4,
        workers in prop::sample::select(vec![1usize, 2, 4]),
    ) {
        let expected = oracle::chat_views(&msgs, window, k);
        let at_once: Vec<(u64, Msg)> = msgs.iter().cloned().map(|m| (0, m)).collect();
        let one_by_one: Vec<(u64, Msg)> = msgs.iter().cloned().enumerate().map(|(i, m)| (i as u64, m)).collect();
        let shuffled: Vec<(u64, Msg)> = shuffled.into_iter().enumerate().map(|(i, m)| (i as u64, m)).collect();

        for (name, events) in [("all at one time", at_once), ("one time per event", one_by_one), ("shuffled", shuffled)] {
            let actual = run_views(events, workers, window, k);
            crate::support::assert_views_eq(&actual, &expected, &format!("{name}, {workers} workers"));
        }
    }
}

/// Late events correct their old window: the late message's window gains a message and a
/// word, and the rankings move.
#[test]
fn late_event_corrects_its_window() {
    let m = |ts: i64, user: &str, text: &str| Msg { ts, channel: "c".into(), user: user.into(), text: text.into() };
    let events = vec![
        (0, m(120_000, "u1", "b b")),
        (1, m(130_000, "u2", "a")),
        (2, m(10_000, "u3", "a a")), // late: window 0, two ticks after window 120 opened
    ];
    let expected = oracle::chat_views(&events.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(), 60, 2);
    for workers in [1, 2, 4] {
        let actual = run_views(events.clone(), workers, 60, 2);
        crate::support::assert_views_eq(&actual, &expected, "late event");
    }
    let row = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(expected["channel_activity"].contains(&row(&["c", "0", "1", "2", "1"])));
    assert!(expected["top_words"].contains(&row(&["c", "1", "a", "3"])));
    assert!(expected["top_words"].contains(&row(&["c", "2", "b", "2"])));
}

/// Runs `top_k` and `count_by_key` over timed updates ((group, item), time, delta) on
/// `workers` threads; returns their outputs as (row, time, diff).
type Updates = Vec<((u8, u8), u64, isize)>;
type TopRows = Vec<((u8, u32, u8, isize), u64, isize)>;
type CountRows = Vec<(((u8, u8), isize), u64, isize)>;

fn run_operators(updates: Updates, workers: usize, k: usize, capacity: usize) -> (TopRows, CountRows) {
    run_pair(updates, workers, (k, capacity), |occurrences, (k, capacity)| {
        use dataflows::operators::{by_pair, count_by_key, top_k, TopK};
        let top = top_k(occurrences.clone(), by_pair(), TopK { k, capacity }, "TopK: test");
        (top, count_by_key(occurrences, "Count: test", None))
    })
}

/// The two collections `build(updates, params)` makes of timed `updates` on `workers` threads
/// (each worker enters its share in time order), as (row, time, diff).
#[allow(clippy::type_complexity)]
fn run_pair<D, A, B, P>(
    updates: Vec<(D, u64, isize)>,
    workers: usize,
    params: P,
    build: for<'s> fn(
        VecCollection<'s, u64, D, isize>,
        P,
    ) -> (VecCollection<'s, u64, A, isize>, VecCollection<'s, u64, B, isize>),
) -> (Vec<(A, u64, isize)>, Vec<(B, u64, isize)>)
where
    D: differential_dataflow::ExchangeData + Send + Sync,
    A: differential_dataflow::Data + Send,
    B: differential_dataflow::Data + Send,
    P: Copy + Send + Sync + 'static,
{
    let first: Arc<Mutex<Vec<(A, u64, isize)>>> = Arc::default();
    let second: Arc<Mutex<Vec<(B, u64, isize)>>> = Arc::default();
    let (first_sink, second_sink) = (Arc::clone(&first), Arc::clone(&second));
    let updates = Arc::new(updates);
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let probe = ProbeHandle::new();
        let (first_sink, second_sink) = (Arc::clone(&first_sink), Arc::clone(&second_sink));
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, updates) = scope.new_collection::<D, isize>();
            let (a, b) = build(updates, params);
            a.inspect(move |x| first_sink.lock().unwrap().push(x.clone())).probe_with(&probe);
            b.inspect(move |x| second_sink.lock().unwrap().push(x.clone())).probe_with(&probe);
            input
        });
        let mut mine: Vec<_> = updates.iter().skip(index).step_by(peers).collect();
        mine.sort_by_key(|(_, t, _)| *t);
        for (data, time, diff) in mine {
            input.advance_to(*time);
            input.update(data.clone(), *diff);
        }
        drop(input);
        worker.step_while(|| !probe.done());
    })
    .expect("timely runs");
    let first = std::mem::take(&mut *first.lock().unwrap());
    let second = std::mem::take(&mut *second.lock().unwrap());
    (first, second)
}

/// The rows of `updates` up to time `t`, summed, zeros dropped.
fn sum_rows<D: Ord + Copy>(updates: &[(D, u64, isize)], t: u64) -> BTreeMap<D, isize> {
    let mut sums = BTreeMap::new();
    for (row, _, diff) in updates.iter().filter(|(_, time, _)| *time <= t) {
        *sums.entry(*row).or_insert(0) += diff;
    }
    sums.retain(|_, d| *d != 0);
    sums
}

/// The rows a top-K of `scores` ((group, item) → score; groups 0 to 2) shows: per group the
/// `k` best positive scores, ties by item ascending, as (group, rank, item, score) → 1.
fn ranked_truth(scores: &BTreeMap<(u8, u8), isize>, k: usize) -> BTreeMap<(u8, u32, u8, isize), isize> {
    let mut ranked = BTreeMap::new();
    for group in 0..3u8 {
        let mut items: Vec<(isize, u8)> =
            scores.iter().filter(|((g, _), c)| *g == group && **c > 0).map(|((_, i), c)| (*c, *i)).collect();
        items.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (rank, (c, i)) in items.into_iter().take(k).enumerate() {
            ranked.insert((group, rank as u32 + 1, i, c), 1);
        }
    }
    ranked
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// top_k and count_by_key under insertions and retractions, checked at every time against
    /// a plain computation of the counts up to that time.
    #[test]
    fn top_k_and_counts_with_retractions(
        // Up to 60 items per group: more than the top-K buffer holds, so that it overflows,
        // and deletions that drain it and force refills.
        updates in prop::collection::vec(((0u8..3, 0u8..60), 0u64..8, -3isize..4), 0..400),
        k in 1usize..4,
        extra in 0usize..4,
        workers in prop::sample::select(vec![1usize, 3]),
    ) {
        // A buffer barely larger than k: overflows, drains and refills all happen.
        let (top, counts) = run_operators(updates.clone(), workers, k, k + extra);
        for t in 0..8u64 {
            let mut truth: BTreeMap<(u8, u8), isize> = BTreeMap::new();
            for (key, time, diff) in &updates {
                if *time <= t {
                    *truth.entry(*key).or_default() += diff;
                }
            }
            truth.retain(|_, c| *c != 0);
            // count_by_key: every nonzero total, once.
            let got = sum_rows(&counts, t);
            let want: BTreeMap<((u8, u8), isize), isize> = truth.iter().map(|(k, c)| ((*k, *c), 1)).collect();
            prop_assert_eq!(&got, &want, "counts at time {}", t);
            // top_k: per group the k best positive counts, ties by item ascending.
            let want_top = ranked_truth(&truth, k);
            let got_top = sum_rows(&top, t);
            prop_assert_eq!(&got_top, &want_top, "top {} at time {}", k, t);
        }
    }
}

/// Updates ((group, window, item), time, delta), and what `count_and_top_k` made of them:
/// count rows ((count group, item, total), time, diff) and ranked rows.
type WindowUpdates = Vec<((u8, u8, u8), u64, isize)>;
type FusedCounts = Vec<(((u8, u8), u8, isize), u64, isize)>;

/// Runs `count_and_top_k` over `updates` on `workers` threads: with `windows`, counted per
/// ((group, window), item) and ranked per group; without, counted and ranked per group (the
/// window is dropped), the counts being the ranking's scores.
fn run_count_and_top_k(
    updates: WindowUpdates,
    workers: usize,
    k: usize,
    capacity: usize,
    windows: bool,
) -> (TopRows, FusedCounts) {
    let updates = updates.into_iter().map(|((g, w, i), t, d)| (((g, w), i), t, d)).collect();
    run_pair(updates, workers, (k, capacity, windows), |occurrences, (k, capacity, windows)| {
        use dataflows::operators::{count_and_top_k, partition, Counted, TopK};
        use differential_dataflow::Hashable;
        let occurrences =
            occurrences.map(move |((group, window), item)| ((group, if windows { window } else { 0 }), item));
        let occurrences = partition(occurrences, |((group, _), item): &((u8, u8), u8)| (*group, *item).hashed());
        let counted = if windows { Counted::Windows(None) } else { Counted::Scores };
        let (counts, top) = count_and_top_k(
            occurrences,
            ["Count: test", "TopK: test"],
            counted,
            |(group, _): &(u8, u8)| *group,
            |window: &(u8, u8), item: &u8, total| (*window, *item, total),
            TopK { k, capacity },
        );
        (top, counts)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// count_and_top_k, with windowed counts and with the ranking's scores as the counts,
    /// under insertions and retractions, checked at every time against a plain computation.
    #[test]
    fn count_and_top_k_with_retractions(
        updates in prop::collection::vec(((0u8..3, 0u8..3, 0u8..40), 0u64..8, -3isize..4), 0..400),
        k in 1usize..4,
        extra in 0usize..4,
        workers in prop::sample::select(vec![1usize, 2, 3]),
        windows in any::<bool>(),
    ) {
        let (top, counts) = run_count_and_top_k(updates.clone(), workers, k, k + extra, windows);
        let upto = |t: u64| updates.iter().filter(move |(_, time, _)| *time <= t);
        for t in 0..8u64 {
            // The counts: every nonzero total of ((group, window or 0), item), once.
            let mut totals: BTreeMap<((u8, u8), u8), isize> = BTreeMap::new();
            for ((group, window, item), _, diff) in upto(t) {
                *totals.entry(((*group, if windows { *window } else { 0 }), *item)).or_default() += diff;
            }
            totals.retain(|_, c| *c != 0);
            let want: BTreeMap<((u8, u8), u8, isize), isize> =
                totals.iter().map(|((w, i), c)| ((*w, *i, *c), 1)).collect();
            let got = sum_rows(&counts, t);
            prop_assert_eq!(&got, &want, "counts at time {} (windows: {})", t, windows);
            // The ranking: per group the k best positive scores summed over windows, ties by
            // item ascending.
            let mut scores: BTreeMap<(u8, u8), isize> = BTreeMap::new();
            for ((group, _, item), _, diff) in upto(t) {
                *scores.entry((*group, *item)).or_default() += diff;
            }
            let want_top = ranked_truth(&scores, k);
            let got_top = sum_rows(&top, t);
            prop_assert_eq!(&got_top, &want_top, "top {} at time {} (windows: {})", k, t, windows);
        }
    }
}
