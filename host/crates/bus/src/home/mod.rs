//! The rooms side of the bus: this node as the home of rooms whose peers'
//! sockets other nodes (gateways) hold.
//!
//! A join sent here claims the room in the directory when it has no live
//! home (create, or compare-and-set over a dead home's entry), loads the
//! room's committed kv from JetStream, and joins the peer with an outbox
//! that forwards its deliveries to its gateway. Later frames arrive on
//! `P.home.NODE` carrying the directory revision they were routed by; a
//! frame for a revision this node does not hold (or while its lease is
//! not valid) is refused with `Moved`, so a room never has two homes.
//!
//! The traffic itself (deliveries out, frames in) is in [`traffic`]; the
//! upkeep of the rooms held (leases, orphans, kv catch-up, hand-off) in
//! [`upkeep`].

mod moves;
mod routing;
mod traffic;
mod upkeep;

pub use traffic::forwarder;
use upkeep::Orphaned;

use crate::Bus;
use crate::directory::{DirectoryError, RoomEntry};
use crate::store::JetStreamKv;
use crate::wire::{self, JoinReply, JoinRequest, Reap, ToHome, WirePeer};
use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use roomlet_protocol::{ErrorCode, ErrorText};
use roomlet_rooms::{JoinError, Joined, Outbox, RoomHandle, Rooms};
use roomlet_runtime::bindings::types::Peer;
use roomlet_runtime::kv::KvStore;
use std::collections::HashMap;
use std::sync::Arc;

/// Peer id → the gateway node holding its socket, per room.
pub type Locations = Arc<RwLock<HashMap<String, String>>>;

struct Held {
    rev: u64,
    handle: RoomHandle,
    at: Locations,
    /// The lease epoch the claim was made in.
    epoch: u64,
    /// The routing flags on record in JetStream (`None`: unknown).
    routing: Option<routing::Routing>,
}

/// This node's rooms, as homes on the bus.
pub struct Home {
    bus: Arc<Bus>,
    rooms: Rooms,
    replica: Arc<JetStreamKv>,
    local_kv: Arc<KvStore>,
    held: Mutex<HashMap<String, Held>>,
    /// Claims of one room never interleave.
    claims: tokio::sync::Mutex<()>,
    /// Handing rooms off: the sweep leaves them to [`Home::release_all`].
    draining: std::sync::atomic::AtomicBool,
    /// Members whose gateway is gone, by (room, peer), each with the
    /// number of its wait: they leave unless their session resumes at
    /// another gateway within `orphan_grace`.
    orphans: Mutex<HashMap<(String, String), (u64, Orphaned)>>,
    orphan_waits: std::sync::atomic::AtomicU64,
    /// How long an orphan waits: the resume grace period.
    orphan_grace: std::time::Duration,
    /// (room, peer) whose gateway did not answer a reap: the same user
    /// joined again elsewhere, so if that gateway turns out dead, the peer
    /// leaves at once instead of waiting for a resume that will not come.
    unanswered: Mutex<std::collections::HashSet<(String, String)>>,
}

impl Home {
    /// Serves this node's rooms on the bus.
    pub async fn start(
        bus: Arc<Bus>,
        rooms: Rooms,
        local_kv: Arc<KvStore>,
        orphan_grace: std::time::Duration,
    ) -> Result<Arc<Self>, super::BusError> {
        let replica = Arc::new(JetStreamKv::new(
            bus.kv.clone(),
            bus.client().clone(),
            bus.request_timeout(),
            bus.metrics.malformed.clone(),
        ));
        local_kv.set_replica(replica.clone(), bus.metrics.kv_unreplicated.clone());
        let home = Arc::new(Self {
            bus: bus.clone(),
            rooms,
            replica,
            local_kv,
            held: Mutex::default(),
            claims: tokio::sync::Mutex::new(()),
            draining: std::sync::atomic::AtomicBool::new(false),
            orphans: Mutex::default(),
            orphan_waits: std::sync::atomic::AtomicU64::new(0),
            orphan_grace,
            unanswered: Mutex::default(),
        });
        let mut joins = bus.subscribe(bus.subject("join", Some(&bus.node))).await?;
        let mut frames = bus.subscribe(bus.subject("home", Some(&bus.node))).await?;
        let h = home.clone();
        tokio::spawn(async move {
            while let Some(msg) = joins.next().await {
                let h = h.clone();
                tokio::spawn(async move {
                    let Some(reply_to) = msg.reply.clone() else {
                        return;
                    };
                    let reply = match wire::decode::<JoinRequest>(
                        &h.bus.metrics.malformed,
                        "join",
                        &msg.payload,
                    ) {
                        Some(req) => h.join_remote(req).await,
                        None => refused(ErrorCode::BadFrame, "malformed join on the bus"),
                    };
                    let _ = h.bus.client().publish(reply_to, wire::encode(&reply)).await;
                });
            }
        });
        let h = home.clone();
        tokio::spawn(async move {
            // One task: frames from one gateway keep their order.
            while let Some(msg) = frames.next().await {
                if let Some(m) =
                    wire::decode::<ToHome>(&h.bus.metrics.malformed, "home", &msg.payload)
                {
                    h.frame(m).await;
                }
            }
        });
        let h = home.clone();
        bus.on_hello(move |node| {
            let h = h.clone();
            // The peers a restarted gateway held went with its old process.
            async move { h.drop_peers_of(&node, Orphaned::Restarted).await }
        })
        .await?;
        tokio::spawn(home.clone().sweep());
        Ok(home)
    }

