//! Pure verification of LiveKit-format access tokens (JWT, HS256).
//!
//! Nothing here calls a host import: the caller passes the current time,
//! the clock leeway and a secret lookup, so the whole module runs (and is
//! tested) natively.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Number, Value};
use sha2::Sha256;

/// Tokens longer than this are refused as malformed before any decoding.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The only accepted `alg`.
const HS256: &str = "HS256";

/// Why a token was refused. Mirrors the WIT `auth-error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a well-formed JWT, or its claims do not parse.
    Malformed,
    /// The HMAC does not verify.
    BadSignature,
    /// `alg` is absent, `none` or anything but HS256.
    BadAlgorithm,
    /// `iss` names no configured API key.
    UnknownKey,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// The token is for another room (or names no room).
    WrongRoom,
    /// A required grant is missing; names the LiveKit claim.
    MissingGrant(&'static str),
}

impl TokenError {
    /// A short, secret-free description for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::BadSignature => "bad signature",
            TokenError::BadAlgorithm => "bad algorithm",
            TokenError::UnknownKey => "unknown key",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not yet valid",
            TokenError::WrongRoom => "wrong room",
            TokenError::MissingGrant(_) => "missing grant",
        }
    }
}

/// What an identity may do, from the token's `video` grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grants {
    /// `roomJoin` (default false).
    pub join: bool,
    /// `roomCreate` (default false).
    pub room_create: bool,
    /// `canPublish` (default true).
    pub publish: bool,
    /// `canSubscribe` (default true).
    pub subscribe: bool,
    /// `canPublishData` (default true).
    pub publish_data: bool,
    /// `roomAdmin` (default false).
    pub room_admin: bool,
    /// `hidden` (default false).
    pub hidden: bool,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The API key that signed it (`iss`). Not a secret.
    pub key: String,
    /// `sub`.
    pub identity: String,
    /// `name`, or empty.
    pub name: String,
    /// `metadata`, or empty.
    pub metadata: String,
    /// `video.room`.
    pub room: String,
    /// The `video` grant.
    pub grants: Grants,
    /// `exp` in Unix milliseconds.
    pub expires_at_ms: u64,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: Option<Value>,
}

#[derive(Deserialize)]
struct Issuer {
    #[serde(default)]
    iss: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<String>,
    #[serde(default)]
    nbf: Option<Number>,
    #[serde(default)]
    exp: Option<Number>,
    #[serde(default)]
    video: Option<VideoGrant>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct VideoGrant {
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    room_join: Option<bool>,
    #[serde(default)]
    room_admin: Option<bool>,
    #[serde(default)]
    room_create: Option<bool>,
    #[serde(default)]
    can_publish: Option<bool>,
    #[serde(default)]
    can_subscribe: Option<bool>,
    #[serde(default)]
    can_publish_data: Option<bool>,
    #[serde(default)]
    hidden: Option<bool>,
}

impl VideoGrant {
    fn grants(&self) -> Grants {
        Grants {
            join: self.room_join.unwrap_or(false),
            room_create: self.room_create.unwrap_or(false),
            publish: self.can_publish.unwrap_or(true),
            subscribe: self.can_subscribe.unwrap_or(true),
            publish_data: self.can_publish_data.unwrap_or(true),
            room_admin: self.room_admin.unwrap_or(false),
            hidden: self.hidden.unwrap_or(false),
        }
    }
}

/// A JWT NumericDate (seconds, possibly fractional) in milliseconds.
/// Negative dates clamp to 0; non-numbers are `None`.
fn numeric_date_ms(n: &Number) -> Option<u64> {
    if let Some(secs) = n.as_u64() {
        return Some(secs.saturating_mul(1000));
    }
    if n.as_i64().is_some() {
        return Some(0);
    }
    let secs = n.as_f64()?;
    if !secs.is_finite() {
        return None;
    }
    // `as` saturates for floats; negative values become 0.
    Some((secs * 1000.0) as u64)
}

fn b64(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)
}

