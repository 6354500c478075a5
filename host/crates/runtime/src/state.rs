//! [`HostState`]: the data of every store, whatever the function.

use super::bindings::types::Peer;
use super::limits::{CallBudget, Limits, MemoryLimiter, TICK};
pub use crate::function::Function;
use crate::kv::KvTxn;
use crate::metrics::RuntimeMetrics;
use crate::output::{GuestOutput, OutputGate, Stream};
use crate::secrets::ApiKeys;
use roomlet_telemetry::Histogram;
use std::collections::HashMap;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What a loaded component may see of the host: shared by all its stores.
#[derive(Debug)]
pub struct ModuleEnv {
    /// The function it implements.
    pub function: Function,
    /// Version label (hash prefix of the component bytes), for logs and metrics.
    pub version: Arc<str>,
    /// Its `config` table.
    pub config: HashMap<String, String>,
    /// API secrets; only ever set for auth.
    pub secrets: Option<Arc<ApiKeys>>,
    /// Where its instances and failures are counted.
    pub metrics: Arc<RuntimeMetrics>,
    /// Its calls' durations, under its function and version.
    pub calls: Histogram,
    /// Where its stdout and stderr lines go, within its per-room budget.
    pub output: Arc<OutputGate>,
}

/// Per-call context of a room actor's store.
#[derive(Debug)]
pub struct RoomContext {
    /// Room name.
    pub name: Arc<str>,
    /// The current call's kv transaction.
    pub kv: KvTxn,
    /// Current members, as `membership.peers` returns them.
    pub peers: Arc<Vec<Peer>>,
}

/// The data of one store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) env: Arc<ModuleEnv>,
    pub(crate) room: Option<RoomContext>,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) budget: CallBudget,
}

impl HostState {
    /// A store's data with a deny-by-default WASI: no files, no env, no
    /// network; stdout and stderr go to the host log, line by line.
    pub(crate) fn new(env: Arc<ModuleEnv>, room: Option<RoomContext>, memory_cap: usize) -> Self {
        let room_name: Arc<str> = room.as_ref().map_or_else(|| "".into(), |r| r.name.clone());
        let wasi = WasiCtx::builder()
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .stdout(GuestOutput::new(
                env.output.clone(),
                room_name.clone(),
                Stream::Stdout,
            ))
            .stderr(GuestOutput::new(
                env.output.clone(),
                room_name,
                Stream::Stderr,
            ))
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            env,
            room,
            limiter: MemoryLimiter::new(memory_cap),
            budget: CallBudget::default(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Installs the limiter and the deadline callback on a new store.
pub(crate) fn install(store: &mut Store<HostState>) {
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|mut ctx| {
        let budget = &mut ctx.data_mut().budget;
        if budget.ticks_left == 0 {
            budget.deadline_hit = true;
            return Ok(UpdateDeadline::Interrupt);
        }
        budget.ticks_left -= 1;
        Ok(UpdateDeadline::Yield(1))
    });
}

/// Arms the limits for the next call.
pub(crate) fn arm(store: &mut Store<HostState>, limits: &Limits) {
    let ticks = (limits.deadline.as_micros() / TICK.as_micros()).max(1) as u64;
    let data = store.data_mut();
    data.budget = CallBudget {
        ticks_left: ticks,
        deadline_hit: false,
    };
    data.limiter.hit = false;
    store.set_epoch_deadline(1);
}
