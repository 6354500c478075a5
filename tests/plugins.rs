//! Room plugins in a real server with real WebSocket clients: the example
//! plugins under modules/examples (Rust, and Python through
//! componentize-py), and the crate `roomlet new plugin` generates.

use roomlet::config::{Config, ModuleSection};
use roomlet::runtime::kv::{KvLimits, KvStore};
use roomlet::scaffold::Lang;
use roomlet::server::Secrets;
use roomlet_tests::server::{self, Client, TestServer, Wire};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const ONE_TO_ONE: &str = env!("ROOMLET_EXAMPLE_ONE_TO_ONE");
const CLASSROOM: &str = env!("ROOMLET_EXAMPLE_CLASSROOM");
const CHAT_HISTORY: &str = env!("ROOMLET_EXAMPLE_CHAT_HISTORY");

const TEACHER: &str = r#"{"role":"teacher"}"#;
const STUDENT: &str = r#"{"role":"student"}"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs `path` as the rooms component, with its `[modules.rooms.config]`.
fn use_rooms(config: &mut Config, path: impl Into<PathBuf>, module_config: &[(&str, toml::Value)]) {
    config.modules.insert(
        "rooms".into(),
        ModuleSection {
            path: Some(path.into()),
            config: module_config
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        },
    );
}

/// A test config whose rooms run the chat-history example, keeping `size`
/// messages.
fn chat_history_config(dir: &Path, size: i64) -> Config {
    let mut c = server::test_config(dir);
    use_rooms(
        &mut c,
        CHAT_HISTORY,
        &[("history-size", toml::Value::Integer(size))],
    );
    c
}

async fn start_with_rooms(path: impl Into<PathBuf>) -> TestServer {
    let path = path.into();
    server::start(move |c| use_rooms(c, path, &[])).await
}

/// A dev-key token for `room`/`identity` carrying `metadata`.
fn token(room: &str, identity: &str, metadata: Option<&str>) -> String {
    roomlet_tests::tokens::Token::new(room, identity)
        .metadata(metadata)
        .mint()
}

/// Connects to `url` and joins; returns the client and its peer id.
async fn join(url: &str, room: &str, identity: &str, metadata: Option<&str>) -> (Client, String) {
    let mut c = Client::connect(url, Wire::Json).await;
    let joined = c.join(room, &token(room, identity, metadata)).await;
    let id = joined["peerId"].as_str().expect("peerId").to_owned();
    (c, id)
}

/// Sends a room message (to the room, or to one peer).
async fn say(c: &mut Client, to: Option<&str>, data: Value) {
    c.send(json!({"type": "message", "to": to, "data": data}))
        .await;
}

/// The next `message` frame as (from, data).
async fn heard(c: &mut Client) -> (String, Value) {
    let f = c.frame_of("message").await;
    (
        f["from"].as_str().expect("from").to_owned(),
        f["data"].clone(),
    )
}

/// The code of the next `error` frame.
async fn refused(c: &mut Client) -> String {
    let f = c.frame_of("error").await;
    assert!(
        f["message"].as_str().is_some_and(|m| !m.is_empty()),
        "a rejection has a reason: {f}"
    );
    f["code"].as_str().expect("code").to_owned()
}

async fn leave(mut c: Client) {
    c.send(json!({"type": "leave"})).await;
    assert_eq!(c.closed().await, 1000);
}

