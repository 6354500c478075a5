//! A connection's way in: `join` (a token checked, a room joined) or
//! `resume` (a dropped session taken over), and the refusals of both.

use crate::conn::{Conn, Incoming, Refusal};
use crate::resume::PeerState;
use crate::wire::wire_peer;
use crate::{AuthUnavailable, ClientInfo, Gateway};
use rand::RngCore;
use roomlet_protocol::{CloseCode, Encoding, ErrorCode, Inbound, Media, ServerFrame};
use roomlet_rooms::{JoinError, LeaveReason};
use roomlet_runtime::bindings::authenticator::{AuthError, AuthRequest};
use roomlet_runtime::bindings::media::MediaCause;
use roomlet_runtime::bindings::types::{Grants, Peer};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// How a session's stream opens, beside its state.
pub(crate) enum Opening {
    /// A fresh join: `joined` is the first frame kept for a replay; this
    /// is the same frame with the media credentials, for the wire only.
    Joined(Option<Message>),
    /// A resume, with the media credentials its `joined` carries.
    Resumed(Media),
}

/// Waits for `join` or `resume`.
pub(crate) async fn before_join<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    conn: &mut Conn<S>,
    client: &ClientInfo,
) -> Option<(PeerState, Opening)> {
    let deadline = Instant::now() + Duration::from_millis(gw.limits.join_timeout_ms);
    loop {
        let incoming = tokio::select! {
            i = conn.recv() => i,
            _ = tokio::time::sleep_until(deadline) => {
                conn.send(&ServerFrame::error(ErrorCode::JoinTimeout, "no join within the time allowed")).await;
                conn.close(CloseCode::Idle, "join timeout").await;
                return None;
            }
        };
        let attempt = match incoming {
            Incoming::Frame(Inbound::Join { room, token }) => {
                join(gw, room, token, client, conn.encoding)
                    .await
                    .map(|(s, first)| (s, Opening::Joined(first)))
            }
            Incoming::Frame(Inbound::Resume {
                resume_token,
                last_seq,
            }) => match resume(gw, &resume_token, last_seq, conn.encoding).await {
                Ok(s) => {
                    let media = crate::media::issue(gw, &s, MediaCause::Resume)
                        .await
                        .unwrap_or_default();
                    Ok((s, Opening::Resumed(media)))
                }
                Err(e) => Err(e),
            },
            Incoming::Frame(Inbound::Ping { ts }) => {
                conn.send(&ServerFrame::Pong { ts }).await;
                continue;
            }
            Incoming::Frame(_) => Err(Refusal::new(
                ErrorCode::NotJoined,
                "send join (or resume) first",
                None,
            )),
            Incoming::Refused(e, _) => Err(Refusal::new(e.code, e.message, None)),
            Incoming::Close {
                code,
                error,
                message,
            } => Err(Refusal::new(error, message, Some(code))),
            Incoming::Violation(code, reason) => {
                conn.close(code, reason).await;
                return None;
            }
            Incoming::Gone => return None,
        };
        match attempt {
            Ok(ok) => return Some(ok),
            Err(r) => {
                conn.send(&ServerFrame::error(r.code.clone(), &r.message))
                    .await;
                if let Some(code) = r.close {
                    conn.close(code, r.code.as_str()).await;
                    return None;
                }
            }
        }
    }
}

pub(crate) fn auth_error(e: &AuthError) -> Refusal {
    let (code, message) = match e {
        AuthError::Malformed => (
            ErrorCode::TokenMalformed,
            "the token is not a well-formed JWT".to_owned(),
        ),
        AuthError::BadSignature => (
            ErrorCode::TokenBadSignature,
            "the token's signature does not verify".to_owned(),
        ),
        AuthError::BadAlgorithm => (
            ErrorCode::TokenBadAlgorithm,
            "tokens must be signed with HS256".to_owned(),
        ),
        AuthError::UnknownKey => (
            ErrorCode::TokenUnknownKey,
            "the token's API key is not configured here".to_owned(),
        ),
        AuthError::Expired => (ErrorCode::TokenExpired, "the token has expired".to_owned()),
        AuthError::NotYetValid => (
            ErrorCode::TokenNotYetValid,
            "the token is not valid yet".to_owned(),
        ),
        AuthError::WrongRoom => (
            ErrorCode::TokenWrongRoom,
            "the token is for another room".to_owned(),
        ),
        AuthError::MissingGrant(g) => (
            ErrorCode::TokenMissingGrant,
            format!("the token lacks the {g} grant"),
        ),
    };
    Refusal::new(code, message, Some(CloseCode::Auth))
}