/// Verifies `token` for a client asking to join `room`.
///
/// Checks, in order: shape and encoding (`Malformed`), header `alg`
/// (`BadAlgorithm`), the signing key named by `iss` (`UnknownKey`), the
/// HMAC-SHA256 signature in constant time (`BadSignature`), the claims
/// (`Malformed`), `nbf` (`NotYetValid`), `exp` (`Expired`), the `roomJoin`
/// grant (`MissingGrant`) and `video.room` (`WrongRoom`).
///
/// `secret_for` maps an API key to its secret. `now_ms` is the current Unix
/// time in milliseconds; `leeway_ms` is tolerated clock skew on both `nbf`
/// and `exp`.
pub fn verify(
    token: &str,
    room: &str,
    now_ms: u64,
    leeway_ms: u64,
    secret_for: impl FnOnce(&str) -> Option<String>,
) -> Result<Verified, TokenError> {
    // 1. Shape and encoding.
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(TokenError::Malformed);
    }
    let header_json = b64(header_b64)?;
    let payload_json = b64(payload_b64)?;
    let signature = b64(signature_b64)?;
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
    // Only `iss` is read before the signature is checked.
    let issuer: Issuer =
        serde_json::from_slice(&payload_json).map_err(|_| TokenError::Malformed)?;

    // 2. Algorithm.
    match &header.alg {
        Some(Value::String(alg)) if alg == HS256 => {}
        _ => return Err(TokenError::BadAlgorithm),
    }

    // 3. Key.
    let key = match issuer.iss {
        Some(key) if !key.is_empty() => key,
        _ => return Err(TokenError::Malformed),
    };
    let secret = match secret_for(&key) {
        Some(secret) if !secret.is_empty() => secret,
        // An empty secret would make every token forgeable: treat as unknown.
        _ => return Err(TokenError::UnknownKey),
    };

    // 4. Signature, compared in constant time by `verify_slice`.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| TokenError::UnknownKey)?;
    drop(secret);
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(payload_b64.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;

    // 5. Claims.
    let claims: Claims =
        serde_json::from_slice(&payload_json).map_err(|_| TokenError::Malformed)?;
    let identity = match claims.sub {
        Some(sub) if !sub.is_empty() => sub,
        _ => return Err(TokenError::Malformed),
    };
    let exp_ms = claims
        .exp
        .as_ref()
        .and_then(numeric_date_ms)
        .ok_or(TokenError::Malformed)?;
    let nbf_ms = match &claims.nbf {
        Some(nbf) => Some(numeric_date_ms(nbf).ok_or(TokenError::Malformed)?),
        None => None,
    };

    // 6. Validity window.
    if let Some(nbf_ms) = nbf_ms
        && now_ms.saturating_add(leeway_ms) < nbf_ms
    {
        return Err(TokenError::NotYetValid);
    }
    if now_ms > exp_ms.saturating_add(leeway_ms) {
        return Err(TokenError::Expired);
    }

    // 7. Grants and room.
    let video = claims.video.unwrap_or_default();
    let grants = video.grants();
    if !grants.join {
        return Err(TokenError::MissingGrant("roomJoin"));
    }
    let token_room = video.room.unwrap_or_default();
    if token_room.is_empty() || token_room != room {
        return Err(TokenError::WrongRoom);
    }

    Ok(Verified {
        key,
        identity,
        name: claims.name.unwrap_or_default(),
        metadata: claims.metadata.unwrap_or_default(),
        room: token_room,
        grants,
        expires_at_ms: exp_ms,
    })
}

/// Clock leeway when `clock-leeway-seconds` is not configured.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;

