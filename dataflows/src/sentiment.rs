//! Sentiment of chat messages, exactly as DESIGN.md ("Sentiment") defines it, and the
//! `sentiment` view: messages per class and the sum of their scores per channel and window.
//!
//! A message's score is the mean of the lexicon values its tokens hit (0 when none). Tokens
//! are the text split on White_Space; for each token `t`, in order:
//! 1. `t` is an emote (case-sensitive): its value; a negation scope ends.
//! 2. else `t` is an emoji: its value; a negation scope ends.
//! 3. else with `w` = `t` lowercased, stripped of leading and trailing characters that are not
//!    L* or Nd: if `w` or lowercase(`t`) is a negation word, a negation scope starts.
//! 4. else if `t` as written, or else `w`, is a VADER key: its value, negated inside a scope.
//! 5. else every character of `t` that is an emoji adds its value; if any did, a scope ends.
//!
//! A token that rules 1, 2 and 5 did not end a scope with and that ends with `. ! ? ; :`
//! ends a scope after it is scored. Classes: positive above 0.33, negative below -0.33.
//!
//! Values are kept in millionths, so the mean, the class thresholds and `round(score × 1000)`
//! are exact integer arithmetic, independent of float rounding.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::horizon::{window_end_ms, Horizon};
use crate::operators::{count_by_key, preaggregate};
use crate::types::*;
use crate::views::*;
use crate::words::is_word_char;

/// Lexicon values in millionths: 0.375 is 375_000.
pub type Micro = i64;

/// The words that start a negation scope (rule 3).
pub const NEGATIONS: [&str; 42] = [
    "not",
    "no",
    "never",
    "nothing",
    "nobody",
    "none",
    "nowhere",
    "neither",
    "nor",
    "cannot",
    "cant",
    "can't",
    "dont",
    "don't",
    "doesnt",
    "doesn't",
    "didnt",
    "didn't",
    "isnt",
    "isn't",
    "arent",
    "aren't",
    "wasnt",
    "wasn't",
    "werent",
    "weren't",
    "wont",
    "won't",
    "wouldnt",
    "wouldn't",
    "shouldnt",
    "shouldn't",
    "couldnt",
    "couldn't",
    "havent",
    "haven't",
    "hasnt",
    "hasn't",
    "hadnt",
    "hadn't",
    "aint",
    "ain't",
];

/// A line of a lexicon file that is not `word<TAB>value` with a value in [-1, 1].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LexiconError {
    /// 1-based line number in the file.
    pub line: usize,
    pub reason: String,
}

/// One lexicon: key → value. A repeated key keeps its last line's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lexicon {
    values: HashMap<String, Micro, foldhash::fast::RandomState>,
}

impl Lexicon {
    /// Parses a lexicon file's text: a header line, then `word<TAB>value` lines (blank lines
    /// and a trailing `\r` are allowed).
    pub fn parse(text: &str) -> Result<Lexicon, LexiconError> {
        let mut values = HashMap::default();
        for (i, line) in text.lines().enumerate().skip(1) {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| LexiconError { line: i + 1, reason };
            let (key, value) = line.rsplit_once('\t').ok_or_else(|| bad(format!("no TAB in {line:?}")))?;
            if key.is_empty() {
                return Err(bad("empty key".into()));
            }
            let value = parse_micro(value.trim()).ok_or_else(|| {
                bad(format!("value {value:?} of {key:?} is not a number in [-1, 1] with at most 6 decimals"))
            })?;
            values.insert(key.to_owned(), value);
        }
        if values.is_empty() {
            return Err(LexiconError { line: 1, reason: "no entries after the header line".into() });
        }
        Ok(Lexicon { values })
    }

    pub fn get(&self, key: &str) -> Option<Micro> {
        self.values.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A decimal in [-1, 1] with at most 6 decimals, in millionths.
fn parse_micro(s: &str) -> Option<Micro> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) || fraction.len() > 6 {
        return None;
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let fraction: i64 = format!("{fraction:0<6}").parse().ok()?;
    let value = whole.checked_mul(1_000_000)?.checked_add(fraction)?;
    let value = if negative { -value } else { value };
    (-1_000_000..=1_000_000).contains(&value).then_some(value)
}

/// What a token may be, from one lookup: its value in each lexicon, and whether it is a
/// negation word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    emote: Option<Micro>,
    emoji: Option<Micro>,
    vader: Option<Micro>,
    negation: bool,
}

/// The three lexica of the rule, merged into one table so that a token costs one lookup (two
/// when its lowercase, stripped form differs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lexica {
    entries: HashMap<String, Entry, foldhash::fast::RandomState>,
    /// The emoji lexicon's one-character keys (rule 5 looks characters up one by one).
    glued: HashMap<char, Micro, foldhash::fast::RandomState>,
    /// Whether one of those is ASCII (else an ASCII token has no glued emoji).
    ascii_glued: bool,
}

/// A message's sentiment: the sum of the values its tokens hit and their number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Score {
    pub sum: Micro,
    pub hits: i64,
}

/// The class of a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Positive,
    Neutral,
    Negative,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Positive => "positive",
            Class::Neutral => "neutral",
            Class::Negative => "negative",
        }
    }
}

