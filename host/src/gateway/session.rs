//! One WebSocket connection: before `join` it only authenticates; after,
//! it pumps frames between the socket and the peer's [`PeerState`].

use super::codec::{self, DecodeError, Encoding, kind_name};
use super::frames::{Inbound, ServerFrame, WirePeer};
use super::guard::{MAX_BAD_STREAK, Rate, RateLimit, check_stats};
use super::resume::PeerState;
use super::{AuthUnavailable, Gateway};
use crate::components::bindings::authenticator::{AuthError, AuthRequest};
use crate::components::bindings::relay_policy::{Frame, FrameKind, Verdict};
use crate::components::bindings::types::{Grants, Peer, RoomMessage, Signal, SignalKind, Target};
use crate::metrics;
use crate::rooms::{Delivery, JoinError, LeaveReason};
use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Instrument;

/// Close codes (docs/protocol.md).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Server error.
    pub const INTERNAL: u16 = 1011;
    /// Frame too large.
    pub const TOO_LARGE: u16 = 1009;
    /// Node full: try again later.
    pub const TRY_LATER: u16 = 1013;
    /// Authentication failed.
    pub const AUTH: u16 = 4001;
    /// Protocol violation.
    pub const PROTOCOL: u16 = 4002;
    /// Rate limited.
    pub const RATE: u16 = 4003;
    /// Kicked.
    pub const KICKED: u16 = 4004;
    /// Idle timeout.
    pub const IDLE: u16 = 4005;
    /// Draining: reconnect elsewhere.
    pub const DRAINING: u16 = 4006;
    /// Resume failed.
    pub const RESUME_FAILED: u16 = 4007;
    /// Room closed or not found.
    pub const ROOM_CLOSED: u16 = 4008;
    /// The room refused the join.
    pub const ROOM_REFUSED: u16 = 4009;
    /// The session was resumed on another connection.
    pub const RESUMED_ELSEWHERE: u16 = 4010;
}

/// Who is connecting.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Remote address.
    pub addr: String,
    /// Selected handshake headers, lower-case names.
    pub headers: Vec<(String, String)>,
}

/// A refusal that ends the connection (or not, when `close` is `None`).
struct Refusal {
    code: String,
    message: String,
    close: Option<u16>,
}

impl Refusal {
    fn new(code: impl Into<String>, message: impl Into<String>, close: Option<u16>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            close,
        }
    }
}

enum Incoming {
    Frame(Inbound),
    Refused(DecodeError),
    Close {
        code: u16,
        error: &'static str,
        message: String,
    },
    Gone,
}

/// The socket side of a session.
struct Conn<S> {
    ws: WebSocketStream<S>,
    encoding: Encoding,
    rate: RateLimit,
    bad_streak: u32,
    last_heard: Instant,
    max_frame: usize,
}

