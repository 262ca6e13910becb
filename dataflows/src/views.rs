//! The view catalog: every view's name, columns, column types and filterable columns, declared
//! once together with its row type (the `views!` block at the end of this file).
//!
//! Everything that names a view reads it from here: the CSV sink (file name, header, row
//! encoding), the ClickHouse sink (DDL, inserts), `chatflow query` (columns, filters, types),
//! the CLI help, and the tests' row encoding. A row type knows its view ([`ViewRow::DEF`]), so
//! a view reaches a sink by its name through [`Exporter::export`], never by a position that
//! another list must match. [`check_catalog`] checks what the declarations promise.
//!
//! Adding a view: declare it below (name, row fields in column order, filters), compute it in
//! `chat`, `network` or a module of its own, export it from that module's `export_to`, give the
//! test oracle its rule and the README its row.

use std::collections::BTreeSet;

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::progress::Timestamp;

use crate::types::Name;
use crate::Symbol;

/// A column's type: text (CSV text, ClickHouse `String`, JSON string), a signed integer
/// (ClickHouse `Int64`, JSON number), or a wide one that may exceed 64 bits (walk counts, up to
/// `10^38 − 1`, never negative: in ClickHouse a `String` of its digits, ordered by length then
/// text; a JSON number within ±2⁶³ and a string beyond).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ColumnType {
    Text,
    Int,
    Wide,
}

/// One column of a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    /// The reader's filter that matches this column (`channel`, `user`, …), if any. A row
    /// passes a filter when any column carrying it equals the value.
    pub filter: Option<&'static str>,
}

/// A view as every sink, reader and test sees it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ViewDef {
    /// The CSV file stem and the ClickHouse table.
    pub name: &'static str,
    /// The columns in order, without `time` and `diff`.
    pub columns: &'static [Column],
}

impl ViewDef {
    pub fn column_names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|c| c.name).collect()
    }

    /// Whether the column holds integers (of either width).
    pub fn is_int(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c.name == column && matches!(c.ty, ColumnType::Int | ColumnType::Wide))
    }

    /// The columns a filter matches (empty: the view cannot be filtered that way).
    pub fn filter_columns(&self, filter: &str) -> Vec<&'static str> {
        self.columns.iter().filter(|c| c.filter == Some(filter)).map(|c| c.name).collect()
    }
}

/// Receives a row's fields in column order; each output format implements it.
pub trait Fields {
    fn text(&mut self, value: &str);
    fn int(&mut self, value: i64);
    fn wide(&mut self, value: i128);
}

/// A row's fields as text, for tests and readers that compare rows as strings.
impl Fields for Vec<String> {
    fn text(&mut self, value: &str) {
        self.push(value.to_owned());
    }
    fn int(&mut self, value: i64) {
        self.push(value.to_string());
    }
    fn wide(&mut self, value: i128) {
        self.push(value.to_string());
    }
}

/// A type a view's column may hold.
pub trait ColumnValue {
    const TYPE: ColumnType;
    fn put(&self, out: &mut impl Fields);
}

impl ColumnValue for Name {
    const TYPE: ColumnType = ColumnType::Text;
    fn put(&self, out: &mut impl Fields) {
        out.text(self);
    }
}

impl ColumnValue for Symbol {
    const TYPE: ColumnType = ColumnType::Text;
    fn put(&self, out: &mut impl Fields) {
        out.text(self.as_str());
    }
}

impl ColumnValue for String {
    const TYPE: ColumnType = ColumnType::Text;
    fn put(&self, out: &mut impl Fields) {
        out.text(self);
    }
}

impl ColumnValue for i64 {
    const TYPE: ColumnType = ColumnType::Int;
    fn put(&self, out: &mut impl Fields) {
        out.int(*self);
    }
}

impl ColumnValue for i128 {
    const TYPE: ColumnType = ColumnType::Wide;
    fn put(&self, out: &mut impl Fields) {
        out.wide(*self);
    }
}

impl ColumnValue for u32 {
    const TYPE: ColumnType = ColumnType::Int;
    fn put(&self, out: &mut impl Fields) {
        out.int(i64::from(*self));
    }
}

/// A row of a view: it knows its view and hands its fields over in column order.
pub trait ViewRow: differential_dataflow::ExchangeData + std::hash::Hash {
    const DEF: &'static ViewDef;
    fn fields(&self, out: &mut impl Fields);

    /// The row's fields as text.
    fn to_strings(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(Self::DEF.columns.len());
        self.fields(&mut out);
        out
    }
}

