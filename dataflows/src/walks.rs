//! Weighted walks from focus users over the strength graph: the `reach` and `top_connections`
//! views, computed the way a sparse matrix product is.
//!
//! ```text
//!  strengths ((a, b), s) ─► Broadcast ─────────────────┐
//!  focus users ─► Exchange by the user's hash ─────────┴─► Walks ─┬─► reach
//!                                                                 └─► top_connections
//! ```
//!
//! The strength graph is small next to the walks it makes (MUSAE DE: 153 k edges, 34 M
//! two-hop pairs), so every worker keeps all of it, as adjacency lists over users interned to
//! dense ids (ids never leave the worker), and owns the focus users whose hash falls to it.
//! For an owned focus user `f` the rows `A²[f]` (and `A³[f]` with three hops) are computed
//! as one row of a sparse product: a dense accumulator over the users, filled by walking
//! `f`'s neighbours and theirs. Each worker keeps the rows it emitted (sparse, or a value per
//! user once a row reaches half of the users) and each focus user's best `2 · top_n` others
//! ranked, and, at a completed time, recomputes only the focus users whose walks may have
//! changed and emits the difference, so loading a graph is one pass of products, and a single
//! changed edge costs the products of the users within `hops − 1` of its ends.
//!
//! Which users may change: a walk of length `k ≤ hops` from `f` that uses a changed pair uses
//! unchanged pairs before the first changed one, and those are in the graph as it was. So `f`
//! is affected iff one end of a changed pair is within `hops − 1` steps of `f` in the graph
//! before the time's changes, found by a breadth-first search from the ends. Users whose
//! focus membership changed are affected too.
//!
//! Versus differential's joins (one `join_core` per hop against an arrangement of the graph,
//! then a count per pair), which held every walk of every hop as updates: ENGB with two-hop
//! walks for every user took 6.3 s and 1.65 GB that way.

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use foldhash::fast::RandomState;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::types::*;
use crate::views::*;

/// A strength or a number of weighted walks. Walks are sums of products of strengths (each a
/// sum of weights within ±2³¹), so they are kept in 128 bits: three hops through hubs of a
/// thousand neighbours with weights in the millions are far beyond an `i64`.
pub type Walk = i128;

/// The largest walk count kept (in either sign): `10^38 − 1` (38 digits, what a ClickHouse
/// `Decimal128` could hold). A sum or product beyond it saturates there, is counted in
/// [`SATURATED`] and logged as an error: it is reported, never wrapped around.
pub const MAX_WALK: Walk = 99_999_999_999_999_999_999_999_999_999_999_999_999;

/// How many walk sums have saturated at [`MAX_WALK`] in this process.
pub static SATURATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `acc += a * b`, saturating at ±[`MAX_WALK`] (and saying so) instead of wrapping.
#[inline]
fn mul_add(acc: &mut Walk, a: Walk, b: Walk) {
    // Factors within 64 bits (nearly all) multiply in one instruction and cannot overflow 128
    // bits; only larger ones take the checked 128-bit multiply (a library call).
    let product = match (i64::try_from(a), i64::try_from(b)) {
        (Ok(a), Ok(b)) => Some(i128::from(a) * i128::from(b)),
        _ => a.checked_mul(b),
    };
    match product.and_then(|p| acc.checked_add(p)).filter(|v| v.abs() <= MAX_WALK) {
        Some(v) => *acc = v,
        None => {
            let positive = if a.signum() * b.signum() != 0 { (a.signum() * b.signum()) > 0 } else { *acc > 0 };
            *acc = if positive { MAX_WALK } else { -MAX_WALK };
            if SATURATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                tracing::error!(
                    "a walk count exceeds 10^38 - 1 and is reported as ±{MAX_WALK}: the reach and top_connections rows \
                     that hold it are not exact"
                );
            }
        }
    }
}

/// A focus user's score of another user: (strength, two-hop walks, three-hop walks).
type Score = (Walk, Walk, Walk);

/// A sparse row: users sorted by id, each with its value, no zeros (a user's strengths, a
/// focus user's walks while they reach fewer than half of the users). Kept as two arrays, so
/// that searches read only the users: 4 bytes an entry where `(u32, i128)` pairs take 32 (a
/// change at a hub searches thousands of entries in dozens of focus users' rows).
#[derive(Clone, Debug, Default, PartialEq)]
struct Row {
    users: Vec<u32>,
    values: Vec<Walk>,
}

impl Row {
    fn with_capacity(capacity: usize) -> Self {
        Row { users: Vec::with_capacity(capacity), values: Vec::with_capacity(capacity) }
    }

    /// From entries sorted by user, without zeros.
    fn from_sorted(entries: impl IntoIterator<Item = (u32, Walk)>) -> Self {
        let (users, values) = entries.into_iter().unzip();
        Row { users, values }
    }

    fn len(&self) -> usize {
        self.users.len()
    }

    fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (u32, Walk)> + '_ {
        self.users.iter().copied().zip(self.values.iter().copied())
    }

    fn push(&mut self, user: u32, value: Walk) {
        self.users.push(user);
        self.values.push(value);
    }

    fn cursor(&self) -> Cursor<'_> {
        Cursor::Sparse { row: self, at: 0 }
    }

    /// Appends `other`'s entries `range`.
    fn extend_from(&mut self, other: &Row, range: std::ops::Range<usize>) {
        self.users.extend_from_slice(&other.users[range.clone()]);
        self.values.extend_from_slice(&other.values[range]);
    }
}

/// A focus user's walks: a sparse [`Row`], or, when it holds at least half of the users, a
/// value per user id, so that a change's updates and lookups index it instead of searching it
/// (on MUSAE DE a three-hop row holds nine tenths of the users; searching those rows, and
/// copying them to insert an entry, was most of a change at a hub).
#[derive(Clone, Debug, PartialEq)]
enum WalkRow {
    Sparse(Row),
    /// `values[u]` for the user ids below its length (0: none; longer ids have none), and how
    /// many of them are not 0.
    Dense {
        values: Vec<Walk>,
        len: usize,
    },
}

impl Default for WalkRow {
    fn default() -> Self {
        WalkRow::Sparse(Row::default())
    }
}

impl WalkRow {
    /// `row` as a walks row over `users` user ids: dense when it holds at least half of them.
    fn new(row: Row, users: usize) -> Self {
        if !row.is_empty() && row.len() * 2 >= users {
            Self::dense(&row)
        } else {
            WalkRow::Sparse(row)
        }
    }

    fn dense(row: &Row) -> Self {
        let mut values = vec![0; row.users.last().map_or(0, |u| *u as usize + 1)];
        for (u, v) in row.iter() {
            values[u as usize] = v;
        }
        WalkRow::Dense { values, len: row.len() }
    }

    fn len(&self) -> usize {
        match self {
            WalkRow::Sparse(row) => row.len(),
            WalkRow::Dense { len, .. } => *len,
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries that are not 0, by user id.
    fn iter(&self) -> WalkIter<'_> {
        match self {
            WalkRow::Sparse(row) => WalkIter::Sparse(row.users.iter().zip(&row.values)),
            WalkRow::Dense { values, .. } => WalkIter::Dense(values.iter().enumerate()),
        }
    }

    fn cursor(&self) -> Cursor<'_> {
        match self {
            WalkRow::Sparse(row) => row.cursor(),
            WalkRow::Dense { values, .. } => Cursor::Dense(values),
        }
    }

    /// The values at `users` (sorted), 0 where absent.
    fn values_at(&self, users: &[u32]) -> Vec<Walk> {
        match self {
            WalkRow::Sparse(row) => values_at(row, users),
            WalkRow::Dense { .. } => {
                let mut cursor = self.cursor();
                users.iter().map(|&u| cursor.at(u)).collect()
            }
        }
    }

