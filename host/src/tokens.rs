//! Minting access tokens in LiveKit's format (HS256 JWT with a `video`
//! grant), for `roomlet token create` and the `--dev` demo endpoint.
//! Verification happens in the auth component, not here.

use base64::Engine as _;
use hmac::Mac as _;
use roomlet_runtime::secrets::Secret;
use serde::Serialize;
use std::time::Duration;

/// What the token allows.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Room to join.
    pub room: String,
    /// Identity (`sub`).
    pub identity: String,
    /// Display name.
    pub name: Option<String>,
    /// Application metadata.
    pub metadata: Option<String>,
    /// Lifetime.
    pub ttl: Duration,
    /// Grants `roomAdmin`.
    pub admin: bool,
    /// Grants `roomCreate`.
    pub create: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VideoGrant<'a> {
    room: &'a str,
    room_join: bool,
    room_create: bool,
    room_admin: bool,
    can_publish: bool,
    can_subscribe: bool,
    can_publish_data: bool,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    nbf: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a str>,
    video: VideoGrant<'a>,
}

/// Signs a token for `req` with API key `key` and its `secret`.
pub fn mint(key: &str, secret: &Secret, req: &TokenRequest) -> String {
    let now = roomlet_runtime::clock::unix_secs();
    let claims = Claims {
        iss: key,
        sub: &req.identity,
        nbf: now.saturating_sub(1),
        exp: now + req.ttl.as_secs().max(1),
        name: req.name.as_deref(),
        metadata: req.metadata.as_deref(),
        video: VideoGrant {
            room: &req.room,
            room_join: true,
            room_create: req.create,
            room_admin: req.admin,
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
        },
    };
    sign(key, secret, &claims)
}

/// Signs any serialisable claims as an HS256 JWT.
pub fn sign(_key: &str, secret: &Secret, claims: &impl Serialize) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let input = format!("{header}.{body}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64.encode(mac.finalize().into_bytes()))
}
