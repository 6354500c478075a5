//! An all-in-one node restarted the way `docker restart` or a rolling
//! update does it (SIGTERM, then a new process on the same data directory
//! and port): its clients are closed with 1012, resume on the new process
//! with the same peer ids, and receive every stream frame they had not
//! acknowledged, once and in order; nobody sees anyone leave or join, and
//! the event log records no leave, no second join and no second opening.

use roomlet_tests::process::{Serve, ServeCommand, free_port};
use roomlet_tests::server::{Client, Wire, dev_token};
use roomlet_tests::tokens::dev_token_expiring;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn roomlet_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_roomlet-node"))
}

/// `roomlet serve --dev` on 127.0.0.1:`port` and `dir`.
fn serve(dir: &Path, port: u16, log: &str) -> Serve {
    ServeCommand::new(&roomlet_binary(), &dir.join(log))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .dev(&dir.join("data"))
        .start()
        .unwrap_or_else(|log| panic!("roomlet serve did not start:\n{log}"))
}

fn events(dir: &Path) -> Vec<Value> {
    roomlet_tests::process::events_tail(&roomlet_binary(), &dir.join("data"), &[])
}

/// A client and what it has read of its stream.
struct Peer {
    c: Client,
    id: String,
    token: String,
    last_seq: u64,
}

impl Peer {
    async fn join(url: &str, wire: Wire, room: &str, identity: &str) -> Peer {
        let mut c = Client::connect(url, wire).await;
        let j = c.join(room, &dev_token(room, identity)).await;
        Peer {
            c,
            id: j["peerId"].as_str().expect("peerId").to_owned(),
            token: j["resumeToken"].as_str().expect("resumeToken").to_owned(),
            last_seq: j["seq"].as_u64().expect("joined has a seq"),
        }
    }

    /// The next stream frame of type `ty`, its seq noted.
    async fn next_of(&mut self, ty: &str) -> Value {
        let f = self.c.frame_of(ty).await;
        if let Some(s) = f["seq"].as_u64() {
            self.last_seq = s;
        }
        f
    }

    /// Resumes on `url`; the `joined` frame.
    async fn resume(&mut self, url: &str) -> Value {
        self.c = Client::connect(url, self.c.wire).await;
        self.c
            .send(json!({"type": "resume", "resumeToken": self.token, "lastSeq": self.last_seq}))
            .await;
        self.c.frame().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_restart_keep_peer_ids_and_every_stream_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut node = serve(dir.path(), port, "first.log");
    let url = node.ws();

    let mut calls = Vec::new();
    for wire in Wire::BOTH {
        let room = format!("call-{wire:?}");
        let mut a = Peer::join(&url, wire, &room, "alice").await;
        let mut b = Peer::join(&url, wire, &room, "bob").await;
        a.next_of("peer-joined").await;
        for i in 0..10 {
            a.c.send(json!({"type": "message", "data": i})).await;
        }
        // Bob reads five; the other five reach his socket, unacknowledged.
        for i in 0..5 {
            assert_eq!(b.next_of("message").await["data"], i);
        }
        calls.push((a, b));
    }

    let stopping = Instant::now();
    node.signal("TERM");
    for (a, b) in &mut calls {
        assert_eq!(a.c.closed().await, 1012, "closed for a restart");
        assert_eq!(b.c.closed().await, 1012, "closed for a restart");
    }
    assert_eq!(node.exit_within(Duration::from_secs(15)), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "written well inside the 10 s drain grace: {:?}",
        stopping.elapsed()
    );
    assert!(dir.path().join("data/restart.msgpack").is_file());

    let node = serve(dir.path(), port, "second.log");
    let back = Instant::now();
    for (a, b) in &mut calls {
        let j = b.resume(&url).await;
        assert_eq!(
            (&j["type"], &j["resumed"]),
            (&json!("joined"), &json!(true)),
            "{j}"
        );
        assert_eq!(j["peerId"], json!(b.id), "the same peer id");
        let mut seq = b.last_seq;
        for i in 5..10 {
            let m = b.next_of("message").await;
            seq += 1;
            assert_eq!(
                (m["data"].as_i64(), m["seq"].as_u64(), m["from"].as_str()),
                (Some(i), Some(seq), Some(a.id.as_str())),
                "every frame not acked, once, in order"
            );
        }
        let j = a.resume(&url).await;
        assert_eq!((&j["resumed"], &j["peerId"]), (&json!(true), &json!(a.id)));

        // Traffic flows both ways on the new process, and nobody was told
        // of a leave or a join: each side's next frame is the message.
        a.c.send(json!({"type": "message", "data": "after"})).await;
        let m = b.c.frame().await;
        assert_eq!(
            (&m["type"], &m["data"]),
            (&json!("message"), &json!("after")),
            "{m}"
        );
        b.c.send(json!({"type": "message", "data": "back"})).await;
        let m = a.c.frame().await;
        assert_eq!(
            (&m["type"], &m["data"]),
            (&json!("message"), &json!("back")),
            "{m}"
        );
    }
    assert!(
        back.elapsed() < Duration::from_secs(2),
        "traffic flows within 2 s of the node being back: {:?}",
        back.elapsed()
    );
    assert!(
        !dir.path().join("data/restart.msgpack").exists(),
        "a node restores once"
    );
    drop(node);

    let log = events(dir.path());
    let count = |kind: &str| log.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(count("peer_left"), 0, "{log:?}");
    assert_eq!(count("peer_joined"), 4, "one join per peer: {log:?}");
    assert_eq!(count("room_opened"), 2, "one opening per room: {log:?}");
}

/// A node that cannot read the file (another format, torn) says so,
/// starts clean, and its clients' resumes fail with `resume-failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_restart_file_starts_clean_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    std::fs::write(
        dir.path().join("data/restart.msgpack"),
        b"\x81\xa6format\x63",
    )
    .expect("write");
    let node = serve(dir.path(), free_port(), "node.log");
    let log = node.log();
    assert!(
        log.contains("format this version cannot read; starting clean"),
        "{log}"
    );
    assert!(!dir.path().join("data/restart.msgpack").exists());
    let mut c = Client::connect(&node.ws(), Wire::Json).await;
    c.send(json!({"type": "resume", "resumeToken": "r-0123", "lastSeq": 0}))
        .await;
    let e = c.frame_of("error").await;
    assert_eq!(e["code"], "resume-failed");
    assert_eq!(c.closed().await, 4007);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A 5 s token, refreshed through `refresh`, keeps its session through a