impl Score {
    /// The mean value, in [-1, 1]; 0 without hits.
    pub fn value(self) -> f64 {
        if self.hits == 0 {
            0.0
        } else {
            self.sum as f64 / self.hits as f64 / 1e6
        }
    }

    /// Positive above 0.33, negative below -0.33, else neutral (exact).
    pub fn class(self) -> Class {
        if self.sum > 330_000 * self.hits {
            Class::Positive
        } else if self.sum < -330_000 * self.hits {
            Class::Negative
        } else {
            Class::Neutral
        }
    }

    /// `round(score × 1000)`, half away from zero (exact).
    pub fn milli(self) -> i64 {
        if self.hits == 0 {
            return 0;
        }
        let (n, d) = (self.sum, self.hits * 1000);
        if n >= 0 {
            (2 * n + d) / (2 * d)
        } else {
            -((-2 * n + d) / (2 * d))
        }
    }
}

impl Lexica {
    pub fn new(emote: Lexicon, emoji: Lexicon, vader: Lexicon) -> Lexica {
        let mut entries: HashMap<String, Entry, foldhash::fast::RandomState> = HashMap::default();
        for (key, value) in &emote.values {
            entries.entry(key.clone()).or_default().emote = Some(*value);
        }
        for (key, value) in &emoji.values {
            entries.entry(key.clone()).or_default().emoji = Some(*value);
        }
        for (key, value) in &vader.values {
            entries.entry(key.clone()).or_default().vader = Some(*value);
        }
        for word in NEGATIONS {
            entries.entry(word.to_owned()).or_default().negation = true;
        }
        let glued: HashMap<char, Micro, foldhash::fast::RandomState> = emoji
            .values
            .iter()
            .filter_map(|(k, v)| {
                let mut chars = k.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Some((c, *v)),
                    _ => None,
                }
            })
            .collect();
        let ascii_glued = glued.keys().any(char::is_ascii);
        Lexica { entries, glued, ascii_glued }
    }

    fn entry(&self, key: &str) -> Entry {
        self.entries.get(key).copied().unwrap_or_default()
    }

    /// Scores `text` by the rule (see the module doc).
    pub fn score(&self, text: &str) -> Score {
        let mut score = Score::default();
        let mut hit = |value: Micro| {
            score.sum += value;
            score.hits += 1;
        };
        let mut negated = false;
        let mut lower = String::new();
        for t in text.split_whitespace() {
            let mut ended = false;
            let exact = self.entry(t);
            if let Some(v) = exact.emote.or(exact.emoji) {
                hit(v);
                negated = false;
                ended = true;
            } else {
                // lowercase(t) and w, its stripped form, each looked up once (or not at all
                // when equal to what was looked up already).
                let lowered: &str = if t.bytes().all(|b| !b.is_ascii_uppercase() && b.is_ascii()) {
                    t
                } else {
                    lower.clear();
                    if t.is_ascii() {
                        lower.push_str(t);
                        lower.make_ascii_lowercase();
                    } else {
                        lower.extend(t.chars().flat_map(char::to_lowercase));
                    }
                    &lower
                };
                let w = lowered.trim_matches(|c: char| !is_word_char(c));
                let lowered_entry = if lowered == t { exact } else { self.entry(lowered) };
                let w_entry = if w == lowered { lowered_entry } else { self.entry(w) };
                if w_entry.negation || lowered_entry.negation {
                    negated = true;
                } else if let Some(v) = exact.vader.or(w_entry.vader) {
                    hit(if negated { -v } else { v });
                } else if self.ascii_glued || !t.is_ascii() {
                    let mut any = false;
                    for c in t.chars() {
                        if let Some(&v) = self.glued.get(&c) {
                            hit(v);
                            any = true;
                        }
                    }
                    if any {
                        negated = false;
                        ended = true;
                    }
                }
            }
            if !ended && t.ends_with(['.', '!', '?', ';', ':']) {
                negated = false;
            }
        }
        score
    }
}

