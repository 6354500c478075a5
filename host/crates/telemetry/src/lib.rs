//! Prometheus metrics, rendered in the text exposition format on the
//! internal listener's `/metrics`.
//!
//! A deliberately small registry: counters, gauges and histograms with
//! label sets, process-wide (as Prometheus client libraries keep theirs),
//! every series labelled with the node's `region` and `node`. Values that
//! are cheaper to read than to track (connections, rooms) are sampled at
//! scrape time by the caller of [`render`].

use parking_lot::RwLock;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A family of counters.
pub struct Counter {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Series<AtomicU64>,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            values: Series::new(),
        }
    }

    /// Adds one to the series with these label values.
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1);
    }

    /// Adds `n`.
    pub fn add(&self, labels: &[&str], n: u64) {
        self.values.with(labels, AtomicU64::default, |v| {
            v.fetch_add(n, Ordering::Relaxed);
        });
    }

    /// The current value (tests).
    pub fn get(&self, labels: &[&str]) -> u64 {
        self.values
            .find(labels)
            .map(|v| v.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

/// The series of one metric: label values → cell. Counting on the hot
/// path (every frame) takes a shared lock and an atomic add, and
/// allocates nothing once the series exists.
struct Series<T> {
    cells: RwLock<Vec<Cell<T>>>,
}

/// One series: its label values and its value.
type Cell<T> = (Box<[String]>, Arc<T>);

impl<T> Series<T> {
    const fn new() -> Self {
        Self {
            cells: parking_lot::const_rwlock(Vec::new()),
        }
    }

    fn find(&self, labels: &[&str]) -> Option<Arc<T>> {
        self.cells
            .read()
            .iter()
            .find(|(k, _)| k.len() == labels.len() && k.iter().zip(labels).all(|(a, b)| a == b))
            .map(|(_, v)| v.clone())
    }

    fn with(&self, labels: &[&str], make: impl FnOnce() -> T, f: impl FnOnce(&T)) {
        if let Some(v) = self.find(labels) {
            return f(&v);
        }
        let mut cells = self.cells.write();
        let key: Box<[String]> = labels.iter().map(|s| (*s).to_owned()).collect();
        let v = match cells.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => v.clone(),
            None => {
                let v = Arc::new(make());
                cells.push((key, v.clone()));
                v
            }
        };
        drop(cells);
        f(&v);
    }

    /// Every series, sorted by label values (stable exposition).
    fn snapshot(&self) -> Vec<Cell<T>> {
        let mut all = self.cells.read().clone();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// A gauge without labels, tracked as it changes.
pub struct Gauge {
    name: &'static str,
    help: &'static str,
    value: AtomicI64,
}

impl Gauge {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            value: AtomicI64::new(0),
        }
    }

    /// Adds `d` (may be negative).
    pub fn add(&self, d: i64) {
        self.value.fetch_add(d, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.value.store(v, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

struct HistData {
    /// Observations per bucket: above the previous bound, at most this one.
    buckets: Box<[AtomicU64]>,
    /// The sum, as f64 bits.
    sum: AtomicU64,
    count: AtomicU64,
}

impl HistData {
    fn new(n: usize) -> Self {
        Self {
            buckets: (0..n).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }
}

/// A family of histograms.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    values: Series<HistData>,
}

impl Histogram {
    const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            labels,
            bounds,
            values: Series::new(),
        }
    }

    /// Records one observation.
    pub fn observe(&self, labels: &[&str], v: f64) {
        if !v.is_finite() {
            return;
        }
        self.values.with(
            labels,
            || HistData::new(self.bounds.len()),
            |h| {
                // One bucket per observation, made cumulative when rendered:
                // a component call's few microseconds fall under every bound,
                // and one atomic add each was 17 per relayed frame.
                let i = self.bounds.partition_point(|b| *b < v);
                if let Some(bucket) = h.buckets.get(i) {
                    bucket.fetch_add(1, Ordering::Relaxed);
                }
                let _ = h
                    .sum
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                        Some((f64::from_bits(bits) + v).to_bits())
                    });
                h.count.fetch_add(1, Ordering::Relaxed);
            },
        );
    }

    /// Observations so far in a series (tests).
    pub fn count(&self, labels: &[&str]) -> u64 {
        self.values
            .find(labels)
            .map(|h| h.count.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

const LATENCY: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5,
];
const RTT: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0];
const JITTER: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2];
const LOSS: &[f64] = &[0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5];
const FPS: &[f64] = &[1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 45.0, 60.0];
const HEIGHT: &[f64] = &[180.0, 240.0, 360.0, 480.0, 720.0, 1080.0, 1440.0, 2160.0];
const COUNTS: &[f64] = &[0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 1000.0];
const SAMPLES: &[f64] = &[0.0, 100.0, 1000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// Rooms this node moved to a new home (gateways) or took over (homes).
pub static REHOMES: Counter = Counter::new(
    "roomlet_rehomes_total",
    "Rooms moved to a new home after theirs was lost or drained, by side (gateway, home) and result.",
    &["side", "result"],
);
/// Peers made to leave their rooms because their gateway is gone: its
/// lease ran out (`expired`: it crashed or lost NATS) or it started again
/// under its old name (`restarted`). Their leaves look like ordinary
/// timeouts in the event log; this tells a lost gateway from them.
pub static ORPHANED: Counter = Counter::new(
    "roomlet_orphaned_peers_total",
    "Peers this home made leave their rooms because their gateway was lost, by cause (expired, restarted).",
    &["cause"],
);
/// Frames a room's old home refused after the room moved (fencing).
pub static FENCED: Counter = Counter::new(
    "roomlet_fenced_frames_total",
    "Frames refused by a node that is no longer the room's home.",
    &[],
);
/// Bus messages that did not decode. Nodes trust each other, so any
/// count here means a version skew or something else on the prefix.
pub static BUS_MALFORMED: Counter = Counter::new(
    "roomlet_bus_malformed_total",
    "Bus messages that did not decode and were dropped or refused, by subject kind (auth, auth-reply, join, join-reply, home, gw, hello, resumed, snapshot).",
    &["subject"],
);
/// Room kv keys whose commit did not reach JetStream, and what became
/// of them.
pub static KV_UNREPLICATED: Counter = Counter::new(
    "roomlet_kv_unreplicated_keys_total",
    "Room kv keys whose commit did not reach JetStream (deferred), later sent at their current value (replayed), or given up because the room left this node first (dropped); deferred - replayed - dropped are waiting.",
    &["result"],
);
/// Frames received, by type.
pub static FRAMES_IN: Counter = Counter::new(
    "roomlet_frames_in_total",
    "Client frames received, by type.",
    &["type"],
);
/// Frames sent, by type.
pub static FRAMES_OUT: Counter = Counter::new(
    "roomlet_frames_out_total",
    "Frames sent to clients, by type.",
    &["type"],
);
/// Error frames sent, by code.
pub static ERRORS: Counter = Counter::new(
    "roomlet_errors_total",
    "Error frames sent to clients, by code.",
    &["code"],
);
/// Refused tokens, by reason.
pub static AUTH_FAILURES: Counter = Counter::new(
    "roomlet_auth_failures_total",
    "Access tokens refused, by reason.",
    &["reason"],
);
/// Resume attempts.
pub static RESUMES: Counter = Counter::new(
    "roomlet_resumes_total",
    "Session resume attempts, by result.",
    &["result"],
);
/// Component instances created.
pub static INSTANTIATIONS: Counter = Counter::new(
    "roomlet_instantiations_total",
    "Component instances created, by function.",
    &["function"],
);
/// Guest failures.
pub static TRAPS: Counter = Counter::new(
    "roomlet_traps_total",
    "Component calls that failed, by function and kind (trap, deadline, memory-cap, instantiate).",
    &["function", "kind"],
);
/// Hot reloads.
pub static RELOADS: Counter = Counter::new(
    "roomlet_module_reloads_total",
    "Component reloads, by function and result.",
    &["function", "result"],
);
/// Events made durable in the room event log.
pub static EVENTS_WRITTEN: Counter = Counter::new(
    "roomlet_events_written_total",
    "Room events written and synced to the event log.",
    &[],
);
/// Events the log could not take or keep.
pub static EVENT_LOG_ERRORS: Counter = Counter::new(
    "roomlet_event_log_errors_total",
    "Room events the event log failed to make durable, by reason (io, overloaded).",
    &["reason"],
);
/// Webhook notifications, by outcome.
pub static WEBHOOKS: Counter = Counter::new(
    "roomlet_webhooks_total",
    "Webhook notifications by result: delivered, failed (attempts exhausted), dropped (queue full).",
    &["result"],
);
/// Webhook attempts that will be tried again.
pub static WEBHOOK_RETRIES: Counter = Counter::new(
    "roomlet_webhook_retries_total",
    "Webhook delivery attempts that failed and were retried.",
    &[],
);
/// Join latency.
pub static JOIN_SECONDS: Histogram = Histogram::new(
    "roomlet_join_duration_seconds",
    "Time from a join frame received to joined sent.",
    &[],
    LATENCY,
);
/// Component call latency.
pub static CALL_SECONDS: Histogram = Histogram::new(
    "roomlet_component_call_duration_seconds",
    "Duration of calls into components, by function and component version.",
    &["function", "version"],
    LATENCY,
);
/// Event log group commits.
pub static EVENT_LOG_SYNC_SECONDS: Histogram = Histogram::new(
    "roomlet_event_log_sync_duration_seconds",
    "Time to write and sync one group of room events.",
    &[],
    LATENCY,
);
/// Bus request latency (distributed deployments).
pub static BUS_SECONDS: Histogram = Histogram::new(
    "roomlet_bus_request_duration_seconds",
    "Duration of requests over the bus between nodes.",
    &[],
    LATENCY,
);
/// Call quality: round-trip time.
pub static CALL_RTT: Histogram = Histogram::new(
    "roomlet_call_rtt_seconds",
    "Client-reported WebRTC round-trip time.",
    &[],
    RTT,
);
/// Call quality: jitter.
pub static CALL_JITTER: Histogram = Histogram::new(
    "roomlet_call_jitter_seconds",
    "Client-reported WebRTC jitter.",
    &[],
    JITTER,
);
/// Call quality: packet loss.
pub static CALL_LOSS: Histogram = Histogram::new(
    "roomlet_call_packet_loss_ratio",
    "Client-reported fraction of packets lost.",
    &[],
    LOSS,
);
/// Call quality: received frame rate.
pub static CALL_FPS: Histogram = Histogram::new(
    "roomlet_call_video_fps",
    "Client-reported received video frames per second.",
    &[],
    FPS,
);
/// Call quality: received resolution.
pub static CALL_HEIGHT: Histogram = Histogram::new(
    "roomlet_call_video_height_pixels",
    "Client-reported received video height.",
    &[],
    HEIGHT,
);
/// Call quality: freezes.
pub static CALL_FREEZES: Histogram = Histogram::new(
    "roomlet_call_video_freezes",
    "Client-reported video freeze count per report.",
    &[],
    COUNTS,
);
/// Call quality: audio concealment.
pub static CALL_CONCEALED: Histogram = Histogram::new(
    "roomlet_call_audio_concealed_samples",
    "Client-reported concealed audio samples per report.",
    &[],
    SAMPLES,
);
/// Live component instances of rooms.
pub static ROOMS_LIVE: Gauge = Gauge::new(
    "roomlet_rooms_live",
    "Rooms with a live component instance.",
);
/// Hibernated rooms.
pub static ROOMS_HIBERNATED: Gauge = Gauge::new(
    "roomlet_rooms_hibernated",
    "Rooms hibernated: snapshot kept, instance dropped.",
);
/// Peers in rooms.
pub static PEERS: Gauge = Gauge::new("roomlet_peers", "Peers in rooms on this node.");

static IDENTITY: OnceLock<(String, String)> = OnceLock::new();

/// Sets the region and node labels (first call wins: one node per process
/// in production; tests share the process).
pub fn set_identity(region: &str, node: &str) {
    let _ = IDENTITY.set((region.to_owned(), node.to_owned()));
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(base: &str, names: &[&str], values: &[String], extra: Option<(&str, String)>) -> String {
    let mut s = String::from(base);
    for (n, v) in names.iter().zip(values) {
        let _ = write!(s, ",{n}=\"{}\"", escape(v));
    }
    if let Some((n, v)) = extra {
        let _ = write!(s, ",{n}=\"{v}\"");
    }
    format!("{{{s}}}")
}

fn fmt_f64(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

/// Values sampled at scrape time.
pub struct Sampled {
    /// Open WebSocket connections.
    pub connections: usize,
    /// Rooms on the node.
    pub rooms: usize,
    /// Whether the node is draining.
    pub draining: bool,
    /// With a bus: whether it is connected with a valid lease.
    pub bus_ready: Option<bool>,
}

/// The whole exposition.
pub fn render(sampled: &Sampled) -> String {
    let (region, node) = IDENTITY
        .get()
        .cloned()
        .unwrap_or_else(|| ("local".into(), "node".into()));
    let base = format!("region=\"{}\",node=\"{}\"", escape(&region), escape(&node));
    let mut out = String::with_capacity(16 * 1024);
    let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{base}}} {}",
            fmt_f64(v)
        );
    };
    gauge(
        &mut out,
        "roomlet_connections",
        "Open WebSocket connections.",
        sampled.connections as f64,
    );
    gauge(
        &mut out,
        "roomlet_rooms",
        "Rooms on this node (live and hibernated).",
        sampled.rooms as f64,
    );
    gauge(
        &mut out,
        "roomlet_draining",
        "1 while the node drains.",
        f64::from(u8::from(sampled.draining)),
    );
    if let Some(ready) = sampled.bus_ready {
        gauge(
            &mut out,
            "roomlet_bus_ready",
            "1 while the NATS bus is connected and this node's lease is valid.",
            f64::from(u8::from(ready)),
        );
    }
    for g in [&ROOMS_LIVE, &ROOMS_HIBERNATED, &PEERS] {
        gauge(&mut out, g.name, g.help, g.get() as f64);
    }
    for c in [
        &FRAMES_IN,
        &FRAMES_OUT,
        &ERRORS,
        &AUTH_FAILURES,
        &RESUMES,
        &INSTANTIATIONS,
        &TRAPS,
        &RELOADS,
        &EVENTS_WRITTEN,
        &EVENT_LOG_ERRORS,
        &WEBHOOKS,
        &WEBHOOK_RETRIES,
        &REHOMES,
        &FENCED,
        &ORPHANED,
        &BUS_MALFORMED,
        &KV_UNREPLICATED,
    ] {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} counter",
            c.name, c.help, c.name
        );
        for (k, v) in c.values.snapshot() {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(out, "{}{} {v}", c.name, labels(&base, c.labels, &k, None));
        }
    }
    for h in [
        &JOIN_SECONDS,
        &CALL_SECONDS,
        &BUS_SECONDS,
        &EVENT_LOG_SYNC_SECONDS,
        &CALL_RTT,
        &CALL_JITTER,
        &CALL_LOSS,
        &CALL_FPS,
        &CALL_HEIGHT,
        &CALL_FREEZES,
        &CALL_CONCEALED,
    ] {
        render_histogram(&mut out, &base, h);
    }
    process(&mut out, &base);
    out
}

