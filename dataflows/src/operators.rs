//! Operators of our own: per-batch pre-aggregation, per-key totals and an incremental top-K.
//! All work on `VecCollection`s and keep differential's update semantics.
//!
//! Why not differential's `count_total`/`threshold_total` for the chat views: with totally
//! ordered time a running total needs only each key's current value, which a hash map holds in
//! O(1), whereas `count_total` seeks every changed key through the batches of an arrangement it
//! must also build and merge. On a 1 M message replay `CountTotal` and the arrangements under
//! it took 45 % of a worker's time; [`total_by_key`] replaces them. Views that need shared
//! arrangements (joins) still use differential's.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::rc::Rc;

use differential_dataflow::difference::{Monoid, Semigroup};
use differential_dataflow::{AsCollection, Data, ExchangeData, Hashable, VecCollection};
use foldhash::fast::RandomState;
use timely::communication::Pull;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::channels::Message;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{InputHandleCore, Operator, OutputBuilder};
use timely::dataflow::operators::Capability;
use timely::order::TotalOrder;
use timely::progress::frontier::MutableAntichain;
use timely::progress::Timestamp;

use crate::checkpoint;
use crate::horizon::{expire, Expiry};
use crate::Diff;

/// Called after draining a reused scratch map of `used` entries: drops its table if it is far
/// larger than that. Draining or clearing a hash map costs its capacity, not its length, so a
/// table grown by one large batch (a graph load) would otherwise tax every small batch after.
pub(crate) fn trim_scratch<K, V, S: Default>(map: &mut HashMap<K, V, S>, used: usize) {
    if map.capacity() > 8 * used.max(1024) {
        *map = HashMap::default();
    }
}

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
                    let used = sums.len();
                    for ((data, time), diff) in sums.drain() {
                        if !diff.is_zero() {
                            session.give((data, time, diff));
                        }
                    }
                    trim_scratch(&mut sums, used);
                });
            }
        })
        .as_collection()
}

/// returns the same collection with each update moved to the worker `route` picks for it (its
/// hash modulo the number of workers): one exchange that several operators then read with
/// `Pipeline`, where each would otherwise exchange the same updates again (see
/// [`count_and_top_k`]).
pub fn partition<'s, T, D, R>(
    updates: VecCollection<'s, T, D, R>,
    route: impl Fn(&D) -> u64 + 'static,
) -> VecCollection<'s, T, D, R>
where
    T: Timestamp,
    D: ExchangeData,
    R: ExchangeData + Semigroup,
{
    use timely::dataflow::operators::Exchange as _;
    updates.inner.exchange(move |update: &(D, T, R)| route(&update.0)).as_collection()
}

/// The exchange of `(group, item)` updates by the pair's hash: the delivery of [`total_by_group`]
/// and [`top_k`] for updates not partitioned already.
pub fn by_pair<T, G, I, R>() -> impl ParallelizationContract<T, Vec<((G, I), T, R)>>
where
    T: Timestamp,
    G: ExchangeData + Hash,
    I: ExchangeData + Hash,
    R: ExchangeData + Semigroup,
{
    Exchange::new(|update: &((G, I), T, R)| update.0.hashed())
}

/// What has arrived for each time that is not complete yet, with a capability for that time:
/// the skeleton of the operators that handle each time once it is complete, times in
/// increasing order ([`accumulate_in_time_order`]; the change files' writer, which keeps a
/// time's capability until the time is on disk).
///
/// A time holds a capability for each of `N` outputs.
pub struct InTimeOrder<T: Timestamp, A, const N: usize = 1> {
    pending: BTreeMap<T, ([Capability<T>; N], A)>,
    /// Emptied accumulators, for the next times.
    spare: Vec<A>,
}

impl<T: Timestamp, A, const N: usize> Default for InTimeOrder<T, A, N> {
    fn default() -> Self {
        InTimeOrder { pending: BTreeMap::new(), spare: Vec::new() }
    }
}

impl<T: Timestamp + TotalOrder, A: Default, const N: usize> InTimeOrder<T, A, N> {
    /// Folds each update that arrived on `input` into its time's accumulator with `absorb`,
    /// taking a capability for each output of `ports` for a time new to it.
    pub fn absorb<D, R, P>(
        &mut self,
        input: &mut InputHandleCore<T, Vec<(D, T, R)>, P>,
        ports: [usize; N],
        mut absorb: impl FnMut(&mut A, D, R),
    ) where
        P: Pull<Message<T, Vec<(D, T, R)>>>,
    {
        let (pending, spare) = (&mut self.pending, &mut self.spare);
        input.for_each_stamp(|cap, containers| {
            for container in containers {
                // A container's updates mostly share one time: the time's slot is looked up
                // once per run of equal times, not once per update (and each update is moved
                // once, where peeking at the next one's time moved it twice more).
                let mut slot: Option<&mut ([Capability<T>; N], A)> = None;
                for (data, time, diff) in container.drain(..) {
                    let current = match slot.take() {
                        Some(s) if s.0[0].time() == &time => s,
                        _ => match pending.entry(time) {
                            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::btree_map::Entry::Vacant(e) => {
                                let caps = ports.map(|port| cap.delayed(e.key(), port));
                                e.insert((caps, spare.pop().unwrap_or_default()))
                            }
                        },
                    };
                    absorb(&mut current.1, data, diff);
                    slot = Some(current);
                }
            }
        });
    }

