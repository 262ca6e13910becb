//! The sequential oracle: DESIGN.md's views computed the plain way, with nothing shared with
//! the dataflow code (its own tokenizer is the regex `[\p{L}\p{Nd}]+`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use regex::Regex;

/// A chat event as the oracle sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msg {
    pub ts: i64,
    pub channel: String,
    pub user: String,
    pub text: String,
}

/// Each view as a set of rows, a row being its fields as text in column order.
pub type Views = BTreeMap<String, BTreeSet<Vec<String>>>;

pub fn tokenize(text: &str) -> Vec<String> {
    thread_local! {
        static WORD: Regex = Regex::new(r"[\p{L}\p{Nd}]+").unwrap();
    }
    let lower = text.to_lowercase();
    WORD.with(|re| re.find_iter(&lower).map(|m| m.as_str().to_owned()).collect())
}

/// floor(ts / 1000 / w) * w, computed in floating point (exact for millisecond timestamps).
pub fn window(ts: i64, w: i64) -> i64 {
    ((ts as f64) / 1000.0 / (w as f64)).floor() as i64 * w
}

fn ranked(counts: &HashMap<(String, String), i64>, k: usize) -> BTreeSet<Vec<String>> {
    let mut per_group: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for ((group, item), count) in counts {
        per_group.entry(group).or_default().push((item, *count));
    }
    let mut rows = BTreeSet::new();
    for (group, mut items) in per_group {
        items.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
        for (rank, (item, count)) in items.into_iter().take(k).enumerate() {
            rows.insert(vec![group.to_owned(), (rank + 1).to_string(), item.to_owned(), count.to_string()]);
        }
    }
    rows
}

/// The chat views of `msgs` with window `w` seconds and top-`k` rankings.
pub fn chat_views(msgs: &[Msg], w: i64, k: usize) -> Views {
    let mut word_counts: HashMap<(String, i64, String), i64> = HashMap::new();
    let mut activity: HashMap<(String, i64), (i64, i64, HashSet<String>)> = HashMap::new();
    let mut user_counts: HashMap<(String, String), i64> = HashMap::new();
    let mut channel_words: HashMap<(String, String), i64> = HashMap::new();
    for m in msgs {
        let win = window(m.ts, w);
        let words = tokenize(&m.text);
        let a = activity.entry((m.channel.clone(), win)).or_default();
        a.0 += 1;
        a.1 += words.len() as i64;
        a.2.insert(m.user.clone());
        *user_counts.entry((m.channel.clone(), m.user.clone())).or_default() += 1;
        for word in words {
            *word_counts.entry((m.channel.clone(), win, word.clone())).or_default() += 1;
            *channel_words.entry((m.channel.clone(), word)).or_default() += 1;
        }
    }
    let mut views = Views::new();
    views.insert(
        "word_counts".into(),
        word_counts
            .iter()
            .map(|((c, w, word), n)| vec![c.clone(), w.to_string(), word.clone(), n.to_string()])
            .collect(),
    );
    views.insert(
        "channel_activity".into(),
        activity
            .iter()
            .map(|((c, w), (m, n, u))| {
                vec![c.clone(), w.to_string(), m.to_string(), n.to_string(), u.len().to_string()]
            })
            .collect(),
    );
    views.insert(
        "user_counts".into(),
        user_counts.iter().map(|((c, u), n)| vec![c.clone(), u.clone(), n.to_string()]).collect(),
    );
    views.insert("top_words".into(), ranked(&channel_words, k));
    views.insert("top_users".into(), ranked(&user_counts, k));
    views
}

/// Reads chat events from JSONL with serde_json's generic values (not chatflow's decoder);
/// lines that are not chat events, or longer than the 1 MiB limit, are skipped.
pub fn read_chats(path: &std::path::Path) -> Vec<Msg> {
    let text = std::fs::read(path).unwrap();
    text.split(|b| *b == b'\n')
        .filter(|line| line.len() <= 1 << 20)
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter_map(|v| {
            Some(Msg {
                ts: v.get("ts")?.as_i64()?,
                channel: v.get("channel")?.as_str()?.to_owned(),
                user: v.get("user")?.as_str()?.to_owned(),
                text: v.get("text")?.as_str()?.to_owned(),
            })
        })
        .collect()
}

/// An edge event as the oracle sees it: a signed weight (negative for `del`).
pub type EdgeUpdate = (String, String, i64);

