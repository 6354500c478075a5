//! Builds the fixture components the tests load (hostile behaviour, example
//! plugins) and tells the tests where they are.

use std::path::PathBuf;

/// (cargo package, env var the tests read its path from).
const FIXTURES: &[(&str, &str)] = &[
    ("roomlet-fixture-hostile", "ROOMLET_FIXTURE_HOSTILE"),
    ("roomlet-fixture-leaky-auth", "ROOMLET_FIXTURE_LEAKY_AUTH"),
    (
        "roomlet-fixture-contract-020",
        "ROOMLET_FIXTURE_CONTRACT_020",
    ),
    ("roomlet-example-one-to-one", "ROOMLET_EXAMPLE_ONE_TO_ONE"),
    ("roomlet-example-classroom", "ROOMLET_EXAMPLE_CLASSROOM"),
    (
        "roomlet-example-chat-history",
        "ROOMLET_EXAMPLE_CHAT_HISTORY",
    ),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf();
    roomlet_module_builder::rerun_if_changed(&[
        workspace.join("wit"),
        manifest.join("fixtures"),
        workspace.join("modules/examples"),
    ]);
    let packages: Vec<&str> = FIXTURES.iter().map(|(p, _)| *p).collect();
    let built = roomlet_module_builder::build(&workspace, &packages);
    for (path, (_, var)) in built.iter().zip(FIXTURES) {
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