    /// The earliest time that `frontier` has passed, with its capabilities and what arrived
    /// for it.
    pub fn next_complete(&mut self, frontier: &MutableAntichain<T>) -> Option<(T, [Capability<T>; N], A)> {
        let entry = self.pending.first_entry()?;
        if frontier.less_equal(entry.key()) {
            return None;
        }
        let (time, (cap, accumulated)) = entry.remove_entry();
        Some((time, cap, accumulated))
    }

    /// Each time not complete yet, in increasing order, with its capabilities and what has
    /// arrived for it (an operator that hands on part of a large time before it completes).
    pub fn pending_mut(&mut self) -> impl Iterator<Item = (&T, &[Capability<T>; N], &mut A)> {
        self.pending.iter_mut().map(|(time, (caps, accumulated))| (time, &*caps, accumulated))
    }

    /// Keeps an emptied accumulator, allocations and all, for a later time.
    pub fn recycle(&mut self, accumulated: A) {
        if self.spare.len() < 2 {
            self.spare.push(accumulated);
        }
    }
}

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
    accumulate_in_time_order(
        updates,
        pact,
        name,
        |buffer: &mut Vec<(D, R)>, data, diff| buffer.push((data, diff)),
        move |time, buffer: &mut Vec<(D, R)>, emit| process(time, std::mem::take(buffer), emit),
    )
}

/// [`in_time_order`], with each time's updates folded into an accumulator `A` by `absorb` as
/// they arrive: summing into a map keeps a time's memory to its distinct keys, where a buffer
/// would hold every update (a graph load's walks: tens of millions).
///
/// `process` takes what it needs out of the accumulator and must leave it empty: the operator
/// keeps it, allocations and all, for a later time. (A map made anew for every time grew to
/// its size by rehashing, every time: 7 % of a replay.)
pub fn accumulate_in_time_order<'s, T, D, R, A, D2, P, G, F>(
    updates: VecCollection<'s, T, D, R>,
    pact: P,
    name: &str,
    mut absorb: G,
    mut process: F,
) -> VecCollection<'s, T, D2>
where
    T: Timestamp + TotalOrder,
    D: Data,
    R: Semigroup + 'static,
    A: Default + 'static,
    D2: Data,
    P: ParallelizationContract<T, Vec<(D, T, R)>>,
    G: FnMut(&mut A, D, R) + 'static,
    F: FnMut(&T, &mut A, &mut dyn FnMut(D2, Diff)) + 'static,
{
    updates
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<(D2, T, Diff)>>, _, _, _>(pact, name, move |_cap, _info| {
            let mut times = InTimeOrder::<T, A>::default();
            move |(input, frontier), output| {
                let port = output.output_index();
                times.absorb(input, [port], &mut absorb);
                while let Some((time, [cap], mut accumulated)) = times.next_complete(frontier) {
                    let mut session = output.session(&cap);
                    process(&time, &mut accumulated, &mut |data, diff| session.give((data, time.clone(), diff)));
                    times.recycle(accumulated);
                }
            }
        })
        .as_collection()
}

/// Totals per group and item.
type Nested<G, I, R> = HashMap<G, HashMap<I, R, RandomState>, RandomState>;

/// A time's sums per group and item, kept from time to time: a group's map of items is reused
/// while the group keeps receiving updates, and the emptied map of a group that stopped (a
/// window past) is kept for a new group, which would otherwise grow one from empty by
/// rehashing (a new window every minute of every channel).
struct GroupSums<G, I, R> {
    groups: Nested<G, I, R>,
    spare: Vec<HashMap<I, R, RandomState>>,
}

impl<G, I, R> Default for GroupSums<G, I, R> {
    fn default() -> Self {
        GroupSums { groups: HashMap::default(), spare: Vec::new() }
    }
}

/// How many emptied maps [`GroupSums`] keeps for new groups.
const SPARE_MAPS: usize = 64;

impl<G: Hash + Eq, I: Hash + Eq, R: Semigroup> GroupSums<G, I, R> {
    /// Adds `diff` to `item`'s sum in `group`.
    fn add(&mut self, group: G, item: I, diff: R) {
        let items = self.groups.entry(group).or_insert_with(|| self.spare.pop().unwrap_or_default());
        sum_into(items, item, diff);
    }

