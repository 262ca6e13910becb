//! The network views of DESIGN.md: `connections`, `reach` and `top_connections`, from weighted
//! edge events that add and delete.
//!
//! ```text
//!  edges (src, dst), diff ±weight ─► pair (a < b), self-loops out ─► Strength: positive part of the total ─► connections
//!                                                                        │
//!                       A: (u, v) with multiplicity A[u][v] (both directions) ─► Arrange: strength graph ─┐
//!                                                                                                        │ (shared)
//!  focus (or every user of A) ─► Arrange: focus ─► join A ─► W1 (v, f): A[f][v] ─► Arrange: walks 1 ─► join A ─► W2 (w, f): A²[f][w]
//!                                                                                        W2 ─► Arrange: walks 2 ─► join A ─► W3 (x, f): A³[f][x]
//!  W2, W3 ─► Count per (f, other), f ≠ other ─► reach
//!  W1 (1,0,0) + W2 (0,1,0) + W3 (0,0,1) ─► TopK by (strength, walks2, walks3) ─► top_connections
//! ```
//!
//! The strength matrix is a collection whose *multiplicities* are the strengths, so a join
//! multiplies strengths and differential's consolidation sums over the middle user: each hop
//! is one `join_core` against the one shared arrangement of the graph, and a changed edge
//! updates only the walks through it. Deleting more weight than a pair has leaves it absent
//! (strength ≤ 0), and adding it back later counts from the true total, so the result never
//! depends on the arrival order.

use differential_dataflow::VecCollection;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::operators::{count_by_key, distinct_by_key, top_k, total_by_key};
use crate::types::*;
use crate::views::*;
use differential_dataflow::lattice::Lattice;

/// Parameters of the network views.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The longest walks `reach` reports: 2 or 3.
    pub hops: u32,
    /// How many rows `top_connections` keeps per focus user.
    pub top_n: usize,
}

/// computes the network views of `edges` — `(src, dst)` records whose diff is the event's
/// weight, negated for a `del` — for the users in `focus` (every user of the graph if `None`),
/// each a collection of rows with multiplicity 0 or 1, and hands them to `exporter`.
pub fn network_views<'s, T>(
    edges: VecCollection<'s, T, (Name, Name)>,
    focus: Option<VecCollection<'s, T, Name>>,
    config: &NetworkConfig,
    exporter: &mut impl Exporter<'s, T>,
) where
    T: Timestamp + Lattice + TotalOrder,
{
    let strengths = strengths(edges);
    exporter.export(strengths.clone().map(|(pair, strength)| Connection {
        user_a: pair.key.0,
        user_b: pair.key.1,
        strength: strength as i64,
    }));

    let graph = strength_graph(strengths);
    let focus = match focus {
        Some(focus) => distinct_by_key(focus, "Distinct: focus"),
        None => distinct_by_key(graph.clone().map(|(u, _)| u), "Distinct: users"),
    };

    // One arrangement of the graph, keyed by the walk's current user, joined at every hop.
    let graph = graph.arrange_by_key_named("Arrange: strength graph");
    let walks1 = focus
        .map(|f| (f, ()))
        .arrange_by_key_named("Arrange: focus")
        .join_core(graph.clone(), |f, _, v| Some((v.clone(), f.clone())));
    let walks2 = walks1
        .clone()
        .arrange_by_key_named("Arrange: walks 1")
        .join_core(graph.clone(), |_v, f, w| Some((w.clone(), f.clone())));

    let mut reach = walk_counts(walks2.clone(), 2);
    let mut scores = walks1
        .explode(|(v, f)| Some(((f, v), (1 as Diff, 0 as Diff, 0 as Diff))))
        .concat(walks2.clone().filter(|(w, f)| w != f).explode(|(w, f)| Some(((f, w), (0, 1 as Diff, 0)))));
    if config.hops >= 3 {
        let walks3 =
            walks2.arrange_by_key_named("Arrange: walks 2").join_core(graph, |_w, f, x| Some((x.clone(), f.clone())));
        reach = reach.concat(walk_counts(walks3.clone(), 3));
        scores = scores.concat(walks3.filter(|(x, f)| x != f).explode(|(x, f)| Some(((f, x), (0, 0, 1 as Diff)))));
    }

    exporter.export(reach);
    exporter.export(top_k(scores, config.top_n, "TopK: top_connections").map(
        |(user, rank, other, (strength, walks2, walks3))| TopConnection {
            user,
            rank,
            other,
            strength: strength as i64,
            walks2: walks2 as i64,
            walks3: walks3 as i64,
        },
    ));
}

