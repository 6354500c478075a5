//! The one token minter of the tests. [`Token`] mints with roomlet's own
//! minter (what `roomlet token create` prints), the development key by
//! default; [`sign_jwt`] signs claims a test crafts itself (expired,
//! forged, odd grants), independently of roomlet's code.

use roomlet::runtime::secrets::{ApiKeys, Secret};
use roomlet::tokens::TokenRequest;
use std::time::Duration;

/// An access token to mint.
#[derive(Debug, Clone)]
pub struct Token {
    request: TokenRequest,
    key: Option<(String, String)>,
}

impl Token {
    /// A token for `identity` in `room`: named after the identity (upper
    /// case), every grant but `roomAdmin`, ten minutes, the dev key.
    pub fn new(room: &str, identity: &str) -> Self {
        Self {
            request: TokenRequest {
                room: room.into(),
                identity: identity.into(),
                name: Some(identity.to_uppercase()),
                metadata: None,
                ttl: Duration::from_secs(600),
                admin: false,
                create: true,
            },
            key: None,
        }
    }

    /// Signed with API key `key` and `secret` instead of the dev pair.
    pub fn key(mut self, key: &str, secret: &str) -> Self {
        self.key = Some((key.into(), secret.into()));
        self
    }

    /// With `roomAdmin` when `admin`.
    pub fn admin(mut self, admin: bool) -> Self {
        self.request.admin = admin;
        self
    }

    /// With `roomCreate` only when `create`.
    pub fn create(mut self, create: bool) -> Self {
        self.request.create = create;
        self
    }

    /// With this display name (`None`: none).
    pub fn name(mut self, name: Option<&str>) -> Self {
        self.request.name = name.map(str::to_owned);
        self
    }

    /// With application metadata.
    pub fn metadata(mut self, metadata: Option<&str>) -> Self {
        self.request.metadata = metadata.map(str::to_owned);
        self
    }

    /// Valid for `ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.request.ttl = ttl;
        self
    }

    /// The signed token.
    pub fn mint(&self) -> String {
        match &self.key {
            Some((key, secret)) => roomlet::tokens::mint(key, &Secret::new(secret), &self.request),
            None => {
                let keys = ApiKeys::dev();
                let (key, secret) = keys.first().expect("the dev key");
                roomlet::tokens::mint(key, secret, &self.request)
            }
        }
    }
}

/// Signs an HS256 JWT over `claims` with `secret`, independently of
/// roomlet's code, under `header` as given (a test may set any `alg`).
pub fn sign_jwt(header: &serde_json::Value, claims: &serde_json::Value, secret: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        b64.encode(mac.finalize().into_bytes())
    )
}

/// [`sign_jwt`] under the usual `{"alg":"HS256","typ":"JWT"}` header.
pub fn hs256(claims: &serde_json::Value, secret: &str) -> String {
    sign_jwt(
        &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        claims,
        secret,
    )
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A dev-key token with every participant grant for `identity` in `room`,
/// expiring `exp_in` seconds from now (negative: expired already), signed
/// with [`hs256`].
pub fn dev_token_expiring(room: &str, identity: &str, exp_in: i64) -> String {
    let now = now_secs() as i64;
    hs256(
        &serde_json::json!({
            "iss": roomlet::runtime::secrets::DEV_API_KEY,
            "sub": identity,
            "nbf": now - 5,
            "exp": now + exp_in,
            "video": {"room": room, "roomJoin": true, "roomCreate": true,
                      "canPublish": true, "canSubscribe": true, "canPublishData": true},
        }),
        roomlet::runtime::secrets::DEV_API_SECRET,
    )
}
