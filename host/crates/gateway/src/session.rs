//! One WebSocket connection: before `join` it only authenticates; after,
//! it pumps frames between the socket and the peer's [`PeerState`].

use crate::admission::{Opening, before_join};
use crate::config::Keep;
use crate::confirms::Confirms;
use crate::conn::{Conn, End, Incoming};
use crate::deliver::deliver;
use crate::guard::RateLimit;
use crate::inbound::{Handled, handle};
use crate::resume::PeerState;
use crate::{Drain, Gateway};
use futures_util::SinkExt;
use roomlet_protocol::{CloseCode, Encoding, ErrorCode, ServerFrame};
use roomlet_rooms::LeaveReason;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

/// Who is connecting.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Remote address.
    pub addr: String,
    /// Selected handshake headers, lower-case names.
    pub headers: Vec<(String, String)>,
}

/// Counts a connection for as long as it lives.
struct Counted<'a>(&'a Gateway);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if self.0.connections.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

/// Serves one upgraded WebSocket until it closes.
///
/// Not an `async fn`, for two reasons. A spawned future keeps its arguments
/// for the whole session: the socket is boxed here, before the future
/// exists, and lives only inside the boxed steps below. And an `async fn`
/// would hold its arguments twice, beside the body's moved copies. The
/// future spawned holds little more than pointers (an idle connection was
/// 1.2 KiB heavier with the socket inline, BENCHMARKS.md).
pub fn serve<S>(
    gw: Arc<Gateway>,
    ws: WebSocketStream<S>,
    encoding: Encoding,
    client: ClientInfo,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = Box::new(ws);
    let span = tracing::info_span!("session", client = %client.addr, room = tracing::field::Empty, peer = tracing::field::Empty);
    async move {
        let open = gw.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let _counted = Counted(&gw);
        // Boxed: joining awaits the auth and rooms components; that state
        // is gone once the session is joined.
        let Some((conn, state, opening)) =
            Box::pin(open_and_join(&gw, ws, encoding, client, open)).await
        else {
            return;
        };
        let resumed = matches!(opening, Opening::Resumed(_));
        let span = tracing::Span::current();
        span.record("room", &*state.room.name().to_string());
        span.record("peer", state.peer.id.as_str());
        tracing::debug!(resumed, "session joined");
        // Boxed, as `pump` below: an idle session then holds only its
        // loop's state, not the largest state of every step before it.
        Box::pin(joined(&gw, conn, state, Box::new(opening))).await;
    }
    .instrument(span)
}

/// The socket side of a new connection, up to its join; `None` when the
/// connection ends before it joins (node full, refused, gone).
async fn open_and_join<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    ws: Box<WebSocketStream<S>>,
    encoding: Encoding,
    client: ClientInfo,
    open: usize,
) -> Option<(Conn<S>, PeerState, Opening)> {
    let l = &gw.limits;
    let mut conn = Conn {
        ws: *ws,
        encoding,
        rate: RateLimit::new(l.frames_per_second, l.frame_burst),
        bad_streak: 0,
        last_heard: Instant::now(),
        max_frame: l.max_frame_bytes,
        metrics: gw.metrics.clone(),
    };
    if open > l.max_connections {
        conn.send(&ServerFrame::error(
            ErrorCode::NodeFull,
            "this node has no room for another connection",
        ))
        .await;
        conn.close(CloseCode::TryLater, "node full").await;
        Box::pin(conn.linger()).await;
        return None;
    }
    let Some((state, opening)) = before_join(gw, &mut conn, &client).await else {
        Box::pin(conn.linger()).await;
        return None;
    };
    Some((conn, state, opening))
}

