//! roomlet's default **auth** component.
//!
//! Verifies LiveKit-format access tokens (JWT signed with HS256) and turns
//! them into a roomlet `identity`. The API key is the token's `iss`; its
//! secret comes from the host's `secrets` import. Config keys:
//!
//! - `clock-leeway-seconds` (default 5): tolerated clock skew on `nbf`/`exp`.
//!
//! It also issues media-plane credentials (Agora RTC and LiveKit tokens)
//! when the host configures them: [`media`] says which keys.
//!
//! The verification itself lives in [`token`] as plain Rust so it can be
//! tested natively; this file only binds it to the WIT world `auth`.

pub mod agora;
pub mod media;
pub mod token;

mod component;
