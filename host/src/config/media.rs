//! `[media]`: the media plane's credentials, issued by the auth function
//! at join, at resume and on `media-token` (docs/auth.md, "Media
//! credentials"). The file holds what is not secret; the Agora app
//! certificate and the LiveKit API secret come from the environment or a
//! `*_FILE`, like every secret, and reach the auth component only.

use roomlet_runtime::secrets::{ApiKeys, Secret, SecretError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[media]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSection {
    /// The longest a credential lasts, in seconds (never past the
    /// session's access token; Agora's, never past a day).
    pub ttl_seconds: u64,
    /// Ask the auth function for credentials even with no provider below:
    /// for a custom auth plugin that issues its own.
    pub plugin: bool,
    /// Agora's RTC service.
    pub agora: Option<AgoraSection>,
    /// A LiveKit server.
    pub livekit: Option<LiveKitSection>,
}

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            ttl_seconds: 3600,
            plugin: false,
            agora: None,
            livekit: None,
        }
    }
}

/// `[media.agora]`; the certificate is `ROOMLET_AGORA_APP_CERTIFICATE`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgoraSection {
    /// The project's app id: 32 hex characters.
    pub app_id: String,
}

/// `[media.livekit]`; the secret is `ROOMLET_LIVEKIT_API_SECRET`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LiveKitSection {
    /// The server's URL clients connect to (`wss://…`).
    pub url: String,
    /// Another URL for clients of a region, by region name.
    #[serde(default)]
    pub regions: BTreeMap<String, String>,
    /// The API key LiveKit knows this deployment by.
    pub api_key: String,
}

/// The media secrets, read from the environment.
#[derive(Debug, Clone, Default)]
pub struct MediaSecrets {
    /// Agora's app certificate.
    pub agora: Option<Secret>,
    /// LiveKit's API secret.
    pub livekit: Option<Secret>,
}

