//! The static binary: static, audited, and every edge config starts a ready node with it.

use super::*;

/// What `docker/build-static.sh` produced.
#[derive(Clone)]
pub(crate) struct StaticBuild {
    /// The minimal Docker build context: roomlet, ca-certificates.crt, data/.
    pub(crate) context: PathBuf,
    /// The stripped static binary in it.
    pub(crate) binary: PathBuf,
}

/// Builds (or brings up to date: cargo is incremental) the static binary,
/// once per test process. Err: what is missing.
pub(crate) fn static_build() -> Result<StaticBuild, String> {
    static BUILD: OnceLock<Result<StaticBuild, String>> = OnceLock::new();
    BUILD
        .get_or_init(|| {
            if !succeeds(Command::new("cargo").args(["auditable", "--version"])) {
                return Err(
                    "cargo-auditable is not installed (cargo install cargo-auditable --locked)"
                        .into(),
                );
            }
            let root = workspace();
            let started = Instant::now();
            let out = run(Command::new("bash")
                .arg(root.join("docker/build-static.sh"))
                .current_dir(&root)
                // The outer `cargo test` must not steer the nested build.
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "docker/build-static.sh failed:\n{}{stderr}",
                String::from_utf8_lossy(&out.stdout)
            );
            eprintln!(
                "{} (build step took {:.0?})",
                String::from_utf8_lossy(&out.stdout).trim(),
                started.elapsed()
            );
            let context = root.join("target/static/context");
            Ok(StaticBuild {
                binary: context.join("roomlet"),
                context,
            })
        })
        .clone()
}

#[test]
fn static_binary_is_static_and_audited() {
    let build = match static_build() {
        Ok(b) => b,
        Err(why) => return skip(&why),
    };
    let ldd = run(Command::new("ldd").arg(&build.binary));
    let ldd_text = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        ldd_text.contains("not a dynamic executable") || ldd_text.contains("statically linked"),
        "ldd says the binary is dynamic:\n{ldd_text}"
    );
    // `file` is optional (it only adds "static-pie linked" to the report).
    let file = Command::new("file")
        .arg(&build.binary)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let size = std::fs::metadata(&build.binary).expect("binary").len();
    eprintln!("static binary: {size} bytes; ldd: {}", ldd_text.trim());
    if !file.is_empty() {
        eprintln!("file: {}", file.trim());
    }
    assert_audit_info(&build.binary);
}

/// `rust-audit-info` reads the dependency list back from `binary`.
pub(crate) fn assert_audit_info(binary: &Path) {
    let out = match Command::new("rust-audit-info").arg(binary).output() {
        Ok(o) => o,
        Err(_) => {
            return skip(
                "rust-audit-info is not installed (cargo install rust-audit-info --locked)",
            );
        }
    };
    assert!(
        out.status.success(),
        "rust-audit-info {}: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).expect("audit info is JSON");
    let packages = info["packages"].as_array().expect("packages");
    let names: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    for expected in ["roomlet", "wasmtime", "tokio", "hyper", "redb"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from the embedded dependency list"
        );
    }
    eprintln!(
        "rust-audit-info {}: {} packages",
        binary.display(),
        packages.len()
    );
}

#[test]
fn every_edge_config_starts_a_ready_node() {
    let build = match static_build() {
        Ok(b) => b,
        Err(why) => return skip(&why),
    };
    let mut configs: Vec<PathBuf> = std::fs::read_dir(workspace().join("edge-configs"))
        .expect("edge-configs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    configs.sort();
    assert!(configs.len() >= 2, "expected the region configs");
    for config in &configs {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServeCommand::new(&build.binary, &dir.path().join("serve.log"))
            .arg("--config")
            .arg(config)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--internal-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .env("ROOMLET_API_KEYS", "testkey:config-check-secret")
            .env_remove("ROOMLET_DEV")
            .env_remove("ROOMLET_CONFIG")
            .within(Duration::from_secs(60))
            .start()
            .unwrap_or_else(|log| panic!("{} did not start:\n{log}", config.display()));
        let addr = server.public;
        let url = format!("http://{addr}/readyz");
        check(Command::new(&build.binary).args(["health", "--url", &url]));
        let (status, _) = http_get(addr.port(), "/healthz", None).expect("healthz answers");
        assert_eq!(status, 200);
        assert!(
            dir.path().join("kv.redb").exists(),
            "kv.redb in the data dir"
        );
        eprintln!("{}: ready on {addr}", config.display());
    }
}
