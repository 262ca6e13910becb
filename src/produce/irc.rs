//! `chatflow produce --from-irc <channel>... --kafka <brokers>`: live Twitch chat into Kafka.
//!
//! Joins the channels anonymously (nick `justinfan` and digits: Twitch lets such a client read
//! chat without a token), asks for the IRCv3 `twitch.tv/tags` and `twitch.tv/commands`
//! capabilities, answers every `PING`, and sends each `PRIVMSG` to the chat topic as a chat
//! event keyed by channel: `ts` from the `tmi-sent-ts` tag (else the time it was received),
//! `user` the sender's login, the text cleaned as `import --from twitch-irc` cleans it (`/me`
//! unwrapped, U+E0000 removed). Lines are parsed by the importer's parser.
//!
//! A dropped connection, a `RECONNECT`, or a server silent for `SILENCE` is followed by a new
//! connection after a backoff (1 s doubling to 60 s; back to 1 s once messages flow), which
//! joins the channels again. SIGINT/SIGTERM end the bridge after the producer has flushed.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::produce::kafka::TopicWriter;
use crate::sources::decode::write_chat_line;
use crate::sources::import::{clean_text, irc_tag, parse_irc, IrcLine};
use crate::worker::STOP;

/// Twitch's IRC server (plain text).
pub const TWITCH_IRC: &str = "irc.chat.twitch.tv:6667";

/// A server that says nothing (not even PING) for this long is taken for gone.
const SILENCE: Duration = Duration::from_secs(360);

/// Where to connect and what to join.
pub struct IrcOptions {
    pub server: String,
    /// Channel names without `#`, lowercased.
    pub channels: Vec<String>,
    pub topic: String,
}

/// How a connection ended.
enum Ended {
    Stopped,
    Reconnect(String),
}

/// Runs the bridge until a signal; returns the number of messages sent.
pub fn bridge(options: &IrcOptions, writer: &mut TopicWriter) -> Result<u64> {
    if options.channels.is_empty() {
        return Err(anyhow!("--from-irc needs at least one channel"));
    }
    let mut sent = 0u64;
    let mut backoff = Duration::from_secs(1);
    loop {
        let before = sent;
        let ended = session(options, writer, &mut sent);
        writer.poll();
        match ended {
            Ok(Ended::Stopped) => return Ok(sent),
            Ok(Ended::Reconnect(why)) => tracing::warn!(server = options.server, why, "reconnecting"),
            Err(e) => {
                tracing::warn!(server = options.server, error = format!("{e:#}"), "IRC connection failed; retrying")
            }
        }
        if sent > before {
            backoff = Duration::from_secs(1);
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if STOP.load(Ordering::Relaxed) {
                return Ok(sent);
            }
            writer.poll();
            std::thread::sleep(Duration::from_millis(20));
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One connection: log in, join, then forward messages until it ends.
fn session(options: &IrcOptions, writer: &mut TopicWriter, sent: &mut u64) -> Result<Ended> {
    let address = options
        .server
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", options.server))?
        .next()
        .ok_or_else(|| anyhow!("{} resolves to no address", options.server))?;
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(10))
        .with_context(|| format!("connecting to {}", options.server))?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut out = stream.try_clone()?;
    let nick = format!("justinfan{}", 10_000 + now_ms().rem_euclid(89_999));
    let joins: Vec<String> = options.channels.iter().map(|c| format!("#{c}")).collect();
    write!(
        out,
        "CAP REQ :twitch.tv/tags twitch.tv/commands\r\nPASS SCHMOOPIIE\r\nNICK {nick}\r\nJOIN {}\r\n",
        joins.join(",")
    )?;
    out.flush()?;
    tracing::info!(server = options.server, nick, channels = joins.join(","), "joined");

    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    let mut heard = Instant::now();
    let mut event = Vec::new();
    loop {
        if STOP.load(Ordering::Relaxed) {
            let _ = out.write_all(b"QUIT\r\n");
            return Ok(Ended::Stopped);
        }
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) => return Ok(Ended::Reconnect("the server closed the connection".into())),
            Ok(_) if !raw.ends_with(b"\n") => continue,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                // `raw` keeps a partial line until the rest arrives.
                writer.poll();
                if heard.elapsed() > SILENCE {
                    return Ok(Ended::Reconnect(format!("nothing heard for {} s", SILENCE.as_secs())));
                }
                continue;
            }
            Err(e) => return Ok(Ended::Reconnect(format!("reading: {e}"))),
        }
        heard = Instant::now();
        let line = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_owned();
        raw.clear();
        match parse_irc(&line) {
            Ok(IrcLine::Ping(token)) => {
                write!(out, "PONG :{token}\r\n")?;
                out.flush()?;
            }
            Ok(IrcLine::Reconnect) => return Ok(Ended::Reconnect("the server asked for it (RECONNECT)".into())),
            Ok(IrcLine::Message { tags, user, channel, text }) => {
                let ts = irc_tag(tags, "tmi-sent-ts").and_then(|t| t.parse().ok()).unwrap_or_else(now_ms);
                let login = irc_tag(tags, "login").filter(|l| !l.is_empty());
                let user = if user.is_empty() { login.as_deref().unwrap_or(user) } else { user };
                event.clear();
                write_chat_line(&mut event, ts, channel, user, &clean_text(text))?;
                writer.send(&options.topic, Some(channel), &event[..event.len() - 1], ts)?;
                *sent += 1;
            }
            Ok(IrcLine::Server) => {}
            Err(reason) => tracing::debug!(reason, line, "skipped an IRC line"),
        }
    }
}
