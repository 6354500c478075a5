//! `clock`: wall-clock milliseconds, the only clock modules get.

use crate::components::bindings::rooms::roomlet::signal::clock::Host;
use crate::components::state::HostState;

impl Host for HostState {
    fn now_ms(&mut self) -> u64 {
        crate::clock::unix_millis()
    }
}