    /// Adds `delta` (sorted by user, no zeros) and calls `changed(user, old, new)` for each of
    /// its entries ([`apply_delta`]).
    fn apply_delta(&mut self, delta: &[(u32, Walk)], mut changed: impl FnMut(u32, Walk, Walk)) {
        match self {
            WalkRow::Sparse(row) => apply_delta(row, delta, changed),
            WalkRow::Dense { values, len } => {
                if let Some(&(last, _)) = delta.last() {
                    if last as usize >= values.len() {
                        values.resize(last as usize + 1, 0);
                    }
                }
                // The old values are read first, in a loop of independent loads whose cache
                // misses overlap, rather than one at a time between the calls.
                let olds: Vec<Walk> = delta.iter().map(|&(w, _)| values[w as usize]).collect();
                for (&(w, d), old) in delta.iter().zip(olds) {
                    let new = old + d;
                    values[w as usize] = new;
                    match (old == 0, new == 0) {
                        (true, false) => *len += 1,
                        (false, true) => *len -= 1,
                        _ => {}
                    }
                    changed(w, old, new);
                }
            }
        }
    }
}

/// The entries of a [`WalkRow`] that are not 0, by user id. Its `fold` (so `for_each`,
/// `filter(…).for_each`) runs the row's own loop; an iterator chained over both kinds tested
/// which at every entry (ranking a graph load's rows read 3 M entries).
enum WalkIter<'a> {
    Sparse(std::iter::Zip<std::slice::Iter<'a, u32>, std::slice::Iter<'a, Walk>>),
    Dense(std::iter::Enumerate<std::slice::Iter<'a, Walk>>),
}

impl Iterator for WalkIter<'_> {
    type Item = (u32, Walk);

    #[inline]
    fn next(&mut self) -> Option<(u32, Walk)> {
        match self {
            WalkIter::Sparse(entries) => entries.next().map(|(&u, &v)| (u, v)),
            WalkIter::Dense(values) => values.find(|(_, v)| **v != 0).map(|(u, &v)| (u as u32, v)),
        }
    }

    #[inline]
    fn fold<B, F: FnMut(B, (u32, Walk)) -> B>(self, init: B, mut f: F) -> B {
        match self {
            WalkIter::Sparse(entries) => entries.fold(init, |acc, (&u, &v)| f(acc, (u, v))),
            WalkIter::Dense(values) => {
                values.fold(init, |acc, (u, &v)| if v != 0 { f(acc, (u as u32, v)) } else { acc })
            }
        }
    }
}

/// A dense accumulator of one sparse row at a time over the users: `sums[u]` holds the row's
/// value at `u` when bit `u` of `bits` is set; `touched` lists those users. `finish` clears
/// the bits, so a row starts with none set.
#[derive(Default)]
struct Accumulator {
    sums: Vec<Walk>,
    bits: Vec<u64>,
    touched: Vec<u32>,
}

impl Accumulator {
    /// Room for one more user id.
    fn grow(&mut self) {
        self.sums.push(0);
        if self.sums.len() > self.bits.len() * 64 {
            self.bits.push(0);
        }
    }

    /// Starts a row, all zeros (clearing what a row left unfinished).
    fn begin(&mut self) {
        for &w in &self.touched {
            self.bits[w as usize >> 6] = 0;
        }
        self.touched.clear();
    }

    /// Adds `a · b` at user `w`.
    #[inline]
    fn add(&mut self, w: u32, a: Walk, b: Walk) {
        let i = w as usize;
        let (word, bit) = (&mut self.bits[i >> 6], 1u64 << (w & 63));
        if *word & bit == 0 {
            *word |= bit;
            self.sums[i] = 0;
            self.touched.push(w);
        }
        mul_add(&mut self.sums[i], a, b);
    }

    /// The row's entries that are not 0, in user order: read from the bitmap when it has
    /// fewer words than sorting the touched users would take comparisons (`k · log₂ k`; a
    /// graph load's two-hop rows of hundreds of users over thousands: sorting them was a
    /// twentieth of the load), else from the touched users sorted.
    fn finish(&mut self) -> Row {
        let k = self.touched.len();
        let mut out = Row::with_capacity(k);
        let mut take = |w: u32, sums: &[Walk]| {
            let sum = sums[w as usize];
            if sum != 0 {
                out.push(w, sum);
            }
        };
        if self.bits.len() <= k * (k + 1).ilog2() as usize {
            for (i, word) in self.bits.iter_mut().enumerate() {
                let mut bits = std::mem::take(word);
                while bits != 0 {
                    take((i as u32) << 6 | bits.trailing_zeros(), &self.sums);
                    bits &= bits - 1;
                }
            }
        } else {
            self.touched.sort_unstable();
            for &w in &self.touched {
                self.bits[w as usize >> 6] = 0;
                take(w, &self.sums);
            }
        }
        self.touched.clear();
        out
    }
}

/// A set of users, emptied in constant time: `u` is in it while `marks[u] == stamp`.
#[derive(Default)]
struct Marks {
    marks: Vec<u32>,
    stamp: u32,
}

impl Marks {
    /// Room for one more user id.
    fn grow(&mut self) {
        self.marks.push(0);
    }

    /// Empties the set.
    fn begin(&mut self) {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.marks.fill(0);
            self.stamp = 1;
        }
    }

    #[inline]
    fn mark(&mut self, u: u32) {
        self.marks[u as usize] = self.stamp;
    }

    #[inline]
    fn has(&self, u: u32) -> bool {
        self.marks[u as usize] == self.stamp
    }
}

/// A row's values read at increasing user ids: a sparse row's by a search forward from the
/// last one found ([`seek`]), a dense row's by index.
enum Cursor<'a> {
    Sparse { row: &'a Row, at: usize },
    Dense(&'a [Walk]),
}

impl Cursor<'_> {
    /// The value at `u` (0 where absent); `u` is not below the user asked before.
    #[inline]
    fn at(&mut self, u: u32) -> Walk {
        match self {
            Cursor::Sparse { row, at } => {
                *at = seek(&row.users, *at, u, |v| *v);
                match row.users.get(*at) {
                    Some(&v) if v == u => row.values[*at],
                    _ => 0,
                }
            }
            Cursor::Dense(values) => values.get(u as usize).copied().unwrap_or(0),
        }
    }
}

/// One row of the product `row · A` over the graph's `adjacency`, summed in `acc`, zeros left out.
fn product(acc: &mut Accumulator, adjacency: &[Row], row: &Row) -> Row {
    acc.begin();
    for (v, a) in row.iter() {
        for (w, b) in adjacency[v as usize].iter() {
            acc.add(w, a, b);
        }
    }
    acc.finish()
}

/// Products `a · b` to be summed at `(row, user)`, sorted by 16-byte keys (row, user, index of
/// the factors) instead of as 48-byte products: a change at a hub sorts tens of thousands.
struct Products {
    keys: Vec<u128>,
    factors: Vec<(Walk, Walk)>,
}

impl Products {
    fn with_capacity(capacity: usize) -> Self {
        Products { keys: Vec::with_capacity(capacity), factors: Vec::with_capacity(capacity) }
    }

    fn push(&mut self, row: u32, user: u32, a: Walk, b: Walk) {
        let index = self.factors.len() as u128;
        self.keys.push(u128::from(row) << 96 | u128::from(user) << 64 | index);
        self.factors.push((a, b));
    }

    fn row(key: u128) -> u32 {
        (key >> 96) as u32
    }

    /// (row, user) as one number.
    fn cell(key: u128) -> u64 {
        (key >> 64) as u64
    }

    fn index(key: u128) -> usize {
        key as u64 as usize
    }
}

/// Sparse rows in one vector: each row's entries sorted by user, without zeros, and where each
/// row's entries are. A change at a hub changes thousands of rows of `A²` by an entry or two.
struct SparseRows {
    entries: Vec<(u32, Walk)>,
    rows: HashMap<u32, (usize, usize), RandomState>,
}

