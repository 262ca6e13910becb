//! The post views of DESIGN.md ("Posts"): `place_activity` and `top_retweeted`.
//!
//! ```text
//!  posts ─► (id, canonical copy) ─► Least ─┬─► (place, window): (1, retweet?) ─► Count ─► place_activity
//!                                          └─► (retweet_of, id) ─► TopK over one group ─► top_retweeted
//! ```
//!
//! A post id counts once: of its copies (re-deliveries, the same tweet in two collections) the
//! least by `ts`, then `user`, `text`, `place`, `retweet_of` in byte order (absent = empty)
//! stands for it, whatever order they arrive in. A late or re-delivered copy that is less
//! than the standing one moves the post to its window; nothing else changes.

use std::hash::Hash;

use differential_dataflow::VecCollection;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::horizon::{window_end_ms, Horizon};
use crate::operators::{by_pair, count_by_key, extreme_by_key, preaggregate, top_k};
use crate::types::*;
use crate::views::*;

/// Parameters of the post views.
#[derive(Clone, Debug)]
pub struct PostConfig {
    /// Tumbling window of `place_activity`, in seconds (DESIGN.md: 300).
    pub window_secs: i64,
    /// Rows of `top_retweeted`.
    pub top_k: usize,
}

/// A post's copy in the order that picks the one standing for its id:
/// (ts, user, text, place, retweet_of), absent fields as empty strings.
type Copy = (i64, Name, String, String, String);

/// Computes every post view of `posts` and hands it to `exporter`.
/// With a `horizon`, sealed windows' counts are dropped.
pub fn post_views<'s, T>(
    posts: VecCollection<'s, T, Post>,
    config: &PostConfig,
    horizon: Option<&Horizon<T>>,
    exporter: &mut impl Exporter<'s, T>,
) where
    T: Timestamp + TotalOrder + Hash,
{
    let copies = posts.map(|p| {
        let copy: Copy = (p.ts, p.user, p.text, p.place.unwrap_or_default(), p.retweet_of.unwrap_or_default());
        (p.id, copy)
    });
    // Every id's copies are kept, all-time: a copy arriving later must count once.
    let unique = extreme_by_key(copies, false, "Least: post copies", None);
    exporter.export(place_activity(unique.clone(), config.window_secs, horizon));
    exporter.export(top_retweeted(unique, config.top_k));
}

/// returns `place_activity`: per (place, window) the posts with that place and how many of
/// them are retweets.
fn place_activity<'s, T>(
    unique: VecCollection<'s, T, (String, Copy)>,
    window_secs: i64,
    horizon: Option<&Horizon<T>>,
) -> VecCollection<'s, T, PlaceActivity>
where
    T: Timestamp + TotalOrder + Hash,
{
    let counted = unique.explode(move |(_id, (ts, _user, _text, place, retweet_of))| {
        (!place.is_empty()).then(|| {
            let retweet = !retweet_of.is_empty() as Diff;
            (Hashed::new((place, window_start(ts, window_secs))), (1 as Diff, retweet))
        })
    });
    let name = "Count: place_activity";
    let expiry =
        horizon.map(|h| h.expiry(name, move |key: &Hashed<(String, i64)>| window_end_ms(key.key.1, window_secs)));
    count_by_key(preaggregate(counted, "Preaggregate: place windows"), name, expiry).map(
        |(Hashed { key: (place, window_start), .. }, (posts, retweets))| PlaceActivity {
            place,
            window_start,
            posts: posts as i64,
            retweets: retweets as i64,
        },
    )
}

/// returns `top_retweeted`: the `k` post ids retweeted by the most distinct posts, ties by id.
fn top_retweeted<'s, T>(unique: VecCollection<'s, T, (String, Copy)>, k: usize) -> VecCollection<'s, T, TopRetweeted>
where
    T: Timestamp + TotalOrder + Hash,
{
    let retweeted =
        unique.flat_map(|(_id, (_, _, _, _, retweet_of))| (!retweet_of.is_empty()).then_some(((), retweet_of)));
    top_k(preaggregate(retweeted, "Preaggregate: retweets"), by_pair(), k, "TopK: top_retweeted")
        .map(|((), rank, post_id, retweets)| TopRetweeted { rank, post_id, retweets: retweets as i64 })
}
