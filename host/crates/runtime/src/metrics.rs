//! The runtime's metrics: instances, failed calls and call durations.

use roomlet_telemetry::{Histogram, HistogramVec, IntCounterVec, IntGauge, Registry, buckets};

/// What the runtime counts, registered in a node's [`Registry`].
#[derive(Debug)]
pub struct RuntimeMetrics {
    instantiations: IntCounterVec,
    traps: IntCounterVec,
    calls: HistogramVec,
    pub(crate) rooms_live: IntGauge,
}

impl RuntimeMetrics {
    /// Registers the runtime's metrics in `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            instantiations: registry.counter_vec(
                "roomlet_instantiations_total",
                "Component instances created, by function.",
                &["function"],
            ),
            traps: registry.counter_vec(
                "roomlet_traps_total",
                "Component calls that failed, by function and kind (trap, deadline, memory-cap, instantiate).",
                &["function", "kind"],
            ),
            calls: registry.histogram_vec(
                "roomlet_component_call_duration_seconds",
                "Duration of calls into components, by function and component version.",
                &["function", "version"],
                buckets::LATENCY,
            ),
            rooms_live: registry.gauge(
                "roomlet_rooms_live",
                "Rooms with a live component instance.",
            ),
        }
    }

    /// The call histogram of one function's version, resolved once when it
    /// loads: every call observes it.
    pub(crate) fn calls_of(&self, function: &str, version: &str) -> Histogram {
        self.calls.with_label_values(&[function, version])
    }

    pub(crate) fn instantiated(&self, function: &str) {
        self.instantiations.with_label_values(&[function]).inc();
    }

    pub(crate) fn failed(&self, function: &str, kind: &str) {
        self.traps.with_label_values(&[function, kind]).inc();
    }
}

impl Default for RuntimeMetrics {
    /// Counted where nobody reads them (tests, benchmarks).
    fn default() -> Self {
        Self::new(&Registry::unserved())
    }
}
