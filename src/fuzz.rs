//! A fuzz harness on stable Rust for every decoder and importer: the event JSON decoder (what
//! the replay and Kafka sources run on every record) and the importers (Twitch CSV, Twitch
//! IRC, edge lists, tweets).
//!
//! Inputs are real records (the repository's fixtures and the formats' own samples) mutated
//! with awareness of their structure — bits flipped, bytes set to the ones parsers care about
//! (quotes, escapes, separators, line ends, invalid UTF-8), tokens inserted (numbers at the
//! limits of `i64`, `\ud800`, field names, `;;;`, `PRIVMSG`), ranges deleted or duplicated,
//! truncation, splices of two records, oversized records — and now and then arbitrary bytes.
//! Each input must come back as data, never as a panic:
//!
//! - the decoder returns an event or a reason, and the reason makes a dead letter whose raw
//!   bytes are within `MAX_RAW_BYTES`;
//! - an importer finishes, writes exactly as many lines as it counts events, every line it
//!   writes decodes as an event, and every line it could not read is reported with its number.
//!
//! The test suite runs 100,000 inputs per target (`fuzz::tests`); `cargo bench --bench fuzz`
//! runs 10 million each and reports inputs/s and the slowest input. Runs are seeded, so a
//! failure names the seed and the input and can be replayed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::sources::decode::{dead_letter, decode, MAX_RAW_BYTES, MAX_RECORD_BYTES};
use crate::sources::import::{import_into, ImportFormat, ImportOptions, ImportReport};

