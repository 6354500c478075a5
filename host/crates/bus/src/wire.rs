//! What crosses the bus between processes, as MessagePack (rmp-serde).
//!
//! The WIT-generated types carry no serde derives, so each has a wire
//! twin here with the conversions both ways. Every message names its room
//! and, when it goes to a room's home, the directory revision it was
//! routed by: a home that no longer holds that revision refuses it.

#![allow(missing_docs)] // field names are the documentation of these plain records

use roomlet_protocol::{ErrorText, FrameId};
use roomlet_rooms::{Delivery, LeaveReason};
use roomlet_runtime::bindings::authenticator::{AuthError, AuthRequest};
use roomlet_runtime::bindings::types::{Identity, SignalKind};
use roomlet_telemetry::IntCounterVec;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Encodes a bus message.
pub fn encode<T: Serialize>(v: &T) -> bytes::Bytes {
    // Serialising these plain structs cannot fail.
    rmp_serde::to_vec_named(v).unwrap_or_default().into()
}

/// Decodes a bus message arriving on a `subject` kind (`auth`, `join`,
/// ...); `None` when malformed, counted in `roomlet_bus_malformed_total`
/// and logged. The decoder's own message stays out of the log: serde
/// quotes the offending value, which in an auth request is the token.
pub fn decode<'a, T: Deserialize<'a>>(
    malformed: &IntCounterVec,
    subject: &'static str,
    b: &'a [u8],
) -> Option<T> {
    let v = rmp_serde::from_slice(b).ok();
    if v.is_none() {
        malformed.with_label_values(&[subject]).inc();
        tracing::warn!(
            subject,
            bytes = b.len(),
            "malformed message on the bus, dropped"
        );
    }
    v
}

/// A peer on the bus: the same record a restarting node writes to disk.
pub use roomlet_rooms::MemberImage as WirePeer;

/// A session's stream on the bus ([`HandedOver`]): the same image an
/// all-in-one node writes to disk when it restarts.
pub use roomlet_gateway::{FrameImage, SessionImage};

fn kind_code(k: SignalKind) -> u8 {
    match k {
        SignalKind::Offer => 0,
        SignalKind::Answer => 1,
        SignalKind::Candidate => 2,
    }
}

fn kind_from(c: u8) -> SignalKind {
    match c {
        0 => SignalKind::Offer,
        1 => SignalKind::Answer,
        _ => SignalKind::Candidate,
    }
}

fn reason_code(r: LeaveReason) -> u8 {
    match r {
        LeaveReason::Left => 0,
        LeaveReason::Timeout => 1,
        LeaveReason::Kicked => 2,
        LeaveReason::Closed => 3,
    }
}

fn reason_from(c: u8) -> LeaveReason {
    match c {
        0 => LeaveReason::Left,
        1 => LeaveReason::Timeout,
        2 => LeaveReason::Kicked,
        _ => LeaveReason::Closed,
    }
}

/// A gateway → home message about one room.
#[derive(Debug, Serialize, Deserialize)]
pub struct ToHome {
    pub room: String,
    /// The directory revision the sender routed by.
    pub rev: u64,
    /// The sending gateway's node name (where `Moved` goes).
    pub gateway: String,
    pub op: HomeOp,
}

/// What a gateway asks of a room's home.
#[derive(Debug, Serialize, Deserialize)]
pub enum HomeOp {
    Leave {
        peer: String,
        reason: u8,
    },
    Message {
        sender: String,
        to: Option<String>,
        data: String,
    },
    Signal {
        sender: String,
        to: String,
        kind: u8,
        payload: String,
    },
    Kick {
        peer: String,
        reason: String,
    },
    SetMetadata {
        metadata: String,
    },
}

impl HomeOp {
    pub fn leave(peer: &str, reason: LeaveReason) -> Self {
        HomeOp::Leave {
            peer: peer.into(),
            reason: reason_code(reason),
        }
    }

    pub fn signal(sender: String, to: String, kind: SignalKind, payload: String) -> Self {
        HomeOp::Signal {
            sender,
            to,
            kind: kind_code(kind),
            payload,
        }
    }

