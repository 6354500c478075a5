//! `secrets`: API key and media provider secrets, linked into the auth world only.

use crate::bindings::auth::roomlet::signal::secrets::Host;
use crate::state::HostState;

impl Host for HostState {
    fn api_secret(&mut self, key: String) -> Option<String> {
        // The key id is not secret; the value is, and is never logged.
        let _span = tracing::trace_span!("secrets.api_secret", key = %key).entered();
        self.env
            .secrets
            .as_ref()?
            .api_secret(&key)
            .map(str::to_owned)
    }

    fn media_secret(&mut self, provider: String) -> Option<String> {
        let _span = tracing::trace_span!("secrets.media_secret", provider = %provider).entered();
        self.env
            .secrets
            .as_ref()?
            .media_secret(&provider)
            .map(str::to_owned)
    }
}