/// restart at 10 s (no clock leeway: the first token is dead by then); the
/// session's expiry survives the restart; without the refresh a fresh join
/// with the first token is refused, with the refreshed one it is taken; a
/// refresh for another identity, or with an expired token, changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_keeps_the_session_through_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let start = |log: &str| {
        ServeCommand::new(&roomlet_binary(), &dir.path().join(log))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .dev(&dir.path().join("data"))
            .args(["--module-config", "auth.clock-leeway-seconds=0"])
            .start()
            .unwrap_or_else(|log| panic!("roomlet serve did not start:\n{log}"))
    };
    let mut node = start("first.log");
    let url = node.ws();
    let t0 = now_ms();
    let first = dev_token_expiring("r", "ann", 5);
    let mut c = Client::connect(&url, Wire::Json).await;
    let j = c.join("r", &first).await;
    let expires = j["expiresAt"]
        .as_u64()
        .expect("joined says when the token expires");
    assert!((t0 + 4_000..=t0 + 6_000).contains(&expires), "{j}");
    let peer = j["peerId"].clone();
    let resume_token = j["resumeToken"].as_str().expect("resume token").to_owned();

    // Refused refreshes leave the session as it was.
    c.send(json!({"type": "refresh", "token": dev_token_expiring("r", "bob", 60)}))
        .await;
    assert_eq!(c.frame_of("error").await["code"], "refresh-refused");
    c.send(json!({"type": "refresh", "token": dev_token_expiring("r", "ann", -60)}))
        .await;
    assert_eq!(c.frame_of("error").await["code"], "token-expired");
    let second = dev_token_expiring("r", "ann", 60);
    c.send(json!({"type": "refresh", "token": second})).await;
    let r = c.frame_of("refreshed").await;
    let refreshed = r["expiresAt"].as_u64().expect("expiresAt");
    assert!(refreshed >= t0 + 59_000, "{r}");
    let last_seq = r["seq"].as_u64().expect("refreshed is a stream frame");

    // Ten seconds in, the first token is dead; the node restarts.
    // Waiting for the wall clock itself (a token's age), not for a process.
    tokio::time::sleep(Duration::from_millis(
        (t0 + 10_000).saturating_sub(now_ms()),
    ))
    .await;
    node.signal("TERM");
    assert_eq!(c.closed().await, 1012);
    assert_eq!(node.exit_within(Duration::from_secs(15)), Some(0));
    let _node = start("second.log");
    let mut c = Client::connect(&url, Wire::Json).await;
    c.send(json!({"type": "resume", "resumeToken": resume_token, "lastSeq": last_seq}))
        .await;
    let j = c.frame().await;
    assert_eq!((&j["resumed"], &j["peerId"]), (&json!(true), &peer), "{j}");
    assert_eq!(
        j["expiresAt"].as_u64(),
        Some(refreshed),
        "the refreshed expiry is kept"
    );

    // A fresh join needs a live token: the first is refused, the second taken.
    let mut late = Client::connect(&url, Wire::Json).await;
    late.send(json!({"type": "join", "room": "r", "token": first}))
        .await;
    assert_eq!(late.frame_of("error").await["code"], "token-expired");
    assert_eq!(late.closed().await, 4001);
    let mut again = Client::connect(&url, Wire::Json).await;
    let j = again.join("r", &second).await;
    assert_eq!(j["expiresAt"].as_u64(), Some(refreshed));
}

