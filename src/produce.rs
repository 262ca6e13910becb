//! `chatflow produce`: seeded synthetic chat that looks like Twitch chat.
//!
//! Channels and users are Zipf-distributed (a few channels and chatters dominate), words are
//! Zipf over a vocabulary of common words, Twitch emotes, non-ASCII words and a long tail of
//! made-up words; emotes get spammed, casing varies, some messages mention a user. Event
//! time advances at `--rate` messages per second with jitter, and `--late-fraction` of the
//! messages arrive late, stamped up to 5 minutes before the stream's current time. The same
//! seed and flags give the same bytes (ChaCha8, no wall clock).

use std::io::{self, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};

use crate::cli::ProduceArgs;
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

impl ChatGenerator {
    pub fn new(args: &ProduceArgs) -> Self {
        ChatGenerator {
            rng: ChaCha8Rng::seed_from_u64(args.seed),
            channel_zipf: Zipf::new(args.channels, 1.1).expect("channels >= 1"),
            user_zipf: Zipf::new(args.users, 1.0).expect("users >= 1"),
            word_zipf: Zipf::new(20_000, 1.05).expect("vocabulary >= 1"),
            vocabulary: vocabulary(20_000),
            channels: (0..args.channels).map(channel_name).collect(),
            users: args.users,
            clock_ms: args.start_ms as f64,
            step_ms: 1000.0 / args.rate.max(1e-6),
            late_fraction: args.late_fraction.clamp(0.0, 1.0),
            text: String::new(),
        }
    }

    /// Writes the next message as one JSON line.
    pub fn write_next(&mut self, out: &mut impl Write) -> io::Result<()> {
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
        write_chat_line(out, ts, channel, &user, &self.text)
    }
}

/// Writes `args.count` messages to `args.out_file`.
pub fn produce_file(args: &ProduceArgs) -> io::Result<()> {
    if let Some(parent) = args.out_file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::File::create(&args.out_file)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, file);
    let mut generator = ChatGenerator::new(args);
    for _ in 0..args.count {
        generator.write_next(&mut out)?;
    }
    out.flush()
}
