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

use crate::operators::total_by_key;
use crate::walks::walk_views;
use crate::types::*;
use crate::views::*;

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
    T: Timestamp + TotalOrder,
{
    let strengths = strengths(edges);
    exporter.export(strengths.clone().map(|(pair, strength)| Connection {
        user_a: pair.key.0,
        user_b: pair.key.1,
        strength: strength as i64,
    }));

    let (reach, top_connections) = walk_views(strengths, focus, config.hops, config.top_n);
    exporter.export(reach);
    exporter.export(top_connections);
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
