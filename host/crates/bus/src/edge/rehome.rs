//! Following a room to a new home: when its home's lease is gone, when it
//! restarted, when it handed the room off, or when this gateway's own
//! lease lapsed.

use super::{Edge, Proxy, Route};
use crate::wire::{JoinReply, JoinRequest, WirePeer};
use roomlet_protocol::ErrorCode;
use roomlet_rooms::{Delivery, Outbox};
use roomlet_runtime::bindings::types::Peer;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Edge {
    /// Checks the homes of this gateway's rooms; re-homes the rooms of
    /// homes whose lease is gone.
    pub(super) async fn watch_homes(self: Arc<Self>) {
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
    pub(super) fn restarted(self: &Arc<Self>, node: &str) {
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
    pub(super) fn let_go_all(&self) {
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
    pub(super) fn rehome(self: &Arc<Self>, proxy: Arc<Proxy>, died: Option<Instant>) {
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
    pub(super) async fn rejoin_all(&self, proxy: &Proxy, old: &Route) -> Result<Route, String> {
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
                moved_from: None,
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
