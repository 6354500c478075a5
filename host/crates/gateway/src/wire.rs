//! The protocol's types and the runtime's (WIT-generated) ones, each way.

use roomlet_protocol::{SignalKind as WireKind, WirePeer};
use roomlet_runtime::bindings::types::{Peer, SignalKind};

/// A peer as clients see it.
pub(crate) fn wire_peer(p: &Peer) -> WirePeer {
    WirePeer {
        id: p.id.clone(),
        identity: p.identity.clone(),
        name: p.name.clone(),
        metadata: p.metadata.clone(),
    }
}

/// A signal kind as the protocol names it.
pub(crate) fn signal_kind(kind: SignalKind) -> WireKind {
    match kind {
        SignalKind::Offer => WireKind::Offer,
        SignalKind::Answer => WireKind::Answer,
        SignalKind::Candidate => WireKind::Candidate,
    }
}

/// A client's signal kind as modules see it.
pub(crate) fn signal_kind_in(kind: WireKind) -> SignalKind {
    match kind {
        WireKind::Offer => SignalKind::Offer,
        WireKind::Answer => SignalKind::Answer,
        WireKind::Candidate => SignalKind::Candidate,
    }
}