/// Killed outright (SIGKILL): every session whose join was on disk comes
/// back with its peer id and `gap: true`, its stream going on after the
/// client's `lastSeq`; the room has its members (a newcomer sees them) and
/// nobody was told anyone left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_keep_peer_ids_with_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut node = serve(dir.path(), port, "first.log");
    let url = node.ws();
    let mut a = Peer::join(&url, Wire::Json, "crash", "alice").await;
    let mut b = Peer::join(&url, Wire::Msgpack, "crash", "bob").await;
    a.next_of("peer-joined").await;
    for i in 0..3 {
        a.c.send(json!({"type": "message", "data": i})).await;
        assert_eq!(b.next_of("message").await["data"], i);
    }
    node.kill();
    assert!(!dir.path().join("data/restart.msgpack").exists());

    let node = serve(dir.path(), port, "second.log");
    assert!(node.log().contains("killed?"), "{}", node.log());
    for p in [&mut a, &mut b] {
        let j = p.resume(&url).await;
        assert_eq!(
            (&j["resumed"], &j["gap"], &j["peerId"]),
            (&json!(true), &json!(true), &json!(p.id)),
            "{j}"
        );
    }
    a.c.send(json!({"type": "message", "data": "after"})).await;
    let m = b.c.frame_of("message").await;
    assert_eq!(
        (&m["data"], m["seq"].as_u64()),
        (&json!("after"), Some(b.last_seq + 1)),
        "the stream goes on after lastSeq: {m}"
    );
    let mut carol = Client::connect(&url, Wire::Json).await;
    let j = carol.join("crash", &dev_token("crash", "carol")).await;
    let mut expected = [a.id.as_str(), b.id.as_str()];
    expected.sort_unstable();
    assert_eq!(
        roomlet_tests::server::peer_ids(&j),
        expected,
        "the room kept its members"
    );
    drop(node);

    let log = events(dir.path());
    let count = |kind: &str| log.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(count("peer_left"), 0, "{log:?}");
    assert_eq!(count("peer_joined"), 3, "{log:?}");
}

/// A session that ends for good leaves no record behind: bob's socket drops,
/// his room is closed meanwhile, his resume is refused; after a kill -9 the
/// room does not come back with him in it (nor alice, whose session the
/// close ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ended_does_not_come_back_after_a_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut node = serve(dir.path(), port, "first.log");
    let url = node.ws();
    let mut a = Peer::join(&url, Wire::Json, "closing", "alice").await;
    let mut b = Peer::join(&url, Wire::Json, "closing", "bob").await;
    a.next_of("peer-joined").await;
    // Bob's socket drops (his session is parked).
    let spare = Client::connect(&url, Wire::Json).await;
    std::mem::replace(&mut b.c, spare).drop_connection();
    let (status, _) = roomlet_tests::http::http(
        node.internal,
        "DELETE",
        "/v1/admin/rooms/closing",
        Some(roomlet::runtime::secrets::DEV_OPERATOR_TOKEN),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(a.c.closed().await, 4008);
    let j = b.resume(&url).await;
    assert_eq!(j["code"], "resume-failed", "{j}");
    // Removing a record is not waited for; writing one is, and the journal
    // commits in order: once a later join is told `joined`, the removal is
    // on disk too.
    let mut dave = Client::connect(&url, Wire::Json).await;
    dave.join("elsewhere", &dev_token("elsewhere", "dave"))
        .await;
    node.kill();

    let node = serve(dir.path(), port, "second.log");
    let mut carol = Client::connect(&node.ws(), Wire::Json).await;
    let j = carol.join("closing", &dev_token("closing", "carol")).await;
    assert_eq!(
        roomlet_tests::server::peer_ids(&j),
        Vec::<&str>::new(),
        "no ghost: {j}"
    );
}
