//! Runtime benchmarks (issue 2): the cost of room instances and of calls
//! into them, against the same room policy compiled natively.
//!
//! `cargo bench -p roomlet --bench runtime` runs, in one process:
//!
//! 1. criterion benchmarks (mean with confidence interval) of
//!    - `instantiate`: `RoomsFunction::instantiate` of the embedded rooms
//!      component (the instance's drop is excluded from the timing),
//!    - `instantiate+on_create`: what the actor does for a fresh room,
//!    - `revive`: instantiate + `restore` of a hibernation snapshot,
//!    - `on_message/wasm`: one `RoomInstance::on_message` (200-byte JSON,
//!      `Target::Room`, 4 peers) through the host,
//!    - `on_message/native_policy`: the same `roomlet_module_rooms::policy::Room`
//!      code compiled natively, called with an in-memory `Host`,
//!    - `on_message/native_glue`: the same, plus the component's own glue
//!      (WIT record in, WIT actions out), i.e. everything the component
//!      does minus the canonical ABI and wasmtime,
//!    - `on_message/actor`: `RoomHandle::message` through the room's
//!      mailbox until all three other peers received the broadcast;
//! 2. a percentile table (p50/p99/max over `ROOMLET_BENCH_ITERS` timed
//!    iterations each, default 20,000) of the same operations;
//! 3. `ROOMLET_BENCH_ROOMS` (default 10,000; 0 skips) live rooms created
//!    through `Rooms::join` (one peer each, hibernation off): total time,
//!    per-join latency, and the RSS delta per room from `/proc/self/statm`.
//!
//! Set `ROOMLET_BENCH_CRITERION=0` to skip part 1. Under `cargo test
//! --benches` (criterion's test mode) every part runs briefly, as a smoke
//! test.

