//! Glue between the WIT world `relay` and [`crate::policy`].

mod bindings {
    #![allow(unsafe_code, missing_docs, clippy::all, clippy::unwrap_used)]
    wit_bindgen::generate!({ world: "relay", path: "../../wit" });

    // The export symbols (`ns:pkg/iface@ver#func`) are only valid on wasm;
    // natively the crate is built for linting and unit tests.
    #[cfg(target_arch = "wasm32")]
    use super::Component;
    #[cfg(target_arch = "wasm32")]
    export!(Component);
}

use std::sync::OnceLock;

use bindings::exports::roomlet::signal::relay_policy::{Frame, FrameKind, Guest, Verdict};
use bindings::roomlet::signal::config;
use bindings::roomlet::signal::log::{Level, log};
use bindings::roomlet::signal::types::Rejection;

use crate::policy::{self, DEFAULT_MAX_PAYLOAD_BYTES, Kind, MAX_PAYLOAD_KEY};

/// `max-payload-bytes`, read once per instance (config is read-only).
fn max_payload_bytes() -> u64 {
    static MAX: OnceLock<u64> = OnceLock::new();
    *MAX.get_or_init(|| match config::get(MAX_PAYLOAD_KEY) {
        None => DEFAULT_MAX_PAYLOAD_BYTES,
        Some(text) => policy::parse_max_payload(&text).unwrap_or_else(|| {
            log(
                Level::Warn,
                &format!(
                    "config {MAX_PAYLOAD_KEY} = {text:?} is not a non-negative integer; \
                     using {DEFAULT_MAX_PAYLOAD_BYTES}"
                ),
            );
            DEFAULT_MAX_PAYLOAD_BYTES
        }),
    })
}

/// The exported `relay` implementation.
struct Component;

impl Guest for Component {
    fn check(frame: Frame) -> Verdict {
        let kind = match frame.kind {
            FrameKind::Signal(_) => Kind::Signal,
            FrameKind::Message => Kind::Message,
        };
        match policy::check(
            kind,
            &frame.sender,
            frame.to.as_deref(),
            &frame.payload,
            max_payload_bytes(),
        ) {
            Ok(()) => Verdict::Forward,
            Err(r) => Verdict::Reject(Rejection {
                code: r.code.to_string(),
                reason: r.reason,
            }),
        }
    }
}
