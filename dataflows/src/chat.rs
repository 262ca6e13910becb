//! The chat views of DESIGN.md: `word_counts`, `channel_activity`, `user_counts`, `top_words`
//! and `top_users`, from a collection of chat messages.
//!
//! ```text
//!  chats ─► SplitMessages ─┬─ words ══(channel, word)══► Count + TopK ─┬──────────────► word_counts
//!                          │  (channel, window, word)                  └─► merge ─► top_words
//!                          └─ messages ─┬─► (channel, window): (1, #words, 0) ─────────┐
//!     ((channel, window, user), #words) ├─► (channel, window, user) ─► Distinct ─► (0, 0, 1) ─┴─► Count ─► channel_activity
//!                                       └─► (channel, user) ══(channel, user)══► Count + TopK ─┬─────────► user_counts
//!                                                                                              └─► merge ─► top_users
//! ```
//!
//! Every count is a running total per key (see `operators`): a late message changes the rows
//! of its own window and the all-time counts, nothing else. `Preaggregate` merges each
//! worker's updates of a batch before they are exchanged.
//!
//! `══(key)══` is one exchange (`partition`): each (channel, word) goes to one worker, where
//! one operator (`count_and_top_k`) sums a time's occurrences once for both its windowed counts
//! and its all-time score, and each (channel, user) likewise, its count being its score. Each
//! worker ranks its own items per channel and the channel's owner merges the workers' best `k`
//! (`top_k`).
//!
//! Channels, words and users travel as [`Symbol`]s (8-byte ids of a process-wide table, see
//! `symbol`), interned in `SplitMessages` (a channel and a user per message, a word as it
//! leaves its window's batch); their text is read back only by the sinks and by rankings
//! breaking a tie.

use std::collections::HashMap;
use std::hash::Hash;

use differential_dataflow::Hashable;
use differential_dataflow::{AsCollection, VecCollection};
use hashbrown::HashTable;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::horizon::{window_end_ms, Expiry, Horizon};
use crate::operators::{count_and_top_k, count_by_key, distinct_by_group, partition, preaggregate, Counted};
use crate::symbol::{text_hash, Interner, Symbol};
use crate::types::*;
use crate::views::*;
use crate::words::Splitter;

/// Parameters of the chat views.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Tumbling window length in seconds.
    pub window_secs: i64,
    /// How many rows `top_words` and `top_users` keep per channel.
    pub top_k: usize,
}

/// A channel, interned once per message: state keyed by channel or window compares and hashes
/// 8 bytes instead of its name.
pub type Channel = Symbol;
/// (channel, window_start): the group of the windowed counts (its hash is cheap to take: the
/// channel's hash and the window's start).
pub type Window = Hashed<(Channel, i64)>;
/// ((channel, window_start), word)
type WordKey = (Window, Symbol);
/// ((channel, window_start), user)
type MessageKey = (Window, Symbol);
/// Per window: (messages, words, chatters), summed as one difference.
pub type Sizes = (Diff, Diff, Diff);

/// computes every chat view of `chats` (each a collection of rows with multiplicity 0 or 1)
/// and hands it to `exporter`; returns the messages and words per `(channel, window_start)`
/// (summed per batch, chatters 0), for views of other inputs that count messages per window
/// (engagement) without reading `chats` again.
///
/// With a `horizon`, the windowed totals (word counts, chatters, window sizes) forget sealed
/// windows; the all-time ones keep everything.
pub fn chat_views<'s, T>(
    chats: VecCollection<'s, T, Chat>,
    config: &ChatConfig,
    horizon: Option<&Horizon<T>>,
    exporter: &mut impl Exporter<'s, T>,
) -> VecCollection<'s, T, Window, Sizes>
where
    T: Timestamp + TotalOrder + Hash,
{
    let window_secs = config.window_secs;
    let expiry =
        |name: &str| horizon.map(|h| h.expiry(name, move |window: &Window| window_end_ms(window.key.1, window_secs)));
    let (words, messages, sizes) = split_messages(chats, config.window_secs);
    // Each (channel, word) and (channel, user) goes to one worker, once, for both its total
    // and its ranking.
    let words = partition(words, |(window, word): &WordKey| (&window.key.0, word).hashed());
    let users = partition(channel_users(messages.clone()), |pair: &(Channel, Symbol)| pair.hashed());
    let (word_counts, top_words) = word_counts_and_top_words(words, expiry("Count: word_counts"), config.top_k);
    exporter.export(word_counts);
    exporter.export(channel_activity(
        messages,
        sizes.clone(),
        expiry("Distinct: window chatters"),
        expiry("Count: channel_activity"),
    ));
    let (user_counts, top_users) = user_counts_and_top_users(users, config.top_k);
    exporter.export(user_counts);
    exporter.export(top_words);
    exporter.export(top_users);
    sizes
}

