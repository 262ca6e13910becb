//! Bytes → events. A record that cannot be decoded is not an error of the run: it becomes a
//! [`DeadLetter`] with its source, its position and the reason, and the run goes on.
//!
//! The kind of an event is read off its fields (DESIGN.md, "Events"): `channel`+`text` is a
//! chat message, `src`+`dst` an edge, `channel`+`viewers` a viewer count, `id`+`text` a post.
//! Unknown fields are ignored. Numbers must be integers (`ts` is milliseconds since the epoch).

use std::borrow::Cow;

use dataflows::{Chat, DeadLetter, Edge, EdgeOp, Name, Origin, Post, Viewers};
use serde::Deserialize;

/// Records longer than this are refused unread (1 MiB).
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// A dead letter keeps at most this much of the raw record (1 KiB).
pub const MAX_RAW_BYTES: usize = 1024;
/// Why an importer leaves out a record whose event line would be `len` bytes: more than the
/// decoder takes (escaping can make an event longer than the record it came from).
pub fn event_too_long(len: usize) -> String {
    format!("its event would be {len} bytes, over the limit of {MAX_RECORD_BYTES} bytes")
}

/// The largest edge weight an event may carry, either sign (2³¹). Strengths sum weights, and
/// 2³² events of this weight on one pair still fit an `i64`.
pub const MAX_WEIGHT: i64 = 1 << 31;

/// A decoded input event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Chat(Chat),
    Edge(Edge),
    Post(Post),
    Viewers(Viewers),
}

/// A JSON string, borrowed from the input when it holds no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Every field any event kind may carry; which ones are present decides the kind.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Fields<'a> {
    ts: Option<i64>,
    channel: Option<Text<'a>>,
    user: Option<Text<'a>>,
    text: Option<Text<'a>>,
    weight: Option<i64>,
    src: Option<Text<'a>>,
    dst: Option<Text<'a>>,
    op: Option<Text<'a>>,
    viewers: Option<i64>,
    id: Option<Text<'a>>,
    place: Option<Text<'a>>,
    retweet_of: Option<Text<'a>>,
}

/// Why a record is not an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes")]
    TooLong(usize),
    #[error("invalid UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    #[error("invalid JSON event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("edge event has unknown op {0:?} (expected \"add\" or \"del\")")]
    UnknownOp(String),
    #[error("edge event has weight {0}, outside -{MAX_WEIGHT}..={MAX_WEIGHT} (2³¹)")]
    WeightOutOfRange(i64),
    #[error("{kind} event lacks field `{field}`")]
    Missing { kind: &'static str, field: &'static str },
    #[error(
        "not an event: no field identifies its kind (chat: channel+text, edge: src+dst, viewers: channel+viewers, \
         post: id+text)"
    )]
    NoKind,
}

fn required<T>(field: Option<T>, kind: &'static str, name: &'static str) -> Result<T, DecodeError> {
    field.ok_or(DecodeError::Missing { kind, field: name })
}

/// Decodes one record (a fixture line or a Kafka payload, without its line end).
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    let text = std::str::from_utf8(bytes)?;
    match plain_chat(text) {
        Some(chat) => Ok(Event::Chat(chat)),
        None => decode_fields(text),
    }
}

