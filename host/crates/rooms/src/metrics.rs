//! The rooms' metrics.

use roomlet_telemetry::{IntGauge, Registry};

/// What rooms count, registered in a node's [`Registry`].
#[derive(Debug, Clone)]
pub struct RoomsMetrics {
    pub(crate) peers: IntGauge,
    pub(crate) hibernated: IntGauge,
}

impl RoomsMetrics {
    /// Registers the rooms' metrics in `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            peers: registry.gauge("roomlet_peers", "Peers in rooms on this node."),
            hibernated: registry.gauge(
                "roomlet_rooms_hibernated",
                "Rooms hibernated: snapshot kept, instance dropped.",
            ),
        }
    }
}

impl Default for RoomsMetrics {
    /// Counted where nobody reads them (tests, benchmarks).
    fn default() -> Self {
        Self::new(&Registry::unserved())
    }
}