/// Counts a frame on its way out.
fn count_out(frame: &ServerFrame) {
    metrics::FRAMES_OUT.inc(&[frame.type_name()]);
    if let ServerFrame::Error { code, .. } = frame {
        metrics::ERRORS.inc(&[code]);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Sends a frame outside the numbered stream (no `seq`), flushed.
    async fn send(&mut self, frame: &ServerFrame) -> bool {
        count_out(frame);
        self.ws
            .send(codec::encode(self.encoding, None, frame))
            .await
            .is_ok()
    }

    /// Queues a frame outside the numbered stream (no `seq`).
    async fn feed(&mut self, frame: &ServerFrame) -> bool {
        count_out(frame);
        self.ws
            .feed(codec::encode(self.encoding, None, frame))
            .await
            .is_ok()
    }

    /// Numbers `frame` in the session's stream, remembers it for resume,
    /// and queues it (not flushed).
    async fn feed_numbered(
        &mut self,
        state: &mut PeerState,
        frame: &ServerFrame,
        keep: usize,
    ) -> bool {
        count_out(frame);
        let message = state.number(frame, keep);
        self.ws.feed(message).await.is_ok()
    }

    /// [`Conn::feed_numbered`], then flush.
    async fn send_numbered(
        &mut self,
        state: &mut PeerState,
        frame: &ServerFrame,
        keep: usize,
    ) -> bool {
        self.feed_numbered(state, frame, keep).await && self.ws.flush().await.is_ok()
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.chars().take(100).collect::<String>().into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
    }

    /// The next client frame. Reads only; never cancelled mid-write.
    async fn recv(&mut self) -> Incoming {
        loop {
            let msg = match self.ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(_)) | None => return Incoming::Gone,
            };
            let now = Instant::now();
            self.last_heard = now;
            // Borrowed: the frame is decoded straight from tungstenite's buffer.
            let (text, bytes): (Option<&str>, &[u8]) = match &msg {
                Message::Text(t) => (Some(t.as_str()), t.as_bytes()),
                Message::Binary(b) => (None, b),
                Message::Close(_) => return Incoming::Gone,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if bytes.len() > self.max_frame {
                return Incoming::Close {
                    code: close::TOO_LARGE,
                    error: "frame-too-large",
                    message: format!("frames are limited to {} bytes", self.max_frame),
                };
            }
            match self.rate.check(now.into_std()) {
                Rate::Ok => {}
                Rate::Refuse => {
                    return Incoming::Refused(DecodeError {
                        code: "rate-limited",
                        message: "too many frames per second; this one was dropped".into(),
                    });
                }
                Rate::Disconnect => {
                    return Incoming::Close {
                        code: close::RATE,
                        error: "rate-limited",
                        message: "over the frame rate limit for too long".into(),
                    };
                }
            }
            let decoded = match text {
                Some(text) => codec::decode_text(self.encoding, text),
                None => codec::decode(self.encoding, false, bytes),
            };
            return match decoded {
                Ok(f) => {
                    metrics::FRAMES_IN.inc(&[f.type_name()]);
                    self.bad_streak = 0;
                    Incoming::Frame(f)
                }
                Err(e) => {
                    self.bad_streak += 1;
                    if self.bad_streak >= MAX_BAD_STREAK {
                        Incoming::Close {
                            code: close::PROTOCOL,
                            error: e.code,
                            message: format!(
                                "{MAX_BAD_STREAK} bad frames in a row; last: {}",
                                e.message
                            ),
                        }
                    } else {
                        Incoming::Refused(e)
                    }
                }
            };
        }
    }
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
        let Some((conn, state, resumed)) =
            Box::pin(open_and_join(&gw, ws, encoding, client, open)).await
        else {
            return;
        };
        let span = tracing::Span::current();
        span.record("room", &*state.room.name().to_string());
        span.record("peer", state.peer.id.as_str());
        tracing::debug!(resumed, "session joined");
        // Boxed, as `pump` below: an idle session then holds only its
        // loop's state, not the largest state of every step before it.
        Box::pin(joined(&gw, conn, state, resumed)).await;
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
) -> Option<(Conn<S>, PeerState, bool)> {
    let l = &gw.limits;
    let mut conn = Conn {
        ws: *ws,
        encoding,
        rate: RateLimit::new(l.frames_per_second, l.frame_burst),
        bad_streak: 0,
        last_heard: Instant::now(),
        max_frame: l.max_frame_bytes,
    };
    if open > l.max_connections {
        conn.send(&ServerFrame::error(
            "node-full",
            "this node has no room for another connection",
        ))
        .await;
        conn.close(close::TRY_LATER, "node full").await;
        return None;
    }
    let (state, resumed) = before_join(gw, &mut conn, &client).await?;
    Some((conn, state, resumed))
}

