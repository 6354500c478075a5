//! The process's one [`wasmtime::Engine`] and its epoch ticker.

use super::limits::TICK;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Sizing of the engine's pooling allocator.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// Most component instances alive at once (live rooms + warm pools).
    pub max_instances: u32,
    /// Largest linear memory any component may have; the per-component
    /// caps in [`super::Limits`] must not exceed it.
    pub max_memory: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_instances: 12_000,
            max_memory: 64 << 20,
        }
    }
}

/// Guest wasm stack: Rust guests keep their data stack in linear memory,
/// so the native stack they need is small.
const MAX_WASM_STACK: usize = 256 << 10;
/// Fiber stack of an async call: the wasm stack plus host frames.
const ASYNC_STACK: usize = 512 << 10;

/// Builds the engine: pooling allocator with copy-on-write memory images,
/// epoch interruption, and limits sized for one instance per room.
pub fn build(settings: EngineSettings) -> wasmtime::Result<Engine> {
    let n = settings.max_instances;
    let mut pool = PoolingAllocationConfig::new();
    // A std guest is several core instances, memories and tables per
    // component instance (measured: ~4 tables, ~4 core instances).
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(4))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        // One fiber stack per instance: wasmtime 48 caches a store's last
        // fiber stack in the store until it is dropped, so a live room
        // holds one between calls (capping stacks at 1,024 capped live
        // rooms there: "maximum concurrent limit of 1024 for fibers",
        // BENCHMARKS.md). Each costs two memory mappings of
        // vm.max_map_count (65,530), shared with the rooms' memories.
        .total_stacks(n)
        .max_memory_size(settings.max_memory)
        .max_core_instances_per_component(16)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        .table_elements(20_000);
    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true)
        // Reserve no more address space than a memory may use: tens of
        // thousands of rooms must fit in the address space and in
        // vm.max_map_count.
        .memory_reservation(settings.max_memory as u64)
        .memory_reservation_for_growth(0)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(ASYNC_STACK)
        // A fiber stack goes back to the pool when its store drops (a room
        // hibernates or closes). Unzeroed, the pages its calls touched stay
        // resident with their contents for the next room in that slot:
        // ~3.6 KiB of RSS per hibernated room (BENCHMARKS.md), and one
        // tenant's data one compiler bug away from another. Zeroing
        // decommits them: one madvise per store drop, never per call.
        .async_stack_zeroing(true)
        .wasm_component_model(true);
    let engine = Engine::new(&config)?;
    start_ticker(&engine);
    Ok(engine)
}

/// Bumps the epoch every tick until the engine is dropped.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("roomlet-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        });
    if let Err(e) = spawned {
        // Without the ticker no deadline would ever fire: refuse to go on
        // silently.
        panic!("cannot start the epoch ticker thread: {e}");
    }
}