impl SparseRows {
    /// The rows of the sums of `products`: each `a · b` added at its `(row, user)`.
    fn sum(products: Products) -> Self {
        let Products { mut keys, factors } = products;
        // The products come in a few runs already in order (each a row of the graph, scattered
        // from a changed pair's end), which a stable sort finds and merges (MUSAE DE's 1,500
        // changes: 483 -> 325 M instructions here); the keys are distinct, so it orders them
        // as any sort would.
        keys.sort();
        let mut entries = Vec::with_capacity(keys.len());
        // Sized at once: a change at a hub changes the rows of thousands of users.
        let distinct = 1 + keys.windows(2).filter(|pair| Products::row(pair[0]) != Products::row(pair[1])).count();
        let mut rows = HashMap::with_capacity_and_hasher(distinct, RandomState::default());
        let mut i = 0;
        while i < keys.len() {
            let (y, start) = (Products::row(keys[i]), entries.len());
            while i < keys.len() && Products::row(keys[i]) == y {
                let (cell, mut sum) = (Products::cell(keys[i]), 0);
                while i < keys.len() && Products::cell(keys[i]) == cell {
                    let (a, b) = factors[Products::index(keys[i])];
                    mul_add(&mut sum, a, b);
                    i += 1;
                }
                if sum != 0 {
                    entries.push((cell as u32, sum));
                }
            }
            if entries.len() > start {
                rows.insert(y, (start, entries.len()));
            }
        }
        SparseRows { entries, rows }
    }

    fn get(&self, row: u32) -> Option<&[(u32, Walk)]> {
        self.rows.get(&row).map(|&(start, end)| &self.entries[start..end])
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &[(u32, Walk)])> {
        self.rows.iter().map(|(&row, &(start, end))| (row, &self.entries[start..end]))
    }
}

/// What a worker emitted for one focus user, to diff the next computation against.
#[derive(Default)]
struct Emitted {
    /// `A²[f]` without `f`.
    walks2: WalkRow,
    /// `A³[f]` without `f` (empty unless three hops).
    walks3: WalkRow,
    /// The best of the others in rank order: the first `top_n` are the `top_connections`
    /// rows, and up to as many again are kept below them ([`Walks::kept`]), so that a shown
    /// user whose score fell can usually be replaced without ranking all of `f`'s rows again.
    /// Every other user ranks after the last one kept, or, when `complete`, has no score.
    top: Vec<(u32, Score)>,
    complete: bool,
}

/// One worker's copy of the graph and its focus users' rows.
struct Walks {
    hops: u32,
    top_n: usize,
    peers: u64,
    index: u64,
    ids: HashMap<Name, u32, RandomState>,
    names: Vec<Name>,
    /// Each name's first eight bytes as a big-endian number (zero-padded): ordered as the
    /// names are wherever they differ, so rankings compare names only when these are equal.
    name_keys: Vec<u64>,
    /// Whether this worker owns the user (its hash falls to this worker).
    owned: Vec<bool>,
    /// Whether the user is a focus user this worker owns.
    focused: Vec<bool>,
    /// The strength graph, both directions, each user's row sorted; strengths are positive.
    adjacency: Vec<Row>,
    /// How many entries `adjacency` holds (twice the pairs).
    entries: usize,
    /// The focus users' multiplicities; `None`: every user is a focus user.
    focus: Option<HashMap<u32, Diff, RandomState>>,
    emitted: HashMap<u32, Emitted, RandomState>,
    /// Sums of one row at a time, over the users.
    acc: Accumulator,
    /// The users of one focus user's kept ranking at a time ([`Self::top_after`]).
    kept_marks: Marks,
}

