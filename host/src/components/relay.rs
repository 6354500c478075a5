//! The relay function: per-frame policy at the edge.

use super::bindings::relay::{Relay, RelayPre};
use super::bindings::relay_policy::{Frame, Verdict};
use super::error::{CallError, LoadError, brief};
use super::limits::{self, Limits};
use super::pool::{Warm, WarmPool, classify, new_store};
use super::state::{HostState, ModuleEnv};
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

/// A loaded relay component with its warm pool.
pub struct RelayFunction {
    engine: Engine,
    pre: RelayPre<HostState>,
    env: Arc<ModuleEnv>,
    limits: Limits,
    pool: WarmPool<Relay>,
}

impl RelayFunction {
    /// Links `component` against the relay world.
    pub fn new(
        engine: &Engine,
        component: &Component,
        env: Arc<ModuleEnv>,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let world = |e: wasmtime::Error| LoadError::World {
            function: "relay",
            reason: brief(&e),
        };
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(world)?;
        Relay::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s).map_err(world)?;
        let pre = linker.instantiate_pre(component).map_err(world)?;
        let pre = RelayPre::new(pre).map_err(world)?;
        Ok(Self {
            engine: engine.clone(),
            pre,
            env,
            limits,
            pool: WarmPool::new(8),
        })
    }

    /// The loaded component's version label.
    pub fn version(&self) -> &str {
        &self.env.version
    }

    /// Decides the fate of one client frame.
    pub async fn check(&self, frame: &Frame) -> Result<Verdict, CallError> {
        let mut warm = match self.pool.take() {
            Some(w) => w,
            None => self.instantiate().await?,
        };
        limits::arm(&mut warm.store, &self.limits);
        let r = warm
            .bindings
            .roomlet_signal_relay_policy()
            .call_check(&mut warm.store, frame)
            .await;
        match r {
            Ok(v) => {
                self.pool.put(warm);
                Ok(v)
            }
            Err(e) => Err(classify(&warm.store, e)),
        }
    }

    /// Creates one instance into the warm pool: proves a new version
    /// instantiates before it replaces the old one.
    pub async fn warm_up(&self) -> Result<(), CallError> {
        let warm = self.instantiate().await?;
        self.pool.put(warm);
        Ok(())
    }

    async fn instantiate(&self) -> Result<Warm<Relay>, CallError> {
        let mut store = new_store(&self.engine, self.env.clone(), None, &self.limits);
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| CallError::Instantiate(brief(&e)))?;
        Ok(Warm { store, bindings })
    }
}
