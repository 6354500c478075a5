//! Per-call limits: the memory cap and the CPU deadline.
//!
//! The deadline uses epoch interruption: a ticker thread bumps the engine's
//! epoch every [`TICK`]; at each tick a running guest yields to tokio (so a
//! guest spinning to its deadline never stalls the sockets) and loses one
//! tick of budget; at zero it traps.

use std::time::Duration;
use wasmtime::ResourceLimiter;

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
    pub(crate) ticks_left: u64,
    pub(crate) deadline_hit: bool,
}
