//! Where a worker's time goes, per named operator, from timely's own scheduling log.
//!
//! `chatflow bench --profile` registers a logger for timely's `Operates` and `Schedule`
//! events on each worker and sums, per operator, the time between its start and stop events.
//! Operators are named (`Arrange: word_counts`, `TopK: top_words`, `CsvSink(word_counts)`),
//! so the totals read as a profile of the dataflow.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

#[derive(Default)]
struct Operator {
    name: String,
    depth: usize,
    busy: Duration,
    started: Option<Duration>,
}

/// Accumulated scheduling time per operator of one worker.
#[derive(Clone, Default)]
pub struct OperatorProfile {
    operators: Rc<RefCell<HashMap<usize, Operator>>>,
}

impl OperatorProfile {
    /// Starts recording on `worker`; call before building dataflows.
    pub fn install(worker: &mut Worker) -> Self {
        let profile = OperatorProfile::default();
        let operators = Rc::clone(&profile.operators);
        if let Some(mut registry) = worker.log_register() {
            registry.insert::<TimelyEventBuilder, _>("timely", move |_time, data| {
                let Some(events) = data else { return };
                let mut operators = operators.borrow_mut();
                for (at, event) in events.iter() {
                    match event {
                        TimelyEvent::Operates(op) => {
                            let entry = operators.entry(op.id).or_default();
                            entry.name = op.name.clone();
                            entry.depth = op.addr.len();
                        }
                        TimelyEvent::Schedule(s) => {
                            let entry = operators.entry(s.id).or_default();
                            match s.start_stop {
                                StartStop::Start => entry.started = Some(*at),
                                StartStop::Stop => {
                                    if let Some(start) = entry.started.take() {
                                        entry.busy += at.saturating_sub(start);
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
        profile
    }

    /// Seconds per operator name (summed over operators of the same name), busiest first;
    /// the dataflow's own subgraph, which contains the others, is left out.
    pub fn seconds(&self) -> Vec<(String, f64)> {
        let mut by_name: HashMap<String, f64> = HashMap::new();
        for op in self.operators.borrow().values() {
            if op.depth >= 2 {
                *by_name.entry(op.name.clone()).or_default() += op.busy.as_secs_f64();
            }
        }
        let mut out: Vec<_> = by_name.into_iter().collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }
}