/// A joined session, from its first frames until it ends or moves.
///
/// Not an `async fn`: that would keep `conn` and `state` as arguments beside
/// the body's moved copies, holding them twice for the session's life (as
/// `RoomActor::run` notes). Clippy's `async fn` would undo exactly that.
#[allow(clippy::manual_async_fn)]
fn joined<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    mut conn: Conn<S>,
    mut state: PeerState,
    // Boxed: the future keeps it for the session's life, though it is
    // used once at the start (8 bytes instead of some 40 per session).
    opening: Box<Opening>,
) -> impl Future<Output = ()> {
    async move {
        let (takeover_tx, mut takeover) = tokio::sync::oneshot::channel();
        gw.resumable.live(&state.resume_token, takeover_tx);
        // Boxed, as `pump` below: the opening frames' state would otherwise
        // size this future, which lives as long as the session.
        let ok = Box::pin(open_stream(gw, &mut conn, &state, *opening)).await;
        state.gap = false;
        let end = if ok {
            Box::pin(pump(gw, &mut conn, &mut state, &mut takeover)).await
        } else {
            Some(End::Dropped)
        };
        match end {
            None => {} // handed over to another connection
            Some(End::Over) => gw.resumable.remove(&state.resume_token),
            Some(End::Dropped) => match takeover.try_recv() {
                // A takeover may have raced with the drop: honour it.
                Ok(reply) => drop(reply.send(state)),
                Err(_) => gw
                    .resumable
                    .park(state, Duration::from_millis(gw.limits.resume_grace_ms)),
            },
        }
        // Last: the session is parked or handed on before the socket's
        // final reads, so a resume elsewhere does not wait on them.
        Box::pin(conn.linger()).await;
    }
}

/// Sends what opens the numbered stream: on a resume a `joined` frame with
/// `resumed`, then every frame not yet acked (a fresh join's `joined` is
/// unacked seq 1, sent as `opening` has it: with media credentials the
/// kept copy lacks). `false` when the socket failed.
async fn open_stream<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    conn: &mut Conn<S>,
    state: &PeerState,
    opening: Opening,
) -> bool {
    let mut first = None;
    match opening {
        Opening::Joined(f) => first = f,
        Opening::Resumed(media) => {
            let frame = ServerFrame::Joined {
                peer_id: state.peer.id.clone(),
                room: state.room.name().to_string(),
                peers: Vec::new(),
                ice_servers: gw.ice_servers_for(&state.peer.identity),
                resume_token: state.resume_token.clone(),
                region: gw.region.clone(),
                regions: gw.regions.clone(),
                metadata: String::new(),
                resumed: true,
                expires_at: state.expires_at_ms,
                // Or its queue overflowed while it was away (or too slow).
                gap: state.gap || state.inbox.take_overflow(),
                media,
            };
            if !conn.feed(&frame).await {
                return false;
            }
            tracing::debug!(replay = state.unacked.len(), "session resumed");
        }
    }
    for u in &state.unacked {
        gw.metrics.frames_out.inc(usize::from(u.kind));
        let message = match first.take() {
            Some(m) => m,
            None => u.message.clone(),
        };
        if conn.ws.feed(message).await.is_err() {
            return false;
        }
    }
    conn.ws.flush().await.is_ok()
}