/// returns `((a, b), strength)` with `a < b`: the positive part of the total weight of the
/// pair's edges in either direction; self-loops are ignored.
pub fn strengths<'s, T>(edges: VecCollection<'s, T, (Name, Name)>) -> VecCollection<'s, T, (Hashed<(Name, Name)>, Diff)>
where
    T: Timestamp + TotalOrder,
{
    let pairs = edges
        .filter(|(src, dst)| src != dst)
        .map(|(src, dst)| Hashed::new(if src < dst { (src, dst) } else { (dst, src) }));
    total_by_key(pairs, "Strength", |pair, old: &Diff, new: &Diff, emit| {
        let (old, new) = ((*old).max(0), (*new).max(0));
        if old != new {
            if old > 0 {
                emit((pair.clone(), old), -1);
            }
            if new > 0 {
                emit((pair.clone(), new), 1);
            }
        }
    })
}

/// returns the symmetric strength matrix: `(u, v)` with multiplicity `A[u][v]`.
fn strength_graph<'s, T>(
    strengths: VecCollection<'s, T, (Hashed<(Name, Name)>, Diff)>,
) -> VecCollection<'s, T, (Name, Name)>
where
    T: Timestamp,
{
    strengths.explode(|(pair, strength)| {
        let (a, b) = pair.key;
        [((a.clone(), b.clone()), strength), ((b, a), strength)]
    })
}

/// returns `reach` rows of `hops` from walks `(other, user)` whose multiplicity is the number
/// of weighted walks; a user's walks back to itself are not reported.
fn walk_counts<'s, T>(walks: VecCollection<'s, T, (Name, Name)>, hops: u32) -> VecCollection<'s, T, Reach>
where
    T: Timestamp + TotalOrder,
{
    let pairs = walks.filter(|(other, user)| other != user).map(|(other, user)| Hashed::new((user, other)));
    count_by_key(pairs, &format!("Count: reach {hops}")).map(move |(pair, walks)| Reach {
        user: pair.key.0,
        other: pair.key.1,
        hops,
        walks: walks as i64,
    })
}

/// returns `(author, mentioned)` once per `@name` in a chat message's text: a word of
/// ASCII letters, digits and `_` right after `@`, lowercased as Twitch logins are. A message
/// mentioning its own author adds nothing (a self-loop).
pub fn mention_edges<'s, T>(chats: VecCollection<'s, T, Chat>) -> VecCollection<'s, T, (Name, Name)>
where
    T: Timestamp,
{
    chats.flat_map(|chat| mentions(&chat.text).into_iter().map(move |name| (chat.user.clone(), name)))
}

/// The names mentioned in `text` (`@name`), in order.
pub fn mentions(text: &str) -> Vec<Name> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = bytes[i..].iter().position(|&b| b == b'@') {
        let start = i + at + 1;
        let end = start + bytes[start..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
        if end > start {
            out.push(Name::from(text[start..end].to_ascii_lowercase()));
        }
        i = end.max(start);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn mention_names() {
        assert_eq!(mentions("@Bob hi @al_1, @ x@y @@z"), ["bob", "al_1", "y", "z"]);
        assert!(mentions("no mentions, e-mail at example").is_empty());
        // A login starts right after `@` with an ASCII letter, digit or `_`.
        assert!(mentions("ünï @Çé @é2").is_empty());
    }
}
