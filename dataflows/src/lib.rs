//! chatflow's computations: collections in, collections out.
//!
//! Nothing in this crate reads Kafka, files or ClickHouse; it turns differential collections of
//! events into the collections of the views defined in DESIGN.md. Every function is generic
//! over the timestamp, so the same code serves replays (one time per batch of lines) and live
//! streams, and tests can drive it with any time assignment.

pub mod chat;
pub mod checkpoint;
pub mod engagement;
pub mod horizon;
pub mod network;
pub mod operators;
pub mod posts;
pub mod sentiment;
pub mod symbol;
pub mod types;
pub mod views;
pub mod walks;
pub mod words;

pub use symbol::Symbol;
pub use types::*;
pub use views::*;

use std::hash::Hash;

use differential_dataflow::lattice::Lattice;
use differential_dataflow::{AsCollection, VecCollection};
use timely::order::TotalOrder;
use timely::progress::Timestamp;

/// The input collections every view is computed from.
pub struct Inputs<'s, T: Timestamp> {
    pub chats: VecCollection<'s, T, Chat>,
    pub posts: VecCollection<'s, T, Post>,
    pub viewers: VecCollection<'s, T, Viewers>,
    /// `(src, dst)` with the event's weight as diff, negated for a `del`.
    pub edges: VecCollection<'s, T, (Name, Name)>,
    /// Users for `reach` and `top_connections`; `None`: every user of the graph.
    pub focus: Option<VecCollection<'s, T, Name>>,
    pub dead_letters: VecCollection<'s, T, DeadLetter>,
    /// Per time, the greatest `ts` of a worker's events at that time (any number of records
    /// per time; the greatest counts): the watermark's input (see `horizon`). Read only with
    /// a retention horizon.
    pub stamps: VecCollection<'s, T, i64>,
}

/// Parameters of every view.
#[derive(Clone, Debug)]
pub struct Config {
    pub chat: chat::ChatConfig,
    pub network: network::NetworkConfig,
    /// Chat `@name` mentions add edges.
    pub mention_edges: bool,
    pub posts: posts::PostConfig,
    /// The lexica of the `sentiment` view; `None`: the view is off (empty).
    pub sentiment: Option<std::sync::Arc<sentiment::Lexica>>,
    /// `--retention`: seal windows that far behind the watermark (see `horizon`); `None`:
    /// keep every window.
    pub retention: Option<horizon::Retention>,
}

/// Builds every view of the catalog from `inputs` and hands each to `exporter` by its name.
/// Returns this worker's retention horizon, if there is one (what its windowed operators hold).
pub fn all_views<'s, T>(
    inputs: Inputs<'s, T>,
    config: &Config,
    exporter: &mut impl Exporter<'s, T>,
) -> Option<std::rc::Rc<horizon::Horizon<T>>>
where
    T: Timestamp + Lattice + TotalOrder + Hash,
{
    let window = config.chat.window_secs;
    let Inputs { mut chats, mut posts, mut viewers, mut edges, focus, dead_letters, stamps } = inputs;
    // Late events leave before anything counts them: they change nothing.
    let sealer = config.retention.as_ref().map(|retention| horizon::Sealer::new(stamps, retention));
    let late = match &sealer {
        Some(sealer) => {
            let (open_chats, late_chats) = sealer.seal(chats, window);
            let (open_posts, late_posts) = sealer.seal(posts, config.posts.window_secs);
            let (open_viewers, late_viewers) = sealer.seal(viewers, window);
            (chats, posts, viewers) = (open_chats, open_posts, open_viewers);
            late_chats.concat(late_posts).concat(late_viewers)
        }
        None => timely::dataflow::operators::generic::operator::empty(chats.inner.scope()).as_collection(),
    };
    let horizon = sealer.as_ref().map(|s| &*s.horizon);
    if config.mention_edges {
        edges = edges.concat(network::mention_edges(chats.clone()));
    }
    // Each extra consumer of `chats` costs a copy of every message, text included: sentiment
    // reads them only when it is on, and engagement counts the windows the chat views split.
    let sentiment = match &config.sentiment {
        Some(lexica) => sentiment::sentiment(chats.clone(), lexica.clone(), window, horizon),
        None => timely::dataflow::operators::generic::operator::empty(chats.inner.scope()).as_collection(),
    };
    exporter.export(sentiment);
    let windows = chat::chat_views(chats, &config.chat, horizon, exporter);
    exporter.export(engagement::engagement(windows, viewers, window, horizon));
    network::network_views(edges, focus, &config.network, exporter);
    posts::post_views(posts, &config.posts, horizon, exporter);
    exporter.export(late);
    exporter.export(dead_letters);
    sealer.map(|s| s.horizon)
}
