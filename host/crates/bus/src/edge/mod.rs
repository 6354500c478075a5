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
//!
//! The traffic through proxies is in [`traffic`]; following a room to a
//! new home in [`rehome`].

mod rehome;
mod traffic;

use crate::Bus;
use crate::directory::NodeInfo;
use crate::home::{Home, Locations, forwarder};
use crate::wire::{self, JoinReply, JoinRequest, ToGateway, WirePeer};
use futures_util::StreamExt;
use parking_lot::Mutex;
use roomlet_gateway::{RemoteRoom, RoomLink, RoomOp};
use roomlet_protocol::{ErrorCode, ErrorText};
use roomlet_rooms::{JoinError, Joined, Outbox, RoomShared};
use roomlet_runtime::bindings::types::{Grants, Peer, Rejection};
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
    /// (room, peer) → the gateway a session moved to, for a while after
    /// the move: deliveries still on their way here are sent on.
    moved: Mutex<HashMap<(String, String), String>>,
    /// Deliveries sent on ([`Edge::moved`]), published in arrival order.
    sending_on: mpsc::UnboundedSender<(String, bytes::Bytes)>,
}

/// How long a gateway sends on deliveries for a session that moved away:
/// what other gateways and the home sent before they heard of the move.
const SEND_ON: Duration = Duration::from_secs(30);

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
        let (sending_on, mut on) = mpsc::unbounded_channel::<(String, bytes::Bytes)>();
        let client = bus.client().clone();
        tokio::spawn(async move {
            while let Some((subject, msg)) = on.recv().await {
                let _ = client.publish(subject, msg).await;
            }
        });
        let edge = Arc::new(Self {
            bus,
            home,
            proxies: Mutex::default(),
            local_rooms,
            moved: Mutex::default(),
            sending_on,
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
        self.enter(room, peer, outbox, may_create, None).await
    }

    /// Re-points `peer`, a member of `room` whose session gateway `from`
    /// held, at this gateway: no leave, no join, deliveries to `outbox`.
    pub async fn move_in(
        self: &Arc<Self>,
        room: &str,
        peer: Peer,
        outbox: Outbox,
        from: &str,
    ) -> Result<(RoomLink, Joined), JoinError> {
        self.enter(room, peer, outbox, false, Some(from)).await
    }

    async fn enter(
        self: &Arc<Self>,
        room: &str,
        peer: Peer,
        outbox: Outbox,
        may_create: bool,
        moved_from: Option<&str>,
    ) -> Result<(RoomLink, Joined), JoinError> {
        let started = std::time::Instant::now();
        let mut target = self.pick_home(room, None).await?;
        let request = |seen_rev: Option<u64>| JoinRequest {
            room: room.to_owned(),
            peer: WirePeer::from(&peer),
            gateway: self.bus.node.clone(),
            region: self.bus.region.clone(),
            may_create,
            rejoin: moved_from.is_some(),
            seen_rev,
            moved_from: moved_from.map(str::to_owned),
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
                return match home.join_local(request(None), outbox.clone()).await {
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
                // A peer moving here was mirrored at its old gateway.
                p.at.write().remove(&peer.id);
                p.shared.insert(&peer.id, outbox.clone(), peer.grants);
                p
            });
            let reply = match self.request_join(&target, &request(None)).await {
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
        self.mirror_at(proxy, &peer.id, gw, peer.grants);
    }

    /// Mirrors `peer_id` as a member at gateway `gw`: frames for it go
    /// there.
    fn mirror_at(&self, proxy: &Proxy, peer_id: &str, gw: String, grants: Grants) {
        proxy.at.write().insert(peer_id.to_owned(), gw.clone());
        let out = forwarder(
            self.bus.clone(),
            proxy.room.clone(),
            peer_id.to_owned(),
            gw,
            proxy.at.clone(),
        );
        proxy.shared.insert(peer_id, out, grants);
    }
}

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
