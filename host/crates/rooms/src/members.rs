//! [`RoomShared`]: a room's member table, read by sessions without a trip
//! through the room's mailbox.

use super::delivery::Delivery;
use super::inbox::Outbox;
use parking_lot::RwLock;
use roomlet_runtime::bindings::types::Grants;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What gateways need without a trip through the mailbox: the outboxes
/// of the room's peers, for the signals and messages the module does not
/// observe.
#[derive(Debug)]
pub struct RoomShared {
    pub(super) members: RwLock<HashMap<Arc<str>, (Outbox, Grants)>>,
    pub(super) observe_signals: AtomicBool,
    pub(super) observe_messages: AtomicBool,
    pub(super) closed: AtomicBool,
}

/// Until a module says otherwise (`on-create`), frames go through it: a
/// room restored from a snapshot taken on another node runs no
/// `on-create` here, and routing through a module that did not ask is
/// only slower, while skipping one that did ask is wrong.
impl Default for RoomShared {
    fn default() -> Self {
        Self {
            members: RwLock::default(),
            observe_signals: AtomicBool::new(true),
            observe_messages: AtomicBool::new(true),
            closed: AtomicBool::new(false),
        }
    }
}

impl RoomShared {
    /// The outbox and grants of peer `id`.
    pub fn peer(&self, id: &str) -> Option<(Outbox, Grants)> {
        self.members.read().get(id).cloned()
    }

    /// Adds or replaces a member. A local room's actor keeps its own
    /// table; this is for a table that mirrors a room homed on another
    /// node, kept by whoever holds that mirror.
    pub fn insert(&self, id: &str, outbox: Outbox, grants: Grants) {
        self.members.write().insert(id.into(), (outbox, grants));
    }

    /// Removes a member from a mirror.
    pub fn remove(&self, id: &str) -> Option<(Outbox, Grants)> {
        self.members.write().remove(id)
    }

    /// Sends `delivery` to every member but `except`, as a room message
    /// the module does not observe.
    pub fn broadcast(&self, delivery: &Delivery, except: &str) {
        for (id, (outbox, _)) in self.members.read().iter() {
            if **id != *except {
                let _ = outbox.send(delivery.clone());
            }
        }
    }

    /// Every member id.
    pub fn member_ids(&self) -> Vec<Arc<str>> {
        self.members.read().keys().cloned().collect()
    }

    /// Marks a mirror closed: sessions holding it join again.
    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Sets which frames go through the room's module, as its `on-create`
    /// asked (a proxy learns it from the home).
    pub fn set_observe(&self, signals: bool, messages: bool) {
        self.observe_signals.store(signals, Ordering::Relaxed);
        self.observe_messages.store(messages, Ordering::Relaxed);
    }

    /// Whether the room has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Whether the module wants to see signals.
    pub fn observe_signals(&self) -> bool {
        self.observe_signals.load(Ordering::Relaxed)
    }

    /// Whether the module wants to see messages.
    pub fn observe_messages(&self) -> bool {
        self.observe_messages.load(Ordering::Relaxed)
    }
}