    pub fn leave_reason(code: u8) -> LeaveReason {
        reason_from(code)
    }

    pub fn signal_kind(code: u8) -> SignalKind {
        kind_from(code)
    }
}

/// A join (request/reply) sent to the node chosen as the room's home.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub room: String,
    pub peer: WirePeer,
    /// The gateway holding the peer's socket.
    pub gateway: String,
    /// The gateway's region (a new room's home region).
    pub region: String,
    pub may_create: bool,
    /// A re-report after the room lost its home: add the member without
    /// announcing it or running `on-join` again.
    pub rejoin: bool,
    /// The stale directory revision the gateway saw, if any.
    pub seen_rev: Option<u64>,
    /// A session moving here from this gateway (with `rejoin`): the peer
    /// must still be a member, and only its location changes. Absent
    /// from an older gateway.
    #[serde(default)]
    pub moved_from: Option<String>,
}

/// The home's answer to a join.
#[derive(Debug, Serialize, Deserialize)]
pub enum JoinReply {
    Joined {
        rev: u64,
        /// The members already there, each with its gateway.
        peers: Vec<(WirePeer, String)>,
        metadata: String,
        observe_signals: bool,
        /// Missing from an older home: through the home, which is always right.
        #[serde(default = "observe_by_default")]
        observe_messages: bool,
    },
    /// This node is not (and cannot become) the room's home.
    NotHome {
        home: String,
        rev: u64,
    },
    Refused {
        code: String,
        message: String,
    },
}

/// A client resumed at another gateway with a token this gateway issued
/// (`P.resumed.NODE`): the session it left here ends now, not after its
/// grace period, in which it would stay in its room as a second copy of
/// the peer (and fill a one-to-one room against the client's new join).
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionGone {
    /// The resume token the client presented elsewhere.
    pub token: String,
}

/// A gateway asks the one holding a session (`P.handover.NODE`,
/// request/reply) to hand it over: the client resumed at the asking one,
/// which has already re-pointed the peer at itself. The session is named
/// by its resume token's SHA-256; the token never crosses the bus.
#[derive(Debug, Serialize, Deserialize)]
pub struct HandOver {
    pub key: [u8; 32],
    /// The asking gateway (where stragglers for the peer are sent on).
    pub to: String,
}

/// The answer to [`HandOver`]: the session's stream, if it was held.
#[derive(Debug, Serialize, Deserialize)]
pub struct HandedOver {
    pub session: Option<SessionImage>,
}

/// A home asks the gateway holding one of a room's peers (`P.reap.NODE`,
/// request/reply) to end that peer's session if its socket is gone: the
/// same identity is joining through another gateway (a reload), and the
/// dropped session would otherwise stay in the room for its grace period
/// as a second copy of the user (and fill a one-to-one room against the
/// join). A session whose socket is open is another device and stays.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reap {
    pub room: String,
    pub identity: String,
    pub peer: String,
}

/// The gateway's answer to [`Reap`]: whether it ended a dropped session.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reaped {
    pub ended: bool,
}

/// A process's first word on the bus (`P.hello`), before it serves: what
/// its node name held until now belonged to a process that is gone (one
/// restarted under the same name renews the old liveness key at once, so
/// the key's expiry would never tell).
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub node: String,
}

/// A home (or peer gateway) → gateway message for one local peer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ToGateway {
    pub room: String,
    /// The addressee, a peer held by the receiving gateway.
    pub peer: String,
    pub delivery: WireDelivery,
}

/// [`Delivery`] on the bus, plus the bus-only notices.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireDelivery {
    PeerJoined {
        peer: WirePeer,
        at: String,
    },
    PeerLeft {
        peer: String,
        reason: u8,
    },
    Message {
        from: String,
        data: String,
        /// The sender's frame id (0: none; absent from older nodes).
        #[serde(default, skip_serializing_if = "no_id")]
        id: FrameId,
    },
    Signal {
        from: String,
        kind: u8,
        payload: String,
        /// The sender's frame id (0: none; absent from older nodes).
        #[serde(default, skip_serializing_if = "no_id")]
        id: FrameId,
    },
    Error {
        code: String,
        message: String,
    },
    Kicked {
        reason: String,
    },
    Metadata(String),
    Closed {
        reason: String,
    },
    /// The room's home changed or refused a frame: look it up again.
    /// `from` is the node that sent the notice. [`ToGateway::peer`] is
    /// the sender of the refused frame, or empty when the room itself
    /// moved.
    Moved {
        from: String,
    },
    /// The peer [`ToGateway::peer`]'s session moved to gateway `at`:
    /// frames for it go there from now on.
    Relocated {
        at: String,
    },
}

