//! `config`: the module's own configuration table, read-only.

use crate::bindings::rooms::roomlet::signal::config::Host;
use crate::state::HostState;

impl Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        let _span = tracing::trace_span!("config.get", key = %key).entered();
        self.env.config.get(&key).cloned()
    }
}
