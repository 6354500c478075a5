//! The signaling gateway: WebSocket sessions speaking the client protocol
//! (docs/protocol.md). A session authenticates through the auth function,
//! joins a room actor, runs every `signal`/`message` through the relay
//! policy, delivers signals peer to peer, and survives a dropped socket
//! for a grace period (resume).

mod admission;
pub mod budget;
pub mod config;
mod confirms;
mod conn;
mod deliver;
mod frame_ids;
mod guard;
mod inbound;
pub mod journal;
mod media;
mod metrics;
mod moves;
mod restart;
mod resume;
mod session;
pub mod topology;
pub mod turn;
mod wire;

pub use journal::{FrameImage, SessionImage};
pub use metrics::GatewayMetrics;
pub use restart::NodeImage;
pub use roomlet_protocol::Encoding;
pub use session::{ClientInfo, serve};
pub use topology::{AuthUnavailable, Local, RemoteRoom, RoomLink, RoomOp, TakenSession, Topology};

use crate::config::{LimitsSection, TurnSection};
use arc_swap::ArcSwap;
use roomlet_protocol::{IceServer, RegionLink};
use roomlet_rooms::Rooms;
use roomlet_rooms::{JoinError, Joined, Outbox};
use roomlet_runtime::bindings::authenticator::{AuthError, AuthRequest};
use roomlet_runtime::bindings::types::{Identity, Peer};
use roomlet_runtime::secrets::Secret;
use roomlet_runtime::{AuthFunction, RelayFunction};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A future a [`Topology`] (or a [`journal::SessionJournal`]) returns.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a gateway tells and allows its clients.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Client limits.
    pub limits: LimitsSection,
    /// This node's region.
    pub region: String,
    /// Nearby regions for `joined`.
    pub regions: Vec<RegionLink>,
    /// Static ICE servers for `joined`.
    pub ice_servers: Vec<IceServer>,
    /// TURN with REST credentials.
    pub turn: Option<(TurnSection, Secret)>,
    /// Whether sessions get media-plane credentials from the auth function.
    pub media: bool,
}

/// What sessions share.
pub struct Gateway {
    /// The node's rooms.
    pub rooms: Rooms,
    /// Replaced whole by a reload; calls in flight keep the one they took.
    auth: ArcSwap<AuthFunction>,
    relay: ArcSwap<RelayFunction>,
    /// Client limits.
    pub limits: LimitsSection,
    /// This node's region.
    pub region: String,
    /// Nearby regions for `joined`.
    pub regions: Vec<RegionLink>,
    /// Static ICE servers for `joined`.
    pub ice_servers: Vec<IceServer>,
    /// TURN with REST credentials.
    pub turn: Option<(TurnSection, Secret)>,
    /// Whether sessions get media-plane credentials ([`Settings::media`]).
    pub(crate) media: bool,
    connections: AtomicUsize,
    /// Woken when the last connection closes: what a drain waits for.
    all_closed: tokio::sync::Notify,
    draining: AtomicBool,
    resumable: Arc<resume::Resumable>,
    /// Where rooms live: this process, or homes across the bus.
    topology: Arc<dyn Topology>,
    /// What sessions count.
    pub(crate) metrics: Arc<GatewayMetrics>,
    /// Tells every session to move elsewhere, or to hand itself over for
    /// a restart.
    drain: tokio::sync::watch::Sender<Option<Drain>>,
    /// Sessions handed over for a restart ([`Drain::Restart`]).
    handed: parking_lot::Mutex<Vec<resume::PeerState>>,
    /// Bytes of client frames not yet complete, node-wide: wrap each
    /// socket in [`budget::Budgeted`] with it.
    pub read_budget: Arc<budget::ReadBudget>,
}

/// How sessions leave a node that stops.
#[derive(Debug, Clone)]
pub(crate) enum Drain {
    /// Follow a `reconnect` frame (to the URL, or anywhere).
    Reconnect(Option<String>),
    /// The all-in-one node restarts on the same data directory: hand the
    /// session over to be written to disk, close with 1012.
    Restart,
}

impl Gateway {
    /// A gateway over these functions and settings, reaching rooms
    /// through `topology`, counting in `metrics`.
    pub fn new(
        topology: Arc<dyn Topology>,
        rooms: Rooms,
        functions: (Arc<AuthFunction>, Arc<RelayFunction>),
        settings: Settings,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        let (auth, relay) = functions;
        Self {
            rooms,
            auth: ArcSwap::new(auth),
            relay: ArcSwap::new(relay),
            read_budget: budget::ReadBudget::new(settings.limits.unfinished_frame_bytes),
            limits: settings.limits,
            region: settings.region,
            regions: settings.regions,
            ice_servers: settings.ice_servers,
            turn: settings.turn,
            media: settings.media,
            metrics,
            connections: AtomicUsize::new(0),
            all_closed: tokio::sync::Notify::new(),
            draining: AtomicBool::new(false),
            resumable: Arc::default(),
            topology,
            drain: tokio::sync::watch::channel(None).0,
            handed: parking_lot::Mutex::default(),
        }
    }