/// returns `sentiment`: per (channel, window) the messages of each class and the sum of their
/// `round(score × 1000)`; nothing when `lexica` is `None` (the view is off).
pub fn sentiment<'s, T>(
    chats: VecCollection<'s, T, Chat>,
    lexica: Arc<Lexica>,
    window_secs: i64,
    horizon: Option<&Horizon<T>>,
) -> VecCollection<'s, T, Sentiment>
where
    T: Timestamp + TotalOrder + Hash,
{
    let scored = chats.explode(move |chat| {
        let score = lexica.score(&chat.text);
        let class = score.class();
        let one = |c: Class| (class == c) as Diff;
        let key = Hashed::new((chat.channel, window_start(chat.ts, window_secs)));
        Some((key, (one(Class::Positive), one(Class::Neutral), one(Class::Negative), score.milli() as Diff)))
    });
    let name = "Count: sentiment";
    let expiry =
        horizon.map(|h| h.expiry(name, move |key: &Hashed<(Name, i64)>| window_end_ms(key.key.1, window_secs)));
    count_by_key(preaggregate(scored, "Preaggregate: sentiment"), name, expiry).map(
        |(Hashed { key: (channel, window_start), .. }, (positive, neutral, negative, milli))| Sentiment {
            channel,
            window_start,
            positive: positive as i64,
            neutral: neutral as i64,
            negative: negative as i64,
            score_milli: milli as i64,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexica() -> Lexica {
        Lexica::new(
            Lexicon::parse("word\tsentiment\nPogChamp\t0.80\nLUL\t0.50\nBibleThump\t-0.60\n:)\t0.75\n").unwrap(),
            Lexicon::parse("word    sentiment\n😂\t0.22\n❤\t0.75\n😭\t-0.40\n").unwrap(),
            Lexicon::parse(
                "word    sentiment\ngood\t0.475\nbad\t-0.625\n:-)\t0.325\nlol\t0.1\nlol\t0.725\nlove\t0.8\nhate\t-0.675\n",
            )
            .unwrap(),
        )
    }

    fn score(text: &str) -> (i64, i64) {
        let s = lexica().score(text);
        (s.sum, s.hits)
    }

    #[test]
    fn each_clause_of_the_rule() {
        // No hits: 0, neutral.
        assert_eq!(score("hello there"), (0, 0));
        assert_eq!(lexica().score("").class(), Class::Neutral);
        // Rule 1: emotes are case-sensitive and whole tokens.
        assert_eq!(score("PogChamp"), (800_000, 1));
        assert_eq!(score("pogchamp"), (0, 0));
        assert_eq!(score("PogChamp!"), (0, 0));
        // Rule 1 ends a scope: "not PogChamp good" — PogChamp is not negated, and ends it.
        assert_eq!(score("not PogChamp good"), (800_000 + 475_000, 2));
        // Rule 4: VADER by the token as written or by its stripped lowercase form; negated
        // inside a scope.
        assert_eq!(score("GOOD!!"), (475_000, 1));
        assert_eq!(score("not good"), (-475_000, 1));
        assert_eq!(score("don't good bad"), (-475_000 + 625_000, 2));
        assert_eq!(score("Don't good"), (-475_000, 1));
        assert_eq!(score("(never) good"), (-475_000, 1));
        assert_eq!(score(":-)"), (325_000, 1));
        // The scope lasts until punctuation at a token's end: "not good. good".
        assert_eq!(score("not good. good"), (-475_000 + 475_000, 2));
        assert_eq!(score("not. good"), (475_000, 1));
        assert_eq!(score("not bad; bad"), (625_000 - 625_000, 2));
        // Rule 2: an emoji token ends a scope.
        assert_eq!(score("not 😂 good"), (220_000 + 475_000, 2));
        // Rule 5: emoji glued to words each count, and end a scope.
        assert_eq!(score("nice😂😂"), (440_000, 2));
        assert_eq!(score("not wow❤ good"), (750_000 + 475_000, 2));
        // Repeated keys: the last line wins (lol: 0.725).
        assert_eq!(score("lol"), (725_000, 1));
        // A negation word scores nothing itself; "nope" is not in DESIGN.md's list.
        assert_eq!(score("no"), (0, 0));
        assert_eq!(score("nope good"), (475_000, 1));
        // Case: the negation and VADER matches use the full lowercase mapping.
        assert_eq!(score("NOT LOVE"), (-800_000, 1));
        // Emotes end a scope even when glued punctuation would not be a VADER hit.
        assert_eq!(score("cannot :) hate"), (750_000 - 675_000, 2));
    }

    #[test]
    fn classes_and_rounding_are_exact() {
        let s = |sum, hits| Score { sum, hits };
        assert_eq!(s(330_000, 1).class(), Class::Neutral);
        assert_eq!(s(330_001, 1).class(), Class::Positive);
        assert_eq!(s(-330_000, 1).class(), Class::Neutral);
        assert_eq!(s(-990_001, 3).class(), Class::Negative);
        assert_eq!(s(1_500, 1).milli(), 2);
        assert_eq!(s(-1_500, 1).milli(), -2);
        assert_eq!(s(1_499, 1).milli(), 1);
        assert_eq!(s(1_000_000, 3).milli(), 333);
        assert_eq!(s(2_000_000, 3).milli(), 667);
        assert_eq!(s(0, 0).milli(), 0);
    }

    #[test]
    fn lexicon_files_are_checked() {
        assert_eq!(Lexicon::parse("h\n\nx\t0.5\r\n").unwrap().get("x"), Some(500_000));
        assert_eq!(Lexicon::parse("h\nx\t-1\n").unwrap().get("x"), Some(-1_000_000));
        assert_eq!(Lexicon::parse("h\nx\t.25\n").unwrap().get("x"), Some(250_000));
        assert_eq!(Lexicon::parse("h\nx 0.5\n").unwrap_err().line, 2);
        assert!(Lexicon::parse("h\nx\t1.5\n").unwrap_err().reason.contains("[-1, 1]"));
        assert!(Lexicon::parse("h\nx\tabc\n").is_err());
        assert!(Lexicon::parse("h\nx\t0.1234567\n").is_err());
        assert!(Lexicon::parse("header only\n").is_err());
    }
}
