//! A plugin author's loop, with the real `roomlet` binary and real
//! components: what a plugin writes — a panic message, `println!` — reaches
//! the host log and the event log with its room and version, never the
//! client; a plugin panicking in a loop is held to the documented lines per
//! second per room; an auth plugin that prints the secret it read shows it
//! masked; `--module-config` hands a module its config from the command line.

use roomlet::runtime::output::LINES_PER_SECOND;
use roomlet_tests::process::{Serve, ServeCommand};
use roomlet_tests::server::{Client, Wire, dev_token};
use roomlet_tests::wait_for;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn roomlet_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_roomlet-node"))
}

/// `roomlet serve --dev ARGS…` on `dir`, logging to `dir/serve.log`.
fn serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut cmd = ServeCommand::new(&roomlet_binary(), &dir.join("serve.log"))
        .args(["--listen", "127.0.0.1:0"])
        .dev(&dir.join("data"))
        .args(args.iter().copied());
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.start()
        .unwrap_or_else(|log| panic!("roomlet serve did not start:\n{log}"))
}

/// Every event in the node's log, parsed.
fn events(dir: &Path) -> Vec<Value> {
    roomlet_tests::process::events_tail(&roomlet_binary(), &dir.join("data"), &[])
}

/// `component_output` events of `room` whose message contains `text`.
fn output_of<'a>(events: &'a [Value], room: &str, text: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "component_output" && e["room"] == room)
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(text)))
        .collect()
}

/// Joins `room` as `identity` on `serve`.
async fn join(serve: &Serve, room: &str, identity: &str) -> Client {
    let mut c = Client::connect(&serve.ws(), Wire::Json).await;
    c.join(room, &dev_token(room, identity)).await;
    c
}

/// Sends the hostile fixture a command (a room message).
async fn command(c: &mut Client, text: &str) {
    c.send(json!({"type": "message", "data": text})).await;
}

fn hostile() -> &'static str {
    env!("ROOMLET_FIXTURE_HOSTILE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_message_reaches_the_host_log_and_the_event_log_not_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rooms = format!("rooms={}", hostile());
    let server = serve(dir.path(), &["--module", &rooms], &[]);
    let mut c = join(&server, "panicky", "alice").await;

    command(&mut c, "trap").await;
    let err = c.frame_of("error").await;
    assert_eq!(err["code"], "module-error", "{err}");
    let to_client = err["message"].as_str().unwrap_or_default();
    assert!(
        !to_client.contains("as asked"),
        "the panic message stays on the server: {err}"
    );
    command(&mut c, "say hello-from-stdout").await;
    assert_eq!(c.frame_of("message").await["data"], "said");

    let mut found = Vec::new();
    wait_for("the panic and the stdout line in the event log", || {
        let all = events(dir.path());
        found = [
            output_of(&all, "panicky", "trapping, as asked"),
            output_of(&all, "panicky", "hostile says hello-from-stdout"),
        ]
        .map(|v| v.into_iter().cloned().collect::<Vec<_>>())
        .concat();
        found.len() == 2
    })
    .await;
    let (panic, said) = (&found[0], &found[1]);
    assert_eq!(panic["reason"], "stderr", "{panic}");
    assert_eq!(said["reason"], "stdout", "{said}");
    let version = panic["module_version"].as_str().expect("a version");
    assert!(!version.is_empty());
    assert_eq!(panic["function"], "rooms");
    let all = events(dir.path());
    let error = all
        .iter()
        .find(|e| e["kind"] == "component_error" && e["room"] == "panicky")
        .expect("the trap is a component_error");
    assert_eq!(error["module_version"], version);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("wasm")),
        "the whole trap text: {error}"
    );

    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("trapping, as asked"))
        .unwrap_or_else(|| panic!("the panic message is in the host log:\n{log}"));
    assert!(
        line.contains("panicky") && line.contains(version),
        "with room and version: {line}"
    );
    assert!(log.contains("hostile says hello-from-stdout"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_panicking_in_a_loop_is_held_to_the_rate_per_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rooms = format!("rooms={}", hostile());
    let server = serve(
        dir.path(),
        &["--module", &rooms],
        // The room would close after a few traps otherwise.
        &[("ROOMLET_ROOMS__TRAP_LIMIT", "100000")],
    );
    let mut c = join(&server, "flood", "alice").await;
    let traps = 150;
    let started = Instant::now();
    for _ in 0..traps {
        command(&mut c, "trap").await;
    }
    for _ in 0..traps {
        assert_eq!(c.frame_of("error").await["code"], "module-error");
    }
    let took = started.elapsed().as_secs_f64();
    // Another room's budget is its own: its line gets through at once.
    let mut q = join(&server, "quiet", "bob").await;
    command(&mut q, "say marker").await;
    assert_eq!(q.frame_of("message").await["data"], "said");
    wait_for("the other room's line in the event log", || {
        !output_of(&events(dir.path()), "quiet", "marker").is_empty()
    })
    .await;

    // Each panic writes two or three lines; a burst of LINES_PER_SECOND,
    // then LINES_PER_SECOND a second.
    let budget = LINES_PER_SECOND as f64 * (1.0 + took) + 1.0;
    let all = events(dir.path());
    let logged = output_of(&all, "flood", "").len();
    assert!(
        logged >= LINES_PER_SECOND as usize && (logged as f64) <= budget,
        "{logged} event-log lines for {traps} panics in {took:.2} s (budget {budget:.0})"
    );
    let host = server
        .log()
        .lines()
        .filter(|l| l.contains("roomlet::module") && l.contains("flood"))
        .count();
    assert!(
        host >= LINES_PER_SECOND as usize && (host as f64) <= budget,
        "{host} host-log lines for {traps} panics in {took:.2} s (budget {budget:.0})"
    );
    let dropped = all.iter().any(|e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("lines dropped"))
    });
    assert!(dropped, "a line says how many were dropped before it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_plugin_printing_its_secret_shows_it_masked() {
    const SECRET: &str = "leaky-test-secret-8f3a";
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = format!("auth={}", env!("ROOMLET_FIXTURE_LEAKY_AUTH"));
    let keys = format!("devkey:{SECRET}");
    let server = serve(
        dir.path(),
        &["--module", &auth],
        &[("ROOMLET_API_KEYS", &keys)],
    );
    let mut c = Client::connect(&server.ws(), Wire::Json).await;
    c.send(json!({"type": "join", "room": "r", "token": dev_token("r", "mallory")}))
        .await;
    let err = c.frame_of("error").await;
    assert!(!err.to_string().contains(SECRET), "{err}");

    wait_for("the auth plugin's three lines in the event log", || {
        let all = events(dir.path());
        [
            "stdout has the secret",
            "log has the secret",
            "panics with the secret",
        ]
        .iter()
        .all(|t| !output_of(&all, "", t).is_empty())
    })
    .await;
    let all = events(dir.path());
    for t in [
        "stdout has the secret",
        "log has the secret",
        "panics with the secret",
    ] {
        let e = output_of(&all, "", t)[0];
        assert_eq!(e["function"], "auth");
        let m = e["message"].as_str().unwrap_or_default();
        assert!(m.contains("***") && !m.contains(SECRET), "masked: {e}");
    }
    let everything = std::fs::read_dir(dir.path().join("data/events"))
        .expect("the event log")
        .flatten()
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .collect::<String>();
    assert!(!everything.contains(SECRET), "no secret in the event log");
    let log = server.log();
    assert!(log.contains("panics with the secret ***"), "{log}");
    assert!(!log.contains(SECRET), "no secret in the host log:\n{log}");
}

