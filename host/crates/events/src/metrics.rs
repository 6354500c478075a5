//! The event log's metrics.

use roomlet_telemetry::{Histogram, IntCounter, IntCounterVec, Registry, buckets};

/// What the event log counts.
#[derive(Debug, Clone)]
pub(crate) struct EventsMetrics {
    pub written: IntCounter,
    pub errors: IntCounterVec,
    pub sync_seconds: Histogram,
}

impl EventsMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            written: registry.counter(
                "roomlet_events_written_total",
                "Room events written and synced to the event log.",
            ),
            errors: registry.counter_vec(
                "roomlet_event_log_errors_total",
                "Room events the event log failed to make durable, by reason (io, overloaded).",
                &["reason"],
            ),
            sync_seconds: registry.histogram(
                "roomlet_event_log_sync_duration_seconds",
                "Time to write and sync one group of room events.",
                buckets::LATENCY,
            ),
        }
    }
}