use criterion::Criterion;
use roomlet::rooms::{Delivery, Inbox, RoomHandle, Rooms, RoomsConfig, outbox};
use roomlet::runtime::bindings::room::{Action, CreateCause, Outgoing};
use roomlet::runtime::bindings::types::{Grants, Peer, Rejection, RoomMessage, Target};
use roomlet::runtime::engine::{self, EngineSettings};
use roomlet::runtime::kv::{KvLimits, KvStore};
use roomlet::runtime::{FunctionSpec, Loader, RoomInstance, RoomsFunction};
use roomlet_module_rooms::policy;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Room message payload size, as in the issue.
const PAYLOAD_BYTES: usize = 200;
/// Peers in the room the message benchmarks run in.
const PEERS: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listing = args.iter().any(|a| a == "--list");
    // Criterion's own rule: a real run has `--bench` and no `--test`.
    let quick = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test");
    let iters = env_usize("ROOMLET_BENCH_ITERS", if quick { 200 } else { 20_000 });
    let rooms_n = env_usize("ROOMLET_BENCH_ROOMS", if quick { 100 } else { 10_000 });
    let run_criterion = std::env::var("ROOMLET_BENCH_CRITERION").as_deref() != Ok("0");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let settings = EngineSettings {
        max_instances: 12_000,
        max_memory: 64 << 20,
    };
    let engine = engine::build(settings).expect("engine");
    let kv = Arc::new(KvStore::in_memory(KvLimits::default()).expect("kv"));
    let loader = Loader::new(engine, None);
    let function = Arc::new(
        loader
            .rooms(&FunctionSpec::default(), kv)
            .expect("embedded rooms component loads"),
    );
    let fx = Fixture::new(&rt, &function);

    if run_criterion || listing {
        let mut c = Criterion::default().configure_from_args();
        criterion_benches(&mut c, &rt, &fx);
        c.final_summary();
    }
    if listing {
        return;
    }

    let mut table = Table::default();
    percentile_benches(&rt, &fx, iters, &mut table);
    print!("{}", table.render(iters));
    table.print_ratios();
    drop(fx);
    if rooms_n > 0 {
        live_rooms(&rt, &function, rooms_n, settings);
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A peer with every grant but `hidden`, as the test helpers make them.
fn peer(id: &str) -> Peer {
    Peer {
        id: id.into(),
        identity: format!("user-{id}"),
        name: id.to_uppercase(),
        metadata: String::new(),
        grants: Grants::JOIN
            | Grants::ROOM_CREATE
            | Grants::PUBLISH
            | Grants::SUBSCRIBE
            | Grants::PUBLISH_DATA,
    }
}

/// A JSON object of exactly [`PAYLOAD_BYTES`] bytes.
fn payload() -> String {
    let frame = r#"{"type":"chat","text":""}"#;
    let text = "x".repeat(PAYLOAD_BYTES - frame.len());
    let data = format!(r#"{{"type":"chat","text":"{text}"}}"#);
    assert_eq!(data.len(), PAYLOAD_BYTES);
    data
}

/// What every benchmark shares: the function, the message, a hibernation
/// snapshot, and the native counterpart's host.
struct Fixture {
    function: Arc<RoomsFunction>,
    room: Arc<str>,
    peers: Arc<Vec<Peer>>,
    message: RoomMessage,
    snapshot_version: String,
    snapshot: Vec<u8>,
    native_host: NativeHost,
}

impl Fixture {
    fn new(rt: &Runtime, function: &Arc<RoomsFunction>) -> Self {
        let peers: Arc<Vec<Peer>> = Arc::new((0..PEERS).map(|i| peer(&format!("p{i}"))).collect());
        let room: Arc<str> = "bench-room".into();
        // A room that saw some joins, hibernated as the actor does it.
        let (snapshot_version, snapshot) = rt.block_on(async {
            let mut i = function
                .instantiate(room.clone(), Arc::default())
                .await
                .expect("instance");
            i.on_create(CreateCause::Fresh).await.expect("on-create");
            for (n, p) in peers.iter().enumerate() {
                let r = i.on_join(p).await.expect("on-join");
                assert!(r.is_ok(), "join refused: {r:?}");
                i.set_peers(Arc::new(peers[..=n].to_vec()));
            }
            let version = i.state_version().await.expect("state-version");
            let state = i.snapshot().await.expect("snapshot");
            (version, state)
        });
        let native_host = NativeHost {
            config: HashMap::new(),
            peers: peers.iter().map(|p| p.id.clone()).collect(),
            kv: RefCell::default(),
        };
        Fixture {
            function: function.clone(),
            room,
            message: RoomMessage {
                sender: peers[0].id.clone(),
                target: Target::Room,
                data: payload(),
            },
            peers,
            snapshot_version,
            snapshot,
            native_host,
        }
    }

    async fn instantiate(&self) -> RoomInstance {
        self.function
            .instantiate(self.room.clone(), self.peers.clone())
            .await
            .expect("instance")
    }

    async fn revive(&self) -> RoomInstance {
        let mut i = self.instantiate().await;
        let r = i
            .restore(&self.snapshot_version, &self.snapshot)
            .await
            .expect("restore call");
        assert!(r.is_ok(), "snapshot refused: {r:?}");
        i
    }

    /// A created room with its 4 peers, as `on-message` sees it.
    async fn message_room(&self) -> RoomInstance {
        let mut i = self.revive().await;
        i.set_peers(self.peers.clone());
        let actions = i.on_message(&self.message).await.expect("on-message");
        assert!(
            matches!(&actions[..], [Action::Broadcast((out, except))]
                if out.sender == self.message.sender && out.data == self.message.data
                    && except == std::slice::from_ref(&self.message.sender)),
            "unexpected actions {actions:?}"
        );
        i
    }

    /// A native room in the same state as [`Fixture::message_room`].
    fn native_room(&self) -> policy::Room {
        let mut room = policy::Room::new();
        room.restore(&self.snapshot_version, &self.snapshot)
            .expect("native restore");
        room.on_create(&self.native_host);
        room
    }
}

/// The policy's imports, in memory.
struct NativeHost {
    config: HashMap<String, String>,
    peers: Vec<String>,
    kv: RefCell<BTreeMap<String, Vec<u8>>>,
}

impl policy::Host for NativeHost {
    fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }
    fn peer_ids(&self) -> Vec<String> {
        self.peers.clone()
    }
    fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.kv.borrow().get(key).cloned()
    }
    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.kv.borrow_mut().insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn log(&self, _level: policy::Level, _message: &str) {}
}

/// The policy alone: the strings it takes by value are copied, as the
/// component receives its own copies.
fn native_policy(
    room: &mut policy::Room,
    host: &NativeHost,
    m: &RoomMessage,
) -> Vec<policy::Action> {
    let target = match &m.target {
        Target::Room => policy::Target::Room,
        Target::Peer(id) => policy::Target::Peer(id.clone()),
    };
    room.on_message(host, m.sender.clone(), target, m.data.clone())
}

