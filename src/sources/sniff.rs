//! What an input file probably is, from its first lines: so that a run or import that fails
//! on most lines can say which command reads the file instead.

use std::io::{BufRead, Read};
use std::path::Path;

use crate::sources::decode::decode;
use crate::sources::import::parse_timestamp;

/// The kinds of input chatflow knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// chatflow event JSON lines: `chatflow run --replay` reads them.
    Events,
    /// `Timestamp,Channel,User,Message` chat CSV.
    TwitchCsv,
    /// A raw IRC log with `<date> ;;; ` timestamps.
    TwitchIrc,
    /// An edge list, `from,to` or `Source,Target,Weight`.
    EdgesCsv,
    /// Tweets as the Twitter API gives them (v1.1 or v2), lines or an array.
    Tweets,
}

impl Kind {
    /// What a person would call it.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Events => "chatflow event JSON lines",
            Kind::TwitchCsv => "a Twitch chat CSV (Timestamp,Channel,User,Message)",
            Kind::TwitchIrc => "a raw Twitch IRC log",
            Kind::EdgesCsv => "an edge list (from,to or Source,Target,Weight)",
            Kind::Tweets => "tweets from the Twitter API",
        }
    }

    /// The command that reads `file`, and the events file it writes (if it converts).
    pub fn command(self, file: &Path) -> (String, Option<&'static str>) {
        let shown = file.display();
        let import = |format: &str, out: &'static str| {
            (format!("`chatflow import --from {format} {shown} --out {out}`"), Some(out))
        };
        match self {
            Kind::Events => (format!("`chatflow run --replay {shown}`"), None),
            Kind::TwitchCsv => import("twitch-csv", "events.jsonl"),
            Kind::TwitchIrc => import("twitch-irc", "events.jsonl"),
            Kind::EdgesCsv => import("edges-csv", "edges.jsonl"),
            Kind::Tweets => import("tweets", "posts.jsonl"),
        }
    }

    /// One line for a person whose input failed: what `file` looks like and what reads it.
    pub fn hint(self, file: &Path) -> String {
        let (command, converted) = self.command(file);
        match converted {
            None => format!("{} holds {}: read it with {command}", file.display(), self.describe()),
            Some(out) => format!(
                "{} looks like {}: convert it with {command}, then `chatflow run --replay {out}`",
                file.display(),
                self.describe()
            ),
        }
    }
}

/// Lines looked at.
const SAMPLE: usize = 50;

/// Guesses what `file` is from its first lines (most of them must agree), or `None`.
pub fn sniff_file(file: &Path) -> Option<Kind> {
    let reader = std::io::BufReader::new(std::fs::File::open(file).ok()?.take(1 << 20));
    let lines: Vec<Vec<u8>> = reader.split(b'\n').take(SAMPLE * 2).map_while(Result::ok).collect();
    sniff(&lines.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

/// Guesses the kind of input from a sample of its lines.
pub fn sniff(lines: &[&[u8]]) -> Option<Kind> {
    let lines: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).trim_end_matches(['\r', '\n']).to_owned())
        .filter(|l| !l.trim().is_empty())
        .take(SAMPLE)
        .collect();
    let first = lines.first()?;
    if let Some(kind) = header_kind(first) {
        return Some(kind);
    }
    let votes = |kind: Kind| lines.iter().filter(|l| line_kind(l) == Some(kind)).count();
    [Kind::Events, Kind::Tweets, Kind::TwitchIrc, Kind::TwitchCsv, Kind::EdgesCsv]
        .into_iter()
        .map(|k| (votes(k), k))
        .filter(|(n, _)| *n * 2 > lines.len())
        .max_by_key(|(n, _)| *n)
        .map(|(_, k)| k)
}

fn fields(line: &str) -> Vec<String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(line.as_bytes());
    reader
        .records()
        .next()
        .and_then(Result::ok)
        .map(|r| r.iter().map(|f| f.trim().to_owned()).collect())
        .unwrap_or_default()
}

/// The kind a header line names.
fn header_kind(line: &str) -> Option<Kind> {
    let names: Vec<String> = fields(line).iter().map(|f| f.to_lowercase()).collect();
    let has = |n: &str| names.iter().any(|f| f == n);
    if (has("timestamp") || has("time")) && has("channel") && (has("user") || has("username")) {
        return Some(Kind::TwitchCsv);
    }
    if (has("from") && has("to")) || (has("source") && has("target")) {
        return Some(Kind::EdgesCsv);
    }
    None
}

/// The kind one data line looks like.
fn line_kind(line: &str) -> Option<Kind> {
    if line.starts_with('{') {
        if decode(line.as_bytes()).is_ok() {
            return Some(Kind::Events);
        }
        let tweet = ["\"id_str\"", "\"created_at\"", "\"tweet_id\"", "\"includes\""].iter().any(|k| line.contains(k));
        return tweet.then_some(Kind::Tweets);
    }
    if line == "[" || line.starts_with("[{") {
        return Some(Kind::Tweets);
    }
    if (line.starts_with('<') && line.contains(" ;;; ")) || line.contains(" PRIVMSG #") {
        return Some(Kind::TwitchIrc);
    }
    let fields = fields(line);
    if fields.len() >= 4 && parse_timestamp(&fields[0]).is_some() {
        return Some(Kind::TwitchCsv);
    }
    let id = |f: &String| !f.is_empty() && f.replace(',', "").chars().all(|c| c.is_ascii_digit() || c == '-');
    if (2..=3).contains(&fields.len()) && fields.iter().all(id) {
        return Some(Kind::EdgesCsv);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Option<Kind> {
        sniff(&text.lines().map(str::as_bytes).collect::<Vec<_>>())
    }

    #[test]
    fn kinds_from_first_lines() {
        assert_eq!(kind("Timestamp,Channel,User,Message\n2025-03-01 00:00:01,xqc,a,hi"), Some(Kind::TwitchCsv));
        assert_eq!(
            kind("\n2025-02-17T00:18:16.177235,fortnite,c,hi\n2025-02-17T00:18:16.2,x,y,z"),
            Some(Kind::TwitchCsv)
        );
        assert_eq!(kind("2025-03-01 00:00:01,xqc,a,hi\n2025-03-01 00:00:02,xqc,b,\"x, y\""), Some(Kind::TwitchCsv));
        assert_eq!(kind("from,to\n1,2\n3,4"), Some(Kind::EdgesCsv));
        assert_eq!(kind("1,2\n3,4\n5,6"), Some(Kind::EdgesCsv));
        assert_eq!(kind("Source,Target,Weight\r\r\n1,2,\"1,234\""), Some(Kind::EdgesCsv));
        assert_eq!(
            kind("<2020-04-30_12:00:00> ;;; :a!a@a.tmi.twitch.tv PRIVMSG #b :hi\n<2020-04-30_12:00:01> ;;; PING"),
            Some(Kind::TwitchIrc)
        );
        assert_eq!(kind(r#"{"ts":1,"channel":"c","user":"u","text":"t"}"#), Some(Kind::Events));
        assert_eq!(
            kind(r#"{"created_at":"Fri Jan 08 10:36:38 +0000 2016","id_str":"1","user":{}}"#),
            Some(Kind::Tweets)
        );
        assert_eq!(kind("hello\nworld"), None);
        assert_eq!(kind(""), None);
        assert_eq!(kind("\u{fffd}\u{fffd},\0"), None);
    }
}
