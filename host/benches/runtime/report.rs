//! Timing, percentiles, memory figures and the printed tables.

use crate::fixture::*;
use roomlet::rooms::{Rooms, RoomsConfig, outbox};
use roomlet::runtime::RoomsFunction;
use roomlet::runtime::engine::EngineSettings;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

pub(crate) struct Stats {
    pub(crate) name: &'static str,
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Stats {
    pub(crate) fn of(name: &'static str, mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty());
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        let total: Duration = samples.iter().sum();
        Stats {
            name,
            p50: at(0.50),
            p99: at(0.99),
            max: samples[samples.len() - 1],
            mean: total / samples.len() as u32,
        }
    }
}

#[derive(Default)]
pub(crate) struct Table(pub(crate) Vec<Stats>);

impl Table {
    pub(crate) fn render(&self, iters: usize) -> String {
        let mut s = format!(
            "\npercentiles over {iters} timed iterations each (after {} warm-up iterations)\n",
            warmup(iters)
        );
        s += "| operation | p50 | p99 | max | mean |\n|---|---:|---:|---:|---:|\n";
        for st in &self.0 {
            s += &format!(
                "| {} | {} | {} | {} | {} |\n",
                st.name,
                fmt(st.p50),
                fmt(st.p99),
                fmt(st.max),
                fmt(st.mean)
            );
        }
        s
    }

    /// WASM vs native `on-message`, and the target for it.
    pub(crate) fn print_ratios(&self) {
        let wasm = self.get("on_message/wasm");
        for native in ["on_message/native_policy", "on_message/native_glue"] {
            let native = self.get(native);
            for (q, w, n) in [("p50", wasm.p50, native.p50), ("p99", wasm.p99, native.p99)] {
                let (w, n) = (w.as_nanos() as f64, n.as_nanos() as f64);
                let budget = 2.0 * n + 1000.0;
                println!(
                    "{q} wasm / {}: {:.1}x; target wasm <= 2 x native + 1 µs = {budget:.0} ns: {}",
                    native.name,
                    w / n.max(1.0),
                    if w <= budget { "met" } else { "NOT met" }
                );
            }
        }
    }

    pub(crate) fn get(&self, name: &str) -> &Stats {
        self.0
            .iter()
            .find(|s| s.name == name)
            .expect("benchmark ran")
    }
}

pub(crate) fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else {
        format!("{:.2} µs", ns as f64 / 1000.0)
    }
}

pub(crate) fn warmup(iters: usize) -> usize {
    (iters / 10).max(10)
}

/// Times `op` `iters` times after a warm-up; `op` returns its own duration
/// so that setup and teardown stay out of the sample.
pub(crate) async fn sample<F: AsyncFnMut() -> Duration>(iters: usize, mut op: F) -> Vec<Duration> {
    for _ in 0..warmup(iters) {
        op().await;
    }
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters {
        v.push(op().await);
    }
    v
}

/// Resident set size in bytes, from `/proc/self/statm` (4 KiB pages).
pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

pub(crate) fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

/// The most frequent kinds of mapping (permissions, size), to see what
/// uses up `vm.max_map_count`.
pub(crate) fn map_kinds(top: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut kinds: HashMap<(String, u64), usize> = HashMap::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let size = range
            .split_once('-')
            .and_then(|(a, b)| {
                Some(u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?)
            })
            .unwrap_or(0);
        *kinds.entry((perms.to_owned(), size)).or_default() += 1;
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    kinds
        .iter()
        .take(top)
        .map(|((perms, size), n)| format!("{n} x {perms} {} KiB", size / 1024))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// `n` live rooms with one peer each, created through the actor path.
pub(crate) fn live_rooms(
    rt: &Runtime,
    function: &Arc<RoomsFunction>,
    n: usize,
    settings: EngineSettings,
) {
    println!(
        "\nlive rooms: {n} rooms through Rooms::join, one peer each, hibernation off \
         (engine max_instances={}, max_memory={})",
        settings.max_instances,
        mib(settings.max_memory as u64)
    );
    let rooms = Rooms::new(
        function.clone(),
        RoomsConfig {
            hibernate_after: None,
            max_rooms: n,
            ..RoomsConfig::default()
        },
    );
    rt.block_on(async {
        let rss0 = rss_bytes();
        let maps0 = map_count();
        println!("mappings before: {maps0}; most frequent: {}", map_kinds(3));
        let mut handles = Vec::with_capacity(n);
        let mut inboxes = Vec::with_capacity(n);
        let mut latency = Vec::with_capacity(n);
        let p = peer("p0");
        let start = Instant::now();
        for i in 0..n {
            let (tx, rx) = outbox();
            let t = Instant::now();
            match rooms
                .join(&format!("room-{i:06}"), p.clone(), tx, true)
                .await
            {
                Ok((h, _)) => {
                    latency.push(t.elapsed());
                    handles.push(h);
                    inboxes.push(rx);
                }
                Err(e) => {
                    println!("join #{i} FAILED: {e} ({}); stopping here", e.code());
                    break;
                }
            }
        }
        let total = start.elapsed();
        let created = handles.len();
        let rss1 = rss_bytes();
        let maps1 = map_count();
        let mut live = 0;
        for h in &handles {
            if h.status().await.is_some_and(|s| s.live && s.members == 1) {
                live += 1;
            }
        }
        println!(
            "created {created}/{n} rooms in {:.2} s ({:.1} µs per room, {:.0} rooms/s); \
             {live} confirmed live with one member; Rooms::len() = {}",
            total.as_secs_f64(),
            total.as_secs_f64() * 1e6 / created.max(1) as f64,
            created as f64 / total.as_secs_f64(),
            rooms.len()
        );
        if !latency.is_empty() {
            let s = Stats::of("join", latency);
            println!(
                "Rooms::join of a new room: p50 {}, p99 {}, max {}, mean {}",
                fmt(s.p50),
                fmt(s.p99),
                fmt(s.max),
                fmt(s.mean)
            );
        }
        let delta = rss1.saturating_sub(rss0);
        println!(
            "RSS {} -> {} (+{}), {:.1} KiB per room; memory mappings {maps0} -> {maps1} \
             (vm.max_map_count: {})",
            mib(rss0),
            mib(rss1),
            mib(delta),
            delta as f64 / 1024.0 / created.max(1) as f64,
            std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .map_or("?".into(), |s| s.trim().to_owned())
        );
        println!("most frequent mappings: {}", map_kinds(6));
        for h in &handles {
            h.close("bench done").await;
        }
        drop(inboxes);
    });
}
