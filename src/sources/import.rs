//! `chatflow import`: real chat logs → chat event JSONL.
//!
//! * `twitch-csv`: `Timestamp,Channel,User,Message` files, with or without a header; a header
//!   may also name the columns `time,username,channel,message` in any order. Blank lines are
//!   skipped.
//! * `twitch-irc`: raw IRC logs, `<YYYY-MM-DD_HH:MM:SS> ;;; <irc line>`, where further IRC
//!   lines without a timestamp belong to the last timestamp. `PRIVMSG` lines become chat
//!   events; server numerics, `JOIN`, `PING` and the like are skipped and counted.
//!
//! In both, a `/me` message (`\x01ACTION text\x01`) becomes its text and U+E0000 (an invisible
//! tag used to dodge duplicate-message filters) is removed. Timestamps without a zone are UTC.
//! Lines that cannot be parsed are counted and reported with their line numbers; they never
//! stop the import.

use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime};

use crate::sources::decode::{event_too_long, write_chat_line, write_edge_line, MAX_RECORD_BYTES};

/// The log formats `chatflow import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// `Timestamp,Channel,User,Message` CSV (header optional).
    TwitchCsv,
    /// Raw Twitch IRC log with `<date> ;;; ` timestamps.
    TwitchIrc,
    /// Edge lists: `from,to` or `Source,Target,Weight` (header optional).
    EdgesCsv,
    /// Tweets (API v1.1 or v2, JSON lines or an array; MapTweet CSV) to post events.
    Tweets,
}

/// Settings of an import beyond the format.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// `ts` of imported edges, which the edge lists do not carry (ms since the epoch).
    pub edge_ts: i64,
}