/// returns `(words, messages, sizes)`: `(channel, window_start, word)` with a diff of its
/// number of occurrences, `((channel, window_start, user), number of words)` once per message,
/// and per `(channel, window_start)` its messages and words (chatters 0) as a [`Sizes`] diff.
///
/// One operator with three outputs, so each message's text is split once and never cloned;
/// the word occurrences and window sizes of each received batch are summed before they leave
/// (pre-aggregation: the sizes are a few rows per batch, not one per message).
#[allow(clippy::type_complexity)]
pub fn split_messages<'s, T: Timestamp + Hash>(
    chats: VecCollection<'s, T, Chat>,
    window_secs: i64,
) -> (VecCollection<'s, T, WordKey>, VecCollection<'s, T, (MessageKey, usize)>, VecCollection<'s, T, Window, Sizes>) {
    let mut builder = OperatorBuilder::new("SplitMessages".to_owned(), chats.inner.scope());
    let mut input = builder.new_input(chats.inner, Pipeline);
    let (words_out, words) = builder.new_output();
    let (messages_out, messages) = builder.new_output();
    let (sizes_out, sizes) = builder.new_output();
    let mut words_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<(WordKey, T, Diff)>>>::from(words_out);
    let mut messages_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<((MessageKey, usize), T, Diff)>>>::from(messages_out);
    let mut sizes_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<(Window, T, Sizes)>>>::from(sizes_out);

    builder.build(move |initial| {
        drop(initial);
        let mut splitter = Splitter::default();
        // One cache for words, one for users, one for channels: each probe then searches a
        // smaller table.
        let (mut word_symbols, mut user_symbols) = (Interner::default(), Interner::default());
        let mut channel_symbols = Interner::default();
        // A batch's word occurrences, summed per (window, time) and then per word: a message
        // finds its window's table once, and a word is probed with the borrowed text and its
        // hash (a `Name` is built only for a word new to the table). Words are interned as
        // they leave, once per window and batch: the interner's cache holds the whole
        // vocabulary and a probe of it often misses the CPU caches, where the batch's table
        // (the words of one window's batch) stays in them.
        let mut slots: HashMap<(Window, T), usize, foldhash::fast::RandomState> = HashMap::default();
        let mut tables: Vec<WindowWords<T>> = Vec::new();
        // Emptied word maps of earlier batches, reused with their allocations.
        let mut spare: Vec<WordSums> = Vec::new();
        move |_frontiers| {
            let mut words_out = words_out.activate();
            let mut messages_out = messages_out.activate();
            let mut sizes_out = sizes_out.activate();
            input.for_each_stamp(|cap, containers| {
                let mut words_session = words_out.session(&cap);
                let mut messages_session = messages_out.session(&cap);
                let mut sizes_session = sizes_out.session(&cap);
                for container in containers {
                    for (chat, time, diff) in container.drain(..) {
                        let channel = channel_symbols.intern(&chat.channel);
                        let window = Hashed::new((channel, window_start(chat.ts, window_secs)));
                        let slot = *slots.entry((window.clone(), time.clone())).or_insert_with_key(|(w, t)| {
                            tables.push(WindowWords {
                                window: w.clone(),
                                time: t.clone(),
                                words: spare.pop().unwrap_or_default(),
                                messages: 0,
                                word_count: 0,
                            });
                            tables.len() - 1
                        });
                        let table = &mut tables[slot];
                        let words = &mut table.words;
                        let mut count = 0;
                        splitter.split(&chat.text, |word| {
                            count += 1;
                            let hash = text_hash(word);
                            match words.find_mut(hash, |(w, _, _)| w == word) {
                                Some((_, _, sum)) => *sum += diff,
                                None => {
                                    words.insert_unique(hash, (Name::from(word), hash, diff), |(_, h, _)| *h);
                                }
                            }
                        });
                        table.messages += diff;
                        table.word_count += count as Diff * diff;
                        let key = (window, user_symbols.intern(&chat.user));
                        messages_session.give(((key, count), time, diff));
                    }
                }
                slots.clear();
                for table in tables.drain(..) {
                    let WindowWords { window, time, mut words, messages, word_count } = table;
                    if messages != 0 || word_count != 0 {
                        sizes_session.give((window.clone(), time.clone(), (messages, word_count, 0)));
                    }
                    for (word, hash, diff) in words.drain() {
                        if diff != 0 {
                            let word = word_symbols.intern_hashed(&word, hash);
                            words_session.give(((window.clone(), word), time.clone(), diff));
                        }
                    }
                    if spare.len() < 64 {
                        spare.push(words);
                    }
                }
            });
        }
    });

    (words.as_collection(), messages.as_collection(), sizes.as_collection())
}

