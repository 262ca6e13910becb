//! `chatflow import --from tweets`: tweets → post events (`{"ts","id","user","text","place",
//! "retweet_of"}`), by DESIGN.md's rules ("Posts").
//!
//! Records: Twitter API v1.1 tweet objects; v2 records `{"data": tweet or [tweets],
//! "includes": {"places", "users"}}`; CouchDB rows that hold either under `doc`; and the
//! `{"message","date","tweet_id"}` lines EmojiMapper wrote. A file is one JSON array (also
//! pretty-printed over many lines), JSON lines, or one record per line with a trailing comma
//! (`[` and `]` on lines of their own); a file that starts with neither `{` nor `[` is read as
//! the MapTweet CSV `created_at,text,geometry`, whose text is a Python bytes literal
//! (`b'caf\xc3\xa9'`) and geometry a Python dict (`{'coordinates': [lng, lat], ...}`).
//!
//! * `ts`: `timestamp_ms`, else `created_at` (`Fri Jan 08 10:36:38 +0000 2016`, or RFC 3339 in
//!   v2), in ms since the epoch; EmojiMapper's `date` is the day at 00:00 UTC.
//! * `id`: `id_str` (else `id`); a CSV row, which has none, gets `csv:` and a hash of the row,
//!   so importing it twice gives the same ids.
//! * `user`: `user.screen_name` (v1.1), the `username` of `author_id` in `includes.users` (v2,
//!   else the author id); empty when unknown.
//! * `text`: `extended_tweet.full_text`, else `full_text`, else `text`.
//! * `place`: `place.full_name` (v1.1), or the `full_name` of the `includes.places` entry that
//!   `geo.place_id` names (v2); with only coordinates, `geo:<lat>,<lng>` rounded to 1 decimal.
//! * `retweet_of`: `retweeted_status.id_str` (v1.1) or the `referenced_tweets` entry of type
//!   `retweeted` (v2).
//!
//! A record that is not JSON, is too long, or lacks an id, a time or a text is reported with
//! its file and line (for array elements: the line the element starts on) and skipped.

use std::io::{self, Write};

use chrono::{DateTime, NaiveDate};
use serde_json::Value;

use crate::sources::decode::{event_too_long, MAX_RECORD_BYTES};
use crate::sources::import::{parse_timestamp, ImportReport, Unparsed};

/// A post, ready to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostLine {
    pub ts: i64,
    pub id: String,
    pub user: String,
    pub text: String,
    pub place: Option<String>,
    pub retweet_of: Option<String>,
}

impl PostLine {
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let line = serde_json::json!({
            "ts": self.ts, "id": self.id, "user": self.user, "text": self.text,
            "place": self.place, "retweet_of": self.retweet_of,
        });
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")
    }
}

/// Imports one file of tweets into `out`.
pub fn import_tweets(name: &str, data: &[u8], out: &mut impl Write, report: &mut ImportReport) -> io::Result<()> {
    let first = data.iter().find(|b| !b.is_ascii_whitespace() && **b != 0xEF && **b != 0xBB && **b != 0xBF);
    match first {
        Some(b'[') if import_array(name, data, out, report)? => Ok(()),
        Some(b'[' | b'{') => import_lines(name, data, out, report),
        Some(_) => import_csv(name, data, out, report),
        None => Ok(()),
    }
}

fn unparsed(report: &mut ImportReport, name: &str, line: u64, reason: impl Into<String>) {
    report.unparsed.push(Unparsed { file: name.into(), line, reason: reason.into() });
}

/// Writes `post` (from line `line`), or reports the line when its event would be longer than
/// the decoder takes.
fn write_post(
    post: &PostLine,
    name: &str,
    line: u64,
    out: &mut impl Write,
    report: &mut ImportReport,
) -> io::Result<()> {
    let mut event = Vec::new();
    post.write(&mut event)?;
    if event.len() > MAX_RECORD_BYTES + 1 {
        unparsed(report, name, line, event_too_long(event.len() - 1));
    } else {
        out.write_all(&event)?;
        report.events += 1;
    }
    Ok(())
}