/// One histogram family in the text format, buckets cumulative.
fn render_histogram(out: &mut String, base: &str, h: &Histogram) {
    let _ = writeln!(
        out,
        "# HELP {} {}\n# TYPE {} histogram",
        h.name, h.help, h.name
    );
    for (k, d) in h.values.snapshot() {
        let k = &k;
        let mut below = 0;
        for (b, n) in h.bounds.iter().zip(d.buckets.iter()) {
            below += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{}_bucket{} {below}",
                h.name,
                labels(base, h.labels, k, Some(("le", fmt_f64(*b))))
            );
        }
        // Read after the buckets: an observation racing this render may
        // have reached its bucket and not yet the count.
        let count = d.count.load(Ordering::Relaxed).max(below);
        let _ = writeln!(
            out,
            "{}_bucket{} {}",
            h.name,
            labels(base, h.labels, k, Some(("le", "+Inf".into()))),
            count
        );
        let _ = writeln!(
            out,
            "{}_sum{} {}",
            h.name,
            labels(base, h.labels, k, None),
            fmt_f64(d.sum())
        );
        let _ = writeln!(
            out,
            "{}_count{} {}",
            h.name,
            labels(base, h.labels, k, None),
            count
        );
    }
}

/// Process figures from /proc (Linux).
fn process(out: &mut String, base: &str) {
    let ticks_per_sec = 100.0; // CLK_TCK on Linux
    let page = 4096.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may contain spaces).
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // rest[0] is field 3 (state); utime=14, stime=15, starttime=22.
            let cpu = (num(11) + num(12)) / ticks_per_sec;
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total{{{base}}} {cpu}"
            );
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("btime ")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                })
            });
            if let Some(boot) = boot {
                let start = boot + num(19) / ticks_per_sec;
                let _ = writeln!(
                    out,
                    "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds{{{base}}} {start}"
                );
            }
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let f: Vec<f64> = statm
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() > 1 {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes{{{base}}} {}\n# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes{{{base}}} {}",
                f[1] * page,
                f[0] * page
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds{{{base}}} {}",
            fds.count()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Histogram, render_histogram};

    /// Buckets are kept apart and rendered cumulative, as Prometheus reads
    /// them: each `le` line counts every observation at or below it.
    #[test]
    fn histogram_buckets_render_cumulative() {
        static H: Histogram = Histogram::new("t_seconds", "test", &["f"], &[1.0, 2.0, 5.0]);
        for v in [0.5, 1.0, 1.5, 1.5, 4.0, 9.0, f64::NAN] {
            H.observe(&["x"], v);
        }
        let mut out = String::new();
        render_histogram(&mut out, "node=\"n\"", &H);
        let counts: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("t_seconds_bucket") || l.starts_with("t_seconds_count"))
            .map(|l| l.rsplit(' ').next().unwrap_or_default())
            .collect();
        assert_eq!(counts, ["2", "4", "5", "6", "6"], "{out}");
        assert!(out.contains("le=\"+Inf\"} 6"), "{out}");
        assert!(
            out.contains("t_seconds_sum{node=\"n\",f=\"x\"} 17.5"),
            "{out}"
        );
    }
}
