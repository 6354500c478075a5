//! One client frame of a joined session: its grants checked, the relay
//! policy run, and the frame handed to its room or straight to a peer.

use crate::Gateway;
use crate::conn::Refusal;
use crate::guard::check_stats;
use crate::resume::PeerState;
use crate::wire::signal_kind_in;
use roomlet_protocol::{ErrorCode, ErrorText, FrameId, Inbound, ServerFrame};
use roomlet_rooms::{Delivery, LeaveReason};
use roomlet_runtime::bindings::authenticator::AuthRequest;
use roomlet_runtime::bindings::media::MediaCause;
use roomlet_runtime::bindings::relay_policy::{Frame, FrameKind, Verdict};
use roomlet_runtime::bindings::types::{Grants, RoomMessage, Signal, SignalKind, Target};

/// What handling a client frame asks of the session.
pub(crate) enum Handled {
    Done,
    Reply(Refusal),
    /// A stream frame to send (numbered, kept for resume).
    Send(ServerFrame),
    /// A reply outside the numbered stream, never kept for a replay
    /// (`pong`, `media-token`).
    Direct(ServerFrame),
    Left,
}

fn refuse(code: impl Into<ErrorText>, message: impl Into<String>) -> Handled {
    Handled::Reply(Refusal::new(code, message, None))
}

/// Runs the relay policy; the payload to deliver, or the refusal.
async fn relay(
    gw: &Gateway,
    state: &PeerState,
    kind: FrameKind,
    to: Option<&str>,
    payload: String,
) -> Result<String, Handled> {
    let frame = Frame {
        kind,
        room: state.room.name(),
        sender: &state.peer.id,
        to,
        payload: &payload,
    };
    match gw.relay().check(frame).await {
        Ok(Verdict::Forward) => Ok(payload),
        Ok(Verdict::Rewrite(p)) => Ok(p),
        Ok(Verdict::Reject(r)) => Err(refuse(ErrorText::Module(r.code.into()), r.reason)),
        Err(e) => {
            tracing::warn!(error = %e, "relay component failed");
            Err(refuse(
                ErrorCode::ModuleError,
                "the relay policy failed on this frame",
            ))
        }
    }
}

pub(crate) async fn handle(gw: &Gateway, state: &mut PeerState, frame: Inbound) -> Handled {
    let grants = state.peer.grants;
    match frame {
        Inbound::Join { .. } | Inbound::Resume { .. } => refuse(
            ErrorCode::AlreadyJoined,
            "this connection has already joined",
        ),
        Inbound::Signal {
            to,
            kind,
            payload,
            id,
        } => {
            if !state.ids.take(id) {
                return Handled::Done; // a re-send: handled already
            }
            naming(id, signal(gw, state, to, kind, payload, id).await)
        }
        Inbound::Message { to, data, id } => {
            if !state.ids.take(id) {
                return Handled::Done;
            }
            naming(id, message(gw, state, to, data, id).await)
        }
        Inbound::Leave => {
            state.room.leave(&state.peer.id, LeaveReason::Left).await;
            Handled::Left
        }
        Inbound::Ping { ts } => Handled::Direct(ServerFrame::Pong { ts }),
        Inbound::Ack { seq } => {
            if state.ack(seq) {
                Handled::Done
            } else {
                refuse(ErrorCode::BadSeq, "ack is ahead of the frames sent")
            }
        }
        Inbound::Stats(s) => match check_stats(&s) {
            Ok(()) => {
                gw.metrics.call_quality(&s);
                Handled::Done
            }
            Err(m) => refuse(ErrorCode::StatsInvalid, m),
        },
        Inbound::Kick { peer, reason } => {
            if !grants.contains(Grants::ROOM_ADMIN) {
                return refuse(ErrorCode::Forbidden, "kicking needs the roomAdmin grant");
            }
            if state.room.shared().peer(&peer).is_none() {
                return refuse(ErrorCode::UnknownPeer, "no such peer in this room");
            }
            state.room.kick(&peer, &reason).await;
            Handled::Done
        }
        Inbound::RoomMetadata { metadata } => {
            if !grants.contains(Grants::ROOM_ADMIN) {
                return refuse(
                    ErrorCode::Forbidden,
                    "setting room metadata needs the roomAdmin grant",
                );
            }
            state.room.set_metadata(metadata).await;
            Handled::Done
        }
        Inbound::Refresh { token } => refresh(gw, state, token).await,
        // Boxed: a rare frame whose state (a request to the auth
        // function) would otherwise size every frame's handler future.
        Inbound::MediaToken => Box::pin(media_token(gw, state)).await,
    }
}

/// A refusal of the client frame `id` names it: final, the client need
/// not send it again.
fn naming(id: FrameId, h: Handled) -> Handled {
    match h {
        Handled::Reply(r) => Handled::Reply(r.naming(id)),
        h => h,
    }
}

