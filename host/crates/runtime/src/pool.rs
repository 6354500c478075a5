//! Instances and the warm pools of the stateless functions.

use super::error::{CallError, full};
use super::limits::Limits;
use super::state;
use super::state::{HostState, ModuleEnv, RoomContext};
use parking_lot::Mutex;
use std::sync::Arc;
use wasmtime::{Engine, Store};

/// A store ready for calls: limits installed.
pub(crate) fn new_store(
    engine: &Engine,
    env: Arc<ModuleEnv>,
    room: Option<RoomContext>,
    limits: &Limits,
) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(env, room, limits.memory_cap));
    state::install(&mut store);
    state::arm(&mut store, limits);
    store
}

/// Turns a failed call into what happened, using what the limits saw.
pub(crate) fn classify(store: &Store<HostState>, e: wasmtime::Error) -> CallError {
    let data = store.data();
    let err = if data.budget.deadline_hit {
        CallError::Deadline
    } else if data.limiter.hit {
        CallError::MemoryCap
    } else {
        CallError::Trap(full(&e))
    };
    data.env
        .metrics
        .failed(data.env.function.name(), err.kind());
    err
}

/// Records a call's duration under its function and version.
pub(crate) fn timed(env: &ModuleEnv, started: std::time::Instant) {
    env.calls.observe(started.elapsed().as_secs_f64());
}

/// Counts an instantiation (and its failure).
pub(crate) fn instantiated<T>(env: &ModuleEnv, r: &Result<T, CallError>) {
    let function = env.function.name();
    env.metrics.instantiated(function);
    if let Err(e) = r {
        env.metrics.failed(function, e.kind());
    }
}

/// An instance with its store.
pub(crate) struct Warm<B> {
    pub store: Store<HostState>,
    pub bindings: B,
}

/// Idle instances of a stateless function, reused call after call. An
/// instance that trapped is never returned to the pool.
pub(crate) struct WarmPool<B> {
    idle: Mutex<Vec<Warm<B>>>,
    keep: usize,
}

impl<B> WarmPool<B> {
    pub fn new(keep: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::with_capacity(keep)),
            keep,
        }
    }

    pub fn take(&self) -> Option<Warm<B>> {
        self.idle.lock().pop()
    }

    pub fn put(&self, warm: Warm<B>) {
        let mut idle = self.idle.lock();
        if idle.len() < self.keep {
            idle.push(warm);
        }
    }
}
