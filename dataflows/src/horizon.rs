//! The retention horizon of DESIGN.md ("Bounded state"): the watermark, sealed windows, the
//! `late_events` view, and the dropping of sealed windows' state.
//!
//! ```text
//!  every event's ts ─► per worker and time: the greatest (a stamp) ─► Broadcast ─┬─► Watermark ─► Horizon ─► windowed operators
//!                                                                                │   (published per complete time)  drop sealed windows
//!  chats / posts / viewers ─────────────────────────────────────────────► Seal ◄──┘
//!                                                               (time t waits for every stamp before t)
//!                                                                      ├─► events whose window is open ─► the views
//!                                                                      └─► late_events
//! ```
//!
//! The watermark of ingestion time `t` is the greatest `ts` of the events (of every kind; dead
//! letters have none) ingested at times before `t`. Every worker's router sends, per time, the
//! greatest `ts` of its own events at that time; broadcast, these stamps give every worker the
//! same watermark for `t` once every time before `t` is complete. So the watermark is a
//! function of the log and of the ingestion times (themselves a function of the log: see each
//! source), and replays and restarts give the same `late_events`.
//!
//! A window `[start, start + w)` is sealed at `t` when `start + w + retention ≤ watermark(t)`
//! (milliseconds). `Seal` holds each time's events until that time's watermark is known, then
//! passes on those whose window is open and turns the others into `late_events` rows: they
//! change nothing. Sealed windows' rows stay in the output as they are.
//!
//! Dropping state: a windowed operator about to process time `t` takes the watermarks the
//! `Watermark` operator of its worker has published for times before `t` ([`Expiry`]) and
//! forgets every window sealed by them. That is never more than `watermark(t)` seals, so no
//! later event can reach a forgotten window: it would be late at its own, later, time. (The
//! published watermark may lag `watermark(t)` when the operator runs before `Watermark` has
//! seen its frontier move; it then drops a little later, never wrongly.)

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::{AsCollection, Data, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{Operator, OutputBuilder};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::types::*;
use crate::views::LateEvent;

/// `--retention`: how long after its end a window stays open, and the names of the run's
/// sources (a late event's [`Origin`] indexes them).
#[derive(Clone, Debug)]
pub struct Retention {
    pub seconds: i64,
    pub sources: Arc<[String]>,
}

impl Retention {
    fn ms(&self) -> i64 {
        self.seconds.saturating_mul(1000)
    }
}

/// An event of a windowed view, as the seal sees it.
pub trait Windowed: Data {
    /// Its `kind` in `late_events`.
    const KIND: &'static str;
    fn ts(&self) -> i64;
    fn origin(&self) -> Origin;
}

/// `Windowed` for an event type with `ts` and `origin` fields, of kind `$kind`.
macro_rules! windowed {
    ($($event:ty => $kind:literal),*) => {$(
        impl Windowed for $event {
            const KIND: &'static str = $kind;
            fn ts(&self) -> i64 {
                self.ts
            }
            fn origin(&self) -> Origin {
                self.origin
            }
        }
    )*};
}

windowed!(Chat => "chat", Post => "post", Viewers => "viewers");

/// The end of the window of `window_secs` that starts at `start` (seconds), in milliseconds.
pub fn window_end_ms(start: i64, window_secs: i64) -> i64 {
    start.saturating_add(window_secs).saturating_mul(1000)
}

/// Whether a window ending at `end_ms` is sealed at `watermark` with `retention_ms`.
fn sealed(end_ms: i64, retention_ms: i64, watermark: i64) -> bool {
    end_ms.saturating_add(retention_ms) <= watermark
}

/// What a windowed operator holds and has dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Windows (or keys of one window) in its state now.
    pub windows: usize,
    /// Windows it has dropped, sealed.
    pub dropped: u64,
}

/// One worker's horizon: the watermarks its `Watermark` operator publishes, for the windowed
/// operators of that worker, and what each of them holds.
pub struct Horizon<T> {
    retention_ms: i64,
    subscribers: RefCell<Vec<Rc<RefCell<VecDeque<(T, i64)>>>>>,
    operators: RefCell<Vec<(String, Rc<Cell<Held>>)>>,
}

impl<T: Timestamp + TotalOrder> Horizon<T> {
    fn new(retention: &Retention) -> Rc<Self> {
        Rc::new(Horizon {
            retention_ms: retention.ms(),
            subscribers: RefCell::default(),
            operators: RefCell::default(),
        })
    }