/// What is fuzzed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One event record (a fixture line or a Kafka payload).
    Event,
    /// A file for `import --from twitch-csv`, `twitch-irc`, `edges-csv` or `tweets`.
    Import(ImportFormat),
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Event,
        Target::Import(ImportFormat::TwitchCsv),
        Target::Import(ImportFormat::TwitchIrc),
        Target::Import(ImportFormat::EdgesCsv),
        Target::Import(ImportFormat::Tweets),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Event => "event-json",
            Target::Import(ImportFormat::TwitchCsv) => "twitch-csv",
            Target::Import(ImportFormat::TwitchIrc) => "twitch-irc",
            Target::Import(ImportFormat::EdgesCsv) => "edges-csv",
            Target::Import(ImportFormat::Tweets) => "tweets",
        }
    }

    /// Real records of the target's format, to mutate.
    pub fn seeds(self) -> Vec<Vec<u8>> {
        let lines = |text: &str| text.lines().filter(|l| !l.is_empty()).map(|l| l.as_bytes().to_vec()).collect();
        match self {
            Target::Event => {
                let mut seeds: Vec<Vec<u8>> = lines(include_str!("../fixtures/mixed.jsonl"));
                seeds.extend(lines(concat!(
                    r#"{"ts":1700000000010,"channel":"kilwai","user":"zoum","text":"this nerf дисы lag with 2024 PogChamp!!"}"#,
                    "\n",
                    r#"{"ts":1,"src":"a","dst":"b","weight":2147483648,"op":"del"}"#,
                    "\n",
                    r#"{"ts":5,"id":"p1","user":"u","text":"RT x","place":"Melbourne, Victoria","retweet_of":"9"}"#,
                    "\n",
                    r#"{"ts":-5,"channel":"c","viewers":12345,"extra":{"a":[1,2,{"b":null}]}}"#,
                    "\n",
                    r#"{"ts":3,"channel":"c\u00e9","user":"\ud83d\ude00","text":"a\"b\\c\nİΣ"}"#,
                )));
                seeds
            }
            Target::Import(ImportFormat::TwitchCsv) => vec![
                b"Timestamp,Channel,User,Message\n2024-05-03 18:00:01,xqc,alice,\"hi, there \"\"you\"\"\"\n\
                  2024-05-03T18:00:02Z,xqc,bob,\x01ACTION waves\x01\n"
                    .to_vec(),
                b"time,username,channel,message\n2019-01-01 00:00:00.5,u1,c1,gg\xe2\x80\x8b wp\n1970-01-01_00:00:03,u2,c2,x\n"
                    .to_vec(),
                b"2024-05-03 18:00:01+01:00,c,u,no header\r\n".to_vec(),
            ],
            Target::Import(ImportFormat::TwitchIrc) => vec![
                include_bytes!("../fixtures/irc-sample.log").to_vec(),
                b"2024-05-03_18:00:05 ;;; @badge-info=;display-name=Al\\sB;tmi-sent-ts=17 :al!al@al.tmi.twitch.tv PRIVMSG \
                  #c ::rabbit: x\r\nPING :tmi.twitch.tv\r\n"
                    .to_vec(),
            ],
            Target::Import(ImportFormat::EdgesCsv) => vec![
                b"from,to\n0,1\n1,2\n2,0\n".to_vec(),
                b"Source,Target,Weight\r\r\nalice,bob,\"1,234\"\r\r\nbob,carol,7\r\r\n".to_vec(),
                b" Source , Target , weights \ncarol,dave,12 345\n".to_vec(),
            ],
            Target::Import(ImportFormat::Tweets) => vec![
                br#"{"created_at":"Fri Jan 08 10:36:38 +0000 2016","id_str":"685409772384968704","text":"short","extended_tweet":{"full_text":"the full text"},"user":{"screen_name":"ann"},"place":{"full_name":"Melbourne, Victoria"},"retweeted_status":{"id_str":"42"}}"#.to_vec(),
                br#"{"id":"r","doc":{"data":{"id":"7","text":"hi","author_id":"9","created_at":"2021-05-01T10:00:00.000Z","geo":{"place_id":"p1"},"referenced_tweets":[{"type":"retweeted","id":"6"}]},"includes":{"users":[{"id":"9","username":"bob"}],"places":[{"id":"p1","full_name":"Oslo, Norway"}]}}}"#.to_vec(),
                b"[\n  {\"id_str\":\"1\",\"created_at\":\"2021-05-01T10:00:00Z\",\"text\":\"a \\ud83d\\udc9c\",\"coordinates\":{\"type\":\"Point\",\"coordinates\":[-0.26,52.54]}},\n]\n".to_vec(),
                br#"{"message": "RT @x: yo", "date": "2016-10-01", "tweet_id": 782369243723476992, "retweet_count": 0}"#.to_vec(),
                b"2016-01-08 14:07:50,b'Superb \\xe2\\x80\\xa6 it\\'s',\"{'type': 'Point', 'coordinates': [-0.126178, 51.5153923]}\"\n".to_vec(),
            ],
        }
    }

    /// Runs the target on one input: `Ok(accepted)`, or what went wrong (an invariant broken).
    fn check(self, input: &[u8]) -> Result<bool, String> {
        match self {
            Target::Event => match decode(input) {
                Ok(_) => Ok(true),
                Err(e) => {
                    let letter = dead_letter("fuzz", "1".into(), e.to_string(), input);
                    if letter.raw.len() > MAX_RAW_BYTES {
                        return Err(format!("a dead letter keeps {} raw bytes", letter.raw.len()));
                    }
                    Ok(false)
                }
            },
            Target::Import(format) => {
                let mut out = Vec::new();
                let mut report = ImportReport::default();
                import_into(format, "fuzz", input, &ImportOptions::default(), &mut out, &mut report)
                    .map_err(|e| format!("the import failed as a whole: {e}"))?;
                let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
                if lines.len() as u64 != report.events {
                    return Err(format!("{} lines written, {} events counted", lines.len(), report.events));
                }
                for line in &lines {
                    if let Err(e) = decode(line) {
                        let shown: String = String::from_utf8_lossy(line).chars().take(300).collect();
                        return Err(format!("an imported line does not decode ({e}): {shown}"));
                    }
                }
                if let Some(u) = report.unparsed.iter().find(|u| u.line == 0 || u.reason.is_empty()) {
                    return Err(format!("a line reported without its number or reason: {u:?}"));
                }
                Ok(report.unparsed.is_empty())
            }
        }
    }
}

