//! `clock`: wall-clock milliseconds, the only clock modules get.

use crate::components::bindings::rooms::roomlet::signal::clock::Host;
use crate::components::state::HostState;
use std::time::{SystemTime, UNIX_EPOCH};

impl Host for HostState {
    fn now_ms(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
