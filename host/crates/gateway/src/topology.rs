//! Where rooms live, as a gateway sees it: the one seam between sessions
//! and the rest of the deployment.
//!
//! A gateway needs a few things from "where rooms live": to check a token
//! (here, or on an auth node), to join a room (in this process, or at its
//! home on another node), to tell another gateway that a session it held
//! resumed here, to flush what is on its way out, and whether it is ready.
//! [`Topology`] names them; [`Local`] is the all-in-one answer, and the
//! NATS one lives in the bus, which depends on this crate and never the
//! other way round. The choice is made once, at start.
//!
//! Those calls are off the per-frame path, so they sit behind `dyn` (a
//! boxed future per join costs nothing measurable). What a session sends
//! its room on every frame goes through [`RoomLink`], an enum over the
//! two kinds of room, so a relayed frame never allocates a future.

use crate::journal::{SessionImage, SessionKey};
use roomlet_protocol::{Media, MediaCredential};
use roomlet_rooms::{
    JoinError, Joined, LeaveReason, MemberImage, Outbox, RoomHandle, RoomShared, Rooms,
};
use roomlet_runtime::AuthFunction;
use roomlet_runtime::bindings::authenticator::{AuthError, AuthRequest};
use roomlet_runtime::bindings::media::MediaRequest;
use roomlet_runtime::bindings::types::{Identity, Peer, RoomMessage, Signal};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

pub use crate::BoxFuture;

/// A session taken over from another gateway
/// ([`Topology::take_session`]).
pub struct TakenSession {
    /// Its stream (with `gap` when the gateway that held it is gone).
    pub image: SessionImage,
    /// The peer as its room knows it.
    pub peer: MemberImage,
    /// The room, now delivering to this gateway.
    pub link: RoomLink,
}

/// Why a token could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum AuthUnavailable {
    /// No auth node answered over the bus (none alive, or none in time):
    /// nothing is wrong with the token or the code, so: try again later.
    #[error("no auth node answered: {0}")]
    NoAnswer(String),
    /// The auth function failed on this request, or answered garbage.
    #[error("{0}")]
    Failed(String),
}

/// What a token check gives: the outer error is the checker failing, the
/// inner one the token being refused.
pub type AuthOutcome = Result<Result<Identity, AuthError>, AuthUnavailable>;

/// What issuing media credentials gives, by provider, as the client gets
/// them: the outer error is the issuer failing, the inner one its refusal
/// (a message for the log).
pub type MediaOutcome = Result<Result<Media, String>, AuthUnavailable>;

/// What a gateway needs from wherever rooms live.
pub trait Topology: Send + Sync + 'static {
    /// Checks a token, with `local` (this node's auth function, current
    /// after any reload) or on an auth node elsewhere.
    fn authenticate<'a>(
        &'a self,
        local: Arc<AuthFunction>,
        request: &'a AuthRequest,
    ) -> BoxFuture<'a, AuthOutcome>;

    /// Issues a peer's media credentials, where tokens are checked.
    fn issue_media<'a>(
        &'a self,
        local: Arc<AuthFunction>,
        request: &'a MediaRequest,
    ) -> BoxFuture<'a, MediaOutcome>;

    /// Joins `peer` to `room`, whose deliveries for it go to `outbox`.
    fn join<'a>(
        &'a self,
        room: &'a str,
        peer: Peer,
        outbox: Outbox,
        may_create: bool,
    ) -> BoxFuture<'a, Result<(RoomLink, Joined), JoinError>>;

    /// A client presented a resume token this gateway did not issue: the
    /// gateway that did is told, so it ends the session it holds now
    /// instead of after its grace period. Nothing to do on one node.
    fn resumed_elsewhere<'a>(&'a self, token: &'a str) -> BoxFuture<'a, ()>;

    /// Takes over the session under `key` (a resume token's hash) that
    /// another gateway holds or held, its deliveries coming to `outbox`
    /// from now on: the room sees no leave and no join. `None` when no
    /// gateway holds or recorded it (and always on one node).
    fn take_session<'a>(
        &'a self,
        key: SessionKey,
        outbox: Outbox,
    ) -> BoxFuture<'a, Option<TakenSession>>;

    /// What a resume token issued here ends with, so another gateway knows
    /// whom to tell ([`Topology::resumed_elsewhere`]); `None` on one node.
    fn token_suffix(&self) -> Option<&str>;

    /// Waits until what sessions handed to rooms elsewhere has left this
    /// node (a drain loses nothing a client sent).
    fn flush(&self) -> BoxFuture<'_, ()>;

    /// Whether the rooms' side can serve (`Err` says why not).
    fn readiness(&self) -> Result<(), &'static str>;

    /// With a bus: whether it is connected with a valid lease (a metric).
    fn bus_ready(&self) -> Option<bool>;
}

