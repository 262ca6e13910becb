//! Freshness at the committed cut: how long a live record (one with a produce time: a Kafka
//! timestamp, or its release in a paced replay) takes from produce until the cut passes its
//! time, that is until every update of every worker before it is durable and recorded as such
//! (the progress record in `--out`, or `_progress` in ClickHouse).
//!
//! ```text
//!   worker: probe passes t ─► complete([Live { t, produced, read }]) ─┐
//!                                                                    ├─► waiting by time ─► recorded once cut > t
//!   writers: upper u recorded ─► written(writer, u) ─────────────────┘        cut = least upper of the writers
//! ```
//!
//! Where the time goes is measured in stages, each from produce: until a worker read the
//! record (`read`), until its time was complete in the dataflow at that worker's probe
//! (`complete`), with ClickHouse until every worker of the process had handed its rows up to
//! that time to the writer (`handed`, see [`Freshness::handed`]), and until the cut passed it.
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
    /// The workers of this process that hand rows to a writer (`handed`), if they do.
    handing: Option<usize>,
    state: Arc<Mutex<State>>,
}

/// A live record whose time is complete in the dataflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live {
    /// Its time in the dataflow.
    pub time: u64,
    /// When it was produced (ms since the epoch).
    pub produced: i64,
    /// When a worker read it (ms since the epoch).
    pub read: i64,
}

/// The stages of freshness, in order: produce → each of them (µs).
pub const STAGES: [&str; 4] = ["read", "complete", "handed", "cut"];

struct State {
    /// The upper each writer last recorded.
    uppers: HashMap<u32, u64>,
    /// Produce times (ms) of live records complete in the dataflow, by time.
    waiting: BTreeMap<u64, Vec<i64>>,
    /// The upper each worker last handed to a writer (with ClickHouse).
    handed: HashMap<u32, u64>,
    /// Produce times (ms) of live records complete and not yet handed over by every worker.
    unhanded: BTreeMap<u64, Vec<i64>>,
    /// Produce → the cut passed (µs).
    recorded: Histogram<u64>,
    /// Produce → each stage of [`STAGES`] but the last (µs).
    stages: [Histogram<u64>; 3],
}

impl std::fmt::Debug for Freshness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Freshness").field("cut", &self.cut).finish_non_exhaustive()
    }
}

impl Freshness {
    /// A tracker whose cut is `cut`; `handing`: the process's workers hand their rows to a
    /// writer thread, and report it with [`Freshness::handed`].
    pub fn new(cut: Cut, handing: Option<usize>) -> Self {
        let state = State {
            uppers: HashMap::new(),
            waiting: BTreeMap::new(),
            handed: HashMap::new(),
            unhanded: BTreeMap::new(),
            recorded: crate::metrics::histogram(),
            stages: std::array::from_fn(|_| crate::metrics::histogram()),
        };
        Freshness { cut, handing, state: Arc::new(Mutex::new(state)) }
    }

    /// Whether the probe stands for the cut in this process.
    pub fn at_probe(&self) -> bool {
        self.cut == Cut::Probe
    }

    /// Live records whose updates are complete in the dataflow.
    pub fn complete(&self, records: Vec<Live>) {
        if records.is_empty() {
            return;
        }
        let now = crate::metrics::now_ms();
        let mut state = self.lock();
        crate::metrics::record_stage(&mut state.stages[0], "read", records.iter().map(|l| l.read - l.produced));
        crate::metrics::record_stage(&mut state.stages[1], "complete", records.iter().map(|l| now - l.produced));
        for live in records {
            state.waiting.entry(live.time).or_default().push(live.produced);
            if self.handing.is_some() {
                state.unhanded.entry(live.time).or_default().push(live.produced);
            }
        }
        self.record_handed(&mut state);
        self.record_passed(&mut state);
    }

    /// `worker` handed every update before `upper` to its writer.
    pub fn handed(&self, worker: u32, upper: u64) {
        let mut state = self.lock();
        raise(&mut state.handed, worker, upper);
        self.record_handed(&mut state);
    }

    /// `writer` recorded every update before `upper` as durable (with [`Cut::Probe`]: the probe
    /// passed `upper`).
    pub fn written(&self, writer: u32, upper: u64) {
        let mut state = self.lock();
        raise(&mut state.uppers, writer, upper);
        self.record_passed(&mut state);
    }

    /// The process's cut: every update before it is durable (with [`Cut::Probe`]: the probe
    /// has passed it); `None` until every writer has recorded an upper.
    pub fn cut(&self) -> Option<u64> {
        least(&self.lock().uppers, self.writers())
    }

    /// How many writers' uppers make the cut.
    fn writers(&self) -> usize {
        match self.cut {
            Cut::Writers(n) => n,
            Cut::Probe => 1,
        }
    }

    /// Produce → cut of every live record so far (µs).
    pub fn histogram(&self) -> Histogram<u64> {
        self.lock().recorded.clone()
    }