impl Walks {
    fn id(&mut self, name: &Name) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.clone(), id);
        self.names.push(name.clone());
        self.name_keys.push(name_key(name));
        self.owned.push(name.hashed() % self.peers == self.index);
        self.focused.push(self.owned[id as usize] && self.focus.is_none());
        self.adjacency.push(Row::default());
        self.acc.grow();
        self.kept_marks.grow();
        id
    }

    fn is_focus(&self, user: u32) -> bool {
        self.focused[user as usize]
    }

    /// What a checkpoint keeps: the strength of every pair (once) and the focus users'
    /// multiplicities; the rows are recomputed from them on restore.
    fn save(&self, out: &mut dyn std::io::Write) -> Result<(), bincode::Error> {
        let mut pairs: Vec<(&Name, &Name, Walk)> = Vec::with_capacity(self.entries / 2);
        for (a, list) in self.adjacency.iter().enumerate() {
            for (b, strength) in list.iter().filter(|(b, _)| *b as usize > a) {
                pairs.push((&self.names[a], &self.names[b as usize], strength));
            }
        }
        let focus: Vec<(&Name, Diff)> =
            self.focus.iter().flatten().map(|(user, m)| (&self.names[*user as usize], *m)).collect();
        bincode::serialize_into(out, &(pairs, focus))
    }

    /// Loads what [`Self::save`] kept into this empty state and computes the focus users'
    /// rows, as shown already (nothing is emitted).
    fn restore(&mut self, (pairs, focus): (Vec<(Name, Name, Walk)>, Vec<(Name, Diff)>)) {
        let mut deltas: HashMap<(u32, u32), Diff, RandomState> = HashMap::default();
        for (a, b, strength) in pairs {
            let (a, b) = (self.id(&a), self.id(&b));
            deltas.insert((a, b), Diff::try_from(strength).expect("a strength is a sum of diffs"));
        }
        let focus_changes = focus.into_iter().map(|(user, m)| (self.id(&user), m)).collect();
        let users = self.process(deltas, focus_changes, &mut |_, _| {}, &mut |_, _| {});
        for f in users {
            self.recompute(f, &mut |_, _| {}, &mut |_, _| {});
        }
    }

    /// Adds `delta` to the strength of `a`–`b`, both directions.
    fn add(&mut self, a: u32, b: u32, delta: Walk) {
        for (from, to) in [(a, b), (b, a)] {
            let row = &mut self.adjacency[from as usize];
            match row.users.binary_search(&to) {
                Ok(i) => {
                    row.values[i] += delta;
                    if row.values[i] == 0 {
                        row.users.remove(i);
                        row.values.remove(i);
                        self.entries -= 1;
                    }
                }
                Err(i) => {
                    row.users.insert(i, to);
                    row.values.insert(i, delta);
                    self.entries += 1;
                }
            }
        }
    }

    /// The owned focus users within `hops − 1` steps of `ends` in the current graph.
    fn affected(&mut self, ends: &[u32]) -> Vec<u32> {
        let mut seen = vec![false; self.names.len()];
        let mut frontier: Vec<u32> = Vec::new();
        for &e in ends {
            if !std::mem::replace(&mut seen[e as usize], true) {
                frontier.push(e);
            }
        }
        let mut all = frontier.clone();
        for _ in 1..self.hops {
            let mut next = Vec::new();
            for &u in &frontier {
                for &v in &self.adjacency[u as usize].users {
                    if !std::mem::replace(&mut seen[v as usize], true) {
                        next.push(v);
                    }
                }
            }
            all.extend_from_slice(&next);
            frontier = next;
        }
        all.retain(|&u| self.owned[u as usize]);
        all
    }

    /// One row of the product `row · A`, zeros left out.
    fn times_graph(&mut self, row: &Row) -> Row {
        product(&mut self.acc, &self.adjacency, row)
    }

    /// `A²[u]`, the row of `u`'s strengths times the graph (without copying them first).
    fn two_hops(&mut self, u: u32) -> Row {
        product(&mut self.acc, &self.adjacency, &self.adjacency[u as usize])
    }

    /// How many of a focus user's best others are kept ranked ([`Emitted::top`]).
    fn kept(&self) -> usize {
        self.top_n * 2
    }

    /// `f`'s rows as they are now (empty when `f` is not a focus user).
    fn rows(&mut self, f: u32) -> Emitted {
        if !self.is_focus(f) {
            return Emitted::default();
        }
        let walks2 = self.two_hops(f);
        let walks3 = if self.hops >= 3 { self.times_graph(&walks2) } else { Row::default() };
        // In place: rebuilt by a filter, the rows were copied once more (3 % of a graph's load).
        let without_f = |mut row: Row| {
            if let Ok(i) = row.users.binary_search(&f) {
                row.users.remove(i);
                row.values.remove(i);
            }
            row
        };
        let users = self.names.len();
        let (walks2, walks3) = (WalkRow::new(without_f(walks2), users), WalkRow::new(without_f(walks3), users));

        let top = self.top_of(&self.adjacency[f as usize], &walks2, &walks3, self.kept());
        let complete = top.len() < self.kept();
        Emitted { walks2, walks3, top, complete }
    }

    /// Applies a completed time's changes — `deltas` of strength per pair `(a, b)`, and focus
    /// multiplicity changes — and emits what changed in the owned focus users' rows, except
    /// for the users it returns (sorted): their rows must be recomputed ([`Self::recompute`]),
    /// which the caller spreads over activations.
    ///
    /// A change touching a large part of the graph (a load) recomputes the rows of every
    /// affected user; a small one applies the rows' differences:
    /// `ΔA² = Δ·A' + A·Δ` and `ΔA³ = Δ·A'² + A·ΔA²` (`A` before, `A'` after the change),
    /// each scattered from the changed pairs' ends, so it costs the walks through the change.
    fn process(
        &mut self,
        deltas: HashMap<(u32, u32), Diff, RandomState>,
        focus_changes: HashMap<u32, Diff, RandomState>,
        reach: &mut impl FnMut(Reach, Diff),
        top: &mut impl FnMut(TopConnection, Diff),
    ) -> Vec<u32> {
        let mut delta_rows: HashMap<u32, Vec<(u32, Walk)>, RandomState> = HashMap::default();
        for (&(a, b), &d) in &deltas {
            delta_rows.entry(a).or_default().push((b, d as Walk));
            delta_rows.entry(b).or_default().push((a, d as Walk));
        }
        let full = deltas.len() * 16 >= self.entries.max(1);
        let mut recompute: Vec<u32> = if full {
            let ends: Vec<u32> = delta_rows.keys().copied().collect();
            self.affected(&ends)
        } else {
            Vec::new()
        };
        let old_rows: HashMap<u32, Row, RandomState> = if full {
            HashMap::default()
        } else {
            delta_rows.keys().map(|&e| (e, self.adjacency[e as usize].clone())).collect()
        };
        for (&(a, b), &delta) in &deltas {
            self.add(a, b, delta as Walk);
        }
        if let Some(focus) = self.focus.as_mut() {
            for (&user, &diff) in &focus_changes {
                let m = focus.entry(user).or_insert(0);
                *m += diff;
                self.focused[user as usize] = self.owned[user as usize] && *m > 0;
                if *m == 0 {
                    focus.remove(&user);
                }
                recompute.push(user);
            }
        }
        recompute.sort_unstable();
        recompute.dedup();
        if full {
            return recompute;
        }

        // The rows' differences, for the owned focus users not recomputed above.
        let target = |walks: &Walks, f: u32| walks.is_focus(f) && recompute.binary_search(&f).is_err();
        type Rows = HashMap<u32, HashMap<u32, Walk, RandomState>, RandomState>;
        // Sized at once: grown by doubling, a change at a hub copied its products over and over.
        let size = delta_rows.values().flatten().map(|&(x, _)| self.adjacency[x as usize].len()).sum::<usize>()
            + delta_rows.iter().map(|(x, dx)| old_rows[x].len() * dx.len()).sum::<usize>();
        let mut products = Products::with_capacity(size);
        for (&y, dy) in &delta_rows {
            for &(x, d) in dy {
                self.adjacency[x as usize].iter().for_each(|(w, b)| products.push(y, w, d, b));
            }
        }
        for (&x, dx) in &delta_rows {
            for (y, a) in old_rows[&x].iter() {
                dx.iter().for_each(|&(w, d)| products.push(y, w, a, d));
            }
        }
        let dw2 = SparseRows::sum(products);
        // `ΔA³` per owned focus user, sorted, without zeros.
        let mut dw3: HashMap<u32, Row, RandomState> = HashMap::default();
        if self.hops >= 3 {
            // `Δ·A'²` from the changed pairs' ends, then `A·ΔA²`: scattered from each changed
            // row of A² to its neighbours, or, with few focus users, gathered by each focus
            // user from its neighbours' changed rows into the dense accumulator.
            let few: Option<Vec<u32>> = self.focus.as_ref().and_then(|focus| {
                let mine: Vec<u32> = focus.keys().copied().filter(|&f| target(self, f)).collect();
                (mine.len() < dw2.len()).then_some(mine)
            });
            let ends_of = |walks: &mut Walks, f: u32| -> Vec<(Walk, Row)> {
                let changed = delta_rows.get(&f).filter(|_| target(walks, f)).into_iter().flatten();
                changed.map(|&(x, d)| (d, walks.two_hops(x))).collect()
            };
            match few {
                Some(mine) => {
                    for f in mine {
                        let ends = ends_of(self, f);
                        self.acc.begin();
                        for (d, row) in &ends {
                            for (w, c) in row.iter() {
                                self.acc.add(w, *d, c);
                            }
                        }
                        let row = old_rows.get(&f).unwrap_or(&self.adjacency[f as usize]);
                        for (y, a) in row.iter() {
                            if let Some(dy) = dw2.get(y) {
                                for &(w, d) in dy {
                                    self.acc.add(w, a, d);
                                }
                            }
                        }
                        let out = self.acc.finish();
                        if !out.is_empty() {
                            dw3.insert(f, out);
                        }
                    }
                }
                None => {
                    let mut scattered: Rows = HashMap::default();
                    let mut changed_ends: Vec<u32> = delta_rows.keys().copied().collect();
                    changed_ends.sort_unstable();
                    for f in changed_ends {
                        for (d, row) in ends_of(self, f) {
                            for (w, c) in row.iter() {
                                mul_add(scattered.entry(f).or_default().entry(w).or_insert(0), d, c);
                            }
                        }
                    }
                    for (y, dy) in dw2.iter() {
                        let row = old_rows.get(&y).unwrap_or(&self.adjacency[y as usize]);
                        for (f, a) in row.iter() {
                            if !target(self, f) {
                                continue;
                            }
                            let out = scattered.entry(f).or_default();
                            for &(w, d) in dy {
                                mul_add(out.entry(w).or_insert(0), a, d);
                            }
                        }
                    }
                    for (f, row) in scattered {
                        let mut entries: Vec<(u32, Walk)> = row.into_iter().filter(|(_, d)| *d != 0).collect();
                        entries.sort_unstable();
                        if !entries.is_empty() {
                            dw3.insert(f, Row::from_sorted(entries));
                        }
                    }
                }
            }
        }

        let mut changed: Vec<u32> =
            delta_rows.keys().chain(dw2.rows.keys()).chain(dw3.keys()).copied().filter(|&f| target(self, f)).collect();
        changed.sort_unstable();
        changed.dedup();
        for f in changed {
            let mut rows = self.emitted.remove(&f).unwrap_or_default();
            // Each sized at once (collected through a filter, they grew by doubling).
            let (changed2, changed3) = (dw2.get(f).unwrap_or_default(), dw3.get(&f));
            let mut delta2: Vec<(u32, Walk)> = Vec::with_capacity(changed2.len());
            delta2.extend(changed2.iter().filter(|(w, _)| *w != f));
            let mut delta3: Vec<(u32, Walk)> = Vec::with_capacity(changed3.map_or(0, Row::len));
            delta3.extend(changed3.into_iter().flat_map(Row::iter).filter(|(w, _)| *w != f));
            // The changed users in order, each once: the two deltas (each in user order) merged,
            // then `f`'s own changed neighbours (a few) merged in; sorting them all was 1.4 %
            // of MUSAE DE's 1,500 changes.
            let users = |delta: &[(u32, Walk)]| delta.iter().map(|(w, _)| *w).collect::<Vec<u32>>();
            let mut others = union_sorted(&users(&delta2), &users(&delta3));
            if let Some(own) = delta_rows.get(&f) {
                let mut own: Vec<u32> = own.iter().map(|(u, _)| *u).collect();
                own.sort_unstable();
                own.dedup();
                others = union_sorted(&others, &own);
            }
            for (hops, row, delta) in [(2, &mut rows.walks2, delta2), (3, &mut rows.walks3, delta3)] {
                let names = &self.names;
                row.apply_delta(&delta, |w, old, new| {
                    let row = |walks: Walk| Reach {
                        user: names[f as usize].clone(),
                        other: names[w as usize].clone(),
                        hops,
                        walks,
                    };
                    if old != 0 {
                        reach(row(old), -1);
                    }
                    if new != 0 {
                        reach(row(new), 1);
                    }
                });
            }
            let strengths = &self.adjacency[f as usize];
            let mut marks = std::mem::take(&mut self.kept_marks);
            let after =
                self.top_after(&mut marks, &rows.top, rows.complete, &others, strengths, &rows.walks2, &rows.walks3);
            self.kept_marks = marks;
            if let Some((new_top, complete)) = after {
                self.emit_top_changes(f, &rows.top, &new_top, top);
                rows.top = new_top;
                rows.complete = complete;
            }
            if !(rows.walks2.is_empty() && rows.walks3.is_empty() && rows.top.is_empty()) {
                self.emitted.insert(f, rows);
            }
        }
        recompute
    }

    /// Recomputes `f`'s rows from the graph as it is and emits what changed.
    fn recompute(&mut self, f: u32, reach: &mut impl FnMut(Reach, Diff), top: &mut impl FnMut(TopConnection, Diff)) {
        let new = self.rows(f);
        let old = self.emitted.remove(&f).unwrap_or_default();
        self.emit_changes(f, &old, &new, reach, top);
        if !(new.walks2.is_empty() && new.walks3.is_empty() && new.top.is_empty()) {
            self.emitted.insert(f, new);
        }
    }

    /// The new kept ranking ([`Emitted::top`], and whether it is complete) of a focus user
    /// whose rows changed at `others` (sorted), from the one kept before, or `None` when it
    /// cannot have changed: no changed other is kept or now ranks before the last one kept.
    ///
    /// Every user neither kept nor changed still ranks after the last one kept before (or has
    /// no score), so the kept and changed users that rank before it are certainly the best;
    /// when fewer than `top_n` of them remain, all of the user's rows are ranked again
    /// ([`Self::top_of`]).
    #[allow(clippy::too_many_arguments)]
    fn top_after(
        &self,
        marks: &mut Marks,
        kept: &[(u32, Score)],
        complete: bool,
        others: &[u32],
        strengths: &Row,
        walks2: &WalkRow,
        walks3: &WalkRow,
    ) -> Option<(Vec<(u32, Score)>, bool)> {
        // Every user not kept ranks after `bound` (or, without one, has no score). A changed
        // user can matter only if it is kept or can rank before `bound`: a neighbour if the
        // bound is one, a neighbour or a two-hop user if the bound has two-hop walks. The
        // others' scores are not looked up (a change at a hub changes thousands of a user's
        // three-hop walks). One pass over the changed users (sorted), each row read by a
        // cursor that moves forward, and the kept users marked rather than sorted and searched:
        // at a hub this ran for every focus user and was a sixth of a change.
        let bound = kept.last().filter(|_| !complete).copied();
        marks.begin();
        kept.iter().for_each(|(u, _)| marks.mark(*u));
        let is_kept = |u: &u32| marks.has(*u);
        let (neighbours_only, two_hops_only) = match bound {
            Some((_, (s, w2, _))) => (s > 0, w2 > 0),
            None => (false, false),
        };
        let (mut strength, mut two, mut three) = (strengths.cursor(), walks2.cursor(), walks3.cursor());
        let mut changed: Vec<(u32, Score)> = Vec::with_capacity(others.len());
        for &u in others {
            let s = strength.at(u);
            if neighbours_only && s <= 0 && !is_kept(&u) {
                continue;
            }
            let w2 = two.at(u);
            if two_hops_only && s <= 0 && w2 <= 0 && !is_kept(&u) {
                continue;
            }
            changed.push((u, (s, w2, three.at(u))));
        }
        let before_bound = |entry: &(u32, Score)| match &bound {
            Some(bound) => entry.1 > (0, 0, 0) && self.rank_order(entry, bound).is_le(),
            None => entry.1 > (0, 0, 0),
        };
        if !changed.iter().any(|c| is_kept(&c.0) || before_bound(c)) {
            return None;
        }
        let new_score =
            |u: u32, old: Score| changed.binary_search_by_key(&u, |(v, _)| *v).map_or(old, |i| changed[i].1);
        // Sized at once and filtered as they come (grown, then filtered, they were copied
        // twice at a hub).
        let mut candidates: Vec<(u32, Score)> = Vec::with_capacity(kept.len() + changed.len());
        candidates.extend(kept.iter().map(|&(u, old)| (u, new_score(u, old))).filter(before_bound));
        candidates.extend(changed.iter().filter(|c| !is_kept(&c.0) && before_bound(c)));
        if candidates.len() < self.top_n && bound.is_some() {
            let top = self.top_of(strengths, walks2, walks3, self.kept());
            let complete = top.len() < self.kept();
            return Some((top, complete));
        }
        // Without a bound, the candidates are every user with a score.
        let complete = bound.is_none() && candidates.len() <= self.kept();
        Some((self.best(candidates, self.kept()), complete))
    }

    /// The first `k` of `scores` in rank order, users without a score left out.
    fn best(&self, mut scores: Vec<(u32, Score)>, k: usize) -> Vec<(u32, Score)> {
        scores.retain(|(_, s)| *s > (0, 0, 0));
        let order = |a: &(u32, Score), b: &(u32, Score)| self.rank_order(a, b);
        if scores.len() > k {
            scores.select_nth_unstable_by(k, order);
            scores.truncate(k);
        }
        scores.sort_unstable_by(order);
        scores
    }

    /// The `k` others by score from `f`'s sorted rows (without `f`), rank 1 first.
    ///
    /// Neighbours (strength > 0) rank before every other user, users with two-hop walks before
    /// those with only three-hop walks, so the rows are filled tier by tier, and within a tier
    /// the next component of the score is looked up only for the users tied at the cut.
    fn top_of(&self, strengths: &Row, walks2: &WalkRow, walks3: &WalkRow, k: usize) -> Vec<(u32, Score)> {
        let users = &strengths.users;
        let (two, three) = (walks2.values_at(users), walks3.values_at(users));
        let mut top: Vec<(u32, Score)> =
            strengths.iter().zip(two.into_iter().zip(three)).map(|((u, s), (w2, w3))| (u, (s, w2, w3))).collect();
        if top.len() < k {
            // Each tier reads its row in user order, so whether a user is a neighbour is a
            // cursor moving through the (sorted) neighbours, made afresh for each tier: stepped
            // rather than searched forward, as a row holds far more users than neighbours.
            let not_neighbour = || {
                let mut j = 0;
                move |u: u32| {
                    while users.get(j).is_some_and(|&n| n < u) {
                        j += 1;
                    }
                    users.get(j) != Some(&u)
                }
            };
            // The second tier: users with two-hop walks that are not neighbours.
            let mut outside = not_neighbour();
            let second = walks2.iter().filter(|&(u, w)| w > 0 && outside(u));
            let wanted = k - top.len();
            top.extend(self.best_of_tier(second, wanted, walks3, |w2, w3| (0, w2, w3)));
            if top.len() < k {
                // The third: users with three-hop walks only.
                let in_two = walks2.values_at(&walks3.iter().map(|(u, _)| u).collect::<Vec<_>>());
                let mut outside = not_neighbour();
                let third =
                    walks3.iter().zip(in_two).filter(|&((u, w), w2)| w > 0 && w2 == 0 && outside(u)).map(|(e, _)| e);
                let wanted = k - top.len();
                top.extend(self.best_of_tier(third, wanted, &WalkRow::default(), |w3, _| (0, 0, w3)));
            }
        }
        self.best(top, k)
    }

    /// The best `k` of a tier's `entries` (user, first component of the tier's score; sorted
    /// by user): by that component, then by `next` (a row, looked up only for the entries tied
    /// with the `k`-th), then by name. `score(first, next)` makes the score.
    ///
    /// One pass that keeps the entries not below a running cut, which rises each time they
    /// reach `4k` (or twice what the last selection kept): the `k`-th greatest of those kept
    /// is selected and the rest dropped, so an entry costs one comparison with the cut, and a
    /// selection is paid for by the entries that came since the one before (collecting a
    /// whole tier and selecting in it was a fifth of a graph's load; a sorted buffer of the
    /// `k` greatest was searched and shifted for each entry above its least).
    fn best_of_tier(
        &self,
        entries: impl Iterator<Item = (u32, Walk)>,
        k: usize,
        next: &WalkRow,
        score: impl Fn(Walk, Walk) -> Score,
    ) -> Vec<(u32, Score)> {
        let scored = |entries: Vec<(u32, Walk)>| -> Vec<(u32, Score)> {
            let users: Vec<u32> = entries.iter().map(|(u, _)| *u).collect();
            entries.iter().zip(next.values_at(&users)).map(|(&(u, first), second)| (u, score(first, second))).collect()
        };
        if k == 0 {
            return Vec::new();
        }
        // The `k`-th greatest component of `kept` (which holds more than `k`).
        let kth = |kept: &[(u32, Walk)], values: &mut Vec<Walk>| -> Walk {
            values.clear();
            values.extend(kept.iter().map(|e| e.1));
            *values.select_nth_unstable_by(k - 1, |a, b| b.cmp(a)).1
        };
        // Every entry at or above the cut when it comes is kept, and the cut is always at or
        // below the `k`-th greatest component seen, so the entries at or above the final cut
        // are all among those kept.
        let mut kept: Vec<(u32, Walk)> = Vec::with_capacity(4 * k);
        let mut values: Vec<Walk> = Vec::new();
        let mut cut: Option<Walk> = None;
        // When the next selection is made: at twice what the last one kept if that is more
        // (many entries tied at the cut stay), so the selections stay linear in all.
        let mut limit = 4 * k;
        entries.for_each(|e| {
            if cut.is_some_and(|c| e.1 < c) {
                return;
            }
            kept.push(e);
            if kept.len() >= limit {
                let c = kth(&kept, &mut values);
                kept.retain(|e| e.1 >= c);
                cut = Some(c);
                limit = limit.max(2 * kept.len());
            }
        });
        if kept.len() <= k {
            return scored(kept);
        }
        let cut = kth(&kept, &mut values);
        // Above the cut: certainly among the best. At it: the best `rest` of them by the next
        // component, then by name, ranked as (next component, user) pairs rather than as
        // whole scores (their first components are all the cut).
        let (sure, tied): (Vec<_>, Vec<_>) = kept.into_iter().filter(|e| e.1 >= cut).partition(|e| e.1 > cut);
        let rest = k - sure.len();
        let mut best = scored(sure);
        if tied.len() <= rest {
            best.extend(scored(tied));
            return best;
        }
        let users: Vec<u32> = tied.iter().map(|(u, _)| *u).collect();
        let mut tied: Vec<(Walk, u32)> = next.values_at(&users).into_iter().zip(users).collect();
        tied.select_nth_unstable_by(rest, |a, b| b.0.cmp(&a.0).then_with(|| self.name_order(a.1, b.1)));
        best.extend(tied[..rest].iter().map(|&(second, u)| (u, score(cut, second))));
        best
    }

    /// The order of `top_connections`: the greater score first, ties by the other's name.
    fn rank_order(&self, a: &(u32, Score), b: &(u32, Score)) -> std::cmp::Ordering {
        b.1.cmp(&a.1).then_with(|| self.name_order(a.0, b.0))
    }

    /// The order of users' names (their first eight bytes, then the whole names).
    fn name_order(&self, a: u32, b: u32) -> std::cmp::Ordering {
        self.name_keys[a as usize]
            .cmp(&self.name_keys[b as usize])
            .then_with(|| self.names[a as usize].cmp(&self.names[b as usize]))
    }

    /// Emits what changed from `old` to `new` for focus user `f`.
    fn emit_changes(
        &self,
        f: u32,
        old: &Emitted,
        new: &Emitted,
        reach: &mut impl FnMut(Reach, Diff),
        top: &mut impl FnMut(TopConnection, Diff),
    ) {
        let user = &self.names[f as usize];
        for (hops, before, after) in [(2, &old.walks2, &new.walks2), (3, &old.walks3, &new.walks3)] {
            let row = |other: u32, walks: Walk| Reach {
                user: user.clone(),
                other: self.names[other as usize].clone(),
                hops,
                walks,
            };
            merge_rows(before.iter(), after.iter(), |other, was, is| {
                if was != 0 {
                    reach(row(other, was), -1);
                }
                if is != 0 {
                    reach(row(other, is), 1);
                }
            });
        }
        self.emit_top_changes(f, &old.top, &new.top, top);
    }

    /// Emits the ranks whose `top_connections` row differs between the first `top_n` of `old`
    /// and of `new` (kept rankings, [`Emitted::top`]).
    fn emit_top_changes(
        &self,
        f: u32,
        old: &[(u32, Score)],
        new: &[(u32, Score)],
        top: &mut impl FnMut(TopConnection, Diff),
    ) {
        let (old, new) = (&old[..old.len().min(self.top_n)], &new[..new.len().min(self.top_n)]);
        let user = &self.names[f as usize];
        let row = |rank: usize, (other, (strength, walks2, walks3)): (u32, Score)| TopConnection {
            user: user.clone(),
            rank: rank as u32 + 1,
            other: self.names[other as usize].clone(),
            // A strength is a sum of i64 weights, so it fits.
            strength: strength as i64,
            walks2,
            walks3,
        };
        for rank in 0..old.len().max(new.len()) {
            let (was, is) = (old.get(rank), new.get(rank));
            if was != is {
                if let Some(was) = was {
                    top(row(rank, *was), -1);
                }
                if let Some(is) = is {
                    top(row(rank, *is), 1);
                }
            }
        }
    }
}