/// Bytes and tokens the parsers treat specially.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\\udfff\\ud83d",
    b"\\u",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"\r\n",
    b"\r\r\n",
    b"\r",
    b"\t",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\xae",
    b"\xf0\x9f\x98",
    b"\xed\xa0\x80",
    b"-9223372036854775808",
    b"9223372036854775807",
    b"9223372036854775808",
    b"2147483649",
    b"1e309",
    b"-0",
    b"0.5",
    b"null",
    b"true",
    b"\"\"",
    b"\"ts\":",
    b"\"text\":",
    b"\"src\":",
    b"\"dst\":",
    b"\"weight\":",
    b"\"op\":\"del\"",
    b"\"viewers\":",
    b"\"id\":",
    b"\"retweet_of\":",
    b"\"place\":",
    b";;;",
    b" ;;; ",
    b"PRIVMSG",
    b" #",
    b"@",
    b"!",
    b":tmi.twitch.tv ",
    b"\x01ACTION ",
    b"\"1,234\"",
    b"b'\\x",
    b"'",
    b"\xc4\xb0",
    b"\xce\xa3",
    b"\xf3\xa0\x80\x80",
    b"2024-05-03 18:00:01",
    b"2024-13-45T99:99:99+25:00",
    b"0000-00-00_00:00:00",
    b"Timestamp,Channel,User,Message\n",
    b"Source,Target,Weight\n",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
];

/// A seeded source of inputs for one target.
pub struct Inputs {
    rng: ChaCha8Rng,
    seeds: Vec<Vec<u8>>,
    /// Whether an input may be oversized (beyond the 1 MiB record limit), now and then.
    oversize: bool,
}

impl Inputs {
    pub fn new(target: Target, seed: u64) -> Inputs {
        Inputs { rng: ChaCha8Rng::seed_from_u64(seed), seeds: target.seeds(), oversize: true }
    }

    /// The next input.
    pub fn next_input(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        if rng.gen_ratio(1, 16) {
            let len = rng.gen_range(0..256);
            return (0..len).map(|_| rng.gen()).collect();
        }
        let mut data = self.seeds[rng.gen_range(0..self.seeds.len())].clone();
        for _ in 0..rng.gen_range(1..=4) {
            let at = |rng: &mut ChaCha8Rng, data: &Vec<u8>| rng.gen_range(0..=data.len());
            match rng.gen_range(0..9) {
                0 if !data.is_empty() => {
                    let i = rng.gen_range(0..data.len());
                    data[i] ^= 1 << rng.gen_range(0..8);
                }
                1 if !data.is_empty() => {
                    let i = rng.gen_range(0..data.len());
                    let token = TOKENS[rng.gen_range(0..TOKENS.len())];
                    data[i] = token[0];
                }
                2 => {
                    let (a, b) = (at(rng, &data), at(rng, &data));
                    let (a, b) = (a.min(b), a.max(b).min(a.min(b) + 64));
                    data.drain(a..b);
                }
                3 | 4 => {
                    let i = at(rng, &data);
                    let token = TOKENS[rng.gen_range(0..TOKENS.len())];
                    data.splice(i..i, token.iter().copied());
                }
                5 => {
                    let i = at(rng, &data);
                    data.truncate(i);
                }
                6 => {
                    let (a, b) = (at(rng, &data), at(rng, &data));
                    let chunk = data[a.min(b)..a.max(b)].to_vec();
                    let i = at(rng, &data);
                    data.splice(i..i, chunk);
                }
                7 => {
                    let other = &self.seeds[rng.gen_range(0..self.seeds.len())];
                    let (cut, from) = (at(rng, &data), rng.gen_range(0..=other.len()));
                    data.truncate(cut);
                    data.extend_from_slice(&other[from..]);
                }
                _ => {
                    // A digit run becomes a number at a limit.
                    if let Some(start) = data.iter().position(|b| b.is_ascii_digit()) {
                        let end = start + data[start..].iter().take_while(|b| b.is_ascii_digit()).count();
                        let token = TOKENS[rng.gen_range(25..31)];
                        data.splice(start..end, token.iter().copied());
                    }
                }
            }
        }
        if self.oversize && rng.gen_ratio(1, 20_000) {
            let fill = MAX_RECORD_BYTES + 1 - data.len().min(MAX_RECORD_BYTES);
            let i = data.iter().position(|b| *b == b'"').map_or(data.len(), |i| i + 1);
            data.splice(i..i, std::iter::repeat_n(b'x', fill));
        }
        data
    }
}

