//! Rows → bytes: the two text formats chatflow writes, CSV (RFC 4180, the change files) and
//! ClickHouse's TabSeparated (inserts, external tables). A row hands its fields over in
//! column order through `dataflows::Fields`; every sink writes the row, then `time`, then
//! `diff`.

use std::marker::PhantomData;

use dataflows::{Diff, Fields, ViewDef};

/// How a format separates fields and writes text.
pub trait Format {
    const SEPARATOR: u8;
    fn text(out: &mut Vec<u8>, value: &str);
}

/// CSV: quoted (RFC 4180) when a field holds a comma, a quote or a line end, or is empty.
pub struct Csv;

impl Format for Csv {
    const SEPARATOR: u8 = b',';
    /// Always inlined (left to the compiler, it was called from the `reach` rows' encoder, and
    /// saving and restoring registers was a fifth of its instructions: the ENGB load 4.44 ->
    /// 4.38 G), the rare quoted field out of line.
    #[inline(always)]
    fn text(out: &mut Vec<u8>, value: &str) {
        let bytes = value.as_bytes();
        if bytes.is_empty() || needs_quotes(bytes) {
            quoted(out, bytes);
        } else {
            out.extend_from_slice(bytes);
        }
    }
}

#[cold]
#[inline(never)]
fn quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for &b in bytes {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Whether `bytes` hold a comma, a quote or a line end: eight bytes at a time, each word
/// tested for the four bytes at once ([`crate::swar`]; a byte-by-byte test was 4 % of a peer
/// replay's instructions). The four are all below `-`, so a word with no byte below it (most
/// names: letters and digits) is cleared by one test, and only the others are tested for the
/// four. Most fields are words of a few bytes: those are read as one word from overlapping
/// loads (only whether some byte is special matters, not which), a short one padded with its
/// first byte.
#[inline(always)]
fn needs_quotes(bytes: &[u8]) -> bool {
    use crate::swar::{below, equal, word_at};
    let special = |word: u64| {
        below(word, b'-') != 0 && (equal(word, b',') | equal(word, b'"') | equal(word, b'\n') | equal(word, b'\r')) != 0
    };
    let half_at = |i: usize| u64::from(u32::from_le_bytes(bytes[i..i + 4].try_into().expect("four bytes")));
    let n = bytes.len();
    match n {
        0 => false,
        1..=3 => {
            let (first, middle, last) = (bytes[0], bytes[n / 2], bytes[n - 1]);
            special(u64::from_le_bytes([first, middle, last, first, first, first, first, first]))
        }
        4..=7 => special(half_at(0) | half_at(n - 4) << 32),
        _ => (0..n / 8).any(|i| special(word_at(bytes, 8 * i))) || special(word_at(bytes, n - 8)),
    }
}

/// TabSeparated: `\`, tab, line feed, carriage return and NUL escaped.
pub struct Tsv;

impl Format for Tsv {
    const SEPARATOR: u8 = b'\t';
    fn text(out: &mut Vec<u8>, value: &str) {
        escape_tsv(out, value);
    }
}

/// Fields of one row appended to a byte buffer in format `F`.
pub struct Encoder<'a, F> {
    out: &'a mut Vec<u8>,
    first: bool,
    format: PhantomData<F>,
}

pub type CsvFields<'a> = Encoder<'a, Csv>;
pub type TsvFields<'a> = Encoder<'a, Tsv>;

impl<'a, F: Format> Encoder<'a, F> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Encoder { out, first: true, format: PhantomData }
    }
    fn separate(&mut self) {
        if !self.first {
            self.out.push(F::SEPARATOR);
        }
        self.first = false;
    }
}

/// Always inlined into a row's `fields`: left to the compiler, whether `int` was inlined into
/// the chat views' encoders changed with unrelated edits elsewhere in the crate (a call per
/// field: 1.4 % of a peer replay's instructions).
impl<F: Format> Fields for Encoder<'_, F> {
    #[inline(always)]
    fn text(&mut self, value: &str) {
        self.separate();
        F::text(self.out, value);
    }
    #[inline(always)]
    fn int(&mut self, value: i64) {
        self.separate();
        put_i64(self.out, value);
    }
    #[inline(always)]
    fn wide(&mut self, value: i128) {
        self.separate();
        // Most walk counts fit 64 bits, and formatting those as 128-bit divides in 128 bits.
        match i64::try_from(value) {
            Ok(small) => put_i64(self.out, small),
            Err(_) => self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes()),
        }
    }
}

