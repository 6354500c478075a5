//! What a room sends to its peers' sessions.

use std::sync::Arc;

use roomlet_protocol::{ErrorCode, FrameId};
use roomlet_runtime::bindings::types::{Peer, SignalKind};

/// Why a peer left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// Its socket dropped and did not come back within the grace period.
    Timeout,
    /// A room admin or the module removed it.
    Kicked,
    /// The room closed.
    Closed,
}

impl LeaveReason {
    /// The reason as it appears in `peer-left` frames.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "leave",
            LeaveReason::Timeout => "timeout",
            LeaveReason::Kicked => "kicked",
            LeaveReason::Closed => "closed",
        }
    }
}

/// One thing for one peer. Payloads are shared (`Arc`) so a broadcast
/// allocates its data once, not once per peer.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Someone joined.
    PeerJoined(Arc<Peer>),
    /// Someone left.
    PeerLeft {
        /// Its peer id.
        peer_id: Arc<str>,
        /// Why.
        reason: LeaveReason,
    },
    /// A room message (JSON data).
    Message {
        /// Sender's peer id; empty when the room itself sends.
        from: Arc<str>,
        /// JSON text.
        data: Arc<str>,
        /// The sender's frame id (0: none, as in what a module sends).
        id: FrameId,
    },
    /// A targeted signal (JSON payload).
    Signal {
        /// Sender's peer id.
        from: Arc<str>,
        /// Offer, answer or candidate.
        kind: SignalKind,
        /// JSON text. Owned, not shared: a signal has one recipient, and
        /// the relay's `String` becomes a `Box<str>` without a copy.
        payload: Box<str>,
        /// The sender's frame id (0: none).
        id: FrameId,
    },
    /// Something this peer sent was refused by the host.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Human reason.
        message: Box<str>,
    },
    /// Something this peer sent was refused by the room's module, with a
    /// code of the module's own.
    ///
    /// `Box<str>`, not `String`: the largest variants size every queued
    /// delivery (40 bytes instead of 56).
    Rejected {
        /// The module's code.
        code: Box<str>,
        /// Human reason.
        message: Box<str>,
    },
    /// This peer was removed.
    Kicked {
        /// Why.
        reason: String,
    },
    /// The room's metadata changed.
    Metadata(Arc<str>),
    /// The room closed.
    Closed {
        /// Why.
        reason: String,
    },
    /// The room left this node without closing (its home's lease lapsed,
    /// or the home handed it off): the session joins it again where it
    /// lives now. A move, not an ending: nobody left the room.
    Moved,
}

#[cfg(test)]
mod tests {
    use super::Delivery;

    /// A broadcast queues one delivery per peer, sized by the largest
    /// variant: a new variant that grows `Delivery` costs every queued
    /// delivery its growth. Box what does not fit.
    #[test]
    fn a_delivery_stays_five_words() {
        assert!(
            size_of::<Delivery>() <= 40,
            "Delivery grew to {} bytes",
            size_of::<Delivery>()
        );
    }
}
