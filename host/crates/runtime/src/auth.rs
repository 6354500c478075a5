//! The auth function: verifies access tokens inside its component.

use super::bindings::auth::{Auth, AuthPre};
use super::bindings::authenticator::{AuthError, AuthRequest};
use super::bindings::types::Identity;
use super::error::CallError;
use super::state::{Function, HostState};
use super::stateless::{Stateless, World};
use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

impl World for Auth {
    type Pre = AuthPre<HostState>;
    const FUNCTION: Function = Function::Auth;

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        Auth::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)
    }

    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        AuthPre::new(pre)
    }

    async fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        pre.instantiate_async(store).await
    }
}

/// A loaded auth component.
pub type AuthFunction = Stateless<Auth>;

impl Stateless<Auth> {
    /// Verifies a token. The outer error is the component failing; the
    /// inner one is the token being refused.
    pub async fn authenticate(
        &self,
        request: &AuthRequest,
    ) -> Result<Result<Identity, AuthError>, CallError> {
        #[cfg(feature = "native-modules")]
        return Ok(self.native(|env| super::native::authenticate(env, request)));
        #[cfg(not(feature = "native-modules"))]
        self.call(async |b: &Auth, store| {
            b.roomlet_signal_authenticator()
                .call_authenticate(store, request)
                .await
        })
        .await
    }
}
