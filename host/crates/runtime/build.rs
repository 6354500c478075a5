//! Builds the default components (modules/auth, rooms, relay) for
//! wasm32-wasip2 and puts them in OUT_DIR, where `components::embedded`
//! includes them into the binary.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest
        .ancestors()
        .nth(3)
        .expect("host/crates/runtime sits three levels under the workspace")
        .to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    roomlet_module_builder::rerun_if_changed(&[
        workspace.join("wit"),
        workspace.join("modules/auth"),
        workspace.join("modules/rooms"),
        workspace.join("modules/relay"),
    ]);
    let built = roomlet_module_builder::build(
        &workspace,
        &[
            "roomlet-module-auth",
            "roomlet-module-rooms",
            "roomlet-module-relay",
        ],
    );
    for (path, name) in built.iter().zip(["auth", "rooms", "relay"]) {
        std::fs::copy(path, out.join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copying {}: {e}", path.display()));
    }
}
