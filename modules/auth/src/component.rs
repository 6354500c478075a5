//! Glue between the WIT world `auth` and [`crate::token`], [`crate::media`].

mod bindings {
    #![allow(unsafe_code, missing_docs, clippy::all, clippy::unwrap_used)]
    wit_bindgen::generate!({ world: "auth", path: "../../wit" });

    // The export symbols (`ns:pkg/iface@ver#func`) are only valid on wasm;
    // natively the crate is built for linting and unit tests.
    #[cfg(target_arch = "wasm32")]
    use super::Component;
    #[cfg(target_arch = "wasm32")]
    export!(Component);
}

use bindings::exports::roomlet::signal::authenticator::{AuthError, AuthRequest, Guest};
use bindings::exports::roomlet::signal::media::{self, MediaCredential, MediaRequest};
use bindings::roomlet::signal::log::{Level, log};
use bindings::roomlet::signal::types::{Grants, Identity};
use bindings::roomlet::signal::{clock, config, random, secrets};

use crate::token::{self, DEFAULT_LEEWAY_SECS, TokenError};

/// The exported `authenticator` implementation.
struct Component;

fn leeway_ms() -> u64 {
    match config::get("clock-leeway-seconds") {
        None => DEFAULT_LEEWAY_SECS * 1000,
        Some(text) => token::parse_leeway_ms(&text).unwrap_or_else(|| {
            log(
                Level::Warn,
                &format!(
                    "config clock-leeway-seconds is not a whole number of seconds; \
                     using {DEFAULT_LEEWAY_SECS}"
                ),
            );
            DEFAULT_LEEWAY_SECS * 1000
        }),
    }
}

fn grants(g: &token::Grants) -> Grants {
    let mut out = Grants::empty();
    for (set, flag) in [
        (g.join, Grants::JOIN),
        (g.room_create, Grants::ROOM_CREATE),
        (g.publish, Grants::PUBLISH),
        (g.subscribe, Grants::SUBSCRIBE),
        (g.publish_data, Grants::PUBLISH_DATA),
        (g.room_admin, Grants::ROOM_ADMIN),
        (g.hidden, Grants::HIDDEN),
    ] {
        if set {
            out = out | flag;
        }
    }
    out
}

fn auth_error(e: TokenError) -> AuthError {
    match e {
        TokenError::Malformed => AuthError::Malformed,
        TokenError::BadSignature => AuthError::BadSignature,
        TokenError::BadAlgorithm => AuthError::BadAlgorithm,
        TokenError::UnknownKey => AuthError::UnknownKey,
        TokenError::Expired => AuthError::Expired,
        TokenError::NotYetValid => AuthError::NotYetValid,
        TokenError::WrongRoom => AuthError::WrongRoom,
        TokenError::MissingGrant(grant) => AuthError::MissingGrant(grant.to_string()),
    }
}

impl Guest for Component {
    fn authenticate(request: AuthRequest) -> Result<Identity, AuthError> {
        let now_ms = clock::now_ms();
        let leeway_ms = leeway_ms();
        // Never log the token or the secret: only the outcome and the room.
        match token::verify(&request.token, &request.room, now_ms, leeway_ms, |key| {
            secrets::api_secret(key)
        }) {
            Ok(v) => {
                log(
                    Level::Debug,
                    &format!(
                        "token accepted: identity {:?} key {:?} room {:?}",
                        v.identity, v.key, v.room
                    ),
                );
                Ok(Identity {
                    grants: grants(&v.grants),
                    identity: v.identity,
                    name: v.name,
                    metadata: v.metadata,
                    room: v.room,
                    expires_at_ms: v.expires_at_ms,
                })
            }
            Err(e) => {
                log(
                    Level::Debug,
                    &format!(
                        "token rejected ({}) for room {:?} from {}",
                        e.as_str(),
                        request.room,
                        request.client_addr
                    ),
                );
                Err(auth_error(e))
            }
        }
    }
}

/// The host's imports, as [`crate::media`] asks for them.
struct Imports;

impl crate::media::Env for Imports {
    fn config(&self, key: &str) -> Option<String> {
        config::get(key)
    }
    fn secret(&self, provider: &str) -> Option<String> {
        secrets::media_secret(provider)
    }
    fn random_u32(&self) -> u32 {
        let b = random::bytes(4);
        b.iter().fold(0u32, |n, &x| (n << 8) | u32::from(x))
    }
}

impl media::Guest for Component {
    fn issue(request: MediaRequest) -> Result<Vec<MediaCredential>, String> {
        let g = request.peer.grants;
        let has = |flag: Grants| g & flag == flag;
        let req = crate::media::Request {
            room: &request.room,
            peer: &request.peer.id,
            name: &request.peer.name,
            region: &request.region,
            publish: has(Grants::PUBLISH),
            publish_data: has(Grants::PUBLISH_DATA),
            subscribe: has(Grants::SUBSCRIBE),
            expires_at_ms: request.expires_at_ms,
            now_ms: clock::now_ms(),
        };
        // Never log a credential: only who got which.
        let issued = crate::media::issue(&req, &Imports)?;
        Ok(issued
            .into_iter()
            .map(|c| MediaCredential {
                provider: c.provider.to_owned(),
                url: c.url,
                app_id: c.app_id,
                channel: c.channel,
                account: c.account,
                token: c.token,
                expires_at_ms: c.expires_at_ms,
            })
            .collect())
    }
}