    /// Hands each group with its items (drained, so the maps keep their allocations for the
    /// next time) to `each`; groups that received nothing since the last time go.
    fn drain(&mut self, mut each: impl FnMut(&G, std::collections::hash_map::Drain<'_, I, R>)) {
        let spare = &mut self.spare;
        self.groups.retain(|_, items| {
            if !items.is_empty() {
                return true;
            }
            if spare.len() < SPARE_MAPS {
                spare.push(std::mem::take(items));
            }
            false
        });
        for (group, items) in self.groups.iter_mut() {
            let used = items.len();
            each(group, items.drain());
            trim_scratch(items, used);
        }
    }
}

/// Adds `diff` to `key`'s entry of `map`.
fn sum_into<K: Hash + Eq, R: Semigroup>(map: &mut HashMap<K, R, RandomState>, key: K, diff: R) {
    match map.entry(key) {
        Entry::Occupied(mut e) => e.get_mut().plus_equals(&diff),
        Entry::Vacant(e) => {
            e.insert(diff);
        }
    }
}

/// Adds `delta` to `key`'s running total in `totals` (absent: zero; a total that reaches zero
/// is removed) and calls `changed(key, old, new)`: the one place every running total here
/// (per key, per group, a top-K's scores) is kept.
fn add_to_total<K: Hash + Eq, R: Monoid>(
    totals: &mut HashMap<K, R, RandomState>,
    key: K,
    delta: R,
    changed: impl FnOnce(&K, &R, &R),
) {
    match totals.entry(key) {
        Entry::Occupied(mut e) => {
            let old = e.get().clone();
            let mut new = old.clone();
            new.plus_equals(&delta);
            changed(e.key(), &old, &new);
            if new.is_zero() {
                e.remove();
            } else {
                *e.get_mut() = new;
            }
        }
        Entry::Vacant(e) => {
            changed(e.key(), &R::zero(), &delta);
            if !delta.is_zero() {
                e.insert(delta);
            }
        }
    }
}

/// returns what `changed(key, old, new, emit)` emits whenever the total of a key's diffs
/// changes from `old` to `new` (zero when absent) at a time.
///
/// Each worker keeps the current total of the keys hashed to it in a hash map. Within a time,
/// a key's updates are summed first, so `changed` sees each changed key once per time. With an
/// `expiry`, the totals of keys whose window is sealed are forgotten (see `horizon`).
pub fn total_by_key<'s, T, K, R, D, F>(
    updates: VecCollection<'s, T, K, R>,
    name: &str,
    mut expiry: Option<Expiry<T, K>>,
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
    let totals = checkpoint::keep::<HashMap<K, R, RandomState>>(name, HashMap::default());
    // A time's changes are summed per key as they arrive (a hash map rather than a sort: most
    // keys are distinct, and hashing them is cheaper than ordering them).
    accumulate_in_time_order(
        updates,
        exchange,
        name,
        sum_into,
        move |time, deltas: &mut HashMap<K, R, RandomState>, emit| {
            let totals = &mut *totals.borrow_mut();
            expire(&mut expiry, time, totals);
            let used = deltas.len();
            for (key, delta) in deltas.drain() {
                if !delta.is_zero() {
                    add_to_total(totals, key, delta, |key, old, new| changed(key, old, new, emit));
                }
            }
            trim_scratch(deltas, used);
        },
    )
}

/// returns `(key, total)` rows: the running total of each key's diffs, as `count_total` would
/// (a change is the retraction of the old row and the insertion of the new one).
pub fn count_by_key<'s, T, K, R>(
    updates: VecCollection<'s, T, K, R>,
    name: &str,
    expiry: Option<Expiry<T, K>>,
) -> VecCollection<'s, T, (K, R)>
where
    T: Timestamp + TotalOrder,
    K: ExchangeData + Hash,
    R: ExchangeData + Monoid,
{
    total_by_key(updates, name, expiry, |key: &K, old: &R, new: &R, emit| {
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
    total_by_key(updates, name, None, |key: &K, old: &Diff, new: &Diff, emit| match (*old > 0, *new > 0) {
        (false, true) => emit(key.clone(), 1),
        (true, false) => emit(key.clone(), -1),
        _ => {}
    })
}

/// [`total_by_key`] for keys that are `(group, item)` pairs, with each worker's totals kept
/// per group: one small map of items per group rather than one map of every key.
///
/// Updates arrive by `pact`: [`by_pair`] exchanges them by the whole pair; `Pipeline` reads
/// them where an earlier exchange by the pair ([`partition`]) put them. What the groups
/// change is locality: a time's updates
/// touch few groups (the chat views' groups are (channel, window), and a batch of messages
/// falls into the latest windows), so its probes stay within those groups' maps, which stay in
/// cache, instead of landing all over one table of millions of keys that must also be rehashed
/// as it grows. On the peer workload the word totals took 3.1 s of a worker's 8 s as one map.
pub fn total_by_group<'s, T, G, I, R, D, F, P>(
    updates: VecCollection<'s, T, (G, I), R>,
    pact: P,
    name: &str,
    mut expiry: Option<Expiry<T, G>>,
    mut changed: F,
) -> VecCollection<'s, T, D>
where
    T: Timestamp + TotalOrder,
    G: ExchangeData + Hash,
    I: ExchangeData + Hash,
    R: ExchangeData + Monoid,
    D: Data,
    F: FnMut(&G, &I, &R, &R, &mut dyn FnMut(D, Diff)) + 'static,
    P: ParallelizationContract<T, Vec<((G, I), T, R)>>,
{
    let groups = checkpoint::keep::<Nested<G, I, R>>(name, HashMap::default());
    let absorb = |sums: &mut GroupSums<G, I, R>, (group, item): (G, I), diff| sums.add(group, item, diff);
    accumulate_in_time_order(updates, pact, name, absorb, move |time, sums: &mut GroupSums<G, I, R>, emit| {
        let groups = &mut *groups.borrow_mut();
        expire(&mut expiry, time, groups);
        sums.drain(|group, deltas| {
            // A new group's totals start with room for its first items.
            let room = deltas.len();
            let totals = groups
                .entry(group.clone())
                .or_insert_with(|| HashMap::with_capacity_and_hasher(room, RandomState::default()));
            for (item, delta) in deltas {
                if !delta.is_zero() {
                    add_to_total(totals, item, delta, |item, old, new| changed(group, item, old, new, emit));
                }
            }
            if totals.is_empty() {
                groups.remove(group);
            }
        })
    })
}

/// [`distinct_by_key`] over `(group, item)` keys, with the totals kept per group
/// ([`total_by_group`]).
pub fn distinct_by_group<'s, T, G, I>(
    updates: VecCollection<'s, T, (G, I), Diff>,
    name: &str,
    expiry: Option<Expiry<T, G>>,
) -> VecCollection<'s, T, (G, I)>
where
    T: Timestamp + TotalOrder,
    G: ExchangeData + Hash,
    I: ExchangeData + Hash,
{
    total_by_group(updates, by_pair(), name, expiry, |group: &G, item: &I, old: &Diff, new: &Diff, emit| {
        match (*old > 0, *new > 0) {
            (false, true) => emit((group.clone(), item.clone()), 1),
            (true, false) => emit((group.clone(), item.clone()), -1),
            _ => {}
        }
    })
}

