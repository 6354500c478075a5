//! The auth function: verifies access tokens inside its component.

use super::bindings::auth::{Auth, AuthPre};
use super::bindings::authenticator::{AuthError, AuthRequest};
use super::bindings::types::Identity;
use super::error::{CallError, LoadError, brief};
use super::limits::{self, Limits};
use super::pool::{Warm, WarmPool, classify, new_store};
use super::state::{HostState, ModuleEnv};
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

/// A loaded auth component with its warm pool.
pub struct AuthFunction {
    engine: Engine,
    pre: AuthPre<HostState>,
    env: Arc<ModuleEnv>,
    limits: Limits,
    pool: WarmPool<Auth>,
}

impl AuthFunction {
    /// Links `component` against the auth world.
    pub fn new(
        engine: &Engine,
        component: &Component,
        env: Arc<ModuleEnv>,
        limits: Limits,
    ) -> Result<Self, LoadError> {
        let world = |e: wasmtime::Error| LoadError::World {
            function: "auth",
            reason: brief(&e),
        };
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(world)?;
        Auth::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s).map_err(world)?;
        let pre = linker.instantiate_pre(component).map_err(world)?;
        let pre = AuthPre::new(pre).map_err(world)?;
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

    /// Verifies a token. The outer error is the component failing; the
    /// inner one is the token being refused.
    pub async fn authenticate(
        &self,
        request: &AuthRequest,
    ) -> Result<Result<Identity, AuthError>, CallError> {
        let mut warm = match self.pool.take() {
            Some(w) => w,
            None => self.instantiate().await?,
        };
        limits::arm(&mut warm.store, &self.limits);
        let r = warm
            .bindings
            .roomlet_signal_authenticator()
            .call_authenticate(&mut warm.store, request)
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

    async fn instantiate(&self) -> Result<Warm<Auth>, CallError> {
        let mut store = new_store(&self.engine, self.env.clone(), None, &self.limits);
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| CallError::Instantiate(brief(&e)))?;
        Ok(Warm { store, bindings })
    }
}