/// A line that could not be imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unparsed {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// What an import read and wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub events: u64,
    /// IRC server lines (numerics, JOIN, PING, …) and log banners, skipped on purpose.
    pub skipped: u64,
    pub unparsed: Vec<Unparsed>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "imported {} events", self.events)?;
        if self.skipped > 0 {
            write!(f, ", skipped {} server lines", self.skipped)?;
        }
        write!(f, ", {} lines could not be parsed", self.unparsed.len())?;
        const SHOWN: usize = 50;
        for u in self.unparsed.iter().take(SHOWN) {
            write!(f, "\n  {}:{}: {}", u.file, u.line, u.reason)?;
        }
        if self.unparsed.len() > SHOWN {
            write!(f, "\n  … and {} more", self.unparsed.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Imports `files` in `format`, writing one chat event per line to `out`.
pub fn import(
    format: ImportFormat,
    files: &[impl AsRef<Path>],
    options: &ImportOptions,
    out: &mut impl Write,
) -> io::Result<ImportReport> {
    let mut report = ImportReport::default();
    for file in files {
        let file = file.as_ref();
        let name = file.display().to_string();
        let open_error = |e: io::Error| io::Error::new(e.kind(), format!("{name}: {e}"));
        match format {
            ImportFormat::TwitchIrc => {
                let reader = io::BufReader::new(std::fs::File::open(file).map_err(open_error)?);
                import_irc(&name, reader, out, &mut report)?
            }
            _ => {
                let data = std::fs::read(file).map_err(open_error)?;
                import_into(format, &name, &data, options, out, &mut report)?
            }
        }
    }
    out.flush()?;
    Ok(report)
}

/// Imports the bytes of one file named `name` (as [`import`] does a file), adding to `report`.
pub fn import_into(
    format: ImportFormat,
    name: &str,
    data: &[u8],
    options: &ImportOptions,
    out: &mut impl Write,
    report: &mut ImportReport,
) -> io::Result<()> {
    match format {
        ImportFormat::TwitchCsv => {
            let mut format = ChatCsv { columns: Columns { ts: 0, channel: 1, user: 2, text: 3 } };
            import_csv(name, data, &mut format, out, report)
        }
        ImportFormat::EdgesCsv => {
            let mut format = EdgeCsv { src: 0, dst: 1, weight: None, width: 0, ts: options.edge_ts };
            import_csv(name, data, &mut format, out, report)
        }
        ImportFormat::Tweets => crate::sources::tweets::import_tweets(name, data, out, report),
        ImportFormat::TwitchIrc => import_irc(name, data, out, report),
    }
}

fn write_event(out: &mut impl Write, ts: i64, channel: &str, user: &str, text: &str) -> io::Result<()> {
    write_chat_line(out, ts, channel, user, &clean_text(text))
}

/// Removes what Twitch clients add around a message: the `/me` wrapper and U+E0000.
pub fn clean_text(text: &str) -> String {
    let mut text = text;
    if let Some(inner) = text.strip_prefix("\u{1}ACTION ") {
        text = inner.strip_suffix('\u{1}').unwrap_or(inner);
    }
    let cleaned: String = text.chars().filter(|&c| c != '\u{e0000}').collect();
    cleaned.trim_end().to_owned()
}

/// Parses the timestamps of the logs: RFC 3339, or `YYYY-MM-DD[T ]HH:MM:SS[.frac]` and the IRC
/// logs' `YYYY-MM-DD_HH:MM:SS` read as UTC. Returns milliseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d_%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc().timestamp_millis())
}

struct Columns {
    ts: usize,
    channel: usize,
    user: usize,
    text: usize,
}

fn header_columns(fields: &[String]) -> Option<Columns> {
    let find = |names: &[&str]| fields.iter().position(|f| names.contains(&f.trim().to_lowercase().as_str()));
    Some(Columns {
        ts: find(&["timestamp", "time", "ts"])?,
        channel: find(&["channel"])?,
        user: find(&["user", "username"])?,
        text: find(&["message", "text", "msg"])?,
    })
}

/// What distinguishes one CSV log format from another: its header and its records.
trait CsvFormat {
    /// Reads the first record: `Ok(true)` if it is a header (now remembered), `Ok(false)` if it
    /// is data, `Err` if the file is not of this format at all.
    fn header(&mut self, fields: &[String]) -> Result<bool, String>;
    /// The event line (JSON, without line end) of a data record, or why it cannot be imported.
    fn record(&mut self, fields: &[String]) -> Result<String, String>;
}

/// `Timestamp,Channel,User,Message` chat logs; a header may name and order the columns.
struct ChatCsv {
    columns: Columns,
}

impl CsvFormat for ChatCsv {
    fn header(&mut self, fields: &[String]) -> Result<bool, String> {
        if parse_timestamp(&fields[0]).is_some() {
            return Ok(false);
        }
        match header_columns(fields) {
            Some(columns) => {
                self.columns = columns;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn record(&mut self, fields: &[String]) -> Result<String, String> {
        let c = &self.columns;
        let width = c.ts.max(c.channel).max(c.user).max(c.text) + 1;
        if fields.len() < width {
            return Err(format!("expected {width} fields, found {}", fields.len()));
        }
        let ts = parse_timestamp(&fields[c.ts]).ok_or_else(|| format!("bad timestamp {:?}", fields[c.ts]))?;
        let channel = fields[c.channel].trim().trim_start_matches('#');
        let user = fields[c.user].trim();
        if channel.is_empty() || user.is_empty() {
            return Err("empty channel or user".into());
        }
        let mut line = Vec::new();
        write_chat_line(&mut line, ts, channel, user, &clean_text(&fields[c.text])).map_err(|e| e.to_string())?;
        line.pop();
        Ok(String::from_utf8(line).expect("JSON is UTF-8"))
    }
}

/// Edge lists: `from,to` (MUSAE) or `Source,Target,Weight` (viewer overlap), header optional;
/// the weight defaults to 1 and may have thousands separators (`1,234`).
struct EdgeCsv {
    src: usize,
    dst: usize,
    weight: Option<usize>,
    /// Fields per record, fixed by the header or the first record: an unquoted `1,234`
    /// shows up as one field too many and is refused rather than misread.
    width: usize,
    ts: i64,
}

/// An integer with optional thousands separators (`12,345` or `12 345`).
fn parse_weight(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(w) = s.parse() {
        return Some(w);
    }
    let (sign, digits) = s.strip_prefix('-').map_or(("", s), |d| ("-", d));
    let sep = if digits.contains(',') { ',' } else { ' ' };
    let groups: Vec<&str> = digits.split(sep).collect();
    let well_grouped = groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && groups[1..].iter().all(|g| g.len() == 3)
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()));
    well_grouped.then(|| format!("{sign}{}", groups.concat()).parse().ok()).flatten()
}

impl CsvFormat for EdgeCsv {
    fn header(&mut self, fields: &[String]) -> Result<bool, String> {
        let names: Vec<String> = fields.iter().map(|f| f.trim().to_lowercase()).collect();
        let find = |options: &[&str]| names.iter().position(|n| options.contains(&n.as_str()));
        if let (Some(src), Some(dst)) = (find(&["from", "source", "src"]), find(&["to", "target", "dst"])) {
            self.src = src;
            self.dst = dst;
            self.weight = find(&["weight", "weights"]);
            self.width = fields.len();
            return Ok(true);
        }
        self.weight = (fields.len() > 2).then_some(2);
        self.width = fields.len();
        match self.record(fields) {
            Ok(_) => Ok(false),
            Err(e) => Err(format!(
                "not an edge list: the first line {:?} is neither a header naming from/to or \
                 Source/Target columns nor an edge ({e})",
                fields.join(",")
            )),
        }
    }

    fn record(&mut self, fields: &[String]) -> Result<String, String> {
        if fields.len() != self.width || self.width < 2 || self.width <= self.src.max(self.dst) {
            return Err(format!("expected {} fields, found {}", self.width.max(2), fields.len()));
        }
        let (src, dst) = (fields[self.src].trim(), fields[self.dst].trim());
        if src.is_empty() || dst.is_empty() {
            return Err("empty source or target".into());
        }
        let weight = match self.weight {
            None => 1,
            Some(w) => parse_weight(&fields[w]).ok_or_else(|| format!("weight {:?} is not an integer", fields[w]))?,
        };
        let max = crate::sources::decode::MAX_WEIGHT;
        if !(-max..=max).contains(&weight) {
            return Err(format!("weight {weight} is outside -{max}..={max} (2³¹)"));
        }
        let mut line = Vec::new();
        write_edge_line(&mut line, self.ts, src, dst, weight).map_err(|e| e.to_string())?;
        line.pop();
        Ok(String::from_utf8(line).expect("JSON is UTF-8"))
    }
}

/// A parsed CSV record waiting to be written.
struct Held {
    start: usize,
    line: u64,
    event: String,
}

/// Physical line numbers of byte offsets: the csv crate's own line count skips blank lines.
struct LineIndex {
    newlines: Vec<usize>,
}

impl LineIndex {
    fn new(data: &[u8]) -> Self {
        LineIndex { newlines: memchr::memchr_iter(b'\n', data).collect() }
    }
    /// The 1-based line of the first byte at or after `offset` that is not a line end.
    fn line_of(&self, data: &[u8], mut offset: usize) -> u64 {
        while offset < data.len() && (data[offset] == b'\n' || data[offset] == b'\r') {
            offset += 1;
        }
        self.newlines.partition_point(|&n| n < offset) as u64 + 1
    }
}

/// Imports one CSV log in `format`, read whole (line numbers and the truncation check need the
/// bytes).
fn import_csv(
    name: &str,
    data: &[u8],
    format: &mut dyn CsvFormat,
    out: &mut impl Write,
    report: &mut ImportReport,
) -> io::Result<()> {
    let lines = LineIndex::new(data);
    // Each record is written once the next one has been read, so that the last one can be
    // checked for truncation first.
    let mut held: Option<Held> = None;
    let flush = |held: Held, out: &mut dyn Write, report: &mut ImportReport| -> io::Result<()> {
        writeln!(out, "{}", held.event)?;
        report.events += 1;
        Ok(())
    };
    let mut csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(data);
    let mut first = true;
    let mut record = csv::ByteRecord::new();
    loop {
        let start = csv.position().byte() as usize;
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = lines.line_of(data, e.position().map_or(start, |p| p.byte() as usize));
                report.unparsed.push(Unparsed { file: name.into(), line, reason: format!("bad CSV: {e}") });
                continue;
            }
        }
        let start = record.position().map_or(start, |p| p.byte() as usize);
        let line = lines.line_of(data, start);
        let mut bad = |reason: String| report.unparsed.push(Unparsed { file: name.into(), line, reason });
        if record.as_slice().len() > MAX_RECORD_BYTES {
            bad(format!("record of {} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes", record.as_slice().len()));
            continue;
        }
        let fields: Vec<String> = match record.iter().map(|f| std::str::from_utf8(f).map(str::to_owned)).collect() {
            Ok(fields) => fields,
            Err(e) => {
                bad(format!("invalid UTF-8: {e}"));
                continue;
            }
        };
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if first {
            first = false;
            match format.header(&fields) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(reason) => {
                    bad(reason);
                    return Ok(());
                }
            }
        }
        match format.record(&fields) {
            Ok(event) if event.len() > MAX_RECORD_BYTES => bad(event_too_long(event.len())),
            Ok(event) => {
                if let Some(previous) = held.replace(Held { start, line, event }) {
                    flush(previous, out, report)?;
                }
            }
            Err(reason) => bad(reason),
        }
    }
    if let Some(last) = held {
        // Cut off: the data ends without a line end inside a quoted field.
        let tail = &data[last.start..];
        let truncated = !data.ends_with(b"\n") && memchr::memchr_iter(b'"', tail).count() % 2 == 1;
        if truncated {
            report.unparsed.push(Unparsed {
                file: name.into(),
                line: last.line,
                reason: "truncated: the file ends inside a quoted field".into(),
            });
        } else {
            flush(last, out, report)?;
        }
    }
    Ok(())
}

