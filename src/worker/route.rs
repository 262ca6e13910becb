//! Records → the dataflow's inputs: decode each record and enter it as an event or a dead
//! letter at the time its source gave it, counting per source partition in the metrics
//! registry.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use dataflows::{Chat, DeadLetter, Diff, EdgeOp, Name, Origin, Post, Viewers};
use differential_dataflow::input::InputSession;

use crate::metrics::{EventKind, SourceCounters};
use crate::sources::decode::{dead_letter, decode, Event, MAX_RECORD_BYTES};
use crate::sources::{InputPosition, Position, Record};

/// The inputs a worker feeds.
pub struct Inputs {
    pub chats: InputSession<u64, Chat, Diff>,
    pub posts: InputSession<u64, Post, Diff>,
    pub viewers: InputSession<u64, Viewers, Diff>,
    pub edges: InputSession<u64, (Name, Name), Diff>,
    pub dead: InputSession<u64, DeadLetter, Diff>,
    pub positions: InputSession<u64, InputPosition, Diff>,
    /// The greatest `ts` of this worker's events per time, for the watermark.
    pub stamps: InputSession<u64, i64, Diff>,
    /// The stamps of the times not closed yet (a few: the sources' times run close together).
    pub pending_stamps: Vec<(u64, i64)>,
    /// Whether anything reads the stamps (a retention horizon).
    pub stamping: bool,
    /// With checkpoints: the stamps noted, for the one a checkpoint keeps.
    pub marks: Option<Rc<RefCell<Marks>>>,
}

/// The stamps a worker noted, per time, since the last checkpoint, and the greatest before it.
#[derive(Debug)]
pub struct Marks {
    folded: i64,
    by_time: BTreeMap<u64, i64>,
}

impl Marks {
    /// Starting from a checkpoint's stamp (or none).
    pub fn new(restored: Option<i64>) -> Self {
        Marks { folded: restored.unwrap_or(i64::MIN), by_time: BTreeMap::new() }
    }

    /// The greatest stamp at a time before `time`, if any; those are folded (a later
    /// checkpoint is at `time` or after).
    pub fn before(&mut self, time: u64) -> Option<i64> {
        let later = self.by_time.split_off(&time);
        let earlier = std::mem::replace(&mut self.by_time, later);
        self.folded = earlier.into_values().fold(self.folded, i64::max);
        (self.folded > i64::MIN).then_some(self.folded)
    }
}

impl Inputs {
    /// Notes an event's `ts` at `time`.
    fn stamp(&mut self, time: u64, ts: i64) {
        if !self.stamping {
            return;
        }

        match self.pending_stamps.iter_mut().find(|(t, _)| *t == time) {
            Some((_, mark)) => *mark = (*mark).max(ts),
            None => self.pending_stamps.push((time, ts)),
        }
    }

    /// Enters the stamps noted so far.
    fn flush_stamps(&mut self) {
        if let Some(marks) = &self.marks {
            let mut marks = marks.borrow_mut();
            for &(at, mark) in &self.pending_stamps {
                let kept = marks.by_time.entry(at).or_insert(mark);
                *kept = (*kept).max(mark);
            }
        }
        for (at, mark) in std::mem::take(&mut self.pending_stamps) {
            self.stamps.update_at(mark, at, 1);
        }
    }

    pub fn advance_to(&mut self, time: u64) {
        self.flush_stamps();
        self.stamps.advance_to(time);
        self.stamps.flush();
        self.chats.advance_to(time);
        self.posts.advance_to(time);
        self.viewers.advance_to(time);
        self.edges.advance_to(time);
        self.dead.advance_to(time);
        self.positions.advance_to(time);
        self.chats.flush();
        self.posts.flush();
        self.viewers.flush();
        self.edges.flush();
        self.dead.flush();
        self.positions.flush();
    }
}

impl Drop for Inputs {
    /// The inputs close: the stamps of the times still open go in with their events.
    fn drop(&mut self) {
        self.flush_stamps();
    }
}

/// A source partition's counts not yet added to its counters: records, dead letters, then
/// events by kind (`EventKind as usize`).
#[derive(Default)]
struct Counts {
    records: u64,
    dead_letters: u64,
    events: [u64; 4],
}

/// Decodes records into the inputs, counting per source partition; `flush` adds the counts to
/// the metrics registry (once per read, not once per record).
pub struct Router {
    /// The partition label of file records (the worker: see `metrics`).
    worker: String,
    /// The run's sources (files or topics) in the order every worker knows them: an event's
    /// [`Origin`] names its source by its place here.
    sources: Vec<String>,
    /// The source of the last record, by its place in `sources`.
    last_source: u32,
    counters: Vec<(String, i32, SourceCounters, Counts)>,
    /// The entry the last record used (records come in runs from one partition).
    last: usize,
}