impl WireDelivery {
    /// `d` as sent to a peer; `at` names the gateway of a joining peer.
    pub fn from_delivery(d: &Delivery, at: impl FnOnce(&str) -> String) -> Self {
        match d {
            Delivery::PeerJoined(p) => WireDelivery::PeerJoined {
                peer: WirePeer::from(&**p),
                at: at(&p.id),
            },
            Delivery::PeerLeft { peer_id, reason } => WireDelivery::PeerLeft {
                peer: peer_id.to_string(),
                reason: reason_code(*reason),
            },
            Delivery::Message { from, data, id } => WireDelivery::Message {
                from: from.to_string(),
                data: data.to_string(),
                id: *id,
            },
            Delivery::Signal {
                from,
                kind,
                payload,
                id,
            } => WireDelivery::Signal {
                from: from.to_string(),
                kind: kind_code(*kind),
                payload: payload.to_string(),
                id: *id,
            },
            Delivery::Error { code, message } => WireDelivery::Error {
                code: code.as_str().to_owned(),
                message: message.to_string(),
            },
            Delivery::Rejected { code, message } => WireDelivery::Error {
                code: code.to_string(),
                message: message.to_string(),
            },
            Delivery::Kicked { reason } => WireDelivery::Kicked {
                reason: reason.clone(),
            },
            Delivery::Metadata(m) => WireDelivery::Metadata(m.to_string()),
            Delivery::Closed { reason } => WireDelivery::Closed {
                reason: reason.clone(),
            },
            Delivery::Moved => WireDelivery::Moved {
                from: String::new(),
            },
        }
    }

    /// The local delivery; `None` for bus-only notices.
    pub fn into_delivery(self) -> Option<Delivery> {
        Some(match self {
            WireDelivery::PeerJoined { peer, .. } => Delivery::PeerJoined(Arc::new(peer.into())),
            WireDelivery::PeerLeft { peer, reason } => Delivery::PeerLeft {
                peer_id: peer.into(),
                reason: reason_from(reason),
            },
            WireDelivery::Message { from, data, id } => Delivery::Message {
                from: from.into(),
                data: data.into(),
                id,
            },
            WireDelivery::Signal {
                from,
                kind,
                payload,
                id,
            } => Delivery::Signal {
                from: from.into(),
                kind: kind_from(kind),
                payload: payload.into(),
                id,
            },
            WireDelivery::Error { code, message } => match ErrorText::parse(&code) {
                ErrorText::Host(code) => Delivery::Error {
                    code,
                    message: message.into(),
                },
                ErrorText::Module(code) => Delivery::Rejected {
                    code,
                    message: message.into(),
                },
            },
            WireDelivery::Kicked { reason } => Delivery::Kicked { reason },
            WireDelivery::Metadata(m) => Delivery::Metadata(m.into()),
            WireDelivery::Closed { reason } => Delivery::Closed { reason },
            WireDelivery::Moved { .. } | WireDelivery::Relocated { .. } => return None,
        })
    }
}

/// An auth request on the bus.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireAuthRequest {
    pub token: String,
    pub room: String,
    pub client_addr: String,
    pub region: String,
    pub headers: Vec<(String, String)>,
}

impl From<&AuthRequest> for WireAuthRequest {
    fn from(r: &AuthRequest) -> Self {
        Self {
            token: r.token.clone(),
            room: r.room.clone(),
            client_addr: r.client_addr.clone(),
            region: r.region.clone(),
            headers: r.headers.clone(),
        }
    }
}

impl From<WireAuthRequest> for AuthRequest {
    fn from(r: WireAuthRequest) -> Self {
        Self {
            token: r.token,
            room: r.room,
            client_addr: r.client_addr,
            region: r.region,
            headers: r.headers,
        }
    }
}

