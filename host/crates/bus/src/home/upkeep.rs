//! Keeping a home's rooms in order: letting go of them when the lease
//! lapses, releasing closed ones, making the peers of lost gateways leave,
//! catching JetStream up on kv it missed, and handing every room off at a
//! drain.

use super::{Held, Home, Locations};
use crate::wire;
use roomlet_rooms::RoomHandle;
use std::sync::Arc;
use std::time::Duration;

impl Home {
    /// Gives up rooms this node may no longer serve (lease lost) and
    /// releases the directory entries of rooms that closed.
    pub(super) async fn sweep(self: Arc<Self>) {
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
    /// `timeout`) unless their session resumes at another gateway within
    /// the grace period. Nothing else would remove them: a gateway that
    /// crashed sends no `leave`, and one that lost NATS for longer than the
    /// TTL has told its sessions to join again ([`super::edge`]). Without
    /// this they stayed members for the room's life, listed to everyone,
    /// filling one-to-one rooms. (A gateway restarted under its old name
    /// says `hello` instead: its key never lapses.)
    pub(super) async fn drop_orphans(self: &Arc<Self>) {
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
        // A reap unanswered by a gateway that lives on: its peer stays.
        let rooms = self.rooms_and_locations();
        self.unanswered.lock().retain(|(room, peer)| {
            rooms
                .iter()
                .any(|(h, _)| **h.name() == **room && h.shared().peer(peer).is_some())
        });
        for gw in gateways {
            match self.bus.directory.node(&gw).await {
                Ok(Some(_)) => {}
                Ok(None) => self.drop_peers_of(&gw, Orphaned::Expired).await,
                Err(_) => return, // the bus is down: nothing to learn now
            }
        }
    }

    /// The peers held by gateway `gw` become orphans here: they leave
    /// their rooms after the grace period unless their sessions resume
    /// elsewhere. All of them are taken off the location tables first, in
    /// one pass without a wait: a restarted gateway's first joins,
    /// arriving meanwhile, are not caught up in it. Only members are
    /// orphaned: an entry may outlive its peer's membership for a moment
    /// (a kicked peer's, until its forwarder has sent the kick).
    pub(super) async fn drop_peers_of(self: &Arc<Self>, gw: &str, cause: Orphaned) {
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
        for (handle, peer) in gone {
            let key = (handle.name().to_string(), peer);
            if self.unanswered.lock().remove(&key) {
                // Its user joined again elsewhere while this gateway died.
                self.orphan_leaves(&handle, cause, &key.1, "joined again elsewhere")
                    .await;
                continue;
            }
            tracing::info!(room = %key.0, peer = %key.1, gateway = %gw, cause = cause.label(), grace = ?self.orphan_grace, "the peer's gateway is gone; it leaves unless its session resumes elsewhere");
            self.orphan(handle, key.1, cause);
        }
    }

    pub(super) fn rooms_and_locations(&self) -> Vec<(RoomHandle, Locations)> {
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
    pub(super) async fn catch_up(&self, room: &str, handle: &RoomHandle, stays: bool) {
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

    pub(super) fn forget_unreplicated(&self, room: &str) {
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
    pub async fn release_all(&self, info: crate::directory::NodeInfo) {
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
pub(super) enum Orphaned {
    /// The gateway's liveness key expired.
    Expired,
    /// The gateway said `hello` from a new process.
    Restarted,
}

impl Orphaned {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Restarted => "restarted",
        }
    }
}