/// Parses a `clock-leeway-seconds` config value (whole seconds) into
/// milliseconds; `None` when it is not a non-negative integer.
pub fn parse_leeway_ms(text: &str) -> Option<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .map(|secs| secs.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "APIkey123";
    const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cret";
    const ROOM: &str = "lobby";
    const NOW_MS: u64 = 1_700_000_000_000;
    const NOW_S: u64 = NOW_MS / 1000;
    const LEEWAY_MS: u64 = 5_000;

    fn enc(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Test-only signer: HS256 over `header.payload` with `secret`.
    fn sign_raw(header: &Value, payload: &Value, secret: &str) -> String {
        let h = enc(header.to_string().as_bytes());
        let p = enc(payload.to_string().as_bytes());
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
        mac.update(format!("{h}.{p}").as_bytes());
        let sig = enc(&mac.finalize().into_bytes());
        format!("{h}.{p}.{sig}")
    }

    fn sign(payload: &Value) -> String {
        sign_raw(&json!({"alg": "HS256", "typ": "JWT"}), payload, SECRET)
    }

    fn claims() -> Value {
        json!({
            "iss": KEY,
            "sub": "alice",
            "name": "Alice",
            "metadata": "{\"color\":\"red\"}",
            "nbf": NOW_S - 10,
            "exp": NOW_S + 600,
            "video": {"room": ROOM, "roomJoin": true},
        })
    }

    fn secrets(key: &str) -> Option<String> {
        (key == KEY).then(|| SECRET.to_string())
    }

    fn check(token: &str) -> Result<Verified, TokenError> {
        verify(token, ROOM, NOW_MS, LEEWAY_MS, secrets)
    }

    #[test]
    fn valid_token() {
        let v = check(&sign(&claims())).expect("valid");
        assert_eq!(v.key, KEY);
        assert_eq!(v.identity, "alice");
        assert_eq!(v.name, "Alice");
        assert_eq!(v.metadata, "{\"color\":\"red\"}");
        assert_eq!(v.room, ROOM);
        assert_eq!(v.expires_at_ms, (NOW_S + 600) * 1000);
        // LiveKit defaults: publish/subscribe/data true, the rest false.
        assert_eq!(
            v.grants,
            Grants {
                join: true,
                room_create: false,
                publish: true,
                subscribe: true,
                publish_data: true,
                room_admin: false,
                hidden: false,
            }
        );
    }

    #[test]
    fn explicit_grants_and_optional_fields() {
        let mut c = claims();
        c["video"] = json!({
            "room": ROOM, "roomJoin": true, "roomAdmin": true, "roomCreate": true,
            "canPublish": false, "canSubscribe": false, "canPublishData": false,
            "hidden": true, "recorder": true,
        });
        c.as_object_mut().expect("object").remove("name");
        c.as_object_mut().expect("object").remove("metadata");
        c.as_object_mut().expect("object").remove("nbf");
        c["jti"] = json!("abc");
        let v = check(&sign(&c)).expect("valid");
        assert_eq!(v.name, "");
        assert_eq!(v.metadata, "");
        assert_eq!(
            v.grants,
            Grants {
                join: true,
                room_create: true,
                publish: false,
                subscribe: false,
                publish_data: false,
                room_admin: true,
                hidden: true,
            }
        );
    }

    #[test]
    fn fractional_exp() {
        let mut c = claims();
        c["exp"] = json!((NOW_S + 1) as f64 + 0.5);
        let v = check(&sign(&c)).expect("valid");
        assert_eq!(v.expires_at_ms, (NOW_S + 1) * 1000 + 500);
    }

    #[test]
    fn malformed_shapes() {
        let good = sign(&claims());
        let (h, rest) = good.split_once('.').expect("dot");
        let (p, s) = rest.split_once('.').expect("dot");
        for bad in [
            String::new(),
            "abc".to_string(),
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.x"),
            format!(".{p}.{s}"),
            format!("{h}..{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}!.{s}"),
            format!("{h}=.{p}.{s}"),
            format!("{}.{p}.{s}", enc(b"not json")),
            format!("{}.{p}.{s}", enc(b"[1,2]")),
            format!("{h}.{}.{s}", enc(b"not json")),
            format!("{h}.{}.{s}", enc(b"\"string\"")),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(check(&bad), Err(TokenError::Malformed), "token {bad:?}");
        }
    }

    #[test]
    fn malformed_claims_after_signature() {
        for (field, value) in [
            ("sub", json!("")),
            ("sub", Value::Null),
            ("sub", json!(42)),
            ("exp", Value::Null),
            ("exp", json!("tomorrow")),
            ("nbf", json!("yesterday")),
            ("name", json!(1)),
            ("metadata", json!({"a": 1})),
            ("video", json!("lobby")),
            ("video", json!({"room": ROOM, "roomJoin": "yes"})),
        ] {
            let mut c = claims();
            c[field] = value.clone();
            assert_eq!(
                check(&sign(&c)),
                Err(TokenError::Malformed),
                "{field} = {value}"
            );
        }
        let mut c = claims();
        c.as_object_mut().expect("object").remove("exp");
        assert_eq!(check(&sign(&c)), Err(TokenError::Malformed));
        let mut c = claims();
        c.as_object_mut().expect("object").remove("sub");
        assert_eq!(check(&sign(&c)), Err(TokenError::Malformed));
    }

    #[test]
    fn missing_issuer_is_malformed() {
        let mut c = claims();
        c.as_object_mut().expect("object").remove("iss");
        assert_eq!(check(&sign(&c)), Err(TokenError::Malformed));
        c["iss"] = json!(7);
        assert_eq!(check(&sign(&c)), Err(TokenError::Malformed));
    }

    #[test]
    fn bad_algorithm() {
        for header in [
            json!({"alg": "none"}),
            json!({"alg": "HS512"}),
            json!({"alg": "RS256"}),
            json!({"alg": "hs256"}),
            json!({"alg": 256}),
            json!({"typ": "JWT"}),
        ] {
            let token = sign_raw(&header, &claims(), SECRET);
            assert_eq!(check(&token), Err(TokenError::BadAlgorithm), "{header}");
        }
        // `alg: none` with an empty signature.
        let h = enc(br#"{"alg":"none"}"#);
        let p = enc(claims().to_string().as_bytes());
        assert_eq!(check(&format!("{h}.{p}.")), Err(TokenError::BadAlgorithm));
    }

    #[test]
    fn bad_algorithm_before_unknown_key() {
        let mut c = claims();
        c["iss"] = json!("nobody");
        let token = sign_raw(&json!({"alg": "none"}), &c, SECRET);
        assert_eq!(check(&token), Err(TokenError::BadAlgorithm));
    }

    #[test]
    fn unknown_key() {
        let mut c = claims();
        c["iss"] = json!("other-key");
        assert_eq!(check(&sign(&c)), Err(TokenError::UnknownKey));
        // An empty configured secret is never used.
        let token = sign(&claims());
        assert_eq!(
            verify(&token, ROOM, NOW_MS, LEEWAY_MS, |_| Some(String::new())),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn unknown_key_before_bad_signature() {
        let mut c = claims();
        c["iss"] = json!("other-key");
        let token = sign_raw(&json!({"alg": "HS256"}), &c, "wrong");
        assert_eq!(check(&token), Err(TokenError::UnknownKey));
    }

    #[test]
    fn bad_signature() {
        // Wrong secret.
        let token = sign_raw(&json!({"alg": "HS256"}), &claims(), "wrong-secret");
        assert_eq!(check(&token), Err(TokenError::BadSignature));
        // Tampered payload with the original signature.
        let good = sign(&claims());
        let (h, rest) = good.split_once('.').expect("dot");
        let (_, s) = rest.split_once('.').expect("dot");
        let mut c = claims();
        c["video"]["roomAdmin"] = json!(true);
        let p2 = enc(c.to_string().as_bytes());
        assert_eq!(
            check(&format!("{h}.{p2}.{s}")),
            Err(TokenError::BadSignature)
        );
        // Empty and truncated signatures.
        assert_eq!(
            check(&format!("{h}.{}.", enc(claims().to_string().as_bytes()))),
            Err(TokenError::BadSignature)
        );
        let sig = URL_SAFE_NO_PAD.decode(s).expect("signature");
        let truncated = format!(
            "{h}.{}.{}",
            rest.split_once('.').expect("dot").0,
            enc(&sig[..16])
        );
        assert_eq!(check(&truncated), Err(TokenError::BadSignature));
    }

    #[test]
    fn bad_signature_before_claims() {
        // Claims that would be malformed, but the signature is checked first.
        let mut c = claims();
        c["sub"] = json!("");
        let token = sign_raw(&json!({"alg": "HS256"}), &c, "wrong");
        assert_eq!(check(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn not_yet_valid() {
        let mut c = claims();
        c["nbf"] = json!(NOW_S + 60);
        assert_eq!(check(&sign(&c)), Err(TokenError::NotYetValid));
        // Within the leeway it is accepted.
        c["nbf"] = json!(NOW_S + 5);
        assert!(check(&sign(&c)).is_ok());
        c["nbf"] = json!(NOW_S + 6);
        assert_eq!(check(&sign(&c)), Err(TokenError::NotYetValid));
    }

    #[test]
    fn expired() {
        let mut c = claims();
        c["exp"] = json!(NOW_S - 60);
        assert_eq!(check(&sign(&c)), Err(TokenError::Expired));
        // Within the leeway it is accepted.
        c["exp"] = json!(NOW_S - 5);
        assert!(check(&sign(&c)).is_ok());
        c["exp"] = json!(NOW_S - 6);
        assert_eq!(check(&sign(&c)), Err(TokenError::Expired));
        // Without leeway.
        c["exp"] = json!(NOW_S - 1);
        assert_eq!(
            verify(&sign(&c), ROOM, NOW_MS, 0, secrets),
            Err(TokenError::Expired)
        );
        c["exp"] = json!(-1);
        assert_eq!(check(&sign(&c)), Err(TokenError::Expired));
    }

    #[test]
    fn not_yet_valid_before_expired() {
        let mut c = claims();
        c["nbf"] = json!(NOW_S + 600);
        c["exp"] = json!(NOW_S - 600);
        assert_eq!(check(&sign(&c)), Err(TokenError::NotYetValid));
    }

    #[test]
    fn missing_room_join() {
        let mut c = claims();
        c["video"]["roomJoin"] = json!(false);
        assert_eq!(check(&sign(&c)), Err(TokenError::MissingGrant("roomJoin")));
        c["video"]
            .as_object_mut()
            .expect("object")
            .remove("roomJoin");
        assert_eq!(check(&sign(&c)), Err(TokenError::MissingGrant("roomJoin")));
        c.as_object_mut().expect("object").remove("video");
        assert_eq!(check(&sign(&c)), Err(TokenError::MissingGrant("roomJoin")));
    }

    #[test]
    fn expired_before_missing_grant() {
        let mut c = claims();
        c["exp"] = json!(NOW_S - 600);
        c["video"]["roomJoin"] = json!(false);
        assert_eq!(check(&sign(&c)), Err(TokenError::Expired));
    }

    #[test]
    fn wrong_room() {
        let mut c = claims();
        c["video"]["room"] = json!("elsewhere");
        assert_eq!(check(&sign(&c)), Err(TokenError::WrongRoom));
        c["video"]["room"] = json!("");
        assert_eq!(check(&sign(&c)), Err(TokenError::WrongRoom));
        c["video"].as_object_mut().expect("object").remove("room");
        assert_eq!(check(&sign(&c)), Err(TokenError::WrongRoom));
        // An empty requested room never matches an absent token room.
        assert_eq!(
            verify(&sign(&c), "", NOW_MS, LEEWAY_MS, secrets),
            Err(TokenError::WrongRoom)
        );
    }

    #[test]
    fn missing_grant_before_wrong_room() {
        let mut c = claims();
        c["video"] = json!({"room": "elsewhere"});
        assert_eq!(check(&sign(&c)), Err(TokenError::MissingGrant("roomJoin")));
    }

    #[test]
    fn secret_lookup_gets_issuer() {
        let mut seen = None;
        let _ = verify(&sign(&claims()), ROOM, NOW_MS, LEEWAY_MS, |k| {
            seen = Some(k.to_string());
            None
        });
        assert_eq!(seen.as_deref(), Some(KEY));
    }

    #[test]
    fn leeway_config() {
        assert_eq!(parse_leeway_ms("0"), Some(0));
        assert_eq!(parse_leeway_ms("5"), Some(DEFAULT_LEEWAY_SECS * 1000));
        assert_eq!(parse_leeway_ms(" 30 "), Some(30_000));
        assert_eq!(parse_leeway_ms("-1"), None);
        assert_eq!(parse_leeway_ms("1.5"), None);
        assert_eq!(parse_leeway_ms("five"), None);
    }
}