/// What one IRC line is. Shared by `import --from twitch-irc` and the live bridge
/// (`produce --from-irc`).
#[derive(Debug, PartialEq, Eq)]
pub enum IrcLine<'a> {
    /// A chat message; `tags` are the IRCv3 tags as sent (`key=value;…`, escaped), `user`
    /// the sender's login (the prefix's nick).
    Message { tags: &'a str, user: &'a str, channel: &'a str, text: &'a str },
    /// `PING :token`: the server wants `PONG :token` back.
    Ping(&'a str),
    /// The server is about to restart: connect again.
    Reconnect,
    /// Any other command or numeric reply.
    Server,
}

/// The value of IRCv3 tag `key` in `tags` (`a=1;b=x\sy`), unescaped.
pub fn irc_tag(tags: &str, key: &str) -> Option<String> {
    let value = tags.split(';').find_map(|t| t.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))?;
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some(':') => out.push(';'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    Some(out)
}

/// Parses one IRC line (without its line end).
pub fn parse_irc(line: &str) -> Result<IrcLine<'_>, String> {
    let mut rest = line;
    let mut tags = "";
    if let Some(tagged) = rest.strip_prefix('@') {
        // IRCv3 tags: `@key=value;… :prefix COMMAND …`
        let (t, r) = tagged.split_once(' ').ok_or("tags without a command")?;
        tags = t;
        rest = r;
    }
    let prefix = if let Some(r) = rest.strip_prefix(':') {
        let (prefix, r) = r.split_once(' ').ok_or("prefix without a command")?;
        rest = r;
        Some(prefix)
    } else {
        None
    };
    let (command, params) = rest.split_once(' ').unwrap_or((rest, ""));
    if command == "PRIVMSG" {
        let nick =
            prefix.and_then(|p| p.split('!').next()).filter(|n| !n.is_empty()).ok_or("PRIVMSG without a sender")?;
        let (target, text) = params.split_once(" :").ok_or("PRIVMSG without text")?;
        let channel = target.trim().strip_prefix('#').filter(|c| !c.is_empty()).ok_or("PRIVMSG to no channel")?;
        return Ok(IrcLine::Message { tags, user: nick, channel, text });
    }
    match command {
        "PING" => return Ok(IrcLine::Ping(params.strip_prefix(':').unwrap_or(params))),
        "RECONNECT" => return Ok(IrcLine::Reconnect),
        _ => {}
    }
    let is_command = !command.is_empty()
        && (command.chars().all(|c| c.is_ascii_uppercase())
            || (command.len() == 3 && command.chars().all(|c| c.is_ascii_digit())));
    if is_command {
        Ok(IrcLine::Server)
    } else {
        Err(format!("not an IRC line: {:?}", truncate(line, 80)))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn import_irc(name: &str, mut reader: impl BufRead, out: &mut impl Write, report: &mut ImportReport) -> io::Result<()> {
    let mut raw = Vec::new();
    let mut line_no = 0u64;
    let mut current: Option<i64> = None;
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        line_no += 1;
        let mut bad = |reason: String| report.unparsed.push(Unparsed { file: name.into(), line: line_no, reason });
        if raw.len() > MAX_RECORD_BYTES {
            bad(format!("line of {} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes", raw.len()));
            continue;
        }
        let line = match std::str::from_utf8(&raw) {
            Ok(line) => line.trim_end_matches(['\n', '\r']),
            Err(e) => {
                bad(format!("invalid UTF-8: {e}"));
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let irc = match line.split_once(" ;;; ") {
            Some((stamp, irc)) => match parse_timestamp(stamp) {
                Some(ts) => {
                    current = Some(ts);
                    irc
                }
                None => {
                    current = None;
                    bad(format!("bad timestamp {:?}", truncate(stamp, 40)));
                    continue;
                }
            },
            None => line,
        };
        if irc.starts_with("START OF RECORDED CHAT") {
            report.skipped += 1;
            continue;
        }
        match parse_irc(irc) {
            Ok(IrcLine::Server | IrcLine::Ping(_) | IrcLine::Reconnect) => report.skipped += 1,
            Ok(IrcLine::Message { user, channel, text, .. }) => match current {
                Some(ts) => {
                    let mut event = Vec::new();
                    write_event(&mut event, ts, channel, user, text)?;
                    if event.len() > MAX_RECORD_BYTES + 1 {
                        bad(event_too_long(event.len() - 1));
                    } else {
                        out.write_all(&event)?;
                        report.events += 1;
                    }
                }
                None => bad("message before any timestamp".into()),
            },
            Err(reason) => bad(reason),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.5"), Some(1500));
        assert_eq!(parse_timestamp("1970-01-01 00:01:00"), Some(60_000));
        assert_eq!(parse_timestamp("1970-01-01_00:00:02"), Some(2000));
        assert_eq!(parse_timestamp("1970-01-01T00:00:03Z"), Some(3000));
        assert_eq!(parse_timestamp("1970-01-01T01:00:03+01:00"), Some(3000));
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    /// Found by the fuzz harness: a message under the record limit whose event is over it
    /// (control characters grow sixfold in JSON) is a reported line, in CSV and in IRC logs.
    #[test]
    fn an_event_that_would_outgrow_the_limit_is_reported() {
        let text = "\u{1}".repeat(200_000);
        for (format, data) in [
            (ImportFormat::TwitchCsv, format!("2024-05-03 18:00:01,c,u,{text}\n2024-05-03 18:00:02,c,u,ok\n")),
            (
                ImportFormat::TwitchIrc,
                format!("2024-05-03_18:00:01 ;;; :u!u@u.tmi.twitch.tv PRIVMSG #c :{text}\n:u!u@u.tmi.twitch.tv PRIVMSG #c :ok\n"),
            ),
        ] {
            let (mut out, mut report) = (Vec::new(), ImportReport::default());
            import_into(format, "f", data.as_bytes(), &ImportOptions::default(), &mut out, &mut report).unwrap();
            assert_eq!((report.events, report.unparsed.len()), (1, 1), "{format:?}: {report}");
            assert!(report.unparsed[0].reason.contains("over the limit"), "{format:?}: {report}");
            assert!(crate::sources::decode::decode(out.trim_ascii_end()).is_ok());
        }
    }

    #[test]
    fn edge_weights_are_bounded() {
        let mut csv = EdgeCsv { src: 0, dst: 1, weight: Some(2), width: 3, ts: 0 };
        let row = |w: &str| vec!["a".to_owned(), "b".to_owned(), w.to_owned()];
        assert!(csv.record(&row("2,147,483,648")).unwrap().contains("\"weight\":2147483648"));
        assert!(csv.record(&row("-2147483648")).is_ok());
        let e = csv.record(&row("2147483649")).unwrap_err();
        assert!(e.contains("weight 2147483649 is outside"), "{e}");
        let e = csv.record(&row("9223372036854775807")).unwrap_err();
        assert!(e.contains("outside"), "{e}");
    }

    #[test]
    fn text_cleaning() {
        assert_eq!(clean_text("\u{1}ACTION waves\u{1}"), "waves");
        assert_eq!(clean_text("\u{1}ACTION cut off"), "cut off");
        assert_eq!(clean_text("same again \u{e0000}"), "same again");
        assert_eq!(clean_text("a\u{e0000}b"), "ab");
    }

    #[test]
    fn irc_lines() {
        assert_eq!(
            parse_irc(":bob!bob@bob.tmi.twitch.tv PRIVMSG #chan :hi :) there"),
            Ok(IrcLine::Message { tags: "", user: "bob", channel: "chan", text: "hi :) there" })
        );
        assert_eq!(
            parse_irc("@badge-info=;color=#FF0000 :al!al@al.tmi.twitch.tv PRIVMSG #c ::rabbit: x"),
            Ok(IrcLine::Message { tags: "badge-info=;color=#FF0000", user: "al", channel: "c", text: ":rabbit: x" })
        );
        assert_eq!(irc_tag("a=1;display-name=Al\\sB;tmi-sent-ts=17", "display-name").as_deref(), Some("Al B"));
        assert_eq!(irc_tag("a=1;tmi-sent-ts=17", "tmi-sent-ts").as_deref(), Some("17"));
        assert_eq!(irc_tag("a=1", "b"), None);
        assert_eq!(parse_irc(":tmi.twitch.tv 001 me :Welcome, GLHF!"), Ok(IrcLine::Server));
        assert_eq!(parse_irc(":me!me@me.tmi.twitch.tv JOIN #chan"), Ok(IrcLine::Server));
        assert_eq!(parse_irc("PING :tmi.twitch.tv"), Ok(IrcLine::Ping("tmi.twitch.tv")));
        assert_eq!(parse_irc(":tmi.twitch.tv RECONNECT"), Ok(IrcLine::Reconnect));
        assert!(parse_irc(":bob!bob@bob PRIVMSG #chan").is_err());
        assert!(parse_irc("garbage here").is_err());
    }
}
