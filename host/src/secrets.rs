//! Secret values: held in memory only, never printed.
//!
//! [`Secret`] has no `Display`, and its `Debug` prints a placeholder, so a
//! secret cannot reach a log line, an error frame or a metric by accident.

use std::collections::HashMap;

/// A secret string (an API secret, the operator credential, a TURN key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the few places that must use it (signing, verifying).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// API key id → secret: several at once, so keys can be rotated.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: HashMap<String, Secret>,
}

impl ApiKeys {
    /// Adds (or replaces) a key pair.
    pub fn insert(&mut self, key: impl Into<String>, secret: Secret) {
        self.keys.insert(key.into(), secret);
    }

    /// The secret of `key`.
    pub fn api_secret(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(Secret::expose)
    }

    /// The first key pair in name order: what `token create` signs with.
    pub fn first(&self) -> Option<(&str, &Secret)> {
        self.keys
            .iter()
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(k, s)| (k.as_str(), s))
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