    /// The watermark of every time after `time` is at least `watermark`.
    fn publish(&self, time: &T, watermark: i64) {
        for queue in self.subscribers.borrow().iter() {
            queue.borrow_mut().push_back((time.clone(), watermark));
        }
    }

    /// An expiry for the operator `name` whose keys' windows end at `window_end(key)` (ms).
    pub fn expiry<K>(&self, name: &str, window_end: impl Fn(&K) -> i64 + 'static) -> Expiry<T, K> {
        let queue = Rc::default();
        self.subscribers.borrow_mut().push(Rc::clone(&queue));
        let held = Rc::default();
        self.operators.borrow_mut().push((name.to_owned(), Rc::clone(&held)));
        Expiry { queue, retention_ms: self.retention_ms, window_end: Box::new(window_end), bound: i64::MIN, held }
    }

    /// What each windowed operator of this worker holds and has dropped.
    pub fn held(&self) -> Vec<(String, Held)> {
        self.operators.borrow().iter().map(|(name, held)| (name.clone(), held.get())).collect()
    }
}

/// A windowed operator's view of the horizon: which of its windows are sealed.
pub struct Expiry<T, K> {
    queue: Rc<RefCell<VecDeque<(T, i64)>>>,
    retention_ms: i64,
    window_end: Box<dyn Fn(&K) -> i64>,
    /// Windows ending at or before this are sealed (ms).
    bound: i64,
    held: Rc<Cell<Held>>,
}

impl<T: Timestamp + TotalOrder, K> Expiry<T, K> {
    /// Takes the watermarks published for times before `time` (the operator is about to
    /// process `time`); returns whether more windows are sealed than before.
    pub fn advance(&mut self, time: &T) -> bool {
        let mut queue = self.queue.borrow_mut();
        let mut watermark = None;
        while let Some((at, mark)) = queue.front() {
            if !at.less_than(time) {
                break;
            }
            watermark = Some(watermark.map_or(*mark, |w: i64| w.max(*mark)));
            queue.pop_front();
        }
        match watermark.map(|w| w.saturating_sub(self.retention_ms)) {
            Some(bound) if bound > self.bound => {
                self.bound = bound;
                true
            }
            _ => false,
        }
    }

    /// Whether `key`'s window is still open.
    pub fn open(&self, key: &K) -> bool {
        (self.window_end)(key) > self.bound
    }

    /// Records that the operator holds `windows` and has just dropped `dropped` more.
    pub fn report(&self, windows: usize, dropped: usize) {
        let held = self.held.get();
        self.held.set(Held { windows, dropped: held.dropped + dropped as u64 });
    }
}

/// Keeps, of `map`, the entries whose key `expiry` says is open, when `expiry` (if any) seals
/// more windows at `time`; reports what `map` holds.
pub fn expire<T, K, V, S>(expiry: &mut Option<Expiry<T, K>>, time: &T, map: &mut std::collections::HashMap<K, V, S>)
where
    T: Timestamp + TotalOrder,
{
    if let Some(expiry) = expiry {
        let mut dropped = 0;
        if expiry.advance(time) {
            let before = map.len();
            map.retain(|key, _| expiry.open(key));
            dropped = before - map.len();
        }
        expiry.report(map.len(), dropped);
    }
}

/// A run's horizon, built once per worker by [`crate::all_views`]: the broadcast stamps and the
/// worker's [`Horizon`].
pub struct Sealer<'s, T: Timestamp> {
    retention: Retention,
    stamps: StreamVec<'s, T, (i64, T, Diff)>,
    pub horizon: Rc<Horizon<T>>,
}

