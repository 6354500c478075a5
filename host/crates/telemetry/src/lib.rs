//! Metrics, one registry per node, served in the Prometheus text format
//! (0.0.4, not OpenMetrics) on the internal listener's `/metrics`.
//!
//! Each capability crate declares its own metrics in a struct of its own
//! (`GatewayMetrics`, `BusMetrics`, …) registered in the node's
//! [`Registry`], which labels every series with the node's `region` and
//! `node`. Two nodes in one process (the tests run several) keep separate
//! counters and their own labels.
//!
//! The counting itself is the `prometheus` crate's. On the per-frame path a
//! metric's labels are resolved once and the handle kept ([`ByName`], and
//! the runtime keeps each function's call histogram): a `with_label_values`
//! per frame would hash the labels and take a lock every time.

mod process;
mod sampled;

pub use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};

use prometheus::core::Collector;
use prometheus::{Encoder, HistogramOpts, Opts, TextEncoder};
use std::sync::{Arc, OnceLock};

/// Histogram bounds shared by several crates.
pub mod buckets {
    /// Durations from 10 µs to 2.5 s: calls, joins, bus requests, syncs.
    pub const LATENCY: &[f64] = &[
        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
}

/// A node's metrics.
#[derive(Clone)]
pub struct Registry {
    inner: prometheus::Registry,
    region: Arc<str>,
    node: Arc<str>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("region", &self.region)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The registry of node `node` in `region`, with the process figures
    /// (`process_*`) already in it.
    pub fn new(region: &str, node: &str) -> Self {
        let r = Self::bare(region, node);
        r.register(process::Process::new(&r));
        r
    }

    /// A registry nobody serves: for metrics structs built where no node
    /// is (unit tests, benchmarks).
    pub fn unserved() -> Self {
        Self::bare("local", "node")
    }

    fn bare(region: &str, node: &str) -> Self {
        Self {
            inner: prometheus::Registry::new(),
            region: region.into(),
            node: node.into(),
        }
    }

    fn opts(&self, name: &str, help: &str) -> Opts {
        Opts::new(name, help)
            .const_label("region", &*self.region)
            .const_label("node", &*self.node)
    }

    /// Adds a collector. The names are this crate's callers' constants, so
    /// a refusal (a name used twice) is a bug: it fails debug builds, and
    /// a release build serves the rest.
    fn register<C: Collector + 'static>(&self, c: C) {
        let r = self.inner.register(Box::new(c));
        debug_assert!(r.is_ok(), "metric registration refused: {r:?}");
    }

    /// A counter without labels.
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        let c = IntCounter::with_opts(self.opts(name, help)).expect("a valid counter definition");
        self.register(c.clone());
        c
    }

    /// A counter family.
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c =
            IntCounterVec::new(self.opts(name, help), labels).expect("a valid counter definition");
        self.register(c.clone());
        c
    }

    /// A gauge without labels, tracked as it changes.
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        let g = IntGauge::with_opts(self.opts(name, help)).expect("a valid gauge definition");
        self.register(g.clone());
        g
    }

    /// A gauge read from `value` at each scrape: for figures cheaper to
    /// read than to track (open connections, rooms).
    pub fn sampled_gauge(
        &self,
        name: &str,
        help: &str,
        value: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.register(sampled::Sampled::gauge(self, name, help, value));
    }

    /// A histogram without labels.
    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::from(self.opts(name, help)).buckets(buckets.to_vec());
        let h = Histogram::with_opts(opts).expect("a valid histogram definition");
        self.register(h.clone());
        h
    }

    /// A histogram family.
    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> HistogramVec {
        let opts = HistogramOpts::from(self.opts(name, help)).buckets(buckets.to_vec());
        let h = HistogramVec::new(opts, labels).expect("a valid histogram definition");
        self.register(h.clone());
        h
    }

    /// Every series, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding to memory fails only on a malformed family, which
        // registration already refused.
        let _ = TextEncoder::new().encode(&self.inner.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A counter family with one label whose values come from a fixed list of
/// names: each series is resolved on first use and kept, so counting is
/// one atomic add. A series appears only once counted, as any other.
pub struct ByName {
    family: IntCounterVec,
    names: &'static [&'static str],
    cells: Box<[OnceLock<IntCounter>]>,
}

impl ByName {
    /// The family `family`, for label values from `names`.
    pub fn new(family: IntCounterVec, names: &'static [&'static str]) -> Self {
        Self {
            family,
            names,
            cells: names.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    /// Adds one to the series named `names[i]` (nothing for an `i` out of range).
    pub fn inc(&self, i: usize) {
        if let (Some(cell), Some(name)) = (self.cells.get(i), self.names.get(i)) {
            cell.get_or_init(|| self.family.with_label_values(&[name]))
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets render cumulative, as Prometheus reads them, and every series
    /// carries the node's labels.
    #[test]
    fn histogram_buckets_render_cumulative_with_the_node_labels() {
        let r = Registry::unserved();
        let h = r.histogram_vec("t_seconds", "test", &["f"], &[1.0, 2.0, 5.0]);
        for v in [0.5, 1.0, 1.5, 1.5, 4.0, 9.0] {
            h.with_label_values(&["x"]).observe(v);
        }
        let out = r.render();
        let counts: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("t_seconds_bucket") || l.starts_with("t_seconds_count"))
            .map(|l| l.rsplit(' ').next().unwrap_or_default())
            .collect();
        assert_eq!(counts, ["2", "4", "5", "6", "6"], "{out}");
        assert!(
            out.contains("t_seconds_sum{f=\"x\",node=\"node\",region=\"local\"} 17.5"),
            "{out}"
        );
    }

    /// Two registries (two nodes in one process) count apart.
    #[test]
    fn two_registries_keep_their_own_counts_and_labels() {
        let a = Registry::new("eu", "a");
        let b = Registry::new("us", "b");
        let ca = ByName::new(a.counter_vec("t_total", "test", &["type"]), &["x", "y"]);
        let cb = ByName::new(b.counter_vec("t_total", "test", &["type"]), &["x", "y"]);
        ca.inc(0);
        ca.inc(0);
        cb.inc(1);
        cb.inc(7);
        let (ra, rb) = (a.render(), b.render());
        assert!(
            ra.contains("t_total{node=\"a\",region=\"eu\",type=\"x\"} 2"),
            "{ra}"
        );
        assert!(!ra.contains("type=\"y\""), "{ra}");
        assert!(
            rb.contains("t_total{node=\"b\",region=\"us\",type=\"y\"} 1"),
            "{rb}"
        );
        assert!(!rb.contains("type=\"x\""), "{rb}");
        assert!(
            ra.contains("process_open_fds{node=\"a\",region=\"eu\"}"),
            "{ra}"
        );
    }
}
