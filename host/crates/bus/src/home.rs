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

use super::Bus;
use super::directory::{DirectoryError, RoomEntry};
use super::store::JetStreamKv;
use super::wire::{
    self, HomeOp, JoinReply, JoinRequest, Reap, ToGateway, ToHome, WireDelivery, WirePeer,
};
use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use roomlet_protocol::{ErrorCode, ErrorText};
use roomlet_rooms::{Delivery, JoinError, Joined, Outbox, RoomHandle, Rooms};
use roomlet_runtime::bindings::types::{Peer, RoomMessage, Signal, Target};
use roomlet_runtime::kv::KvStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Peer id → the gateway node holding its socket, per room.
pub type Locations = Arc<RwLock<HashMap<String, String>>>;

struct Held {
    rev: u64,
    handle: RoomHandle,
    at: Locations,
    /// The lease epoch the claim was made in.
    epoch: u64,
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
}

/// Sends a peer's deliveries to the gateway `gateway` on the bus, in order.
pub fn forwarder(
    bus: Arc<Bus>,
    room: String,
    peer: String,
    gateway: String,
    at: Locations,
) -> Outbox {
    let (tx, mut rx) = roomlet_rooms::outbox();
    let subject = bus.subject("gw", Some(&gateway));
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            // A kicked peer is no member any more, and its id is never
            // used again (a kick ends the session; no resume, no rejoin):
            // its location goes with this, its last delivery.
            let kicked = matches!(d, Delivery::Kicked { .. });
            let (peer, delivery) = match &d {
                // A room moving away is not a room closing for its peers.
                // The notice is the room's, addressed to no peer: `Moved`
                // for a peer says its frame was refused, which would tell
                // every member that something they sent was lost.
                Delivery::Moved => (
                    String::new(),
                    WireDelivery::Moved {
                        from: bus.node.clone(),
                    },
                ),
                d => (
                    peer.clone(),
                    WireDelivery::from_delivery(d, |id| {
                        at.read()
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| bus.node.clone())
                    }),
                ),
            };
            let msg = ToGateway {
                room: room.clone(),
                peer,
                delivery,
            };
            if let Err(e) = bus
                .client()
                .publish(subject.clone(), wire::encode(&msg))
                .await
            {
                tracing::debug!(error = %e, "forwarding a delivery failed");
            }
            if kicked {
                let mut at = at.write();
                if at.get(&msg.peer) == Some(&gateway) {
                    at.remove(&msg.peer);
                }
            }
        }
    });
    tx
}

