//! Operators of our own: per-batch pre-aggregation, per-key totals and an incremental top-K.
//! All work on `VecCollection`s and keep differential's update semantics.
//!
//! Why not differential's `count_total`/`threshold_total` for the chat views: with totally
//! ordered time a running total needs only each key's current value, which a hash map holds in
//! O(1), whereas `count_total` seeks every changed key through the batches of an arrangement it
//! must also build and merge. On a 1 M message replay `CountTotal` and the arrangements under
//! it took 45 % of a worker's time; [`total_by_key`] replaces them. Views that need shared
//! arrangements (joins) still use differential's.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

use differential_dataflow::difference::{Monoid, Semigroup};
use differential_dataflow::{AsCollection, Data, ExchangeData, Hashable, VecCollection};
use foldhash::fast::RandomState;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::Diff;

/// returns the same collection, with the updates of each received batch summed per
/// (record, time): fewer, heavier updates for the exchange and arrangement that follow.
///
/// Stateless between activations, so it never delays data; it only merges what arrives
/// together (typically one input batch of one worker).
pub fn preaggregate<'s, T, D, R>(updates: VecCollection<'s, T, D, R>, name: &str) -> VecCollection<'s, T, D, R>
where
    T: Timestamp + Hash,
    D: Data + Hash + Eq,
    R: Semigroup + 'static,
{
    updates
        .inner
        .unary::<CapacityContainerBuilder<Vec<(D, T, R)>>, _, _, _>(Pipeline, name, |_cap, _info| {
            let mut sums: HashMap<(D, T), R, RandomState> = HashMap::default();
            move |input, output| {
                input.for_each_stamp(|cap, containers| {
                    for container in containers {
                        for (data, time, diff) in container.drain(..) {
                            match sums.entry((data, time)) {
                                Entry::Occupied(mut e) => e.get_mut().plus_equals(&diff),
                                Entry::Vacant(e) => {
                                    e.insert(diff);
                                }
                            }
                        }
                    }
                    let mut session = output.session(&cap);
                    for ((data, time), diff) in sums.drain() {
                        if !diff.is_zero() {
                            session.give((data, time, diff));
                        }
                    }
                });
            }
        })
        .as_collection()
}

/// Updates waiting for their time to complete, with a capability for that time.
type Pending<T, U> = BTreeMap<T, (Capability<T>, Vec<U>)>;