/// Where a dataflow hands its views: each by its row type, so by its name in the catalog.
pub trait Exporter<'s, T: Timestamp> {
    fn export<R: ViewRow>(&mut self, rows: VecCollection<'s, T, R>);
}

/// A name that is not a view's.
#[derive(Debug, thiserror::Error)]
#[error("no view {0:?}; the views are {names}", names = CATALOG.iter().map(|v| v.name).collect::<Vec<_>>().join(", "))]
pub struct NoSuchView(pub String);

/// What is wrong with a catalog (see [`check_catalog`]).
#[derive(Debug, thiserror::Error)]
#[error("the view catalog is inconsistent: {0}")]
pub struct CatalogError(String);

/// The view called `name`.
pub fn view(name: &str) -> Result<&'static ViewDef, NoSuchView> {
    CATALOG.iter().copied().find(|v| v.name == name).ok_or_else(|| NoSuchView(name.to_owned()))
}

/// What is wrong with the catalog `views`, if anything: two views with one name (they would
/// share a file and a table), two with the same columns (rows of one could be read as the
/// other's), a column twice in a view, or a name that is not a plain identifier.
pub fn check_catalog(views: &[&ViewDef]) -> Result<(), CatalogError> {
    let identifier = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_lowercase()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut names = BTreeSet::new();
    let mut shapes = BTreeSet::new();
    for v in views {
        if !identifier(v.name) || !names.insert(v.name) {
            return Err(CatalogError(format!("view name {:?} is repeated or not a plain identifier", v.name)));
        }
        if v.columns.is_empty() || !shapes.insert(v.columns) {
            return Err(CatalogError(format!("view {:?} has no columns, or the same columns as another view", v.name)));
        }
        let mut columns = BTreeSet::new();
        for c in v.columns {
            if !identifier(c.name) || ["time", "diff"].contains(&c.name) || !columns.insert(c.name) {
                let problem =
                    format!("view {:?}: column {:?} is repeated, reserved or not an identifier", v.name, c.name);
                return Err(CatalogError(problem));
            }
        }
    }
    Ok(())
}

/// Declares each view's row type (fields in column order, `filter` naming a reader's filter)
/// and its catalog entry, and `CATALOG`, every view in order.
macro_rules! views {
    ($(
        $(#[$doc:meta])*
        $view:literal => $row:ident { $($field:ident: $ty:ty $(= filter $filter:literal)?),* $(,)? }
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
            pub struct $row {
                $(pub $field: $ty,)*
            }

            impl ViewRow for $row {
                const DEF: &'static ViewDef = &ViewDef {
                    name: $view,
                    columns: &[$(Column {
                        name: stringify!($field),
                        ty: <$ty as ColumnValue>::TYPE,
                        filter: views!(@filter $($filter)?),
                    }),*],
                };
                // Always inlined into the sink's encoder of the view (left to the compiler, it
                // was inlined or not as unrelated code changed: the ENGB load's instructions
                // moved by 4 %).
                #[inline(always)]
                fn fields(&self, out: &mut impl Fields) {
                    $(ColumnValue::put(&self.$field, out);)*
                }
            }
        )*

        /// Every view, in the order the README lists them.
        pub const CATALOG: &[&ViewDef] = &[$(<$row as ViewRow>::DEF),*];
    };
    (@filter) => { None };
    (@filter $filter:literal) => { Some($filter) };
}