/// `observe-messages` decides whether a message reaches the module at
/// all: the hostile fixture answers its commands itself where it observes
/// them, and leaves them to the host in rooms named `direct-…`, where even
/// `"trap"` is only text passed from peer to peer.
#[tokio::test]
async fn a_module_sees_messages_only_when_it_observes_them() {
    let s = start_with_rooms(env!("ROOMLET_FIXTURE_HOSTILE")).await;
    let url = s.ws_url();

    let (mut alice, _) = join(&url, "observed", "alice", None).await;
    let (_bob, bob_id) = join(&url, "observed", "bob", None).await;
    say(&mut alice, None, json!("count")).await;
    let (from, n) = heard(&mut alice).await;
    assert_eq!(from, "", "the module answers, not a peer");
    assert!(n.as_str().is_some_and(|n| n.parse::<u64>().is_ok()), "{n}");
    say(&mut alice, Some(&bob_id), json!("count")).await;
    assert_eq!(heard(&mut alice).await.0, "");

    let (mut alice, alice_id) = join(&url, "direct-1", "alice", None).await;
    let (mut bob, bob_id) = join(&url, "direct-1", "bob", None).await;
    let (mut carol, _) = join(&url, "direct-1", "carol", None).await;
    say(&mut alice, None, json!("trap")).await;
    assert_eq!(heard(&mut bob).await, (alice_id.clone(), json!("trap")));
    assert_eq!(heard(&mut carol).await, (alice_id.clone(), json!("trap")));
    say(&mut alice, Some(&bob_id), json!("count")).await;
    assert_eq!(heard(&mut bob).await, (alice_id.clone(), json!("count")));
    // Alice heard neither her own broadcast nor a module's answer: the
    // first message she hears is Carol's.
    say(&mut carol, Some(&alice_id), json!("hi")).await;
    assert_eq!(heard(&mut alice).await.1, json!("hi"));
    say(&mut alice, Some("nobody"), json!("count")).await;
    assert_eq!(refused(&mut alice).await, "unknown-peer");
}

/// Contract 0.2.1 only added to 0.2.0: a rooms component built against
/// 0.2.0 (tests/fixtures/contract-0.2.0, with its own frozen copy of that
/// WIT) loads, is called, and reaches its kv store. (A 0.2.0 auth
/// component, without the `media` export, is tests/fixtures/leaky-auth,
/// which tests/plugin_dev.rs loads and calls.)
#[tokio::test]
async fn components_built_against_contract_0_2_0_still_load_and_run() {
    let rooms = PathBuf::from(env!("ROOMLET_FIXTURE_CONTRACT_020"));
    let wasm = std::fs::read(&rooms).expect("the 0.2.0 fixture");
    let names = String::from_utf8_lossy(&wasm);
    assert!(
        names.contains("roomlet:signal/room@0.2.0") && !names.contains("@0.2.1"),
        "the fixture is built against 0.2.0 only"
    );
    let s = start_with_rooms(rooms).await;
    let (mut c, _) = join(&s.ws_url(), "frozen", "fay", None).await;
    for n in 1..=3 {
        say(&mut c, None, json!("hi")).await;
        assert_eq!(
            heard(&mut c).await,
            (String::new(), json!(format!("0.2.0: {n}")))
        );
    }
}

#[tokio::test]
async fn one_to_one_admits_two_and_refuses_a_third() {
    let s = start_with_rooms(ONE_TO_ONE).await;
    let url = s.ws_url();
    let (mut alice, alice_id) = join(&url, "call", "alice", None).await;
    let (mut bob, bob_id) = join(&url, "call", "bob", None).await;

    let mut carol = Client::connect(&url, Wire::Json).await;
    carol
        .send(json!({"type": "join", "room": "call", "token": token("call", "carol", None)}))
        .await;
    let f = carol.frame().await;
    assert_eq!(f["type"], "error", "{f}");
    assert_eq!(f["code"], "one-to-one-full", "{f}");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("one-to-one")),
        "the reason reaches the client: {f}"
    );
    assert_eq!(carol.closed().await, 4009);

    say(&mut alice, None, json!({"text": "hi bob"})).await;
    assert_eq!(
        heard(&mut bob).await,
        (alice_id.clone(), json!({"text": "hi bob"}))
    );
    say(&mut bob, Some(&alice_id), json!({"text": "just you"})).await;
    assert_eq!(
        heard(&mut alice).await,
        (bob_id, json!({"text": "just you"}))
    );

    // Once one has left there is room again.
    leave(bob).await;
    let (mut carol, carol_id) = join(&url, "call", "carol", None).await;
    say(&mut carol, None, json!("hello")).await;
    assert_eq!(heard(&mut alice).await, (carol_id, json!("hello")));
}

