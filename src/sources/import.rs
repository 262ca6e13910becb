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

use crate::sources::decode::{write_chat_line, MAX_RECORD_BYTES};

/// The log formats `chatflow import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// `Timestamp,Channel,User,Message` CSV (header optional).
    TwitchCsv,
    /// Raw Twitch IRC log with `<date> ;;; ` timestamps.
    TwitchIrc,
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
        write!(f, "imported {} chat events", self.events)?;
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
pub fn import(format: ImportFormat, files: &[impl AsRef<Path>], out: &mut impl Write) -> io::Result<ImportReport> {
    let mut report = ImportReport::default();
    for file in files {
        let file = file.as_ref();
        let name = file.display().to_string();
        let open_error = |e: io::Error| io::Error::new(e.kind(), format!("{name}: {e}"));
        match format {
            ImportFormat::TwitchCsv => {
                let data = std::fs::read(file).map_err(open_error)?;
                import_csv(&name, &data, out, &mut report)?
            }
            ImportFormat::TwitchIrc => {
                let reader = io::BufReader::new(std::fs::File::open(file).map_err(open_error)?);
                import_irc(&name, reader, out, &mut report)?
            }
        }
    }
    out.flush()?;
    Ok(report)
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
    let find = |names: &[&str]| {
        fields
            .iter()
            .position(|f| names.contains(&f.trim().to_lowercase().as_str()))
    };
    Some(Columns {
        ts: find(&["timestamp", "time", "ts"])?,
        channel: find(&["channel"])?,
        user: find(&["user", "username"])?,
        text: find(&["message", "text", "msg"])?,
    })
}

/// A parsed CSV record waiting to be written.
struct Held {
    start: usize,
    line: u64,
    ts: i64,
    channel: String,
    user: String,
    text: String,
}

/// Physical line numbers of byte offsets: the csv crate's own line count skips blank lines.
struct LineIndex {
    newlines: Vec<usize>,
}

impl LineIndex {
    fn new(data: &[u8]) -> Self {
        LineIndex {
            newlines: memchr::memchr_iter(b'\n', data).collect(),
        }
    }
    /// The 1-based line of the first byte at or after `offset` that is not a line end.
    fn line_of(&self, data: &[u8], mut offset: usize) -> u64 {
        while offset < data.len() && (data[offset] == b'\n' || data[offset] == b'\r') {
            offset += 1;
        }
        self.newlines.partition_point(|&n| n < offset) as u64 + 1
    }
}

