//! The auth function: verifies access tokens and issues media credentials
//! inside its component.
//!
//! The world's exports are looked up one by one rather than through the
//! generated `AuthPre`: `media` was added in contract 0.2.1, and an auth
//! component built against 0.2.0 (which lacks it) must keep loading. It
//! then issues no media credentials.

use super::bindings::auth::Auth;
use super::bindings::authenticator::{self, AuthError, AuthRequest};
use super::bindings::media::{self, MediaCredential, MediaRequest};
use super::bindings::types::Identity;
use super::error::CallError;
use super::state::{Function, HostState};
use super::stateless::{Stateless, World};
use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

/// An instance of an auth component: its exports.
pub struct AuthExports {
    authenticator: authenticator::Guest,
    media: Option<media::Guest>,
}

/// An auth component linked and checked, ready to instantiate.
pub struct AuthExportsPre {
    pre: InstancePre<HostState>,
    authenticator: authenticator::GuestIndices,
    media: Option<media::GuestIndices>,
}

impl World for AuthExports {
    type Pre = AuthExportsPre;
    const FUNCTION: Function = Function::Auth;

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        Auth::add_to_linker::<_, HasSelf<HostState>>(linker, |s| s)
    }

    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        let authenticator = authenticator::GuestIndices::new(&pre)?;
        let media = media::GuestIndices::new(&pre).ok();
        Ok(AuthExportsPre {
            pre,
            authenticator,
            media,
        })
    }

    async fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        let instance = pre.pre.instantiate_async(&mut *store).await?;
        Ok(AuthExports {
            authenticator: pre.authenticator.load(&mut *store, &instance)?,
            media: match &pre.media {
                Some(m) => Some(m.load(&mut *store, &instance)?),
                None => None,
            },
        })
    }
}

/// A loaded auth component.
pub type AuthFunction = Stateless<AuthExports>;

impl Stateless<AuthExports> {
    /// Verifies a token. The outer error is the component failing; the
    /// inner one is the token being refused.
    pub async fn authenticate(
        &self,
        request: &AuthRequest,
    ) -> Result<Result<Identity, AuthError>, CallError> {
        #[cfg(feature = "native-modules")]
        return Ok(self.native(|env| super::native::authenticate(env, request)));
        #[cfg(not(feature = "native-modules"))]
        self.call(async |b: &AuthExports, store| {
            b.authenticator.call_authenticate(store, request).await
        })
        .await
    }

    /// Issues a peer's media credentials. The inner error is the
    /// component's own refusal (a message for the host log); a component
    /// built before `media` existed issues none.
    pub async fn issue_media(
        &self,
        request: &MediaRequest,
    ) -> Result<Result<Vec<MediaCredential>, String>, CallError> {
        #[cfg(feature = "native-modules")]
        return Ok(self.native(|env| super::native::issue_media(env, request)));
        #[cfg(not(feature = "native-modules"))]
        self.call(async |b: &AuthExports, store| match &b.media {
            Some(m) => m.call_issue(store, request).await,
            None => Ok(Ok(Vec::new())),
        })
        .await
    }
}
