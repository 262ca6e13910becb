//! Interned strings: a channel, user or word of the chat views as an 8-byte id instead of its text.
//!
//! The chat views move every word of every message through two exchanges, a per-window total
//! and an all-time top-K, and a word's text (a 24-byte inline string beside a 64-bit hash)
//! made every probe of those maps compare bytes and every entry 40 bytes wide. A [`Symbol`] is
//! the word's number in one process-wide table plus 32 bits of the text's fixed-seeded hash:
//! equal by number, hashed by the text's hash, ordered by the text (so rankings that break
//! ties by the word still do), and written as its text by every sink.
//!
//! ## Across processes
//!
//! Numbers are given in the order words are first seen, so they differ between the processes
//! of a cluster. That is why a symbol hashes by its text's hash (exchanges route it to the
//! same worker in every process) and serializes as its text: a symbol sent to another process
//! arrives as text and is interned there.
//!
//! ## The table
//!
//! Texts are appended to a lock-free vector ([`boxcar`]), so reading a symbol's text is an
//! index with no lock (texts of up to 24 bytes are stored in it inline); a text → number map behind a mutex is consulted only when a worker's
//! own cache ([`Interner`]) does not know the text yet. A text is never removed: the table
//! grows with the vocabulary (which grows far slower than the messages), and holds each word
//! once however many windows and channels it is counted in.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{LazyLock, Mutex};

use hashbrown::HashTable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::types::Name;

/// An interned string (see the module doc).
#[derive(Clone, Copy)]
pub struct Symbol {
    id: u32,
    hash: u32,
}

/// The process-wide table. A text of up to 24 bytes is stored in the vector itself, so the
/// texts of the words seen first (the frequent ones) lie side by side; `ids` borrows them
/// (the vector never moves an element).
struct Table {
    texts: boxcar::Vec<Name>,
    ids: Mutex<HashMap<&'static str, Symbol, foldhash::fast::RandomState>>,
}

static TABLE: LazyLock<Table> =
    LazyLock::new(|| Table { texts: boxcar::Vec::new(), ids: Mutex::new(HashMap::default()) });

/// The fixed-seeded hash of a text: the same in every process (a symbol keeps 32 bits of it).
pub fn text_hash(text: &str) -> u64 {
    crate::types::fixed_hash(&text)
}

impl Symbol {
    /// The symbol of `text`, from the process-wide table (locks it; a worker that interns
    /// many texts keeps an [`Interner`]).
    pub fn intern(text: &str) -> Symbol {
        Self::intern_hashed(text, text_hash(text))
    }

    fn intern_hashed(text: &str, hash: u64) -> Symbol {
        let mut ids = TABLE.ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(symbol) = ids.get(text) {
            return *symbol;
        }
        let id = TABLE.texts.push(Name::from(text));
        let symbol = Symbol { id: u32::try_from(id).expect("fewer than 2³² distinct words"), hash: hash as u32 };
        ids.insert(symbol.as_str(), symbol);
        symbol
    }

    /// The text.
    pub fn as_str(&self) -> &'static str {
        TABLE.texts[self.id as usize].as_str()
    }
}

/// A worker's cache of the table: interning a text it has seen before takes one probe of its
/// own map, with no lock. Texts of up to 24 bytes are kept in the map itself, so a probe reads
/// one place in memory.
#[derive(Default)]
pub struct Interner {
    known: HashTable<(Name, Symbol)>,
}

impl Interner {
    /// The symbol of `text`.
    pub fn intern(&mut self, text: &str) -> Symbol {
        self.intern_hashed(text, text_hash(text))
    }

    /// The symbol of `text`, whose [`text_hash`] is `hash`.
    pub fn intern_hashed(&mut self, text: &str, hash: u64) -> Symbol {
        debug_assert_eq!(hash, text_hash(text));
        if let Some((_, symbol)) = self.known.find(hash, |(t, _)| t == text) {
            return *symbol;
        }
        let symbol = Symbol::intern_hashed(text, hash);
        self.known.insert_unique(hash, (Name::from(text), symbol), |(t, _)| text_hash(t));
        symbol
    }
}

impl PartialEq for Symbol {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Symbol {}

impl Hash for Symbol {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u32(self.hash);
    }
}

impl Ord for Symbol {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.id == other.id {
            return std::cmp::Ordering::Equal;
        }
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Symbol {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for Symbol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Symbol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Symbol {
    fn from(text: &str) -> Self {
        Symbol::intern(text)
    }
}

impl Serialize for Symbol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

thread_local! {
    /// The cache of the thread that decodes symbols arriving from other processes.
    static ARRIVALS: RefCell<Interner> = RefCell::default();
}

impl<'de> Deserialize<'de> for Symbol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Symbol;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, text: &str) -> Result<Symbol, E> {
                Ok(ARRIVALS.with(|cache| cache.borrow_mut().intern(text)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn one_text_one_symbol_across_threads_and_caches() {
        let texts: Vec<String> = (0..2000).map(|i| format!("w{}", i % 700)).collect();
        let interned: Vec<Vec<Symbol>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut cache = Interner::default();
                        texts.iter().map(|t| cache.intern(t)).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for symbols in &interned {
            assert_eq!(symbols, &interned[0]);
            for (symbol, text) in symbols.iter().zip(&texts) {
                assert_eq!(symbol.as_str(), text);
                assert_eq!(*symbol, Symbol::intern(text));
            }
        }
    }

    #[test]
    fn ordered_by_text_hashed_by_text() {
        // Interned in the reverse of their order: numbers do not decide.
        let (b, a) = (Symbol::intern("zz-order-b"), Symbol::intern("zz-order-a"));
        assert!(a < b, "ordered by text");
        assert!(b > a, "ordered by text, the other way");
        assert!(a == Symbol::intern("zz-order-a"));
        let hash = |s: &Symbol| foldhash::quality::FixedState::with_seed(1).hash_one(s);
        assert_eq!(hash(&a), hash(&Symbol::from("zz-order-a")));
        assert_eq!(a.hash, text_hash("zz-order-a") as u32);
    }

    #[test]
    fn travels_as_its_text() {
        let symbol = Symbol::intern("пример🔥");
        let bytes = bincode::serialize(&symbol).unwrap();
        assert_eq!(bincode::serialize("пример🔥").unwrap(), bytes);
        assert_eq!(bincode::deserialize::<Symbol>(&bytes).unwrap(), symbol);
    }
}
