//! The types that cross workers: events in (view rows are declared in `views`), with serde so
//! they travel as bincode.

use std::hash::{BuildHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

/// The difference type of every collection: a signed multiplicity.
pub type Diff = isize;

/// A short string: channel, user and word names. Up to 24 bytes live inline, so the clones
/// arrangements make while merging batches do not allocate.
pub type Name = compact_str::CompactString;

/// A key with its hash in front. Arrangements order and search keys by the hash first, so a
/// seek compares integers and reads the key's bytes only to confirm a match; exchanges route
/// by the same hash. The hash is fixed-seeded, identical in every process of a run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hashed<K> {
    hash: u64,
    pub key: K,
}

/// The fixed-seeded hash [`Hashed`] and symbols keep: the same in every process
/// of a run.
pub fn fixed_hash<K: Hash>(key: &K) -> u64 {
    foldhash::quality::FixedState::with_seed(0x6368_6174_666c_6f77).hash_one(key)
}

impl<K: Hash> Hashed<K> {
    pub fn new(key: K) -> Self {
        Hashed { hash: fixed_hash(&key), key }
    }
}

impl<K> Hash for Hashed<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Where an event was read, for its `late_events` row: its source (an index into the run's
/// list of inputs, the same in every worker and process) and its position there: a line of a
/// file (`partition` −1, `offset` the 1-based line number) or a Kafka record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub source: u32,
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for Origin {
    /// As dead letters write positions: the line number, or `partition:offset`.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.partition < 0 {
            write!(f, "{}", self.offset)
        } else {
            write!(f, "{}:{}", self.partition, self.offset)
        }
    }
}

/// A chat message: `{"ts", "channel", "user", "text"}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Chat {
    /// Event time, milliseconds since the Unix epoch (data: it picks the window).
    pub ts: i64,
    pub channel: Name,
    pub user: Name,
    pub text: String,
    pub origin: Origin,
}

/// Whether an edge event adds or takes away weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EdgeOp {
    Add,
    Del,
}

/// An interaction between two users: `{"ts", "src", "dst", "weight", "op"}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Edge {
    pub ts: i64,
    pub src: Name,
    pub dst: Name,
    pub weight: i64,
    pub op: EdgeOp,
}

/// A post or retweet with a place: `{"ts", "id", "user", "text", "place", "retweet_of"}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Post {
    pub ts: i64,
    pub id: String,
    pub user: Name,
    pub text: String,
    pub place: Option<String>,
    pub retweet_of: Option<String>,
    pub origin: Origin,
}

/// A viewer count of a channel: `{"ts", "channel", "viewers"}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Viewers {
    pub ts: i64,
    pub channel: Name,
    pub viewers: i64,
    pub origin: Origin,
}

/// The tumbling window an event time falls in: `floor(ts / 1000 / w) * w`, seconds since the
/// epoch (floor also for times before 1970).
pub fn window_start(ts_ms: i64, window_secs: i64) -> i64 {
    ts_ms.div_euclid(1000).div_euclid(window_secs) * window_secs
}