impl MediaSecrets {
    /// Reads `ROOMLET_AGORA_APP_CERTIFICATE` and `ROOMLET_LIVEKIT_API_SECRET`
    /// (each also as `*_FILE`).
    pub fn from_env() -> Result<Self, SecretError> {
        Ok(Self {
            agora: roomlet_runtime::secrets::from_env("ROOMLET_AGORA_APP_CERTIFICATE")?,
            livekit: roomlet_runtime::secrets::from_env("ROOMLET_LIVEKIT_API_SECRET")?,
        })
    }
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `ws://`, `wss://`, `http://` or `https://` and a host, nothing blank.
fn is_server_url(s: &str) -> bool {
    let rest = ["wss://", "ws://", "https://", "http://"]
        .iter()
        .find_map(|p| s.strip_prefix(p));
    match rest {
        Some(rest) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

impl MediaSection {
    /// Whether sessions ask the auth function for credentials.
    pub fn enabled(&self) -> bool {
        self.plugin || self.agora.is_some() || self.livekit.is_some()
    }

    /// Checks what the file says (the secrets are checked where the auth
    /// function runs: [`MediaSection::attach`]).
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl_seconds == 0 {
            return Err("media.ttl_seconds must be positive".into());
        }
        if let Some(a) = &self.agora
            && !is_hex32(&a.app_id)
        {
            return Err(
                "media.agora.app_id must be 32 hex characters (the app id Agora's console shows)"
                    .into(),
            );
        }
        if let Some(l) = &self.livekit {
            for (name, url) in std::iter::once(("url".to_owned(), &l.url))
                .chain(l.regions.iter().map(|(r, u)| (format!("regions.{r}"), u)))
            {
                if !is_server_url(url) {
                    return Err(format!(
                        "media.livekit.{name} {url:?} is not a ws://, wss://, http:// or https:// URL with a host"
                    ));
                }
            }
            if l.api_key.trim().is_empty() {
                return Err("media.livekit.api_key must not be empty".into());
            }
        }
        Ok(())
    }

    /// The auth component's config keys for this section
    /// (`roomlet_module_auth::media` reads them).
    pub fn auth_config(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.enabled() {
            return out;
        }
        out.push(("media.ttl-seconds".into(), self.ttl_seconds.to_string()));
        if let Some(a) = &self.agora {
            out.push(("agora.app-id".into(), a.app_id.clone()));
        }
        if let Some(l) = &self.livekit {
            out.push(("livekit.url".into(), l.url.clone()));
            out.push(("livekit.api-key".into(), l.api_key.clone()));
            for (region, url) in &l.regions {
                out.push((format!("livekit.url.{region}"), url.clone()));
            }
        }
        out
    }

    /// Hands the configured providers' secrets to the auth function's
    /// secret set, refusing what cannot work: a missing secret, an Agora
    /// certificate that is not 32 hex characters, and a LiveKit key that is
    /// also a roomlet API key (each side's tokens would then admit their
    /// holder to the other). No message names a secret's value.
    pub fn attach(&self, secrets: &MediaSecrets, keys: &mut ApiKeys) -> Result<(), String> {
        if self.agora.is_some() {
            let Some(cert) = &secrets.agora else {
                return Err("[media.agora] is configured but ROOMLET_AGORA_APP_CERTIFICATE (or ROOMLET_AGORA_APP_CERTIFICATE_FILE) is not set".into());
            };
            if !is_hex32(cert.expose()) {
                return Err(
                    "ROOMLET_AGORA_APP_CERTIFICATE must be 32 hex characters (the app certificate Agora's console shows)"
                        .into(),
                );
            }
            keys.insert_media("agora", cert.clone());
        }
        if let Some(l) = &self.livekit {
            let Some(secret) = &secrets.livekit else {
                return Err("[media.livekit] is configured but ROOMLET_LIVEKIT_API_SECRET (or ROOMLET_LIVEKIT_API_SECRET_FILE) is not set".into());
            };
            if keys.api_secret(&l.api_key).is_some() {
                return Err(format!(
                    "media.livekit.api_key {:?} is also one of roomlet's API keys: give LiveKit a key of its own, or a token for one would admit its holder to the other",
                    l.api_key
                ));
            }
            if keys.contains_secret(secret) {
                return Err("ROOMLET_LIVEKIT_API_SECRET is also the secret of one of roomlet's API keys: give LiveKit a secret of its own".into());
            }
            keys.insert_media("livekit", secret.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> MediaSection {
        MediaSection {
            agora: Some(AgoraSection {
                app_id: "970CA35de60c44645bbae8a215061b33".into(),
            }),
            livekit: Some(LiveKitSection {
                url: "wss://lk.example".into(),
                regions: BTreeMap::from([("eu-west".into(), "wss://eu.lk.example".into())]),
                api_key: "lk-key".into(),
            }),
            ..MediaSection::default()
        }
    }

    fn secrets() -> MediaSecrets {
        MediaSecrets {
            agora: Some(Secret::new("5CFd2fd1755d40ecb72977518be15d3b")),
            livekit: Some(Secret::new("lk-secret")),
        }
    }

    #[test]
    fn a_whole_section_passes_and_configures_the_auth_function() {
        let s = section();
        s.validate().unwrap();
        let mut keys = ApiKeys::dev();
        s.attach(&secrets(), &mut keys).unwrap();
        assert_eq!(keys.media_secret("livekit"), Some("lk-secret"));
        let config = s.auth_config();
        assert!(config.contains(&("livekit.url.eu-west".into(), "wss://eu.lk.example".into())));
    }

    #[test]
    fn misconfigurations_are_refused_without_naming_a_secret() {
        let mut s = section();
        s.agora.as_mut().unwrap().app_id = "not-hex".into();
        assert!(s.validate().unwrap_err().contains("app_id"));
        let mut s = section();
        s.livekit.as_mut().unwrap().url = "lk.example".into();
        assert!(s.validate().unwrap_err().contains("URL"));
        let s = section();
        let mut keys = ApiKeys::dev();
        let mut missing = secrets();
        missing.agora = None;
        let e = s.attach(&missing, &mut keys).unwrap_err();
        assert!(e.contains("ROOMLET_AGORA_APP_CERTIFICATE"), "{e}");
        let mut s = section();
        s.livekit.as_mut().unwrap().api_key = roomlet_runtime::secrets::DEV_API_KEY.into();
        let e = s.attach(&secrets(), &mut ApiKeys::dev()).unwrap_err();
        assert!(e.contains("also one of roomlet's API keys"), "{e}");
        assert!(!e.contains("5CFd2fd1"), "{e}");
    }
}