/// The auth node's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireAuthReply {
    Ok {
        identity: String,
        name: String,
        metadata: String,
        room: String,
        grants: u8,
        expires_at_ms: u64,
    },
    /// The token was refused: the variant name and its payload.
    Refused { kind: String, detail: String },
    /// The auth component failed.
    Failed,
}

impl WireAuthReply {
    pub fn from_result(r: &Result<Identity, AuthError>) -> Self {
        match r {
            Ok(i) => WireAuthReply::Ok {
                identity: i.identity.clone(),
                name: i.name.clone(),
                metadata: i.metadata.clone(),
                room: i.room.clone(),
                grants: roomlet_rooms::grants_bits(i.grants),
                expires_at_ms: i.expires_at_ms,
            },
            Err(e) => {
                let (kind, detail) = match e {
                    AuthError::Malformed => ("malformed", String::new()),
                    AuthError::BadSignature => ("bad-signature", String::new()),
                    AuthError::BadAlgorithm => ("bad-algorithm", String::new()),
                    AuthError::UnknownKey => ("unknown-key", String::new()),
                    AuthError::Expired => ("expired", String::new()),
                    AuthError::NotYetValid => ("not-yet-valid", String::new()),
                    AuthError::WrongRoom => ("wrong-room", String::new()),
                    AuthError::MissingGrant(g) => ("missing-grant", g.clone()),
                };
                WireAuthReply::Refused {
                    kind: kind.into(),
                    detail,
                }
            }
        }
    }

    /// The result, or `None` when the auth component failed.
    pub fn into_result(self) -> Option<Result<Identity, AuthError>> {
        match self {
            WireAuthReply::Ok {
                identity,
                name,
                metadata,
                room,
                grants,
                expires_at_ms,
            } => Some(Ok(Identity {
                identity,
                name,
                metadata,
                room,
                grants: roomlet_rooms::grants_from(grants),
                expires_at_ms,
            })),
            WireAuthReply::Refused { kind, detail } => Some(Err(match kind.as_str() {
                "bad-signature" => AuthError::BadSignature,
                "bad-algorithm" => AuthError::BadAlgorithm,
                "unknown-key" => AuthError::UnknownKey,
                "expired" => AuthError::Expired,
                "not-yet-valid" => AuthError::NotYetValid,
                "wrong-room" => AuthError::WrongRoom,
                "missing-grant" => AuthError::MissingGrant(detail),
                _ => AuthError::Malformed,
            })),
            WireAuthReply::Failed => None,
        }
    }
}

fn no_id(id: &FrameId) -> bool {
    *id == 0
}

fn observe_by_default() -> bool {
    true
}

/// A room's memory as its last home left it when draining, for the next.
#[derive(Debug, Serialize, Deserialize)]
pub struct HandOff {
    pub version: String,
    pub state: Vec<u8>,
    /// What the module's `on-create` asked (signals, messages): the next
    /// home restores instead of creating, so no `on-create` tells it.
    /// Absent from an older node's hand-off.
    #[serde(default)]
    pub observe: Option<(bool, bool)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed() -> IntCounterVec {
        roomlet_telemetry::Registry::unserved().counter_vec("t_total", "test", &["subject"])
    }

    /// A hand-off written before it carried the settings still restores
    /// the room's memory; the settings are then unknown, not `false`.
    #[test]
    fn an_older_hand_off_decodes_without_settings() {
        let old = rmp_serde::to_vec(&("v1", &[1u8, 2, 3][..])).expect("encodes");
        let h: HandOff = decode(&malformed(), "snapshot", &old).expect("decodes");
        assert_eq!(
            (h.version.as_str(), h.state.as_slice()),
            ("v1", &[1, 2, 3][..])
        );
        assert_eq!(h.observe, None);
        let new = rmp_serde::to_vec(&HandOff {
            observe: Some((false, true)),
            ..h
        })
        .expect("encodes");
        let h: HandOff = decode(&malformed(), "snapshot", &new).expect("decodes");
        assert_eq!(h.observe, Some((false, true)));
    }
}