/// Decodes a record's text with serde: any event kind, any valid JSON, and the reason when it
/// is not an event.
fn decode_fields(text: &str) -> Result<Event, DecodeError> {
    let f: Fields = serde_json::from_str(text)?;
    let owned = |s: Text| s.0.into_owned();
    let name = |s: Text| Name::from(&*s.0);
    if f.src.is_some() || f.dst.is_some() {
        let op = match f.op.as_ref().map(|op| &*op.0) {
            None | Some("add") => EdgeOp::Add,
            Some("del") => EdgeOp::Del,
            Some(other) => return Err(DecodeError::UnknownOp(other.to_owned())),
        };
        let weight = f.weight.unwrap_or(1);
        if !(-MAX_WEIGHT..=MAX_WEIGHT).contains(&weight) {
            return Err(DecodeError::WeightOutOfRange(weight));
        }
        Ok(Event::Edge(Edge {
            ts: required(f.ts, "edge", "ts")?,
            src: name(required(f.src, "edge", "src")?),
            dst: name(required(f.dst, "edge", "dst")?),
            weight,
            op,
        }))
    } else if let Some(channel) = f.channel {
        match (f.viewers, f.text) {
            (Some(viewers), None) => Ok(Event::Viewers(Viewers {
                ts: required(f.ts, "viewers", "ts")?,
                channel: name(channel),
                viewers,
                origin: Origin::default(),
            })),
            (_, text) => Ok(Event::Chat(Chat {
                ts: required(f.ts, "chat", "ts")?,
                channel: name(channel),
                user: name(required(f.user, "chat", "user")?),
                text: owned(required(text, "chat", "text")?),
                origin: Origin::default(),
            })),
        }
    } else if f.id.is_some() || f.place.is_some() || f.retweet_of.is_some() {
        Ok(Event::Post(Post {
            ts: required(f.ts, "post", "ts")?,
            id: owned(required(f.id, "post", "id")?),
            user: name(required(f.user, "post", "user")?),
            text: owned(required(f.text, "post", "text")?),
            place: f.place.map(owned),
            retweet_of: f.retweet_of.map(owned),
            origin: Origin::default(),
        }))
    } else {
        Err(DecodeError::NoKind)
    }
}

/// A chat event written the plain way — `{"ts": N, "channel": "…", "user": "…", "text": "…"}`,
/// those four keys in that order, integers without fraction or exponent, strings without
/// escapes or control characters, any JSON whitespace between tokens — read without serde:
/// nearly every line of a chat log, and decoding through serde was 16 % of a peer replay's
/// instructions. Anything else, valid or not, gives `None` and goes through serde, so what
/// this accepts it reads exactly as serde would and every error comes from serde.
fn plain_chat(text: &str) -> Option<Chat> {
    let mut rest = text.as_bytes();
    let skip_ws = |rest: &mut &[u8]| {
        let n = rest.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')).count();
        *rest = &rest[n..];
    };
    let expect = |rest: &mut &[u8], token: &[u8]| -> Option<()> {
        skip_ws(rest);
        *rest = rest.strip_prefix(token)?;
        Some(())
    };
    // A string's contents, up to its closing quote, if it has no escape or control character.
    let string = |rest: &mut &[u8]| -> Option<usize> {
        expect(rest, b"\"")?;
        let end = string_end(rest)?;
        let start = text.len() - rest.len();
        *rest = &rest[end + 1..];
        Some(start)
    };
    let field = |rest: &mut &[u8], key: &[u8], last: bool| -> Option<&str> {
        expect(rest, key)?;
        expect(rest, b":")?;
        let start = string(rest)?;
        let end = text.len() - rest.len() - 1;
        expect(rest, if last { b"}" } else { b"," })?;
        // On character boundaries: the slice lies between two ASCII quotes of valid UTF-8.
        Some(&text[start..end])
    };
    expect(&mut rest, b"{")?;
    expect(&mut rest, b"\"ts\"")?;
    expect(&mut rest, b":")?;
    skip_ws(&mut rest);
    let ts = json_i64(&mut rest)?;
    expect(&mut rest, b",")?;
    let channel = field(&mut rest, b"\"channel\"", false)?;
    let user = field(&mut rest, b"\"user\"", false)?;
    let message = field(&mut rest, b"\"text\"", true)?;
    skip_ws(&mut rest);
    if !rest.is_empty() {
        return None;
    }
    Some(Chat {
        ts,
        channel: Name::from(channel),
        user: Name::from(user),
        text: message.to_owned(),
        origin: Origin::default(),
    })
}

