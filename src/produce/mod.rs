//! `chatflow produce`: seeded synthetic traffic, into a file or into Kafka.
//!
//! Chat:
//! Channels and users are Zipf-distributed (a few channels and chatters dominate), words are
//! Zipf over a vocabulary of common words, Twitch emotes, non-ASCII words and a long tail of
//! made-up words; emotes get spammed, casing varies, some messages mention a user. Event
//! time advances at `--rate` messages per second with jitter, and `--late-fraction` of the
//! messages arrive late, stamped up to 5 minutes before the stream's current time. The same
//! seed and flags give the same bytes (ChaCha8, no wall clock).
//!
//! Edges, like the old producer: every `--batch-interval-ms` a batch of `--edges-per-batch`
//! edges between user ids `0..--user-ids`, weight 1; with `--delete-fraction` that fraction
//! of the events delete an edge added earlier.
//!
//! Posts: `--rate` posts per second from Zipf-popular users and `--places` Zipf-popular
//! places (a fifth without a place); `--retweet-fraction` of them retweet an earlier post
//! (Zipf-popular: a few go viral) or, one in twenty, an id never seen; `--redeliver-fraction`
//! deliver an earlier post again, half as an exact copy and half with another `ts`; late as
//! chat is.
//!
//! Viewers: every `--viewers-interval-ms` a count for each channel, Zipf by the channel's
//! popularity with ±20 % noise; late as chat is.
//!
//! Several kinds at once (`--kind chat,posts,viewers`) interleave by their clocks.
//!
//! Into Kafka (`--kafka`), events are paced in real time: the stream's clock starts now and an
//! event is sent when the wall clock reaches it (so `--rate 50000` is 50,000 messages/s).
//! Records are keyed by channel (chat) or src (edges) and carry the event's `ts` as their
//! Kafka timestamp. `--from FILE` replays a fixture instead, at `--speed` times its own pace
//! or at full speed. Missing topics are created with `--partitions`. SIGINT/SIGTERM stop
//! the producer after it has flushed what it sent.

pub mod irc;
pub mod kafka;

use std::io::{self, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};

use crate::cli::{ProduceArgs, ProduceKind};
use crate::sources::decode::write_chat_line;

const CHANNELS: &[&str] = &[
    "xqc",
    "kaicenat",
    "ibai",
    "shroud",
    "pokimane",
    "summit1g",
    "asmongold",
    "auronplay",
    "rubius",
    "tarik",
    "hasanabi",
    "lirik",
    "sodapoppin",
    "forsen",
    "admiralbulldog",
    "gaules",
    "zackrawrr",
    "caedrel",
    "jynxzi",
    "squeezie",
];

const COMMON: &[&str] = &[
    "the", "a", "is", "i", "you", "it", "to", "and", "that", "this", "what", "no", "yes", "lol", "he", "so", "chat",
    "of", "in", "game", "my", "just", "bro", "for", "not", "on", "was", "we", "omg", "gg", "why", "be", "are", "like",
    "do", "me", "wtf", "they", "all", "have", "can", "play", "now", "go", "with", "how", "one", "but", "get", "lmao",
    "stream", "good", "nice", "win", "streamer", "here", "love", "man", "when", "did", "got", "time", "first", "team",
    "dude", "guys", "clip", "insane", "bad", "never", "again", "mods", "hype", "sub", "next", "round", "kill", "dead",
    "ez", "clutch", "throw", "ult", "boss", "run", "map", "sus", "based", "true", "real", "w", "l", "2", "10", "100",
    "1v1", "2024", "o7",
];

const EMOTES: &[&str] = &[
    "Kappa",
    "PogChamp",
    "LUL",
    "KEKW",
    "OMEGALUL",
    "monkaS",
    "Pog",
    "PogU",
    "PepeHands",
    "Sadge",
    "4Head",
    "ResidentSleeper",
    "BibleThump",
    "TriHard",
    "Kreygasm",
    "SeemsGood",
    "NotLikeThis",
    "WutFace",
    "Jebaited",
    "EZ",
    "Clap",
    "catJAM",
    "peepoHappy",
    "pepeLaugh",
    "monkaW",
    "COPIUM",
    "Aware",
    "Stare",
    "ICANT",
    "xqcL",
    "D:",
    "<3",
    ":)",
    "BabyRage",
    "DansGame",
    "HeyGuys",
    "VoHiYo",
    "CoolCat",
    "FeelsGoodMan",
    "FeelsBadMan",
];