/// Appends `value` in decimal. Most counts, ranks and walks are one digit: one byte, without
/// a formatting buffer copied in.
#[inline]
fn put_i64(out: &mut Vec<u8>, value: i64) {
    match u8::try_from(value) {
        Ok(digit @ 0..=9) => out.push(b'0' + digit),
        _ => out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes()),
    }
}

pub fn escape_tsv(out: &mut Vec<u8>, value: &str) {
    for &b in value.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\0' => out.extend_from_slice(b"\\0"),
            _ => out.push(b),
        }
    }
}

/// Undoes ClickHouse's TabSeparated escaping of one field.
pub fn unescape_tsv(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The header of a view's change file: its columns, then `time`, `diff`.
pub fn csv_header(view: &ViewDef) -> Vec<u8> {
    let mut out = Vec::new();
    let mut fields = CsvFields::new(&mut out);
    for c in view.column_names().into_iter().chain(["time", "diff"]) {
        fields.text(c);
    }
    out.push(b'\n');
    out
}

/// Rows encoded one after another into one buffer, as they arrived: per row a fixed-seed hash
/// of its bytes, where it starts and ends in `bytes`, and its diff. Consolidating them sorts
/// by (hash, bytes), which compares integers where sorting typed rows compared strings. The
/// hashes are 0 until then: rows that leave unsorted are hashed by whoever sorts them (the
/// change files' writer thread, beside the worker).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct EncodedRows {
    /// Serialized as one byte string, not a sequence of bytes: a writer in another process
    /// receives every row (bincode would otherwise visit each byte).
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    pub rows: Vec<Entry>,
}

impl EncodedRows {
    /// Empty, with room for `(bytes, rows)`.
    pub fn with_capacity((bytes, rows): (usize, usize)) -> Self {
        EncodedRows { bytes: Vec::with_capacity(bytes), rows: Vec::with_capacity(rows) }
    }

    /// Appends a row that `encode` writes (its fields only), with `diff`.
    pub fn push(&mut self, encode: impl FnOnce(&mut Vec<u8>), diff: Diff) {
        let start = self.bytes.len();
        encode(&mut self.bytes);
        let end = self.bytes.len();
        self.rows.push((0, start as u32, end as u32, diff));
    }

    /// Room for at least `(bytes, rows)` in all.
    pub fn reserve(&mut self, (bytes, rows): (usize, usize)) {
        self.bytes.reserve(bytes.saturating_sub(self.bytes.len()));
        self.rows.reserve(rows.saturating_sub(self.rows.len()));
    }

    /// No rows, keeping the allocations.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.rows.clear();
    }

    /// The bytes of the row at `rows[i]`.
    pub fn row(&self, i: usize) -> &[u8] {
        let (_, start, end, _) = self.rows[i];
        &self.bytes[start as usize..end as usize]
    }

    /// The hash of the row at `rows[i]` (its sort key before its bytes).
    pub fn hash(&self, i: usize) -> u64 {
        self.rows[i].0
    }

    /// Where the row at `rows[i]` starts in `bytes`.
    pub fn start(&self, i: usize) -> usize {
        self.rows[i].1 as usize
    }

    /// The diff of the row at `rows[i]`.
    pub fn diff(&self, i: usize) -> Diff {
        self.rows[i].3
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Sorts the rows by (hash, bytes), sums equal rows and drops zeros: the bytes stay where
    /// they are, only the rows' (hash, start, end, diff) entries move.
    pub fn consolidate(&mut self) {
        let bytes = &self.bytes;
        self.rows.iter_mut().for_each(|r| r.0 = row_hash(&bytes[r.1 as usize..r.2 as usize]));
        consolidate_entries(|r| &bytes[r.1 as usize..r.2 as usize], &mut self.rows, &mut Vec::new(), 0);
    }
}