    /// A join from another node's gateway.
    async fn join_remote(&self, req: JoinRequest) -> JoinReply {
        let at = match self.claim(&req).await {
            Ok((_, at)) => at,
            Err(reply) => return reply,
        };
        self.reap_dropped(&req, &at).await;
        at.write().insert(req.peer.id.clone(), req.gateway.clone());
        let outbox = forwarder(
            self.bus.clone(),
            req.room.clone(),
            req.peer.id.clone(),
            req.gateway.clone(),
            at.clone(),
        );
        let peer_id = req.peer.id.clone();
        let moving = req.moved_from.is_some();
        let peer: Peer = req.peer.into();
        match self.join(&req.room, peer, outbox, req.rejoin, moving).await {
            Ok((rev, handle, joined)) => {
                if moving {
                    self.relocated(&req.room, &peer_id, &req.gateway, &at).await;
                }
                // Acknowledged only once the join is in this node's event log.
                if let Err(e) = joined.durable.wait().await {
                    tracing::error!(room = %req.room, error = %e, "event log write failed; join refused");
                    handle
                        .leave(&peer_id, roomlet_rooms::LeaveReason::Left)
                        .await;
                    at.write().remove(&peer_id);
                    return refused(
                        ErrorCode::Unavailable,
                        "the room's event log is unavailable; try again",
                    );
                }
                self.commit_routing(&req.room, &handle).await;
                let at = at.read();
                JoinReply::Joined {
                    rev,
                    peers: joined
                        .peers
                        .iter()
                        .map(|p| {
                            let g = at
                                .get(&p.id)
                                .cloned()
                                .unwrap_or_else(|| self.bus.node.clone());
                            (WirePeer::from(&**p), g)
                        })
                        .collect(),
                    metadata: joined.metadata,
                    observe_signals: handle.shared().observe_signals(),
                    observe_messages: handle.shared().observe_messages(),
                }
            }
            Err(e) => refused_join(&at, &peer_id, &e),
        }
    }

    /// A join from this node's own gateway (relay and rooms in one
    /// process): the peer gets its real outbox.
    pub async fn join_local(
        &self,
        req: JoinRequest,
        outbox: Outbox,
    ) -> Result<(u64, RoomHandle, Joined, Locations), JoinReply> {
        let (_, at) = self.claim(&req).await?;
        self.reap_dropped(&req, &at).await;
        at.write()
            .insert(req.peer.id.clone(), self.bus.node.clone());
        let peer_id = req.peer.id.clone();
        let moving = req.moved_from.is_some();
        let peer: Peer = req.peer.into();
        match self.join(&req.room, peer, outbox, req.rejoin, moving).await {
            Ok((rev, h, j)) => {
                if moving {
                    self.relocated(&req.room, &peer_id, &self.bus.node, &at)
                        .await;
                }
                self.commit_routing(&req.room, &h).await;
                Ok((rev, h, j, at))
            }
            Err(e) => Err(refused_join(&at, &peer_id, &e)),
        }
    }