/// returns `(key, value)` rows: for each key the least of its values present (multiplicity
/// above zero), or the greatest with `greatest`. A change of that value is the retraction of
/// the old row and the insertion of the new one.
///
/// Each worker keeps, per key hashed to it, its values with their multiplicities in a sorted
/// vector (most keys have one value: a post id delivered once), and a time's changes are
/// applied per key; a key whose extreme did not change emits nothing.
pub fn extreme_by_key<'s, T, K, V>(
    updates: VecCollection<'s, T, (K, V), Diff>,
    greatest: bool,
    name: &str,
    mut expiry: Option<Expiry<T, K>>,
) -> VecCollection<'s, T, (K, V)>
where
    T: Timestamp + TotalOrder,
    K: ExchangeData + Hash,
    V: ExchangeData + Ord,
{
    let exchange = Exchange::new(|update: &((K, V), T, Diff)| (update.0).0.hashed());
    let values = checkpoint::keep::<HashMap<K, Vec<(V, Diff)>, RandomState>>(name, HashMap::default());
    let pick = move |m: &[(V, Diff)]| if greatest { m.last() } else { m.first() }.map(|(v, _)| v.clone());
    type Changes<K, V> = HashMap<K, Vec<(V, Diff)>, RandomState>;
    let absorb =
        |changes: &mut Changes<K, V>, (key, value): (K, V), diff| changes.entry(key).or_default().push((value, diff));
    accumulate_in_time_order(updates, exchange, name, absorb, move |time, changes: &mut Changes<K, V>, emit| {
        let values = &mut *values.borrow_mut();
        expire(&mut expiry, time, values);
        for (key, list) in changes.drain() {
            let entry = values.entry(key.clone()).or_insert_with(|| Vec::with_capacity(1));
            let before = pick(entry);
            for (value, diff) in list {
                match entry.binary_search_by(|(v, _)| v.cmp(&value)) {
                    Ok(i) => {
                        entry[i].1 += diff;
                        // Multiplicities never go below zero in a consistent input; a value
                        // at zero is absent.
                        if entry[i].1 <= 0 {
                            entry.remove(i);
                        }
                    }
                    Err(i) if diff > 0 => entry.insert(i, (value, diff)),
                    Err(_) => {}
                }
            }
            let after = pick(entry);
            if entry.is_empty() {
                values.remove(&key);
            }
            if before != after {
                if let Some(old) = before {
                    emit((key.clone(), old), -1);
                }
                if let Some(new) = after {
                    emit((key.clone(), new), 1);
                }
            }
        }
    })
}

/// One group of a top-K: every item's score, a buffer of the best items, and the rows last
/// emitted.
///
/// Invariant: `top` holds at most `capacity` positive items, and every positive item outside
/// it ranks after all of them. A group's first `k` rows are then the first `k` of `top`, as
/// long as `top` holds `k` items or all positive ones. Items that fall out of the buffer only
/// shrink it; the buffer is refilled from every score (O(n)) only when it runs short of `k`,
/// which with a buffer of several times `k` happens rarely even under steady deletions.
struct Ranking<I, R> {
    scores: HashMap<I, R, RandomState>,
    /// How many items have a score above zero.
    positive: usize,
    top: BTreeSet<(Reverse<R>, I)>,
    emitted: Vec<(I, R)>,
    /// Whether a change since the last emission may have touched the shown rows.
    dirty: bool,
}

