//! The network views of DESIGN.md: `connections`, `reach` and `top_connections`, from weighted
//! edge events that add and delete.
//!
//! ```text
//!  edges (src, dst), diff ±weight ─► pair (a < b), self-loops out ─► Strength: positive part of the total ─┬─► connections
//!                                                                                                         │
//!  focus (or every user of the graph) ──────────────────────────────────────────────────────────► Walks ─┴─► reach, top_connections
//! ```
//!
//! `connections` is a running total per pair. Deleting more weight than a pair has leaves it
//! absent (strength ≤ 0), and adding it back later counts from the true total, so the result
//! never depends on the arrival order. The walks (`reach`: the entries of A² and A³ of the
//! symmetric strength matrix A for each focus user; `top_connections`: a ranking by
//! (strength, walks2, walks3)) are computed in `walks`, as rows of a sparse product over a
//! copy of the graph on every worker, updated by the product's differences when edges change.

use differential_dataflow::VecCollection;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::operators::total_by_key;
use crate::types::*;
use crate::views::*;
use crate::walks::walk_views;

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
    total_by_key(pairs, "Strength", None, |pair, old: &Diff, new: &Diff, emit| {
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
