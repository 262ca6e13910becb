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
