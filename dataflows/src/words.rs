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

/// Whether a lowercased ASCII byte belongs to a word (`[a-z0-9]`); a table, since the range
/// tests took more instructions per byte than the rest of the scan.
static ALNUM: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    table
};

/// A reusable word splitter; `buffer` keeps the lowercased text between calls.
#[derive(Default)]
pub struct Splitter {
    buffer: String,
}

impl Splitter {
    /// Calls `each` with every word of `text`, in order.
    pub fn split(&mut self, text: &str, mut each: impl FnMut(&str)) {
        self.buffer.clear();
        let ascii = text.is_ascii();
        if !ascii && text.contains('Σ') {
            // `str::to_lowercase`, not per char: the final-sigma rule needs the context.
            self.buffer = text.to_lowercase();
            runs(&self.buffer, self.buffer.char_indices().map(|(i, c)| (i, is_word_char(c))), each);
            return;
        }
        // Without `Σ`, the one character `str::to_lowercase` maps by its context, the
        // lowercased text is the concatenation of each character's `char::to_lowercase`. It is
        // built a stretch of ASCII at a time (copied, lowercased in place and scanned byte by
        // byte) and one other character at a time, with its mapping and word test looked up in
        // [`BMP`] (the standard library and the category table each search a sorted table per
        // character). A word is handed to `each` as soon as the character after it is known.
        let buffer = &mut self.buffer;
        let bytes = text.as_bytes();
        let mut start = usize::MAX; // where the current word began in `buffer`; MAX: no word
        let mut at = 0;
        loop {
            let end = if ascii {
                bytes.len()
            } else {
                at + bytes[at..].iter().position(|b| !b.is_ascii()).unwrap_or(bytes.len() - at)
            };
            let base = buffer.len();
            buffer.push_str(&text[at..end]);
            buffer[base..].make_ascii_lowercase();
            for (k, &b) in buffer.as_bytes()[base..].iter().enumerate() {
                let word = ALNUM[b as usize];
                if word == (start == usize::MAX) {
                    if word {
                        start = base + k;
                    } else {
                        each(&buffer[start..base + k]);
                        start = usize::MAX;
                    }
                }
            }
            let Some(c) = text[end..].chars().next() else { break };
            at = end + c.len_utf8();
            let mut push = |lower: char, word: bool| {
                if word == (start == usize::MAX) {
                    if word {
                        start = buffer.len();
                    } else {
                        each(&buffer[start..]);
                        start = usize::MAX;
                    }
                }
                buffer.push(lower);
            };
            match BMP.lower(c) {
                Some(lower) => push(lower, BMP.is_word(lower)),
                None => c.to_lowercase().for_each(|lower| push(lower, is_word_char(lower))),
            }
        }
        if start != usize::MAX {
            each(&buffer[start..]);
        }
    }
}

/// The lowercase mapping and the word test of every character of the Basic Multilingual
/// Plane, computed once per process (a few milliseconds) from `char::to_lowercase` and
/// [`is_word_char`].
struct BmpTable {
    /// The lowercase of each BMP character when it is one BMP character, else 0 (not a
    /// character, or it lowercases to several or to one outside the BMP).
    lower: Vec<u16>,
    /// Bit `c` set: BMP character `c` belongs to a word.
    word: Vec<u64>,
}

impl BmpTable {
    fn build() -> Self {
        let mut lower = vec![0u16; 1 << 16];
        let mut word = vec![0u64; (1 << 16) / 64];
        for code in 0..1u32 << 16 {
            let Some(c) = char::from_u32(code) else { continue };
            let mut lowered = c.to_lowercase();
            if let (Some(l), None) = (lowered.next(), lowered.next()) {
                if let Ok(l) = u16::try_from(l as u32) {
                    lower[code as usize] = l;
                }
            }
            if is_word_char(c) {
                word[code as usize / 64] |= 1 << (code % 64);
            }
        }
        BmpTable { lower, word }
    }

    fn lower(&self, c: char) -> Option<char> {
        let code = *self.lower.get(c as usize)?;
        // 0 is never the lowercase of a character other than NUL, which is ASCII.
        (code != 0).then(|| char::from_u32(code as u32).expect("a BMP character's lowercase is a character"))
    }

    fn is_word(&self, c: char) -> bool {
        match self.word.get(c as usize / 64) {
            Some(bits) => bits >> (c as u32 % 64) & 1 == 1,
            None => is_word_char(c),
        }
    }
}

static BMP: std::sync::LazyLock<BmpTable> = std::sync::LazyLock::new(BmpTable::build);

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
    use super::{is_word_char, words};
    use proptest::prelude::*;

    /// The rule of DESIGN.md read literally: lowercase the whole text, take the runs.
    fn reference(text: &str) -> Vec<String> {
        let lower = text.to_lowercase();
        let mut out = Vec::new();
        let mut word = String::new();
        for c in lower.chars() {
            if is_word_char(c) {
                word.push(c);
            } else if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Any text, and texts of the characters whose lowercasing is special (multi-character,
        /// outside the BMP, context-dependent), split as the rule says.
        #[test]
        fn every_path_follows_the_rule(text in prop_oneof![
            any::<String>(),
            "[a-zA-Z0-9 ,.İΣσςΟΔẞßﬁ\u{10400}\u{1E900}Ⅻ²٣éÉЖжイ４🔥\u{301}\u{e0000}]{0,40}",
        ]) {
            prop_assert_eq!(words(&text), reference(&text));
        }
    }

    #[test]
    fn every_bmp_character_alone_and_between_letters() {
        for code in 0x80..0x1_0000u32 {
            let Some(c) = char::from_u32(code) else { continue };
            for text in [c.to_string(), format!("a{c}b"), format!("X{c}{c}Y")] {
                assert_eq!(words(&text), reference(&text), "{code:#x}");
            }
        }
    }

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
