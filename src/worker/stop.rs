//! How the workers of a run stop together.
//!
//! Every worker broadcasts its input time as it advances (a *notice*), and a final notice when
//! it stops reading: *stopped* (SIGINT/SIGTERM) or *exhausted*. An exhausted worker seals its
//! source at its end time at once (see `sources::kafka`: no later record can land below it)
//! and advances its inputs there, so what it read completes; while other workers still read,
//! it follows them, sealing again at the largest input time it has seen, so that it never
//! holds back the frontier another worker's back-pressure waits on. Once every worker's final
//! notice is in:
//! - if every source is exhausted, the largest of their times `E` is the run's *upper*: each
//!   worker seals at `E`, advances its inputs to `E` and closes them, and the workers step
//!   until everything is written;
//! - otherwise (a stop was asked for), the least input time is the upper: every update before
//!   it is complete, and the workers step until the probe passes it.
//!
//! Then every worker's sink makes everything before the upper durable, and the worker says so
//! (*finished*). A worker closes its inputs only once every worker has finished: closing the
//! inputs of a stopped run lets the times past its upper complete with part of their input,
//! and no sink may record those (the CSV sink also writes nothing at or past the upper once
//! finished).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Input as TimelyInput, Inspect};
use timely::dataflow::InputHandle;
use timely::worker::Worker;

use crate::sinks::Sink;
use crate::worker::{Running, WorkerError};

/// Where a worker's input stands, as its notices tell the other workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InputState {
    Reading,
    /// Told to stop: its input stays open at its time.
    Stopped,
    /// Its source is exhausted and sealed at its time.
    Exhausted,
    /// Its sink has made everything before the run's upper durable (sent after the final state).
    Finished,
    /// Worker 0 asks for checkpoint round `r` (see `checkpoint`).
    Pause(u32),
    /// The worker holds its input at the notice's time for round `r`.
    Paused(u32),
    /// The worker has saved its state for round `r` at the notice's time, and its process has
    /// made every update before that time durable.
    Saved(u32),
}

/// What this worker has seen of a checkpoint round.
#[derive(Default)]
pub struct Round {
    pub asked: bool,
    /// Input time per worker that paused.
    pub paused: HashMap<usize, u64>,
    pub saved: std::collections::HashSet<usize>,
}

/// What this worker has seen of another's notices.
#[derive(Clone, Copy)]
struct Seen {
    time: u64,
    state: InputState,
    finished: bool,
}

type Notice = (usize, u64, InputState);

/// The notices of every worker, as this worker has seen them, and its own to send.
pub struct Notices {
    index: usize,
    peers: usize,
    seen: Rc<RefCell<HashMap<usize, Seen>>>,
    /// Checkpoint rounds, by number.
    pub rounds: Rc<RefCell<std::collections::BTreeMap<u32, Round>>>,
    input: InputHandle<u64, CapacityContainerBuilder<Vec<Notice>>>,
}

impl Notices {
    /// Builds the dataflow that broadcasts notices. All of them are at timely time 0: they are
    /// read as they arrive.
    pub fn build(worker: &mut Worker) -> Notices {
        let seen: Rc<RefCell<HashMap<usize, Seen>>> = Rc::default();
        let rounds: Rc<RefCell<std::collections::BTreeMap<u32, Round>>> = Rc::default();
        let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Notice>>>::new();
        let record = Rc::clone(&seen);
        let record_rounds = Rc::clone(&rounds);
        worker.dataflow::<u64, _, _>(|scope| {
            scope.input_from(&mut input).broadcast().inspect(move |(worker, time, state)| {
                match state {
                    InputState::Pause(r) => return record_rounds.borrow_mut().entry(*r).or_default().asked = true,
                    InputState::Paused(r) => {
                        record_rounds.borrow_mut().entry(*r).or_default().paused.insert(*worker, *time);
                        return;
                    }
                    InputState::Saved(r) => {
                        record_rounds.borrow_mut().entry(*r).or_default().saved.insert(*worker);
                        return;
                    }
                    _ => {}
                }
                let mut seen = record.borrow_mut();
                let entry =
                    seen.entry(*worker).or_insert(Seen { time: 0, state: InputState::Reading, finished: false });
                entry.time = entry.time.max(*time);
                match state {
                    InputState::Reading => {}
                    InputState::Finished => entry.finished = true,
                    final_state => entry.state = *final_state,
                }
            });
        });
        Notices { index: worker.index(), peers: worker.peers(), seen, rounds, input }
    }