impl<I: Ord + Hash + Clone, R: Monoid + Ord> Ranking<I, R> {
    fn new() -> Self {
        Ranking { scores: HashMap::default(), positive: 0, top: BTreeSet::new(), emitted: Vec::new(), dirty: false }
    }

    /// A group with these scores whose rows are shown already (restored from a checkpoint).
    fn restore(scores: HashMap<I, R, RandomState>, k: usize, capacity: usize) -> Self {
        let zero = R::zero();
        let positive = scores.values().filter(|s| **s > zero).count();
        let mut ranking = Ranking { scores, positive, top: BTreeSet::new(), emitted: Vec::new(), dirty: true };
        ranking.refill(k, capacity);
        ranking.emit_changes(k, |_, _, _| {});
        ranking
    }

    /// Adds `delta` to `item`'s score, keeping the invariant with a buffer of `capacity`, and
    /// calls `changed(item, old, new)` with its score before and after (zero when absent).
    fn update(&mut self, item: I, delta: R, k: usize, capacity: usize, changed: impl FnOnce(&I, &R, &R)) {
        let zero = R::zero();
        // One probe of the scores: it gives the old score and takes the new one.
        let mut scores = (R::zero(), R::zero());
        add_to_total(&mut self.scores, item.clone(), delta, |item, old, new| {
            changed(item, old, new);
            scores = (old.clone(), new.clone())
        });
        let (old, new) = scores;
        // The shown rows can change only if the item was or becomes one of them: its old or
        // new rank key is at or before the last shown row's.
        if !self.dirty {
            self.dirty = match self.emitted.get(k.saturating_sub(1)).filter(|_| self.emitted.len() >= k) {
                None => true,
                Some((last_item, last_score)) => {
                    let shown =
                        |score: &R| *score > zero && (Reverse(score), &item) <= (Reverse(last_score), last_item);
                    shown(&old) || shown(&new)
                }
            };
        }
        let (was_positive, is_positive) = (old > zero, new > zero);
        let mut item = item;
        if was_positive {
            // Only items ranking at or before the buffer's last can be in it.
            let old_key = (Reverse(old), item);
            if self.top.last().is_some_and(|last| old_key <= *last) {
                self.top.remove(&old_key);
            }
            item = old_key.1;
            if !is_positive {
                self.positive -= 1;
            }
        } else if is_positive {
            self.positive += 1;
        }
        if !is_positive {
            return;
        }
        let key = (Reverse(new), item);
        // Positive items other than this one that are outside the buffer.
        let others_outside = self.positive - 1 - self.top.len();
        let joins = others_outside == 0 || self.top.last().is_some_and(|worst| key < *worst);
        if joins {
            self.top.insert(key);
            if self.top.len() > capacity {
                self.top.pop_last();
            }
        }
    }

    /// Refills `top` with the best `capacity` items if it holds fewer than `k` while more exist.
    fn refill(&mut self, k: usize, capacity: usize) {
        if self.top.len() >= k.min(self.positive) {
            return;
        }
        let zero = R::zero();
        let mut all: Vec<(Reverse<&R>, &I)> =
            self.scores.iter().filter(|(_, c)| **c > zero).map(|(i, c)| (Reverse(c), i)).collect();
        if all.len() > capacity {
            all.select_nth_unstable(capacity);
            all.truncate(capacity);
        }
        self.top = all.into_iter().map(|(Reverse(c), i)| (Reverse(c.clone()), i.clone())).collect();
    }

    /// Emits the change of the shown `(item, score)` pairs since the last call, as a set: the
    /// pairs no longer shown retracted, the new ones inserted (their ranks are the merge's).
    fn emit_changes(&mut self, k: usize, mut emit: impl FnMut(&I, &R, Diff)) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let new: Vec<(I, R)> = self.top.iter().take(k).map(|(Reverse(c), i)| (i.clone(), c.clone())).collect();
        // Both lists are in rank order: one pass over the two finds what left and what came.
        fn key<I, R>((item, score): &(I, R)) -> (Reverse<&R>, &I) {
            (Reverse(score), item)
        }
        let (old, mut i, mut j) = (&self.emitted, 0, 0);
        while i < old.len() || j < new.len() {
            let order = match (old.get(i), new.get(j)) {
                (Some(a), Some(b)) => key(a).cmp(&key(b)),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Equal => (i, j) = (i + 1, j + 1),
                std::cmp::Ordering::Less => {
                    emit(&old[i].0, &old[i].1, -1);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    emit(&new[j].0, &new[j].1, 1);
                    j += 1;
                }
            }
        }
        self.emitted = new;
    }
}

/// Emits each rank whose row differs between `old` and `new` (rank 1 first): the old row
/// retracted, the new one inserted.
fn emit_rank_changes<I: PartialEq, R: PartialEq>(
    old: &[(I, R)],
    new: &[(I, R)],
    mut emit: impl FnMut(u32, &I, &R, Diff),
) {
    for rank in 0..new.len().max(old.len()) {
        let (old_row, new_row) = (old.get(rank), new.get(rank));
        if old_row != new_row {
            if let Some((item, score)) = old_row {
                emit(rank as u32 + 1, item, score, -1);
            }
            if let Some((item, score)) = new_row {
                emit(rank as u32 + 1, item, score, 1);
            }
        }
    }
}

