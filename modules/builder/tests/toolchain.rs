//! A toolchain without the wasm32-wasip2 target, on a machine where rustup
//! cannot download: the check stops within seconds and names the command.
//!
//! The toolchain is a real one, seen through a private `RUSTUP_HOME`: its
//! files are symlinks to the installed toolchain's, except the target's
//! standard library and rustup's record of it, and `rustc` and its driver
//! library are hard links (rustc finds its sysroot from the driver's path,
//! with symlinks resolved). rustup is the real rustup, pointed at a
//! distribution server that does not answer.

use roomlet_module_builder::toolchain::{Target, ensure_target};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The installed toolchain this test runs under, from rustc's own sysroot.
fn sysroot() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()?;
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    root.join("lib/rustlib/components")
        .is_file()
        .then_some(root)
}

/// `to` mirrors `from` by symlinks, leaving out `skip` (names in `from`);
/// names starting with one of `link` are hard links (or copies) instead.
fn mirror(from: &Path, to: &Path, skip: &[&str], link: &[&str]) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from)
        .expect("read toolchain dir")
        .flatten()
    {
        let name = e.file_name();
        if skip.iter().any(|s| OsStr::new(s) == name) {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if link.iter().any(|l| name.to_string_lossy().starts_with(l)) {
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).expect("copy");
            }
        } else {
            std::os::unix::fs::symlink(src, dst).expect("symlink");
        }
    }
}

#[test]
fn a_missing_target_stops_within_seconds_naming_the_command() {
    let has_rustup = Command::new("rustup").arg("--version").output().is_ok();
    let Some(real) = sysroot().filter(|_| has_rustup) else {
        let what = "needs a toolchain installed by rustup (https://rustup.rs)";
        assert!(!in_ci(), "{what}");
        eprintln!("skipping: {what}");
        return;
    };
    let name = real.file_name().expect("toolchain name").to_owned();
    let home = std::env::temp_dir().join(format!("roomlet-toolchain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let fake = home.join("toolchains").join(&name);

    mirror(&real, &fake, &["bin", "lib"], &[]);
    mirror(&real.join("bin"), &fake.join("bin"), &[], &["rustc"]);
    mirror(
        &real.join("lib"),
        &fake.join("lib"),
        &["rustlib"],
        &["librustc_driver"],
    );
    let rustlib = real.join("lib/rustlib");
    let target = "wasm32-wasip2";
    let manifest = format!("manifest-rust-std-{target}");
    mirror(
        &rustlib,
        &fake.join("lib/rustlib"),
        &[target, &manifest, "components", "multirust-config.toml"],
        &[],
    );
    // rustup's two records of what is installed, without the target.
    let components = std::fs::read_to_string(rustlib.join("components")).expect("components");
    let without: String = components
        .lines()
        .filter(|l| !l.ends_with(target))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(fake.join("lib/rustlib/components"), without).expect("write components");
    let config =
        std::fs::read_to_string(rustlib.join("multirust-config.toml")).expect("multirust-config");
    let kept: Vec<&str> = config
        .split("[[components]]")
        .filter(|c| !c.contains(&format!("target = \"{target}\"")))
        .collect();
    std::fs::write(
        fake.join("lib/rustlib/multirust-config.toml"),
        kept.join("[[components]]"),
    )
    .expect("write multirust-config");

    let rustc = fake.join("bin/rustc");
    let libs = fake.join("lib");
    let env: [(&str, &OsStr); 4] = [
        // cargo test points this at the real toolchain's libraries; rustc
        // would then find its sysroot there.
        ("LD_LIBRARY_PATH", libs.as_os_str()),
        ("RUSTUP_HOME", home.as_os_str()),
        ("RUSTUP_TOOLCHAIN", name.as_os_str()),
        // Port 9 (discard) on loopback: nothing listens, refused at once.
        ("RUSTUP_DIST_SERVER", OsStr::new("http://127.0.0.1:9")),
    ];
    let started = Instant::now();
    let result = ensure_target(rustc.as_os_str(), &env);
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(&home);

    let err = result.expect_err("the target is missing and cannot be downloaded");
    eprintln!("{err}");
    assert!(
        err.contains("Run `rustup target add wasm32-wasip2`"),
        "names the command: {err}"
    );
    assert!(took < Duration::from_secs(20), "stopped within {took:?}");
}

#[test]
fn the_toolchain_building_the_workspace_has_the_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    assert_eq!(ensure_target(&rustc, &[]), Ok(Target::Present));
}
