//! The signaling gateway: WebSocket sessions speaking the client protocol
//! (docs/protocol.md). A session authenticates through the auth function,
//! joins a room actor, runs every `signal`/`message` through the relay
//! policy, delivers signals peer to peer, and survives a dropped socket
//! for a grace period (resume).

pub mod codec;
pub mod frames;
mod guard;
mod resume;
pub mod session;

pub use codec::Encoding;
pub use session::serve;

use crate::components::{AuthFunction, RelayFunction};
use crate::config::{IceServer, LimitsSection, RegionLink, TurnSection};
use crate::rooms::Rooms;
use crate::secrets::Secret;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What sessions share.
pub struct Gateway {
    /// The node's rooms.
    pub rooms: Rooms,
    auth: Swap<AuthFunction>,
    relay: Swap<RelayFunction>,
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
    connections: AtomicUsize,
    draining: AtomicBool,
    resumable: Arc<resume::Resumable>,
}

impl Gateway {
    /// A gateway over these functions and settings.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rooms: Rooms,
        auth: Arc<AuthFunction>,
        relay: Arc<RelayFunction>,
        limits: LimitsSection,
        region: String,
        regions: Vec<RegionLink>,
        ice_servers: Vec<IceServer>,
        turn: Option<(TurnSection, Secret)>,
    ) -> Self {
        Self {
            rooms,
            auth: Swap::new(auth),
            relay: Swap::new(relay),
            limits,
            region,
            regions,
            ice_servers,
            turn,
            connections: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            resumable: Arc::default(),
        }
    }

    /// The current auth function.
    pub fn auth(&self) -> Arc<AuthFunction> {
        self.auth.get()
    }

    /// The current relay function.
    pub fn relay(&self) -> Arc<RelayFunction> {
        self.relay.get()
    }

    /// Replaces the auth function (hot reload); calls in flight finish on the old one.
    pub fn set_auth(&self, f: Arc<AuthFunction>) {
        self.auth.set(f);
    }

    /// Replaces the relay function (hot reload).
    pub fn set_relay(&self, f: Arc<RelayFunction>) {
        self.relay.set(f);
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
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
            let expires = crate::clock::unix_secs() + turn.ttl_seconds;
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

/// A value replaced atomically while readers keep the one they took.
struct Swap<T>(parking_lot::RwLock<Arc<T>>);

impl<T> Swap<T> {
    fn new(v: Arc<T>) -> Self {
        Self(parking_lot::RwLock::new(v))
    }

    fn get(&self) -> Arc<T> {
        self.0.read().clone()
    }

    fn set(&self, v: Arc<T>) {
        *self.0.write() = v;
    }
}