/// returns what `process` makes of each completed time: updates are buffered by time and,
/// once the input frontier has passed a time, all of its updates are handed to `process`
/// (times in increasing order, hence the total order), which emits output updates at that time.
///
/// The skeleton of the stateful operators below: it holds a capability per buffered time, so
/// downstream frontiers wait for the output of a time until that time is processed.
pub fn in_time_order<'s, T, D, R, D2, P, F>(
    updates: VecCollection<'s, T, D, R>,
    pact: P,
    name: &str,
    mut process: F,
) -> VecCollection<'s, T, D2>
where
    T: Timestamp + TotalOrder,
    D: Data,
    R: Semigroup + 'static,
    D2: Data,
    P: ParallelizationContract<T, Vec<(D, T, R)>>,
    F: FnMut(&T, Vec<(D, R)>, &mut dyn FnMut(D2, Diff)) + 'static,
{
    updates
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<(D2, T, Diff)>>, _, _, _>(pact, name, move |_cap, _info| {
            let mut pending: Pending<T, (D, R)> = BTreeMap::new();
            move |(input, frontier), output| {
                let port = output.output_index();
                input.for_each_stamp(|cap, containers| {
                    for container in containers {
                        for (data, time, diff) in container.drain(..) {
                            pending
                                .entry(time.clone())
                                .or_insert_with(|| (cap.delayed(&time, port), Vec::new()))
                                .1
                                .push((data, diff));
                        }
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (time, (cap, updates)) = entry.remove_entry();
                    let mut session = output.session(&cap);
                    process(&time, updates, &mut |data, diff| session.give((data, time.clone(), diff)));
                }
            }
        })
        .as_collection()
}

/// returns what `changed(key, old, new, emit)` emits whenever the total of a key's diffs
/// changes from `old` to `new` (zero when absent) at a time.
///
/// Each worker keeps the current total of the keys hashed to it in a hash map. Within a time,
/// a key's updates are summed first, so `changed` sees each changed key once per time.
pub fn total_by_key<'s, T, K, R, D, F>(
    updates: VecCollection<'s, T, K, R>,
    name: &str,
    mut changed: F,
) -> VecCollection<'s, T, D>
where
    T: Timestamp + TotalOrder,
    K: ExchangeData + Hash,
    R: ExchangeData + Monoid,
    D: Data,
    F: FnMut(&K, &R, &R, &mut dyn FnMut(D, Diff)) + 'static,
{
    let exchange = Exchange::new(|update: &(K, T, R)| update.0.hashed());
    let mut totals: HashMap<K, R, RandomState> = HashMap::default();
    // The time's changes per key, summed first (a hash map rather than a sort: most keys are
    // distinct, and hashing them is cheaper than ordering them).
    let mut deltas: HashMap<K, R, RandomState> = HashMap::default();
    in_time_order(updates, exchange, name, move |_time, updates, emit| {
        for (key, delta) in updates {
            match deltas.entry(key) {
                Entry::Occupied(mut e) => e.get_mut().plus_equals(&delta),
                Entry::Vacant(e) => {
                    e.insert(delta);
                }
            }
        }
        for (key, delta) in deltas.drain() {
            if delta.is_zero() {
                continue;
            }
            match totals.entry(key) {
                Entry::Occupied(mut e) => {
                    let old = e.get().clone();
                    let mut new = old.clone();
                    new.plus_equals(&delta);
                    changed(e.key(), &old, &new, emit);
                    if new.is_zero() {
                        e.remove();
                    } else {
                        *e.get_mut() = new;
                    }
                }
                Entry::Vacant(e) => {
                    changed(e.key(), &R::zero(), &delta, emit);
                    e.insert(delta);
                }
            }
        }
    })
}

/// returns `(key, total)` rows: the running total of each key's diffs, as `count_total` would
/// (a change is the retraction of the old row and the insertion of the new one).
pub fn count_by_key<'s, T, K, R>(updates: VecCollection<'s, T, K, R>, name: &str) -> VecCollection<'s, T, (K, R)>
where
    T: Timestamp + TotalOrder,
    K: ExchangeData + Hash,
    R: ExchangeData + Monoid,
{
    total_by_key(updates, name, |key: &K, old: &R, new: &R, emit| {
        if !old.is_zero() {
            emit((key.clone(), old.clone()), -1);
        }
        if !new.is_zero() {
            emit((key.clone(), new.clone()), 1);
        }
    })
}

/// returns each key whose total is positive, once: the distinct keys.
pub fn distinct_by_key<'s, T, K>(updates: VecCollection<'s, T, K, Diff>, name: &str) -> VecCollection<'s, T, K>
where
    T: Timestamp + TotalOrder,
    K: ExchangeData + Hash,
{
    total_by_key(updates, name, |key: &K, old: &Diff, new: &Diff, emit| match (*old > 0, *new > 0) {
        (false, true) => emit(key.clone(), 1),
        (true, false) => emit(key.clone(), -1),
        _ => {}
    })
}

/// One group of a top-K: every item's score, the best `k` items, and the rows last emitted.
struct Ranking<I, R> {
    scores: HashMap<I, R, RandomState>,
    /// The best min(k, positive items) items by (score desc, item asc).
    top: BTreeSet<(Reverse<R>, I)>,
    emitted: Vec<(I, R)>,
}

impl<I: Ord + Hash + Clone, R: Monoid + Ord> Ranking<I, R> {
    fn new() -> Self {
        Ranking { scores: HashMap::default(), top: BTreeSet::new(), emitted: Vec::new() }
    }

