//! Updates → rows: the column names of each view (DESIGN.md) and how a row becomes fields.
//! Every sink writes a view's row, then `time`, then `diff`.

use dataflows::*;

/// A row of a view, with the view's name and column names.
pub trait ViewRow: differential_dataflow::ExchangeData + std::hash::Hash {
    /// The view's name: the CSV file stem and the ClickHouse table.
    const VIEW: &'static str;
    /// The view's columns, in order (without `time` and `diff`).
    const COLUMNS: &'static [&'static str];
    /// Appends the row's fields, in column order.
    fn push_fields(&self, record: &mut csv::ByteRecord);
}

fn int(record: &mut csv::ByteRecord, value: impl itoa::Integer) {
    record.push_field(itoa::Buffer::new().format(value).as_bytes());
}

fn text(record: &mut csv::ByteRecord, value: &str) {
    record.push_field(value.as_bytes());
}

impl ViewRow for WordCount {
    const VIEW: &'static str = "word_counts";
    const COLUMNS: &'static [&'static str] = &["channel", "window_start", "word", "count"];
    fn push_fields(&self, r: &mut csv::ByteRecord) {
        text(r, &self.channel);
        int(r, self.window_start);
        text(r, &self.word);
        int(r, self.count);
    }
}

impl ViewRow for ChannelActivity {
    const VIEW: &'static str = "channel_activity";
    const COLUMNS: &'static [&'static str] = &["channel", "window_start", "messages", "words", "chatters"];
    fn push_fields(&self, r: &mut csv::ByteRecord) {
        text(r, &self.channel);
        int(r, self.window_start);
        int(r, self.messages);
        int(r, self.words);
        int(r, self.chatters);
    }
}

impl ViewRow for UserCount {
    const VIEW: &'static str = "user_counts";
    const COLUMNS: &'static [&'static str] = &["channel", "user", "messages"];
    fn push_fields(&self, r: &mut csv::ByteRecord) {
        text(r, &self.channel);
        text(r, &self.user);
        int(r, self.messages);
    }
}

impl ViewRow for TopWord {
    const VIEW: &'static str = "top_words";
    const COLUMNS: &'static [&'static str] = &["channel", "rank", "word", "count"];
    fn push_fields(&self, r: &mut csv::ByteRecord) {
        text(r, &self.channel);
        int(r, self.rank);
        text(r, &self.word);
        int(r, self.count);
    }
}

impl ViewRow for TopUser {
    const VIEW: &'static str = "top_users";
    const COLUMNS: &'static [&'static str] = &["channel", "rank", "user", "messages"];
    fn push_fields(&self, r: &mut csv::ByteRecord) {
        text(r, &self.channel);
        int(r, self.rank);
        text(r, &self.user);
        int(r, self.messages);
    }
}

impl ViewRow for DeadLetter {
    const VIEW: &'static str = "dead_letters";
    const COLUMNS: &'static [&'static str] = &["source", "position", "error", "raw"];
    fn push_fields(&self, r: &mut csv::ByteRecord) {
        text(r, &self.source);
        text(r, &self.position);
        text(r, &self.error);
        text(r, &self.raw);
    }
}

/// The header of a view's change file: its columns, then `time`, `diff`.
pub fn header<R: ViewRow>() -> csv::ByteRecord {
    let mut record = csv::ByteRecord::new();
    for c in R::COLUMNS.iter().chain(&["time", "diff"]) {
        record.push_field(c.as_bytes());
    }
    record
}

/// The change-file record of one update.
pub fn update_record<R: ViewRow>(row: &R, time: u64, diff: Diff, record: &mut csv::ByteRecord) {
    record.clear();
    row.push_fields(record);
    int(record, time);
    int(record, diff);
}