/// The first eight bytes of `name` as a big-endian number, zero-padded. Where two names'
/// keys differ they order as the names do: a byte that differs within the first eight decides
/// both, and a name that ends within them is a prefix of the other (less) unless the other
/// goes on with zero bytes, which gives equal keys.
fn name_key(name: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let n = name.len().min(8);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    u64::from_be_bytes(bytes)
}

/// The first index at or after `from` whose user (`user(item)`) is not below `u` in `items`
/// (sorted by user): an exponential search forward, then a binary search within the last
/// step, so a pass over sorted users costs O(m log(n / m)) whether they are few or many.
fn seek<I>(items: &[I], from: usize, u: u32, user: impl Fn(&I) -> u32) -> usize {
    let (mut lo, mut hi, mut step) = (from, from, 1);
    while hi < items.len() && user(&items[hi]) < u {
        lo = hi + 1;
        hi += step;
        step *= 2;
    }
    let hi = hi.min(items.len());
    lo + items[lo..hi].partition_point(|item| user(item) < u)
}

/// The users of `a` and of `b` (each sorted, without repeats) in order, each once.
fn union_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    debug_assert!(a.is_sorted() && b.is_sorted());
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        out.push(x.min(y));
        i += usize::from(x <= y);
        j += usize::from(y <= x);
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The values of `row` (sorted by user) at `users` (sorted), 0 where absent; the shorter list
/// is walked and the longer one searched.
fn values_at(row: &Row, users: &[u32]) -> Vec<Walk> {
    if row.len() < users.len() {
        let mut out = vec![0; users.len()];
        let mut j = 0;
        for (v, value) in row.iter() {
            j = seek(users, j, v, |u| *u);
            match users.get(j) {
                Some(&u) if u == v => out[j] = value,
                Some(_) => {}
                None => break,
            }
        }
        return out;
    }
    let mut cursor = row.cursor();
    users.iter().map(|&u| cursor.at(u)).collect()
}

