//! Builds guest components (`wasm32-wasip2`) from a build script.
//!
//! The host embeds the default components and the tests load fixture
//! components, so both need `.wasm` files that the same `cargo build` or
//! `cargo test` produced: nothing pre-built is checked in. A nested cargo
//! must use its own target directory, or it would wait forever on the lock
//! held by the outer cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod toolchain;

/// The profile the guests are built with (see the root `Cargo.toml`).
pub const PROFILE: &str = "wasm";
/// The target the guests are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Builds `packages` (cargo package names) for `wasm32-wasip2` and returns,
/// for each, the path of the component it produced, in the same order.
///
/// `workspace` is the workspace root. Panics with cargo's output on failure:
/// this runs in build scripts, where a panic is how a failure is reported.
pub fn build(workspace: &Path, packages: &[&str]) -> Vec<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    match toolchain::ensure_target(&rustc, &[]) {
        Ok(toolchain::Target::Present) => {}
        Ok(toolchain::Target::Installed) => {
            println!(
                "cargo:warning=the {TARGET} target was missing: installed it with `rustup target add {TARGET}`"
            );
        }
        Err(e) => panic!("{e}"),
    }
    // On stderr, not as a cargo warning: cargo would replay a warning on
    // every later build. It shows with `cargo build -vv`, and with the
    // nested build's output when that fails.
    eprintln!(
        "building the WebAssembly components {} ({TARGET}, profile {PROFILE}) into target/guests",
        packages.join(", ")
    );
    let target_dir = workspace.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--quiet", "--target", TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(&target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // Flags meant for the host build (crt-static, clippy, coverage) must not
    // leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .output()
        .expect("failed to run cargo for the guest components");
    if !out.status.success() {
        panic!(
            "building guest components {packages:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    packages
        .iter()
        .map(|p| {
            target_dir
                .join(TARGET)
                .join(PROFILE)
                .join(format!("{}.wasm", p.replace('-', "_")))
        })
        .collect()
}

/// Tells cargo to re-run the build script when anything under `dirs` changes.
pub fn rerun_if_changed(dirs: &[PathBuf]) {
    for d in dirs {
        println!("cargo:rerun-if-changed={}", d.display());
    }
}
