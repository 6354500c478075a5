//! [`RoomsConfig`]: the node-level policy every room runs under.

use serde::Deserialize;
use std::time::Duration;

/// Node-level room policy.
#[derive(Debug, Clone)]
pub struct RoomsConfig {
    /// Quiet period after which a room is snapshotted and its instance
    /// dropped; `None` keeps instances forever.
    pub hibernate_after: Option<Duration>,
    /// Most rooms on this node.
    pub max_rooms: usize,
    /// Most peers in one room, whatever the module says.
    pub max_peers_per_room: usize,
    /// Traps within `trap_window` after which the room is closed.
    pub trap_limit: u32,
    /// See `trap_limit`.
    pub trap_window: Duration,
    /// Mailbox depth per room: senders wait when it is full.
    pub mailbox: usize,
    /// Where rooms record joins, leaves, opens, closes and errors.
    pub events: roomlet_events::EventSink,
    /// Where rooms count peers and hibernations.
    pub metrics: crate::RoomsMetrics,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            hibernate_after: Some(Duration::from_secs(60)),
            max_rooms: 10_000,
            max_peers_per_room: 500,
            trap_limit: 5,
            trap_window: Duration::from_secs(60),
            mailbox: 256,
            events: Default::default(),
            metrics: Default::default(),
        }
    }
}

/// `[rooms]`: node-level room policy.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsSection {
    /// Most rooms on this node.
    pub max_rooms: usize,
    /// Most peers per room (the module may allow fewer).
    pub max_peers_per_room: usize,
    /// Quiet period before a room hibernates; 0 disables.
    pub hibernate_after_ms: u64,
    /// Traps within the window after which a room is closed.
    pub trap_limit: u32,
    /// See `trap_limit`.
    pub trap_window_ms: u64,
}

impl Default for RoomsSection {
    fn default() -> Self {
        Self {
            max_rooms: 10_000,
            max_peers_per_room: 500,
            hibernate_after_ms: 60_000,
            trap_limit: 5,
            trap_window_ms: 60_000,
        }
    }
}