const FOREIGN: &[&str] = &[
    "café",
    "niño",
    "jajaja",
    "ñandú",
    "straße",
    "größer",
    "ça",
    "déjà",
    "żółw",
    "привет",
    "спасибо",
    "круто",
    "日本",
    "ありがとう",
    "草",
    "좋아요",
    "ㅋㅋㅋ",
    "مرحبا",
    "שלום",
    "γεια",
    "Ελλάδα",
    "çok",
    "güzel",
    "việt",
    "नमस्ते",
    "ПОБЕДА",
    "ΣΟΦΟΣ",
    "İstanbul",
    "٣٤",
    "१२३",
];

const SYMBOLS: &[&str] = &["!", "?", "!!", "...", "🔥", "😂", "💀", "❤️", "👀", ",", ":", "-", "/", "™"];

const SYLLABLES: &[&str] = &[
    "ka", "zu", "mi", "ro", "te", "la", "po", "gri", "ven", "dor", "shi", "xo", "qua", "bel", "nik", "tor", "ful",
    "ex", "yo", "sa",
];

/// A made-up but stable word or name for index `i`.
fn made_up(mut i: u64, min_syllables: u64) -> String {
    let mut s = String::new();
    let mut n = 0;
    while n < min_syllables || i > 0 {
        s.push_str(SYLLABLES[(i % SYLLABLES.len() as u64) as usize]);
        i /= SYLLABLES.len() as u64;
        n += 1;
    }
    s
}

fn channel_name(i: u64) -> String {
    match CHANNELS.get(i as usize) {
        Some(name) => (*name).to_owned(),
        None => format!("{}_{}", made_up(i, 2), i),
    }
}

fn user_name(i: u64) -> String {
    format!("{}{}", made_up(i.wrapping_mul(2_654_435_761) % 8000, 2), i % 1000)
}

/// The generator's state: its random stream and the samplers.
pub struct ChatGenerator {
    rng: ChaCha8Rng,
    channel_zipf: Zipf<f64>,
    user_zipf: Zipf<f64>,
    word_zipf: Zipf<f64>,
    vocabulary: Vec<String>,
    channels: Vec<String>,
    users: u64,
    clock_ms: f64,
    step_ms: f64,
    late_fraction: f64,
    text: String,
}

/// The vocabulary in Zipf rank order: common words and emotes lead, a non-ASCII word every
/// tenth rank, then a long tail of made-up words.
fn vocabulary(size: usize) -> Vec<String> {
    let (mut common, mut emotes, mut foreign) = (COMMON.iter(), EMOTES.iter(), FOREIGN.iter());
    (0..size)
        .map(|rank| {
            let pick = if rank % 10 == 9 {
                foreign.next()
            } else if rank % 3 == 1 {
                emotes.next()
            } else {
                common.next()
            };
            pick.map(|w| (*w).to_owned()).unwrap_or_else(|| made_up(rank as u64, 2))
        })
        .collect()
}

/// The default event time of the first message in a file: 2025-03-01T00:00:00Z.
pub const DEFAULT_START_MS: i64 = 1_740_787_200_000;

/// A seeded stream of events written as JSON lines.
pub trait Generator {
    /// Appends the next event's line to `out`; returns its partitioning key and `ts`.
    fn next_event(&mut self, out: &mut Vec<u8>) -> (String, i64);
    /// The stream's clock: when the next event is due (ms since the epoch).
    fn clock_ms(&self) -> i64;
}

impl ChatGenerator {
    pub fn new(args: &ProduceArgs, start_ms: i64) -> Self {
        ChatGenerator {
            rng: ChaCha8Rng::seed_from_u64(args.seed),
            channel_zipf: Zipf::new(args.channels, 1.1).expect("channels >= 1"),
            user_zipf: Zipf::new(args.users, 1.0).expect("users >= 1"),
            word_zipf: Zipf::new(20_000, 1.05).expect("vocabulary >= 1"),
            vocabulary: vocabulary(20_000),
            channels: (0..args.channels).map(channel_name).collect(),
            users: args.users,
            clock_ms: start_ms as f64,
            step_ms: 1000.0 / args.rate.max(1e-6),
            late_fraction: args.late_fraction.clamp(0.0, 1.0),
            text: String::new(),
        }
    }