    pub fn peers(&self) -> usize {
        self.peers
    }

    /// Whether some worker has sent its final notice (it takes part in no more checkpoints).
    pub fn any_final(&self) -> bool {
        self.seen.borrow().values().any(|s| s.state != InputState::Reading)
    }

    pub fn send(&mut self, time: u64, state: InputState) {
        self.input.send((self.index, time, state));
        self.input.flush();
    }

    /// Whether every worker has sent its final notice.
    fn all_final(&self) -> bool {
        let seen = self.seen.borrow();
        seen.len() == self.peers && seen.values().all(|s| s.state != InputState::Reading)
    }

    /// Whether every worker's sink has finished.
    fn all_finished(&self) -> bool {
        let seen = self.seen.borrow();
        seen.len() == self.peers && seen.values().all(|s| s.finished)
    }

    /// The largest input time any worker has announced.
    fn furthest(&self) -> u64 {
        self.seen.borrow().values().map(|s| s.time).max().unwrap_or(0)
    }

    /// Once every final notice is in: `Some((upper, exhausted))`, the run's upper and whether
    /// every source is exhausted.
    fn decide(&self) -> Option<(u64, bool)> {
        if !self.all_final() {
            return None;
        }
        let seen = self.seen.borrow();
        let times = seen.values().map(|s| s.time);
        if seen.values().all(|s| s.state == InputState::Exhausted) {
            Some((times.max().expect("peers > 0"), true))
        } else {
            Some((times.min().expect("peers > 0"), false))
        }
    }

    /// Tells the others this worker's sink has finished, steps until every worker's has, and
    /// closes the notices.
    pub fn finish(mut self, worker: &mut Worker, upper: u64) {
        self.send(upper, InputState::Finished);
        while !self.all_finished() {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        self.input.advance_to(1);
    }
}

impl<S: Sink> Running<S> {
    /// Seals the exhausted source at `time` and advances the inputs there.
    fn seal_at(&mut self, time: u64) -> Result<(), WorkerError> {
        self.source.seal(time)?;
        if let Some(inputs) = self.inputs.as_mut() {
            inputs.advance_to(time);
        }
        Ok(())
    }

    /// Stops reading: records where this worker's input stopped, closes it if exhausted, and
    /// steps until the run's upper (see the module doc) is written. Returns the upper and
    /// whether every source was exhausted (the same in every worker).
    pub(super) fn stop(&mut self, worker: &mut Worker) -> Result<(u64, bool), WorkerError> {
        if let Some(inputs) = self.inputs.as_mut() {
            for position in self.source.positions() {
                inputs.positions.update_at(position, self.input_time, 1);
            }
            inputs.positions.flush();
        }
        let exhausted = !self.report.interrupted;
        if exhausted {
            self.input_time = self.source.end_time().max(self.input_time);
            self.seal_at(self.input_time)?;
        }
        let state = if exhausted { InputState::Exhausted } else { InputState::Stopped };
        self.notices.send(self.input_time, state);
        self.measure.closed(self.input_time, self.report.records);
        let mut decided: Option<(u64, bool)> = None;
        let mut last_follow = Instant::now();
        loop {
            worker.step_or_park(Some(Duration::from_millis(1)));
            self.observe()?;
            if decided.is_none() && exhausted && last_follow.elapsed() >= Duration::from_millis(50) {
                let ahead = self.notices.furthest();
                if ahead > self.input_time && !self.notices.all_final() {
                    self.input_time = ahead;
                    self.seal_at(ahead)?;
                    self.notices.send(ahead, InputState::Exhausted);
                    last_follow = Instant::now();
                }
            }
            if decided.is_none() {
                decided = self.notices.decide();
                if let Some((end, true)) = decided.as_mut() {
                    // Every source is exhausted: seal at the largest end, then close.
                    *end = (*end).max(self.input_time);
                    self.seal_at(*end)?;
                    self.inputs = None;
                }
            }
            if let Some((upper, sealed)) = decided {
                // A stopped run needs only what is before the upper; an exhausted one waits for
                // everything, so the summary counts every row written.
                if self.probe.done() || (!sealed && !self.probe.less_than(&upper)) {
                    return Ok((upper, sealed));
                }
            }
        }
    }
}
