//! `clock`: wall-clock milliseconds, the only clock modules get.

use crate::bindings::rooms::roomlet::signal::clock::Host;
use crate::state::HostState;

impl Host for HostState {
    fn now_ms(&mut self) -> u64 {
        crate::clock::unix_millis()
    }
}
