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

/// The secrets the auth function may read: API key id → secret (several
/// at once, so keys can be rotated), and each configured media provider's
/// secret (`agora`, `livekit`).
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: HashMap<String, Secret>,
    media: HashMap<String, Secret>,
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

    /// Sets media provider `provider`'s secret.
    pub fn insert_media(&mut self, provider: impl Into<String>, secret: Secret) {
        self.media.insert(provider.into(), secret);
    }

    /// Media provider `provider`'s secret.
    pub fn media_secret(&self, provider: &str) -> Option<&str> {
        self.media.get(provider).map(Secret::expose)
    }

    /// The first key pair in name order: what `token create` signs with.
    pub fn first(&self) -> Option<(&str, &Secret)> {
        self.keys
            .iter()
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(k, s)| (k.as_str(), s))
    }

    /// `text` with every secret value in it replaced by `***`: for what an
    /// auth component that read a secret writes to its log or stdout.
    /// Values under 4 bytes are left alone (they would mask ordinary words).
    pub fn mask<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out = std::borrow::Cow::Borrowed(text);
        for secret in self.keys.values().chain(self.media.values()) {
            let value = secret.expose();
            if value.len() >= 4 && out.contains(value) {
                out = std::borrow::Cow::Owned(out.replace(value, "***"));
            }
        }
        out
    }

    /// Whether `secret` is the secret of one of the API keys.
    pub fn contains_secret(&self, secret: &Secret) -> bool {
        self.keys.values().any(|s| s == secret)
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A secret that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `NAME_FILE` names a file that cannot be read.
    #[error("{var} names a file that cannot be read: {source}")]
    File {
        /// The variable.
        var: String,
        /// Why.
        source: std::io::Error,
    },
    /// The value has the wrong shape (the value itself is never shown).
    #[error("{var} is malformed: {what}")]
    Malformed {
        /// The variable.
        var: String,
        /// What is wrong.
        what: &'static str,
    },
}

/// Reads secret `var` from the environment, or from the file named by
/// `var_FILE` (Docker and Kubernetes secrets). Surrounding whitespace,
/// such as a file's trailing newline, is dropped.
pub fn from_env(var: &str) -> Result<Option<Secret>, SecretError> {
    if let Ok(v) = std::env::var(var) {
        return Ok(Some(Secret::new(v.trim())));
    }
    let file_var = format!("{var}_FILE");
    match std::env::var(&file_var) {
        Ok(path) => std::fs::read_to_string(path.trim())
            .map(|v| Some(Secret::new(v.trim())))
            .map_err(|source| SecretError::File {
                var: file_var,
                source,
            }),
        Err(_) => Ok(None),
    }
}

impl ApiKeys {
    /// Parses `key:secret` pairs separated by commas or newlines, as
    /// `ROOMLET_API_KEYS` holds them.
    pub fn parse(var: &str, text: &Secret) -> Result<Self, SecretError> {
        let mut keys = ApiKeys::default();
        for pair in text
            .expose()
            .split([',', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let Some((key, secret)) = pair.split_once(':') else {
                return Err(SecretError::Malformed {
                    var: var.into(),
                    what: "expected key:secret pairs separated by commas",
                });
            };
            if key.trim().is_empty() || secret.trim().is_empty() {
                return Err(SecretError::Malformed {
                    var: var.into(),
                    what: "a key or a secret is empty",
                });
            }
            keys.insert(key.trim(), Secret::new(secret.trim()));
        }
        Ok(keys)
    }

    /// The well-known development key pair used by `--dev` (as LiveKit's
    /// dev mode does). Never use it in production.
    pub fn dev() -> Self {
        let mut keys = ApiKeys::default();
        keys.insert(DEV_API_KEY, Secret::new(DEV_API_SECRET));
        keys
    }
}

/// The development API key.
pub const DEV_API_KEY: &str = "devkey";
/// The development API secret.
pub const DEV_API_SECRET: &str = "secret";
/// The operator credential `--dev` accepts when `ROOMLET_OPERATOR_TOKEN` is
/// not set, so the admin API (component upload, rollback) works on a
/// developer's machine as the docs describe. Never in production: without
/// `--dev` there is no default.
pub const DEV_OPERATOR_TOKEN: &str = "dev-operator";