#[tokio::test]
async fn classroom_roles_hands_mutes_and_removal() {
    let s = start_with_rooms(CLASSROOM).await;
    let url = s.ws_url();
    let (mut teacher, teacher_id) = join(&url, "class", "teacher", Some(TEACHER)).await;
    let (mut ann, ann_id) = join(&url, "class", "ann", Some(STUDENT)).await;
    // No role in the token: a student.
    let (mut ben, ben_id) = join(&url, "class", "ben", None).await;

    // A student's message reaches the teacher only...
    say(&mut ann, None, json!({"text": "question"})).await;
    assert_eq!(
        heard(&mut teacher).await,
        (ann_id.clone(), json!({"text": "question"}))
    );
    // ...and the teacher's reaches everyone: the first message Ben gets is
    // the teacher's, so Ann's (handled before it) did not go to him.
    say(&mut teacher, None, json!({"text": "answer"})).await;
    for student in [&mut ann, &mut ben] {
        assert_eq!(
            heard(student).await,
            (teacher_id.clone(), json!({"text": "answer"}))
        );
    }
    // Students do not write to each other.
    say(&mut ben, Some(&ann_id), json!("psst")).await;
    assert_eq!(refused(&mut ben).await, "teachers-only");

    // Raise a hand.
    say(&mut ben, None, json!({"action": "raise-hand"})).await;
    assert_eq!(
        heard(&mut teacher).await,
        (
            String::new(),
            json!({"event": "hand-raised", "peer": ben_id})
        )
    );

    // Teacher actions are for teachers.
    say(&mut ben, None, json!({"action": "mute", "peer": ann_id})).await;
    assert_eq!(refused(&mut ben).await, "not-teacher");
    say(&mut ben, None, json!({"action": "remove", "peer": ann_id})).await;
    assert_eq!(refused(&mut ben).await, "not-teacher");

    // Mute Ann: she is told, and her messages are refused.
    say(
        &mut teacher,
        None,
        json!({"action": "mute", "peer": ann_id}),
    )
    .await;
    assert_eq!(
        heard(&mut ann).await,
        (String::new(), json!({"event": "muted"}))
    );
    say(&mut ann, None, json!({"text": "but..."})).await;
    assert_eq!(refused(&mut ann).await, "muted");

    // Roles and mutes travel through snapshot/restore: hibernate the room
    // (the instance is dropped) and talk to the restored one.
    let room = s.running.gateway.rooms.get("class").expect("room is live");
    assert!(room.hibernate().await, "the room hibernates");
    let status = room.status().await.expect("status");
    assert!(status.hibernated && !status.live, "{status:?}");
    say(&mut ann, None, json!({"text": "after the nap"})).await;
    assert_eq!(refused(&mut ann).await, "muted");
    say(&mut ben, None, json!({"text": "still a student"})).await;
    assert_eq!(
        heard(&mut teacher).await,
        (ben_id.clone(), json!({"text": "still a student"}))
    );
    assert!(room.status().await.expect("status").live);

    // Remove Ben: he is kicked, the others see him leave.
    say(
        &mut teacher,
        None,
        json!({"action": "remove", "peer": ben_id}),
    )
    .await;
    let kicked = ben.frame_of("kicked").await;
    assert!(
        kicked["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{kicked}"
    );
    assert_eq!(ben.closed().await, 4004);
    let left = teacher.frame_of("peer-left").await;
    assert_eq!(
        (&left["peerId"], &left["reason"]),
        (&json!(ben_id), &json!("kicked"))
    );
}

#[tokio::test]
async fn chat_history_is_replayed_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || chat_history_config(dir.path(), 3);

    let first = roomlet::server::start(config(), Secrets::default())
        .await
        .expect("first server starts");
    let url = format!("ws://{}/v1/ws", first.public_addr);
    let (mut alice, alice_id) = join(&url, "chat", "alice", None).await;
    assert_eq!(
        heard(&mut alice).await,
        (String::new(), json!({"history": []}))
    );
    let (mut bob, bob_id) = join(&url, "chat", "bob", None).await;
    assert_eq!(heard(&mut bob).await.1, json!({"history": []}));
    for n in 1..=4 {
        say(&mut alice, None, json!({"n": n})).await;
        assert_eq!(heard(&mut bob).await, (alice_id.clone(), json!({"n": n})));
    }
    // Messages to one peer are delivered, not kept.
    say(&mut alice, Some(&bob_id), json!({"private": true})).await;
    assert_eq!(heard(&mut bob).await.1, json!({"private": true}));
    leave(alice).await;
    leave(bob).await;

    // Every message was committed before it was delivered. Dropping the
    // node stops its listeners and closes its kv store: the file (and its
    // lock) is released at once, though the room's task is still alive.
    drop(first);
    let kv_path = dir.path().join("kv.redb");
    drop(KvStore::open(&kv_path, KvLimits::default()).expect("the kv file is released on drop"));

    let second = roomlet::server::start(config(), Secrets::default())
        .await
        .expect("second server starts on the same data directory");
    let url = format!("ws://{}/v1/ws", second.public_addr);
    let (mut carol, _) = join(&url, "chat", "carol", None).await;
    let (from, data) = heard(&mut carol).await;
    assert_eq!(from, "");
    let history = data["history"].as_array().expect("history list");
    let kept: Vec<&Value> = history.iter().map(|e| &e["data"]).collect();
    assert_eq!(kept, [&json!({"n": 2}), &json!({"n": 3}), &json!({"n": 4})]);
    for e in history {
        assert_eq!(e["from"], json!(alice_id));
        assert_eq!(e["identity"], "alice");
        assert_eq!(e["name"], "ALICE");
        assert!(e["at"].as_u64().is_some_and(|t| t > 0), "{e}");
    }
}