/// `--module-config rooms.KEY=VALUE` and `rooms=FILE.toml` reach the
/// module's `config.get` (chat-history keeps `history-size` messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_config_comes_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rooms = format!("rooms={}", env!("ROOMLET_EXAMPLE_CHAT_HISTORY"));
    let file = dir.path().join("chat.toml");
    std::fs::write(&file, "history-size = 5\n").expect("write config");
    let from_file = format!("rooms={}", file.display());
    // The key given last wins over the file's.
    let server = serve(
        dir.path(),
        &[
            "--module",
            &rooms,
            "--module-config",
            &from_file,
            "--module-config",
            "rooms.history-size=2",
        ],
        &[],
    );
    let mut alice = join(&server, "chat", "alice").await;
    assert_eq!(
        alice.frame_of("message").await["data"],
        json!({"history": []})
    );
    let mut bob = join(&server, "chat", "bob").await;
    assert_eq!(
        bob.frame_of("message").await["data"],
        json!({"history": []})
    );
    for n in 1..=3 {
        alice
            .send(json!({"type": "message", "data": {"n": n}}))
            .await;
        assert_eq!(bob.frame_of("message").await["data"], json!({"n": n}));
    }
    // Carol's join replays what was kept.
    let mut carol = join(&server, "chat", "carol").await;
    let history = carol.frame_of("message").await["data"]["history"].clone();
    let kept: Vec<&Value> = history
        .as_array()
        .expect("history")
        .iter()
        .map(|e| &e["data"])
        .collect();
    assert_eq!(kept, [&json!({"n": 2}), &json!({"n": 3})]);

    // A malformed one stops the command with a message saying why.
    let out = Command::new(roomlet_binary())
        .args(["serve", "--dev", "--module-config", "rooms.=1"])
        .env_remove("ROOMLET_CONFIG")
        .output()
        .expect("run roomlet serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the key is empty"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");
}

/// The README's first command reaches "roomlet is listening" and serves
/// the demo page. Run in this checkout (CI's is a fresh clone) as written
/// except `--release`: with the test build's own profile and target
/// directory nothing is compiled again, so CI does not build wasmtime a
/// second time. (A copy of the tree must not share the target directory:
/// cargo would take the copy's crates for these, same relative paths, and
/// later builds would check the copy's files instead of these.) The release
/// profile is built by the image tests, with their own flags.
#[test]
fn the_readme_first_command_works() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf();
    let readme = std::fs::read_to_string(workspace.join("README.md")).expect("README.md");
    let first = readme
        .lines()
        .find(|l| l.starts_with("cargo run"))
        .expect("the README's first command");
    assert_eq!(first, "cargo run --release -p roomlet -- serve --dev");

    let data = tempfile::tempdir().expect("tempdir");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let args: Vec<&str> = first
        .split_whitespace()
        .skip(1)
        .filter(|a| *a != "--release")
        .collect();
    let mut cmd = Command::new(cargo);
    cmd.args(&args)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--internal-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .current_dir(&workspace)
        .env_remove("ROOMLET_CONFIG")
        .env_remove("ROOMLET_API_KEYS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run cargo");
    // Its build output (stderr) is drained, or a full pipe would stall it.
    let stderr = child.stderr.take().expect("stderr");
    let tail = std::thread::spawn(move || {
        let mut text = String::new();
        use std::io::Read;
        let _ = std::io::BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let listening = roomlet_tests::listening(&mut child, std::time::Duration::from_secs(15 * 60));
    let page = listening.map(|(public, _)| {
        roomlet_tests::http::request(public, "GET", "/demo", None, b"", roomlet_tests::DEADLINE)
            .map(|r| r.status)
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = tail.join().unwrap_or_default();
    let status = page.unwrap_or_else(|| panic!("never said it was listening:\n{log}"));
    assert_eq!(status, Some(200), "the demo page is served");
}
