//! Checkpointed operator state: what a worker's stateful operators hold, saved at a cut and
//! restored by a later run so that it need not read history again (DESIGN.md, "Restarts that
//! do not replay history").
//!
//! ```text
//!  building the dataflow: operator ─ keep(name, state) ─► the worker's Registry ─► restored state (if resuming)
//!  at a checkpoint (inputs held at c, every time before c processed): Registry::save ─► (name, bytes) per operator
//! ```
//!
//! A stateful operator keeps its state in an `Rc<RefCell<_>>` it gets from [`keep`] while the
//! dataflow is built: the state a checkpoint restored for it, or a fresh one. The worker
//! (which decides when: see chatflow's `worker::checkpoint`) calls [`Registry::save_to`] at a
//! moment when every time before the cut has been processed and none after it, between two
//! steps, so no operator holds a borrow. What is saved is the state in the form the operator's
//! input accumulates to (counts per key, strengths per pair, the values of each key), never
//! the events; buffers an operator derives from it (a top-K's best items, the walks' rows)
//! are rebuilt on restore without emitting anything: their rows are in the output already.
//!
//! Names: an operator's name with its rank among the operators of that name built before it
//! (`3:Count: word_counts`), so a dataflow built from the same configuration gives every
//! operator the same name in every run. State is per worker: a resumed run has the same
//! number of workers (the deployment fixes it), and each worker restores its own.
//!
//! The registry is the building thread's (a timely worker is one thread): [`install`] it
//! before building the dataflow, [`uninstall`] after. Without one (tests, the in-process
//! harness) [`keep`] hands out fresh state and saves nothing.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a checkpoint cannot be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the state of operator {name:?}: {source}")]
    Codec { name: String, source: bincode::Error },
    #[error(
        "the checkpoint holds the state of {found:?} where this dataflow has {expected:?} (saved with other settings?)"
    )]
    Mismatch { expected: String, found: String },
}

type Saver = Box<dyn Fn(&mut dyn Write) -> Result<(), bincode::Error>>;

/// One worker's checkpointed operators.
#[derive(Default)]
pub struct Registry {
    /// The checkpoint being restored: each operator's name, then its state, in the order the
    /// operators are built; an empty name ends it.
    restoring: RefCell<Option<Box<dyn Read>>>,
    savers: RefCell<Vec<(String, Saver)>>,
    /// The first state that could not be restored.
    error: RefCell<Option<CheckpointError>>,
}

thread_local! {
    static REGISTRY: RefCell<Option<Rc<Registry>>> = const { RefCell::new(None) };
}

/// Installs a registry for the dataflow this thread builds next, restoring what `restoring`
/// holds (what [`Registry::save_to`] wrote), if anything.
pub fn install(restoring: Option<Box<dyn Read>>) -> Rc<Registry> {
    let registry = Rc::new(Registry { restoring: RefCell::new(restoring), ..Default::default() });
    REGISTRY.with(|r| *r.borrow_mut() = Some(Rc::clone(&registry)));
    registry
}

/// Removes this thread's registry; an error if a state could not be restored or the
/// checkpoint holds more than this dataflow's operators (it is of another configuration).
pub fn uninstall(registry: &Registry) -> Result<(), CheckpointError> {
    REGISTRY.with(|r| *r.borrow_mut() = None);
    if let Some(e) = registry.error.borrow_mut().take() {
        return Err(e);
    }
    if let Some(reader) = registry.restoring.borrow_mut().as_mut() {
        let found = next_name(reader.as_mut(), "the end")?;
        if !found.is_empty() {
            return Err(CheckpointError::Mismatch { expected: "no more operators".into(), found });
        }
    }
    Ok(())
}

fn next_name(reader: &mut dyn Read, expected: &str) -> Result<String, CheckpointError> {
    bincode::deserialize_from(reader).map_err(|source| CheckpointError::Codec { name: expected.to_owned(), source })
}

impl Registry {
    /// Writes every registered operator's name and state, in the order they were built, and
    /// the end.
    pub fn save_to(&self, out: &mut dyn Write) -> Result<(), CheckpointError> {
        for (name, save) in self.savers.borrow().iter() {
            let codec = |source| CheckpointError::Codec { name: name.clone(), source };
            bincode::serialize_into(&mut *out, name).map_err(codec)?;
            save(&mut *out).map_err(codec)?;
        }
        bincode::serialize_into(out, "").map_err(|source| CheckpointError::Codec { name: "the end".into(), source })
    }

