//! The rooms function: one instance per live room.

use super::bindings::room::{Action, CreateCause, RoomSettings};
use super::bindings::rooms::{Rooms, RoomsPre};
use super::bindings::types::{Peer, Rejection, RoomMessage, Signal};
use super::error::{CallError, LoadError, brief};
use super::limits::Limits;
#[cfg(not(feature = "native-modules"))]
use super::pool::classify;
use super::pool::{instantiated, new_store, timed};
use super::state;
use super::state::{HostState, ModuleEnv, RoomContext};
use crate::kv::{KvStore, KvTxn};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

/// A loaded rooms component: instantiated once per live room.
pub struct RoomsFunction {
    engine: Engine,
    pre: RoomsPre<HostState>,
    env: Arc<ModuleEnv>,
    limits: Limits,
    kv: Arc<KvStore>,
}

impl RoomsFunction {
    /// Links `component` against the rooms world.
    pub fn new(
        engine: &Engine,
        component: &Component,
        env: Arc<ModuleEnv>,
        limits: Limits,
        kv: Arc<KvStore>,
    ) -> Result<Self, LoadError> {
        let world = |e: wasmtime::Error| LoadError::world("rooms", engine, component, &e);
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(world)?;
        Rooms::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s).map_err(world)?;
        let pre = linker.instantiate_pre(component).map_err(world)?;
        let pre = RoomsPre::new(pre).map_err(world)?;
        Ok(Self {
            engine: engine.clone(),
            pre,
            env,
            limits,
            kv,
        })
    }

    /// The loaded component's version label.
    pub fn version(&self) -> &str {
        &self.env.version
    }

    /// The limits each call runs under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The store the rooms' kv lives in.
    pub fn kv(&self) -> &Arc<KvStore> {
        &self.kv
    }

    /// A fresh instance for `room`. No hook has run yet.
    pub async fn instantiate(
        &self,
        room: Arc<str>,
        peers: Arc<Vec<Peer>>,
    ) -> Result<RoomInstance, CallError> {
        let ctx = RoomContext {
            kv: KvTxn::new(self.kv.clone(), room.clone()),
            name: room,
            peers,
        };
        let mut store = new_store(&self.engine, self.env.clone(), Some(ctx), &self.limits);
        let r = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| CallError::Instantiate(brief(&e)));
        instantiated(&self.env, &r);
        let bindings = r?;
        self.env.metrics.rooms_live.inc();
        Ok(RoomInstance {
            store,
            bindings,
            limits: self.limits,
            #[cfg(feature = "native-modules")]
            native: Default::default(),
        })
    }
}

/// One room's instance. Every hook arms the limits, calls the guest and
/// reports what went wrong; after an error the instance must be dropped.
pub struct RoomInstance {
    store: Store<HostState>,
    #[cfg_attr(feature = "native-modules", allow(dead_code))]
    bindings: Rooms,
    limits: Limits,
    /// The same logic compiled natively, for benchmarks ([`super::native`]).
    #[cfg(feature = "native-modules")]
    native: super::native::NativeRoom,
}

impl Drop for RoomInstance {
    fn drop(&mut self) {
        self.store.data().env.metrics.rooms_live.dec();
    }
}

#[cfg(not(feature = "native-modules"))]
macro_rules! hook {
    ($self:ident, $call:ident ( $($arg:expr),* )) => {{
        state::arm(&mut $self.store, &$self.limits);
        let started = std::time::Instant::now();
        let r = $self
            .bindings
            .roomlet_signal_room()
            .$call(&mut $self.store, $($arg),*)
            .await;
        timed(&$self.store.data().env, started);
        r.map_err(|e| classify(&$self.store, e))
    }};
}

/// The benchmark build: the same host work around a native call.
#[cfg(feature = "native-modules")]
macro_rules! hook {
    ($self:ident, $call:ident ( $($arg:expr),* )) => {{
        state::arm(&mut $self.store, &$self.limits);
        let started = std::time::Instant::now();
        let r = $self.native.$call($self.store.data_mut(), $($arg),*);
        timed(&$self.store.data().env, started);
        Ok(r)
    }};
}

impl RoomInstance {
    /// Updates what `membership.peers` returns.
    pub fn set_peers(&mut self, peers: Arc<Vec<Peer>>) {
        if let Some(room) = self.store.data_mut().room.as_mut() {
            room.peers = peers;
        }
    }

    /// Takes the writes the last call buffered, for the actor to commit.
    pub fn take_writes(&mut self) -> BTreeMap<String, Option<Vec<u8>>> {
        self.store
            .data_mut()
            .room
            .as_mut()
            .map(|r| r.kv.take_writes())
            .unwrap_or_default()
    }

    /// `on-create`.
    pub async fn on_create(&mut self, cause: CreateCause) -> Result<RoomSettings, CallError> {
        hook!(self, call_on_create(cause))
    }

    /// `on-join`.
    pub async fn on_join(
        &mut self,
        peer: &Peer,
    ) -> Result<Result<Vec<Action>, Rejection>, CallError> {
        hook!(self, call_on_join(peer))
    }

    /// `on-leave`.
    pub async fn on_leave(&mut self, peer: &Peer) -> Result<Vec<Action>, CallError> {
        hook!(self, call_on_leave(peer))
    }

    /// `on-message`.
    pub async fn on_message(&mut self, message: &RoomMessage) -> Result<Vec<Action>, CallError> {
        hook!(self, call_on_message(message))
    }

    /// `on-signal`.
    pub async fn on_signal(&mut self, signal: &Signal) -> Result<Vec<Action>, CallError> {
        hook!(self, call_on_signal(signal))
    }

    /// `on-timer`.
    pub async fn on_timer(&mut self) -> Result<Vec<Action>, CallError> {
        hook!(self, call_on_timer())
    }

    /// `state-version`.
    pub async fn state_version(&mut self) -> Result<String, CallError> {
        hook!(self, call_state_version())
    }

    /// `snapshot`.
    pub async fn snapshot(&mut self) -> Result<Vec<u8>, CallError> {
        hook!(self, call_snapshot())
    }

    /// `restore`.
    pub async fn restore(
        &mut self,
        version: &str,
        state: &[u8],
    ) -> Result<Result<(), String>, CallError> {
        hook!(self, call_restore(version, state))
    }
}