    /// Writes the next message as one JSON line; returns its channel and `ts`.
    pub fn write_next(&mut self, out: &mut impl Write) -> io::Result<(String, i64)> {
        let rng = &mut self.rng;
        self.clock_ms += self.step_ms * rng.gen_range(0.0..2.0);
        let mut ts = self.clock_ms as i64;
        if rng.gen_bool(self.late_fraction) {
            ts -= rng.gen_range(1_000..=300_000);
        }
        let channel_idx = self.channel_zipf.sample(rng) as u64 - 1;
        // Each channel has its own regulars: rotate the Zipf ranks by the channel.
        let user_idx = (self.user_zipf.sample(rng) as u64 - 1 + channel_idx * 7919) % self.users;
        let user = user_name(user_idx);

        self.text.clear();
        let words = 1 + (rng.gen_range(0.0f64..1.0).powi(2) * 12.0) as usize;
        let mut i = 0;
        while i < words {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            let roll: f64 = rng.gen();
            if roll < 0.04 {
                self.text.push('@');
                self.text.push_str(&user_name((self.user_zipf.sample(rng) as u64 - 1) % self.users));
            } else if roll < 0.10 {
                self.text.push_str(SYMBOLS[rng.gen_range(0..SYMBOLS.len())]);
            } else if roll < 0.14 {
                // Emote spam.
                let emote = EMOTES[rng.gen_range(0..8)];
                for k in 0..rng.gen_range(2..6) {
                    if k > 0 {
                        self.text.push(' ');
                    }
                    self.text.push_str(emote);
                }
            } else {
                let mut word = self.vocabulary[self.word_zipf.sample(rng) as usize - 1].clone();
                match rng.gen_range(0..20) {
                    0 => word = word.to_uppercase(),
                    1 => word.push_str(SYMBOLS[rng.gen_range(0..4)]),
                    _ => {}
                }
                self.text.push_str(&word);
            }
            i += 1;
        }
        let channel = &self.channels[channel_idx as usize];
        write_chat_line(out, ts, channel, &user, &self.text)?;
        Ok((channel.clone(), ts))
    }
}

impl Generator for ChatGenerator {
    fn next_event(&mut self, out: &mut Vec<u8>) -> (String, i64) {
        self.write_next(out).expect("writing to memory cannot fail")
    }
    fn clock_ms(&self) -> i64 {
        self.clock_ms as i64
    }
}

/// Batches of edges between numbered users, some deleting earlier ones.
pub struct EdgeGenerator {
    rng: ChaCha8Rng,
    user_ids: u64,
    per_batch: u64,
    interval_ms: i64,
    delete_fraction: f64,
    clock_ms: i64,
    in_batch: u64,
    /// Edges added and not yet deleted.
    live: Vec<(u64, u64)>,
}

impl EdgeGenerator {
    pub fn new(args: &ProduceArgs, start_ms: i64) -> Self {
        EdgeGenerator {
            rng: ChaCha8Rng::seed_from_u64(args.seed),
            user_ids: args.user_ids,
            per_batch: args.edges_per_batch.max(1),
            interval_ms: args.batch_interval_ms as i64,
            delete_fraction: args.delete_fraction.clamp(0.0, 1.0),
            clock_ms: start_ms,
            in_batch: 0,
            live: Vec::new(),
        }
    }
}

impl Generator for EdgeGenerator {
    fn next_event(&mut self, out: &mut Vec<u8>) -> (String, i64) {
        let ts = self.clock_ms;
        let (src, dst, op) = if !self.live.is_empty() && self.rng.gen_bool(self.delete_fraction) {
            let (src, dst) = self.live.swap_remove(self.rng.gen_range(0..self.live.len()));
            (src, dst, "del")
        } else {
            let src = self.rng.gen_range(0..self.user_ids);
            let mut dst = self.rng.gen_range(0..self.user_ids - 1);
            if dst >= src {
                dst += 1;
            }
            self.live.push((src, dst));
            (src, dst, "add")
        };
        let line = serde_json::json!({"ts": ts, "src": src.to_string(), "dst": dst.to_string(), "weight": 1, "op": op});
        serde_json::to_writer(&mut *out, &line).expect("writing to memory cannot fail");
        out.push(b'\n');
        self.in_batch += 1;
        if self.in_batch == self.per_batch {
            self.in_batch = 0;
            self.clock_ms += self.interval_ms;
        }
        (src.to_string(), ts)
    }
    fn clock_ms(&self) -> i64 {
        self.clock_ms
    }
}

