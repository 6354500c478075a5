//! The relay function: per-frame policy at the edge.

use super::bindings::relay::{Relay, RelayPre};
use super::bindings::relay_policy::{Frame, Verdict};
use super::error::CallError;
use super::state::{Function, HostState};
use super::stateless::{Stateless, World};
use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

impl World for Relay {
    type Pre = RelayPre<HostState>;
    const FUNCTION: Function = Function::Relay;

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        Relay::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)
    }

    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        RelayPre::new(pre)
    }

    async fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        pre.instantiate_async(store).await
    }
}

/// A loaded relay component.
pub type RelayFunction = Stateless<Relay>;

impl Stateless<Relay> {
    /// Decides the fate of one client frame.
    pub async fn check(&self, frame: Frame<'_>) -> Result<Verdict, CallError> {
        #[cfg(feature = "native-modules")]
        return Ok(self.native(|env| super::native::relay_check(env, &frame)));
        #[cfg(not(feature = "native-modules"))]
        self.call(async |b: &Relay, store| {
            b.roomlet_signal_relay_policy()
                .call_check(store, frame)
                .await
        })
        .await
    }
}
