//! Who is in a room, and what its members are sent.

use super::{MAX_TIMER, Member, RoomActor};
use crate::delivery::{Delivery, LeaveReason};
use crate::handle::{Ending, JoinError, Joined};
use crate::inbox::Outbox;
use roomlet_events::{Event, EventKind};
use roomlet_protocol::ErrorCode;
use roomlet_runtime::CallError;
use roomlet_runtime::bindings::room::{Action, Outgoing};
use roomlet_runtime::bindings::types::{Grants, Peer, Signal};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl RoomActor {
    pub(super) async fn join(&mut self, peer: Peer, outbox: Outbox) -> Result<Joined, JoinError> {
        if self.members.len() >= self.config.max_peers_per_room {
            return Err(JoinError::Refused {
                code: ErrorCode::RoomFull,
                reason: format!(
                    "room is full (this node allows {} peers per room)",
                    self.config.max_peers_per_room
                ),
            });
        }
        if self.member(&peer.id).is_some() {
            return Err(JoinError::Refused {
                code: ErrorCode::AlreadyJoined,
                reason: "a peer with this id is already in the room".into(),
            });
        }
        let actions = match self.call(async |i| i.on_join(&peer).await).await {
            Ok(Ok(actions)) => actions,
            Ok(Err(rejection)) => return Err(JoinError::Rejected(rejection)),
            // The client hears the kind; the whole text (a trap's wasm
            // backtrace) is in the host log, written by `trapped`.
            Err(e) => return Err(JoinError::Module(e.kind().to_owned())),
        };
        let peer = Arc::new(peer);
        let durable = self
            .config
            .events
            .record(Event::new(EventKind::PeerJoined, &self.name).peer(&peer.id, &peer.identity));
        let joined = Joined {
            durable,
            peers: self
                .members
                .iter()
                .filter(|m| !m.peer.grants.contains(Grants::HIDDEN))
                .map(|m| m.peer.clone())
                .collect(),
            metadata: self.metadata.to_string(),
        };
        if !peer.grants.contains(Grants::HIDDEN) {
            self.broadcast(&Delivery::PeerJoined(peer.clone()), None);
        }
        self.shared
            .members
            .write()
            .insert(peer.id.as_str().into(), (outbox.clone(), peer.grants));
        self.config.metrics.peers.inc();
        self.members.push(Member {
            peer: peer.clone(),
            outbox,
        });
        self.refresh_peers();
        tracing::debug!(peer = %peer.id, identity = %peer.identity, "peer joined");
        self.apply(actions, Some(&peer.id)).await;
        Ok(joined)
    }

    pub(super) fn rejoin(&mut self, peer: Peer, outbox: Outbox) -> Joined {
        let joined = Joined {
            // A re-report after a move: the join was logged where it happened.
            durable: roomlet_events::Receipt::ready(Ok(())),
            peers: self
                .members
                .iter()
                .filter(|m| !m.peer.grants.contains(Grants::HIDDEN) && m.peer.id != peer.id)
                .map(|m| m.peer.clone())
                .collect(),
            metadata: self.metadata.to_string(),
        };
        self.seat(Arc::new(peer), outbox);
        joined
    }

    /// Makes `peer` a member reached through `outbox`, with no join told
    /// to anyone (a room that moved here, or came back after a restart);
    /// a member already there keeps its place and takes the new outbox.
    pub(super) fn seat(&mut self, peer: Arc<Peer>, outbox: Outbox) {
        self.shared
            .members
            .write()
            .insert(peer.id.as_str().into(), (outbox.clone(), peer.grants));
        match self.members.iter_mut().find(|m| m.peer.id == peer.id) {
            Some(m) => m.outbox = outbox,
            None => {
                self.config.metrics.peers.inc();
                self.members.push(Member { peer, outbox });
            }
        }
        self.refresh_peers();
    }

    /// Removes a member; `notify_module` calls `on-leave`.
    pub(super) async fn leave(&mut self, peer_id: &str, reason: LeaveReason, notify_module: bool) {
        let Some(pos) = self.members.iter().position(|m| &*m.peer.id == peer_id) else {
            return;
        };
        let member = self.members.remove(pos);
        self.config.metrics.peers.dec();
        self.shared.members.write().remove(peer_id);
        self.refresh_peers();
        if !member.peer.grants.contains(Grants::HIDDEN) {
            self.broadcast(
                &Delivery::PeerLeft {
                    peer_id: member.peer.id.as_str().into(),
                    reason,
                },
                None,
            );
        }
        tracing::debug!(peer = %peer_id, reason = reason.as_str(), "peer left");
        let kind = match reason {
            LeaveReason::Kicked => EventKind::PeerKicked,
            _ => EventKind::PeerLeft,
        };
        let _ = self.config.events.record(
            Event::new(kind, &self.name)
                .peer(peer_id, &member.peer.identity)
                .reason(reason.as_str()),
        );
        if notify_module
            && let Ok(actions) = self.call(async |i| i.on_leave(&member.peer).await).await
        {
            self.apply(actions, None).await;
        }
    }

    pub(super) async fn kick(&mut self, peer_id: &str, reason: &str) {
        if let Some(m) = self.member(peer_id) {
            let _ = m.outbox.send(Delivery::Kicked {
                reason: reason.to_owned(),
            });
            self.leave(peer_id, LeaveReason::Kicked, true).await;
        }
    }

    pub(super) fn set_metadata(&mut self, metadata: String) {
        self.metadata = metadata.into();
        self.broadcast(&Delivery::Metadata(self.metadata.clone()), None);
    }

    /// The membership changed: the module's copy is rebuilt on next use.
    pub(super) fn refresh_peers(&mut self) {
        self.peers = None;
    }

    /// The members as the module sees them.
    pub(super) fn peers(&mut self) -> Arc<Vec<Peer>> {
        self.peers
            .get_or_insert_with(|| {
                Arc::new(self.members.iter().map(|m| (*m.peer).clone()).collect())
            })
            .clone()
    }

    pub(super) fn broadcast(&self, delivery: &Delivery, except: Option<&[String]>) {
        for m in &self.members {
            if except.is_some_and(|ex| ex.iter().any(|e| *e == m.peer.id)) {
                continue;
            }
            let _ = m.outbox.send(delivery.clone());
        }
    }

    pub(super) fn deliver_signal(&self, signal: Signal) {
        if let Some(m) = self.member(&signal.to) {
            let _ = m.outbox.send(Delivery::Signal {
                from: signal.sender.into(),
                kind: signal.kind,
                payload: signal.payload.into(),
                // What a module forwards is its own frame: no client id.
                id: 0,
            });
        }
    }

    pub(super) fn module_error(&self, sender: &str, e: &CallError) {
        if let Some(m) = self.member(sender) {
            let _ = m.outbox.send(Delivery::Error {
                code: ErrorCode::ModuleError,
                message: format!("the room's module failed on this frame ({})", e.kind()).into(),
            });
        }
    }

    /// Runs what a hook asked for. `sender` is the peer whose frame is
    /// being handled (the target of `reject`).
    pub(super) async fn apply(&mut self, actions: Vec<Action>, sender: Option<&str>) {
        for action in actions {
            if self.closed {
                return;
            }
            match action {
                Action::Send((to, out)) => {
                    let d = outgoing(out);
                    for id in to {
                        if let Some(m) = self.member(&id) {
                            let _ = m.outbox.send(d.clone());
                        }
                    }
                }
                Action::Broadcast((out, except)) => {
                    self.broadcast(&outgoing(out), Some(&except));
                }
                Action::Reject(r) => {
                    if let Some(m) = sender.and_then(|s| self.member(s)) {
                        let _ = m.outbox.send(Delivery::Rejected {
                            code: r.code.into(),
                            message: r.reason.into(),
                        });
                    }
                }
                Action::Kick((peer_id, reason)) => {
                    if let Some(m) = self.member(&peer_id) {
                        let _ = m.outbox.send(Delivery::Kicked { reason });
                        // The module asked for it: it is not told again.
                        Box::pin(self.leave(&peer_id, LeaveReason::Kicked, false)).await;
                    }
                }
                Action::SetMetadata(m) => self.set_metadata(m),
                Action::SetTimer(ms) => {
                    self.timer = Some(Instant::now() + Duration::from_millis(ms).min(MAX_TIMER));
                }
                Action::Close(reason) => Box::pin(self.close(Ending::Closed(reason))).await,
            }
        }
    }
}

fn outgoing(out: Outgoing) -> Delivery {
    Delivery::Message {
        from: out.sender.into(),
        data: out.data.into(),
        id: 0,
    }
}