/// Occurrences per word, with the word's [`text_hash`].
type WordSums = HashTable<(Name, u64, Diff)>;

/// One window's word occurrences in a batch of messages at one time, summed per word, and
/// its messages and words.
struct WindowWords<T> {
    window: Window,
    time: T,
    words: WordSums,
    messages: Diff,
    word_count: Diff,
}

/// returns `word_counts` (per (channel, window, word) the number of occurrences) and
/// `top_words` (per channel the `k` most frequent words of all time), from one sum of each
/// time's words.
fn word_counts_and_top_words<'s, T>(
    words: VecCollection<'s, T, WordKey>,
    expiry: Option<Expiry<T, Window>>,
    k: usize,
) -> (VecCollection<'s, T, WordCount>, VecCollection<'s, T, TopWord>)
where
    T: Timestamp + TotalOrder + Hash,
{
    let (counts, top) = count_and_top_k(
        words,
        ["Count: word_counts", "TopK: top_words"],
        Counted::Windows(expiry),
        |window: &Window| window.key.0,
        |window: &Window, word: &Symbol, count| WordCount {
            channel: window.key.0,
            window_start: window.key.1,
            word: *word,
            count: count as i64,
        },
        k,
    );
    (counts, top.map(|(channel, rank, word, count)| TopWord { channel, rank, word, count: count as i64 }))
}

/// returns `(channel, user)` once per message.
fn channel_users<'s, T>(messages: VecCollection<'s, T, (MessageKey, usize)>) -> VecCollection<'s, T, (Channel, Symbol)>
where
    T: Timestamp + Hash,
{
    preaggregate(messages.map(|((window, user), _)| (window.key.0, user)), "Preaggregate: channel users")
}

/// returns `user_counts` (per (channel, user) the number of messages of all time) and
/// `top_users` (per channel the `k` users with the most messages), from one total per
/// (channel, user).
fn user_counts_and_top_users<'s, T>(
    users: VecCollection<'s, T, (Channel, Symbol)>,
    k: usize,
) -> (VecCollection<'s, T, UserCount>, VecCollection<'s, T, TopUser>)
where
    T: Timestamp + TotalOrder + Hash,
{
    let (counts, top) = count_and_top_k(
        users,
        ["Count: user_counts", "TopK: top_users"],
        Counted::Scores,
        |channel: &Channel| *channel,
        |channel: &Channel, user: &Symbol, messages| UserCount {
            channel: *channel,
            user: *user,
            messages: messages as i64,
        },
        k,
    );
    (counts, top.map(|(channel, rank, user, messages)| TopUser { channel, rank, user, messages: messages as i64 }))
}

/// returns `channel_activity`: per (channel, window) the messages, words and distinct chatters.
///
/// Messages and words come summed per window and batch from the splitter, chatters from the
/// distinct (channel, window, user) triples; one total over the triple difference
/// (messages, words, chatters) puts them in one row without a join.
fn channel_activity<'s, T>(
    messages: VecCollection<'s, T, (MessageKey, usize)>,
    sizes: VecCollection<'s, T, Window, Sizes>,
    chatters_expiry: Option<Expiry<T, Window>>,
    expiry: Option<Expiry<T, Window>>,
) -> VecCollection<'s, T, ChannelActivity>
where
    T: Timestamp + TotalOrder + Hash,
{
    let chatters = distinct_by_group(
        preaggregate(messages.map(|(key, _)| key), "Preaggregate: window chatters"),
        "Distinct: window chatters",
        chatters_expiry,
    )
    .explode(|(window, _)| Some((window, (0 as Diff, 0 as Diff, 1 as Diff))));
    count_by_key(sizes.concat(chatters), "Count: channel_activity", expiry).map(
        |(Hashed { key: (channel, window_start), .. }, (messages, words, chatters))| ChannelActivity {
            channel,
            window_start,
            messages: messages as i64,
            words: words as i64,
            chatters: chatters as i64,
        },
    )
}
