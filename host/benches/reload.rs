//! The pause each live room sees while a hot reload moves it to a new
//! version of the rooms component: from the moment its mailbox takes the
//! upgrade (the last frame before it was handled by the old version) to
//! the moment the new instance is ready to handle the next frame — i.e.
//! snapshot + instantiate + restore, excluding compile time (the new
//! version is compiled before any room moves).
//!
//! `cargo bench -p roomlet --bench reload` (ROOMLET_BENCH_ROOMS, default 1000).

use roomlet::rooms::{Rooms, RoomsConfig};
use roomlet::runtime::bindings::types::{Grants, Peer};
use roomlet::runtime::engine::{self, EngineSettings};
use roomlet::runtime::kv::{KvLimits, KvStore};
use roomlet::runtime::{FunctionSpec, Loader};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let rooms_n: usize = std::env::var("ROOMLET_BENCH_ROOMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let quick = std::env::args().any(|a| a == "--test");
    let rooms_n = if quick { 20 } else { rooms_n };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let engine = engine::build(EngineSettings {
            max_instances: (rooms_n as u32) * 2 + 64,
            max_memory: 64 << 20,
        })
        .expect("engine");
        let loader = Loader::new(engine, None);
        let kv = Arc::new(KvStore::in_memory(KvLimits::default()).expect("kv"));
        let spec = FunctionSpec::default();
        let v1 = Arc::new(loader.rooms(&spec, kv.clone()).expect("v1"));
        let rooms = Rooms::new(
            v1,
            RoomsConfig {
                hibernate_after: None,
                max_rooms: rooms_n + 1,
                ..RoomsConfig::default()
            },
        );
        let mut inboxes = Vec::new();
        for r in 0..rooms_n {
            let (tx, rx) = roomlet::rooms::outbox();
            inboxes.push(rx);
            let peer = Peer {
                id: format!("p{r}"),
                identity: format!("u{r}"),
                name: String::new(),
                metadata: String::new(),
                grants: Grants::JOIN | Grants::ROOM_CREATE | Grants::PUBLISH_DATA,
            };
            rooms.join(&format!("room-{r}"), peer, tx, true).await.expect("join");
        }
        let compile = Instant::now();
        let v2 = Arc::new(loader.rooms(&spec, kv.clone()).expect("v2"));
        let compile = compile.elapsed();
        let mut pauses = Vec::with_capacity(rooms_n);
        for name in rooms.names() {
            let h = rooms.get(&name).expect("room");
            let t = Instant::now();
            h.upgrade(v2.clone()).await.expect("room moves");
            pauses.push(t.elapsed());
        }
        pauses.sort();
        let pct = |p: f64| pauses[((pauses.len() as f64 * p) as usize).min(pauses.len() - 1)];
        println!(
            "reload pause over {} live rooms: p50 {:?}  p99 {:?}  max {:?}  (compile of the new version, before any room moved: {:?})",
            pauses.len(),
            pct(0.50),
            pct(0.99),
            pauses[pauses.len() - 1],
            compile
        );
    });
}