/// Adds `delta` (sorted by user, no zeros) to `row`, dropping entries that reach 0, and calls
/// `changed(user, old, new)` for each entry of `delta`. A few changes to values already in the
/// row are made in place; otherwise the row is merged with `delta` in one pass.
fn apply_delta(row: &mut Row, delta: &[(u32, Walk)], mut changed: impl FnMut(u32, Walk, Walk)) {
    if delta.len() * 64 < row.len() {
        // Each search starts where the last one ended (`delta` is sorted): a gallop over the
        // gap rather than a binary search of the whole row. An entry to insert or remove moves
        // the row's tail, so one of those sends the whole delta to the merge below.
        let mut at = Vec::with_capacity(delta.len());
        let mut from = 0;
        for &(w, d) in delta {
            let i = seek(&row.users, from, w, |u| *u);
            if i == row.len() || row.users[i] != w || row.values[i] + d == 0 {
                break;
            }
            at.push(i);
            from = i + 1;
        }
        if at.len() == delta.len() {
            for (&(w, d), i) in delta.iter().zip(at) {
                let old = row.values[i];
                row.values[i] += d;
                changed(w, old, old + d);
            }
            return;
        }
    }
    let mut merged = Row::with_capacity(row.len() + delta.len());
    let mut i = 0;
    for &(w, d) in delta {
        let next = seek(&row.users, i, w, |u| *u);
        merged.extend_from(row, i..next);
        i = next;
        let old = if i < row.len() && row.users[i] == w {
            i += 1;
            row.values[i - 1]
        } else {
            0
        };
        changed(w, old, old + d);
        if old + d != 0 {
            merged.push(w, old + d);
        }
    }
    merged.extend_from(row, i..row.len());
    *row = merged;
}

