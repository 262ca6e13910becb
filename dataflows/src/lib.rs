//! chatflow's computations: collections in, collections out.
//!
//! Nothing in this crate reads Kafka, files or ClickHouse; it turns differential collections of
//! events into the collections of the views defined in DESIGN.md. Every function is generic
//! over the timestamp, so the same code serves replays (one time per batch of lines) and live
//! streams, and tests can drive it with any time assignment.

pub mod chat;
pub mod engagement;
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
}

/// Builds every view of the catalog from `inputs` and hands each to `exporter` by its name.
pub fn all_views<'s, T>(inputs: Inputs<'s, T>, config: &Config, exporter: &mut impl Exporter<'s, T>)
where
    T: Timestamp + Lattice + TotalOrder + Hash,
{
    let mut edges = inputs.edges;
    if config.mention_edges {
        edges = edges.concat(network::mention_edges(inputs.chats.clone()));
    }
    let window = config.chat.window_secs;
    // Each extra consumer of `chats` costs a copy of every message, text included: sentiment
    // reads them only when it is on, and engagement counts the windows the chat views split.
    let sentiment = match &config.sentiment {
        Some(lexica) => sentiment::sentiment(inputs.chats.clone(), lexica.clone(), window),
        None => timely::dataflow::operators::generic::operator::empty(inputs.chats.inner.scope()).as_collection(),
    };
    exporter.export(sentiment);
    let windows = chat::chat_views(inputs.chats, &config.chat, exporter);
    exporter.export(engagement::engagement(windows, inputs.viewers, window));
    network::network_views(edges, inputs.focus, &config.network, exporter);
    posts::post_views(inputs.posts, &config.posts, exporter);
    exporter.export(inputs.dead_letters);
}