/// With a bus, the token names the gateway that holds the session, so a
/// client resuming at another one can have it ended there.
fn resume_token(gw: &Gateway) -> String {
    match gw.topology().token_suffix() {
        Some(node) => format!("{}.{node}", random_id("r-")),
        None => random_id("r-"),
    }
}

fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

fn valid_room_name(room: &str) -> bool {
    !room.is_empty() && room.len() <= 128 && !room.chars().any(char::is_control)
}

async fn join(
    gw: &Gateway,
    room: String,
    token: String,
    client: &ClientInfo,
    encoding: Encoding,
) -> Result<(PeerState, Option<Message>), Refusal> {
    let started = std::time::Instant::now();
    let r = join_inner(gw, room, token, client, encoding).await;
    if r.is_ok() {
        gw.metrics
            .join_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    r
}

async fn join_inner(
    gw: &Gateway,
    room: String,
    token: String,
    client: &ClientInfo,
    encoding: Encoding,
) -> Result<(PeerState, Option<Message>), Refusal> {
    if gw.is_draining() {
        return Err(Refusal::new(
            ErrorCode::Draining,
            "this node is draining; connect to another",
            Some(CloseCode::Draining),
        ));
    }
    if !valid_room_name(&room) {
        return Err(Refusal::new(
            ErrorCode::BadFrame,
            "room names are 1 to 128 characters, no control characters",
            None,
        ));
    }
    let request = AuthRequest {
        token,
        room: room.clone(),
        client_addr: client.addr.clone(),
        region: gw.region.clone(),
        headers: client.headers.clone(),
    };
    let identity = match gw.authenticate(&request).await {
        Ok(Ok(id)) => id,
        Ok(Err(e)) => {
            tracing::debug!(reason = ?e, "token refused");
            let refusal = auth_error(&e);
            gw.metrics
                .auth_failures
                .with_label_values(&[refusal.code.as_str()])
                .inc();
            return Err(refusal);
        }
        Err(AuthUnavailable::NoAnswer(e)) => {
            tracing::warn!(error = %e, "no auth node answered");
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                "no auth node answered; try again shortly",
                Some(CloseCode::TryLater),
            ));
        }
        Err(AuthUnavailable::Failed(e)) => {
            tracing::warn!(error = %e, "auth component failed");
            return Err(Refusal::new(
                ErrorCode::Internal,
                "authentication is unavailable",
                Some(CloseCode::InternalError),
            ));
        }
    };
    if !identity.grants.contains(Grants::JOIN) {
        return Err(auth_error(&AuthError::MissingGrant("roomJoin".into())));
    }
    let expires_at_ms = identity.expires_at_ms;
    let peer = Peer {
        id: random_id("p-"),
        identity: identity.identity,
        name: identity.name,
        metadata: identity.metadata,
        grants: identity.grants,
    };
    // The same user back without a resume (a page reload, or a resume
    // refused at another gateway): its dropped session makes way now
    // rather than after the grace period, in which it would be listed as
    // a second copy of the peer and fill a one-to-one room against this
    // join. Its leave is sent first: a room on this node handles it before
    // the join; one homed elsewhere gets it on another subject, most
    // likely first.
    for old in gw.resumable.take_parked_of(&room, &peer.identity) {
        tracing::info!(room = %room, peer = %old.peer.id, "the same identity joined again; its dropped session leaves");
        old.room.leave(&old.peer.id, LeaveReason::Timeout).await;
    }
    let (tx, inbox) = roomlet_rooms::outbox_capped(gw.limits.inbox_bytes);
    let may_create = peer.grants.contains(Grants::ROOM_CREATE);
    let (handle, joined) = gw
        .join_room(&room, peer.clone(), tx, may_create)
        .await
        .map_err(|e| {
            let close = match &e {
                JoinError::Rejected(_) | JoinError::Refused { .. } => CloseCode::RoomRefused,
                JoinError::RoomNotFound => CloseCode::RoomClosed,
                JoinError::NodeFull | JoinError::Unavailable(_) => CloseCode::TryLater,
                JoinError::Module(_) => CloseCode::InternalError,
            };
            let message = match &e {
                JoinError::Rejected(r) => r.reason.clone(),
                JoinError::Refused { reason, .. } => reason.clone(),
                JoinError::RoomNotFound => {
                    "the room does not exist and the token may not create it (roomCreate)".into()
                }
                other => other.to_string(),
            };
            Refusal::new(e.code(), message, Some(close))
        })?;
    // `joined` promises the join is on record (docs/events.md).
    if let Err(e) = joined.durable.wait().await {
        tracing::error!(error = %e, "join not recorded in the event log; refusing it");
        handle.leave(&peer.id, LeaveReason::Left).await;
        return Err(Refusal::new(
            ErrorCode::Unavailable,
            "this node cannot record the join right now (its event log is failing); try again later or elsewhere",
            Some(CloseCode::TryLater),
        ));
    }
    let mut state = PeerState {
        sender: peer.id.as_str().into(),
        peer: Arc::new(peer),
        room: handle,
        inbox,
        resume_token: resume_token(gw),
        encoding,
        next_seq: 1,
        unacked: VecDeque::new(),
        unacked_bytes: 0,
        trimmed_before: 0,
        expires_at_ms,
        gap: false,
        media_at_s: 0,
        ids: Default::default(),
        seen: Default::default(),
    };
    let media = crate::media::issue(gw, &state, MediaCause::Join)
        .await
        .unwrap_or_default();
    let mut frame = ServerFrame::Joined {
        peer_id: state.peer.id.clone(),
        room,
        peers: joined.peers.iter().map(|p| wire_peer(p)).collect(),
        ice_servers: gw.ice_servers_for(&state.peer.identity),
        resume_token: state.resume_token.clone(),
        region: gw.region.clone(),
        regions: gw.regions.clone(),
        metadata: joined.metadata,
        resumed: false,
        expires_at: state.expires_at_ms,
        gap: false,
        media: Media::new(),
    };
    let first = if media.is_empty() {
        state.number(&frame, gw.limits.keep());
        None
    } else {
        let kept = frame.clone();
        if let ServerFrame::Joined { media: m, .. } = &mut frame {
            *m = media;
        }
        Some(state.number_keeping(&frame, Some(&kept), gw.limits.keep()))
    };
    if let Some(journal) = gw.resumable.journal.get() {
        let record = crate::journal::SessionRecord {
            peer: (&*state.peer).into(),
            room: state.room.name().to_string(),
            msgpack: encoding == Encoding::Msgpack,
            expires_at_ms: state.expires_at_ms,
        };
        // Without its record the session still works; it just would not
        // outlive a crash of this process.
        if let Err(e) = journal
            .joined(crate::resume::key(&state.resume_token), record)
            .await
        {
            tracing::warn!(error = %e, "session record not written; this session will not survive a crash");
        }
    }
    Ok((state, first))
}

