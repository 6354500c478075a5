//! Minting access tokens in LiveKit's format (HS256 JWT with a `video`
//! grant), for `roomlet token create` and the `--dev` demo endpoint.
//! Verification happens in the auth component, not here.

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
    let key = jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes());
    // HMAC takes a key of any length and these claims always serialise: a
    // failure here is a bug, answered with a token no one accepts.
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap_or_default()
}