/// A JSON integer (`-? (0 | [1-9][0-9]*)`, not `-0`) that fits an `i64` and is not followed
/// by a fraction or an exponent; `None` otherwise (left to serde).
fn json_i64(rest: &mut &[u8]) -> Option<i64> {
    let negative = rest.first() == Some(&b'-');
    let digits = &rest[usize::from(negative)..];
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    // serde_json reads `-0` as a float (-0.0), which is no `i64`.
    let leading_zero = digits.first() == Some(&b'0') && (n > 1 || negative);
    if n == 0 || leading_zero || matches!(digits.get(n), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let mut value: i64 = 0;
    for &d in &digits[..n] {
        let d = i64::from(d - b'0');
        value = value.checked_mul(10)?.checked_add(if negative { -d } else { d })?;
    }
    *rest = &digits[n..];
    Some(value)
}

/// Where a JSON string's contents end (its closing quote) if no escape or control character
/// (below 0x20, which a JSON string may not hold) comes first; eight bytes at a time, each
/// word tested for a quote, a backslash or a byte below 0x20 at once ([`crate::swar`]: the
/// mask's lowest set bit marks the first such byte).
fn string_end(bytes: &[u8]) -> Option<usize> {
    use crate::swar::{below, equal, word_at};
    let at = |i: usize| (bytes[i] == b'"').then_some(i);
    let mut chunks = bytes.chunks_exact(8);
    for (n, chunk) in (&mut chunks).enumerate() {
        let word = word_at(chunk, 0);
        let mask = equal(word, b'"') | equal(word, b'\\') | below(word, 0x20);
        if mask != 0 {
            return at(8 * n + mask.trailing_zeros() as usize / 8);
        }
    }
    let tail = bytes.len() - chunks.remainder().len();
    let first = chunks.remainder().iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    at(tail + first)
}

/// Writes a chat event as one JSON line, the format `decode` reads.
pub fn write_chat_line(
    out: &mut impl std::io::Write,
    ts: i64,
    channel: &str,
    user: &str,
    text: &str,
) -> std::io::Result<()> {
    #[derive(serde::Serialize)]
    struct ChatLine<'a> {
        ts: i64,
        channel: &'a str,
        user: &'a str,
        text: &'a str,
    }
    serde_json::to_writer(&mut *out, &ChatLine { ts, channel, user, text })?;
    out.write_all(b"\n")
}

/// Writes an edge event (`op` add) as one JSON line, the format `decode` reads.
pub fn write_edge_line(
    out: &mut impl std::io::Write,
    ts: i64,
    src: &str,
    dst: &str,
    weight: i64,
) -> std::io::Result<()> {
    #[derive(serde::Serialize)]
    struct EdgeLine<'a> {
        ts: i64,
        src: &'a str,
        dst: &'a str,
        weight: i64,
        op: &'static str,
    }
    serde_json::to_writer(&mut *out, &EdgeLine { ts, src, dst, weight, op: "add" })?;
    out.write_all(b"\n")
}