/// The network views of `edges` by sparse matrix powers: strengths, A², A³ for the focus
/// users (every user of the graph if `None`), and each focus user's top `n` others.
pub fn network_views(edges: &[EdgeUpdate], focus: Option<&[String]>, hops: u32, n: usize) -> Views {
    let mut totals: HashMap<(String, String), i64> = HashMap::new();
    for (src, dst, w) in edges {
        if src != dst {
            let pair = if src < dst { (src.clone(), dst.clone()) } else { (dst.clone(), src.clone()) };
            *totals.entry(pair).or_default() += w;
        }
    }
    totals.retain(|_, s| *s > 0);
    // Walks in 128 bits, checked: products of strengths outgrow an i64.
    let mut adjacency: BTreeMap<String, BTreeMap<String, i128>> = BTreeMap::new();
    for ((a, b), s) in &totals {
        adjacency.entry(a.clone()).or_default().insert(b.clone(), i128::from(*s));
        adjacency.entry(b.clone()).or_default().insert(a.clone(), i128::from(*s));
    }
    // One row of a matrix power times A.
    let times_a = |row: &BTreeMap<String, i128>| {
        let mut next: BTreeMap<String, i128> = BTreeMap::new();
        for (v, x) in row {
            for (w, s) in adjacency.get(v).into_iter().flatten() {
                let sum = next.entry(w.clone()).or_default();
                *sum = x.checked_mul(*s).and_then(|p| sum.checked_add(p)).expect("the oracle's walks fit 128 bits");
            }
        }
        next.retain(|_, x| *x != 0);
        next
    };
    let users: BTreeSet<String> = match focus {
        Some(focus) => focus.iter().cloned().collect(),
        None => adjacency.keys().cloned().collect(),
    };

    let mut views = Views::new();
    views.insert(
        "connections".into(),
        totals.iter().map(|((a, b), s)| vec![a.clone(), b.clone(), s.to_string()]).collect(),
    );
    let mut reach = BTreeSet::new();
    let mut top = BTreeSet::new();
    for f in &users {
        let a1 = adjacency.get(f).cloned().unwrap_or_default();
        let a2 = times_a(&a1);
        let a3 = if hops >= 3 { times_a(&a2) } else { BTreeMap::new() };
        for (h, row) in [(2, &a2), (3, &a3)] {
            for (other, walks) in row.iter().filter(|(o, _)| *o != f) {
                reach.insert(vec![f.clone(), other.clone(), h.to_string(), walks.to_string()]);
            }
        }
        let mut scored: Vec<((i128, i128, i128), &String)> = a1
            .keys()
            .chain(a2.keys())
            .chain(a3.keys())
            .filter(|o| *o != f)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|o| {
                let get = |m: &BTreeMap<String, i128>| m.get(o).copied().unwrap_or(0);
                ((get(&a1), get(&a2), get(&a3)), o)
            })
            .filter(|(score, _)| *score > (0, 0, 0))
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.as_bytes().cmp(b.1.as_bytes())));
        for (rank, ((s, w2, w3), o)) in scored.into_iter().take(n).enumerate() {
            top.insert(vec![
                f.clone(),
                (rank + 1).to_string(),
                o.clone(),
                s.to_string(),
                w2.to_string(),
                w3.to_string(),
            ]);
        }
    }
    views.insert("reach".into(), reach);
    views.insert("top_connections".into(), top);
    views
}

/// Reads edge events from JSONL with serde_json's generic values (not chatflow's decoder).
pub fn read_edges(path: &std::path::Path) -> Vec<EdgeUpdate> {
    let text = std::fs::read(path).unwrap();
    text.split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter_map(|v| {
            let weight = v.get("weight").map_or(Some(1), |w| w.as_i64())?;
            let sign = if v.get("op").and_then(|o| o.as_str()) == Some("del") { -1 } else { 1 };
            Some((v.get("src")?.as_str()?.to_owned(), v.get("dst")?.as_str()?.to_owned(), sign * weight))
        })
        .collect()
}

/// The edges chat mentions make: (author, name) for every `@name`, the name being the ASCII
/// letters, digits and `_` after `@`, lowercased.
pub fn mention_edges(msgs: &[Msg]) -> Vec<EdgeUpdate> {
    let mention = Regex::new(r"@([A-Za-z0-9_]+)").unwrap();
    msgs.iter()
        .flat_map(|m| {
            mention.captures_iter(&m.text).map(|c| (m.user.clone(), c[1].to_ascii_lowercase(), 1)).collect::<Vec<_>>()
        })
        .collect()
}

