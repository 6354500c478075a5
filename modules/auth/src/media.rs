//! Media-plane credentials: what a peer needs to enter the same room on an
//! SFU (Agora's RTC service, a LiveKit server) as on roomlet.
//!
//! Plain Rust over a small [`Env`], so the component and the host's native
//! benchmark build run the same code and it is tested natively.
//!
//! Config keys (the host writes them from its `[media]` section; a custom
//! auth plugin reads the same ones):
//!
//! - `media.ttl-seconds`: how long a credential lasts at most (default 3600).
//! - `agora.app-id`: Agora's app id; the app certificate is the secret `agora`.
//! - `livekit.url`, `livekit.url.<region>`: the LiveKit server a client of
//!   that region connects to; `livekit.api-key`, whose secret is `livekit`.
//!
//! Whom the provider sees: the peer id, never the bare identity. One
//! identity may be in a room from several devices, and both providers drop
//! the earlier of two equal accounts; the peer id is unique in the room
//! and kept across resumes, so a resumed session is the same participant.

use crate::agora;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A credential lasts this long unless `media.ttl-seconds` says otherwise.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// Agora refuses privileges longer than a day.
pub const MAX_AGORA_SECS: u64 = 86_400;

/// What the credentials are for.
pub struct Request<'a> {
    /// The room, as roomlet names it.
    pub room: &'a str,
    /// The peer id.
    pub peer: &'a str,
    /// The peer's display name.
    pub name: &'a str,
    /// The region of the peer's gateway.
    pub region: &'a str,
    /// May publish audio and video.
    pub publish: bool,
    /// May publish data.
    pub publish_data: bool,
    /// May subscribe.
    pub subscribe: bool,
    /// When the session's access token expires (Unix ms).
    pub expires_at_ms: u64,
    /// Now (Unix ms).
    pub now_ms: u64,
}

/// Where the config, the secrets and randomness come from.
pub trait Env {
    /// A config value.
    fn config(&self, key: &str) -> Option<String>;
    /// A media provider's secret.
    fn secret(&self, provider: &str) -> Option<String>;
    /// A random number (Agora's salt).
    fn random_u32(&self) -> u32;
}

/// One provider's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `agora` or `livekit`.
    pub provider: &'static str,
    /// Where to connect (LiveKit).
    pub url: Option<String>,
    /// The app id (Agora).
    pub app_id: Option<String>,
    /// The channel or room at the provider.
    pub channel: String,
    /// The account or identity at the provider.
    pub account: String,
    /// The token.
    pub token: String,
    /// When it expires (Unix ms).
    pub expires_at_ms: u64,
}

/// Issues a credential for each configured provider. An error names what
/// is wrong without any secret in it.
pub fn issue(req: &Request<'_>, env: &impl Env) -> Result<Vec<Credential>, String> {
    let ttl = match env.config("media.ttl-seconds") {
        None => DEFAULT_TTL_SECS,
        Some(t) => t
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&t| t > 0)
            .ok_or("media.ttl-seconds is not a positive whole number")?,
    };
    let now_s = req.now_ms / 1000;
    let left = (req.expires_at_ms / 1000).saturating_sub(now_s);
    if left == 0 {
        return Err("the session's access token has expired".into());
    }
    let mut out = Vec::new();
    if let Some(app_id) = env.config("agora.app-id") {
        let certificate = env
            .secret("agora")
            .ok_or("agora.app-id is set but the agora certificate is not")?;
        out.push(agora_credential(
            req,
            &app_id,
            &certificate,
            left.min(ttl).min(MAX_AGORA_SECS),
            env.random_u32(),
        )?);
    }
    if let Some(key) = env.config("livekit.api-key") {
        let secret = env
            .secret("livekit")
            .ok_or("livekit.api-key is set but the livekit secret is not")?;
        let url = env
            .config(&format!("livekit.url.{}", req.region))
            .or_else(|| env.config("livekit.url"))
            .ok_or("livekit.api-key is set but livekit.url is not")?;
        out.push(livekit_credential(req, url, &key, &secret, left.min(ttl)));
    }
    Ok(out)
}