/// A drain loses nothing a client sent before it read `reconnect`: frames
/// that reach the server after its close, as frames in flight do, are still
/// handed to the room (here: kept by chat-history, seen after a restart).
#[tokio::test]
async fn frames_in_flight_at_a_drain_still_reach_the_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || chat_history_config(dir.path(), 10);
    let first = roomlet::server::start(config(), Secrets::default())
        .await
        .expect("first server starts");
    let url = format!("ws://{}/v1/ws", first.public_addr);
    let (mut alice, _) = join(&url, "chat", "alice", None).await;
    assert_eq!(heard(&mut alice).await.1, json!({"history": []}));

    first.gateway.send_reconnect(None);
    // The server sends `reconnect` and then its close at once: everything
    // alice sends after reading `reconnect` reaches it after the close.
    let f = alice.frame_of("reconnect").await;
    assert_eq!(f["reason"], "draining");
    for n in 1..=3 {
        say(&mut alice, None, json!({"n": n})).await;
    }
    assert_eq!(alice.closed().await, 4006);
    tokio::time::timeout(roomlet_tests::DEADLINE, first.gateway.until_all_closed())
        .await
        .expect("the session did not end");
    first.drain(None, std::time::Duration::from_secs(1)).await;

    let second = roomlet::server::start(config(), Secrets::default())
        .await
        .expect("second server starts on the same data directory");
    let url = format!("ws://{}/v1/ws", second.public_addr);
    let (mut carol, _) = join(&url, "chat", "carol", None).await;
    let (_, data) = heard(&mut carol).await;
    let kept: Vec<&Value> = data["history"]
        .as_array()
        .expect("history list")
        .iter()
        .map(|e| &e["data"])
        .collect();
    assert_eq!(kept, [&json!({"n": 1}), &json!({"n": 2}), &json!({"n": 3})]);
}

/// Whether `program --version` runs.
fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when a missing tool must fail the test (CI) instead of skipping it.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

