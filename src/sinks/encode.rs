//! Updates → rows: the column names of each view (DESIGN.md) and how a row becomes fields.
//! Every sink writes a view's row, then `time`, then `diff`.

use dataflows::*;

/// Receives a row's fields in column order; each sink format implements it.
pub trait Fields {
    fn text(&mut self, value: &str);
    fn int(&mut self, value: i64);
}

/// A row of a view, with the view's name and column names.
pub trait ViewRow: differential_dataflow::ExchangeData + std::hash::Hash {
    /// The view's name: the CSV file stem and the ClickHouse table.
    const VIEW: &'static str;
    /// The view's columns, in order (without `time` and `diff`).
    const COLUMNS: &'static [&'static str];
    /// The columns that hold integers (the others hold text).
    const INT_COLUMNS: &'static [&'static str];
    /// Hands the row's fields to `out`, in column order.
    fn fields(&self, out: &mut impl Fields);
}

/// CSV fields appended to a byte buffer: comma-separated, quoted (RFC 4180) when a field holds
/// a comma, a quote or a line end, or is empty.
pub struct CsvFields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> CsvFields<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        CsvFields { out, first: true }
    }
    fn separate(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
    }
}

impl Fields for CsvFields<'_> {
    fn text(&mut self, value: &str) {
        self.separate();
        let bytes = value.as_bytes();
        if bytes.is_empty() || bytes.iter().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
            self.out.push(b'"');
            for &b in bytes {
                if b == b'"' {
                    self.out.push(b'"');
                }
                self.out.push(b);
            }
            self.out.push(b'"');
        } else {
            self.out.extend_from_slice(bytes);
        }
    }
    fn int(&mut self, value: i64) {
        self.separate();
        self.out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }
}

impl ViewRow for WordCount {
    const VIEW: &'static str = "word_counts";
    const COLUMNS: &'static [&'static str] = &["channel", "window_start", "word", "count"];
    const INT_COLUMNS: &'static [&'static str] = &["window_start", "count"];
    fn fields(&self, r: &mut impl Fields) {
        r.text(&self.channel);
        r.int(self.window_start);
        r.text(&self.word);
        r.int(self.count);
    }
}

impl ViewRow for ChannelActivity {
    const VIEW: &'static str = "channel_activity";
    const COLUMNS: &'static [&'static str] = &["channel", "window_start", "messages", "words", "chatters"];
    const INT_COLUMNS: &'static [&'static str] = &["window_start", "messages", "words", "chatters"];
    fn fields(&self, r: &mut impl Fields) {
        r.text(&self.channel);
        r.int(self.window_start);
        r.int(self.messages);
        r.int(self.words);
        r.int(self.chatters);
    }
}

impl ViewRow for UserCount {
    const VIEW: &'static str = "user_counts";
    const COLUMNS: &'static [&'static str] = &["channel", "user", "messages"];
    const INT_COLUMNS: &'static [&'static str] = &["messages"];
    fn fields(&self, r: &mut impl Fields) {
        r.text(&self.channel);
        r.text(&self.user);
        r.int(self.messages);
    }
}

impl ViewRow for TopWord {
    const VIEW: &'static str = "top_words";
    const COLUMNS: &'static [&'static str] = &["channel", "rank", "word", "count"];
    const INT_COLUMNS: &'static [&'static str] = &["rank", "count"];
    fn fields(&self, r: &mut impl Fields) {
        r.text(&self.channel);
        r.int(i64::from(self.rank));
        r.text(&self.word);
        r.int(self.count);
    }
}

impl ViewRow for TopUser {
    const VIEW: &'static str = "top_users";
    const COLUMNS: &'static [&'static str] = &["channel", "rank", "user", "messages"];
    const INT_COLUMNS: &'static [&'static str] = &["rank", "messages"];
    fn fields(&self, r: &mut impl Fields) {
        r.text(&self.channel);
        r.int(i64::from(self.rank));
        r.text(&self.user);
        r.int(self.messages);
    }
}

impl ViewRow for Connection {
    const VIEW: &'static str = "connections";
    const COLUMNS: &'static [&'static str] = &["user_a", "user_b", "strength"];
    const INT_COLUMNS: &'static [&'static str] = &["strength"];
    fn fields(&self, r: &mut impl Fields) {
        r.text(&self.user_a);
        r.text(&self.user_b);
        r.int(self.strength);
    }
}

impl ViewRow for Reach {
    const VIEW: &'static str = "reach";
    const COLUMNS: &'static [&'static str] = &["user", "other", "hops", "walks"];
    const INT_COLUMNS: &'static [&'static str] = &["hops", "walks"];
    fn fields(&self, r: &mut impl Fields) {
        r.text(&self.user);
        r.text(&self.other);
        r.int(i64::from(self.hops));
        r.int(self.walks);
    }
}

impl ViewRow for TopConnection {
    const VIEW: &'static str = "top_connections";
    const COLUMNS: &'static [&'static str] = &["user", "rank", "other", "strength", "walks2", "walks3"];
    const INT_COLUMNS: &'static [&'static str] = &["rank", "strength", "walks2", "walks3"];
    fn fields(&self, r: &mut impl Fields) {
        r.text(&self.user);
        r.int(i64::from(self.rank));
        r.text(&self.other);
        r.int(self.strength);
        r.int(self.walks2);
        r.int(self.walks3);
    }
}

impl ViewRow for DeadLetter {
    const VIEW: &'static str = "dead_letters";
    const COLUMNS: &'static [&'static str] = &["source", "position", "error", "raw"];
    const INT_COLUMNS: &'static [&'static str] = &[];
    fn fields(&self, r: &mut impl Fields) {
        r.text(&self.source);
        r.text(&self.position);
        r.text(&self.error);
        r.text(&self.raw);
    }
}

/// The header of a view's change file: its columns, then `time`, `diff`.
pub fn csv_header<R: ViewRow>() -> Vec<u8> {
    let mut out = Vec::new();
    let mut fields = CsvFields::new(&mut out);
    for c in R::COLUMNS.iter().chain(&["time", "diff"]) {
        fields.text(c);
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