/// What a fuzz run saw.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub target: &'static str,
    pub inputs: u64,
    /// Inputs taken whole (an event, or an import without a reported line).
    pub accepted: u64,
    /// Inputs that became a dead letter or reported lines.
    pub rejected: u64,
    pub seconds: f64,
    pub slowest_us: u64,
}

/// An input that broke an invariant or panicked.
#[derive(Debug)]
pub struct Failure {
    pub target: &'static str,
    pub seed: u64,
    pub index: u64,
    pub input: Vec<u8>,
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let shown: String = String::from_utf8_lossy(&self.input).chars().take(600).collect();
        write!(
            f,
            "{} (seed {}, input {}): {}\n  input ({} bytes): {:?}",
            self.target,
            self.seed,
            self.index,
            self.reason,
            self.input.len(),
            shown
        )
    }
}

/// Runs `inputs` inputs of `target` from `seed`; the first failure stops the run.
pub fn fuzz(target: Target, inputs: u64, seed: u64) -> Result<Report, Box<Failure>> {
    fuzz_with(target.name(), Inputs::new(target, seed), inputs, seed, |input| target.check(input))
}

fn fuzz_with(
    name: &'static str,
    mut source: Inputs,
    inputs: u64,
    seed: u64,
    check: impl Fn(&[u8]) -> Result<bool, String>,
) -> Result<Report, Box<Failure>> {
    let mut report = Report { target: name, inputs: 0, accepted: 0, rejected: 0, seconds: 0.0, slowest_us: 0 };
    let start = Instant::now();
    for index in 0..inputs {
        let input = source.next_input();
        let began = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        report.slowest_us = report.slowest_us.max(began.elapsed().as_micros() as u64);
        let reason = match outcome {
            Ok(Ok(true)) => {
                report.accepted += 1;
                None
            }
            Ok(Ok(false)) => {
                report.rejected += 1;
                None
            }
            Ok(Err(reason)) => Some(reason),
            Err(panic) => Some(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            )),
        };
        if let Some(reason) = reason {
            return Err(Box::new(Failure { target: name, seed, index, input, reason }));
        }
        report.inputs += 1;
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100,000 inputs per target, every one data; each target both accepts and rejects some
    /// (the mutations reach past the parsers' first checks).
    #[test]
    fn every_decoder_and_importer_takes_100k_mutated_records() {
        for target in Target::ALL {
            let report = fuzz(target, 100_000, 0x5eed).unwrap_or_else(|failure| panic!("{failure}"));
            assert!(report.accepted > 1_000 && report.rejected > 1_000, "{report:?}");
        }
    }

    /// The harness itself catches what it is for: a panic, named with its input, and inputs
    /// that do not repeat themselves.
    #[test]
    fn the_harness_reports_a_panic_with_its_input() {
        let check = |input: &[u8]| -> Result<bool, String> {
            assert!(!input.contains(&0xff), "saw 0xff");
            Ok(true)
        };
        let failure = fuzz_with("test", Inputs::new(Target::Event, 7), 100_000, 7, check).unwrap_err();
        assert!(failure.reason.contains("panicked: saw 0xff") && failure.input.contains(&0xff), "{failure}");
        let mut inputs = Inputs::new(Target::Event, 1);
        let distinct: std::collections::HashSet<Vec<u8>> = (0..1000).map(|_| inputs.next_input()).collect();
        assert!(distinct.len() > 900, "the mutations repeat themselves: {}", distinct.len());
    }
}