/// Writes every post of `record` (a v2 record may hold several), or reports why there is none.
fn emit(name: &str, line: u64, record: &Value, out: &mut impl Write, report: &mut ImportReport) -> io::Result<()> {
    match posts_of(record) {
        Ok(posts) => {
            for post in posts {
                write_post(&post, name, line, out, report)?;
            }
        }
        Err(reason) => unparsed(report, name, line, reason),
    }
    Ok(())
}

/// A whole-file JSON array. Returns false (nothing done) when the file is not one valid
/// array, so that it is read line by line instead and its bad lines are reported.
fn import_array(name: &str, data: &[u8], out: &mut impl Write, report: &mut ImportReport) -> io::Result<bool> {
    let Ok(elements) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(data) else {
        return Ok(false);
    };
    let base = data.as_ptr() as usize;
    let mut line = 1u64;
    let mut scanned = 0usize;
    for element in elements {
        let text = element.get();
        let offset = text.as_ptr() as usize - base;
        line += memchr::memchr_iter(b'\n', &data[scanned..offset]).count() as u64;
        scanned = offset;
        if text.len() > MAX_RECORD_BYTES {
            unparsed(
                report,
                name,
                line,
                format!("record of {} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes", text.len()),
            );
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(record) => emit(name, line, &record, out, report)?,
            Err(e) => unparsed(report, name, line, format!("invalid JSON: {e}")),
        }
    }
    Ok(true)
}

/// JSON lines, or one record per line with a trailing comma.
fn import_lines(name: &str, data: &[u8], out: &mut impl Write, report: &mut ImportReport) -> io::Result<()> {
    for (i, raw) in data.split(|b| *b == b'\n').enumerate() {
        let line = i as u64 + 1;
        if raw.len() > MAX_RECORD_BYTES {
            unparsed(
                report,
                name,
                line,
                format!("record of {} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes", raw.len()),
            );
            continue;
        }
        let text = match std::str::from_utf8(raw) {
            Ok(text) => text.trim(),
            Err(e) => {
                unparsed(report, name, line, format!("invalid UTF-8: {e}"));
                continue;
            }
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if matches!(text, "" | "[" | "]" | "],") {
            continue;
        }
        let text = text.strip_suffix(',').unwrap_or(text);
        let text = text.strip_prefix('[').unwrap_or(text);
        let text = match text.strip_suffix(']') {
            Some(inner) if serde_json::from_str::<Value>(text).is_err() => inner,
            _ => text,
        };
        match serde_json::from_str::<Value>(text) {
            Ok(record) => emit(name, line, &record, out, report)?,
            Err(e) => unparsed(report, name, line, format!("not a JSON record: {e} ({:?})", cut(text, 60))),
        }
    }
    Ok(())
}

fn cut(s: &str, n: usize) -> &str {
    &s[..s.floor_char_boundary(n)]
}

/// The posts of one record, by its shape.
fn posts_of(record: &Value) -> Result<Vec<PostLine>, String> {
    let Some(object) = record.as_object() else {
        return Err(format!("not a JSON object but {}", kind_of(record)));
    };
    if let Some(doc) = object.get("doc").filter(|d| d.is_object()) {
        return posts_of(doc);
    }
    if let Some(data) = object.get("data") {
        let includes = object.get("includes").unwrap_or(&Value::Null);
        return match data {
            Value::Array(tweets) => tweets.iter().map(|t| v2_post(t, includes)).collect(),
            tweet => v2_post(tweet, includes).map(|p| vec![p]),
        };
    }
    if object.contains_key("message") && object.contains_key("tweet_id") {
        return emojimapper_post(object).map(|p| vec![p]);
    }
    v1_post(record).map(|p| vec![p])
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str().filter(|s| !s.is_empty())
}

/// An id: a string, or an integer written out.
fn id_at(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

/// `created_at` of v1.1 (`Fri Jan 08 10:36:38 +0000 2016`) or RFC 3339, in ms.
fn created_at(s: &str) -> Option<i64> {
    DateTime::parse_from_str(s, "%a %b %d %H:%M:%S %z %Y")
        .ok()
        .map(|t| t.timestamp_millis())
        .or_else(|| parse_timestamp(s))
}

/// `geo:<lat>,<lng>`, each rounded to 1 decimal.
pub fn geo_place(lat: f64, lng: f64) -> Option<String> {
    let round = |x: f64| {
        let r = (x * 10.0).round() / 10.0;
        if r == 0.0 {
            0.0
        } else {
            r
        }
    };
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lng))
        .then(|| format!("geo:{:.1},{:.1}", round(lat), round(lng)))
}