// One line per view: its name, its row type, its columns in order (`= filter "f"`: the reader's
// filter `f` matches the column). `rustfmt` leaves macro bodies alone.
views! {
    /// `word_counts`: occurrences of a word in a channel's window.
    "word_counts" => WordCount { channel: Symbol = filter "channel", window_start: i64, word: Symbol, count: i64 }
    /// `channel_activity`: messages, words and distinct chatters of a channel's window.
    "channel_activity" => ChannelActivity { channel: Symbol = filter "channel", window_start: i64, messages: i64, words: i64, chatters: i64 }
    /// `user_counts`: all-time messages of a user in a channel.
    "user_counts" => UserCount { channel: Symbol = filter "channel", user: Symbol = filter "user", messages: i64 }
    /// `top_words`: the K most frequent words of a channel, all-time.
    "top_words" => TopWord { channel: Symbol = filter "channel", rank: u32, word: Symbol, count: i64 }
    /// `top_users`: the K most active users of a channel, all-time.
    "top_users" => TopUser { channel: Symbol = filter "channel", rank: u32, user: Symbol = filter "user", messages: i64 }
    /// `connections`: the strength of a pair of users (`user_a < user_b`): the sum of the
    /// weights of their current edges in either direction.
    "connections" => Connection { user_a: Name = filter "user", user_b: Name = filter "user", strength: i64 }
    /// `reach`: the weighted walks of `hops` steps from a focus user to another user (the
    /// entry of the `hops`-th power of the strength matrix).
    "reach" => Reach { user: Name = filter "user", other: Name, hops: u32, walks: i128 }
    /// `top_connections`: a focus user's best others, by strength, then walks of 2, then of
    /// 3 hops.
    "top_connections" => TopConnection { user: Name = filter "user", rank: u32, other: Name, strength: i64, walks2: i128, walks3: i128 }
    /// `sentiment`: per channel and chat window, the messages of each class and the sum of
    /// their scores × 1000 (DESIGN.md, "Sentiment"; empty without lexica).
    "sentiment" => Sentiment { channel: Name = filter "channel", window_start: i64, positive: i64, neutral: i64, negative: i64, score_milli: i64 }
    /// `place_activity`: per place and post window, the posts (each id once) and how many of
    /// them are retweets.
    "place_activity" => PlaceActivity { place: String = filter "place", window_start: i64, posts: i64, retweets: i64 }
    /// `top_retweeted`: the K post ids retweeted by the most distinct posts, all-time.
    "top_retweeted" => TopRetweeted { rank: u32, post_id: String, retweets: i64 }
    /// `engagement`: per channel and chat window, the chat messages and the count of the
    /// window's latest viewer event (0 if none).
    "engagement" => Engagement { channel: Name = filter "channel", window_start: i64, messages: i64, viewers: i64 }
    /// `late_events`: events that arrived for a window the retention horizon had sealed
    /// (`--retention`; DESIGN.md, "Bounded state"): where they were read (as `dead_letters`
    /// says it), their kind (`chat`, `post`, `viewers`), their `ts` and the watermark then.
    "late_events" => LateEvent { source: String, position: String, kind: String, ts: i64, watermark: i64 }
    /// `dead_letters`: input that could not be decoded, kept with where it came from and why:
    /// `source` is the file or topic, `position` a line number (files) or `partition:offset`
    /// (Kafka), `raw` the input itself, lossily decoded and cut to at most 1 KiB.
    "dead_letters" => DeadLetter { source: String, position: String, error: String, raw: String }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_consistent() {
        check_catalog(CATALOG).unwrap();
        assert_eq!(view("top_users").unwrap().filter_columns("user"), ["user"]);
        assert_eq!(view("connections").unwrap().filter_columns("user"), ["user_a", "user_b"]);
        assert!(view("nope").unwrap_err().to_string().contains("word_counts"));
    }

    #[test]
    fn the_check_catches_two_views_on_one_table_or_shape() {
        const A: &[Column] = &[Column { name: "channel", ty: ColumnType::Text, filter: None }];
        const B: &[Column] = &[Column { name: "user", ty: ColumnType::Text, filter: None }];
        let same_name = [&ViewDef { name: "x", columns: A }, &ViewDef { name: "x", columns: B }];
        assert!(check_catalog(&same_name).is_err());
        let same_columns = [&ViewDef { name: "x", columns: A }, &ViewDef { name: "y", columns: A }];
        assert!(check_catalog(&same_columns).is_err());
        const TWICE: &[Column] = &[A[0], A[0]];
        assert!(check_catalog(&[&ViewDef { name: "x", columns: TWICE }]).is_err());
        const RESERVED: &[Column] = &[Column { name: "time", ty: ColumnType::Int, filter: None }];
        assert!(check_catalog(&[&ViewDef { name: "x", columns: RESERVED }]).is_err());
        assert!(check_catalog(&[&ViewDef { name: "x; DROP", columns: A }]).is_err());
        let fine = [&ViewDef { name: "x", columns: A }, &ViewDef { name: "y", columns: B }];
        assert!(check_catalog(&fine).is_ok());
    }

    #[test]
    fn rows_encode_in_column_order() {
        let row = TopWord { channel: "xqc".into(), rank: 2, word: "kappa".into(), count: 7 };
        assert_eq!(row.to_strings(), ["xqc", "2", "kappa", "7"]);
        assert_eq!(TopWord::DEF.column_names(), ["channel", "rank", "word", "count"]);
        assert!(TopWord::DEF.is_int("rank") && !TopWord::DEF.is_int("word"));
    }
}