/// A post as the oracle sees it: absent or null `place` and `retweet_of` are empty strings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PostEv {
    pub ts: i64,
    pub id: String,
    pub user: String,
    pub text: String,
    pub place: String,
    pub retweet_of: String,
}

/// A viewer count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewerEv {
    pub ts: i64,
    pub channel: String,
    pub viewers: i64,
}

fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read(path).unwrap();
    text.split(|b| *b == b'\n')
        .filter(|line| line.len() <= 1 << 20)
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .collect()
}

/// The posts of a JSONL file (lines with an `id` and no `channel`, `src` or `dst`).
pub fn read_posts(path: &std::path::Path) -> Vec<PostEv> {
    let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    json_lines(path)
        .into_iter()
        .filter(|v| v.get("channel").is_none() && v.get("src").is_none() && v.get("dst").is_none())
        .filter_map(|v| {
            Some(PostEv {
                ts: v.get("ts")?.as_i64()?,
                id: v.get("id")?.as_str()?.to_owned(),
                user: v.get("user")?.as_str()?.to_owned(),
                text: v.get("text")?.as_str()?.to_owned(),
                place: text(&v, "place"),
                retweet_of: text(&v, "retweet_of"),
            })
        })
        .collect()
}

/// The viewer counts of a JSONL file (`channel` and `viewers`, no `text`).
pub fn read_viewers(path: &std::path::Path) -> Vec<ViewerEv> {
    json_lines(path)
        .into_iter()
        .filter(|v| v.get("text").is_none())
        .filter_map(|v| {
            Some(ViewerEv {
                ts: v.get("ts")?.as_i64()?,
                channel: v.get("channel")?.as_str()?.to_owned(),
                viewers: v.get("viewers")?.as_i64()?,
            })
        })
        .collect()
}

/// `place_activity` (window `w` seconds) and `top_retweeted` (top `k`) of `posts`: each id
/// once, by its least copy in (ts, user, text, place, retweet_of) order.
pub fn post_views(posts: &[PostEv], w: i64, k: usize) -> Views {
    let mut canonical: BTreeMap<&str, &PostEv> = BTreeMap::new();
    for p in posts {
        let key = |p: &PostEv| (p.ts, p.user.clone(), p.text.clone(), p.place.clone(), p.retweet_of.clone());
        let slot = canonical.entry(&p.id).or_insert(p);
        if key(p) < key(slot) {
            *slot = p;
        }
    }
    let mut places: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    let mut retweeted: HashMap<((), String), i64> = HashMap::new();
    for p in canonical.values() {
        if !p.place.is_empty() {
            let slot = places.entry((p.place.clone(), window(p.ts, w))).or_default();
            slot.0 += 1;
            slot.1 += (!p.retweet_of.is_empty()) as i64;
        }
        if !p.retweet_of.is_empty() {
            *retweeted.entry(((), p.retweet_of.clone())).or_default() += 1;
        }
    }
    let mut ranked_ids: Vec<(&String, &i64)> = retweeted.iter().map(|(((), id), n)| (id, n)).collect();
    ranked_ids.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
    let mut views = Views::new();
    views.insert(
        "place_activity".into(),
        places
            .iter()
            .map(|((p, win), (n, r))| vec![p.clone(), win.to_string(), n.to_string(), r.to_string()])
            .collect(),
    );
    views.insert(
        "top_retweeted".into(),
        ranked_ids
            .into_iter()
            .take(k)
            .enumerate()
            .map(|(rank, (id, n))| vec![(rank + 1).to_string(), id.clone(), n.to_string()])
            .collect(),
    );
    views
}