/// Sorts `rows` (entries of rows whose bytes `text` gives, whose hashes all share their first
/// `skip` bits) by (hash, bytes), sums equal rows and drops zeros; `scratch` is room for the
/// sort, kept by the caller for the next call.
pub fn consolidate_entries<'b>(
    text: impl Fn(&Entry) -> &'b [u8],
    rows: &mut Vec<Entry>,
    scratch: &mut Vec<Entry>,
    skip: u32,
) {
    if rows.len() < BUCKETS_FROM {
        rows.sort_unstable_by_key(|r| r.0);
    } else {
        // Scattered by the hash's top bits into about as many buckets as rows, so that the
        // rows are in order but for neighbours sharing a bucket, which one pass of an
        // insertion sort puts right (the hashes are uniform): a pass to count, one to
        // scatter and one to finish. Sorting buckets of about 8 rows each took 21 ns a row
        // for 25 k distinct rows (a single graph change's), this 14.5. Rows beyond what the
        // caches hold are scattered twice, by 8 bits into 256 groups and then each group by
        // its next bits (in cache): stores to 2^16 places at once miss the caches and the
        // TLB (the load's consolidation was an eighth of its worker's cycles).
        let bits_for = |n: usize| n.ilog2().clamp(1, 16);
        scratch.clear();
        scratch.resize(rows.len(), (0, 0, 0, 0));
        if rows.len() < TWO_PASSES_FROM || skip > 0 {
            scatter(rows, scratch, skip, bits_for(rows.len()));
            std::mem::swap(rows, scratch);
        } else {
            let mut start = 0;
            for end in scatter(rows, scratch, 0, GROUP_BITS) {
                scatter(&scratch[start..end], &mut rows[start..end], GROUP_BITS, bits_for((end - start).max(2)));
                start = end;
            }
        }
        sort_by_hash(rows);
    }
    // Equal hashes are equal rows, or rarely two rows whose hashes collide: each run of
    // them is ordered by the bytes (a comparison that went on to the bytes on a tie was a
    // branch more per comparison), then equal rows are summed.
    let mut kept = 0;
    let mut i = 0;
    while i < rows.len() {
        let hash = rows[i].0;
        let mut end = i + 1;
        while end < rows.len() && rows[end].0 == hash {
            end += 1;
        }
        if end - i > 1 {
            rows[i..end].sort_unstable_by(|a, b| text(a).cmp(text(b)));
        }
        while i < end {
            let mut diff = rows[i].3;
            let mut j = i + 1;
            while j < end && text(&rows[j]) == text(&rows[i]) {
                diff += rows[j].3;
                j += 1;
            }
            if diff != 0 {
                rows[kept] = (rows[i].0, rows[i].1, rows[i].2, diff);
                kept += 1;
            }
            i = j;
        }
    }
    rows.truncate(kept);
}

/// The hash bits of the first of two scatters (256 groups); the change files' writer thread
/// also groups a large time's rows by them as they come ([`group_of`]).
pub const GROUP_BITS: u32 = 8;

/// The group of a row by its hash's first [`GROUP_BITS`] bits: groups in increasing order
/// hold rows in increasing (hash, bytes) order.
pub fn group_of(hash: u64) -> usize {
    (hash >> (64 - GROUP_BITS)) as usize
}

/// From how many rows [`EncodedRows::consolidate`] scatters them by their hash's top bits
/// and finishes by insertion, rather than sorting them by comparisons.
const BUCKETS_FROM: usize = 64;

/// From how many rows [`EncodedRows::consolidate`] scatters them twice (24 MB of entries, far
/// beyond the caches: below 2^20 rows one scatter is as fast, at 3.2 M rows two are 13 %
/// faster).
const TWO_PASSES_FROM: usize = 1 << 20;

/// A row's entry: (hash, start, end, diff).
pub type Entry = (u64, u32, u32, Diff);

