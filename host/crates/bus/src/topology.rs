//! The gateway's [`Topology`] when the node is one of several: rooms at
//! their homes across NATS ([`Edge`]), tokens checked here or on an auth
//! node.

use super::Bus;
use super::edge::Edge;
use roomlet_gateway::journal::SessionKey;
use roomlet_gateway::topology::{
    AuthOutcome, BoxFuture, MediaOutcome, authenticate_here, issue_media_here,
};
use roomlet_gateway::{RoomLink, SessionImage, TakenSession, Topology};
use roomlet_rooms::{JoinError, Joined, Outbox};
use roomlet_runtime::AuthFunction;
use roomlet_runtime::bindings::authenticator::AuthRequest;
use roomlet_runtime::bindings::media::MediaRequest;
use roomlet_runtime::bindings::types::Peer;
use std::sync::Arc;

/// Rooms over NATS.
pub struct Nats {
    bus: Arc<Bus>,
    /// The rooms' homes, when this node runs the relay function (holds
    /// client sockets).
    edge: Option<Arc<Edge>>,
    /// Whether tokens are checked here (else by an auth node).
    local_auth: bool,
}

impl Nats {
    /// The topology of a node on `bus`; `edge` when it holds sockets.
    pub fn new(bus: Arc<Bus>, edge: Option<Arc<Edge>>, local_auth: bool) -> Self {
        Self {
            bus,
            edge,
            local_auth,
        }
    }
}

impl Topology for Nats {
    fn authenticate<'a>(
        &'a self,
        local: Arc<AuthFunction>,
        request: &'a AuthRequest,
    ) -> BoxFuture<'a, AuthOutcome> {
        Box::pin(async move {
            if self.local_auth {
                authenticate_here(local, request).await
            } else {
                super::auth::authenticate(&self.bus, request).await
            }
        })
    }

    fn issue_media<'a>(
        &'a self,
        local: Arc<AuthFunction>,
        request: &'a MediaRequest,
    ) -> BoxFuture<'a, MediaOutcome> {
        Box::pin(async move {
            if self.local_auth {
                issue_media_here(local, request).await
            } else {
                super::auth::issue_media(&self.bus, request).await
            }
        })
    }

    fn join<'a>(
        &'a self,
        room: &'a str,
        peer: Peer,
        outbox: Outbox,
        may_create: bool,
    ) -> BoxFuture<'a, Result<(RoomLink, Joined), JoinError>> {
        Box::pin(async move {
            match &self.edge {
                Some(edge) => edge.join(room, peer, outbox, may_create).await,
                None => Err(JoinError::Unavailable(
                    "this node does not run the relay function".into(),
                )),
            }
        })
    }

    fn resumed_elsewhere<'a>(&'a self, token: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some((_, node)) = token.rsplit_once('.') {
                self.bus.session_gone(node, token).await;
            }
        })
    }

    fn take_session<'a>(
        &'a self,
        key: SessionKey,
        outbox: Outbox,
    ) -> BoxFuture<'a, Option<TakenSession>> {
        Box::pin(async move {
            let edge = self.edge.as_ref()?;
            let stored = self.bus.sessions.take(&key).await?;
            let r = stored.record;
            let peer: Peer = r.peer.clone().into();
            // Re-pointed first: what the room sends from now on comes
            // here, and what it sent before is in the stream handed over.
            let link = match edge.move_in(&r.room, peer, outbox, &stored.gateway).await {
                Ok((link, _)) => link,
                Err(e) => {
                    tracing::info!(room = %r.room, peer = %r.peer.id, error = %e, "a session could not move here");
                    self.bus.sessions.end(&key).await;
                    return None;
                }
            };
            let handed = if stored.gateway == self.bus.node {
                None // this name's earlier process held it: its stream is gone
            } else {
                self.bus.hand_over(&stored.gateway, key).await
            };
            let image = handed
                .filter(|i| i.peer_id == r.peer.id)
                .unwrap_or_else(|| SessionImage::recorded(key, &r));
            Some(TakenSession {
                image,
                peer: r.peer,
                link,
            })
        })
    }

    fn token_suffix(&self) -> Option<&str> {
        Some(&self.bus.node)
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(edge) = &self.edge {
                edge.flush().await;
            }
        })
    }

    fn readiness(&self) -> Result<(), &'static str> {
        if self.bus.is_ready() {
            Ok(())
        } else {
            Err("bus unavailable")
        }
    }

    fn bus_ready(&self) -> Option<bool> {
        Some(self.bus.is_ready())
    }
}