/// `[lng, lat]` (GeoJSON order) → a `geo:` place.
fn geojson_point(v: Option<&Value>) -> Option<String> {
    let c = v?.get("coordinates")?.as_array()?;
    geo_place(c.get(1)?.as_f64()?, c.first()?.as_f64()?)
}

fn v1_post(t: &Value) -> Result<PostLine, String> {
    let id = id_at(t, "id_str").or_else(|| id_at(t, "id")).ok_or("no id_str or id: not a tweet")?;
    let ts = match t.get("timestamp_ms") {
        Some(Value::String(ms)) => ms.parse().ok(),
        Some(Value::Number(ms)) => ms.as_i64(),
        _ => None,
    }
    .or_else(|| str_at(t, &["created_at"]).and_then(created_at))
    .ok_or_else(|| format!("tweet {id}: no timestamp_ms or readable created_at"))?;
    let text = str_at(t, &["extended_tweet", "full_text"])
        .or_else(|| str_at(t, &["full_text"]))
        .or_else(|| t.get("text").and_then(Value::as_str))
        .ok_or_else(|| format!("tweet {id}: no text"))?;
    let place = str_at(t, &["place", "full_name"]).map(str::to_owned).or_else(|| {
        geojson_point(t.get("coordinates")).or_else(|| {
            // `geo` is [lat, lng].
            let c = t.get("geo")?.get("coordinates")?.as_array()?;
            geo_place(c.first()?.as_f64()?, c.get(1)?.as_f64()?)
        })
    });
    let retweet_of = t.get("retweeted_status").and_then(|r| id_at(r, "id_str").or_else(|| id_at(r, "id")));
    Ok(PostLine {
        ts,
        id,
        user: str_at(t, &["user", "screen_name"]).unwrap_or("").to_owned(),
        text: text.to_owned(),
        place,
        retweet_of,
    })
}

fn v2_post(t: &Value, includes: &Value) -> Result<PostLine, String> {
    let id = id_at(t, "id").ok_or("v2 record: data has no id")?;
    let ts =
        str_at(t, &["created_at"]).and_then(created_at).ok_or_else(|| format!("tweet {id}: no readable created_at"))?;
    let text = t.get("text").and_then(Value::as_str).ok_or_else(|| format!("tweet {id}: no text"))?;
    let find = |list: &str, key: &str, value: &str, field: &str| -> Option<String> {
        includes
            .get(list)?
            .as_array()?
            .iter()
            .find(|e| str_at(e, &[key]) == Some(value))
            .and_then(|e| str_at(e, &[field]))
            .map(str::to_owned)
    };
    let author = str_at(t, &["author_id"]);
    let user = author.map(|a| find("users", "id", a, "username").unwrap_or_else(|| a.to_owned())).unwrap_or_default();
    let place = str_at(t, &["geo", "place_id"])
        .and_then(|p| find("places", "id", p, "full_name"))
        .or_else(|| geojson_point(t.get("geo").and_then(|g| g.get("coordinates"))));
    let retweet_of = t
        .get("referenced_tweets")
        .and_then(Value::as_array)
        .and_then(|refs| refs.iter().find(|r| str_at(r, &["type"]) == Some("retweeted")).and_then(|r| id_at(r, "id")));
    Ok(PostLine { ts, id, user, text: text.to_owned(), place, retweet_of })
}