    /// Adds `delta` to `item`'s score and keeps `top` the best `k`; returns false if `top` may
    /// now miss an item outside it (an item in it fell), which [`Self::rebuild`] repairs.
    fn update(&mut self, item: I, delta: R, k: usize) -> bool {
        let zero = R::zero();
        let old = self.scores.get(&item).cloned().unwrap_or_else(R::zero);
        let mut new = old.clone();
        new.plus_equals(&delta);
        if new.is_zero() {
            self.scores.remove(&item);
        } else {
            self.scores.insert(item.clone(), new.clone());
        }
        let was_in_top = old > zero && self.top.remove(&(Reverse(old.clone()), item.clone()));
        if new <= zero {
            return !was_in_top;
        }
        if was_in_top || self.top.len() < k {
            let fell = was_in_top && new < old;
            self.top.insert((Reverse(new), item));
            return !fell;
        }
        let candidate = (Reverse(new), item);
        if self.top.last().is_some_and(|worst| candidate < *worst) {
            self.top.insert(candidate);
            self.top.pop_last();
        }
        true
    }

    /// Recomputes `top` from every score.
    fn rebuild(&mut self, k: usize) {
        let zero = R::zero();
        let mut all: Vec<(Reverse<&R>, &I)> =
            self.scores.iter().filter(|(_, c)| **c > zero).map(|(i, c)| (Reverse(c), i)).collect();
        if all.len() > k {
            all.select_nth_unstable(k);
            all.truncate(k);
        }
        self.top = all.into_iter().map(|(Reverse(c), i)| (Reverse(c.clone()), i.clone())).collect();
    }

    /// Emits each rank whose row changed since the last call: the old row retracted, the new
    /// one inserted.
    fn emit_changes(&mut self, mut emit: impl FnMut(u32, &I, &R, Diff)) {
        let new: Vec<(I, R)> = self.top.iter().map(|(Reverse(c), i)| (i.clone(), c.clone())).collect();
        for rank in 0..new.len().max(self.emitted.len()) {
            let (old_row, new_row) = (self.emitted.get(rank), new.get(rank));
            if old_row != new_row {
                if let Some((item, score)) = old_row {
                    emit(rank as u32 + 1, item, score, -1);
                }
                if let Some((item, score)) = new_row {
                    emit(rank as u32 + 1, item, score, 1);
                }
            }
        }
        self.emitted = new;
    }
}

/// returns rows `(group, rank, item, score)`: for each group the `k` items with the largest
/// score, rank 1 first, ties broken by item ascending. An item's score is the total of the
/// diffs of its `(group, item)` records: with `isize` diffs, its number of occurrences; with a
/// tuple, a lexicographic score. Only scores above zero rank.
///
/// Each worker owns the groups hashed to it and keeps, per group, every item's score in a hash
/// map and the best `k` in a small B-tree. A completed time adds its changes (O(1) per item,
/// plus O(log k) for items that enter or move within the top) and emits only the ranks whose
/// row changed: a changed score moves one item, it does not rewrite the group's list. Only
/// when an item of the top loses score is the group's top recomputed from all its scores.
pub fn top_k<'s, T, G, I, R>(
    scores: VecCollection<'s, T, (G, I), R>,
    k: usize,
    name: &str,
) -> VecCollection<'s, T, (G, u32, I, R)>
where
    T: Timestamp + TotalOrder,
    G: ExchangeData + Hash,
    I: ExchangeData + Hash,
    R: ExchangeData + Monoid,
{
    let exchange = Exchange::new(|update: &((G, I), T, R)| (update.0).0.hashed());
    let mut groups: HashMap<G, Ranking<I, R>, RandomState> = HashMap::default();
    in_time_order(scores, exchange, name, move |_time, updates, emit| {
        let mut touched: HashMap<G, bool, RandomState> = HashMap::default();
        for ((group, item), delta) in updates {
            let ranking = groups.entry(group.clone()).or_insert_with(Ranking::new);
            let intact = ranking.update(item, delta, k);
            *touched.entry(group).or_insert(true) &= intact;
        }
        for (group, intact) in touched {
            let ranking = groups.get_mut(&group).expect("touched groups exist");
            if !intact {
                ranking.rebuild(k);
            }
            ranking
                .emit_changes(|rank, item, score, diff| emit((group.clone(), rank, item.clone(), score.clone()), diff));
            if ranking.scores.is_empty() && ranking.emitted.is_empty() {
                groups.remove(&group);
            }
        }
    })
}