/// Every function in one process: rooms are this node's room actors, and
/// tokens are checked by this node's auth function.
pub struct Local {
    rooms: Rooms,
}

impl Local {
    /// The topology of a node that is its own whole deployment.
    pub fn new(rooms: Rooms) -> Self {
        Self { rooms }
    }
}

impl Topology for Local {
    fn authenticate<'a>(
        &'a self,
        local: Arc<AuthFunction>,
        request: &'a AuthRequest,
    ) -> BoxFuture<'a, AuthOutcome> {
        Box::pin(authenticate_here(local, request))
    }

    fn issue_media<'a>(
        &'a self,
        local: Arc<AuthFunction>,
        request: &'a MediaRequest,
    ) -> BoxFuture<'a, MediaOutcome> {
        Box::pin(issue_media_here(local, request))
    }

    fn join<'a>(
        &'a self,
        room: &'a str,
        peer: Peer,
        outbox: Outbox,
        may_create: bool,
    ) -> BoxFuture<'a, Result<(RoomLink, Joined), JoinError>> {
        Box::pin(async move {
            let (handle, joined) = self.rooms.join(room, peer, outbox, may_create).await?;
            Ok((RoomLink::Local(handle), joined))
        })
    }

    fn resumed_elsewhere<'a>(&'a self, _token: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn take_session<'a>(
        &'a self,
        _key: SessionKey,
        _outbox: Outbox,
    ) -> BoxFuture<'a, Option<TakenSession>> {
        Box::pin(async { None })
    }

    fn token_suffix(&self) -> Option<&str> {
        None
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn readiness(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn bus_ready(&self) -> Option<bool> {
        None
    }
}

/// Checks a token with this node's auth function.
pub async fn authenticate_here(local: Arc<AuthFunction>, request: &AuthRequest) -> AuthOutcome {
    local
        .authenticate(request)
        .await
        .map_err(|e| AuthUnavailable::Failed(e.to_string()))
}

/// Issues media credentials with this node's auth function: the one place
/// the component's list becomes the client's map (an auth node answering
/// over the bus sends the map as it is).
pub async fn issue_media_here(local: Arc<AuthFunction>, request: &MediaRequest) -> MediaOutcome {
    let issued = local
        .issue_media(request)
        .await
        .map_err(|e| AuthUnavailable::Failed(e.to_string()))?;
    Ok(issued.map(|list| {
        list.into_iter()
            .map(|c| {
                let credential = MediaCredential {
                    url: c.url,
                    app_id: c.app_id,
                    channel: c.channel,
                    account: c.account,
                    token: c.token,
                    expires_at: c.expires_at_ms,
                };
                (c.provider, credential)
            })
            .collect()
    }))
}

/// A session's way into its room: a room actor in this process, or a room
/// homed on another node.
#[derive(Debug, Clone)]
pub enum RoomLink {
    /// A room actor on this node.
    Local(RoomHandle),
    /// A room homed elsewhere.
    Remote(RemoteRoom),
}

impl RoomLink {
    /// The room's name.
    pub fn name(&self) -> &Arc<str> {
        match self {
            RoomLink::Local(h) => h.name(),
            RoomLink::Remote(r) => &r.name,
        }
    }

    /// The room's members as this node sees them, for the frames that go
    /// peer to peer.
    pub fn shared(&self) -> &Arc<RoomShared> {
        match self {
            RoomLink::Local(h) => h.shared(),
            RoomLink::Remote(r) => &r.shared,
        }
    }

    /// The peer has left.
    pub async fn leave(&self, peer_id: &str, reason: LeaveReason) {
        match self {
            RoomLink::Local(h) => h.leave(peer_id, reason).await,
            RoomLink::Remote(r) => {
                r.send(RoomOp::Leave {
                    peer_id: peer_id.into(),
                    reason,
                })
                .await
            }
        }
    }

    /// The peer's session moved to gateway `to`, which has re-pointed it
    /// at itself: this node forgets it without a leave. A room actor here
    /// was re-pointed by that move already.
    pub async fn moved_away(&self, peer_id: &str, to: &str) {
        if let RoomLink::Remote(r) = self {
            r.send(RoomOp::MovedAway {
                peer_id: peer_id.into(),
                to: to.into(),
            })
            .await
        }
    }

    /// A room message the module observes.
    pub async fn message(&self, message: RoomMessage) {
        match self {
            RoomLink::Local(h) => h.message(message).await,
            RoomLink::Remote(r) => r.send(RoomOp::Message(message)).await,
        }
    }

    /// A signal the module observes.
    pub async fn signal(&self, signal: Signal) {
        match self {
            RoomLink::Local(h) => h.signal(signal).await,
            RoomLink::Remote(r) => r.send(RoomOp::Signal(signal)).await,
        }
    }

    /// A room admin removes a peer.
    pub async fn kick(&self, peer_id: &str, reason: &str) {
        match self {
            RoomLink::Local(h) => h.kick(peer_id, reason).await,
            RoomLink::Remote(r) => {
                r.send(RoomOp::Kick {
                    peer_id: peer_id.into(),
                    reason: reason.into(),
                })
                .await
            }
        }
    }

    /// A room admin sets the room's metadata.
    pub async fn set_metadata(&self, metadata: String) {
        match self {
            RoomLink::Local(h) => h.set_metadata(metadata).await,
            RoomLink::Remote(r) => r.send(RoomOp::SetMetadata(metadata)).await,
        }
    }
}

/// A room homed on another node, as the sessions of this gateway hold it:
/// a mirror of its members (local peers with their own outboxes, peers at
/// other gateways with outboxes that reach them there) and a queue of what
/// the sessions send the room, in order. The topology that made it drains
/// the queue towards the room's home.
#[derive(Debug, Clone)]
pub struct RemoteRoom {
    name: Arc<str>,
    shared: Arc<RoomShared>,
    ops: mpsc::Sender<Box<RoomOp>>,
}

impl RemoteRoom {
    /// A remote room whose members are mirrored in `shared` and whose
    /// operations go to `ops`.
    pub fn new(name: Arc<str>, shared: Arc<RoomShared>, ops: mpsc::Sender<Box<RoomOp>>) -> Self {
        Self { name, shared, ops }
    }

    async fn send(&self, op: RoomOp) {
        // Boxed, as a room's mailbox is: the queue's first block of slots
        // lives as long as the room does here.
        let _ = self.ops.send(Box::new(op)).await;
    }

    /// Resolves once every operation queued before it has been handed on.
    pub async fn flushed(&self) {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(Box::new(RoomOp::Barrier(tx))).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// What a session asks of a room homed elsewhere, in the order it asked.
#[derive(Debug)]
pub enum RoomOp {
    /// A peer left.
    Leave {
        /// Its id.
        peer_id: String,
        /// Why.
        reason: LeaveReason,
    },
    /// A peer's session moved to another gateway (no leave).
    MovedAway {
        /// Its id.
        peer_id: String,
        /// The gateway now holding it.
        to: String,
    },
    /// A room message the module observes.
    Message(RoomMessage),
    /// A signal the module observes.
    Signal(Signal),
    /// A room admin removes a peer.
    Kick {
        /// Whom.
        peer_id: String,
        /// Why.
        reason: String,
    },
    /// A room admin sets the room's metadata.
    SetMetadata(String),
    /// Answered once everything queued before it has been handed on.
    Barrier(oneshot::Sender<()>),
}