/// The dead letter for a record that failed to decode; `raw` keeps at most 1 KiB of it,
/// cut at a character boundary, with invalid UTF-8 replaced by U+FFFD.
pub fn dead_letter(source: &str, position: String, error: String, raw: &[u8]) -> DeadLetter {
    let mut end = raw.len().min(MAX_RAW_BYTES);
    let mut text = String::from_utf8_lossy(&raw[..end]).into_owned();
    // Cutting inside a multi-byte character leaves a replacement character at the end, and a
    // lossy conversion may grow the text; trim back to the limit on a boundary.
    while text.len() > MAX_RAW_BYTES {
        end -= 1;
        text = String::from_utf8_lossy(&raw[..end]).into_owned();
    }
    DeadLetter { source: source.to_owned(), position, error, raw: text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    #[test]
    fn kinds_by_fields() {
        let chat = decode(br#"{"ts":1,"channel":"c","user":"u","text":"hi","extra":[1,2]}"#).unwrap();
        assert!(matches!(chat, Event::Chat(Chat { ts: 1, .. })));
        let edge = decode(br#"{"ts":2,"src":"a","dst":"b"}"#).unwrap();
        assert_eq!(edge, Event::Edge(Edge { ts: 2, src: "a".into(), dst: "b".into(), weight: 1, op: EdgeOp::Add }));
        let del = decode(br#"{"ts":2,"src":"a","dst":"b","weight":3,"op":"del"}"#).unwrap();
        assert!(matches!(del, Event::Edge(Edge { weight: 3, op: EdgeOp::Del, .. })));
        let viewers = decode(br#"{"ts":3,"channel":"c","viewers":10}"#).unwrap();
        assert!(matches!(viewers, Event::Viewers(Viewers { viewers: 10, .. })));
        let post = decode(br#"{"ts":4,"id":"p","user":"u","text":"t","place":"Melbourne","retweet_of":null}"#).unwrap();
        assert!(matches!(post, Event::Post(Post { retweet_of: None, .. })));
    }

    #[test]
    fn escapes_are_decoded() {
        let chat = decode(br#"{"ts":1,"channel":"c","user":"u","text":"a\"b\u00e9"}"#).unwrap();
        assert!(matches!(chat, Event::Chat(Chat { ref text, .. }) if text == "a\"bé"));
    }

    /// The plain reader accepts the usual chat line, and whatever it accepts — of lines made
    /// to sit at its edges and of 20,000 random mutations of plain lines — serde reads as the
    /// same event.
    #[test]
    fn plain_chat_lines_read_as_serde_reads_them() {
        let plain = [
            r#"{"ts": 1700000000010, "channel": "kilwai", "user": "zoumtapook6487", "text": "this nerf дисы 긹톓 lol!!!"}"#,
            r#"{"ts":0,"channel":"c","user":"u","text":""}"#,
            " \t{ \"ts\" :\r\n-42 , \"channel\" : \"a,b\" ,\"user\":\"\u{7f}\",\"text\":\"x\" } \n",
            r#"{"ts": 9223372036854775807, "channel": "c", "user": "u", "text": "max"}"#,
            r#"{"ts": -9223372036854775808, "channel": "c", "user": "u", "text": "min"}"#,
        ];
        for line in plain {
            let chat = plain_chat(line).unwrap_or_else(|| panic!("not read plainly: {line}"));
            assert_eq!(decode_fields(line).unwrap(), Event::Chat(chat), "{line}");
        }
        // Left to serde (some valid, some not): escapes, control characters, other numbers,
        // other keys or orders, duplicates, trailing bytes, nulls, truncation.
        let others = [
            r#"{"ts": 1, "channel": "c", "user": "u", "text": "a \"quote\""}"#,
            r#"{"ts": 1, "channel": "c", "user": "u", "text": "tab\tin"}"#,
            "{\"ts\": 1, \"channel\": \"c\", \"user\": \"u\", \"text\": \"raw\ttab\"}",
            r#"{"ts": 1.0, "channel": "c", "user": "u", "text": "x"}"#,
            r#"{"ts": 1e3, "channel": "c", "user": "u", "text": "x"}"#,
            r#"{"ts": 01, "channel": "c", "user": "u", "text": "x"}"#,
            r#"{"ts": 9223372036854775808, "channel": "c", "user": "u", "text": "x"}"#,
            r#"{"ts": -, "channel": "c", "user": "u", "text": "x"}"#,
            r#"{"ts": -0, "channel": "c", "user": "u", "text": "x"}"#,
            r#"{"channel": "c", "ts": 1, "user": "u", "text": "x"}"#,
            r#"{"ts": 1, "channel": "c", "user": "u", "text": "x", "viewers": 3}"#,
            r#"{"ts": 1, "channel": "c", "user": "u", "text": "x", "text": "y"}"#,
            r#"{"ts": 1, "channel": "c", "user": "u", "text": "x"} x"#,
            r#"{"ts": 1, "channel": "c", "user": null, "text": "x"}"#,
            r#"{"ts": 1, "channel": "c", "user": "u", "text": "x""#,
            r#"{"t\u0073": 1, "channel": "c", "user": "u", "text": "x"}"#,
        ];
        for line in others {
            assert!(plain_chat(line).is_none(), "read plainly: {line}");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut read_plainly = 0;
        for round in 0..20_000 {
            let mut bytes = plain[round % plain.len()].as_bytes().to_vec();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..bytes.len());
                let byte = *b" \t\"\\,:{}-0159.eEuntx\x01\x1f\x7f\xc3\xa9".choose(&mut rng).unwrap();
                match rng.gen_range(0..3) {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => drop(bytes.remove(at)),
                }
            }
            let Ok(text) = std::str::from_utf8(&bytes) else { continue };
            if let Some(chat) = plain_chat(text) {
                read_plainly += 1;
                match decode_fields(text) {
                    Ok(event) => assert_eq!(event, Event::Chat(chat), "{text}"),
                    Err(e) => panic!("read plainly, but serde says {e}: {text}"),
                }
            }
        }
        assert!(read_plainly > 1000, "only {read_plainly} mutated lines were plain: the test checks little");
    }

    /// The word-at-a-time end of a string agrees with a byte-by-byte one at every length and
    /// position of a quote, a backslash, a control character or a byte near them.
    #[test]
    fn string_end_finds_the_first_special_byte() {
        let plain = |bytes: &[u8]| {
            let first = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            (bytes[first] == b'"').then_some(first)
        };
        for len in 0..40 {
            let base: Vec<u8> = (0..len).map(|i| b"ab\x80\xff \x7f!#"[i % 8]).collect();
            assert_eq!(string_end(&base), plain(&base), "{base:?}");
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x5b, 0x5d, 0xa2, 0xdc, 0x9f] {
                    let mut bytes = base.clone();
                    bytes[at] = special;
                    assert_eq!(string_end(&bytes), plain(&bytes), "{bytes:?}");
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                        assert_eq!(string_end(&bytes), plain(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn errors_say_why() {
        let err = |b: &[u8]| decode(b).unwrap_err().to_string();
        assert!(err(b"not json").starts_with("invalid JSON event"));
        assert!(err(br#"{"ts":1,"channel":"c","text":"x"}"#).contains("lacks field `user`"));
        assert!(err(br#"{"ts":"x","channel":"c","user":"u","text":"x"}"#).contains("invalid type"));
        assert!(err(br#"{"ts":1.5,"channel":"c","user":"u","text":"x"}"#).contains("invalid type"));
        assert!(err(br#"{"ts":1,"channel":"c","user":"u","text":"x""#).starts_with("invalid JSON event"));
        assert!(err(b"{\"ts\":1,\"channel\":\"\xff\",\"user\":\"u\",\"text\":\"x\"}").starts_with("invalid UTF-8"));
        assert!(err(br#"{"ts":1}"#).starts_with("not an event"));
        assert!(err(br#"[1,2]"#).starts_with("invalid JSON event"));
        assert!(err(br#"{"ts":1,"src":"a","dst":"b","op":"mul"}"#).contains("unknown op"));
        assert!(err(br#"{"ts":1,"src":"a"}"#).contains("edge event lacks field `dst`"));
        assert!(err(br#"{"ts":1,"channel":"c","user":"u"}"#).contains("chat event lacks field `text`"));
        assert!(err(br#"{"ts":1,"id":"p","user":"u"}"#).contains("post event lacks field `text`"));
        let big = vec![b' '; MAX_RECORD_BYTES + 1];
        assert!(err(&big).contains("exceeds the limit"));
    }

    #[test]
    fn weights_are_bounded_at_2_pow_31() {
        let edge = |w: &str| decode(format!(r#"{{"ts":1,"src":"a","dst":"b","weight":{w}}}"#).as_bytes());
        for ok in [MAX_WEIGHT, -MAX_WEIGHT, 0] {
            assert!(matches!(edge(&ok.to_string()), Ok(Event::Edge(Edge { weight, .. })) if weight == ok));
        }
        for bad in [MAX_WEIGHT + 1, -MAX_WEIGHT - 1, i64::MAX, i64::MIN] {
            let e = edge(&bad.to_string()).unwrap_err().to_string();
            assert!(e.contains(&format!("weight {bad}, outside")), "{e}");
        }
        // Beyond i64 is not an integer the decoder takes at all.
        assert!(edge("9223372036854775808").unwrap_err().to_string().starts_with("invalid JSON event"));
    }

    #[test]
    fn dead_letter_raw_is_cut_on_a_boundary() {
        let raw = "é".repeat(2000);
        let dl = dead_letter("f", "1".into(), "e".into(), raw.as_bytes());
        assert!(dl.raw.len() <= MAX_RAW_BYTES && dl.raw.chars().all(|c| c == 'é'));
        let dl = dead_letter("f", "1".into(), "e".into(), b"ab\xffcd");
        assert_eq!(dl.raw, "ab\u{fffd}cd");
    }
}
