//! The `process_*` figures Prometheus clients conventionally serve, read
//! from /proc (Linux; elsewhere they are absent).

use crate::Registry;
use crate::sampled::Sampled;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

/// CPU time, start time, memory and open files of this process.
pub(crate) struct Process {
    figures: Vec<Sampled>,
}

/// Clock ticks per second of /proc/self/stat's times (`CLK_TCK`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;
/// Bytes per page of /proc/self/statm.
const PAGE: f64 = 4096.0;

impl Process {
    pub fn new(registry: &Registry) -> Self {
        let figures = vec![
            Sampled::counter(
                registry,
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                || {
                    stat_field(11)
                        .zip(stat_field(12))
                        .map_or(0.0, |(u, s)| (u + s) / TICKS_PER_SEC)
                },
            ),
            Sampled::gauge(
                registry,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                || {
                    boot_time()
                        .zip(stat_field(19))
                        .map_or(0.0, |(b, t)| b + t / TICKS_PER_SEC)
                },
            ),
            Sampled::gauge(
                registry,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                || statm_field(1) * PAGE,
            ),
            Sampled::gauge(
                registry,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                || statm_field(0) * PAGE,
            ),
            Sampled::gauge(
                registry,
                "process_open_fds",
                "Number of open file descriptors.",
                || std::fs::read_dir("/proc/self/fd").map_or(0.0, |d| d.count() as f64),
            ),
        ];
        Self { figures }
    }
}

impl Collector for Process {
    fn desc(&self) -> Vec<&Desc> {
        self.figures.iter().flat_map(|f| f.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return Vec::new();
        }
        self.figures.iter().flat_map(|f| f.collect()).collect()
    }
}

/// Field `i` of /proc/self/stat counted from the one after the command
/// name (which may hold spaces): 0 is the state, 11 utime, 12 stime, 19
/// the start time in ticks after boot.
fn stat_field(i: usize) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(i)?.parse().ok()
}

/// Field `i` of /proc/self/statm, in pages: 0 total, 1 resident.
fn statm_field(i: usize) -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(i)?.parse().ok())
        .unwrap_or(0.0)
}

/// The boot time, seconds since the Unix epoch.
fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}