/// Copies `from` into `to` (as long) grouped by `bits` bits of the hash that follow its first
/// `skip` (which all of `from` share), in order of those bits, keeping the order within a
/// group; returns where each group ends in `to`.
fn scatter(from: &[Entry], to: &mut [Entry], skip: u32, bits: u32) -> Vec<usize> {
    let bucket = |r: &Entry| ((r.0 << skip) >> (64 - bits)) as usize;
    let mut next = vec![0usize; 1 << bits];
    for r in from {
        next[bucket(r)] += 1;
    }
    let mut total = 0;
    for count in next.iter_mut() {
        (total, *count) = (total + *count, total);
    }
    for r in from {
        let b = bucket(r);
        to[next[b]] = *r;
        next[b] += 1;
    }
    next
}

/// Sorts `rows` by hash by insertion, linear when each row is near its place (after
/// [`scatter`]); rows far from theirs (hashes crowded into few buckets, which uniform hashes
/// are not, but crafted rows could be) are sorted by comparisons instead.
fn sort_by_hash(rows: &mut [Entry]) {
    let (mut moves, limit) = (0, 8 * rows.len() + 64);
    for i in 1..rows.len() {
        let row = rows[i];
        let mut j = i;
        while j > 0 && rows[j - 1].0 > row.0 {
            rows[j] = rows[j - 1];
            j -= 1;
        }
        rows[j] = row;
        moves += i - j;
        if moves > limit {
            rows.sort_unstable_by_key(|r| r.0);
            return;
        }
    }
}

