//! `roomlet new plugin NAME`: writes a new rooms plugin crate to start from.
//!
//! The crate stands alone (its own `[workspace]` table, so it builds
//! wherever it is put), depends only on wit-bindgen, carries a copy of the
//! WIT contract this binary was built with, and is a minimal working room:
//! every join is accepted, room messages go to everyone else and messages
//! addressed to a peer go to that peer. `docs/plugins.md` grows it into a
//! real plugin.

use std::path::{Path, PathBuf};

pub use roomlet_runtime::contract::WIT_FILES;

/// The wit-bindgen release the template is written against.
pub const WIT_BINDGEN_VERSION: &str = "0.61";

/// Why a plugin crate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a crate name.
    #[error(
        "invalid plugin name {0:?}: use 1 to 64 ASCII letters, digits, '-' or '_', starting with a letter"
    )]
    InvalidName(String),
    /// The directory is already there.
    #[error("{} already exists; pick another name or --dir", .0.display())]
    Exists(PathBuf),
    /// Writing a file failed.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Names the template refuses: they clash with crates every build sees.
const RESERVED: &[&str] = &["core", "std", "alloc", "proc_macro", "test", "wit_bindgen"];

/// Checks that `name` works as a cargo package name and a directory name.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !RESERVED.contains(&name.replace('-', "_").as_str());
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::InvalidName(name.to_owned()))
    }
}

/// The file name of the component `cargo build --target wasm32-wasip2`
/// produces for the crate `name`.
pub fn wasm_file_name(name: &str) -> String {
    format!("{}.wasm", name.replace('-', "_"))
}

/// The template's files for a crate called `name`: (relative path, contents).
pub fn files(name: &str) -> Vec<(PathBuf, String)> {
    let mut out = vec![
        (PathBuf::from("Cargo.toml"), cargo_toml(name)),
        (PathBuf::from("src/lib.rs"), lib_rs(name)),
        (PathBuf::from("README.md"), readme(name)),
        (PathBuf::from(".gitignore"), "/target\n".to_owned()),
    ];
    for (file, text) in WIT_FILES {
        out.push((Path::new("wit").join(file), (*text).to_owned()));
    }
    out
}

/// Creates the crate `name` in `parent/name` and returns that directory.
/// Refuses to touch a directory that already exists.
pub fn new_plugin(name: &str, parent: &Path) -> Result<PathBuf, ScaffoldError> {
    validate_name(name)?;
    let root = parent.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io { path, source }
    };
    for (rel, text) in files(name) {
        let path = root.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(root)
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

/// The exported `room` implementation.
struct Room;

impl Guest for Room {
    fn on_create(_cause: CreateCause) -> RoomSettings {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_standalone_crate() {
        let tmp = std::env::temp_dir().join(format!("roomlet-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let root = new_plugin("my-room", &tmp).expect("generate");
        assert_eq!(root, tmp.join("my-room"));

        let cargo = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
        let manifest: toml::Table = toml::from_str(&cargo).expect("Cargo.toml is TOML");
        assert_eq!(manifest["package"]["name"].as_str(), Some("my-room"));
        assert!(manifest.contains_key("workspace"), "standalone: {cargo}");
        assert_eq!(
            manifest["dependencies"]["wit-bindgen"]["version"].as_str(),
            Some(WIT_BINDGEN_VERSION)
        );

        let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains(r#"generate!({ world: "rooms", path: "wit" })"#));
        assert!(lib.contains("const STATE_VERSION: &str = \"my-room/1\";"));
        assert!(lib.contains("release/my_room.wasm"));
        assert!(!lib.contains("__"), "every placeholder is replaced");

        for (file, text) in WIT_FILES {
            let copied = std::fs::read_to_string(root.join("wit").join(file)).expect("wit file");
            assert_eq!(&copied, text);
        }
        let rooms = std::fs::read_to_string(root.join("wit/rooms.wit")).expect("rooms.wit");
        assert!(rooms.contains("world rooms"));
        assert!(root.join("README.md").is_file());

        // A second run must not overwrite the plugin.
        assert!(matches!(
            new_plugin("my-room", &tmp),
            Err(ScaffoldError::Exists(_))
        ));
        std::fs::remove_dir_all(&tmp).expect("cleanup");
    }

    #[test]
    fn names_are_checked() {
        for ok in ["a", "my-room", "Room_2", "x".repeat(64).as_str()] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "2fast",
            "-x",
            "a b",
            "../evil",
            "a/b",
            "std",
            "wit-bindgen",
            "é",
            "x".repeat(65).as_str(),
        ] {
            assert!(
                matches!(validate_name(bad), Err(ScaffoldError::InvalidName(_))),
                "{bad:?}"
            );
        }
        assert_eq!(wasm_file_name("my-room"), "my_room.wasm");
    }
}