    /// Ends the session a client left here to resume at another gateway
    /// (whose resume failed: the session state is here). Its peer leaves
    /// now, as when a resume fails here, not after the grace period.
    pub async fn end_resumed_elsewhere(&self, token: &str) {
        if let Some(state) = self.resumable.take(token).await {
            tracing::info!(room = %state.room.name(), peer = %state.peer.id, "the client resumed at another gateway; the session it left ends");
            state
                .room
                .leave(&state.peer.id, roomlet_rooms::LeaveReason::Timeout)
                .await;
        }
    }

    /// Ends peer `peer`'s session in `room` if its socket is gone, for the
    /// room's home, which is joining the same identity from another
    /// gateway (the bus's reap request). Its leave goes to the home
    /// too; the home leaves the peer itself on a yes, before the join, and
    /// this leave then finds it gone.
    pub async fn reap_parked(&self, room: &str, identity: &str, peer: &str) -> bool {
        let Some(state) = self.resumable.take_parked_peer(room, identity, peer) else {
            return false;
        };
        tracing::info!(room = %room, peer = %peer, "the same identity joined at another gateway; its dropped session leaves");
        state
            .room
            .leave(&state.peer.id, roomlet_rooms::LeaveReason::Timeout)
            .await;
        true
    }

    /// Verifies a token here or on an auth node. The outer error is the
    /// auth function (or the bus) failing.
    pub async fn authenticate(
        &self,
        request: &AuthRequest,
    ) -> Result<Result<Identity, AuthError>, AuthUnavailable> {
        self.topology.authenticate(self.auth(), request).await
    }

    /// Joins a room here or wherever its home is.
    pub async fn join_room(
        &self,
        room: &str,
        peer: Peer,
        outbox: Outbox,
        may_create: bool,
    ) -> Result<(RoomLink, Joined), JoinError> {
        self.topology.join(room, peer, outbox, may_create).await
    }

    /// Where rooms live.
    pub fn topology(&self) -> &dyn Topology {
        &*self.topology
    }

    /// Whether the node can serve: not draining, and its bus (if any)
    /// connected with a valid lease.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.is_draining() {
            return Err("draining");
        }
        self.topology.readiness()
    }

    /// Waits until frames for rooms homed elsewhere have left this node.
    pub async fn flush(&self) {
        self.topology.flush().await;
    }

    /// Keeps a record of every joined session in `journal` from now on
    /// (a node that is its whole deployment; see [`journal`]).
    pub fn set_journal(&self, journal: Arc<dyn journal::SessionJournal>) {
        let _ = self.resumable.journal.set(journal);
    }

    /// Tells every session to reconnect (to `url`, or anywhere).
    pub fn send_reconnect(&self, url: Option<String>) {
        self.set_draining();
        let _ = self.drain.send(Some(Drain::Reconnect(url)));
    }

    /// Resolves when the gateway asks sessions to move.
    pub(crate) fn drain_signal(&self) -> tokio::sync::watch::Receiver<Option<Drain>> {
        self.drain.subscribe()
    }

    /// The current auth function.
    pub fn auth(&self) -> Arc<AuthFunction> {
        self.auth.load_full()
    }

    /// The current relay function.
    pub fn relay(&self) -> Arc<RelayFunction> {
        self.relay.load_full()
    }

    /// Replaces the auth function (hot reload); calls in flight finish on the old one.
    pub fn set_auth(&self, f: Arc<AuthFunction>) {
        self.auth.store(f);
    }

    /// Replaces the relay function (hot reload).
    pub fn set_relay(&self, f: Arc<RelayFunction>) {
        self.relay.store(f);
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Returns once no connection is open.
    pub async fn until_all_closed(&self) {
        loop {
            let closed = self.all_closed.notified();
            let mut closed = std::pin::pin!(closed);
            // Registered before the check: a last close between the two
            // still wakes this waiter.
            closed.as_mut().enable();
            if self.connections.load(Ordering::SeqCst) == 0 {
                return;
            }
            closed.await;
        }
    }

    /// Whether the node is draining (not ready, refusing joins).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts draining.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// ICE servers for `identity`: the static ones plus TURN with fresh
    /// REST credentials.
    pub fn ice_servers_for(&self, identity: &str) -> Vec<IceServer> {
        let mut out = self.ice_servers.clone();
        if let Some((turn, secret)) = &self.turn {
            let expires = roomlet_runtime::clock::unix_secs() + turn.ttl_seconds;
            let c = crate::turn::credential(secret, identity, expires);
            out.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(c.username),
                credential: Some(c.credential),
            });
        }
        out
    }
}