impl Router {
    pub fn new(worker: usize, sources: Vec<String>) -> Self {
        Router { worker: worker.to_string(), sources, last_source: 0, counters: Vec::new(), last: 0 }
    }

    /// Where `record` was read, as its event carries it.
    fn origin(&mut self, record: &Record) -> Origin {
        if self.sources.get(self.last_source as usize).is_none_or(|s| s != record.source) {
            self.last_source = match self.sources.iter().position(|s| s == record.source) {
                Some(i) => i as u32,
                // Not a source of the run's list (none is): named by its own entry.
                None => {
                    self.sources.push(record.source.to_owned());
                    (self.sources.len() - 1) as u32
                }
            };
        }
        let (partition, offset) = match record.position {
            Position::Line(line) => (-1, line as i64),
            Position::Offset { partition, offset } => (partition, offset),
        };
        Origin { source: self.last_source, partition, offset }
    }

    fn counts(&mut self, source: &str, position: &Position) -> &mut Counts {
        let partition = match position {
            Position::Line(_) => -1,
            Position::Offset { partition, .. } => *partition,
        };
        let hit = |(s, p, _, _): &(String, i32, SourceCounters, Counts)| *p == partition && s == source;
        if !self.counters.get(self.last).is_some_and(hit) {
            self.last = match self.counters.iter().position(hit) {
                Some(i) => i,
                None => {
                    let label = if partition < 0 { self.worker.clone() } else { partition.to_string() };
                    let counters = SourceCounters::new(source, &label);
                    self.counters.push((source.to_owned(), partition, counters, Counts::default()));
                    self.counters.len() - 1
                }
            };
        }
        &mut self.counters[self.last].3
    }

    /// Adds the counts so far to the registry.
    pub fn flush(&mut self) {
        for (_, _, counters, counts) in &mut self.counters {
            let counts = std::mem::take(counts);
            counters.records.increment(counts.records);
            counters.dead_letters.increment(counts.dead_letters);
            for (counter, n) in counters.events.iter().zip(counts.events) {
                counter.increment(n);
            }
        }
    }

    /// Decodes `record` and enters it into `inputs` at its time (at least `input_time`).
    /// Returns whether it had a payload to decode (records without one, oversized and blank
    /// ones do not count for freshness).
    pub fn route(&mut self, record: &Record, inputs: &mut Inputs, input_time: u64) -> bool {
        // A source never gives a time below its frontier; the max only guards the invariant.
        let time = record.time.max(input_time);
        let counts = self.counts(record.source, &record.position);
        counts.records += 1;
        let mut dead = |error: String, bytes: &[u8], inputs: &mut Inputs| {
            let letter = dead_letter(record.source, record.position.to_string(), error, bytes);
            inputs.dead.update_at(letter, time, 1);
            counts.dead_letters += 1;
        };
        let Some(bytes) = record.bytes else {
            dead("record has no payload".into(), b"", inputs);
            return false;
        };
        if let Some(length) = record.oversized {
            dead(format!("record of {length} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes"), bytes, inputs);
            return false;
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return false;
        }
        let event = match decode(bytes) {
            Ok(event) => event,
            Err(error) => {
                dead(error.to_string(), bytes, inputs);
                return true;
            }
        };
        let origin = self.origin(record);
        let counts = self.counts(record.source, &record.position);
        match event {
            Event::Chat(mut chat) => {
                inputs.stamp(time, chat.ts);
                chat.origin = origin;
                inputs.chats.update_at(chat, time, 1);
                counts.events[EventKind::Chat as usize] += 1;
            }
            Event::Edge(edge) => {
                inputs.stamp(time, edge.ts);
                let sign = if edge.op == EdgeOp::Del { -1 } else { 1 };
                inputs.edges.update_at((edge.src, edge.dst), time, sign * edge.weight as Diff);
                counts.events[EventKind::Edge as usize] += 1;
            }
            Event::Post(mut post) => {
                inputs.stamp(time, post.ts);
                post.origin = origin;
                inputs.posts.update_at(post, time, 1);
                counts.events[EventKind::Post as usize] += 1;
            }
            Event::Viewers(mut viewers) => {
                inputs.stamp(time, viewers.ts);
                viewers.origin = origin;
                inputs.viewers.update_at(viewers, time, 1);
                counts.events[EventKind::Viewers as usize] += 1;
            }
        }
        true
    }
}
