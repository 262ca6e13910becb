//! Operators of our own that differential does not provide: per-batch pre-aggregation and an
//! incremental top-K. Both work on `VecCollection`s and keep differential's update semantics.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use differential_dataflow::difference::Semigroup;
use differential_dataflow::{AsCollection, Data, ExchangeData, Hashable, VecCollection};
use foldhash::fast::RandomState;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
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

/// One group's items ordered by count (descending) then item (ascending), and the top list
/// last emitted for it.
struct Ranking<I> {
    entries: BTreeMap<(Reverse<Diff>, I), Diff>,
    top: Vec<(I, Diff)>,
}

impl<I: Ord + Clone> Ranking<I> {
    fn new() -> Self {
        Ranking {
            entries: BTreeMap::new(),
            top: Vec::new(),
        }
    }

    fn update(&mut self, item: I, count: Diff, diff: Diff) {
        let key = (Reverse(count), item);
        let multiplicity = self.entries.entry(key.clone()).or_insert(0);
        *multiplicity += diff;
        if *multiplicity == 0 {
            self.entries.remove(&key);
        }
    }

    /// Recomputes the top `k` and reports each rank whose row changed as a retraction of the
    /// old row and an insertion of the new one.
    fn refresh(&mut self, k: usize, mut emit: impl FnMut(u32, &I, Diff, Diff)) {
        let new: Vec<(I, Diff)> = self
            .entries
            .iter()
            .filter(|(_, m)| **m > 0)
            .take(k)
            .map(|((Reverse(count), item), _)| (item.clone(), *count))
            .collect();
        for rank in 0..new.len().max(self.top.len()) {
            let (old_row, new_row) = (self.top.get(rank), new.get(rank));
            if old_row != new_row {
                if let Some((item, count)) = old_row {
                    emit(rank as u32 + 1, item, *count, -1);
                }
                if let Some((item, count)) = new_row {
                    emit(rank as u32 + 1, item, *count, 1);
                }
            }
        }
        self.top = new;
    }
}

/// returns rows `(group, rank, item, count)`: for each group the `k` items with the largest
/// count, rank 1 first, ties broken by item ascending.
///
/// The input is a counted collection `((group, item), count)` such as `count_total` produces.
/// Each worker keeps, per group it owns, every item in a B-tree ordered by (count desc, item
/// asc). A completed time applies its changes to the tree (log n per changed count), reads
/// the first `k` entries and emits only the ranks whose row changed: a changed count moves one
/// item, it does not rewrite the group's list. Times are processed in order once the input
/// frontier has passed them, hence the total order on `T`.
pub fn top_k<'s, T, G, I>(
    counts: VecCollection<'s, T, ((G, I), Diff)>,
    k: usize,
    name: &str,
) -> VecCollection<'s, T, (G, u32, I, Diff)>
where
    T: Timestamp + TotalOrder,
    G: ExchangeData + Hash + Eq,
    I: ExchangeData + Ord,
{
    let exchange = Exchange::new(|update: &(((G, I), Diff), T, Diff)| ((update.0).0).0.hashed());
    counts
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<_>>, _, _, _>(exchange, name, move |_cap, _info| {
            let mut pending: BTreeMap<T, (Capability<T>, Vec<(G, I, Diff, Diff)>)> = BTreeMap::new();
            let mut groups: HashMap<G, Ranking<I>, RandomState> = HashMap::default();
            move |(input, frontier), output| {
                let port = output.output_index();
                input.for_each_stamp(|cap, containers| {
                    for container in containers {
                        for (((group, item), count), time, diff) in container.drain(..) {
                            pending
                                .entry(time.clone())
                                .or_insert_with(|| (cap.delayed(&time, port), Vec::new()))
                                .1
                                .push((group, item, count, diff));
                        }
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (time, (cap, updates)) = entry.remove_entry();
                    let mut touched = HashSet::<G, RandomState>::default();
                    for (group, item, count, diff) in updates {
                        groups
                            .entry(group.clone())
                            .or_insert_with(Ranking::new)
                            .update(item, count, diff);
                        touched.insert(group);
                    }
                    let mut session = output.session(&cap);
                    for group in touched {
                        let ranking = groups.get_mut(&group).expect("touched groups exist");
                        ranking.refresh(k, |rank, item, count, diff| {
                            session.give(((group.clone(), rank, item.clone(), count), time.clone(), diff));
                        });
                        if ranking.entries.is_empty() && ranking.top.is_empty() {
                            groups.remove(&group);
                        }
                    }
                }
            }
        })
        .as_collection()
}
