//! Members whose sessions move: re-pointed at a new gateway (the others
//! are told where frames for them go now), or orphaned when their gateway
//! is gone, waiting out the resume grace for their session to come back
//! at another gateway before they leave.

use super::upkeep::Orphaned;
use super::{Home, Locations};
use crate::wire::{self, ToGateway, WireDelivery};
use roomlet_rooms::{LeaveReason, RoomHandle};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Home {
    /// `peer` of `room` is at `gateway` now: no longer an orphan, and
    /// every other gateway holding members of the room sends it frames
    /// there (peers' signals go gateway to gateway, not through here).
    pub(super) async fn relocated(&self, room: &str, peer: &str, gateway: &str, at: &Locations) {
        self.unorphan(room, peer);
        let others: HashSet<String> = at
            .read()
            .values()
            .filter(|g| *g != gateway && **g != self.bus.node)
            .cloned()
            .collect();
        tracing::info!(%room, %peer, %gateway, "session moved to another gateway");
        for g in others {
            let notice = ToGateway {
                room: room.to_owned(),
                peer: peer.to_owned(),
                delivery: WireDelivery::Relocated {
                    at: gateway.to_owned(),
                },
            };
            let subject = self.bus.subject("gw", Some(&g));
            if let Err(e) = self
                .bus
                .client()
                .publish(subject, wire::encode(&notice))
                .await
            {
                tracing::debug!(error = %e, gateway = %g, "telling a gateway where a peer moved failed");
            }
        }
    }

    /// Makes `peer` of the room wait out the grace period for its session
    /// to resume elsewhere; then it leaves.
    pub(super) fn orphan(self: &Arc<Self>, handle: RoomHandle, peer: String, cause: Orphaned) {
        let key = (handle.name().to_string(), peer);
        let wait = self.orphan_waits.fetch_add(1, Ordering::Relaxed);
        self.orphans.lock().insert(key.clone(), (wait, cause));
        let home = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(home.orphan_grace).await;
            let still = {
                let mut orphans = home.orphans.lock();
                match orphans.get(&key) {
                    Some((w, _)) if *w == wait => orphans.remove(&key),
                    _ => None,
                }
            };
            if still.is_some() {
                home.orphan_leaves(&handle, cause, &key.1, "not resumed in time")
                    .await;
            }
        });
    }

    /// Whether `peer` of `room` was an orphan (it no longer is).
    pub(super) fn unorphan(&self, room: &str, peer: &str) -> Option<Orphaned> {
        self.orphans
            .lock()
            .remove(&(room.to_owned(), peer.to_owned()))
            .map(|(_, cause)| cause)
    }

    /// An orphan leaves its room, counted by how its gateway was lost.
    pub(super) async fn orphan_leaves(
        &self,
        handle: &RoomHandle,
        cause: Orphaned,
        peer: &str,
        why: &str,
    ) {
        if handle.shared().peer(peer).is_none() {
            return;
        }
        self.bus
            .metrics
            .orphaned
            .with_label_values(&[cause.label()])
            .inc();
        tracing::info!(room = %handle.name(), %peer, cause = cause.label(), why, "an orphaned peer leaves the room");
        handle.leave(peer, LeaveReason::Timeout).await;
    }
}