fn agora_credential(
    req: &Request<'_>,
    app_id: &str,
    certificate: &str,
    expire: u64,
    salt: u32,
) -> Result<Credential, String> {
    if !agora::is_app_id(app_id) || !agora::is_app_id(certificate) {
        return Err("the agora app id and certificate must be 32 hex characters".into());
    }
    // Both fit: `expire` is at most a day, and u32 seconds last to 2106.
    let expire32 = u32::try_from(expire).unwrap_or(u32::MAX);
    let issue_ts = u32::try_from(req.now_ms / 1000).unwrap_or(u32::MAX);
    let privileges = agora::RtcPrivileges {
        join: expire32,
        publish_audio: req.publish.then_some(expire32),
        publish_video: req.publish.then_some(expire32),
        publish_data: req.publish_data.then_some(expire32),
    };
    let channel = agora::channel_name(req.room);
    let token = agora::rtc_token(
        app_id,
        certificate,
        &channel,
        req.peer,
        expire32,
        &privileges,
        issue_ts,
        // Agora's builders draw the salt from 1..=99,999,999.
        salt % 99_999_999 + 1,
    );
    Ok(Credential {
        provider: "agora",
        url: None,
        app_id: Some(app_id.to_owned()),
        channel,
        account: req.peer.to_owned(),
        token,
        expires_at_ms: (req.now_ms / 1000 + expire) * 1000,
    })
}

fn livekit_credential(
    req: &Request<'_>,
    url: String,
    key: &str,
    secret: &str,
    ttl: u64,
) -> Credential {
    let now_s = req.now_ms / 1000;
    let exp = now_s + ttl;
    let claims = serde_json::json!({
        "iss": key,
        "sub": req.peer,
        "name": req.name,
        "nbf": now_s,
        "exp": exp,
        "jti": req.peer,
        "video": {
            "room": req.room,
            "roomJoin": true,
            "canPublish": req.publish,
            "canPublishData": req.publish_data,
            "canSubscribe": req.subscribe,
        },
    });
    Credential {
        provider: "livekit",
        url: Some(url),
        app_id: None,
        channel: req.room.to_owned(),
        account: req.peer.to_owned(),
        token: hs256(&claims, secret),
        expires_at_ms: exp * 1000,
    }
}

/// A JWT signed with HS256, as LiveKit's servers verify them.
fn hs256(claims: &serde_json::Value, secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    // HMAC takes a key of any length.
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fixed(
        HashMap<&'static str, &'static str>,
        HashMap<&'static str, &'static str>,
    );

    impl Env for Fixed {
        fn config(&self, key: &str) -> Option<String> {
            self.0.get(key).map(|s| s.to_string())
        }
        fn secret(&self, provider: &str) -> Option<String> {
            self.1.get(provider).map(|s| s.to_string())
        }
        fn random_u32(&self) -> u32 {
            7
        }
    }

    fn env() -> Fixed {
        Fixed(
            HashMap::from([
                ("agora.app-id", "970CA35de60c44645bbae8a215061b33"),
                ("livekit.api-key", "lk-key"),
                ("livekit.url", "wss://lk.example"),
                ("livekit.url.eu-west", "wss://eu.lk.example"),
            ]),
            HashMap::from([
                ("agora", "5CFd2fd1755d40ecb72977518be15d3b"),
                ("livekit", "lk-secret-lk-secret-lk-secret-00"),
            ]),
        )
    }

    fn request(publish: bool) -> Request<'static> {
        Request {
            room: "a/b",
            peer: "p-1",
            name: "Ann",
            region: "eu-west",
            publish,
            publish_data: publish,
            subscribe: true,
            expires_at_ms: 1_700_000_600_000,
            now_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn both_providers_are_issued_with_the_shorter_expiry() {
        let out = issue(&request(true), &env()).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].provider, "agora");
        assert_eq!(out[0].account, "p-1");
        assert!(out[0].token.starts_with("007"));
        assert_eq!(out[0].expires_at_ms, 1_700_000_600_000);
        assert_eq!(out[1].provider, "livekit");
        assert_eq!(out[1].url.as_deref(), Some("wss://eu.lk.example"));
        assert_eq!(out[1].channel, "a/b");
    }

    #[test]
    fn an_expired_session_gets_none() {
        let mut r = request(true);
        r.now_ms = r.expires_at_ms;
        assert!(issue(&r, &env()).is_err());
    }

    #[test]
    fn a_missing_secret_is_an_error_naming_no_secret() {
        let mut e = env();
        e.1.remove("livekit");
        let err = issue(&request(true), &e).unwrap_err();
        assert!(err.contains("livekit"), "{err}");
        assert!(!err.contains("5CFd2fd1"), "{err}");
    }
}
