//! TURN credentials in coturn's REST scheme: the username is
//! `expiry:identity`, the password base64(HMAC-SHA1(shared secret,
//! username)). coturn (`--use-auth-secret --static-auth-secret`) checks
//! them without talking to roomlet.

use base64::Engine as _;
use hmac::Mac as _;
use roomlet_runtime::secrets::Secret;

/// A time-limited TURN credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// `expiry:identity`.
    pub username: String,
    /// base64 HMAC-SHA1 of the username.
    pub credential: String,
}

/// A credential for `identity` valid until `expires_unix` (seconds).
pub fn credential(secret: &Secret, identity: &str, expires_unix: u64) -> TurnCredential {
    let username = format!("{expires_unix}:{identity}");
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    TurnCredential {
        username,
        credential,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_coturn_rest_scheme() {
        // Reference computed independently: printf '1700000000:alice' |
        // openssl dgst -sha1 -hmac s3cret -binary | base64
        let c = credential(&Secret::new("s3cret"), "alice", 1_700_000_000);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.credential, "TtElzSjT0GdnTQ9xdcRNxx96yQs=");
    }
}
