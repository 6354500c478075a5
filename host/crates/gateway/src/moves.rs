//! Sessions that move between gateways (split mode): a client resuming at
//! a gateway that does not hold its session takes it over from the one
//! that does, and keeps its peer id. The room sees no leave and no join;
//! only where its deliveries go changes.
//!
//! The order matters. The new gateway first re-points the peer at itself
//! at the room's home (so what the room sends from then on comes to it),
//! then asks the old gateway for the session: the old one numbers what the
//! room sent it meanwhile into the resume buffer and hands the whole
//! stream over, so the client replays it and then reads on, in order, with
//! nothing lost. When the old gateway is gone, the session's record (in
//! the bus's store) gives the peer back without its stream: `gap: true`.

use crate::Gateway;
use crate::deliver::frame_for;
use crate::journal::SessionImage;
use crate::journal::SessionKey;
use crate::restart::{peer_state, session_image};
use crate::resume::PeerState;
use roomlet_rooms::Outbox;
use std::sync::Arc;

impl Gateway {
    /// Hands the session under `key` to gateway `to`, which has just
    /// re-pointed its peer at itself: its socket here (if still open) is
    /// closed, what its room sent is numbered into the resume buffer, and
    /// its room here forgets the peer without a leave. `None` when no
    /// session is held here under `key`, or it has ended (kicked, or its
    /// room closed).
    pub async fn hand_over(&self, key: SessionKey, to: &str) -> Option<SessionImage> {
        let mut state = self.resumable.take_key(key).await?;
        let keep = self.limits.keep();
        while let Some(d) = state.inbox.try_recv() {
            let Some((frame, close)) = frame_for(&mut state, d) else {
                continue;
            };
            if close.is_some() {
                return None; // the room ended the session meanwhile
            }
            state.number(&frame, keep);
        }
        tracing::info!(room = %state.room.name(), peer = %state.peer.id, gateway = %to, "session handed over to another gateway");
        state.room.moved_away(&state.peer.id, to).await;
        Some(session_image(key, &state))
    }
}

impl Gateway {
    /// After a drain's `reconnect`: returns once every parked session has
    /// been taken over by the gateway its client resumed at (the drain
    /// bounds the wait; what is left resumes from its record, `gap`).
    pub async fn until_moved(&self) {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
        while self.resumable.parked() > 0 {
            tick.tick().await;
        }
    }
}

/// Takes over the session `token` names from another gateway, for a
/// resume here; `None` when nobody holds or recorded it.
pub(crate) async fn take_elsewhere(gw: &Gateway, token: &str) -> Option<PeerState> {
    let (tx, inbox): (Outbox, _) = roomlet_rooms::outbox_capped(gw.limits.inbox_bytes);
    let taken = gw
        .topology()
        .take_session(crate::resume::key(token), tx)
        .await?;
    let mut state = peer_state(taken.image, Arc::new(taken.peer.into()), taken.link, inbox);
    token.clone_into(&mut state.resume_token);
    Some(state)
}