impl<'s, T: Timestamp + TotalOrder> Sealer<'s, T> {
    /// Broadcasts `stamps` (each worker's greatest `ts` per time) and starts publishing the
    /// watermarks of complete times.
    pub fn new(stamps: VecCollection<'s, T, i64>, retention: &Retention) -> Self {
        let stamps = stamps.inner.broadcast();
        let horizon = Horizon::new(retention);
        let publish = Rc::clone(&horizon);
        let mut pending: BTreeMap<T, i64> = BTreeMap::new();
        let mut watermark = i64::MIN;
        stamps.clone().sink(Pipeline, "Watermark", move |(input, frontier)| {
            input.for_each(|_cap, data| {
                for (ts, time, _) in data.drain(..) {
                    let mark = pending.entry(time).or_insert(i64::MIN);
                    *mark = (*mark).max(ts);
                }
            });
            while let Some(entry) = pending.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                let (time, mark) = entry.remove_entry();
                watermark = watermark.max(mark);
                publish.publish(&time, watermark);
            }
        });
        Sealer { retention: retention.clone(), stamps, horizon }
    }

    /// returns the events of `events` whose window (`window_secs` long) is open at their
    /// time, and the `late_events` rows of the others.
    pub fn seal<E: Windowed>(
        &self,
        events: VecCollection<'s, T, E>,
        window_secs: i64,
    ) -> (VecCollection<'s, T, E>, VecCollection<'s, T, LateEvent>) {
        let mut builder = OperatorBuilder::new(format!("Seal: {}", E::KIND), events.inner.scope());
        let mut input = builder.new_input(events.inner, Pipeline);
        let mut stamps = builder.new_input(self.stamps.clone(), Pipeline);
        let (open_out, open) = builder.new_output();
        let (late_out, late) = builder.new_output();
        let mut open_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<(E, T, Diff)>>>::from(open_out);
        let mut late_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<(LateEvent, T, Diff)>>>::from(late_out);
        let retention_ms = self.retention.ms();
        let sources = Arc::clone(&self.retention.sources);
        builder.build(move |initial| {
            drop(initial);
            // Events waiting for their time's watermark, with a capability per output.
            let mut pending: BTreeMap<T, (Capability<T>, Capability<T>, Vec<(E, Diff)>)> = BTreeMap::new();
            // The greatest ts per time of the stamps not folded into `folded` yet.
            let mut marks: BTreeMap<T, i64> = BTreeMap::new();
            // The greatest ts of the stamps at times before every pending and future event.
            let mut folded = i64::MIN;
            move |frontiers| {
                let mut open_out = open_out.activate();
                let mut late_out = late_out.activate();
                input.for_each_stamp(|cap, containers| {
                    for container in containers {
                        for (event, time, diff) in container.drain(..) {
                            let slot = pending
                                .entry(time)
                                .or_insert_with_key(|t| (cap.delayed(t, 0), cap.delayed(t, 1), Vec::new()));
                            slot.2.push((event, diff));
                        }
                    }
                });
                stamps.for_each(|_cap, data| {
                    for (ts, time, _) in data.drain(..) {
                        let mark = marks.entry(time).or_insert(i64::MIN);
                        *mark = (*mark).max(ts);
                    }
                });
                let (events_frontier, stamps_frontier) = (&frontiers[0], &frontiers[1]);
                // A time's watermark is known once no stamp before it can come.
                while let Some(entry) = pending.first_entry() {
                    if stamps_frontier.frontier().iter().any(|f| f.less_than(entry.key())) {
                        break;
                    }
                    let (time, (open_cap, late_cap, events)) = entry.remove_entry();
                    let watermark = marks.range(..time.clone()).map(|(_, m)| *m).fold(folded, i64::max);
                    let mut open = open_out.session(&open_cap);
                    let mut late = late_out.session(&late_cap);
                    for (event, diff) in events {
                        let end = window_end_ms(window_start(event.ts(), window_secs), window_secs);
                        if sealed(end, retention_ms, watermark) {
                            let origin = event.origin();
                            let source = sources.get(origin.source as usize).cloned().unwrap_or_default();
                            let row = LateEvent {
                                source,
                                position: origin.to_string(),
                                kind: E::KIND.to_owned(),
                                ts: event.ts(),
                                watermark,
                            };
                            late.give((row, time.clone(), diff));
                        } else {
                            open.give((event, time.clone(), diff));
                        }
                    }
                }
                // Stamps before every pending time and every time still to come are summed up.
                while let Some(entry) = marks.first_entry() {
                    let time = entry.key();
                    let later = |f: &timely::progress::frontier::MutableAntichain<T>| {
                        f.frontier().iter().all(|f| time.less_than(f))
                    };
                    let before_pending = pending.first_key_value().is_none_or(|(t, _)| time.less_than(t));
                    if !(before_pending && later(events_frontier) && later(stamps_frontier)) {
                        break;
                    }
                    folded = folded.max(entry.remove());
                }
            }
        });
        (open.as_collection(), late.as_collection())
    }
}