/// Calls `changed(user, old, new)` for every user whose value differs between two rows'
/// entries (by user id, no zeros; zero where absent).
fn merge_rows(
    old: impl Iterator<Item = (u32, Walk)>,
    new: impl Iterator<Item = (u32, Walk)>,
    mut changed: impl FnMut(u32, Walk, Walk),
) {
    let (mut old, mut new) = (old.peekable(), new.peekable());
    loop {
        match (old.peek().copied(), new.peek().copied()) {
            (Some((a, x)), Some((b, y))) if a == b => {
                if x != y {
                    changed(a, x, y);
                }
                old.next();
                new.next();
            }
            (Some((a, x)), Some((b, _))) if a < b => {
                changed(a, x, 0);
                old.next();
            }
            (Some((a, x)), None) => {
                changed(a, x, 0);
                old.next();
            }
            (_, Some((b, y))) => {
                changed(b, 0, y);
                new.next();
            }
            (None, None) => break,
        }
    }
}

/// A time's input: strength rows and focus users with their diffs.
type Pending<T> = BTreeMap<T, PendingTime<T>>;
/// One time's capabilities (reach, top_connections) and input: strength rows, focus users.
type PendingTime<T> = (Capability<T>, Capability<T>, Vec<((Hashed<(Name, Name)>, Diff), Diff)>, Vec<(Name, Diff)>);

/// How many `reach` rows the walks operator emits per activation before it yields: few enough
/// that the sink encodes them while they are still in the cache (with 100,000, 9.6 MB of rows
/// waited in the channel, and writing them into fresh containers and reading them back missed
/// the caches: the ENGB load 0.46 -> 0.43 s with 2,048).
const ROWS_PER_ACTIVATION: usize = 2048;

/// A completed time whose users' rows are being recomputed, a slice per activation: its
/// capabilities, the users (sorted) and the next one.
struct Recomputing<T: Timestamp> {
    time: T,
    reach_cap: Capability<T>,
    top_cap: Capability<T>,
    users: Vec<u32>,
    next: usize,
}

/// `time`'s entry of `pending`, made with capabilities for both outputs when new.
fn pending_at<'p, T: Timestamp>(
    pending: &'p mut Pending<T>,
    cap: &InputCapability<T>,
    time: T,
) -> &'p mut PendingTime<T> {
    pending.entry(time).or_insert_with_key(|t| (cap.delayed(t, 0), cap.delayed(t, 1), Vec::new(), Vec::new()))
}