/// Waits for `join` or `resume`.
async fn before_join<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    conn: &mut Conn<S>,
    client: &ClientInfo,
) -> Option<(PeerState, bool)> {
    let deadline = Instant::now() + Duration::from_millis(gw.limits.join_timeout_ms);
    loop {
        let incoming = tokio::select! {
            i = conn.recv() => i,
            _ = tokio::time::sleep_until(deadline) => {
                conn.send(&ServerFrame::error("join-timeout", "no join within the time allowed")).await;
                conn.close(close::IDLE, "join timeout").await;
                return None;
            }
        };
        let attempt = match incoming {
            Incoming::Frame(Inbound::Join { room, token }) => {
                join(gw, room, token, client, conn.encoding)
                    .await
                    .map(|s| (s, false))
            }
            Incoming::Frame(Inbound::Resume {
                resume_token,
                last_seq,
            }) => resume(gw, &resume_token, last_seq, conn.encoding)
                .await
                .map(|s| (s, true)),
            Incoming::Frame(Inbound::Ping { ts }) => {
                conn.send(&ServerFrame::Pong { ts }).await;
                continue;
            }
            Incoming::Frame(_) => Err(Refusal::new(
                "not-joined",
                "send join (or resume) first",
                None,
            )),
            Incoming::Refused(e) => Err(Refusal::new(e.code, e.message, None)),
            Incoming::Close {
                code,
                error,
                message,
            } => Err(Refusal::new(error, message, Some(code))),
            Incoming::Gone => return None,
        };
        match attempt {
            Ok(ok) => return Some(ok),
            Err(r) => {
                conn.send(&ServerFrame::error(&r.code, &r.message)).await;
                if let Some(code) = r.close {
                    conn.close(code, &r.code).await;
                    return None;
                }
            }
        }
    }
}

fn auth_error(e: &AuthError) -> Refusal {
    let (code, message) = match e {
        AuthError::Malformed => (
            "token-malformed",
            "the token is not a well-formed JWT".to_owned(),
        ),
        AuthError::BadSignature => (
            "token-bad-signature",
            "the token's signature does not verify".to_owned(),
        ),
        AuthError::BadAlgorithm => (
            "token-bad-algorithm",
            "tokens must be signed with HS256".to_owned(),
        ),
        AuthError::UnknownKey => (
            "token-unknown-key",
            "the token's API key is not configured here".to_owned(),
        ),
        AuthError::Expired => ("token-expired", "the token has expired".to_owned()),
        AuthError::NotYetValid => (
            "token-not-yet-valid",
            "the token is not valid yet".to_owned(),
        ),
        AuthError::WrongRoom => (
            "token-wrong-room",
            "the token is for another room".to_owned(),
        ),
        AuthError::MissingGrant(g) => (
            "token-missing-grant",
            format!("the token lacks the {g} grant"),
        ),
    };
    Refusal::new(code, message, Some(close::AUTH))
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
) -> Result<PeerState, Refusal> {
    let started = std::time::Instant::now();
    let r = join_inner(gw, room, token, client, encoding).await;
    if r.is_ok() {
        metrics::JOIN_SECONDS.observe(&[], started.elapsed().as_secs_f64());
    }
    r
}