/// How many items [`top_k`] ranks per group, and how many of the best it keeps in its buffer
/// (at least `k`; a `usize` is `k` with a buffer of `4 * max(k, 8)`, and small buffers let
/// tests reach the refill path).
#[derive(Clone, Copy, Debug)]
pub struct TopK {
    pub k: usize,
    pub capacity: usize,
}

impl From<usize> for TopK {
    fn from(k: usize) -> Self {
        TopK { k, capacity: 4 * k.max(8) }
    }
}

/// Ranked rows `(group, rank, item, score)`, rank 1 first.
pub type Ranked<'s, T, G, I, R> = VecCollection<'s, T, (G, u32, I, R)>;

/// returns rows `(group, rank, item, score)`: for each group the `k` items with the largest
/// score, rank 1 first, ties broken by item ascending. An item's score is the total of the
/// diffs of its `(group, item)` records: with `isize` diffs, its number of occurrences; with a
/// tuple, a lexicographic score. Only scores above zero rank.
///
/// The updates arrive by `pact`, as for [`total_by_group`]: by [`by_pair`], or `Pipeline` where
/// [`partition`] has put them by the pair's hash.
///
/// In two steps. Each `(group, item)` is owned by one worker (by the pair's hash), which keeps
/// every score of its items per group in a hash map and a buffer of the best few times `k` in
/// a small B-tree, and emits the changes of its own best `k` per group (`TopK: <name>`). A
/// completed time adds its changes (O(1) per item, plus O(log k) for items that enter or move
/// within the buffer) and emits only when its best `k` changed; only when deletions have
/// drained the buffer below `k` is it refilled from all the group's scores. The owner of each
/// group (by its hash) merges the workers' best `k` into ranked rows and emits the ranks whose
/// row changed (`<name> (merge)`). This is exact: an item among a group's best `k` is among
/// the best `k` of its own worker's items of that group. So the scores, the bulk of the work,
/// are spread by item even when a few groups hold most of them, and the merge sees at most
/// `k` rows per worker and group.
pub fn top_k<'s, T, G, I, R, P>(
    scores: VecCollection<'s, T, (G, I), R>,
    pact: P,
    size: impl Into<TopK>,
    name: &str,
) -> Ranked<'s, T, G, I, R>
where
    T: Timestamp + TotalOrder,
    G: ExchangeData + Hash,
    I: ExchangeData + Hash,
    R: ExchangeData + Monoid + Hash,
    P: ParallelizationContract<T, Vec<((G, I), T, R)>>,
{
    let size = size.into();
    merge_leaders(leaders(scores, pact, size, name), size.k, name)
}

/// The first step of [`top_k`]: per group, the changes of the best `k` `(item, score)` pairs of
/// the items this worker owns.
fn leaders<'s, T, G, I, R, P>(
    scores: VecCollection<'s, T, (G, I), R>,
    pact: P,
    size: TopK,
    name: &str,
) -> VecCollection<'s, T, (G, I, R)>
where
    T: Timestamp + TotalOrder,
    G: ExchangeData + Hash,
    I: ExchangeData + Hash,
    R: ExchangeData + Monoid,
    P: ParallelizationContract<T, Vec<((G, I), T, R)>>,
{
    let TopK { k, capacity } = size;
    let capacity = capacity.max(k);
    let groups = keep_rankings::<G, I, R>(name, k, capacity);
    // A time's changes, summed per group and item as they arrive.
    let absorb = |sums: &mut GroupSums<G, I, R>, (group, item): (G, I), diff| sums.add(group, item, diff);
    accumulate_in_time_order(scores, pact, name, absorb, move |_time, sums: &mut GroupSums<G, I, R>, emit| {
        let groups = &mut *groups.borrow_mut();
        sums.drain(|group, items| {
            let ranking = groups.entry(group.clone()).or_insert_with(Ranking::new);
            for (item, delta) in items {
                if !delta.is_zero() {
                    ranking.update(item, delta, k, capacity, |_, _, _| {});
                }
            }
            show(groups, group, k, capacity, &mut |row, diff| emit(row, diff));
        })
    })
}

/// Each group's [`Ranking`] in a worker's share of a [`top_k`].
type Rankings<G, I, R> = HashMap<G, Ranking<I, R>, RandomState>;

/// returns empty [`Rankings`] (or those of the checkpoint being restored), kept at every
/// checkpoint as each group's scores: the buffer and the pairs shown are rebuilt from them.
fn keep_rankings<G, I, R>(name: &str, k: usize, capacity: usize) -> Rc<RefCell<Rankings<G, I, R>>>
where
    G: ExchangeData + Hash,
    I: ExchangeData + Hash,
    R: ExchangeData + Monoid,
{
    checkpoint::keep_with(
        name,
        HashMap::default(),
        |groups: &Rankings<G, I, R>, out| {
            bincode::serialize_into(out, &groups.iter().map(|(g, r)| (g, &r.scores)).collect::<Vec<_>>())
        },
        |reader| {
            let scores: Vec<(G, HashMap<I, R, RandomState>)> = bincode::deserialize_from(reader)?;
            Ok(scores.into_iter().map(|(group, scores)| (group, Ranking::restore(scores, k, capacity))).collect())
        },
    )
}

