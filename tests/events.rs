//! The room event log, for real: the `roomlet` binary killed with SIGKILL
//! right after `joined` still has that join on disk; rotation by size
//! keeps `roomlet events tail` in order; JSON logs carry room and peer ids
//! in their spans.

use roomlet::events::{Event, EventKind, EventSink, EventsConfig};
use roomlet_tests::DEADLINE;
use roomlet_tests::process::{Serve, ServeCommand};
use roomlet_tests::server::{Client, dev_token};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

/// The `roomlet` command line, as this crate builds it (bin/roomlet-node.rs).
fn roomlet_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_roomlet-node"))
}

/// A `roomlet serve --dev` child on `data_dir`, its log kept line by line.
fn serve(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut cmd = ServeCommand::new(&roomlet_binary(), &data_dir.join("unused.log"))
        .log_lines()
        .args(["--listen", "127.0.0.1:0"])
        .dev(data_dir)
        .args(extra.iter().copied());
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.start()
        .unwrap_or_else(|log| panic!("roomlet serve did not start:\n{log}"))
}

/// `roomlet events tail --data-dir DIR ARGS…`, parsed.
fn events_tail(data_dir: &Path, args: &[&str]) -> Vec<Value> {
    roomlet_tests::process::events_tail(&roomlet_binary(), data_dir, args)
}

/// Connects and sends `join`; the `joined` frame, or `None` if the server
/// went away first (it is killed while some of these are under way).
async fn try_join(url: &str, room: &str, identity: &str) -> Option<Value> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = Client::try_connect(url, Some("roomlet.v1.json"))
        .await
        .ok()?;
    let join = json!({"type": "join", "room": room, "token": dev_token(room, identity)});
    ws.send(Message::text(join.to_string())).await.ok()?;
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => {
                let f: Value = serde_json::from_str(&t).ok()?;
                return (f["type"] == "joined").then_some(f);
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_right_after_joined_keeps_the_joins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = serve(dir.path(), &[], &[("RUST_LOG", "warn")]);
    let url = server.ws();
    // Many joins at once, so several share a sync; the node dies the
    // moment the first `joined` arrives.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..24 {
        let (url, tx) = (url.clone(), tx.clone());
        tokio::spawn(async move {
            let r = try_join(&url, "crash-room", &format!("user-{i}")).await;
            let _ = tx.send(r);
        });
    }
    drop(tx);
    let first = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("a join answer in time")
        .expect("a join task answered");
    server.kill();
    let mut joined: Vec<Value> = first.into_iter().collect();
    while let Some(r) = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("every join task ends")
    {
        joined.extend(r);
    }
    assert!(!joined.is_empty(), "at least one client was told joined");

    let events = events_tail(dir.path(), &[]);
    assert_eq!(
        events[0]["kind"], "room_opened",
        "the room opens first: {events:?}"
    );
    for j in &joined {
        let peer = j["peerId"].as_str().expect("peer id");
        let e = events
            .iter()
            .find(|e| e["kind"] == "peer_joined" && e["peer"] == peer)
            .unwrap_or_else(|| panic!("{peer} was told joined but is not in the log: {events:?}"));
        assert_eq!(e["room"], "crash-room");
        assert!(
            e["identity"]
                .as_str()
                .is_some_and(|i| i.starts_with("user-"))
        );
        assert!(e["node"].as_str().is_some_and(|n| !n.is_empty()));
        assert_eq!(e["region"], "local");
        assert!(
            e["ts"]
                .as_str()
                .is_some_and(|t| t.len() == 24 && t.ends_with('Z')),
            "RFC 3339 timestamp: {e}"
        );
    }
    eprintln!(
        "{} of 24 clients saw joined before SIGKILL; the log holds {} events",
        joined.len(),
        events.len()
    );
    // A restarted node appends to the same log after the crash.
    let server = serve(dir.path(), &[], &[("RUST_LOG", "warn")]);
    let url = server.ws();
    let j = try_join(&url, "after-crash", "zed").await.expect("joined");
    drop(server);
    let events = events_tail(dir.path(), &["-n", "2"]);
    assert_eq!(events.len(), 2, "-n 2: {events:?}");
    assert_eq!(
        (&events[0]["kind"], &events[1]["kind"], &events[1]["peer"]),
        (&json!("room_opened"), &json!("peer_joined"), &j["peerId"])
    );
}

fn sink(dir: &Path, max_file_bytes: u64, keep_files: usize) -> EventSink {
    let config = EventsConfig {
        max_file_bytes,
        keep_files,
        ..EventsConfig::default()
    };
    EventSink::open(
        dir,
        &config,
        "node-t",
        "test",
        None,
        &roomlet::telemetry::Registry::unserved(),
    )
    .expect("event log opens")
}

fn room_event(i: usize) -> Event {
    Event::new(EventKind::PeerJoined, &format!("room-{i:05}"))
        .peer(&format!("p-{i}"), &format!("user-{i}"))
}