async fn join_inner(
    gw: &Gateway,
    room: String,
    token: String,
    client: &ClientInfo,
    encoding: Encoding,
) -> Result<PeerState, Refusal> {
    if gw.is_draining() {
        return Err(Refusal::new(
            "draining",
            "this node is draining; connect to another",
            Some(close::DRAINING),
        ));
    }
    if !valid_room_name(&room) {
        return Err(Refusal::new(
            "bad-frame",
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
            metrics::AUTH_FAILURES.inc(&[&refusal.code]);
            return Err(refusal);
        }
        Err(AuthUnavailable::NoAnswer(e)) => {
            tracing::warn!(error = %e, "no auth node answered");
            return Err(Refusal::new(
                "unavailable",
                "no auth node answered; try again shortly",
                Some(close::TRY_LATER),
            ));
        }
        Err(AuthUnavailable::Failed(e)) => {
            tracing::warn!(error = %e, "auth component failed");
            return Err(Refusal::new(
                "internal",
                "authentication is unavailable",
                Some(close::INTERNAL),
            ));
        }
    };
    if !identity.grants.contains(Grants::JOIN) {
        return Err(auth_error(&AuthError::MissingGrant("roomJoin".into())));
    }
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
    let (tx, inbox) = crate::rooms::outbox();
    let may_create = peer.grants.contains(Grants::ROOM_CREATE);
    let (handle, joined) = gw
        .join_room(&room, peer.clone(), tx, may_create)
        .await
        .map_err(|e| {
            let close = match &e {
                JoinError::Rejected(_) => close::ROOM_REFUSED,
                JoinError::RoomNotFound => close::ROOM_CLOSED,
                JoinError::NodeFull | JoinError::Unavailable(_) => close::TRY_LATER,
                JoinError::Module(_) => close::INTERNAL,
            };
            let message = match &e {
                JoinError::Rejected(r) => r.reason.clone(),
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
            "unavailable",
            "this node cannot record the join right now (its event log is failing); try again later or elsewhere",
            Some(close::TRY_LATER),
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
        trimmed_before: 0,
    };
    let frame = ServerFrame::Joined {
        peer_id: state.peer.id.clone(),
        room,
        peers: joined.peers.iter().map(|p| WirePeer::from(&**p)).collect(),
        ice_servers: gw.ice_servers_for(&state.peer.identity),
        resume_token: state.resume_token.clone(),
        region: gw.region.clone(),
        regions: gw.regions.clone(),
        metadata: joined.metadata,
        resumed: false,
    };
    state.number(&frame, gw.limits.resume_buffer);
    Ok(state)
}

async fn resume(
    gw: &Gateway,
    token: &str,
    last_seq: u64,
    encoding: Encoding,
) -> Result<PeerState, Refusal> {
    let r = resume_inner(gw, token, last_seq, encoding).await;
    metrics::RESUMES.inc(&[if r.is_ok() { "ok" } else { "failed" }]);
    r
}

async fn resume_inner(
    gw: &Gateway,
    token: &str,
    last_seq: u64,
    encoding: Encoding,
) -> Result<PeerState, Refusal> {
    let failed = |m: &str| Refusal::new("resume-failed", m, Some(close::RESUME_FAILED));
    let Some(mut state) = gw.resumable.take(token).await else {
        // Issued by another gateway (the load balancer sent the client
        // elsewhere): that one ends the session it holds.
        if let Some(here) = gw.topology().token_suffix()
            && let Some((_, node)) = token.rsplit_once('.')
            && node != here
        {
            gw.topology().resumed_elsewhere(token).await;
        }
        return Err(failed("unknown or expired resume token"));
    };
    if state.room.shared().is_closed() {
        return Err(failed("the room has closed"));
    }
    let refused = if state.encoding != encoding {
        // The frames to replay are kept encoded.
        Some("resume with the subprotocol the session started with")
    } else if !state.rewind(last_seq) {
        Some("lastSeq is ahead of the server or older than the resume buffer")
    } else {
        None
    };
    if let Some(reason) = refused {
        state.room.leave(&state.peer.id, LeaveReason::Timeout).await;
        return Err(failed(reason));
    }
    Ok(state)
}

/// How a joined session ended.
enum End {
    /// For good: the peer left, was kicked, or the room closed.
    Over,
    /// The socket is gone; the session may be resumed.
    Dropped,
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
    resumed: bool,
) -> impl Future<Output = ()> {
    async move {
        let (takeover_tx, mut takeover) = tokio::sync::oneshot::channel();
        gw.resumable.live(&state.resume_token, takeover_tx);
        // Boxed, as `pump` below: the opening frames' state would otherwise
        // size this future, which lives as long as the session.
        let ok = Box::pin(open_stream(gw, &mut conn, &state, resumed)).await;
        let end = if ok {
            Box::pin(pump(gw, &mut conn, &mut state, &mut takeover)).await
        } else {
            Some(End::Dropped)
        };
        match end {
            None => {} // handed over to another connection
            Some(End::Over) => gw.resumable.remove(&state.resume_token),
            Some(End::Dropped) => {
                // A takeover may have raced with the drop: honour it.
                if let Ok(reply) = takeover.try_recv() {
                    let _ = reply.send(state);
                    return;
                }
                gw.resumable
                    .park(state, Duration::from_millis(gw.limits.resume_grace_ms));
            }
        }
    }
}

/// Sends what opens the numbered stream: on a resume a `joined` frame with
/// `resumed`, then every frame not yet acked (a fresh join's `joined` is
/// unacked seq 1). `false` when the socket failed.
async fn open_stream<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    conn: &mut Conn<S>,
    state: &PeerState,
    resumed: bool,
) -> bool {
    if resumed {
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
        };
        if !conn.feed(&frame).await {
            return false;
        }
        tracing::debug!(replay = state.unacked.len(), "session resumed");
    }
    for u in &state.unacked {
        metrics::FRAMES_OUT.inc(&[u.kind]);
        if conn.ws.feed(u.message.clone()).await.is_err() {
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
    takeover: &mut tokio::sync::oneshot::Receiver<tokio::sync::oneshot::Sender<PeerState>>,
) -> Option<End> {
    let mut ping = tokio::time::interval(Duration::from_millis(gw.limits.ping_interval_ms));
    ping.tick().await;
    let idle = Duration::from_millis(gw.limits.idle_timeout_ms);
    let keep = gw.limits.resume_buffer;
    let mut drain = gw.drain_signal();
    // Both live across iterations: re-creating them on every frame cost a
    // timer-wheel insert and removal, and a waiter registration, per wake.
    let mut drained = std::pin::pin!(async move {
        drain
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| v.clone())
            .flatten()
    });
    // Armed for the first deadline and moved forward only when it fires:
    // a frame just moves `last_heard`.
    let mut idle_timer = std::pin::pin!(tokio::time::sleep_until(conn.last_heard + idle));
    // The takeover sender lives in the resumable table until a resume
    // takes it; dropped unused, it resolves once and is not polled again.
    let mut takeover_open = true;
    loop {
        tokio::select! {
            biased;
            req = &mut *takeover, if takeover_open => {
                takeover_open = false;
                if let Ok(reply) = req {
                    conn.close(close::RESUMED_ELSEWHERE, "resumed on another connection").await;
                    let taken = std::mem::replace(state, placeholder(state));
                    let _ = reply.send(taken);
                    return None;
                }
            }
            d = state.inbox.recv() => {
                let Some(d) = d else {
                    conn.close(close::ROOM_CLOSED, "room closed").await;
                    return Some(End::Over);
                };
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
                if conn.ws.flush().await.is_err() {
                    return Some(End::Dropped);
                }
            }
            incoming = conn.recv() => {
                // Boxed: `handle` may await component calls, whose futures
                // are large; inline, they would size every idle session.
                if let Some(end) = Box::pin(on_incoming(gw, conn, state, incoming, keep)).await {
                    return Some(end);
                }
            }
            // Last: frames the client already sent are handled first.
            url = &mut drained => {
                let frame = ServerFrame::Reconnect { reason: "draining".into(), url };
                conn.send_numbered(state, &frame, keep).await;
                conn.close(close::DRAINING, "draining").await;
                Box::pin(finish_reading(gw, conn, state)).await;
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
                conn.close(close::IDLE, "idle timeout").await;
                return Some(End::Dropped);
            }
        }
    }
}

/// How long a draining session goes on reading after its close: until the
/// client answers it, at most this.
const DRAIN_READ: Duration = Duration::from_secs(2);

/// After `reconnect` and the close: hands on what the client sent before it
/// saw them, then leaves the room after those frames. `recv` being pending
/// when the drain fired said only that tokio had not seen more bytes yet,
/// not that the client had sent none (tests/distributed.rs lost 49 of 50
/// messages sent just before a drain, about one run in eight). Nothing can
/// be answered any more: frames are handled, replies dropped.
async fn finish_reading<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    conn: &mut Conn<S>,
    state: &mut PeerState,
) {
    let deadline = Instant::now() + DRAIN_READ;
    loop {
        let incoming = tokio::select! {
            i = conn.recv() => i,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match incoming {
            Incoming::Frame(f) => {
                if let Handled::Left = handle(gw, state, f).await {
                    return;
                }
            }
            Incoming::Refused(_) => {}
            Incoming::Close { .. } | Incoming::Gone => break,
        }
    }
    state.room.leave(&state.peer.id, LeaveReason::Left).await;
}

/// One client frame of a joined session. `Some` ends the session.
async fn on_incoming<S: AsyncRead + AsyncWrite + Unpin>(
    gw: &Gateway,
    conn: &mut Conn<S>,
    state: &mut PeerState,
    incoming: Incoming,
    keep: usize,
) -> Option<End> {
    let reply = match incoming {
        Incoming::Frame(f) => match handle(gw, state, f).await {
            Handled::Done => None,
            Handled::Reply(r) => Some(r),
            Handled::Left => {
                conn.close(close::NORMAL, "left").await;
                return Some(End::Over);
            }
            Handled::Pong(ts) => {
                if !conn.send(&ServerFrame::Pong { ts }).await {
                    return Some(End::Dropped);
                }
                None
            }
        },
        Incoming::Refused(e) => Some(Refusal::new(e.code, e.message, None)),
        Incoming::Close {
            code,
            error,
            message,
        } => Some(Refusal::new(error, message, Some(code))),
        Incoming::Gone => return Some(End::Dropped),
    };
    if let Some(r) = reply {
        let frame = ServerFrame::error(r.code.clone(), r.message);
        let sent = conn.send_numbered(state, &frame, keep).await;
        if let Some(code) = r.close {
            conn.close(code, &r.code).await;
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
        inbox: crate::rooms::outbox().1,
        resume_token: state.resume_token.clone(),
        encoding: state.encoding,
        next_seq: state.next_seq,
        unacked: VecDeque::new(),
        trimmed_before: state.next_seq,
    }
}

/// Sends one room delivery (fed, not flushed). `Some` ends the session.
async fn deliver<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    state: &mut PeerState,
    d: Delivery,
    keep: usize,
) -> Option<End> {
    let (frame, close_with) = match d {
        Delivery::PeerJoined(p) => (
            ServerFrame::PeerJoined {
                peer: WirePeer::from(&*p),
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
        Delivery::Message { from, data } => (ServerFrame::Message { from, data }, None),
        Delivery::Signal {
            from,
            kind,
            payload,
        } => (
            ServerFrame::Signal {
                from,
                kind: kind_name(kind),
                payload,
            },
            None,
        ),
        Delivery::Error { code, message } => (
            ServerFrame::Error {
                code: code.into(),
                message: message.into(),
            },
            None,
        ),
        Delivery::Metadata(metadata) => (ServerFrame::RoomMetadata { metadata }, None),
        Delivery::Kicked { reason } => (
            ServerFrame::Kicked { reason },
            Some((close::KICKED, "kicked")),
        ),
        // The room left this node (its lease lapsed): join again, and
        // the room's new home takes the peer.
        Delivery::Moved => (
            ServerFrame::Reconnect {
                reason: "moved".into(),
                url: None,
            },
            Some((close::DRAINING, "room moved")),
        ),
        Delivery::Closed { reason } => (
            ServerFrame::error("room-closed", reason),
            Some((close::ROOM_CLOSED, "room closed")),
        ),
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

enum Handled {
    Done,
    Reply(Refusal),
    Pong(Option<f64>),
    Left,
}

fn refuse(code: &str, message: impl Into<String>) -> Handled {
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
        Ok(Verdict::Reject(r)) => Err(refuse(&r.code, r.reason)),
        Err(e) => {
            tracing::warn!(error = %e, "relay component failed");
            Err(refuse(
                "module-error",
                "the relay policy failed on this frame",
            ))
        }
    }
}

async fn handle(gw: &Gateway, state: &mut PeerState, frame: Inbound) -> Handled {
    let grants = state.peer.grants;
    match frame {
        Inbound::Join { .. } | Inbound::Resume { .. } => {
            refuse("already-joined", "this connection has already joined")
        }
        Inbound::Signal { to, kind, payload } => {
            if kind == SignalKind::Offer && !grants.contains(Grants::PUBLISH) {
                return refuse("forbidden", "sending offers needs the canPublish grant");
            }
            let Some((outbox, target_grants)) = state.room.shared().peer(&to) else {
                return refuse("unknown-peer", "no such peer in this room");
            };
            if kind == SignalKind::Offer && !target_grants.contains(Grants::SUBSCRIBE) {
                return refuse(
                    "forbidden",
                    "that peer may not receive offers (canSubscribe)",
                );
            }
            let payload = match relay(gw, state, FrameKind::Signal(kind), Some(&to), payload).await
            {
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
                });
            }
            Handled::Done
        }
        Inbound::Message { to, data } => {
            if !grants.contains(Grants::PUBLISH_DATA) {
                return refuse(
                    "forbidden",
                    "sending messages needs the canPublishData grant",
                );
            }
            let addressee = match &to {
                Some(to) => match state.room.shared().peer(to) {
                    Some((outbox, _)) => Some(outbox),
                    None => return refuse("unknown-peer", "no such peer in this room"),
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
            };
            match addressee {
                Some(outbox) => {
                    let _ = outbox.send(delivery);
                }
                None => state.room.shared().broadcast(&delivery, &state.peer.id),
            }
            Handled::Done
        }
        Inbound::Leave => {
            state.room.leave(&state.peer.id, LeaveReason::Left).await;
            Handled::Left
        }
        Inbound::Ping { ts } => Handled::Pong(ts),
        Inbound::Ack { seq } => {
            if state.ack(seq) {
                Handled::Done
            } else {
                refuse("bad-seq", "ack is ahead of the frames sent")
            }
        }
        Inbound::Stats(s) => match check_stats(&s) {
            Ok(()) => {
                record_stats(&s);
                Handled::Done
            }
            Err(m) => refuse("stats-invalid", m),
        },
        Inbound::Kick { peer, reason } => {
            if !grants.contains(Grants::ROOM_ADMIN) {
                return refuse("forbidden", "kicking needs the roomAdmin grant");
            }
            if state.room.shared().peer(&peer).is_none() {
                return refuse("unknown-peer", "no such peer in this room");
            }
            state.room.kick(&peer, &reason).await;
            Handled::Done
        }
        Inbound::RoomMetadata { metadata } => {
            if !grants.contains(Grants::ROOM_ADMIN) {
                return refuse(
                    "forbidden",
                    "setting room metadata needs the roomAdmin grant",
                );
            }
            state.room.set_metadata(metadata).await;
            Handled::Done
        }
    }
}

/// Aggregates a client's call-quality report.
fn record_stats(s: &super::frames::Stats) {
    let ms = |v: Option<f64>| v.map(|v| v / 1000.0);
    for (h, v) in [
        (&metrics::CALL_RTT, ms(s.rtt_ms)),
        (&metrics::CALL_JITTER, ms(s.jitter_ms)),
        (&metrics::CALL_LOSS, s.packet_loss),
        (&metrics::CALL_FPS, s.fps),
        (&metrics::CALL_HEIGHT, s.height),
        (&metrics::CALL_FREEZES, s.freeze_count),
        (&metrics::CALL_CONCEALED, s.concealed_samples),
    ] {
        if let Some(v) = v {
            h.observe(&[], v);
        }
    }
}