    /// The joining identity's sessions at other gateways whose sockets
    /// dropped leave the room before it joins: a reload through another
    /// gateway, which would otherwise find its own ghost listed (and, in a
    /// one-to-one room, be refused `room-full` by it) for the grace period.
    /// The joining gateway has made its own dropped sessions leave; each
    /// other gateway is asked ([`super::wire::Reap`]) because only it
    /// knows whether a socket is gone (an open one is another device).
    async fn reap_dropped(&self, req: &JoinRequest, at: &Locations) {
        if req.rejoin {
            return; // the same session, following its room to a new home
        }
        // A fresh room, or one whose peers are all at the joining gateway
        // (and none orphaned), stops here, without copying the table or
        // asking the room.
        let orphans = self.orphans.lock().keys().any(|(r, _)| *r == req.room);
        if !orphans && !at.read().values().any(|gw| *gw != req.gateway) {
            return;
        }
        let Some(handle) = self.held_now(&req.room) else {
            return;
        };
        let Some(members) = handle.peers().await else {
            return;
        };
        if orphans {
            // Its gateway died and the client joined afresh instead of
            // resuming: the old session will not come back.
            for p in members.iter().filter(|p| p.identity == req.peer.identity) {
                if let Some(cause) = self.unorphan(&req.room, &p.id) {
                    self.orphan_leaves(&handle, cause, &p.id, "joined afresh")
                        .await;
                }
            }
        }
        for p in members.iter().filter(|p| p.identity == req.peer.identity) {
            let gw = at
                .read()
                .get(&p.id)
                .filter(|gw| **gw != req.gateway)
                .cloned();
            let Some(gw) = gw else {
                continue;
            };
            let reap = Reap {
                room: req.room.clone(),
                identity: p.identity.clone(),
                peer: p.id.clone(),
            };
            match self.bus.reap(&gw, &reap).await {
                Some(true) => {
                    tracing::info!(room = %req.room, peer = %p.id, gateway = %gw, "the same identity joined at another gateway; its dropped session leaves");
                    handle
                        .leave(&p.id, roomlet_rooms::LeaveReason::Timeout)
                        .await;
                    at.write().remove(&p.id);
                }
                Some(false) => {}
                None => {
                    self.unanswered
                        .lock()
                        .insert((req.room.clone(), p.id.clone()));
                }
            }
        }
    }

    async fn join(
        &self,
        room: &str,
        peer: Peer,
        outbox: Outbox,
        rejoin: bool,
        moving: bool,
    ) -> Result<(u64, RoomHandle, Joined), JoinError> {
        let rev = self
            .held
            .lock()
            .get(room)
            .map(|h| h.rev)
            .ok_or(JoinError::Unavailable(
                "the room moved during the join; try again".into(),
            ))?;
        if rejoin {
            let handle = self.rooms.open(room)?;
            // A session moving between gateways keeps its place, or has
            // none left to keep (it left, was kicked, or the room began
            // again without it): then it cannot resume.
            if moving && handle.shared().peer(&peer.id).is_none() {
                return Err(JoinError::Unavailable(
                    "the peer is no longer in the room".into(),
                ));
            }
            let joined = handle
                .rejoin(peer, outbox)
                .await
                .ok_or(JoinError::Unavailable(
                    "the room closed during the join; try again".into(),
                ))?;
            self.remember(room, rev, &handle);
            return Ok((rev, handle, joined));
        }
        // `claim` already checked roomCreate against the directory: the
        // entry exists, so the room exists, whoever starts it here.
        let (handle, joined) = self.rooms.join(room, peer, outbox, true).await?;
        self.remember(room, rev, &handle);
        Ok((rev, handle, joined))
    }

    fn remember(&self, room: &str, rev: u64, handle: &RoomHandle) {
        if let Some(h) = self.held.lock().get_mut(room)
            && h.rev == rev
        {
            h.handle = handle.clone();
        }
    }