/// `engagement`: per (channel, window) with a message or a viewer event, the messages and the
/// count of the viewer event with the greatest ts (ties: the greatest count), 0 if none.
pub fn engagement(msgs: &[Msg], viewers: &[ViewerEv], w: i64) -> Views {
    // Per (channel, window): messages, and the latest (ts, viewers).
    type Window = (i64, Option<(i64, i64)>);
    let mut rows: BTreeMap<(String, i64), Window> = BTreeMap::new();
    for m in msgs {
        rows.entry((m.channel.clone(), window(m.ts, w))).or_default().0 += 1;
    }
    for v in viewers {
        let slot = &mut rows.entry((v.channel.clone(), window(v.ts, w))).or_default().1;
        if slot.is_none_or(|best| (v.ts, v.viewers) > best) {
            *slot = Some((v.ts, v.viewers));
        }
    }
    let mut views = Views::new();
    views.insert(
        "engagement".into(),
        rows.into_iter()
            .map(|((c, win), (m, latest))| {
                vec![c, win.to_string(), m.to_string(), latest.map_or(0, |l| l.1).to_string()]
            })
            .collect(),
    );
    views
}

/// The three lexica of the sentiment rule, values in millionths.
#[derive(Default)]
pub struct Lexica {
    pub emote: HashMap<String, i64>,
    pub emoji: HashMap<String, i64>,
    pub vader: HashMap<String, i64>,
}

impl Lexica {
    /// Reads `emote_average.tsv`, `emoji_average.tsv` and `vader_average.tsv` of `dir`: a header
    /// line, then `key<TAB>value`; a later line of a key replaces an earlier one.
    pub fn read(dir: &std::path::Path) -> Lexica {
        let read = |name: &str| -> HashMap<String, i64> {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            text.lines()
                .skip(1)
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let (k, v) = l.trim_end_matches('\r').rsplit_once('\t').unwrap();
                    (k.to_owned(), (v.trim().parse::<f64>().unwrap() * 1e6).round() as i64)
                })
                .collect()
        };
        Lexica { emote: read("emote_average.tsv"), emoji: read("emoji_average.tsv"), vader: read("vader_average.tsv") }
    }

    /// DESIGN.md's rule, clause by clause: (sum of the values hit in millionths, hits).
    pub fn score(&self, text: &str) -> (i64, i64) {
        const NEGATIONS: &str = "not no never nothing nobody none nowhere neither nor cannot cant can't dont don't \
            doesnt doesn't didnt didn't isnt isn't arent aren't wasnt wasn't werent weren't wont won't wouldnt wouldn't \
            shouldnt shouldn't couldnt couldn't havent haven't hasnt hasn't hadnt hadn't aint ain't";
        let negation = |s: &str| NEGATIONS.split(' ').any(|n| n == s);
        let letter_or_digit = Regex::new(r"^[\p{L}\p{Nd}]$").unwrap();
        let (mut sum, mut hits, mut scope) = (0i64, 0i64, false);
        for t in text.split_whitespace() {
            let mut closed = false;
            if let Some(v) = self.emote.get(t) {
                sum += v;
                hits += 1;
                scope = false;
                closed = true;
            } else if let Some(v) = self.emoji.get(t) {
                sum += v;
                hits += 1;
                scope = false;
                closed = true;
            } else {
                let lower = t.to_lowercase();
                let chars: Vec<char> = lower.chars().collect();
                let keep = |c: &char| letter_or_digit.is_match(&c.to_string());
                let first = chars.iter().position(keep);
                let w: String = match first {
                    None => String::new(),
                    Some(a) => {
                        let b = chars.iter().rposition(keep).unwrap();
                        chars[a..=b].iter().collect()
                    }
                };
                if negation(&w) || negation(&lower) {
                    scope = true;
                } else if let Some(v) = self.vader.get(t).or(self.vader.get(&w)) {
                    sum += if scope { -v } else { *v };
                    hits += 1;
                } else {
                    let glued: Vec<i64> = t.chars().filter_map(|c| self.emoji.get(&c.to_string()).copied()).collect();
                    if !glued.is_empty() {
                        sum += glued.iter().sum::<i64>();
                        hits += glued.len() as i64;
                        scope = false;
                        closed = true;
                    }
                }
            }
            if !closed && [".", "!", "?", ";", ":"].iter().any(|p| t.ends_with(p)) {
                scope = false;
            }
        }
        (sum, hits)
    }

    /// The class of a message: 1 positive (score > 0.33), -1 negative (< -0.33), 0 neutral.
    pub fn class(&self, text: &str) -> i32 {
        let (sum, hits) = self.score(text);
        // sum / hits / 1e6 compared with ±0.33, without division.
        if hits > 0 && sum * 100 > 33 * 1_000_000 * hits {
            1
        } else if hits > 0 && sum * 100 < -33 * 1_000_000 * hits {
            -1
        } else {
            0
        }
    }
}