const PLACES: &[&str] = &[
    "Melbourne",
    "Sydney",
    "London",
    "New York",
    "Tokyo",
    "São Paulo",
    "Berlin",
    "Paris",
    "Seoul",
    "Toronto",
    "Mumbai",
    "Lagos",
    "Madrid",
    "Ciudad de México",
    "Istanbul",
    "Москва",
    "Jakarta",
    "Brisbane",
    "Perth",
    "Adelaide",
];

fn place_name(i: u64) -> String {
    match PLACES.get(i as usize) {
        Some(name) => (*name).to_owned(),
        None => format!("{} {}", made_up(i, 2), i),
    }
}

/// A post as `produce` writes it.
#[derive(Clone)]
struct GeneratedPost {
    ts: i64,
    id: String,
    user: String,
    text: String,
    place: Option<String>,
    retweet_of: Option<String>,
}

/// Posts, retweets and re-deliveries.
pub struct PostGenerator {
    rng: ChaCha8Rng,
    user_zipf: Zipf<f64>,
    place_zipf: Zipf<f64>,
    viral_zipf: Zipf<f64>,
    word_zipf: Zipf<f64>,
    vocabulary: Vec<String>,
    users: u64,
    clock_ms: f64,
    step_ms: f64,
    late_fraction: f64,
    retweet_fraction: f64,
    redeliver_fraction: f64,
    issued: u64,
    /// Recent posts, for re-delivery.
    recent: std::collections::VecDeque<GeneratedPost>,
}

impl PostGenerator {
    pub fn new(args: &ProduceArgs, start_ms: i64) -> Self {
        PostGenerator {
            rng: ChaCha8Rng::seed_from_u64(args.seed ^ 0x706f_7374),
            user_zipf: Zipf::new(args.users, 1.0).expect("users >= 1"),
            place_zipf: Zipf::new(args.places, 1.1).expect("places >= 1"),
            viral_zipf: Zipf::new(1_000, 1.3).expect("1000 >= 1"),
            word_zipf: Zipf::new(20_000, 1.05).expect("vocabulary >= 1"),
            vocabulary: vocabulary(20_000),
            users: args.users,
            clock_ms: start_ms as f64,
            step_ms: 1000.0 / args.rate.max(1e-6),
            late_fraction: args.late_fraction,
            retweet_fraction: args.retweet_fraction,
            redeliver_fraction: args.redeliver_fraction,
            issued: 0,
            recent: Default::default(),
        }
    }

    fn next_post(&mut self) -> GeneratedPost {
        let rng = &mut self.rng;
        self.clock_ms += self.step_ms * rng.gen_range(0.0..2.0);
        if !self.recent.is_empty() && rng.gen_bool(self.redeliver_fraction) {
            let mut copy = self.recent[rng.gen_range(0..self.recent.len())].clone();
            if rng.gen_bool(0.5) {
                copy.ts += rng.gen_range(-120_000..=120_000);
            }
            return copy;
        }
        let mut ts = self.clock_ms as i64;
        if rng.gen_bool(self.late_fraction) {
            ts -= rng.gen_range(1_000..=300_000);
        }
        let id = format!("{}", 1_000_000_000_000 + self.issued);
        self.issued += 1;
        let user = user_name((self.user_zipf.sample(rng) as u64 - 1) % self.users);
        let place = rng.gen_bool(0.8).then(|| place_name(self.place_zipf.sample(rng) as u64 - 1));
        let retweet_of = (self.issued > 1 && rng.gen_bool(self.retweet_fraction)).then(|| {
            if rng.gen_bool(0.05) {
                format!("unknown{}", rng.gen_range(0..100))
            } else {
                let slot = (self.viral_zipf.sample(rng) as u64 - 1) * 7919;
                format!("{}", 1_000_000_000_000 + slot % (self.issued - 1))
            }
        });
        let words = 3 + rng.gen_range(0..12);
        let text: Vec<&str> =
            (0..words).map(|_| self.vocabulary[self.word_zipf.sample(rng) as usize - 1].as_str()).collect();
        let text = match &retweet_of {
            Some(original) => format!("RT {original}: {}", text.join(" ")),
            None => text.join(" "),
        };
        let post = GeneratedPost { ts, id, user, text, place, retweet_of };
        if self.recent.len() == 1000 {
            self.recent.pop_front();
        }
        self.recent.push_back(post.clone());
        post
    }
}