/// The policy plus the component's glue (modules/rooms/src/component.rs):
/// WIT message in, WIT actions out, without the canonical ABI.
fn native_glue(room: &mut policy::Room, host: &NativeHost, m: &RoomMessage) -> Vec<Action> {
    let m = m.clone();
    let target = match m.target {
        Target::Room => policy::Target::Room,
        Target::Peer(id) => policy::Target::Peer(id),
    };
    room.on_message(host, m.sender, target, m.data)
        .into_iter()
        .map(|a| match a {
            policy::Action::Send { to, sender, data } => {
                Action::Send((to, Outgoing { sender, data }))
            }
            policy::Action::Broadcast {
                sender,
                data,
                except,
            } => Action::Broadcast((Outgoing { sender, data }, except)),
            policy::Action::Reject(r) => Action::Reject(Rejection {
                code: r.code,
                reason: r.reason,
            }),
            policy::Action::SetTimer(ms) => Action::SetTimer(ms),
            policy::Action::Close(reason) => Action::Close(reason),
        })
        .collect()
}

/// A room run by its actor, with one inbox per peer.
struct ActorRoom {
    rooms: Rooms,
    handle: RoomHandle,
    inboxes: Vec<Inbox>,
}

impl ActorRoom {
    async fn new(fx: &Fixture) -> Self {
        let rooms = Rooms::new(
            fx.function.clone(),
            RoomsConfig {
                hibernate_after: None,
                ..RoomsConfig::default()
            },
        );
        let mut handle = None;
        let mut inboxes = Vec::new();
        for p in fx.peers.iter() {
            let (tx, rx) = outbox();
            let (h, _) = rooms
                .join("actor-room", p.clone(), tx, true)
                .await
                .expect("join");
            handle = Some(h);
            inboxes.push(rx);
        }
        let mut room = ActorRoom {
            rooms,
            handle: handle.expect("at least one peer"),
            inboxes,
        };
        // Presence events from the joins.
        for rx in &mut room.inboxes {
            while rx.try_recv().is_some() {}
        }
        room.round_trip(&fx.message).await;
        room
    }

    /// One message in, and the broadcast out at every other peer.
    async fn round_trip(&mut self, m: &RoomMessage) {
        self.handle.message(m.clone()).await;
        for rx in &mut self.inboxes[1..] {
            match rx.recv().await {
                Some(Delivery::Message { data, .. }) => {
                    black_box(data);
                }
                other => panic!("expected the broadcast, got {other:?}"),
            }
        }
    }

    async fn close(self) {
        self.handle.close("bench done").await;
        drop(self.rooms);
    }
}

fn criterion_benches(c: &mut Criterion, rt: &Runtime, fx: &Fixture) {
    let mut g = c.benchmark_group("runtime");
    g.bench_function("instantiate", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let mut t = Duration::ZERO;
                for _ in 0..n {
                    let start = Instant::now();
                    let i = fx.instantiate().await;
                    t += start.elapsed();
                    drop(black_box(i));
                }
                t
            })
        })
    });
    g.bench_function("instantiate+on_create", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let mut t = Duration::ZERO;
                for _ in 0..n {
                    let start = Instant::now();
                    let mut i = fx.instantiate().await;
                    black_box(i.on_create(CreateCause::Fresh).await.expect("on-create"));
                    t += start.elapsed();
                    drop(i);
                }
                t
            })
        })
    });
    g.bench_function("revive", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let mut t = Duration::ZERO;
                for _ in 0..n {
                    let start = Instant::now();
                    let i = fx.revive().await;
                    t += start.elapsed();
                    drop(black_box(i));
                }
                t
            })
        })
    });
    let mut wasm = rt.block_on(fx.message_room());
    g.bench_function("on_message/wasm", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    black_box(wasm.on_message(&fx.message).await.expect("on-message"));
                }
                start.elapsed()
            })
        })
    });
    drop(wasm);
    let mut native = fx.native_room();
    g.bench_function("on_message/native_policy", |b| {
        b.iter(|| {
            black_box(native_policy(
                &mut native,
                &fx.native_host,
                black_box(&fx.message),
            ))
        })
    });
    g.bench_function("on_message/native_glue", |b| {
        b.iter(|| {
            black_box(native_glue(
                &mut native,
                &fx.native_host,
                black_box(&fx.message),
            ))
        })
    });
    let mut actor = rt.block_on(ActorRoom::new(fx));
    g.bench_function("on_message/actor", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    actor.round_trip(&fx.message).await;
                }
                start.elapsed()
            })
        })
    });
    rt.block_on(actor.close());
    g.finish();
}