/// Emits the change of `group`'s shown `(group, item, score)` rows after its updates (its
/// buffer refilled first if they drained it), and forgets the group once it has nothing.
fn show<G, I, R>(
    groups: &mut Rankings<G, I, R>,
    group: &G,
    k: usize,
    capacity: usize,
    emit: &mut dyn FnMut((G, I, R), Diff),
) where
    G: Hash + Eq + Clone,
    I: Ord + Hash + Clone,
    R: Monoid + Ord,
{
    let Some(ranking) = groups.get_mut(group) else { return };
    ranking.refill(k, capacity);
    ranking.emit_changes(k, |item, score, diff| emit((group.clone(), item.clone(), score.clone()), diff));
    if ranking.scores.is_empty() && ranking.emitted.is_empty() {
        groups.remove(group);
    }
}

/// What [`count_and_top_k`] counts beside its ranking.
pub enum Counted<T, W> {
    /// The total of each (window, item): a ranking's group holds many windows (a channel's),
    /// and windows are forgotten by the expiry.
    Windows(Option<Expiry<T, W>>),
    /// The ranking's own scores, one map for both: each count group is a ranking group
    /// (`rank_group` is one to one).
    Scores,
}

/// The running total of each `(group, item)` and a [`top_k`] of the same updates, in one
/// operator: returns the rows `row(group, item, total)` (a change is the retraction of the
/// old row and the insertion of the new one, as in [`count_by_key`]) and the ranked rows of each
/// `rank_group(group)` (as `top_k` makes them, the items' scores summed over its groups).
///
/// The updates are read where [`partition`] put them, by the hash of `(rank_group(group),
/// item)`, so that each ranked item is owned by one worker. A time's updates are summed per
/// group and item once for both views (two operators summed them twice), and with
/// [`Counted::Scores`] one map of totals serves both (two operators kept the same totals
/// twice). The state is kept for checkpoints under the two names (with `Counted::Scores`, the
/// totals only as the ranking's scores).
pub fn count_and_top_k<'s, T, W, G, I, R, D>(
    updates: VecCollection<'s, T, (W, I), R>,
    [count_name, top_name]: [&str; 2],
    counted: Counted<T, W>,
    rank_group: impl Fn(&W) -> G + 'static,
    row: impl Fn(&W, &I, R) -> D + 'static,
    size: impl Into<TopK>,
) -> (VecCollection<'s, T, D>, Ranked<'s, T, G, I, R>)
where
    T: Timestamp + TotalOrder,
    W: ExchangeData + Hash,
    G: ExchangeData + Hash,
    I: ExchangeData + Hash,
    R: ExchangeData + Monoid + Hash,
    D: Data,
{
    let TopK { k, capacity } = size.into();
    let capacity = capacity.max(k);
    let (mut expiry, totals) = match counted {
        Counted::Windows(expiry) => (expiry, Some(checkpoint::keep::<Nested<W, I, R>>(count_name, HashMap::default()))),
        Counted::Scores => (None, None),
    };
    let rankings = keep_rankings::<G, I, R>(top_name, k, capacity);
    let mut builder = OperatorBuilder::new(format!("{count_name} + {top_name}"), updates.inner.scope());
    let mut input = builder.new_input(updates.inner, Pipeline);
    let (counts_out, counts) = builder.new_output();
    let (leaders_out, leaders) = builder.new_output();
    let mut counts_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<(D, T, Diff)>>>::from(counts_out);
    let mut leaders_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<((G, I, R), T, Diff)>>>::from(leaders_out);
    builder.build(move |initial| {
        drop(initial);
        let mut times = InTimeOrder::<T, GroupSums<W, I, R>, 2>::default();
        // The ranking groups a time's updates touched.
        let mut touched: Vec<G> = Vec::new();
        move |frontiers| {
            let (mut counts_out, mut leaders_out) = (counts_out.activate(), leaders_out.activate());
            let ports = [counts_out.output_index(), leaders_out.output_index()];
            times.absorb(&mut input, ports, |sums, (group, item), diff| sums.add(group, item, diff));
            while let Some((time, [counts_cap, leaders_cap], mut sums)) = times.next_complete(&frontiers[0]) {
                let mut counts = counts_out.session(&counts_cap);
                let mut count = |row, diff| counts.give((row, time.clone(), diff));
                let rankings = &mut *rankings.borrow_mut();
                let mut counted = |group: &W, item: &I, old: &R, new: &R| {
                    if !old.is_zero() {
                        count(row(group, item, old.clone()), -1);
                    }
                    if !new.is_zero() {
                        count(row(group, item, new.clone()), 1);
                    }
                };
                // The windows' totals first, then the rankings, each pass over the time's sums
                // probing one kind of map (interleaved, each probe missed the caches more).
                if let Some(totals) = totals.as_ref() {
                    let totals = &mut *totals.borrow_mut();
                    expire(&mut expiry, &time, totals);
                    for (group, deltas) in sums.groups.iter().filter(|(_, deltas)| !deltas.is_empty()) {
                        // A new group's totals start with room for its first items.
                        let room = deltas.len();
                        let windowed = totals
                            .entry(group.clone())
                            .or_insert_with(|| HashMap::with_capacity_and_hasher(room, RandomState::default()));
                        for (item, delta) in deltas.iter().filter(|(_, delta)| !delta.is_zero()) {
                            add_to_total(windowed, item.clone(), delta.clone(), |item, old, new| {
                                counted(group, item, old, new)
                            });
                        }
                        if windowed.is_empty() {
                            totals.remove(group);
                        }
                    }
                }
                let scores_counted = totals.is_none();
                sums.drain(|group, deltas| {
                    let ranked = rank_group(group);
                    let ranking = rankings.entry(ranked.clone()).or_insert_with(Ranking::new);
                    if !touched.contains(&ranked) {
                        touched.push(ranked);
                    }
                    for (item, delta) in deltas.filter(|(_, delta)| !delta.is_zero()) {
                        ranking.update(item, delta, k, capacity, |item, old, new| {
                            if scores_counted {
                                counted(group, item, old, new)
                            }
                        });
                    }
                });
                let mut leaders = leaders_out.session(&leaders_cap);
                for group in touched.drain(..) {
                    show(rankings, &group, k, capacity, &mut |row, diff| leaders.give((row, time.clone(), diff)));
                }
                times.recycle(sums);
            }
        }
    });
    (counts.as_collection(), merge_leaders(leaders.as_collection(), k, top_name))
}

