//! The gateway side of the bus: sessions whose room is homed on another
//! node talk to a local proxy of it.
//!
//! A proxy stands behind the gateway's [`RemoteRoom`]: a task forwards
//! what the sessions queue to the room's home (one task per room per
//! gateway, so one peer's frames keep their order), and the member table
//! mirrors the room:
//! local peers with their real outboxes, peers on other gateways with an
//! outbox that sends straight to their gateway. That is how signals go
//! gateway to gateway without a trip through the room's home.
//!
//! When the home is gone (its liveness key expired, or it answered
//! `Moved`), the proxy stops forwarding, re-reports its local peers to a
//! live rooms node (which takes the room over from committed kv), and
//! resumes with the new route.

use super::Bus;
use super::directory::NodeInfo;
use super::home::{Home, Locations, forwarder};
use super::wire::{
    self, HomeOp, JoinReply, JoinRequest, ToGateway, ToHome, WireDelivery, WirePeer,
};
use futures_util::StreamExt;
use parking_lot::Mutex;
use roomlet_gateway::{RemoteRoom, RoomLink, RoomOp};
use roomlet_protocol::{ErrorCode, ErrorText};
use roomlet_rooms::{Delivery, JoinError, Joined, Outbox, RoomShared};
use roomlet_runtime::bindings::types::Rejection;
use roomlet_runtime::bindings::types::{Peer, Target};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Where a room's frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    node: String,
    rev: u64,
}

struct Proxy {
    room: String,
    shared: Arc<RoomShared>,
    route: watch::Sender<Option<Route>>,
    /// Local peers, for re-reporting after the room moves.
    local: Mutex<HashMap<String, (Peer, Outbox)>>,
    /// When each local peer last had a frame published to the home. A
    /// publish to a dead home is lost without a word, so after a death the
    /// peers who sent since it could have happened are told.
    sent: Mutex<HashMap<String, Instant>>,
    at: Locations,
    tx: mpsc::Sender<Box<RoomOp>>,
}

impl Proxy {
    /// The room as this gateway's sessions hold it.
    fn remote(&self) -> RemoteRoom {
        RemoteRoom::new(
            self.room.as_str().into(),
            self.shared.clone(),
            self.tx.clone(),
        )
    }
}

/// The gateway's rooms homed elsewhere.
pub struct Edge {
    bus: Arc<Bus>,
    /// Rooms this process can be home to, when it runs `rooms` too.
    home: Option<Arc<Home>>,
    proxies: Mutex<HashMap<String, Arc<Proxy>>>,
    /// This process's own rooms, for deliveries to peers of rooms homed here.
    local_rooms: Option<roomlet_rooms::Rooms>,
}

fn unavailable(message: &str) -> JoinError {
    JoinError::Unavailable(message.into())
}

fn rejected(code: &str, message: &str) -> JoinError {
    JoinError::Rejected(Rejection {
        code: code.into(),
        reason: message.into(),
    })
}