pub(crate) async fn resume(
    gw: &Gateway,
    token: &str,
    last_seq: u64,
    encoding: Encoding,
) -> Result<PeerState, Refusal> {
    let r = resume_inner(gw, token, last_seq, encoding).await;
    gw.metrics
        .resumes
        .with_label_values(&[if r.is_ok() { "ok" } else { "failed" }])
        .inc();
    r
}

async fn resume_inner(
    gw: &Gateway,
    token: &str,
    last_seq: u64,
    encoding: Encoding,
) -> Result<PeerState, Refusal> {
    let failed = |m: &str| Refusal::new(ErrorCode::ResumeFailed, m, Some(CloseCode::ResumeFailed));
    let mut state = match gw.resumable.take(token).await {
        Some(state) => state,
        None => {
            // Issued by another gateway (the load balancer sent the client
            // elsewhere, or that one drained or died): the session moves
            // here. Without a record of it (a gateway of an older version),
            // the one that issued it ends the session it holds.
            let Some(here) = gw.topology().token_suffix() else {
                return Err(failed("unknown or expired resume token"));
            };
            match crate::moves::take_elsewhere(gw, token).await {
                Some(state) => state,
                None => {
                    if let Some((_, node)) = token.rsplit_once('.')
                        && node != here
                    {
                        gw.topology().resumed_elsewhere(token).await;
                    }
                    return Err(failed("unknown or expired resume token"));
                }
            }
        }
    };
    // A session the last process on this data directory left is known
    // by its token's hash only.
    if state.resume_token.is_empty() {
        token.clone_into(&mut state.resume_token);
    }
    if state.room.shared().is_closed() {
        gw.resumable.ended(token);
        return Err(failed("the room has closed"));
    }
    let refused = if state.encoding != encoding {
        // The frames to replay are kept encoded.
        Some("resume with the subprotocol the session started with")
    } else if state.gap {
        // Its stream died with the last process: it goes on after
        // whatever the client saw, and `joined` says so.
        state.next_seq = last_seq + 1;
        state.trimmed_before = state.next_seq;
        state.unacked.clear();
        state.unacked_bytes = 0;
        None
    } else if !state.rewind(last_seq) {
        Some("lastSeq is ahead of the server or older than the resume buffer")
    } else {
        None
    };
    if let Some(reason) = refused {
        gw.resumable.ended(token);
        state.room.leave(&state.peer.id, LeaveReason::Timeout).await;
        return Err(failed(reason));
    }
    Ok(state)
}