fn rooms_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["room"].as_str().expect("room").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_by_size_keeps_tail_in_order() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = roomlet::events::dir_in(data.path());
    let log = sink(&dir, 4096, 1000);
    // All queued at once: the writer syncs them in groups.
    let receipts: Vec<_> = (0..2000).map(|i| log.record(room_event(i))).collect();
    for r in receipts {
        r.wait().await.expect("durable");
    }
    let segments = roomlet::events::segments(&dir).expect("segments");
    assert!(segments.len() > 10, "rotated: {} segments", segments.len());
    for (_, path) in &segments {
        let len = std::fs::metadata(path).expect("segment").len();
        assert!(len <= 4096, "{} has {len} bytes", path.display());
    }
    let expected: Vec<String> = (0..2000).map(|i| format!("room-{i:05}")).collect();
    let all = events_tail(data.path(), &[]);
    assert_eq!(rooms_of(&all), expected, "every event, in order");
    assert!(
        all.iter()
            .all(|e| e["node"] == "node-t" && e["kind"] == "peer_joined")
    );
    let last = events_tail(data.path(), &["-n", "150"]);
    assert_eq!(rooms_of(&last), expected[1850..], "-n 150 spans segments");

    // Reopening continues the newest segment; old ones are pruned to keep_files.
    drop(log);
    let log = sink(&dir, 4096, 3);
    let receipts: Vec<_> = (2000..2100).map(|i| log.record(room_event(i))).collect();
    for r in receipts {
        r.wait().await.expect("durable");
    }
    assert_eq!(roomlet::events::segments(&dir).expect("segments").len(), 3);
    let kept = rooms_of(&events_tail(data.path(), &[]));
    assert_eq!(kept.last().map(String::as_str), Some("room-02099"));
    let first: usize = kept[0]["room-".len()..].parse().expect("number");
    let expected: Vec<String> = (first..2100).map(|i| format!("room-{i:05}")).collect();
    assert_eq!(kept, expected, "the newest events, contiguous and in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tail_follow_crosses_rotations() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = roomlet::events::dir_in(data.path());
    let log = sink(&dir, 2048, 1000);
    log.record(room_event(0)).wait().await.expect("durable");
    let mut child = Command::new(roomlet_binary())
        .args(["events", "tail", "--follow", "-n", "1", "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn events tail --follow");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |rx: &std_mpsc::Receiver<String>| -> String {
        let line = rx.recv_timeout(DEADLINE).expect("a followed line in time");
        let v: Value = serde_json::from_str(&line).expect("JSON line");
        v["room"].as_str().expect("room").to_owned()
    };
    assert_eq!(next(&rx), "room-00000");
    // Enough events for several rotations while it follows.
    for i in 1..200 {
        log.record(room_event(i)).wait().await.expect("durable");
    }
    assert!(roomlet::events::segments(&dir).expect("segments").len() > 3);
    for i in 1..200 {
        assert_eq!(next(&rx), format!("room-{i:05}"));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn an_unwritable_event_log_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A file where the log's directory should be.
    std::fs::write(dir.path().join("events"), b"not a directory").expect("write");
    let mut config = roomlet_tests::server::test_config(dir.path());
    config.events.max_file_bytes = 1 << 20;
    let err = match roomlet::server::start(config, Default::default()).await {
        Ok(_) => panic!("the node must not start without its event log"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("event log") && err.contains("events"),
        "names the log and its directory: {err}"
    );
    // Unusable settings are refused too, with the key to fix.
    let mut config = roomlet_tests::server::test_config(dir.path());
    config.events.max_file_bytes = 10;
    std::fs::remove_file(dir.path().join("events")).expect("rm");
    let err = match roomlet::server::start(config, Default::default()).await {
        Ok(_) => panic!("max_file_bytes = 10 is refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("events.max_file_bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_logs_carry_room_and_peer_ids_in_spans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(
        dir.path(),
        &["--log-format", "json"],
        &[("RUST_LOG", "roomlet=debug")],
    );
    let url = server.ws();
    let j = try_join(&url, "span-room", "spanner")
        .await
        .expect("joined");
    let peer = j["peerId"].as_str().expect("peer id").to_owned();
    let in_span = |line: &Value, name: &str, room: &str, peer: Option<&str>| {
        line["spans"].as_array().is_some_and(|spans| {
            spans.iter().any(|s| {
                s["name"] == name && s["room"] == room && peer.is_none_or(|p| s["peer"] == p)
            })
        })
    };
    let (mut session_line, mut room_line) = (false, false);
    let deadline = Instant::now() + DEADLINE;
    while !(session_line && room_line) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = server
            .next_log_line(left)
            .expect("log lines with the session and room spans in time");
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            panic!("--log-format json writes JSON lines only: {line}");
        };
        session_line |= in_span(&v, "session", "span-room", Some(&peer));
        room_line |= in_span(&v, "room", "span-room", None) && v["fields"]["peer"] == peer.as_str();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_joins_with_a_clear_error() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "/dev/full is missing (a Linux device node); CI must have it"
        );
        eprintln!("skipped: /dev/full (Linux) is needed to simulate a full disk");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let events = roomlet::events::dir_in(dir.path());
    std::fs::create_dir_all(&events).expect("mkdir");
    // The segment the node will append to: every write answers ENOSPC.
    std::os::unix::fs::symlink(full, events.join(roomlet::events::segment_name(1)))
        .expect("symlink");
    let s = roomlet_tests::server::start_with(
        |c| c.server.data_dir = dir.path().to_path_buf(),
        Default::default(),
    )
    .await;
    for identity in ["first", "second"] {
        let mut c = Client::connect(&s.ws_url(), roomlet_tests::server::Wire::Json).await;
        c.send(json!({"type": "join", "room": "full", "token": dev_token("full", identity)}))
            .await;
        let f = c.frame().await;
        assert_eq!(
            (&f["type"], &f["code"]),
            (&json!("error"), &json!("unavailable")),
            "{f}"
        );
        assert!(
            f["message"]
                .as_str()
                .is_some_and(|m| m.contains("event log"))
        );
        assert_eq!(c.closed().await, 1013, "try again later");
    }
    // The node is still up and answers.
    let (status, _) =
        roomlet_tests::http(s.running.internal_addr, "GET", "/readyz", None, b"").await;
    assert_eq!(status, 200);
}
