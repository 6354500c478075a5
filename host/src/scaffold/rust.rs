//! The Rust template: a crate for `cargo build --target wasm32-wasip2`.

use super::{WIT_BINDGEN_VERSION, wasm_file_name};

/// (relative path, contents) of the Rust template's own files.
pub(super) fn files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Cargo.toml", cargo_toml(name)),
        ("src/lib.rs", lib_rs(name)),
        ("README.md", readme(name)),
        (".gitignore", "/target\n".to_owned()),
    ]
}

fn cargo_toml(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
description = "A roomlet rooms plugin"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the wasm32-wasip2 component; rlib: native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
wit-bindgen = {{ version = "{WIT_BINDGEN_VERSION}", default-features = false, features = ["macros", "realloc"] }}

# A small, fast component.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true

# A workspace of its own: the crate builds wherever it is put.
[workspace]
"#
    )
}

fn lib_rs(name: &str) -> String {
    const TEMPLATE: &str = r##"//! __NAME__: a roomlet rooms plugin.
//!
//! One instance of this component serves one room, and the host calls it
//! one hook at a time. This starting point accepts every join, sends room
//! messages to everyone else and messages addressed to a peer to that peer.
//! The guide is docs/plugins.md in the roomlet repository.
//!
//! Build:  cargo build --target wasm32-wasip2 --release
//! Run:    roomlet serve --dev --module rooms=target/wasm32-wasip2/release/__WASM__

mod bindings {
    #![allow(unsafe_code, missing_docs, clippy::all)]
    wit_bindgen::generate!({ world: "rooms", path: "wit" });

    // The export symbols only make sense on wasm; natively the crate is
    // built for its unit tests.
    #[cfg(target_arch = "wasm32")]
    use super::Room;
    #[cfg(target_arch = "wasm32")]
    export!(Room);
}

use bindings::exports::roomlet::signal::room::{
    Action, CreateCause, Guest, Outgoing, RoomSettings,
};
use bindings::roomlet::signal::types::{Peer, Rejection, RoomMessage, Signal, Target};

/// Stored beside every snapshot; change it when the snapshot format changes.
const STATE_VERSION: &str = "__NAME__/1";

/// Sends a panic's message through the host's `log` (at error, so it also
/// reaches the node's event log, with the room and version beside it)
/// before the panic traps. Called where every instance starts: `on_create`
/// and `restore`. Without it the message still reaches the host, through
/// stderr, as std's default hook writes it.
fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                use bindings::roomlet::signal::log;
                log::log(log::Level::Error, &format!("panic: {info}"));
            }));
        });
    }
}

/// The exported `room` implementation.
struct Room;

impl Guest for Room {
    fn on_create(_cause: CreateCause) -> RoomSettings {
        install_panic_hook();
        RoomSettings {
            observe_signals: false,
            // Off, the host routes messages as `on_message` below does,
            // without calling it: turn it off if you keep that routing.
            observe_messages: true,
        }
    }

    fn on_join(_peer: Peer) -> Result<Vec<Action>, Rejection> {
        // Refuse with Err(Rejection { code: "...".into(), reason: "...".into() }).
        Ok(Vec::new())
    }

    fn on_leave(_peer: Peer) -> Vec<Action> {
        Vec::new()
    }

    fn on_message(message: RoomMessage) -> Vec<Action> {
        let out = Outgoing {
            sender: message.sender.clone(),
            data: message.data,
        };
        match message.target {
            Target::Room => vec![Action::Broadcast((out, vec![message.sender]))],
            Target::Peer(to) => vec![Action::Send((vec![to], out))],
        }
    }

    fn on_signal(_signal: Signal) -> Vec<Action> {
        Vec::new()
    }

    fn on_timer() -> Vec<Action> {
        Vec::new()
    }

    fn state_version() -> String {
        STATE_VERSION.to_string()
    }

    fn snapshot() -> Vec<u8> {
        Vec::new()
    }

    fn restore(_version: String, _state: Vec<u8>) -> Result<(), String> {
        install_panic_hook();
        // Nothing in memory yet, so any snapshot will do, even another
        // plugin's (this one can then replace it on live rooms). Once you
        // keep state here, check the version and refuse what you cannot
        // read: Err("why".into()) rolls a hot reload back.
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_messages_go_to_everyone_else() {
        let actions = Room::on_message(RoomMessage {
            sender: "p-1".into(),
            target: Target::Room,
            data: r#"{"text":"hi"}"#.into(),
        });
        assert!(matches!(
            &actions[..],
            [Action::Broadcast((out, except))] if out.sender == "p-1" && except == &["p-1"]
        ));
    }
}
"##;
    TEMPLATE
        .replace("__WASM__", &wasm_file_name(name))
        .replace("__NAME__", name)
}

fn readme(name: &str) -> String {
    format!(
        "# {name}\n\n\
         A roomlet rooms plugin (a WebAssembly component for the `rooms` world in `wit/`).\n\n\
         ```sh\n\
         rustup target add wasm32-wasip2        # once\n\
         cargo test                             # native unit tests\n\
         cargo build --target wasm32-wasip2 --release\n\
         roomlet serve --dev --module rooms=target/wasm32-wasip2/release/{wasm}\n\
         ```\n\n\
         `wit/` is a copy of the contract of the roomlet that generated this crate;\n\
         replace it when you upgrade roomlet. The guide is `docs/plugins.md` in\n\
         the roomlet repository.\n",
        wasm = wasm_file_name(name)
    )
}