impl Generator for PostGenerator {
    fn next_event(&mut self, out: &mut Vec<u8>) -> (String, i64) {
        let p = self.next_post();
        let line = serde_json::json!({
            "ts": p.ts, "id": p.id, "user": p.user, "text": p.text, "place": p.place, "retweet_of": p.retweet_of,
        });
        serde_json::to_writer(&mut *out, &line).expect("writing to memory cannot fail");
        out.push(b'\n');
        (p.user, p.ts)
    }
    fn clock_ms(&self) -> i64 {
        self.clock_ms as i64
    }
}

/// Viewer counts of every channel at a fixed interval.
pub struct ViewerGenerator {
    rng: ChaCha8Rng,
    channels: Vec<String>,
    clock_ms: f64,
    step_ms: f64,
    late_fraction: f64,
    next_channel: usize,
}

impl ViewerGenerator {
    pub fn new(args: &ProduceArgs, start_ms: i64) -> Self {
        ViewerGenerator {
            rng: ChaCha8Rng::seed_from_u64(args.seed ^ 0x7669_6577),
            channels: (0..args.channels).map(channel_name).collect(),
            clock_ms: start_ms as f64,
            step_ms: args.viewers_interval_ms as f64 / args.channels as f64,
            late_fraction: args.late_fraction,
            next_channel: 0,
        }
    }
}

impl Generator for ViewerGenerator {
    fn next_event(&mut self, out: &mut Vec<u8>) -> (String, i64) {
        let rng = &mut self.rng;
        self.clock_ms += self.step_ms;
        let mut ts = self.clock_ms as i64;
        if rng.gen_bool(self.late_fraction) {
            ts -= rng.gen_range(1_000..=300_000);
        }
        let i = self.next_channel;
        self.next_channel = (i + 1) % self.channels.len();
        let base = 200_000.0 / (i as f64 + 1.0).powf(1.1);
        let viewers = (base * rng.gen_range(0.8..1.2)) as i64;
        let channel = self.channels[i].clone();
        let line = serde_json::json!({"ts": ts, "channel": channel, "viewers": viewers});
        serde_json::to_writer(&mut *out, &line).expect("writing to memory cannot fail");
        out.push(b'\n');
        (channel, ts)
    }
    fn clock_ms(&self) -> i64 {
        self.clock_ms as i64
    }
}

/// Several generators as one stream: the next event is the one of the generator whose
/// clock is earliest (the first on ties).
struct Interleaved {
    generators: Vec<(ProduceKind, Box<dyn Generator>)>,
}

impl Interleaved {
    /// The kind of the next event, and the event.
    fn next_event(&mut self, out: &mut Vec<u8>) -> (ProduceKind, String, i64) {
        let (kind, generator) =
            self.generators.iter_mut().min_by_key(|(_, g)| g.clock_ms()).expect("at least one kind");
        let (key, ts) = generator.next_event(out);
        (*kind, key, ts)
    }

    fn clock_ms(&self) -> i64 {
        self.generators.iter().map(|(_, g)| g.clock_ms()).min().unwrap_or(0)
    }
}

fn generator(args: &ProduceArgs, start_ms: i64) -> Interleaved {
    let mut kinds = args.kind.clone();
    kinds.dedup();
    let generators = kinds
        .into_iter()
        .map(|kind| {
            let g: Box<dyn Generator> = match kind {
                ProduceKind::Chat => Box::new(ChatGenerator::new(args, start_ms)),
                ProduceKind::Edges => Box::new(EdgeGenerator::new(args, start_ms)),
                ProduceKind::Posts => Box::new(PostGenerator::new(args, start_ms)),
                ProduceKind::Viewers => Box::new(ViewerGenerator::new(args, start_ms)),
            };
            (kind, g)
        })
        .collect();
    Interleaved { generators }
}

/// Writes `--count` events (default 100,000) to `--out`.
pub fn produce_file(args: &ProduceArgs, path: &std::path::Path) -> io::Result<u64> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::File::create(path)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, file);
    let count = args.count.unwrap_or(100_000);
    let mut generator = generator(args, args.start_ms.unwrap_or(DEFAULT_START_MS));
    let mut line = Vec::new();
    for _ in 0..count {
        line.clear();
        generator.next_event(&mut line);
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(count)
}

