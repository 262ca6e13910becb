//! Property tests of the event decoder: it never panics, every well-formed chat event
//! round-trips, and no truncation of an event decodes.

use chatflow::sources::decode::{dead_letter, decode, Event, MAX_RAW_BYTES};
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&bytes);
        let dl = dead_letter("src", "1".into(), "e".into(), &bytes);
        prop_assert!(dl.raw.len() <= MAX_RAW_BYTES);
    }

    #[test]
    fn chat_events_round_trip(
        ts in any::<i64>(),
        channel in "\\PC{1,12}",
        user in "\\PC{1,12}",
        text in "\\PC{0,40}",
    ) {
        let line = serde_json::json!({"ts": ts, "channel": channel, "user": user, "text": text, "x": [1]}).to_string();
        match decode(line.as_bytes()) {
            Ok(Event::Chat(chat)) => {
                prop_assert_eq!(chat.ts, ts);
                prop_assert_eq!(chat.channel.as_str(), channel.as_str());
                prop_assert_eq!(chat.user.as_str(), user.as_str());
                prop_assert_eq!(chat.text, text);
            }
            other => prop_assert!(false, "{:?}", other),
        }
        // Every strict prefix is an error, never an event.
        for cut in 0..line.len() {
            if line.is_char_boundary(cut) {
                prop_assert!(decode(&line.as_bytes()[..cut]).is_err());
            }
        }
    }
}
