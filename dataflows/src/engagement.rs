//! The `engagement` view of DESIGN.md ("Engagement"): per channel and chat window, the chat
//! messages and the latest viewer count.
//!
//! ```text
//!  message windows ─► (channel, window): (1, 0, 0) ───────────────────────────────┐
//!  viewers ─► ((channel, window), (ts, viewers)) ─► Greatest ─► (0, viewers, 1) ───┴─► Count ─► engagement
//! ```
//!
//! The window's viewer event with the greatest `ts` (ties: the greatest count) is kept per key;
//! a change of it retracts the old count and adds the new one, so one running total per key
//! holds (messages, latest viewers, whether there is a viewer event) and a row exists for every
//! window with a message or a viewer event.

use std::hash::Hash;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::Map;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::horizon::{window_end_ms, Horizon};
use crate::operators::{extreme_by_key, total_by_key};
use crate::symbol::Symbol;
use crate::types::*;
use crate::views::*;

/// returns `engagement` of the chat messages per `(channel, window_start)` (their sizes per
/// batch, as [`crate::chat::chat_views`] returns them) and `viewers`, with windows of
/// `window_secs`.
pub fn engagement<'s, T>(
    window_sizes: VecCollection<'s, T, crate::chat::Window, crate::chat::Sizes>,
    viewers: VecCollection<'s, T, Viewers>,
    window_secs: i64,
    horizon: Option<&Horizon<T>>,
) -> VecCollection<'s, T, Engagement>
where
    T: Timestamp + TotalOrder + Hash,
{
    let messages = window_sizes
        .inner
        .flat_map(|(window, time, (messages, _, _))| {
            (messages != 0).then_some((window, time, (messages, 0 as Diff, 0 as Diff)))
        })
        .as_collection();
    let counts = viewers
        .map(move |v| (Hashed::new((Symbol::intern(&v.channel), window_start(v.ts, window_secs))), (v.ts, v.viewers)));
    let end = move |key: &crate::chat::Window| window_end_ms(key.key.1, window_secs);
    let name = "Greatest: window viewers";
    let latest = extreme_by_key(counts, true, name, horizon.map(|h| h.expiry(name, end)))
        .explode(|(key, (_ts, viewers))| Some((key, (0 as Diff, viewers as Diff, 1 as Diff))));
    let all = messages.concat(latest);
    // A row is (messages, latest viewers) of a key whose total is not zero; a change that
    // leaves the row as it was (a first viewer event of count 0) emits nothing.
    let row = |(messages, viewers, present): &(Diff, Diff, Diff)| {
        (*messages != 0 || *present != 0).then_some((*messages as i64, *viewers as i64))
    };
    let name = "Count: engagement";
    total_by_key(all, name, horizon.map(|h| h.expiry(name, end)), move |key: &crate::chat::Window, old, new, emit| {
        let (before, after) = (row(old), row(new));
        if before == after {
            return;
        }
        let (channel, window_start) = &key.key;
        let engagement = |(messages, viewers)| Engagement {
            channel: Name::from(channel.as_str()),
            window_start: *window_start,
            messages,
            viewers,
        };
        if let Some(old) = before {
            emit(engagement(old), -1);
        }
        if let Some(new) = after {
            emit(engagement(new), 1);
        }
    })
}