#[tokio::test]
async fn python_echo_plugin() {
    if !available("componentize-py") {
        let what = "componentize-py is not installed: pip install componentize-py";
        assert!(!in_ci(), "{what}");
        eprintln!("skipping python_echo_plugin: {what}");
        return;
    }
    // Build from a copy: componentize-py writes __pycache__ beside the app.
    let tmp = tempfile::tempdir().expect("tempdir");
    let app = tmp.path().join("app");
    std::fs::create_dir(&app).expect("mkdir");
    std::fs::copy(
        workspace().join("modules/examples/python-echo/app.py"),
        app.join("app.py"),
    )
    .expect("copy app.py");
    let wasm = tmp.path().join("python-echo.wasm");
    let out = Command::new("componentize-py")
        .arg("-d")
        .arg(workspace().join("wit"))
        .args(["-w", "rooms", "componentize", "app", "-p"])
        .arg(&app)
        .arg("-o")
        .arg(&wasm)
        .current_dir(&app)
        .output()
        .expect("run componentize-py");
    assert!(
        out.status.success(),
        "componentize-py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let s = start_with_rooms(&wasm).await;
    let url = s.ws_url();
    let (mut alice, alice_id) = join(&url, "py", "alice", None).await;
    let (mut bob, bob_id) = join(&url, "py", "bob", None).await;
    say(&mut alice, None, json!({"hi": 1})).await;
    assert_eq!(heard(&mut bob).await, (alice_id.clone(), json!({"hi": 1})));
    assert_eq!(
        heard(&mut alice).await,
        (String::new(), json!({"echo": {"hi": 1}, "by": "python"}))
    );
    say(&mut bob, Some(&alice_id), json!("direct")).await;
    assert_eq!(heard(&mut alice).await, (bob_id, json!("direct")));
    assert_eq!(
        heard(&mut bob).await,
        (String::new(), json!({"echo": "direct", "by": "python"}))
    );
}

/// What either template does: a room message reaches the others, a
/// message to one peer reaches that peer.
async fn routes_like_the_template(wasm: &Path, room: &str) {
    let s = start_with_rooms(wasm).await;
    let url = s.ws_url();
    let (mut alice, alice_id) = join(&url, room, "alice", None).await;
    let (mut bob, bob_id) = join(&url, room, "bob", None).await;
    say(&mut alice, None, json!({"text": "round trip"})).await;
    assert_eq!(
        heard(&mut bob).await,
        (alice_id.clone(), json!({"text": "round trip"}))
    );
    say(&mut bob, Some(&alice_id), json!({"text": "back"})).await;
    assert_eq!(heard(&mut alice).await, (bob_id, json!({"text": "back"})));
}

/// `roomlet new plugin --lang python`, built with the command it prints,
/// is a working room.
#[tokio::test]
async fn generated_python_plugin_builds_and_runs() {
    if !available("componentize-py") {
        let what = "componentize-py is not installed: pip install componentize-py";
        assert!(!in_ci(), "{what}");
        eprintln!("skipping generated_python_plugin_builds_and_runs: {what}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root =
        roomlet::scaffold::new_plugin("py-room", tmp.path(), Lang::Python).expect("generate");
    let build = roomlet::scaffold::build_command("py-room", Lang::Python);
    let words: Vec<&str> = build.split_whitespace().collect();
    let out = Command::new(words[0])
        .args(&words[1..])
        .current_dir(&root)
        .output()
        .expect("run componentize-py");
    assert!(
        out.status.success(),
        "{build} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = root.join(roomlet::scaffold::wasm_path("py-room", Lang::Python));
    assert!(wasm.is_file(), "{} was built", wasm.display());

    routes_like_the_template(&wasm, "py-tpl").await;
}

#[tokio::test]
async fn generated_plugin_builds_and_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root =
        roomlet::scaffold::new_plugin("echo-room", tmp.path(), Lang::Rust).expect("generate");
    // A stable target directory under target/ keeps wit-bindgen compiled
    // between runs; the crate is outside our workspace, so it cannot share
    // the workspace's.
    let target_dir = workspace().join("target").join("plugin-template");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release"])
        .env("CARGO_TARGET_DIR", &target_dir);
    // Flags meant for our own build must not leak into the plugin's.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run cargo");
    assert!(
        out.status.success(),
        "building the generated plugin failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = target_dir
        .join("wasm32-wasip2/release")
        .join(roomlet::scaffold::wasm_file_name("echo-room"));
    assert!(wasm.is_file(), "{} was built", wasm.display());

    routes_like_the_template(&wasm, "tpl").await;
}