/// The order of rows within a time: by a fixed-seed hash of the encoded row, then the row.
/// Deterministic like lexicographic order, but sorting and merging compare integers.
pub fn row_hash(row: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x6373_765f_726f_7773).hash_one(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consolidation agrees with a plain one: rows in (hash, bytes) order, equal rows summed,
    /// zeros gone.
    #[test]
    fn consolidation_of_many_rows_sums_and_orders() {
        // All three sorts: by comparisons below BUCKETS_FROM rows, scattered once from it,
        // twice from TWO_PASSES_FROM.
        for count in [10usize, 100, 50_000, 3 * BUCKETS_FROM, TWO_PASSES_FROM - 1, TWO_PASSES_FROM + 12_345] {
            let mut pending = EncodedRows::default();
            let mut expected: std::collections::BTreeMap<(u64, Vec<u8>), Diff> = Default::default();
            let mut state = 0x2545_f491_4f6c_dd1du64;
            for _ in 0..count {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let row = format!("user{},{}", state % 5_000, state % 7);
                let diff = if state.is_multiple_of(3) { -1 } else { 1 };
                pending.push(|bytes| bytes.extend_from_slice(row.as_bytes()), diff);
                *expected.entry((row_hash(row.as_bytes()), row.into_bytes())).or_default() += diff;
            }
            expected.retain(|_, d| *d != 0);
            pending.consolidate();
            let got: Vec<((u64, Vec<u8>), Diff)> =
                (0..pending.len()).map(|i| ((pending.hash(i), pending.row(i).to_vec()), pending.diff(i))).collect();
            assert_eq!(got, expected.into_iter().collect::<Vec<_>>(), "{count} rows");
        }
    }

    /// Hashes far from their places (random, or crowded into few buckets as crafted rows could
    /// make them) are sorted by comparisons once the insertion sort has moved too far; nearly
    /// sorted ones (each a few places off, as after a scatter) by insertion alone.
    #[test]
    fn sort_by_hash_orders_crowded_random_and_nearly_sorted_hashes() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Every hash with the same top 16 bits, a few of them repeated.
        let crowded: Vec<u64> = (0..5_000).map(|_| 0xffff_0000_0000_0000 | ((next() >> 16) % 1_000)).collect();
        let random: Vec<u64> = (0..5_000).map(|_| next()).collect();
        let mut nearly: Vec<u64> = (0..5_000).map(|_| next()).collect();
        nearly.sort_unstable();
        for i in (0..nearly.len() - 3).step_by(4) {
            nearly.swap(i, i + 3);
        }
        for (name, hashes) in [("crowded", crowded), ("random", random), ("nearly sorted", nearly)] {
            let mut rows: Vec<Entry> = hashes.iter().zip(0..).map(|(&hash, i)| (hash, i, i + 1, 1)).collect();
            let mut expected = rows.clone();
            expected.sort_by_key(|r| (r.0, r.1));
            sort_by_hash(&mut rows);
            assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0), "{name}: in hash order");
            // The same rows: ties may come in any order.
            rows.sort_by_key(|r| (r.0, r.1));
            assert_eq!(rows, expected, "{name}");
        }
    }

    /// The word-at-a-time test agrees with a byte-by-byte one at every length and position.
    #[test]
    fn quoting_test_finds_every_special_byte() {
        let plain = |bytes: &[u8]| bytes.iter().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
        for len in 0..40 {
            let base: Vec<u8> = (0..len).map(|i| b"ab\x80\xffz\x01\x7f\x0b"[i % 8]).collect();
            assert_eq!(needs_quotes(&base), plain(&base), "{base:?}");
            for at in 0..len {
                for special in [b',', b'"', b'\n', b'\r', b'-', b'+', b'\x0c', b'\x00', 0xac, 0xa2] {
                    let mut bytes = base.clone();
                    bytes[at] = special;
                    assert_eq!(needs_quotes(&bytes), plain(&bytes), "{bytes:?}");
                }
            }
        }
    }

    /// A field of every length up to 40, plain or with a special byte anywhere, is written as a
    /// byte-by-byte encoder writes it, after what the buffer held.
    #[test]
    fn csv_text_at_every_length() {
        let reference = |bytes: &[u8]| -> Vec<u8> {
            if !bytes.is_empty() && !bytes.iter().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
                return bytes.to_vec();
            }
            let mut out = vec![b'"'];
            for &b in bytes {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
            out
        };
        for len in 0..40 {
            let base: String = (0..len).map(|i| ['a', 'Z', '7', ' ', '_', 'é'][i % 6]).collect();
            let mut fields = vec![base.clone()];
            for at in 0..base.len() {
                if base.is_char_boundary(at) {
                    for special in [',', '"', '\n', '\r'] {
                        let mut field = base.clone();
                        field.insert(at, special);
                        fields.push(field);
                    }
                }
            }
            for field in fields {
                let mut out = b"prefix".to_vec();
                Csv::text(&mut out, &field);
                assert_eq!(out[6..], reference(field.as_bytes()), "{field:?}");
                assert_eq!(&out[..6], b"prefix");
            }
        }
    }

    #[test]
    fn csv_quoting() {
        let mut out = Vec::new();
        let mut f = CsvFields::new(&mut out);
        f.text("plain");
        f.text("a,b");
        f.text("say \"hi\"");
        f.text("two\nlines");
        f.text("");
        f.int(-42);
        assert_eq!(String::from_utf8(out).unwrap(), "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\"\",-42");
    }

    /// Integers are written as `to_string` writes them, on both sides of the one-digit path.
    #[test]
    fn integers_at_the_edges() {
        let values = [
            -10,
            -1,
            0,
            1,
            9,
            10,
            99,
            100,
            101,
            255,
            256,
            9_999,
            10_000,
            -123_456_789,
            1_700_000_040_000,
            i64::MIN,
            i64::MAX,
        ];
        let mut out = Vec::new();
        let mut f = CsvFields::new(&mut out);
        for value in values {
            f.int(value);
        }
        let wide = [i128::from(i64::MIN) - 1, -1, 0, 9, 10, i128::from(i64::MAX) + 1, i128::MIN, i128::MAX];
        for value in wide {
            f.wide(value);
        }
        let expected: Vec<String> =
            values.iter().map(|v| v.to_string()).chain(wide.iter().map(|v| v.to_string())).collect();
        assert_eq!(String::from_utf8(out).unwrap(), expected.join(","));
    }

    #[test]
    fn tsv_escaping_round_trips() {
        for value in ["plain", "tab\there", "line\nend\r", "back\\slash", "x'); DROP TABLE word_counts; --", "nul\0"] {
            let mut out = Vec::new();
            escape_tsv(&mut out, value);
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains('\t') && !text.contains('\n'), "{text:?}");
            assert_eq!(unescape_tsv(&text), value);
        }
    }
}