    /// Produce → each of [`STAGES`] (µs), of the stages this process measures.
    pub fn stages(&self) -> Vec<(&'static str, Histogram<u64>)> {
        let state = self.lock();
        let mut stages: Vec<_> = STAGES.iter().copied().zip(state.stages.iter().cloned()).collect();
        stages.push(("cut", state.recorded.clone()));
        stages.retain(|(stage, _)| *stage != "handed" || self.handing.is_some());
        stages
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the complete records every worker has handed over.
    fn record_handed(&self, state: &mut State) {
        let Some(handed) = self.handing.and_then(|workers| least(&state.handed, workers)) else { return };
        let passed = take_before(&mut state.unhanded, handed);
        if passed.is_empty() {
            return;
        }
        let now = crate::metrics::now_ms();
        crate::metrics::record_stage(&mut state.stages[2], "handed", passed.iter().map(|p| now - p));
    }

    /// Records the waiting records the cut has passed.
    fn record_passed(&self, state: &mut State) {
        let Some(cut) = least(&state.uppers, self.writers()) else { return };
        let passed = take_before(&mut state.waiting, cut);
        if let Some(oldest) = passed.iter().min() {
            let (cut, records, ms) = (cut, passed.len(), crate::metrics::now_ms() - oldest);
            tracing::debug!(cut, records, oldest_ms = ms, "live records passed by the cut");
            if state.recorded.is_empty() {
                // Said once: the benchmarks wait for it before they produce at their rate.
                tracing::info!(cut, oldest_ms = ms, "the committed cut passed its first live records");
            }
        }
        crate::metrics::record_freshness(&mut state.recorded, &passed);
    }
}

/// Raises `reporter`'s upper in `uppers` to `upper`: an upper never moves back.
fn raise(uppers: &mut HashMap<u32, u64>, reporter: u32, upper: u64) {
    let last = uppers.entry(reporter).or_insert(upper);
    *last = (*last).max(upper);
}

/// Takes the produce times of the records waiting at times before `bound`.
fn take_before(waiting: &mut BTreeMap<u64, Vec<i64>>, bound: u64) -> Vec<i64> {
    let later = waiting.split_off(&bound);
    std::mem::replace(waiting, later).into_values().flatten().collect()
}

/// The least upper in `uppers` once `n` reporters have each given one.
fn least(uppers: &HashMap<u32, u64>, n: usize) -> Option<u64> {
    (uppers.len() >= n).then(|| uppers.values().min().copied()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(time: u64, produced: i64) -> Live {
        Live { time, produced, read: produced }
    }

    #[test]
    fn a_record_is_fresh_once_every_writer_passed_its_time() {
        let fresh = Freshness::new(Cut::Writers(2), None);
        let now = crate::metrics::now_ms();
        fresh.complete(vec![live(3, now), live(5, now)]);
        fresh.written(0, 10);
        assert_eq!(fresh.histogram().len(), 0, "one writer of two");
        fresh.written(1, 4);
        assert_eq!(fresh.histogram().len(), 1, "the cut is 4: time 3 passed, 5 not");
        fresh.written(1, 6);
        assert_eq!(fresh.histogram().len(), 2);
        // Complete after the cut passed its time: recorded at once.
        fresh.complete(vec![live(5, now)]);
        assert_eq!(fresh.histogram().len(), 3);
        // An upper never moves back.
        fresh.written(1, 2);
        fresh.complete(vec![live(5, now)]);
        assert_eq!(fresh.histogram().len(), 4);
        let stages: Vec<_> = fresh.stages().into_iter().map(|(stage, hist)| (stage, hist.len())).collect();
        assert_eq!(stages, [("read", 4), ("complete", 4), ("cut", 4)], "no handing without a writer thread");
    }

    #[test]
    fn a_record_is_handed_over_once_every_worker_handed_its_time() {
        let fresh = Freshness::new(Cut::Writers(2), Some(2));
        let now = crate::metrics::now_ms();
        // Produced 5 s ago, read 2 s later.
        fresh.complete(vec![Live { time: 3, produced: now - 5000, read: now - 3000 }, live(7, now)]);
        let handed = |fresh: &Freshness| fresh.stages()[2].1.len();
        fresh.handed(0, 4);
        assert_eq!(handed(&fresh), 0, "one worker of two");
        fresh.handed(1, 5);
        assert_eq!(handed(&fresh), 1, "both handed time 3 over, not 7");
        fresh.handed(0, 2);
        fresh.handed(1, 8);
        assert_eq!(handed(&fresh), 1, "worker 0 handed until 4 only: an upper never moves back");
        fresh.handed(0, 8);
        assert_eq!(handed(&fresh), 2);
        let stages = fresh.stages();
        assert_eq!(stages.iter().map(|(s, _)| *s).collect::<Vec<_>>(), STAGES);
        let read = &stages[0].1;
        assert!((1_990_000..=2_010_000).contains(&read.max()), "read 2 s after produce: {}", read.max());
        assert!(stages[1].1.max() >= 4_990_000, "complete at least 5 s after produce");
        assert_eq!(stages[3].1.len(), 0, "no writer has written yet");
    }
}
