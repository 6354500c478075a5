//! The bus's metrics: rooms moved, peers orphaned, frames fenced, bus
//! messages refused, request latency and kv the replica missed.

use roomlet_telemetry::{Histogram, IntCounter, IntCounterVec, Registry, buckets};

/// What the bus counts, registered in a node's [`Registry`].
#[derive(Debug, Clone)]
pub struct BusMetrics {
    /// Rooms moved to a new home (gateways) or taken over (homes).
    pub(crate) rehomes: IntCounterVec,
    /// Peers made to leave because their gateway was lost.
    pub(crate) orphaned: IntCounterVec,
    /// Frames a room's old home refused after the room moved.
    pub(crate) fenced: IntCounter,
    /// Bus messages that did not decode: nodes trust each other, so any
    /// count here means a version skew or something else on the prefix.
    pub(crate) malformed: IntCounterVec,
    pub(crate) request_seconds: Histogram,
    /// Room kv keys whose commit did not reach JetStream at once.
    pub(crate) kv_unreplicated: IntCounterVec,
}

impl BusMetrics {
    /// Registers the bus's metrics in `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            rehomes: registry.counter_vec(
                "roomlet_rehomes_total",
                "Rooms moved to a new home after theirs was lost or drained, by side (gateway, home) and result.",
                &["side", "result"],
            ),
            orphaned: registry.counter_vec(
                "roomlet_orphaned_peers_total",
                "Peers this home made leave their rooms because their gateway was lost, by cause (expired, restarted).",
                &["cause"],
            ),
            fenced: registry.counter(
                "roomlet_fenced_frames_total",
                "Frames refused by a node that is no longer the room's home.",
            ),
            malformed: registry.counter_vec(
                "roomlet_bus_malformed_total",
                "Bus messages that did not decode and were dropped or refused, by subject kind (auth, auth-reply, join, join-reply, home, gw, hello, resumed, snapshot).",
                &["subject"],
            ),
            request_seconds: registry.histogram(
                "roomlet_bus_request_duration_seconds",
                "Duration of requests over the bus between nodes.",
                buckets::LATENCY,
            ),
            kv_unreplicated: registry.counter_vec(
                "roomlet_kv_unreplicated_keys_total",
                "Room kv keys whose commit did not reach JetStream (deferred), later sent at their current value (replayed), or given up because the room left this node first (dropped); deferred - replayed - dropped are waiting.",
                &["result"],
            ),
        }
    }
}