impl Edge {
    /// Starts the gateway side: the delivery subscription and the
    /// liveness watch over the homes of this gateway's rooms.
    pub async fn start(
        bus: Arc<Bus>,
        home: Option<Arc<Home>>,
        local_rooms: Option<roomlet_rooms::Rooms>,
    ) -> Result<Arc<Self>, super::BusError> {
        let mut sub = bus.subscribe(bus.subject("gw", Some(&bus.node))).await?;
        let edge = Arc::new(Self {
            bus,
            home,
            proxies: Mutex::default(),
            local_rooms,
        });
        let e = edge.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(m) =
                    wire::decode::<ToGateway>(&e.bus.metrics.malformed, "gw", &msg.payload)
                {
                    e.deliver(m);
                }
            }
        });
        let e = edge.clone();
        edge.bus
            .on_hello(move |node| {
                let e = e.clone();
                async move { e.restarted(&node) }
            })
            .await?;
        tokio::spawn(edge.clone().watch_homes());
        Ok(edge)
    }

    /// Waits until every frame sessions handed to proxies is on its way
    /// to the NATS server (drain: nothing a client sent is lost).
    pub async fn flush(&self) {
        let proxies: Vec<Arc<Proxy>> = self.proxies.lock().values().cloned().collect();
        for p in proxies {
            let _ = tokio::time::timeout(Duration::from_secs(2), p.remote().flushed()).await;
        }
        if let Err(e) = self.bus.client().flush().await {
            tracing::warn!(error = %e, "flushing the bus failed");
        }
    }

    /// Joins `peer` to `room` wherever the room is homed.
    pub async fn join(
        self: &Arc<Self>,
        room: &str,
        peer: Peer,
        outbox: Outbox,
        may_create: bool,
    ) -> Result<(RoomLink, Joined), JoinError> {
        let started = std::time::Instant::now();
        let mut target = self.pick_home(room, None).await?;
        let request = |rejoin: bool, seen_rev: Option<u64>| JoinRequest {
            room: room.to_owned(),
            peer: WirePeer::from(&peer),
            gateway: self.bus.node.clone(),
            region: self.bus.region.clone(),
            may_create,
            rejoin,
            seen_rev,
        };
        // The peer is known here before the home answers: the home may
        // send it something (a module's greeting) before its reply lands.
        let mut proxy: Option<Arc<Proxy>> = None;
        for _ in 0..5 {
            if target == self.bus.node
                && let Some(home) = &self.home
            {
                if let Some(p) = proxy.take() {
                    self.forget_local(&p, &peer.id);
                }
                // Home here: the peer joins the real room, no proxy.
                return match home.join_local(request(false, None), outbox.clone()).await {
                    Ok((_, handle, joined, _)) => Ok((RoomLink::Local(handle), joined)),
                    Err(JoinReply::NotHome { home, .. }) => {
                        target = home;
                        continue;
                    }
                    Err(r) => Err(refusal(r)),
                };
            }
            let p = proxy.get_or_insert_with(|| {
                let p = self.proxy(room);
                p.local
                    .lock()
                    .insert(peer.id.clone(), (peer.clone(), outbox.clone()));
                p.shared.insert(&peer.id, outbox.clone(), peer.grants);
                p
            });
            let reply = match self.request_join(&target, &request(false, None)).await {
                Ok(r) => r,
                Err(e) => {
                    self.forget_local(p, &peer.id);
                    return Err(e);
                }
            };
            match reply {
                JoinReply::Joined {
                    rev,
                    peers,
                    metadata,
                    observe_signals,
                    observe_messages,
                } => {
                    self.bus
                        .metrics
                        .request_seconds
                        .observe(started.elapsed().as_secs_f64());
                    p.shared.set_observe(observe_signals, observe_messages);
                    let route = Route { node: target, rev };
                    if p.route.borrow().as_ref() != Some(&route) {
                        let _ = p.route.send(Some(route));
                    }
                    let peers = self.mirror(p, peers);
                    let handle = RoomLink::Remote(p.remote());
                    // The home logged the join durably before answering.
                    let durable = roomlet_events::Receipt::ready(Ok(()));
                    return Ok((
                        handle,
                        Joined {
                            peers,
                            metadata,
                            durable,
                        },
                    ));
                }
                JoinReply::NotHome { home, .. } => target = home,
                JoinReply::Refused { code, message } => {
                    self.forget_local(p, &peer.id);
                    return Err(refused_code(&code, &message));
                }
            }
        }
        if let Some(p) = proxy {
            self.forget_local(&p, &peer.id);
        }
        Err(unavailable("could not find the room's home"))
    }

    async fn request_join(&self, node: &str, req: &JoinRequest) -> Result<JoinReply, JoinError> {
        let msg = self
            .bus
            .client()
            .request(self.bus.subject("join", Some(node)), wire::encode(req))
            .await
            .map_err(|e| unavailable(&format!("the room's home did not answer: {e}")))?;
        wire::decode::<JoinReply>(&self.bus.metrics.malformed, "join-reply", &msg.payload)
            .ok_or_else(|| unavailable("malformed answer from the room's home"))
    }

    /// The room's live home, or a live rooms node to become it: in the
    /// room's configured region, else the joining gateway's (a room lives
    /// where its first peer is); this process first within it.
    async fn pick_home(&self, room: &str, avoid: Option<&str>) -> Result<String, JoinError> {
        let dir = &self.bus.directory;
        let dir_down = |e: super::directory::DirectoryError| unavailable(&e.to_string());
        if let Some((entry, _)) = dir.room(room).await.map_err(dir_down)?
            && Some(entry.node.as_str()) != avoid
            && dir.node(&entry.node).await.map_err(dir_down)?.is_some()
        {
            return Ok(entry.node);
        }
        let nodes: Vec<(String, NodeInfo)> = dir
            .nodes()
            .await
            .map_err(dir_down)?
            .into_iter()
            .filter(|(n, i)| i.runs_rooms() && Some(n.as_str()) != avoid)
            .collect();
        let region = self.bus.home_region(room);
        if self.home.is_some()
            && region == self.bus.region
            && nodes.iter().any(|(n, _)| *n == self.bus.node)
        {
            return Ok(self.bus.node.clone());
        }
        let in_region: Vec<&String> = nodes
            .iter()
            .filter(|(_, i)| i.region == region)
            .map(|(n, _)| n)
            .collect();
        let pool: Vec<&String> = if in_region.is_empty() {
            nodes.iter().map(|(n, _)| n).collect()
        } else {
            in_region
        };
        // Rendezvous hashing: every gateway picks the same node for a room.
        pool.into_iter()
            .max_by_key(|n| hash(&format!("{n}/{room}")))
            .cloned()
            .ok_or_else(|| unavailable("no rooms node is alive"))
    }

    /// The room's proxy; a new one has no route until its first join lands.
    fn proxy(self: &Arc<Self>, room: &str) -> Arc<Proxy> {
        let mut proxies = self.proxies.lock();
        if let Some(p) = proxies.get(room)
            && !p.shared.is_closed()
        {
            return p.clone();
        }
        let (tx, rx) = mpsc::channel(256);
        let proxy = Arc::new(Proxy {
            room: room.to_owned(),
            shared: Arc::default(),
            route: watch::channel(None).0,
            local: Mutex::default(),
            sent: Mutex::default(),
            at: Arc::default(),
            tx,
        });
        proxies.insert(room.to_owned(), proxy.clone());
        tokio::spawn(self.clone().forward(proxy.clone(), rx));
        proxy
    }

    /// Adds the peers a home reported to the proxy's mirror.
    fn mirror(&self, proxy: &Proxy, peers: Vec<(WirePeer, String)>) -> Vec<Arc<Peer>> {
        peers
            .into_iter()
            .map(|(p, gw)| {
                let peer: Peer = p.into();
                self.mirror_one(proxy, &peer, gw);
                Arc::new(peer)
            })
            .collect()
    }

    fn mirror_one(&self, proxy: &Proxy, peer: &Peer, gw: String) {
        if proxy.local.lock().contains_key(&peer.id) || gw == self.bus.node {
            return;
        }
        proxy.at.write().insert(peer.id.clone(), gw.clone());
        let out = forwarder(
            self.bus.clone(),
            proxy.room.clone(),
            peer.id.clone(),
            gw,
            proxy.at.clone(),
        );
        proxy.shared.insert(&peer.id, out, peer.grants);
    }

    /// The proxy's mailbox: frames to the home, in order, waiting out a
    /// re-homing instead of losing them.
    async fn forward(self: Arc<Self>, proxy: Arc<Proxy>, mut rx: mpsc::Receiver<Box<RoomOp>>) {
        let mut route_rx = proxy.route.subscribe();
        while let Some(op) = rx.recv().await {
            let op = match *op {
                RoomOp::Leave { peer_id, reason } => {
                    self.forget_local(&proxy, &peer_id);
                    HomeOp::leave(&peer_id, reason)
                }
                RoomOp::Message(message) => HomeOp::Message {
                    sender: message.sender,
                    to: match message.target {
                        Target::Peer(p) => Some(p),
                        Target::Room => None,
                    },
                    data: message.data,
                },
                RoomOp::Signal(signal) => {
                    HomeOp::signal(signal.sender, signal.to, signal.kind, signal.payload)
                }
                RoomOp::Kick { peer_id, reason } => HomeOp::Kick {
                    peer: peer_id,
                    reason,
                },
                RoomOp::SetMetadata(metadata) => HomeOp::SetMetadata { metadata },
                // Every frame before it has been handed to the bus.
                RoomOp::Barrier(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            let route = match route_rx.wait_for(Option::is_some).await {
                Ok(r) => r.clone(),
                Err(_) => return,
            };
            let Some(route) = route else { continue };
            let msg = ToHome {
                room: proxy.room.clone(),
                rev: route.rev,
                gateway: self.bus.node.clone(),
                op,
            };
            if let Err(e) = self
                .bus
                .client()
                .publish(
                    self.bus.subject("home", Some(&route.node)),
                    wire::encode(&msg),
                )
                .await
            {
                tracing::debug!(error = %e, "forwarding a frame to the room's home failed");
            }
            if let HomeOp::Message { sender, .. } | HomeOp::Signal { sender, .. } = &msg.op {
                let now = Instant::now();
                let mut sent = proxy.sent.lock();
                match sent.get_mut(sender) {
                    Some(t) => *t = now,
                    None => {
                        sent.insert(sender.clone(), now);
                    }
                }
            }
        }
    }

    fn forget_local(&self, proxy: &Proxy, peer_id: &str) {
        proxy.shared.remove(peer_id);
        proxy.sent.lock().remove(peer_id);
        let empty = {
            let mut local = proxy.local.lock();
            local.remove(peer_id);
            local.is_empty()
        };
        if empty {
            proxy.shared.mark_closed();
            let mut proxies = self.proxies.lock();
            if proxies
                .get(&proxy.room)
                .is_some_and(|p| Arc::ptr_eq(&p.shared, &proxy.shared))
            {
                proxies.remove(&proxy.room);
            }
        }
    }

    /// A delivery from a home or another gateway for a peer held here.
    fn deliver(self: &Arc<Self>, m: ToGateway) {
        let proxy = self.proxies.lock().get(&m.room).cloned();
        if let WireDelivery::Moved { from } = &m.delivery {
            let Some(p) = proxy else { return };
            // A frame the old home refused: its sender hears so.
            if let Some((_, outbox)) = p.local.lock().get(&m.peer) {
                let _ = outbox.send(Delivery::Error {
                    code: ErrorCode::Unavailable,
                    message: "the room was moving to another node; that frame was not delivered, send it again".into(),
                });
            }
            // Only the current home's notice counts: an old home letting
            // go of a room that has already moved says nothing new.
            if p.route.borrow().as_ref().is_some_and(|r| r.node == *from) {
                self.rehome(p, None);
            }
            return;
        }
        if let Some(p) = &proxy {
            match &m.delivery {
                WireDelivery::PeerJoined { peer, at } => {
                    let peer: Peer = peer.clone().into();
                    self.mirror_one(p, &peer, at.clone());
                }
                WireDelivery::PeerLeft { peer, .. } if !p.local.lock().contains_key(peer) => {
                    p.shared.remove(peer);
                    p.at.write().remove(peer);
                }
                _ => {}
            }
        }
        let ends = matches!(
            m.delivery,
            WireDelivery::Closed { .. } | WireDelivery::Kicked { .. }
        );
        let outbox = match &proxy {
            Some(p) => p.local.lock().get(&m.peer).map(|(_, o)| o.clone()),
            // A signal from another gateway to a peer of a room homed here.
            None => self
                .local_rooms
                .as_ref()
                .and_then(|r| r.get(&m.room))
                .and_then(|h| h.shared().peer(&m.peer))
                .map(|(o, _)| o),
        };
        let (Some(outbox), Some(d)) = (outbox, m.delivery.into_delivery()) else {
            return;
        };
        let _ = outbox.send(d);
        if ends && let Some(p) = proxy {
            self.forget_local(&p, &m.peer);
        }
    }

    /// Checks the homes of this gateway's rooms; re-homes the rooms of
    /// homes whose lease is gone.
    async fn watch_homes(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            if !self.bus.lease_valid() {
                self.let_go_all();
                continue;
            }
            let proxies: Vec<Arc<Proxy>> = self.proxies.lock().values().cloned().collect();
            let mut homes: HashMap<String, bool> = HashMap::new();
            for p in proxies {
                let Some(route) = p.route.borrow().clone() else {
                    continue;
                };
                let alive = match homes.get(&route.node) {
                    Some(a) => *a,
                    None => {
                        let Ok(n) = self.bus.directory.node(&route.node).await else {
                            continue; // the bus is down: nothing to learn now
                        };
                        homes.insert(route.node.clone(), n.is_some());
                        n.is_some()
                    }
                };
                if !alive {
                    self.rehome(p, Some(Instant::now()));
                }
            }
        }
    }

    /// `node` restarted: the rooms it was home to are not there any more,
    /// though its name's liveness key never lapsed. They move (most likely
    /// back to it) as after a death.
    fn restarted(self: &Arc<Self>, node: &str) {
        let homed_there: Vec<Arc<Proxy>> = self
            .proxies
            .lock()
            .values()
            .filter(|p| p.route.borrow().as_ref().is_some_and(|r| r.node == node))
            .cloned()
            .collect();
        for p in homed_there {
            self.rehome(p, Some(Instant::now()));
        }
    }

    /// This gateway's lease ran out (NATS away for longer than the TTL): the
    /// homes of its rooms now drop its peers as orphans, so every session in
    /// a room homed elsewhere is told to join again (`reconnect`, as when
    /// a home loses its own lease), and the proxies go.
    fn let_go_all(&self) {
        let proxies: Vec<Arc<Proxy>> = self.proxies.lock().drain().map(|(_, p)| p).collect();
        if proxies.is_empty() {
            return;
        }
        tracing::warn!(
            rooms = proxies.len(),
            "bus lease lost: sessions in rooms homed elsewhere are told to join again"
        );
        for p in proxies {
            p.shared.mark_closed();
            let local: Vec<Outbox> = p.local.lock().drain().map(|(_, (_, o))| o).collect();
            for o in local {
                let _ = o.send(Delivery::Moved);
            }
        }
    }

    /// Moves a proxy's room to a live home, once. `died`: when the old
    /// home was found dead (not when it handed the room off, answering
    /// every frame it refused).
    fn rehome(self: &Arc<Self>, proxy: Arc<Proxy>, died: Option<Instant>) {
        let old = {
            let r = proxy.route.borrow();
            match &*r {
                Some(r) => r.clone(),
                None => return, // already moving
            }
        };
        let _ = proxy.route.send(None);
        let edge = self.clone();
        tokio::spawn(async move {
            tracing::info!(room = %proxy.room, old_home = %old.node, "room's home is gone; re-homing");
            let deadline =
                tokio::time::Instant::now() + edge.bus.directory.ttl() * 3 + Duration::from_secs(5);
            while tokio::time::Instant::now() < deadline {
                if proxy.local.lock().is_empty() {
                    return; // everyone here left meanwhile: nothing to move
                }
                match edge.rejoin_all(&proxy, &old).await {
                    Ok(route) => {
                        tracing::info!(room = %proxy.room, home = %route.node, rev = route.rev, "room re-homed");
                        edge.bus
                            .metrics
                            .rehomes
                            .with_label_values(&["gateway", "ok"])
                            .inc();
                        let _ = proxy.route.send(Some(route));
                        if let Some(found) = died {
                            // It stopped renewing its lease at most a TTL
                            // (and a tick of the check) before.
                            let window = edge.bus.directory.ttl() + Duration::from_secs(1);
                            tell_senders(&proxy, found, window);
                        }
                        return;
                    }
                    Err(e) => tracing::debug!(room = %proxy.room, error = %e, "re-homing: not yet"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tracing::warn!(room = %proxy.room, "re-homing failed; closing the room's sessions");
            edge.bus
                .metrics
                .rehomes
                .with_label_values(&["gateway", "failed"])
                .inc();
            let peers: Vec<Outbox> = proxy
                .local
                .lock()
                .values()
                .map(|(_, o)| o.clone())
                .collect();
            for o in peers {
                let _ = o.send(Delivery::Closed {
                    reason: "the room's home is unavailable".into(),
                });
            }
        });
    }

    /// Re-reports every local peer to the room's home: the live home the
    /// directory names, or a live rooms node that takes the room over.
    async fn rejoin_all(&self, proxy: &Proxy, old: &Route) -> Result<Route, String> {
        let old_alive = self
            .bus
            .directory
            .node(&old.node)
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        let avoid = (!old_alive).then_some(old.node.as_str());
        let target = self
            .pick_home(&proxy.room, avoid)
            .await
            .map_err(|e| e.to_string())?;
        let peers: Vec<(Peer, Outbox)> = proxy.local.lock().values().cloned().collect();
        let mut rev = None;
        for (peer, outbox) in peers {
            let req = JoinRequest {
                room: proxy.room.clone(),
                peer: WirePeer::from(&peer),
                gateway: self.bus.node.clone(),
                region: self.bus.region.clone(),
                may_create: true,
                rejoin: true,
                seen_rev: Some(old.rev),
            };
            let reply = if target == self.bus.node
                && let Some(home) = &self.home
            {
                match home.join_local(req, outbox).await {
                    Ok((r, handle, ..)) => JoinReply::Joined {
                        rev: r,
                        peers: Vec::new(),
                        metadata: String::new(),
                        observe_signals: handle.shared().observe_signals(),
                        observe_messages: handle.shared().observe_messages(),
                    },
                    Err(e) => e,
                }
            } else {
                self.request_join(&target, &req)
                    .await
                    .map_err(|e| e.to_string())?
            };
            match reply {
                JoinReply::Joined {
                    rev: r,
                    peers,
                    observe_signals,
                    observe_messages,
                    ..
                } => {
                    proxy.shared.set_observe(observe_signals, observe_messages);
                    rev = Some(r);
                    self.mirror(proxy, peers);
                }
                JoinReply::NotHome { home, .. } => {
                    return Err(format!(
                        "the room's home is {home}, which still holds its lease"
                    ));
                }
                JoinReply::Refused { code, message } => return Err(format!("{code}: {message}")),
            }
        }
        let rev = rev.ok_or("no local peers left")?;
        Ok(Route { node: target, rev })
    }
}

/// Tells each local peer who had a frame published to a dead home within
/// `window` before it was `found` dead that the frame may not have arrived:
/// the dead home cannot say which did.
fn tell_senders(proxy: &Proxy, found: Instant, window: Duration) {
    let senders: Vec<String> = proxy
        .sent
        .lock()
        .iter()
        .filter(|(_, t)| found.saturating_duration_since(**t) <= window)
        .map(|(p, _)| p.clone())
        .collect();
    let local = proxy.local.lock();
    for peer in senders {
        if let Some((_, outbox)) = local.get(&peer) {
            let _ = outbox.send(Delivery::Error {
                code: ErrorCode::Unavailable,
                message: LOST.into(),
            });
        }
    }
}

/// What a sender hears after the room's node died under its frames.
const LOST: &str = "the room's node failed; room frames you sent just before it was replaced may not have been delivered: send again what matters";

fn refusal(r: JoinReply) -> JoinError {
    match r {
        JoinReply::Refused { code, message } => refused_code(&code, &message),
        JoinReply::NotHome { home, .. } => unavailable(&format!("the room is homed on {home}")),
        JoinReply::Joined { .. } => unavailable("unexpected answer"),
    }
}

fn refused_code(code: &str, message: &str) -> JoinError {
    match ErrorText::parse(code) {
        ErrorText::Host(ErrorCode::RoomNotFound) => JoinError::RoomNotFound,
        ErrorText::Host(ErrorCode::NodeFull) => JoinError::NodeFull,
        ErrorText::Host(ErrorCode::ModuleError) => JoinError::Module(message.into()),
        ErrorText::Host(ErrorCode::Unavailable) => unavailable(message),
        ErrorText::Host(code) => JoinError::Refused {
            code,
            reason: message.into(),
        },
        ErrorText::Module(code) => rejected(&code, message),
    }
}

/// A rendezvous score every node computes alike, whatever toolchain built
/// it: std's `DefaultHasher` promises no output across Rust releases, so
/// gateways built apart would pick different homes for a new room and pay
/// the directory's `NotHome` hop on its first joins. One SHA-256 per node
/// per new room is nothing on the join path.
fn hash(s: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(s.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head)
}

#[cfg(test)]
mod tests {
    /// Pinned to `printf 'n1/room' | sha256sum` (f865d0dbf550853d…): a
    /// change of hash would split new rooms between nodes of two builds.
    #[test]
    fn the_rendezvous_score_is_the_sha256_head_of_node_and_room() {
        assert_eq!(super::hash("n1/room"), 0xf865_d0db_f550_853d);
    }
}
