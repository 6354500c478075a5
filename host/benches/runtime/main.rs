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

mod fixture;
mod report;

use criterion::Criterion;
use fixture::*;
use report::*;
use roomlet::runtime::bindings::room::CreateCause;
use roomlet::runtime::engine::{self, EngineSettings};
use roomlet::runtime::kv::{KvLimits, KvStore};
use roomlet::runtime::{FunctionSpec, Loader};
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