/// returns `(reach, top_connections)` of the `strengths` rows (`((a, b), strength)`, `a < b`,
/// strength > 0) for the users of `focus` (every user of the graph if `None`): walks of up to
/// `hops` (2 or 3) steps weighted by the product of the strengths, and per focus user the
/// `top_n` others by (strength, walks2, walks3), ties by name.
pub fn walk_views<'s, T>(
    strengths: VecCollection<'s, T, (Hashed<(Name, Name)>, Diff)>,
    focus: Option<VecCollection<'s, T, Name>>,
    hops: u32,
    top_n: usize,
) -> (VecCollection<'s, T, Reach>, VecCollection<'s, T, TopConnection>)
where
    T: Timestamp + TotalOrder,
{
    let scope = strengths.inner.scope();
    let (peers, index) = (scope.peers() as u64, scope.index() as u64);
    let graph = strengths.inner.broadcast();
    let whole_graph = focus.is_none();
    let focus = match focus {
        Some(focus) => focus.inner,
        None => timely::dataflow::operators::generic::operator::empty(scope),
    };

    let mut builder = OperatorBuilder::new("Walks".to_owned(), scope);
    let mut graph_in = builder.new_input(graph, Pipeline);
    let mut focus_in = builder.new_input(focus, Exchange::new(|(user, _, _): &(Name, T, Diff)| user.hashed()));
    let (reach_out, reach) = builder.new_output();
    let (top_out, top) = builder.new_output();
    let mut reach_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<(Reach, T, Diff)>>>::from(reach_out);
    let mut top_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<(TopConnection, T, Diff)>>>::from(top_out);
    let activator = scope.activator_for(builder.operator_info().address);

    let fresh = move || Walks {
        hops,
        top_n,
        peers,
        index,
        ids: HashMap::default(),
        names: Vec::new(),
        name_keys: Vec::new(),
        owned: Vec::new(),
        focused: Vec::new(),
        adjacency: Vec::new(),
        entries: 0,
        focus: (!whole_graph).then(HashMap::default),
        emitted: HashMap::default(),
        acc: Accumulator::default(),
        kept_marks: Marks::default(),
    };
    let walks = crate::checkpoint::keep_with("Walks", fresh(), Walks::save, |reader| {
        let mut walks = fresh();
        walks.restore(bincode::deserialize_from(reader)?);
        Ok(walks)
    });

    builder.build(move |initial| {
        drop(initial);
        let mut pending: Pending<T> = BTreeMap::new();
        let mut recomputing: Option<Recomputing<T>> = None;
        move |frontiers| {
            graph_in.for_each_stamp(|cap, containers| {
                for container in containers {
                    for (row, time, diff) in container.drain(..) {
                        pending_at(&mut pending, &cap, time).2.push((row, diff));
                    }
                }
            });
            focus_in.for_each_stamp(|cap, containers| {
                for container in containers {
                    for (user, time, diff) in container.drain(..) {
                        pending_at(&mut pending, &cap, time).3.push((user, diff));
                    }
                }
            });
            let mut reach_out = reach_out.activate();
            let mut top_out = top_out.activate();
            let walks = &mut *walks.borrow_mut();
            loop {
                if let Some(job) = recomputing.as_mut() {
                    // At most `ROWS_PER_ACTIVATION` rows leave per activation, so that a load's
                    // millions of rows reach the sink (which encodes them as they come) in
                    // slices rather than all waiting in the channel at once.
                    let budget = std::cell::Cell::new(ROWS_PER_ACTIVATION);
                    {
                        let mut reach_session = reach_out.session(&job.reach_cap);
                        let mut top_session = top_out.session(&job.top_cap);
                        while budget.get() > 0 && job.next < job.users.len() {
                            let f = job.users[job.next];
                            job.next += 1;
                            walks.recompute(
                                f,
                                &mut |row, diff| {
                                    budget.set(budget.get().saturating_sub(1));
                                    reach_session.give((row, job.time.clone(), diff))
                                },
                                &mut |row, diff| top_session.give((row, job.time.clone(), diff)),
                            );
                        }
                    }
                    if job.next < job.users.len() {
                        activator.activate();
                        return;
                    }
                    recomputing = None;
                }
                let Some(entry) = pending.first_entry() else { break };
                if frontiers.iter().any(|f| f.less_equal(entry.key())) {
                    break;
                }
                let (time, (reach_cap, top_cap, rows, users)) = entry.remove_entry();
                let mut deltas: HashMap<(u32, u32), Diff, RandomState> = HashMap::default();
                for ((pair, strength), diff) in rows {
                    let (a, b) = (walks.id(&pair.key.0), walks.id(&pair.key.1));
                    *deltas.entry((a, b)).or_insert(0) += strength * diff;
                }
                deltas.retain(|_, d| *d != 0);
                let mut focus_changes: HashMap<u32, Diff, RandomState> = HashMap::default();
                for (user, diff) in users {
                    let id = walks.id(&user);
                    *focus_changes.entry(id).or_insert(0) += diff;
                }
                let users = {
                    let mut reach_session = reach_out.session(&reach_cap);
                    let mut top_session = top_out.session(&top_cap);
                    walks.process(
                        deltas,
                        focus_changes,
                        &mut |row, diff| reach_session.give((row, time.clone(), diff)),
                        &mut |row, diff| top_session.give((row, time.clone(), diff)),
                    )
                };
                recomputing = Some(Recomputing { time, reach_cap, top_cap, users, next: 0 });
            }
        }
    });

    (reach.as_collection(), top.as_collection())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn walk_sums_saturate_and_are_counted_instead_of_wrapping() {
        let mut acc: Walk = 0;
        mul_add(&mut acc, 1 << 62, 1 << 62);
        assert_eq!(acc, 1 << 124);
        let before = SATURATED.load(std::sync::atomic::Ordering::Relaxed);
        mul_add(&mut acc, 1 << 100, 1 << 100);
        assert_eq!(acc, MAX_WALK);
        mul_add(&mut acc, -(1 << 100), 1 << 100);
        assert_eq!(acc, -MAX_WALK);
        assert!(SATURATED.load(std::sync::atomic::Ordering::Relaxed) >= before + 2);
        assert_eq!(MAX_WALK.to_string(), "9".repeat(38));
    }

    /// A user (an index into the users) and two factors.
    fn products() -> impl Strategy<Value = (prop::sample::Index, Walk, Walk)> {
        (any::<prop::sample::Index>(), -3 as Walk..4, 1 as Walk..3)
    }

    /// A sorted row without zeros (user, value), from arbitrary pairs.
    fn row_strategy(users: u32, len: usize) -> impl Strategy<Value = Vec<(u32, Walk)>> {
        prop::collection::btree_map(0..users, prop_oneof![-5 as Walk..0, 1 as Walk..5], 0..len)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// Both ways of finishing a row (the bitmap read in order, the touched users sorted)
        /// equal a map of the sums, over few users and over many, also after a row that was
        /// begun and never finished.
        #[test]
        fn accumulator_rows_equal_a_map(
            users in prop_oneof![1u32..64, 64u32..5000],
            rows in prop::collection::vec(prop::collection::vec(products(), 0..300), 1..4),
            unfinished in prop::collection::vec(any::<prop::sample::Index>(), 0..50),
        ) {
            let mut acc = Accumulator::default();
            (0..users).for_each(|_| acc.grow());
            acc.begin();
            for u in &unfinished {
                acc.add(u.index(users as usize) as u32, 7, 7);
            }
            for row in rows {
                acc.begin();
                let mut expected: BTreeMap<u32, Walk> = BTreeMap::new();
                for (u, a, b) in row {
                    let u = u.index(users as usize) as u32;
                    acc.add(u, a, b);
                    *expected.entry(u).or_default() += a * b;
                }
                expected.retain(|_, v| *v != 0);
                let got = acc.finish();
                prop_assert_eq!(got.iter().collect::<Vec<_>>(), expected.into_iter().collect::<Vec<_>>());
            }
        }

        /// Different keys order as the names do (names with zero bytes and shared prefixes
        /// included).
        #[test]
        fn name_keys_order_as_names(a in "[ab\\x00]{0,10}", b in "[ab\\x00]{0,10}") {
            let (ka, kb) = (name_key(&a), name_key(&b));
            if ka != kb {
                prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            }
        }

        #[test]
        fn union_sorted_is_the_set_union(
            a in prop::collection::btree_set(0u32..400, 0..300),
            b in prop::collection::btree_set(0u32..400, 0..300),
        ) {
            let expected: Vec<u32> = a.union(&b).copied().collect();
            let (a, b): (Vec<u32>, Vec<u32>) = (a.into_iter().collect(), b.into_iter().collect());
            prop_assert_eq!(union_sorted(&a, &b), expected);
        }

        #[test]
        fn seek_is_the_partition_point(
            items in prop::collection::btree_set(0u32..400, 0..300),
            from in 0usize..300,
            u in 0u32..420,
        ) {
            let items: Vec<u32> = items.into_iter().collect();
            let from = from.min(items.len());
            let expected = from + items[from..].partition_point(|v| *v < u);
            prop_assert_eq!(seek(&items, from, u, |v| *v), expected);
        }

        /// Both ways of walking (the row shorter than the users and the other way round).
        #[test]
        fn values_at_and_cursors_equal_lookups(
            row in row_strategy(300, 200),
            users in prop::collection::btree_set(0u32..300, 0..200),
        ) {
            let users: Vec<u32> = users.into_iter().collect();
            let expected: Vec<Walk> = users
                .iter()
                .map(|u| row.binary_search_by_key(u, |(v, _)| *v).map_or(0, |i| row[i].1))
                .collect();
            let row = Row::from_sorted(row);
            prop_assert_eq!(values_at(&row, &users), expected.clone());
            prop_assert_eq!(WalkRow::dense(&row).values_at(&users), expected.clone());
            // Cursors, over the same increasing users, sparse and dense.
            let (mut sparse, dense) = (row.cursor(), WalkRow::dense(&row));
            let mut dense = dense.cursor();
            prop_assert_eq!(users.iter().map(|&u| sparse.at(u)).collect::<Vec<_>>(), expected.clone());
            prop_assert_eq!(users.iter().map(|&u| dense.at(u)).collect::<Vec<_>>(), expected);
        }

        /// Both paths of a sparse row (a few changes into a long row, in place, and many,
        /// merged), and a dense row.
        #[test]
        fn apply_delta_equals_a_map(
            row in row_strategy(2000, 1500),
            delta in row_strategy(2000, 40),
            cancel in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            // Some changes cancel an entry of the row exactly.
            let mut delta: BTreeMap<u32, Walk> = delta.into_iter().collect();
            if !row.is_empty() {
                for i in cancel {
                    let (u, v) = row[i.index(row.len())];
                    delta.insert(u, -v);
                }
            }
            let delta: Vec<(u32, Walk)> = delta.into_iter().collect();
            let mut expected: BTreeMap<u32, Walk> = row.iter().copied().collect();
            let mut expected_calls = Vec::new();
            for &(w, d) in &delta {
                let old = expected.get(&w).copied().unwrap_or(0);
                expected_calls.push((w, old, old + d));
                if old + d == 0 {
                    expected.remove(&w);
                } else {
                    expected.insert(w, old + d);
                }
            }
            let expected: Vec<(u32, Walk)> = expected.into_iter().collect();
            let row = Row::from_sorted(row);
            for mut actual in [WalkRow::Sparse(row.clone()), WalkRow::dense(&row)] {
                let mut calls = Vec::new();
                actual.apply_delta(&delta, |w, old, new| calls.push((w, old, new)));
                prop_assert_eq!(actual.iter().collect::<Vec<_>>(), expected.clone());
                prop_assert_eq!(actual.len(), expected.len());
                prop_assert_eq!(calls, expected_calls.clone());
            }
        }
    }
}