/// EmojiMapper's `{"message", "date": "2016-10-01", "tweet_id", ...}`: the day at 00:00 UTC.
fn emojimapper_post(o: &serde_json::Map<String, Value>) -> Result<PostLine, String> {
    let record = Value::Object(o.clone());
    let id = id_at(&record, "tweet_id").ok_or("tweet_id is not an id")?;
    let date = str_at(&record, &["date"]).ok_or_else(|| format!("tweet {id}: no date"))?;
    let ts = NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .or_else(|| created_at(date))
        .ok_or_else(|| format!("tweet {id}: date {date:?} is not YYYY-MM-DD"))?;
    let text = str_at(&record, &["message"]).unwrap_or("").to_owned();
    Ok(PostLine { ts, id, user: String::new(), text, place: None, retweet_of: None })
}

/// The MapTweet CSV: `created_at,text,geometry` with a Python bytes literal as text.
fn import_csv(name: &str, data: &[u8], out: &mut impl Write, report: &mut ImportReport) -> io::Result<()> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(data);
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                unparsed(report, name, line, format!("bad CSV: {e}"));
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        match csv_post(&record) {
            Ok(Some(post)) => write_post(&post, name, line, out, report)?,
            Ok(None) => {}
            Err(reason) => unparsed(report, name, line, reason),
        }
    }
    Ok(())
}

fn csv_post(record: &csv::StringRecord) -> Result<Option<PostLine>, String> {
    if record.iter().all(|f| f.trim().is_empty()) {
        return Ok(None);
    }
    if record.len() < 2 {
        return Err(format!("expected created_at,text[,geometry], found {} fields", record.len()));
    }
    let created = record[0].trim();
    if created.eq_ignore_ascii_case("created_at") || created.eq_ignore_ascii_case("time") {
        return Ok(None);
    }
    let ts = created_at(created).ok_or_else(|| format!("{created:?} is not a time"))?;
    let text = python_bytes(record[1].trim())
        .ok_or_else(|| format!("text {:?} is not a bytes literal", cut(&record[1], 60)))?;
    let text = String::from_utf8(text).map_err(|e| format!("text is not UTF-8: {e}"))?;
    let place = match record.get(2).map(str::trim).filter(|g| !g.is_empty()) {
        None => None,
        Some(geometry) => Some(python_point(geometry).ok_or_else(|| format!("geometry {geometry:?} is not a point"))?),
    };
    use std::hash::BuildHasher;
    let hash = foldhash::quality::FixedState::with_seed(0x7477_6565_7473).hash_one((ts, &text, &place));
    Ok(Some(PostLine { ts, id: format!("csv:{hash:016x}"), user: String::new(), text, place, retweet_of: None }))
}

