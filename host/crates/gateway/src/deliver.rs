//! What a room sends a peer, as the frame its session writes.

use crate::config::Keep;
use crate::conn::{Conn, End};
use crate::resume::PeerState;
use crate::wire::{signal_kind, wire_peer};
use futures_util::SinkExt;
use roomlet_protocol::{CloseCode, ErrorCode, ErrorText, ServerFrame};
use roomlet_rooms::Delivery;
use tokio::io::{AsyncRead, AsyncWrite};

/// Sends one room delivery (fed, not flushed). `Some` ends the session.
pub(crate) async fn deliver<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    state: &mut PeerState,
    d: Delivery,
    keep: Keep,
) -> Option<End> {
    let Some((frame, close_with)) = frame_for(state, d) else {
        return None; // a copy the client already has
    };
    let sent = conn.feed_numbered(state, &frame, keep).await;
    if let Some((code, reason)) = close_with {
        let _ = conn.ws.flush().await;
        conn.close(code, reason).await;
        return Some(End::Over);
    }
    if !sent {
        return Some(End::Dropped);
    }
    None
}

/// [`frame_of`], or `None` for a signal or message the session has
/// already delivered (a sender's re-send: [`crate::frame_ids`]).
pub(crate) fn frame_for(
    state: &mut PeerState,
    d: Delivery,
) -> Option<(ServerFrame, Option<(CloseCode, &'static str)>)> {
    state.seen.first_time(&d).then(|| frame_of(d))
}

/// The frame a delivery becomes, and the close that follows it when the
/// delivery ends the session.
pub(crate) fn frame_of(d: Delivery) -> (ServerFrame, Option<(CloseCode, &'static str)>) {
    match d {
        Delivery::PeerJoined(p) => (
            ServerFrame::PeerJoined {
                peer: wire_peer(&p),
            },
            None,
        ),
        Delivery::PeerLeft { peer_id, reason } => (
            ServerFrame::PeerLeft {
                peer_id: peer_id.to_string(),
                reason: reason.as_str().into(),
            },
            None,
        ),
        Delivery::Message { from, data, id } => (ServerFrame::Message { from, data, id }, None),
        Delivery::Signal {
            from,
            kind,
            payload,
            id,
        } => (
            ServerFrame::Signal {
                from,
                kind: signal_kind(kind).name(),
                payload,
                id,
            },
            None,
        ),
        Delivery::Error { code, message } => (ServerFrame::error(code, message), None),
        Delivery::Rejected { code, message } => {
            (ServerFrame::error(ErrorText::Module(code), message), None)
        }
        Delivery::Metadata(metadata) => (ServerFrame::RoomMetadata { metadata }, None),
        Delivery::Kicked { reason } => (
            ServerFrame::Kicked { reason },
            Some((CloseCode::Kicked, "kicked")),
        ),
        // The room left this node (its lease lapsed): join again, and
        // the room's new home takes the peer.
        Delivery::Moved => (
            ServerFrame::Reconnect {
                reason: "moved".into(),
                url: None,
            },
            Some((CloseCode::Draining, "room moved")),
        ),
        Delivery::Closed { reason } => (
            ServerFrame::error(ErrorCode::RoomClosed, reason),
            Some((CloseCode::RoomClosed, "room closed")),
        ),
    }
}
