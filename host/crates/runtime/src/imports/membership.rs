//! `membership`: the host's view of the room the current call is for.

use crate::bindings::rooms::roomlet::signal::membership::Host;
use crate::bindings::types::Peer;
use crate::state::HostState;

impl Host for HostState {
    fn room_name(&mut self) -> String {
        self.room
            .as_ref()
            .map(|r| r.name.to_string())
            .unwrap_or_default()
    }

    fn peers(&mut self) -> Vec<Peer> {
        let _span = tracing::trace_span!("membership.peers").entered();
        self.room
            .as_ref()
            .map(|r| r.peers.as_ref().clone())
            .unwrap_or_default()
    }
}