/// `sentiment`: per (channel, window) the messages per class and Σ round(score × 1000), half
/// away from zero.
pub fn sentiment(msgs: &[Msg], lexica: &Lexica, w: i64) -> Views {
    let mut rows: BTreeMap<(String, i64), [i64; 4]> = BTreeMap::new();
    for m in msgs {
        let (sum, hits) = lexica.score(&m.text);
        let row = rows.entry((m.channel.clone(), window(m.ts, w))).or_default();
        row[(1 - lexica.class(&m.text)) as usize] += 1;
        if hits > 0 {
            // round(sum / hits / 1000), half away from zero, in exact integers.
            let (n, d) = (sum.abs(), hits * 1000);
            let rounded = (n / d) + ((n % d) * 2 >= d) as i64;
            row[3] += sum.signum() * rounded;
        }
    }
    let mut views = Views::new();
    views.insert(
        "sentiment".into(),
        rows.into_iter()
            .map(|((c, win), r)| {
                let mut row = vec![c, win.to_string()];
                row.extend(r.iter().map(|x| x.to_string()));
                row
            })
            .collect(),
    );
    views
}

/// The kind of event a JSON line holds, as the oracle reads kinds: an edge (`src`), a chat
/// (`channel` and `text`), a viewer count (`channel` and `viewers`) or a post (`id`).
pub fn kind_of(event: &serde_json::Value) -> Option<&'static str> {
    let has = |k: &str| event.get(k).is_some_and(|x| !x.is_null());
    if has("src") {
        Some("edge")
    } else if has("channel") && has("text") {
        Some("chat")
    } else if has("channel") && has("viewers") {
        Some("viewers")
    } else if has("id") {
        Some("post")
    } else {
        None
    }
}

/// Whether an event of `kind` (chat, viewers: windows of `chat_w` seconds; post: `post_w`)
/// with `ts` is late at `watermark` (none: nothing read before) with `retention` seconds: its
/// window ends `retention` or more before the watermark. Edges are never late.
pub fn late(kind: &str, ts: i64, watermark: Option<i64>, retention: i64, chat_w: i64, post_w: i64) -> bool {
    let w = match kind {
        "chat" | "viewers" => chat_w,
        "post" => post_w,
        _ => return false,
    };
    watermark.is_some_and(|mark| (window(ts, w) + w + retention) * 1000 <= mark)
}

/// DESIGN.md's retention horizon over the replay log `files` (their lines in order, line `g`
/// at time `floor(g / batch)`): returns the lines of the events that count (every line but the
/// late ones) and the `late_events` rows. An event is of a [`kind_of`]; the watermark of time
/// `t` is the greatest `ts` of the events at times before `t`; an event is late by [`late`].
pub fn retention(
    files: &[&std::path::Path],
    batch: u64,
    retention: i64,
    chat_w: i64,
    post_w: i64,
) -> (String, BTreeSet<Vec<String>>) {
    let mut events = Vec::new();
    let mut g = 0u64;
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, line) in text.split('\n').enumerate() {
            let v = serde_json::from_str::<serde_json::Value>(line).ok();
            if let Some((kind, v)) = v.as_ref().and_then(|v| Some((kind_of(v)?, v))) {
                let ts = v["ts"].as_i64().unwrap();
                events.push((g / batch, file.display().to_string(), i as u64 + 1, kind, ts, line.to_owned()));
            }
            g += 1;
        }
        // The split gave one piece after the final newline, not a line of the log.
        if text.ends_with('\n') {
            g -= 1;
        }
    }
    // The greatest ts per time, then the watermark of each time.
    let mut greatest: BTreeMap<u64, i64> = BTreeMap::new();
    for (time, _, _, _, ts, _) in &events {
        let m = greatest.entry(*time).or_insert(i64::MIN);
        *m = (*m).max(*ts);
    }
    let watermark = |time: u64| greatest.range(..time).map(|(_, m)| *m).max();
    let mut kept = String::new();
    let mut rows = BTreeSet::new();
    for (time, source, line, kind, ts, text) in events {
        let mark = watermark(time);
        if late(kind, ts, mark, retention, chat_w, post_w) {
            let mark = mark.unwrap_or_default();
            rows.insert(vec![source, line.to_string(), kind.to_owned(), ts.to_string(), mark.to_string()]);
        } else {
            kept.push_str(&text);
            kept.push('\n');
        }
    }
    (kept, rows)
}
