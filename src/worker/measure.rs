//! What a worker measures while it runs: the latency of each advance of its inputs (worker 0:
//! from the moment it closed a time to the moment the probe shows every view's changes for it
//! written), the records in flight (for back-pressure), and which live records are complete
//! (their freshness is measured by the sink, once they are durable).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::sinks::freshness::Live;

/// Live records are those produced within this long before they are read (10 minutes).
const LIVE_MS: i64 = 600_000;

pub struct Measure {
    /// Worker 0 measures latency.
    latency_of_batches: bool,
    /// Times the inputs have advanced past, with when, and how many records had been read.
    closed: VecDeque<(u64, Instant, u64)>,
    /// Live records' produce and read times (ms), by ingestion time.
    produced: BTreeMap<u64, Vec<(i64, i64)>>,
    /// Records read by the last time that is complete.
    read_done: u64,
    pub latency_us: Histogram<u64>,
}

impl Measure {
    pub fn new(worker: usize) -> Self {
        Measure {
            latency_of_batches: worker == 0,
            closed: VecDeque::new(),
            produced: BTreeMap::new(),
            read_done: 0,
            latency_us: crate::metrics::histogram(),
        }
    }

    /// The inputs advanced past `time` with `records` read in all.
    pub fn closed(&mut self, time: u64, records: u64) {
        self.closed.push_back((time, Instant::now(), records));
    }

    /// A record produced at `produced_ms` entered the dataflow at `time`.
    pub fn produced(&mut self, time: u64, produced_ms: i64) {
        let now = crate::metrics::now_ms();
        if now - produced_ms < LIVE_MS {
            self.produced.entry(time).or_default().push((produced_ms, now));
        }
    }

    /// Records read but not yet complete, of `records` read in all.
    pub fn in_flight(&self, records: u64) -> u64 {
        records - self.read_done
    }

    /// The probe's frontier is `frontier` (`None`: everything is complete): records the latency
    /// of the times now complete and returns the live records now complete.
    pub fn observe(&mut self, frontier: Option<u64>) -> Vec<Live> {
        let done = |t: u64| frontier.is_none_or(|f| f > t);
        while let Some(&(time, at, read)) = self.closed.front() {
            if !done(time) {
                break;
            }
            if self.latency_of_batches {
                crate::metrics::record_latency(&mut self.latency_us, at.elapsed().as_micros().max(1) as u64);
            }
            self.read_done = read;
            self.closed.pop_front();
        }
        let mut complete = Vec::new();
        while let Some(entry) = self.produced.first_entry() {
            if !done(*entry.key()) {
                break;
            }
            let (time, produced) = entry.remove_entry();
            complete.extend(produced.into_iter().map(|(produced, read)| Live { time, produced, read }));
        }
        complete
    }
}
