//! [`Stateless`]: a component whose instances are interchangeable (auth,
//! relay), served from a warm pool. An instance that fails is dropped,
//! never returned to the pool.

use super::error::{CallError, LoadError, brief};
use super::limits::Limits;
use super::pool::{Warm, WarmPool, classify, instantiated, new_store, timed};
use super::state;
use super::state::{Function, HostState, ModuleEnv};
use std::sync::Arc;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, Store};

/// Idle instances kept per function.
const WARM: usize = 8;

/// What differs between the stateless worlds: their generated bindings.
pub trait World: Sized + Send + 'static {
    /// The generated pre-instantiated type.
    type Pre: Send + Sync;
    /// The function this world implements.
    const FUNCTION: Function;
    /// Adds the world's imports to `linker`.
    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
    /// Checks the exports and wraps the pre-instance.
    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    /// Instantiates.
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<HostState>,
    ) -> impl Future<Output = wasmtime::Result<Self>> + Send;
}

/// A loaded stateless component with its warm pool.
pub struct Stateless<W: World> {
    engine: Engine,
    pre: W::Pre,
    env: Arc<ModuleEnv>,
    limits: Limits,
    pool: WarmPool<W>,
}

impl<W: World> Stateless<W> {
    /// Links `component` against `W`'s world.
    pub fn new(
        engine: &Engine,
        component: &Component,
        env: Arc<ModuleEnv>,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let world =
            |e: wasmtime::Error| LoadError::world(W::FUNCTION.name(), engine, component, &e);
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(world)?;
        W::link(&mut linker).map_err(world)?;
        let pre = linker.instantiate_pre(component).map_err(world)?;
        Ok(Self {
            engine: engine.clone(),
            pre: W::pre(pre).map_err(world)?,
            env,
            limits,
            pool: WarmPool::new(WARM),
        })
    }

    /// The loaded component's version label.
    pub fn version(&self) -> &str {
        &self.env.version
    }

    /// Creates one instance into the warm pool: proves a new version
    /// instantiates before it replaces the old one.
    pub async fn warm_up(&self) -> Result<(), CallError> {
        let warm = self.instantiate().await?;
        self.pool.put(warm);
        Ok(())
    }

    /// Runs one call on a pooled instance, under the limits.
    #[cfg_attr(feature = "native-modules", allow(dead_code))]
    pub(crate) async fn call<R>(
        &self,
        f: impl AsyncFnOnce(&W, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let mut warm = match self.pool.take() {
            Some(w) => w,
            None => self.instantiate().await?,
        };
        state::arm(&mut warm.store, &self.limits);
        let started = std::time::Instant::now();
        let r = f(&warm.bindings, &mut warm.store).await;
        timed(&self.env, started);
        match r {
            Ok(v) => {
                self.pool.put(warm);
                Ok(v)
            }
            Err(e) => Err(classify(&warm.store, e)),
        }
    }

    /// The benchmark build's call: the module's logic compiled natively,
    /// timed into the same metric ([`super::native`]).
    #[cfg(feature = "native-modules")]
    pub(crate) fn native<R>(&self, f: impl FnOnce(&ModuleEnv) -> R) -> R {
        let started = std::time::Instant::now();
        let r = f(&self.env);
        timed(&self.env, started);
        r
    }

    async fn instantiate(&self) -> Result<Warm<W>, CallError> {
        let mut store = new_store(&self.engine, self.env.clone(), None, &self.limits);
        let r = W::instantiate(&self.pre, &mut store)
            .await
            .map_err(|e| CallError::Instantiate(brief(&e)));
        instantiated(&self.env, &r);
        Ok(Warm {
            store,
            bindings: r?,
        })
    }
}