/// Per-iteration samples, summarised.
struct Stats {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Stats {
    fn of(name: &'static str, mut samples: Vec<Duration>) -> Self {
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
struct Table(Vec<Stats>);

impl Table {
    fn render(&self, iters: usize) -> String {
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

    /// WASM vs native `on-message`, and the issue's target for it.
    fn print_ratios(&self) {
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

    fn get(&self, name: &str) -> &Stats {
        self.0
            .iter()
            .find(|s| s.name == name)
            .expect("benchmark ran")
    }
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{ns} ns")
    } else {
        format!("{:.2} µs", ns as f64 / 1000.0)
    }
}

fn warmup(iters: usize) -> usize {
    (iters / 10).max(10)
}

/// Times `op` `iters` times after a warm-up; `op` returns its own duration
/// so that setup and teardown stay out of the sample.
async fn sample<F: AsyncFnMut() -> Duration>(iters: usize, mut op: F) -> Vec<Duration> {
    for _ in 0..warmup(iters) {
        op().await;
    }
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters {
        v.push(op().await);
    }
    v
}

fn percentile_benches(rt: &Runtime, fx: &Fixture, iters: usize, table: &mut Table) {
    rt.block_on(async {
        let timer = sample(iters, async || {
            let start = Instant::now();
            black_box(Instant::now());
            start.elapsed()
        })
        .await;
        table
            .0
            .push(Stats::of("(timer overhead: Instant::now pair)", timer));

        let v = sample(iters, async || {
            let start = Instant::now();
            let i = fx.instantiate().await;
            let t = start.elapsed();
            drop(black_box(i));
            t
        })
        .await;
        table.0.push(Stats::of("instantiate", v));

        let v = sample(iters, async || {
            let i = fx.instantiate().await;
            let start = Instant::now();
            drop(black_box(i));
            start.elapsed()
        })
        .await;
        table.0.push(Stats::of("drop of an instance", v));

        let v = sample(iters, async || {
            let start = Instant::now();
            let mut i = fx.instantiate().await;
            black_box(i.on_create(CreateCause::Fresh).await.expect("on-create"));
            let t = start.elapsed();
            drop(i);
            t
        })
        .await;
        table.0.push(Stats::of("instantiate+on_create", v));

        let v = sample(iters, async || {
            let start = Instant::now();
            let i = fx.revive().await;
            let t = start.elapsed();
            drop(black_box(i));
            t
        })
        .await;
        table.0.push(Stats::of("revive (instantiate+restore)", v));

        let mut wasm = fx.message_room().await;
        let v = sample(iters, async || {
            let start = Instant::now();
            black_box(wasm.on_message(&fx.message).await.expect("on-message"));
            start.elapsed()
        })
        .await;
        table.0.push(Stats::of("on_message/wasm", v));
        drop(wasm);

        let mut native = fx.native_room();
        let v = sample(iters, async || {
            let start = Instant::now();
            black_box(native_policy(
                &mut native,
                &fx.native_host,
                black_box(&fx.message),
            ));
            start.elapsed()
        })
        .await;
        table.0.push(Stats::of("on_message/native_policy", v));
        let v = sample(iters, async || {
            let start = Instant::now();
            black_box(native_glue(
                &mut native,
                &fx.native_host,
                black_box(&fx.message),
            ));
            start.elapsed()
        })
        .await;
        table.0.push(Stats::of("on_message/native_glue", v));

        let mut actor = ActorRoom::new(fx).await;
        let v = sample(iters, async || {
            let start = Instant::now();
            actor.round_trip(&fx.message).await;
            start.elapsed()
        })
        .await;
        table
            .0
            .push(Stats::of("on_message/actor (send → 3 deliveries)", v));
        actor.close().await;
    });
}

/// Resident set size in bytes, from `/proc/self/statm` (4 KiB pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count())
}

/// The most frequent kinds of mapping (permissions, size), to see what
/// uses up `vm.max_map_count`.
fn map_kinds(top: usize) -> String {
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

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// `n` live rooms with one peer each, created through the actor path.
fn live_rooms(rt: &Runtime, function: &Arc<RoomsFunction>, n: usize, settings: EngineSettings) {
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
