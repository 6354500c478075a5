//! What flows through a proxy: the sessions' operations out to the room's
//! home, in order, and deliveries in from homes and other gateways.

use super::{Edge, Proxy};
use crate::wire::{self, HomeOp, ToGateway, ToHome, WireDelivery};
use roomlet_gateway::RoomOp;
use roomlet_protocol::ErrorCode;
use roomlet_rooms::Delivery;
use roomlet_runtime::bindings::types::{Peer, Target};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

impl Edge {
    /// The proxy's mailbox: frames to the home, in order, waiting out a
    /// re-homing instead of losing them.
    pub(super) async fn forward(
        self: Arc<Self>,
        proxy: Arc<Proxy>,
        mut rx: mpsc::Receiver<Box<RoomOp>>,
    ) {
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
                // After everything the peer sent from here: the home has
                // its new location already.
                RoomOp::MovedAway { peer_id, to } => {
                    let grants = proxy.shared.peer(&peer_id).map(|(_, g)| g);
                    self.forget_local(&proxy, &peer_id);
                    // Still a member, at `to`, for the peers here.
                    if let Some(grants) = grants
                        && !proxy.shared.is_closed()
                    {
                        self.mirror_at(&proxy, &peer_id, to.clone(), grants);
                    }
                    self.send_on(&proxy.room, &peer_id, to);
                    continue;
                }
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

    pub(super) fn forget_local(&self, proxy: &Proxy, peer_id: &str) {
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

    /// Sends on what still arrives here for `peer` of `room`, whose
    /// session moved to gateway `to`, for [`super::SEND_ON`].
    pub(super) fn send_on(self: &Arc<Self>, room: &str, peer: &str, to: String) {
        let key = (room.to_owned(), peer.to_owned());
        self.moved.lock().insert(key.clone(), to.clone());
        let e = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(super::SEND_ON).await;
            let mut moved = e.moved.lock();
            if moved.get(&key) == Some(&to) {
                moved.remove(&key);
            }
        });
    }

    /// A delivery from a home or another gateway for a peer held here.
    pub(super) fn deliver(self: &Arc<Self>, m: ToGateway) {
        let proxy = self.proxies.lock().get(&m.room).cloned();
        if let WireDelivery::Relocated { at } = &m.delivery {
            // A member's session moved: frames for it go to `at` now.
            if let Some(p) = proxy
                && !p.local.lock().contains_key(&m.peer)
                && let Some((_, grants)) = p.shared.peer(&m.peer)
            {
                self.mirror_at(&p, &m.peer, at.clone(), grants);
            }
            return;
        }
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
        let Some(outbox) = outbox else {
            // The peer's session moved on from here: so does this.
            let to = self
                .moved
                .lock()
                .get(&(m.room.clone(), m.peer.clone()))
                .cloned();
            if let Some(to) = to {
                let subject = self.bus.subject("gw", Some(&to));
                let _ = self.sending_on.send((subject, wire::encode(&m)));
            }
            return;
        };
        let Some(d) = m.delivery.into_delivery() else {
            return;
        };
        let _ = outbox.send(d);
        if ends && let Some(p) = proxy {
            self.forget_local(&p, &m.peer);
        }
    }
}
