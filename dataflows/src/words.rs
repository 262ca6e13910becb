//! Word splitting, exactly as DESIGN.md defines it: lowercase the whole text with
//! `str::to_lowercase`, then take the maximal runs of characters whose Unicode general category
//! is a letter (L*) or a decimal digit (Nd). In regex terms `[\p{L}\p{Nd}]+` over the
//! lowercased text; `char::is_alphanumeric` would be a different set (it admits Nl, No and
//! Other_Alphabetic marks).
//!
//! The text is lowercased as a whole, not word by word, because lowercasing can change the
//! split: `İ` lowercases to `i` followed by U+0307 (a mark, so a separator), and a final `Σ`
//! becomes `ς` only at the end of a word of the original text.

use unicode_general_category::{get_general_category, GeneralCategory as Gc};

/// Whether `c` belongs to a word: general category L* or Nd.
pub fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    matches!(
        get_general_category(c),
        Gc::UppercaseLetter
            | Gc::LowercaseLetter
            | Gc::TitlecaseLetter
            | Gc::ModifierLetter
            | Gc::OtherLetter
            | Gc::DecimalNumber
    )
}

/// A reusable word splitter; `buffer` keeps the lowercased text between calls.
#[derive(Default)]
pub struct Splitter {
    buffer: String,
}

impl Splitter {
    /// Calls `each` with every word of `text`, in order.
    pub fn split(&mut self, text: &str, each: impl FnMut(&str)) {
        self.buffer.clear();
        if text.is_ascii() {
            // ASCII fast path: lowercasing is byte-wise and words are runs of [a-z0-9].
            self.buffer.push_str(text);
            self.buffer.make_ascii_lowercase();
            let flags = self.buffer.bytes().map(|b| b.is_ascii_alphanumeric()).enumerate();
            runs(&self.buffer, flags, each);
        } else {
            // `str::to_lowercase`, not per char: the final-sigma rule needs the context.
            self.buffer = text.to_lowercase();
            runs(&self.buffer, self.buffer.char_indices().map(|(i, c)| (i, is_word_char(c))), each);
        }
    }
}

/// Calls `each` with the maximal runs of `text` whose characters are flagged as word
/// characters; `flags` gives each character's byte offset and flag.
fn runs(text: &str, flags: impl Iterator<Item = (usize, bool)>, mut each: impl FnMut(&str)) {
    let mut start = None;
    for (i, word) in flags {
        match (word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                each(&text[s..i]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        each(&text[s..]);
    }
}

/// The words of `text`, as owned strings.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    Splitter::default().split(text, |w| out.push(w.to_owned()));
    out
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn ascii_and_separators() {
        assert_eq!(words("PogChamp nice, GG!!  x2"), ["pogchamp", "nice", "gg", "x2"]);
        assert_eq!(words("don't"), ["don", "t"]);
        assert_eq!(words("a_b-c"), ["a", "b", "c"]);
        assert!(words("  ...  ").is_empty());
        assert!(words("").is_empty());
    }

    #[test]
    fn unicode_rules() {
        // Letters of any script, decimal digits of any script.
        assert_eq!(words("Привет МИР"), ["привет", "мир"]);
        assert_eq!(words("日本語テキスト"), ["日本語テキスト"]);
        assert_eq!(words("٣٤ café"), ["٣٤", "café"]);
        // Emoji and symbols separate.
        assert_eq!(words("gg🔥wp"), ["gg", "wp"]);
        // No (other numbers) and Nl (letter numbers) are not words: ² and Ⅻ separate.
        assert_eq!(words("x²y Ⅻ"), ["x", "y"]);
        // Lowercasing İ yields i + U+0307 (a mark), which separates.
        assert_eq!(words("İx"), ["i", "x"]);
        // Final sigma depends on the whole text.
        assert_eq!(words("\u{39f}\u{394}\u{39f}\u{3a3}"), ["\u{3bf}\u{3b4}\u{3bf}\u{3c2}"]);
        // Combining marks (Mn) separate even inside what looks like one word.
        assert_eq!(words("e\u{301}t"), ["e", "t"]);
        // The tag character U+E0000 used to dodge duplicate filters separates.
        assert_eq!(words("hi\u{e0000}"), ["hi"]);
    }
}