/// The joined loop. `None` when the state was handed to another connection.
async fn pump<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    conn: &mut Conn<S>,
    state: &mut PeerState,
    takeover: &mut TakeoverRx,
) -> Option<End> {
    let mut ping = tokio::time::interval(Duration::from_millis(gw.limits.ping_interval_ms));
    ping.tick().await;
    let idle = Duration::from_millis(gw.limits.idle_timeout_ms);
    let keep = gw.limits.keep();
    let mut drain = gw.drain_signal();
    // Both live across iterations: re-creating them on every frame cost a
    // timer-wheel insert and removal, and a waiter registration, per wake.
    let mut drained = std::pin::pin!(async move {
        drain
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone())
    });
    // Armed for the first deadline and moved forward only when it fires:
    // a frame just moves `last_heard`.
    let mut idle_timer = std::pin::pin!(tokio::time::sleep_until(conn.last_heard + idle));
    // The takeover sender lives in the resumable table until a resume
    // takes it; dropped unused, it resolves once and is not polled again.
    let mut takeover_open = true;
    let mut confirms = Confirms::default();
    loop {
        tokio::select! {
            biased;
            req = &mut *takeover, if takeover_open => {
                takeover_open = false;
                if let Ok(reply) = req {
                    conn.close(CloseCode::ResumedElsewhere, "resumed on another connection").await;
                    let taken = std::mem::replace(state, placeholder(state));
                    let _ = reply.send(taken);
                    return None;
                }
            }
            d = state.inbox.recv() => {
                let Some(d) = d else {
                    conn.close(CloseCode::RoomClosed, "room closed").await;
                    return Some(End::Over);
                };
                // A client that stops reading stalls these writes; once its
                // queue overflows it has the idle timeout to read on.
                let overflow = state.inbox.overflow();
                let end = tokio::select! {
                    biased;
                    end = deliver_batch(conn, state, d, keep, &mut confirms) => end,
                    // The timer boxed: inline, it would size every session.
                    () = async { overflow.await; Box::pin(tokio::time::sleep(idle)).await } => Some(End::Dropped),
                };
                if end.is_some() {
                    return end;
                }
                if state.inbox.overflowed() {
                    let frame = ServerFrame::error(
                        ErrorCode::TooSlow,
                        "frames queued for this session passed its cap; resume to go on (with a gap)",
                    );
                    conn.send_numbered(state, &frame, keep).await;
                    conn.close(CloseCode::TooSlow, "too slow").await;
                    return Some(End::Dropped);
                }
            }
            incoming = conn.recv() => {
                // Boxed: `handle` may await component calls, whose futures
                // are large; inline, they would size every idle session.
                if let Some(end) = Box::pin(on_incoming(gw, conn, state, incoming, keep)).await {
                    return Some(end);
                }
                confirms.after_frame(state);
            }
            () = confirms.wait(), if confirms.armed() => {
                if !confirms.send(conn, state).await {
                    return Some(End::Dropped);
                }
            }
            // Last: frames the client already sent are handled first.
            drain = &mut drained => {
                let url = match drain {
                    Some(Drain::Restart) => {
                        return Box::pin(hand_over(gw, conn, state, keep)).await;
                    }
                    Some(Drain::Reconnect(url)) => url,
                    None => None,
                };
                let frame = ServerFrame::Reconnect { reason: "draining".into(), url };
                conn.send_numbered(state, &frame, keep).await;
                conn.close(CloseCode::Draining, "draining").await;
                let open = takeover_open.then_some(&mut *takeover);
                match Box::pin(finish_reading(gw, conn, state, open)).await {
                    LastReads::Left => return Some(End::Over),
                    LastReads::TakenOver => return None,
                    LastReads::Done => {}
                }
                // With a bus the client resumes at another gateway, which
                // takes the session from here: parked until then.
                if gw.topology().token_suffix().is_some() {
                    return Some(End::Dropped);
                }
                state.room.leave(&state.peer.id, LeaveReason::Left).await;
                return Some(End::Over);
            }
            _ = ping.tick() => {
                if conn.ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return Some(End::Dropped);
                }
            }
            _ = &mut idle_timer => {
                let idle_at = conn.last_heard + idle;
                if idle_at > Instant::now() {
                    idle_timer.as_mut().reset(idle_at);
                    continue;
                }
                conn.close(CloseCode::Idle, "idle timeout").await;
                return Some(End::Dropped);
            }
        }
    }
}

/// Sends `d` and up to 63 more queued deliveries, then flushes. `Some`
/// ends the session.
async fn deliver_batch<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    state: &mut PeerState,
    d: roomlet_rooms::Delivery,
    keep: Keep,
    confirms: &mut Confirms,
) -> Option<End> {
    let mut next = Some(d);
    let mut budget = 64;
    while let Some(d) = next.take() {
        if let Some(end) = deliver(conn, state, d, keep).await {
            return Some(end);
        }
        budget -= 1;
        if budget > 0 {
            next = state.inbox.try_recv();
        }
    }
    // A confirmation waiting for a write to ride with goes in this one.
    if !confirms.ride(conn, state).await || conn.ws.flush().await.is_err() {
        return Some(End::Dropped);
    }
    None
}

/// A restart of the all-in-one node: what the room sent is delivered (and
/// kept for a resume), then the session is handed to the gateway to be
/// written to disk, and the socket closes with 1012. The peer stays in its
/// room: the room is written to disk beside it. `None`: handed over.
async fn hand_over<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    conn: &mut Conn<S>,
    state: &mut PeerState,
    keep: Keep,
) -> Option<End> {
    while let Some(d) = state.inbox.try_recv() {
        if let Some(end) = deliver(conn, state, d, keep).await {
            return Some(end);
        }
    }
    let _ = conn.ws.flush().await;
    conn.close(CloseCode::ServiceRestart, "restarting").await;
    let taken = std::mem::replace(state, placeholder(state));
    gw.handed.lock().push(taken);
    None
}

