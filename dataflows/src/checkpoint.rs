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
//! (which decides when: see chatflow's `worker::checkpoint`) calls [`Registry::save`] at a
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
use std::collections::HashMap;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a checkpoint cannot be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the state of operator {name:?}: {source}")]
    Codec { name: String, source: bincode::Error },
    #[error("the checkpoint has state for operators this dataflow does not have: {0}")]
    Unused(String),
}

type Saver = Box<dyn Fn() -> Result<Vec<u8>, bincode::Error>>;

/// One worker's checkpointed operators.
#[derive(Default)]
pub struct Registry {
    restored: RefCell<HashMap<String, Vec<u8>>>,
    savers: RefCell<Vec<(String, Saver)>>,
    /// The first state that could not be decoded.
    error: RefCell<Option<CheckpointError>>,
}

thread_local! {
    static REGISTRY: RefCell<Option<Rc<Registry>>> = const { RefCell::new(None) };
}

/// Installs a registry for the dataflow this thread builds next, with the states a checkpoint
/// saved (empty: a run from the beginning).
pub fn install(restored: Vec<(String, Vec<u8>)>) -> Rc<Registry> {
    let registry = Rc::new(Registry { restored: RefCell::new(restored.into_iter().collect()), ..Default::default() });
    REGISTRY.with(|r| *r.borrow_mut() = Some(Rc::clone(&registry)));
    registry
}

/// Removes this thread's registry; returns an error if a restored state was not decodable or
/// was claimed by no operator (the checkpoint is of another configuration).
pub fn uninstall(registry: &Registry) -> Result<(), CheckpointError> {
    REGISTRY.with(|r| *r.borrow_mut() = None);
    if let Some(e) = registry.error.borrow_mut().take() {
        return Err(e);
    }
    let restored = registry.restored.borrow();
    if restored.is_empty() {
        Ok(())
    } else {
        let mut names: Vec<&str> = restored.keys().map(String::as_str).collect();
        names.sort_unstable();
        Err(CheckpointError::Unused(names.join(", ")))
    }
}

impl Registry {
    /// Every registered operator's state, encoded: `(name, bytes)` in the order they were built.
    pub fn save(&self) -> Result<Vec<(String, Vec<u8>)>, CheckpointError> {
        let mut saved = Vec::new();
        for (name, save) in self.savers.borrow().iter() {
            let bytes = save().map_err(|source| CheckpointError::Codec { name: name.clone(), source })?;
            saved.push((name.clone(), bytes));
        }
        Ok(saved)
    }

    /// How many operators keep state here.
    pub fn operators(&self) -> usize {
        self.savers.borrow().len()
    }
}

/// returns `state`, or what the checkpoint being restored saved for this operator (`load`
/// makes it from the bytes `save` wrote), registered to be saved at every checkpoint.
pub fn keep_with<S, F, L>(name: &str, state: S, save: F, load: L) -> Rc<RefCell<S>>
where
    S: 'static,
    F: Fn(&S) -> Result<Vec<u8>, bincode::Error> + 'static,
    L: FnOnce(&[u8]) -> Result<S, bincode::Error>,
{
    let Some(registry) = REGISTRY.with(|r| r.borrow().clone()) else {
        return Rc::new(RefCell::new(state));
    };
    let rank = registry.savers.borrow().iter().filter(|(n, _)| n.split_once(':').is_some_and(|(_, n)| n == name)).count();
    let key = format!("{rank}:{name}");
    let restored = registry.restored.borrow_mut().remove(&key);
    let state = match restored.map(|bytes| load(&bytes)) {
        None => state,
        Some(Ok(restored)) => restored,
        Some(Err(source)) => {
            registry.error.borrow_mut().get_or_insert(CheckpointError::Codec { name: key.clone(), source });
            state
        }
    };
    let state = Rc::new(RefCell::new(state));
    let saved = Rc::clone(&state);
    registry.savers.borrow_mut().push((key, Box::new(move || save(&saved.borrow()))));
    state
}

/// [`keep_with`] for state that is saved as it is.
pub fn keep<S>(name: &str, state: S) -> Rc<RefCell<S>>
where
    S: Serialize + DeserializeOwned + 'static,
{
    keep_with(name, state, |s: &S| bincode::serialize(s), |bytes| bincode::deserialize(bytes))
}

/// Whether this thread is building a dataflow that restores a checkpoint.
pub fn restoring() -> bool {
    REGISTRY.with(|r| r.borrow().as_ref().is_some_and(|r| !r.restored.borrow().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_by_name_and_rank() {
        let registry = install(Vec::new());
        let a = keep::<HashMap<String, i64>>("Count", HashMap::new());
        let b = keep::<HashMap<String, i64>>("Count", HashMap::new());
        a.borrow_mut().insert("x".into(), 3);
        b.borrow_mut().insert("y".into(), 4);
        let saved = registry.save().unwrap();
        uninstall(&registry).unwrap();
        assert_eq!(saved.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["0:Count", "1:Count"]);

        let registry = install(saved.clone());
        let a = keep::<HashMap<String, i64>>("Count", HashMap::new());
        let b = keep::<HashMap<String, i64>>("Count", HashMap::new());
        uninstall(&registry).unwrap();
        assert_eq!(a.borrow().get("x"), Some(&3));
        assert_eq!(b.borrow().get("y"), Some(&4));

        // A dataflow with fewer operators leaves a state unclaimed: refused, named.
        let registry = install(saved);
        let _a = keep::<HashMap<String, i64>>("Count", HashMap::new());
        let e = uninstall(&registry).unwrap_err().to_string();
        assert!(e.contains("1:Count"), "{e}");
        // Without a registry nothing is kept.
        let c = keep::<i64>("Count", 5);
        assert_eq!(*c.borrow(), 5);
    }

    #[test]
    fn undecodable_state_is_refused() {
        let registry = install(vec![("0:Count".into(), vec![1, 2])]);
        let _a = keep::<HashMap<String, i64>>("Count", HashMap::new());
        assert!(matches!(uninstall(&registry), Err(CheckpointError::Codec { .. })));
    }
}