/// A group's leaders as saved: `(score, item)`, best first.
type Leaders<I, R> = Vec<(Reverse<R>, I)>;

/// One group's leaders in [`merge_leaders`]: every worker's best `k`, ranked, and the rows
/// last emitted.
struct Board<I, R> {
    leaders: BTreeSet<(Reverse<R>, I)>,
    emitted: Vec<(I, R)>,
}

impl<I: Ord + Clone, R: Ord + Clone> Board<I, R> {
    fn ranked(&self, k: usize) -> Vec<(I, R)> {
        self.leaders.iter().take(k).map(|(Reverse(score), item)| (item.clone(), score.clone())).collect()
    }
}

/// The second step of [`top_k`]: the ranked rows of each group, from the workers' leaders,
/// at the group's owner.
fn merge_leaders<'s, T, G, I, R>(
    leaders: VecCollection<'s, T, (G, I, R)>,
    k: usize,
    name: &str,
) -> Ranked<'s, T, G, I, R>
where
    T: Timestamp + TotalOrder,
    G: ExchangeData + Hash,
    I: ExchangeData + Hash,
    R: ExchangeData + Monoid + Hash,
{
    let name = format!("{name} (merge)");
    let exchange = Exchange::new(|update: &((G, I, R), T, Diff)| (update.0).0.hashed());
    // Saved as each group's leaders; the rows shown are their first `k`.
    let boards = checkpoint::keep_with(
        &name,
        HashMap::<G, Board<I, R>, RandomState>::default(),
        |boards, out| {
            let leaders: Vec<(&G, Leaders<&I, &R>)> = boards
                .iter()
                .map(|(g, b)| (g, b.leaders.iter().map(|(Reverse(r), i)| (Reverse(r), i)).collect()))
                .collect();
            bincode::serialize_into(out, &leaders)
        },
        move |reader| {
            let leaders: Vec<(G, Leaders<I, R>)> = bincode::deserialize_from(reader)?;
            Ok(leaders
                .into_iter()
                .map(|(group, leaders)| {
                    let mut board = Board { leaders: leaders.into_iter().collect(), emitted: Vec::new() };
                    board.emitted = board.ranked(k);
                    (group, board)
                })
                .collect())
        },
    );
    let absorb = |sums: &mut GroupSums<G, (I, R), Diff>, (group, item, score): (G, I, R), diff| {
        sums.add(group, (item, score), diff)
    };
    accumulate_in_time_order(
        leaders,
        exchange,
        &name,
        absorb,
        move |_time, sums: &mut GroupSums<G, (I, R), Diff>, emit| {
            let boards = &mut *boards.borrow_mut();
            sums.drain(|group, changes| {
                let board = boards
                    .entry(group.clone())
                    .or_insert_with(|| Board { leaders: BTreeSet::new(), emitted: Vec::new() });
                for ((item, score), diff) in changes {
                    // A worker shows a pair at most once: its changes sum to -1, 0 or 1.
                    debug_assert!((-1..=1).contains(&diff), "{diff}");
                    match diff {
                        1.. => board.leaders.insert((Reverse(score), item)),
                        ..0 => board.leaders.remove(&(Reverse(score), item)),
                        0 => false,
                    };
                }
                let ranked = board.ranked(k);
                emit_rank_changes(&board.emitted, &ranked, |rank, item, score, diff| {
                    emit((group.clone(), rank, item.clone(), score.clone()), diff)
                });
                board.emitted = ranked;
                if board.leaders.is_empty() {
                    boards.remove(group);
                }
            })
        },
    )
}