/// Where a live session hears that a resume elsewhere takes it.
type TakeoverRx = tokio::sync::oneshot::Receiver<tokio::sync::oneshot::Sender<PeerState>>;

/// How a drained session's last reads ended.
enum LastReads {
    /// The client sent `leave`.
    Left,
    /// Another gateway took the session over (its client resumed there
    /// before this socket's close was answered).
    TakenOver,
    /// The client answered the close, or the time was up.
    Done,
}

/// After `reconnect` and the close: hands on what the client sent before it
/// saw them; a resume elsewhere meanwhile takes the session at once.
/// `recv` being pending when the drain fired said only that tokio had not seen more bytes yet,
/// not that the client had sent none (tests/distributed.rs lost 49 of 50
/// messages sent just before a drain, about one run in eight). Nothing can
/// be answered any more: frames are handled, replies dropped.
async fn finish_reading<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    conn: &mut Conn<S>,
    state: &mut PeerState,
    mut takeover: Option<&mut TakeoverRx>,
) -> LastReads {
    // Until the client answers the close, at most as long as any closing
    // connection reads on.
    let deadline = Instant::now() + crate::conn::LINGER;
    loop {
        let incoming = tokio::select! {
            i = conn.recv() => i,
            req = async {
                match takeover.as_mut() {
                    Some(t) => (&mut **t).await,
                    None => std::future::pending().await,
                }
            } => {
                takeover = None;
                if let Ok(reply) = req {
                    let taken = std::mem::replace(state, placeholder(state));
                    let _ = reply.send(taken);
                    return LastReads::TakenOver;
                }
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match incoming {
            Incoming::Frame(f) => {
                if let Handled::Left = handle(gw, state, f).await {
                    return LastReads::Left;
                }
            }
            Incoming::Refused(..) => {}
            Incoming::Close { .. } | Incoming::Violation(..) | Incoming::Gone => break,
        }
    }
    LastReads::Done
}

/// One client frame of a joined session. `Some` ends the session.
async fn on_incoming<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    conn: &mut Conn<S>,
    state: &mut PeerState,
    incoming: Incoming,
    keep: Keep,
) -> Option<End> {
    if let Incoming::Violation(code, reason) = incoming {
        conn.close(code, reason).await;
        return Some(End::Dropped);
    }
    let reply = match incoming.refusal() {
        Ok(f) => match handle(gw, state, f).await {
            Handled::Done => None,
            Handled::Reply(r) => Some(r),
            Handled::Send(frame) => {
                if !conn.send_numbered(state, &frame, keep).await {
                    return Some(End::Dropped);
                }
                None
            }
            Handled::Left => {
                conn.close(CloseCode::Normal, "left").await;
                return Some(End::Over);
            }
            Handled::Direct(frame) => {
                if !conn.send(&frame).await {
                    return Some(End::Dropped);
                }
                None
            }
        },
        Err(Some(r)) => {
            // Refused unread (rate-limited): taken all the same, so the
            // confirmations go past it; the refusal names it.
            state.ids.take(r.id);
            Some(r)
        }
        Err(None) => return Some(End::Dropped),
    };
    if let Some(r) = reply {
        let frame = ServerFrame::refusal(r.code.clone(), r.message, r.id);
        let sent = conn.send_numbered(state, &frame, keep).await;
        if let Some(code) = r.close {
            conn.close(code, r.code.as_str()).await;
            state.room.leave(&state.peer.id, LeaveReason::Left).await;
            return Some(End::Over);
        }
        if !sent {
            return Some(End::Dropped);
        }
    }
    None
}

/// An empty state left behind when the real one moves to another connection.
fn placeholder(state: &PeerState) -> PeerState {
    PeerState {
        peer: state.peer.clone(),
        sender: state.sender.clone(),
        room: state.room.clone(),
        inbox: roomlet_rooms::outbox().1,
        resume_token: state.resume_token.clone(),
        encoding: state.encoding,
        next_seq: state.next_seq,
        unacked: VecDeque::new(),
        unacked_bytes: 0,
        trimmed_before: state.next_seq,
        expires_at_ms: state.expires_at_ms,
        gap: false,
        media_at_s: state.media_at_s,
        ids: state.ids,
        seen: Default::default(),
    }
}