impl Home {
    /// Serves this node's rooms on the bus.
    pub async fn start(
        bus: Arc<Bus>,
        rooms: Rooms,
        local_kv: Arc<KvStore>,
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
        let peer: Peer = req.peer.into();
        match self.join(&req.room, peer, outbox, req.rejoin).await {
            Ok((rev, handle, joined)) => {
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
        let peer: Peer = req.peer.into();
        match self.join(&req.room, peer, outbox, req.rejoin).await {
            Ok((rev, h, j)) => Ok((rev, h, j, at)),
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
        // A fresh room, or one whose peers are all at the joining gateway,
        // stops here, without copying the table or asking the room.
        if !at.read().values().any(|gw| *gw != req.gateway) {
            return;
        }
        let Some(handle) = self.held_now(&req.room) else {
            return;
        };
        let Some(members) = handle.peers().await else {
            return;
        };
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
            if self.bus.reap(&gw, &reap).await {
                tracing::info!(room = %req.room, peer = %p.id, gateway = %gw, "the same identity joined at another gateway; its dropped session leaves");
                handle
                    .leave(&p.id, roomlet_rooms::LeaveReason::Timeout)
                    .await;
                at.write().remove(&p.id);
            }
        }
    }

    async fn join(
        &self,
        room: &str,
        peer: Peer,
        outbox: Outbox,
        rejoin: bool,
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
        match self.replica.take_snapshot(&req.room).await {
            Ok(Some(h)) => {
                if let Some((signals, messages)) = h.observe {
                    handle.shared().set_observe(signals, messages);
                }
                handle.put_snapshot(h.version, h.state).await
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(room = %req.room, error = %e, "reading the room's snapshot failed")
            }
        }
        let at: Locations = Arc::default();
        self.held.lock().insert(
            req.room.clone(),
            Held {
                rev,
                handle,
                at: at.clone(),
                epoch,
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

    async fn frame(&self, m: ToHome) {
        let Some(handle) = self.holds(&m.room, m.rev) else {
            self.bus.metrics.fenced.inc();
            // The sender is told its frame was not delivered.
            let sender = match &m.op {
                HomeOp::Leave { .. } => String::new(),
                HomeOp::Message { sender, .. } | HomeOp::Signal { sender, .. } => sender.clone(),
                HomeOp::Kick { .. } | HomeOp::SetMetadata { .. } => String::new(),
            };
            let moved = ToGateway {
                room: m.room,
                peer: sender,
                delivery: WireDelivery::Moved {
                    from: self.bus.node.clone(),
                },
            };
            let _ = self
                .bus
                .client()
                .publish(
                    self.bus.subject("gw", Some(&m.gateway)),
                    wire::encode(&moved),
                )
                .await;
            return;
        };
        match m.op {
            HomeOp::Leave { peer, reason } => {
                handle.leave(&peer, HomeOp::leave_reason(reason)).await;
                if let Some(h) = self.held.lock().get(&m.room) {
                    h.at.write().remove(&peer);
                }
            }
            HomeOp::Message { sender, to, data } => {
                handle
                    .message(RoomMessage {
                        sender,
                        target: to.map(Target::Peer).unwrap_or(Target::Room),
                        data,
                    })
                    .await
            }
            HomeOp::Signal {
                sender,
                to,
                kind,
                payload,
            } => {
                handle
                    .signal(Signal {
                        sender,
                        to,
                        kind: HomeOp::signal_kind(kind),
                        payload,
                    })
                    .await
            }
            HomeOp::Kick { peer, reason } => handle.kick(&peer, &reason).await,
            HomeOp::SetMetadata { metadata } => handle.set_metadata(metadata).await,
        }
    }

    /// Gives up rooms this node may no longer serve (lease lost) and
    /// releases the directory entries of rooms that closed.
    async fn sweep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut ticks = 0u64;
        loop {
            tick.tick().await;
            if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            ticks += 1;
            // Once a second: a directory read per gateway each time.
            if ticks.is_multiple_of(5) {
                self.drop_orphans().await;
            }
            let epoch = self.bus.lease_epoch();
            let valid = self.bus.lease_valid();
            let mut lost = Vec::new();
            let mut ended = Vec::new();
            self.held.lock().retain(|room, h| {
                if !valid || h.epoch != epoch {
                    lost.push(h.handle.clone());
                    false
                } else if h.handle.shared().is_closed() {
                    ended.push((room.clone(), h.rev, h.handle.clone()));
                    false
                } else {
                    true
                }
            });
            for h in lost {
                tracing::warn!(room = %h.name(), "bus lease lost: no longer this room's home");
                self.forget_unreplicated(h.name());
                h.release().await;
            }
            for (room, rev, handle) in ended {
                // Its last writes reach JetStream before another node may
                // claim it, or never.
                self.catch_up(&room, &handle, false).await;
                if let Err(e) = self.bus.directory.release(&room, rev).await {
                    tracing::debug!(%room, error = %e, "releasing the directory entry failed");
                }
            }
            if self.bus.is_ready() {
                for room in self.local_kv.unreplicated_rooms() {
                    match self.held_now(&room) {
                        Some(handle) => self.catch_up(&room, &handle, true).await,
                        None => self.forget_unreplicated(&room),
                    }
                }
            }
        }
    }

    /// Peers whose gateway's lease is gone leave their rooms (reason
    /// `timeout`). Nothing else would remove them: a gateway that crashed
    /// sends no `leave`, and one that lost NATS for longer than the TTL has
    /// told its sessions to join again ([`super::edge`]). Without this they
    /// stayed members for the room's life, listed to everyone, filling
    /// one-to-one rooms. (A gateway restarted under its old name says
    /// `hello` instead: its key never lapses.)
    async fn drop_orphans(&self) {
        if !self.bus.lease_valid() {
            return; // this node is letting its rooms go anyway
        }
        // Each gateway's name once, not once per peer.
        let mut gateways = std::collections::HashSet::new();
        for (_, at) in self.rooms_and_locations() {
            for gw in at.read().values() {
                if *gw != self.bus.node && !gateways.contains(gw) {
                    gateways.insert(gw.clone());
                }
            }
        }
        for gw in gateways {
            match self.bus.directory.node(&gw).await {
                Ok(Some(_)) => {}
                Ok(None) => self.drop_peers_of(&gw, Orphaned::Expired).await,
                Err(_) => return, // the bus is down: nothing to learn now
            }
        }
    }

    /// The peers held by gateway `gw` leave their rooms here. All of them
    /// are taken off the location tables first, in one pass without a
    /// wait: a restarted gateway's first joins, arriving meanwhile, are
    /// not caught up in it. Only members are made to leave and counted: an
    /// entry may outlive its peer's membership for a moment (a kicked
    /// peer's, until its forwarder has sent the kick).
    async fn drop_peers_of(&self, gw: &str, cause: Orphaned) {
        let mut gone: Vec<(RoomHandle, String)> = Vec::new();
        for (handle, at) in self.rooms_and_locations() {
            let members = handle.shared();
            at.write().retain(|peer, g| {
                if g == gw && members.peer(peer).is_some() {
                    gone.push((handle.clone(), peer.clone()));
                }
                g != gw
            });
        }
        self.bus
            .metrics
            .orphaned
            .with_label_values(&[cause.label()])
            .inc_by(gone.len() as u64);
        for (handle, peer) in gone {
            tracing::info!(room = %handle.name(), %peer, gateway = %gw, cause = cause.label(), "the peer's gateway is gone; it leaves the room");
            handle
                .leave(&peer, roomlet_rooms::LeaveReason::Timeout)
                .await;
        }
    }

    fn rooms_and_locations(&self) -> Vec<(RoomHandle, Locations)> {
        self.held
            .lock()
            .values()
            .map(|h| (h.handle.clone(), h.at.clone()))
            .collect()
    }

    /// Sends JetStream the room's kv writes it missed while NATS was away:
    /// through the room's task, in line with its commits, or directly once
    /// that task has ended. Failing that, unless the room `stays` here,
    /// they are given up.
    async fn catch_up(&self, room: &str, handle: &RoomHandle, stays: bool) {
        if !self.local_kv.is_behind(room) {
            return;
        }
        let sent = match handle.replay_kv().await {
            Some(r) => r,
            None => {
                let kv = self.local_kv.clone();
                let r = room.to_owned();
                tokio::task::spawn_blocking(move || kv.replay(&r))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            }
        };
        match sent {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                room,
                keys = n,
                "kv writes made while NATS was away sent to JetStream"
            ),
            Err(e) => {
                tracing::warn!(room, error = %e, "sending missed kv writes to JetStream failed");
                if !stays {
                    self.forget_unreplicated(room);
                }
            }
        }
    }

    fn forget_unreplicated(&self, room: &str) {
        let n = self.local_kv.forget_unreplicated(room);
        if n > 0 {
            tracing::warn!(
                room,
                keys = n,
                "kv writes that never reached JetStream are lost: the room left this node"
            );
        }
    }

    /// Orderly stop: each room's memory is snapshotted into JetStream
    /// (its kv is there already), then its entry released, so gateways
    /// re-home it at once and the new home restores the snapshot.
    pub async fn release_all(&self, info: super::directory::NodeInfo) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.bus.announce_draining(info).await;
        let held: Vec<(String, Held)> = self.held.lock().drain().collect();
        for (room, h) in held {
            self.catch_up(&room, &h.handle, false).await;
            let shared = h.handle.shared();
            let observe = Some((shared.observe_signals(), shared.observe_messages()));
            if let Some((version, state)) = h.handle.take_snapshot().await
                && let Err(e) = self
                    .replica
                    .put_snapshot(
                        &room,
                        &wire::HandOff {
                            version,
                            state,
                            observe,
                        },
                    )
                    .await
            {
                tracing::warn!(%room, error = %e, "handing off the room's memory failed");
            }
            if let Err(e) = self.bus.directory.release(&room, h.rev).await {
                tracing::debug!(%room, error = %e, "releasing the directory entry failed");
            }
            h.handle.release().await;
        }
    }
}

/// How a home learned that a gateway's peers are gone.
#[derive(Clone, Copy)]
enum Orphaned {
    /// The gateway's liveness key expired.
    Expired,
    /// The gateway said `hello` from a new process.
    Restarted,
}

impl Orphaned {
    fn label(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Restarted => "restarted",
        }
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
