//! Per-call limits: the memory cap and the CPU deadline.
//!
//! The deadline uses epoch interruption: a ticker thread bumps the engine's
//! epoch every [`TICK`]; at each tick a running guest yields to tokio (so a
//! guest spinning to its deadline never stalls the sockets) and loses one
//! tick of budget; at zero it traps.

use std::time::Duration;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};

use super::state::HostState;

/// Epoch tick: the granularity of deadlines and of guest yields.
pub const TICK: Duration = Duration::from_millis(1);

/// Limits applied to every call into a component.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest linear memory, in bytes.
    pub memory_cap: usize,
    /// Wall-clock budget of one call.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_cap: 32 << 20,
            deadline: Duration::from_millis(100),
        }
    }
}

/// Refuses memory growth past the cap and remembers that it did.
#[derive(Debug)]
pub struct MemoryLimiter {
    cap: usize,
    pub(crate) hit: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(cap: usize) -> Self {
        Self { cap, hit: false }
    }
}

/// Most table elements a component may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Ticks left in the current call.
#[derive(Debug, Default)]
pub struct CallBudget {
    ticks_left: u64,
    pub(crate) deadline_hit: bool,
}

/// Installs the limiter and the deadline callback on a new store.
pub(crate) fn install(store: &mut Store<HostState>) {
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|mut ctx| {
        let budget = &mut ctx.data_mut().budget;
        if budget.ticks_left == 0 {
            budget.deadline_hit = true;
            return Ok(UpdateDeadline::Interrupt);
        }
        budget.ticks_left -= 1;
        Ok(UpdateDeadline::Yield(1))
    });
}

/// Arms the limits for the next call.
pub(crate) fn arm(store: &mut Store<HostState>, limits: &Limits) {
    let ticks = (limits.deadline.as_micros() / TICK.as_micros()).max(1) as u64;
    let data = store.data_mut();
    data.budget = CallBudget {
        ticks_left: ticks,
        deadline_hit: false,
    };
    data.limiter.hit = false;
    store.set_epoch_deadline(1);
}