/// Produces into Kafka: generated traffic paced in real time, or a fixture replay.
pub fn produce_kafka(args: &ProduceArgs, brokers: &str) -> anyhow::Result<u64> {
    use crate::produce::kafka::TopicWriter;
    let mut writer = TopicWriter::new(brokers, &args.kafka_config)?;
    let topics = [
        args.topics.chat_topic.as_str(),
        args.topics.edges_topic.as_str(),
        args.topics.posts_topic.as_str(),
        args.topics.viewers_topic.as_str(),
    ];
    if !args.from_irc.is_empty() {
        writer.ensure_topics(&[&args.topics.chat_topic], args.partitions)?;
        let options = irc::IrcOptions {
            server: args.irc_server.clone(),
            channels: args.from_irc.iter().map(|c| c.trim_start_matches('#').to_lowercase()).collect(),
            topic: args.topics.chat_topic.clone(),
        };
        let sent = irc::bridge(&options, &mut writer)?;
        writer.flush()?;
        return Ok(sent);
    }
    let sent = match &args.from {
        Some(path) => {
            writer.ensure_topics(&topics, args.partitions)?;
            writer.wait_ready(std::time::Duration::from_secs(10));
            replay_file(&mut writer, args, path)?
        }
        None => {
            let topic_of = |kind: ProduceKind| match kind {
                ProduceKind::Chat => args.topics.chat_topic.as_str(),
                ProduceKind::Edges => args.topics.edges_topic.as_str(),
                ProduceKind::Posts => args.topics.posts_topic.as_str(),
                ProduceKind::Viewers => args.topics.viewers_topic.as_str(),
            };
            let topics: Vec<&str> = args.kind.iter().map(|k| topic_of(*k)).collect();
            writer.ensure_topics(&topics, args.partitions)?;
            // The stream's clock starts once the producer can send.
            writer.wait_ready(std::time::Duration::from_secs(10));
            let start = args.start_ms.unwrap_or_else(now_ms);
            let mut generator = generator(args, start);
            let began = std::time::Instant::now();
            let mut line = Vec::new();
            let mut sent = 0u64;
            while args.count.is_none_or(|c| sent < c) && !crate::worker::STOP.load(std::sync::atomic::Ordering::Relaxed)
            {
                // The stream's clock runs at wall-clock speed from `start`.
                let due = start + began.elapsed().as_millis() as i64;
                if generator.clock_ms() > due {
                    writer.poll();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                line.clear();
                let (kind, key, ts) = generator.next_event(&mut line);
                writer.send(topic_of(kind), Some(&key), &line[..line.len() - 1], ts)?;
                sent += 1;
            }
            sent
        }
    };
    writer.flush()?;
    Ok(sent)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Replays a fixture into the topics of its events' kinds: chat keyed by channel, edges by
/// src, posts by user, viewer counts by channel; lines that are not events go to the chat topic as they are, where the
/// pipeline will make them dead letters.
fn replay_file(
    writer: &mut crate::produce::kafka::TopicWriter,
    args: &ProduceArgs,
    path: &std::path::Path,
) -> anyhow::Result<u64> {
    use crate::sources::decode::{decode, Event};
    let speed: Option<f64> = match args.speed.as_str() {
        "max" => None,
        factor => Some(
            factor.parse::<f64>().map_err(|_| anyhow::anyhow!("--speed takes a number or `max`, not {factor:?}"))?,
        ),
    };
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    let began = std::time::Instant::now();
    let mut first_ts: Option<i64> = None;
    let mut line = Vec::new();
    let mut sent = 0u64;
    loop {
        if crate::worker::STOP.load(std::sync::atomic::Ordering::Relaxed) || args.count.is_some_and(|c| sent >= c) {
            break;
        }
        line.clear();
        if io::BufRead::read_until(&mut reader, b'\n', &mut line)? == 0 {
            break;
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        let (topic, key, ts) = match decode(&line) {
            Ok(Event::Chat(c)) => (&args.topics.chat_topic, Some(c.channel.to_string()), Some(c.ts)),
            Ok(Event::Edge(e)) => (&args.topics.edges_topic, Some(e.src.to_string()), Some(e.ts)),
            Ok(Event::Post(p)) => (&args.topics.posts_topic, Some(p.user.to_string()), Some(p.ts)),
            Ok(Event::Viewers(v)) => (&args.topics.viewers_topic, Some(v.channel.to_string()), Some(v.ts)),
            Err(_) => (&args.topics.chat_topic, None, None),
        };
        if let (Some(speed), Some(ts)) = (speed, ts) {
            let first = *first_ts.get_or_insert(ts);
            let due = ((ts - first).max(0) as f64 / speed) as u64;
            while (began.elapsed().as_millis() as u64) < due {
                writer.poll();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        writer.send(topic, key.as_deref(), &line, ts.unwrap_or_else(now_ms))?;
        sent += 1;
    }
    Ok(sent)
}