    /// How many operators keep state here.
    pub fn operators(&self) -> usize {
        self.savers.borrow().len()
    }
}

/// returns `state`, or what the checkpoint being restored saved for this operator (`load`
/// reads what `save` wrote), registered to be saved at every checkpoint.
pub fn keep_with<S, F, L>(name: &str, state: S, save: F, load: L) -> Rc<RefCell<S>>
where
    S: 'static,
    F: Fn(&S, &mut dyn Write) -> Result<(), bincode::Error> + 'static,
    L: FnOnce(&mut dyn Read) -> Result<S, bincode::Error>,
{
    let Some(registry) = REGISTRY.with(|r| r.borrow().clone()) else {
        return Rc::new(RefCell::new(state));
    };
    let rank =
        registry.savers.borrow().iter().filter(|(n, _)| n.split_once(':').is_some_and(|(_, n)| n == name)).count();
    let key = format!("{rank}:{name}");
    let restored = registry.restoring.borrow_mut().as_mut().map(|reader| -> Result<S, CheckpointError> {
        let found = next_name(reader.as_mut(), &key)?;
        if found != key {
            return Err(CheckpointError::Mismatch { expected: key.clone(), found });
        }
        load(reader.as_mut()).map_err(|source| CheckpointError::Codec { name: key.clone(), source })
    });
    let state = match restored {
        None => state,
        Some(Ok(restored)) => restored,
        Some(Err(e)) => {
            // Nothing more can be read in order.
            registry.restoring.borrow_mut().take();
            registry.error.borrow_mut().get_or_insert(e);
            state
        }
    };
    let state = Rc::new(RefCell::new(state));
    let saved = Rc::clone(&state);
    registry.savers.borrow_mut().push((key, Box::new(move |out: &mut dyn Write| save(&saved.borrow(), out))));
    state
}

/// [`keep_with`] for state that is saved as it is.
pub fn keep<S>(name: &str, state: S) -> Rc<RefCell<S>>
where
    S: Serialize + DeserializeOwned + 'static,
{
    keep_with(name, state, |s: &S, out| bincode::serialize_into(out, s), |reader| bincode::deserialize_from(reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn counts() -> (Rc<RefCell<HashMap<String, i64>>>, Rc<RefCell<HashMap<String, i64>>>) {
        (keep("Count", HashMap::new()), keep("Count", HashMap::new()))
    }

    #[test]
    fn states_round_trip_by_name_and_rank() {
        let registry = install(None);
        let (a, b) = counts();
        a.borrow_mut().insert("x".into(), 3);
        b.borrow_mut().insert("y".into(), 4);
        let mut saved = Vec::new();
        registry.save_to(&mut saved).unwrap();
        uninstall(&registry).unwrap();

        let registry = install(Some(Box::new(std::io::Cursor::new(saved.clone()))));
        let (a, b) = counts();
        uninstall(&registry).unwrap();
        assert_eq!(a.borrow().get("x"), Some(&3));
        assert_eq!(b.borrow().get("y"), Some(&4));

        // A dataflow with fewer operators leaves a state unclaimed: refused, named.
        let registry = install(Some(Box::new(std::io::Cursor::new(saved.clone()))));
        let _a: Rc<RefCell<HashMap<String, i64>>> = keep("Count", HashMap::new());
        let e = uninstall(&registry).unwrap_err().to_string();
        assert!(e.contains("1:Count"), "{e}");
        // One of another name: refused, both named.
        let registry = install(Some(Box::new(std::io::Cursor::new(saved))));
        let _a: Rc<RefCell<HashMap<String, i64>>> = keep("Total", HashMap::new());
        let e = uninstall(&registry).unwrap_err().to_string();
        assert!(e.contains("0:Total") && e.contains("0:Count"), "{e}");
        // Without a registry nothing is kept.
        let c = keep::<i64>("Count", 5);
        assert_eq!(*c.borrow(), 5);
    }

    #[test]
    fn truncated_state_is_refused() {
        let registry = install(None);
        let (a, _b) = counts();
        a.borrow_mut().insert("x".into(), 3);
        let mut saved = Vec::new();
        registry.save_to(&mut saved).unwrap();
        uninstall(&registry).unwrap();
        saved.truncate(saved.len() / 2);
        let registry = install(Some(Box::new(std::io::Cursor::new(saved))));
        let _ = counts();
        assert!(matches!(uninstall(&registry), Err(CheckpointError::Codec { .. })));
    }
}