/// The bytes of a Python bytes literal `b'…'` or `b"…"` (escapes `\xNN`, `\n`, `\t`, `\r`,
/// `\\`, `\'`, `\"`); text without the `b` prefix is taken as it is.
pub fn python_bytes(s: &str) -> Option<Vec<u8>> {
    let Some(body) = s.strip_prefix('b') else {
        return Some(s.as_bytes().to_vec());
    };
    let quote = body.chars().next().filter(|q| *q == '\'' || *q == '"')?;
    let inner = body.strip_prefix(quote)?.strip_suffix(quote)?;
    let mut out = Vec::with_capacity(inner.len());
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = *bytes.get(i + 1)?;
        i += 2;
        match next {
            b'x' => {
                let hex = std::str::from_utf8(bytes.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'\\' | b'\'' | b'"' => out.push(next),
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// `{'coordinates': [lng, lat], 'type': 'Point'}` → a `geo:` place.
fn python_point(s: &str) -> Option<String> {
    let start = s.find("'coordinates'")? + "'coordinates'".len();
    let open = start + s[start..].find('[')?;
    let close = open + s[open..].find(']')?;
    let numbers: Vec<f64> = s[open + 1..close].split(',').map(|n| n.trim().parse().ok()).collect::<Option<_>>()?;
    match numbers[..] {
        [lng, lat] => geo_place(lat, lng),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(text: &str) -> (Vec<Value>, ImportReport) {
        let mut out = Vec::new();
        let mut report = ImportReport::default();
        import_tweets("t", text.as_bytes(), &mut out, &mut report).unwrap();
        let posts = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (posts, report)
    }

    /// Found by the fuzz harness: a record under the 1 MiB limit whose event is over it (each
    /// control character becomes six bytes of JSON) is a reported line, not an event the
    /// pipeline would refuse.
    #[test]
    fn an_event_that_would_outgrow_the_limit_is_reported() {
        let text = "\u{1}".repeat(200_000);
        let csv = format!("2016-01-08 14:07:50,{text},\n2016-01-08 14:07:51,fine,\n");
        let (posts, report) = import(&csv);
        assert_eq!((posts.len(), report.unparsed.len()), (1, 1), "{report}");
        assert!(report.unparsed[0].reason.contains("over the limit of 1048576 bytes") && report.unparsed[0].line == 1);
        let json = format!(
            "{{\"id_str\":\"1\",\"created_at\":\"2021-05-01T10:00:00Z\",\"text\":\"{}\"}}\n",
            "\\u0001".repeat(200_000)
        );
        let (posts, report) = import(&json);
        assert_eq!((posts.len(), report.unparsed.len()), (0, 1), "{report}");
    }

    #[test]
    fn v1_v2_couchdb_and_emojimapper_records() {
        let v1 = r#"{"created_at":"Fri Jan 08 10:36:38 +0000 2016","id":685409772384968704,"id_str":"685409772384968704","text":"short","extended_tweet":{"full_text":"the full text"},"user":{"screen_name":"ann"},"place":{"full_name":"Melbourne, Victoria"},"retweeted_status":{"id_str":"42"}}"#;
        let (posts, report) = import(&format!("{v1}\n"));
        assert!(report.unparsed.is_empty(), "{report}");
        assert_eq!(
            posts[0],
            serde_json::json!({"ts": 1452249398000i64, "id": "685409772384968704", "user": "ann", "text": "the full text",
                "place": "Melbourne, Victoria", "retweet_of": "42"})
        );
        // Coordinates only: geo:<lat>,<lng> to 1 decimal; timestamp_ms wins over created_at.
        let geo = r#"{"id_str":"1","timestamp_ms":"1452249908342","created_at":"x","text":"t","coordinates":{"type":"Point","coordinates":[-0.2647342,52.5442671]}}"#;
        let (posts, _) = import(geo);
        assert_eq!((posts[0]["ts"].as_i64(), posts[0]["place"].as_str()), (Some(1452249908342), Some("geo:52.5,-0.3")));
        // v2 with includes; a CouchDB row holding it; an array of data.
        let v2 = r#"{"data":{"id":"7","text":"hi","author_id":"9","created_at":"2021-05-01T10:00:00.000Z","geo":{"place_id":"p1"},"referenced_tweets":[{"type":"quoted","id":"5"},{"type":"retweeted","id":"6"}]},"includes":{"users":[{"id":"9","username":"bob"}],"places":[{"id":"p1","full_name":"Oslo, Norway"}]}}"#;
        let (posts, _) = import(&format!("{{\"id\":\"r\",\"doc\":{v2}}}"));
        assert_eq!(
            posts[0],
            serde_json::json!({"ts": 1619863200000i64, "id": "7", "user": "bob", "text": "hi", "place": "Oslo, Norway", "retweet_of": "6"})
        );
        let (posts, _) = import(
            r#"{"data":[{"id":"1","text":"a","created_at":"2021-05-01T10:00:00Z"},{"id":"2","text":"b","created_at":"2021-05-01T10:00:01Z","geo":{"coordinates":{"type":"Point","coordinates":[10.04,59.96]}}}]}"#,
        );
        assert_eq!(posts.len(), 2);
        assert_eq!(posts[1]["place"], "geo:60.0,10.0");
        let (posts, _) = import(
            r#"{"message": "RT @x: yo", "date": "2016-10-01", "tweet_id": 782369243723476992, "retweet_count": 0}"#,
        );
        assert_eq!(
            (posts[0]["id"].as_str(), posts[0]["ts"].as_i64()),
            (Some("782369243723476992"), Some(1475280000000))
        );
    }

    #[test]
    fn arrays_trailing_commas_and_garbage() {
        let (posts, report) = import("[\n  {\"id_str\":\"1\",\"created_at\":\"2021-05-01T10:00:00Z\",\"text\":\"a \\ud83d\\udc9c\"},\n  {\"id_str\":\"2\",\n   \"text\":\"no time\"}\n]\n");
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0]["text"], "a 💜");
        assert_eq!((report.unparsed[0].line, report.unparsed[0].reason.contains("created_at")), (3, true));
        // One record per line with trailing commas, and garbage lines.
        let (posts, report) = import("[\n{\"id_str\":\"1\",\"created_at\":\"2021-05-01T10:00:00Z\",\"text\":\"a\"},\nhi\n{\"id_str\":\"2\",\"created_at\":\"2021-05-01T10:00:00Z\",\"text\":\"b\"}\n]\n");
        assert_eq!(posts.len(), 2);
        assert_eq!(report.unparsed.len(), 1);
        assert_eq!(report.unparsed[0].line, 3);
        let (_, report) = import("{\"id_str\":\"1\",\"text\":\"\\ud83d\"}\n[1,2]\n");
        assert_eq!(report.unparsed.len(), 2, "{report}");
        // Truncated, oversized and non-UTF-8 records are reported with their lines.
        let mut bytes =
            b"{\"id_str\":\"1\",\"created_at\":\"2021-05-01T10:00:00Z\",\"text\":\"a\"}\n{\"id_str\":\"2\",\"te\n"
                .to_vec();
        bytes.extend_from_slice(b"{\"id_str\":\"3\",\"text\":\"\xff\"}\n{\"text\":\"");
        bytes.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES));
        bytes.extend_from_slice(b"\"}\n");
        let mut out = Vec::new();
        let mut report = ImportReport::default();
        import_tweets("t", &bytes, &mut out, &mut report).unwrap();
        assert_eq!(report.events, 1);
        let lines: Vec<(u64, bool)> = report.unparsed.iter().map(|u| (u.line, u.reason.is_empty())).collect();
        assert_eq!(lines, [(2, false), (3, false), (4, false)], "{report}");
        assert!(report.unparsed[1].reason.contains("UTF-8") && report.unparsed[2].reason.contains("exceeds"));
    }

    #[test]
    fn maptweet_csv_with_python_bytes() {
        let csv = "2016-01-08 14:07:50,b'Superb \\xe2\\x80\\xa6 it\\'s',\"{'type': 'Point', 'coordinates': [-0.126178, 51.5153923]}\"\n\
                   2016-01-08 12:09:28,\"b\"\"say \"\"hi\"\"\"\"\",\"{'coordinates': [-0.26, 52.54], 'type': 'Point'}\"\n\
                   2016-01-08 12:09:29,plain text,\n\
                   2016-01-08 12:09:30,b'\\xff',\n\
                   hello,world\n";
        let (posts, report) = import(csv);
        assert_eq!(posts.len(), 3, "{report}");
        assert_eq!((posts[2]["text"].as_str(), &posts[2]["place"]), (Some("plain text"), &Value::Null));
        assert_eq!(posts[0]["text"], "Superb … it's");
        assert_eq!(posts[0]["place"], "geo:51.5,-0.1");
        assert_eq!(posts[1]["text"], "say \"hi\"");
        assert!(posts[0]["id"].as_str().unwrap().starts_with("csv:"));
        assert_eq!(report.unparsed.len(), 2, "{report}");
        assert_eq!(python_bytes("b'a\\\\b'"), Some(b"a\\b".to_vec()));
    }
}
