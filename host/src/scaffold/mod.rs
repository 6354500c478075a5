//! `roomlet new plugin NAME [--lang rust|python]`: writes a new rooms
//! plugin to start from.
//!
//! Either template carries a copy of the WIT contract this binary was built
//! with and is a minimal working room: every join is accepted, room
//! messages go to everyone else and messages addressed to a peer go to that
//! peer. The Rust one is a standalone crate (its own `[workspace]` table,
//! so it builds wherever it is put) depending only on wit-bindgen; the
//! Python one is an `app.py` for componentize-py. `docs/plugins.md` grows
//! either into a real plugin.

mod python;
mod rust;

use std::path::{Path, PathBuf};

pub use roomlet_runtime::contract::WIT_FILES;

/// The wit-bindgen release the template is written against.
pub const WIT_BINDGEN_VERSION: &str = "0.61";

/// The componentize-py release the Python template is written against.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25";

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// A Rust crate built with `cargo build --target wasm32-wasip2`.
    #[default]
    Rust,
    /// An `app.py` built with componentize-py.
    Python,
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rust" => Ok(Lang::Rust),
            "python" => Ok(Lang::Python),
            other => Err(format!(
                "unknown language {other:?} (expected rust or python)"
            )),
        }
    }
}

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
/// produces for the crate `name` (the Python template's build command
/// writes the same name).
pub fn wasm_file_name(name: &str) -> String {
    format!("{}.wasm", name.replace('-', "_"))
}

/// Where the component of plugin `name` lands, relative to its directory.
pub fn wasm_path(name: &str, lang: Lang) -> PathBuf {
    match lang {
        Lang::Rust => Path::new("target/wasm32-wasip2/release").join(wasm_file_name(name)),
        Lang::Python => PathBuf::from(wasm_file_name(name)),
    }
}

/// The command that builds plugin `name`, run in its directory.
pub fn build_command(name: &str, lang: Lang) -> String {
    match lang {
        Lang::Rust => "cargo build --target wasm32-wasip2 --release".to_owned(),
        Lang::Python => python::build_command(name),
    }
}

/// The template's files for a plugin called `name`: (relative path, contents).
pub fn files(name: &str, lang: Lang) -> Vec<(PathBuf, String)> {
    let own = match lang {
        Lang::Rust => rust::files(name),
        Lang::Python => python::files(name),
    };
    let mut out: Vec<(PathBuf, String)> = own
        .into_iter()
        .map(|(p, t)| (PathBuf::from(p), t))
        .collect();
    for (file, text) in WIT_FILES {
        out.push((Path::new("wit").join(file), (*text).to_owned()));
    }
    out
}

/// Creates the plugin `name` in `parent/name` and returns that directory.
/// Refuses to touch a directory that already exists.
pub fn new_plugin(name: &str, parent: &Path, lang: Lang) -> Result<PathBuf, ScaffoldError> {
    validate_name(name)?;
    let root = parent.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io { path, source }
    };
    for (rel, text) in files(name, lang) {
        let path = root.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_standalone_crate() {
        let tmp = std::env::temp_dir().join(format!("roomlet-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let root = new_plugin("my-room", &tmp, Lang::Rust).expect("generate");
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
            new_plugin("my-room", &tmp, Lang::Rust),
            Err(ScaffoldError::Exists(_))
        ));
        std::fs::remove_dir_all(&tmp).expect("cleanup");
    }

    #[test]
    fn generates_a_python_app() {
        let tmp = std::env::temp_dir().join(format!("roomlet-scaffold-py-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let root = new_plugin("py-room", &tmp, Lang::Python).expect("generate");
        let app = std::fs::read_to_string(root.join("app.py")).expect("app.py");
        assert!(app.contains("class Room(exports.Room):"));
        assert!(app.contains("STATE_VERSION = \"py-room/1\""));
        assert!(!app.contains("__NAME__") && !app.contains("__WASM__"));
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
        assert!(readme.contains(&build_command("py-room", Lang::Python)));
        assert!(root.join("wit/rooms.wit").is_file());
        assert_eq!(
            wasm_path("py-room", Lang::Python),
            Path::new("py_room.wasm")
        );
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
