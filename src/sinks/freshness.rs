//! Freshness at the committed cut: how long a live record (one with a produce time: a Kafka
//! timestamp, or its release in a paced replay) takes from produce until the cut passes its
//! time, that is until every update of every worker before it is durable and recorded as such
//! (the progress record in `--out`, or `_progress` in ClickHouse).
//!
//! ```text
//!   worker: probe passes t ─► complete([(t, produced)]) ─┐
//!                                                        ├─► waiting by time ─► recorded once cut > t
//!   writers: upper u recorded ─► written(writer, u) ─────┘        cut = least upper of the writers
//! ```
//!
//! One tracker per process, shared by its workers and writers. The writers are the progress
//! record's writer (worker 0) for change files, and every worker's writer thread for
//! ClickHouse. A process of a cluster sees only its own writers: with change files, the
//! processes other than the one of worker 0 measure at their probe instead ([`Cut::Probe`]);
//! with ClickHouse, at the least upper of their own workers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

/// Where a process sees the cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The least upper recorded by `writers` writers of this process.
    Writers(usize),
    /// The probe's frontier: this process records no progress of its own.
    Probe,
}

/// The freshness tracker of a process (cloned handles share it).
#[derive(Clone)]
pub struct Freshness {
    cut: Cut,
    state: Arc<Mutex<State>>,
}

struct State {
    /// The upper each writer last recorded.
    uppers: HashMap<u32, u64>,
    /// Produce times (ms) of live records complete in the dataflow, by time.
    waiting: BTreeMap<u64, Vec<i64>>,
    /// Produce → the cut passed (µs).
    recorded: Histogram<u64>,
}

impl std::fmt::Debug for Freshness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Freshness").field("cut", &self.cut).finish_non_exhaustive()
    }
}

impl Freshness {
    pub fn new(cut: Cut) -> Self {
        let state = State { uppers: HashMap::new(), waiting: BTreeMap::new(), recorded: crate::metrics::histogram() };
        Freshness { cut, state: Arc::new(Mutex::new(state)) }
    }

    /// Whether the probe stands for the cut in this process.
    pub fn at_probe(&self) -> bool {
        self.cut == Cut::Probe
    }

    /// Live records whose updates are complete in the dataflow: (time, produced ms).
    pub fn complete(&self, records: Vec<(u64, i64)>) {
        if records.is_empty() {
            return;
        }
        let mut state = self.lock();
        for (time, produced) in records {
            state.waiting.entry(time).or_default().push(produced);
        }
        self.record_passed(&mut state);
    }

    /// `writer` recorded every update before `upper` as durable (with [`Cut::Probe`]: the probe
    /// passed `upper`).
    pub fn written(&self, writer: u32, upper: u64) {
        let mut state = self.lock();
        let last = state.uppers.entry(writer).or_insert(upper);
        *last = (*last).max(upper);
        self.record_passed(&mut state);
    }

    /// The process's cut: every update before it is durable (with [`Cut::Probe`]: the probe
    /// has passed it); `None` until every writer has recorded an upper.
    pub fn cut(&self) -> Option<u64> {
        let state = self.lock();
        let writers = match self.cut {
            Cut::Writers(n) => n,
            Cut::Probe => 1,
        };
        (state.uppers.len() >= writers).then(|| state.uppers.values().min().copied()).flatten()
    }

    /// Produce → cut of every live record so far (µs).
    pub fn histogram(&self) -> Histogram<u64> {
        self.lock().recorded.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the waiting records the cut has passed.
    fn record_passed(&self, state: &mut State) {
        let writers = match self.cut {
            Cut::Writers(n) => n,
            Cut::Probe => 1,
        };
        if state.uppers.len() < writers {
            return;
        }
        let Some(cut) = state.uppers.values().min().copied() else { return };
        let mut passed = Vec::new();
        while let Some(entry) = state.waiting.first_entry() {
            if *entry.key() >= cut {
                break;
            }
            passed.extend(entry.remove());
        }
        if let Some(oldest) = passed.iter().min() {
            let (cut, records, ms) = (cut, passed.len(), crate::metrics::now_ms() - oldest);
            tracing::debug!(cut, records, oldest_ms = ms, "live records passed by the cut");
        }
        crate::metrics::record_freshness(&mut state.recorded, &passed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_fresh_once_every_writer_passed_its_time() {
        let fresh = Freshness::new(Cut::Writers(2));
        let now = crate::metrics::now_ms();
        fresh.complete(vec![(3, now), (5, now)]);
        fresh.written(0, 10);
        assert_eq!(fresh.histogram().len(), 0, "one writer of two");
        fresh.written(1, 4);
        assert_eq!(fresh.histogram().len(), 1, "the cut is 4: time 3 passed, 5 not");
        fresh.written(1, 6);
        assert_eq!(fresh.histogram().len(), 2);
        // Complete after the cut passed its time: recorded at once.
        fresh.complete(vec![(5, now)]);
        assert_eq!(fresh.histogram().len(), 3);
        // An upper never moves back.
        fresh.written(1, 2);
        fresh.complete(vec![(5, now)]);
        assert_eq!(fresh.histogram().len(), 4);
    }
}
