//! A room's routing flags as committed state.
//!
//! `on-create` decides whether the room's module sees signals and
//! messages (`observe-signals`, `observe-messages`); what it does not
//! observe goes gateway to gateway. The flags live in the room's memory,
//! and until the module runs they default to "observe". A room taken over
//! after its home died is rebuilt from re-reported peers without running
//! the module, so without a record of the flags it would pull every frame
//! through the home (a detour that also puts frames meant to skip the home
//! at the mercy of its next failure). The home therefore keeps them in the
//! room's JetStream bucket once they are known and restores them when it
//! claims the room without a hand-off snapshot.

use super::Home;
use roomlet_rooms::RoomHandle;

/// `(observe_signals, observe_messages)`.
pub(super) type Routing = (bool, bool);

/// The flags a room has now.
pub(super) fn routing_of(handle: &RoomHandle) -> Routing {
    let shared = handle.shared();
    (shared.observe_signals(), shared.observe_messages())
}

impl Home {
    /// Restores the flags a previous home committed, for a room claimed
    /// without a snapshot; what it returns is what is on record.
    pub(super) async fn restore_routing(&self, room: &str, handle: &RoomHandle) -> Option<Routing> {
        match self.replica.routing(room).await {
            Ok(Some((signals, messages))) => {
                handle.shared().set_observe(signals, messages);
                Some((signals, messages))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(room, error = %e, "reading the room's routing flags failed");
                None
            }
        }
    }

    /// Commits the room's flags when they differ from the record: after a
    /// join (the first one runs `on-create`; a reload's may change them).
    /// A failure is logged: the room keeps routing as its module asked,
    /// only a crash before the next join would lose the record.
    pub(super) async fn commit_routing(&self, room: &str, handle: &RoomHandle) {
        let now = routing_of(handle);
        let Some(recorded) = self.held.lock().get(room).map(|h| h.routing) else {
            return;
        };
        // No record reads as the default (observe both), which also
        // spares a put for every room of a module that observes all.
        if recorded.unwrap_or((true, true)) == now {
            return;
        }
        match self.replica.put_routing(room, now).await {
            Ok(()) => {
                if let Some(h) = self.held.lock().get_mut(room) {
                    h.routing = Some(now);
                }
            }
            Err(e) => tracing::warn!(room, error = %e, "recording the room's routing flags failed"),
        }
    }
}