async fn signal(
    gw: &Gateway,
    state: &mut PeerState,
    to: String,
    kind: roomlet_protocol::SignalKind,
    payload: String,
    id: FrameId,
) -> Handled {
    let grants = state.peer.grants;
    let kind = signal_kind_in(kind);
    if kind == SignalKind::Offer && !grants.contains(Grants::PUBLISH) {
        return refuse(
            ErrorCode::Forbidden,
            "sending offers needs the canPublish grant",
        );
    }
    let Some((outbox, target_grants)) = state.room.shared().peer(&to) else {
        return refuse(ErrorCode::UnknownPeer, "no such peer in this room");
    };
    if kind == SignalKind::Offer && !target_grants.contains(Grants::SUBSCRIBE) {
        return refuse(
            ErrorCode::Forbidden,
            "that peer may not receive offers (canSubscribe)",
        );
    }
    let payload = match relay(gw, state, FrameKind::Signal(kind), Some(&to), payload).await {
        Ok(p) => p,
        Err(h) => return h,
    };
    if state.room.shared().observe_signals() {
        state
            .room
            .signal(Signal {
                sender: state.peer.id.clone(),
                to,
                kind,
                payload,
            })
            .await;
    } else {
        let _ = outbox.send(Delivery::Signal {
            from: state.sender.clone(),
            kind,
            payload: payload.into(),
            id,
        });
    }
    Handled::Done
}

async fn message(
    gw: &Gateway,
    state: &mut PeerState,
    to: Option<String>,
    data: String,
    id: FrameId,
) -> Handled {
    let grants = state.peer.grants;
    if !grants.contains(Grants::PUBLISH_DATA) {
        return refuse(
            ErrorCode::Forbidden,
            "sending messages needs the canPublishData grant",
        );
    }
    let addressee = match &to {
        Some(to) => match state.room.shared().peer(to) {
            Some((outbox, _)) => Some(outbox),
            None => return refuse(ErrorCode::UnknownPeer, "no such peer in this room"),
        },
        None => None,
    };
    let data = match relay(gw, state, FrameKind::Message, to.as_deref(), data).await {
        Ok(d) => d,
        Err(h) => return h,
    };
    if state.room.shared().observe_messages() {
        state
            .room
            .message(RoomMessage {
                sender: state.peer.id.clone(),
                target: to.map(Target::Peer).unwrap_or(Target::Room),
                data,
            })
            .await;
        return Handled::Done;
    }
    let delivery = Delivery::Message {
        from: state.sender.clone(),
        data: data.into(),
        id,
    };
    match addressee {
        Some(outbox) => {
            let _ = outbox.send(delivery);
        }
        None => state.room.shared().broadcast(&delivery, &state.peer.id),
    }
    Handled::Done
}

/// `media-token`: fresh media credentials, until the session's access
/// token expires (`refresh` first, then ask again).
async fn media_token(gw: &Gateway, state: &mut PeerState) -> Handled {
    use crate::media::{self, MediaFailure};
    if state.expires_at_ms <= roomlet_runtime::clock::unix_millis() {
        return refuse(
            ErrorCode::TokenExpired,
            "the session's access token has expired: send refresh with a new one first",
        );
    }
    if !media::take_turn(state) {
        return refuse(
            ErrorCode::RateLimited,
            format!(
                "media-token at most once every {} seconds",
                media::MIN_INTERVAL_S
            ),
        );
    }
    match media::issue(gw, state, MediaCause::Refresh).await {
        Ok(media) => Handled::Direct(ServerFrame::MediaToken { media }),
        Err(MediaFailure::NotConfigured) => refuse(
            ErrorCode::MediaUnavailable,
            "this deployment issues no media credentials",
        ),
        Err(MediaFailure::Refused) => refuse(
            ErrorCode::MediaUnavailable,
            "the auth function issued no media credentials for this session",
        ),
        Err(MediaFailure::Unavailable) => refuse(
            ErrorCode::Unavailable,
            "media credentials cannot be issued right now; ask again shortly",
        ),
    }
}

/// `refresh`: a new token for the same identity and room. The session
/// keeps its grants (a token's grants are read at `join`); what changes is
/// the expiry `joined` reports and the token a fresh join would use. A
/// refused token leaves the session as it was.
async fn refresh(gw: &Gateway, state: &mut PeerState, token: String) -> Handled {
    let request = AuthRequest {
        token,
        room: state.room.name().to_string(),
        client_addr: String::new(),
        region: gw.region.clone(),
        headers: Vec::new(),
    };
    match gw.authenticate(&request).await {
        Ok(Ok(id)) if id.identity == state.peer.identity => {
            state.expires_at_ms = id.expires_at_ms;
            Handled::Send(ServerFrame::Refreshed {
                expires_at: id.expires_at_ms,
            })
        }
        Ok(Ok(_)) => refuse(
            ErrorCode::RefreshRefused,
            "the token is for another identity than this session's",
        ),
        Ok(Err(e)) => {
            let r = crate::admission::auth_error(&e);
            refuse(r.code, r.message)
        }
        Err(e) => {
            tracing::warn!(error = %e, "token refresh could not be checked");
            refuse(
                ErrorCode::Unavailable,
                "the token cannot be checked right now; send refresh again shortly",
            )
        }
    }
}
