//! A home's traffic: deliveries to the gateways holding its rooms' peers,
//! and the frames those gateways send its rooms.

use super::{Home, Locations};
use crate::Bus;
use crate::wire::{self, HomeOp, ToGateway, ToHome, WireDelivery};
use roomlet_rooms::{Delivery, Outbox};
use roomlet_runtime::bindings::types::{RoomMessage, Signal, Target};
use std::sync::Arc;

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
    pub(super) async fn frame(&self, m: ToHome) {
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
                // From a gateway the peer's session has moved away from
                // (a copy it held, ending late): the peer stays.
                let stale = self
                    .held
                    .lock()
                    .get(&m.room)
                    .is_some_and(|h| h.at.read().get(&peer).is_some_and(|g| *g != m.gateway));
                if stale {
                    return;
                }
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
}