/// Imports one CSV log, read whole (line numbers and the truncation check need the bytes).
fn import_csv(name: &str, data: &[u8], out: &mut impl Write, report: &mut ImportReport) -> io::Result<()> {
    let lines = LineIndex::new(data);
    // Each record is written once the next one has been read, so that the last one can be
    // checked for truncation first.
    let mut held: Option<Held> = None;
    let flush = |held: Held, out: &mut _, report: &mut ImportReport| -> io::Result<()> {
        write_event(out, held.ts, &held.channel, &held.user, &held.text)?;
        report.events += 1;
        Ok(())
    };
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut columns: Option<Columns> = None;
    let mut first = true;
    let mut record = csv::ByteRecord::new();
    loop {
        let start = csv.position().byte() as usize;
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = lines.line_of(data, e.position().map_or(start, |p| p.byte() as usize));
                report.unparsed.push(Unparsed {
                    file: name.into(),
                    line,
                    reason: format!("bad CSV: {e}"),
                });
                continue;
            }
        }
        let start = record.position().map_or(start, |p| p.byte() as usize);
        let line = lines.line_of(data, start);
        let mut bad = |reason: String| {
            report.unparsed.push(Unparsed {
                file: name.into(),
                line,
                reason,
            })
        };
        if record.as_slice().len() > MAX_RECORD_BYTES {
            bad(format!(
                "record of {} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes",
                record.as_slice().len()
            ));
            continue;
        }
        let fields: Vec<String> = match record
            .iter()
            .map(|f| std::str::from_utf8(f).map(str::to_owned))
            .collect()
        {
            Ok(fields) => fields,
            Err(e) => {
                bad(format!("invalid UTF-8: {e}"));
                continue;
            }
        };
        if fields.len() == 1 && fields[0].trim().is_empty() {
            continue;
        }
        if first {
            first = false;
            if parse_timestamp(&fields[0]).is_none() {
                if let Some(c) = header_columns(&fields) {
                    columns = Some(c);
                    continue;
                }
            }
        }
        let c = columns.get_or_insert(Columns {
            ts: 0,
            channel: 1,
            user: 2,
            text: 3,
        });
        let width = c.ts.max(c.channel).max(c.user).max(c.text) + 1;
        if fields.len() < width {
            bad(format!("expected {width} fields, found {}", fields.len()));
            continue;
        }
        let Some(ts) = parse_timestamp(&fields[c.ts]) else {
            bad(format!("bad timestamp {:?}", fields[c.ts]));
            continue;
        };
        let channel = fields[c.channel].trim().trim_start_matches('#');
        let user = fields[c.user].trim();
        if channel.is_empty() || user.is_empty() {
            bad("empty channel or user".into());
            continue;
        }
        let next = Held {
            start,
            line,
            ts,
            channel: channel.to_owned(),
            user: user.to_owned(),
            text: fields[c.text].clone(),
        };
        if let Some(previous) = held.replace(next) {
            flush(previous, out, report)?;
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

/// What one IRC line is.
#[derive(Debug, PartialEq, Eq)]
enum IrcLine<'a> {
    Message {
        user: &'a str,
        channel: &'a str,
        text: &'a str,
    },
    Server,
}

fn parse_irc(line: &str) -> Result<IrcLine<'_>, String> {
    let mut rest = line;
    if rest.starts_with('@') {
        // IRCv3 tags: `@key=value;… :prefix COMMAND …`
        rest = rest.split_once(' ').map(|(_, r)| r).ok_or("tags without a command")?;
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
        let nick = prefix
            .and_then(|p| p.split('!').next())
            .filter(|n| !n.is_empty())
            .ok_or("PRIVMSG without a sender")?;
        let (target, text) = params.split_once(" :").ok_or("PRIVMSG without text")?;
        let channel = target
            .trim()
            .strip_prefix('#')
            .filter(|c| !c.is_empty())
            .ok_or("PRIVMSG to no channel")?;
        return Ok(IrcLine::Message {
            user: nick,
            channel,
            text,
        });
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
        let mut bad = |reason: String| {
            report.unparsed.push(Unparsed {
                file: name.into(),
                line: line_no,
                reason,
            })
        };
        if raw.len() > MAX_RECORD_BYTES {
            bad(format!(
                "line of {} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes",
                raw.len()
            ));
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
            Ok(IrcLine::Server) => report.skipped += 1,
            Ok(IrcLine::Message { user, channel, text }) => match current {
                Some(ts) => {
                    write_event(out, ts, channel, user, text)?;
                    report.events += 1;
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
            Ok(IrcLine::Message {
                user: "bob",
                channel: "chan",
                text: "hi :) there"
            })
        );
        assert_eq!(
            parse_irc("@badge-info=;color=#FF0000 :al!al@al.tmi.twitch.tv PRIVMSG #c ::rabbit: x"),
            Ok(IrcLine::Message {
                user: "al",
                channel: "c",
                text: ":rabbit: x"
            })
        );
        assert_eq!(parse_irc(":tmi.twitch.tv 001 me :Welcome, GLHF!"), Ok(IrcLine::Server));
        assert_eq!(parse_irc(":me!me@me.tmi.twitch.tv JOIN #chan"), Ok(IrcLine::Server));
        assert_eq!(parse_irc("PING :tmi.twitch.tv"), Ok(IrcLine::Server));
        assert!(parse_irc(":bob!bob@bob PRIVMSG #chan").is_err());
        assert!(parse_irc("garbage here").is_err());
    }
}