    /// Makes this node the room's home if it has none (or a dead one).
    /// The revision held and the room's peer locations.
    async fn claim(&self, req: &JoinRequest) -> Result<(u64, Locations), JoinReply> {
        let _one = self.claims.lock().await;
        let epoch = self.bus.lease_epoch();
        if let Some(h) = self.held.lock().get(&req.room)
            && !h.handle.shared().is_closed()
            && h.epoch == epoch
        {
            return Ok((h.rev, h.at.clone()));
        }
        if !self.bus.lease_valid() {
            return Err(refused(
                ErrorCode::Unavailable,
                "this node has lost its bus lease",
            ));
        }
        if self.bus.is_draining() {
            return Err(refused(
                ErrorCode::Unavailable,
                "this node is handing its rooms off",
            ));
        }
        let me = RoomEntry {
            node: self.bus.node.clone(),
            region: self.bus.region.clone(),
        };
        let dir = &self.bus.directory;
        let mut rev = None;
        for _ in 0..5 {
            let r = match dir.room(&req.room).await.map_err(unavailable)? {
                None => {
                    if !req.may_create && !req.rejoin {
                        return Err(refused(
                            ErrorCode::RoomNotFound,
                            "the room does not exist and the token may not create it (roomCreate)",
                        ));
                    }
                    dir.create(&req.room, &me).await
                }
                Some((entry, r)) if entry.node == me.node => dir.replace(&req.room, &me, r).await,
                Some((entry, r)) => {
                    if dir.node(&entry.node).await.map_err(unavailable)?.is_some() {
                        return Err(JoinReply::NotHome {
                            home: entry.node,
                            rev: r,
                        });
                    }
                    tracing::info!(room = %req.room, old_home = %entry.node, "taking over a room whose home is gone");
                    self.bus
                        .metrics
                        .rehomes
                        .with_label_values(&["home", "ok"])
                        .inc();
                    dir.replace(&req.room, &me, r).await
                }
            };
            match r {
                Ok(r) => {
                    rev = Some(r);
                    break;
                }
                Err(DirectoryError::Conflict) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        let rev = rev.ok_or_else(|| {
            refused(
                ErrorCode::Unavailable,
                "the room's directory entry kept changing",
            )
        })?;
        // The room's committed state, from wherever it was last written.
        let entries = self.replica.load(&req.room).await.map_err(|e| {
            refused(
                ErrorCode::Unavailable,
                &format!("loading the room's state failed: {e}"),
            )
        })?;
        // Anything this node failed to send for the room earlier is older
        // than what JetStream now holds for it.
        self.forget_unreplicated(&req.room);
        let kv = self.local_kv.clone();
        let room = req.room.clone();
        let loaded = tokio::task::spawn_blocking(move || kv.replace_room(&room, &entries)).await;
        if !matches!(loaded, Ok(Ok(()))) {
            return Err(refused(
                ErrorCode::Unavailable,
                "storing the room's state failed",
            ));
        }
        // A stale local actor (from before this node lost the room) goes.
        if let Some(old) = self.rooms.get(&req.room) {
            old.release().await;
        }
        let handle = self
            .rooms
            .open(&req.room)
            .map_err(|e| refused(e.code(), &e.to_string()))?;
        // The previous home's memory, when it handed the room off (drain).
        let routing = match self.replica.take_snapshot(&req.room).await {
            Ok(Some(h)) => {
                if let Some((signals, messages)) = h.observe {
                    handle.shared().set_observe(signals, messages);
                }
                handle.put_snapshot(h.version, h.state).await;
                // Whatever is on record, the next join compares with it.
                None
            }
            Ok(None) => self.restore_routing(&req.room, &handle).await,
            Err(e) => {
                tracing::warn!(room = %req.room, error = %e, "reading the room's snapshot failed");
                self.restore_routing(&req.room, &handle).await
            }
        };
        let at: Locations = Arc::default();
        self.held.lock().insert(
            req.room.clone(),
            Held {
                rev,
                handle,
                at: at.clone(),
                epoch,
                routing,
            },
        );
        tracing::info!(room = %req.room, rev, "room homed here");
        Ok((rev, at))
    }

    /// Whether this node holds `room` at `rev` right now, open for frames.
    fn holds(&self, room: &str, rev: u64) -> Option<RoomHandle> {
        self.held_if(room, |h| h.rev == rev && !h.handle.shared().is_closed())
    }

    /// `room`'s handle while this node is its home in the current lease.
    fn held_now(&self, room: &str) -> Option<RoomHandle> {
        self.held_if(room, |_| true)
    }

    /// `room`'s handle if it was claimed in the current, valid lease and
    /// `also` accepts it.
    fn held_if(&self, room: &str, also: impl Fn(&Held) -> bool) -> Option<RoomHandle> {
        if !self.bus.lease_valid() {
            return None;
        }
        let epoch = self.bus.lease_epoch();
        self.held
            .lock()
            .get(room)
            .filter(|h| h.epoch == epoch && also(h))
            .map(|h| h.handle.clone())
    }
}

/// A join the room refused. The peer's location entry, made before the
/// join, goes too: nothing else would remove it before the room closes.
fn refused_join(at: &Locations, peer: &str, e: &JoinError) -> JoinReply {
    at.write().remove(peer);
    refused(e.code(), &e.to_string())
}

fn refused(code: impl Into<ErrorText>, message: &str) -> JoinReply {
    JoinReply::Refused {
        code: code.into().as_str().to_owned(),
        message: message.into(),
    }
}

fn unavailable(e: DirectoryError) -> JoinReply {
    refused(
        ErrorCode::Unavailable,
        &format!("the room directory is unavailable: {e}"),
    )
}
