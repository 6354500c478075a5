//! Authentication end to end (docs/auth.md): no secret ever reaches the
//! log, a frame or `/metrics`; tokens minted by an independent JWT
//! implementation in LiveKit's format are accepted and their grants
//! honoured; API keys rotate; `roomCreate` decides who may open a room;
//! and a real coturn accepts the TURN REST credentials handed out in
//! `joined` (and refuses tampered and expired ones).
//!
//! Every bad-token error code and the per-frame grants are covered by
//! tests/gateway.rs and not repeated here.
//!
//! Without coturn's `turnserver` and `turnutils_uclient` on PATH the TURN
//! test is skipped, except under `CI=true`, where it fails.

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use roomlet::config::TurnSection;
use roomlet::config::media::{AgoraSection, LiveKitSection, MediaSecrets};
use roomlet::runtime::secrets::{ApiKeys, Secret};
use roomlet::server::Secrets;
use roomlet_tests::server::{Client, Got, TestServer, Wire, dev_token, start, start_with};
use roomlet_tests::tokens::{Token, hs256};
use roomlet_tests::{DEADLINE, now_secs, sign_jwt, wait_for};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

// ---------------------------------------------------------------------------
// Log capture: one global TRACE subscriber per test binary, into memory.
// ---------------------------------------------------------------------------

/// What this process logged since the first [`captured_log`].
#[derive(Clone)]
struct Captured {
    /// Everything.
    all: Arc<Mutex<Vec<u8>>>,
    /// All but the WebSocket library's frame-level tracing, which at
    /// TRACE prints every frame's payload, in the client's and in the
    /// server's sessions alike (see docs/auth.md).
    own: Arc<Mutex<Vec<u8>>>,
}

static LOG: OnceLock<Captured> = OnceLock::new();

/// An `io::Write` appending to a shared buffer.
#[derive(Clone)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn is_websocket_library(target: &str) -> bool {
    target.starts_with("tungstenite") || target.starts_with("tokio_tungstenite")
}

/// Installs (once) a global subscriber that formats every event and every
/// span (with its fields, at creation and close) at TRACE level into
/// memory, `log`-crate records included; RUST_LOG plays no part. The one
/// exception is the Cranelift code generator, kept at INFO: it only ever
/// sees the components' WebAssembly, and at TRACE it writes gigabytes per
/// server start.
fn captured_log() -> Captured {
    LOG.get_or_init(|| {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::filter::{LevelFilter, Targets, filter_fn};
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let captured = Captured {
            all: Arc::default(),
            own: Arc::default(),
        };
        let levels = Targets::new()
            .with_default(LevelFilter::TRACE)
            .with_target("cranelift", LevelFilter::INFO)
            .with_target("wasmtime_internal_cranelift", LevelFilter::INFO);
        tracing_subscriber::registry()
            .with(levels)
            .with(layer(&captured.all))
            .with(
                layer(&captured.own).with_filter(filter_fn(|m| !is_websocket_library(m.target()))),
            )
            .try_init()
            .expect("the only global subscriber in this test binary");
        captured
    })
    .clone()
}

/// A text formatter writing into `buffer`.
fn layer<S>(buffer: &Arc<Mutex<Vec<u8>>>) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let writer = LogBuffer(buffer.clone());
    tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_span_events(
            tracing_subscriber::fmt::format::FmtSpan::NEW
                | tracing_subscriber::fmt::format::FmtSpan::CLOSE,
        )
        .with_writer(move || writer.clone())
}

fn log_text(log: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&log.lock().expect("log buffer")).into_owned()
}

// ---------------------------------------------------------------------------
// Secret scanning.
// ---------------------------------------------------------------------------

/// The forms a secret could leak in: as is, hex, base64 (both alphabets).
fn leak_forms(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    vec![
        secret.to_owned(),
        hex,
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
    ]
}

/// Where `haystack` holds any of `secrets` in any of its [`leak_forms`]:
/// which secret, in which form, and the neighbourhood of the hit.
fn find_leak(haystack: &str, secrets: &[(&str, &str)]) -> Option<String> {
    for (name, secret) in secrets {
        for form in leak_forms(secret) {
            if let Some(at) = haystack.find(&form) {
                let from = haystack.floor_char_boundary(at.saturating_sub(200));
                let to = haystack.ceil_char_boundary((at + form.len() + 200).min(haystack.len()));
                return Some(format!("{name} (as {form:?}):\n…{}…", &haystack[from..to]));
            }
        }
    }
    None
}

fn assert_no_leak(place: &str, haystack: &str, secrets: &[(&str, &str)]) {
    if let Some(leak) = find_leak(haystack, secrets) {
        panic!("a secret leaked into {place}: {leak}");
    }
}

// ---------------------------------------------------------------------------
// A WebSocket client that keeps a transcript of every byte it received.
// ---------------------------------------------------------------------------

struct Spy {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    wire: Wire,
    transcript: Arc<Mutex<Vec<u8>>>,
}

impl Spy {
    async fn connect(s: &TestServer, wire: Wire, transcript: &Arc<Mutex<Vec<u8>>>) -> Spy {
        let protocol = match wire {
            Wire::Json => "roomlet.v1.json",
            Wire::Msgpack => "roomlet.v1.msgpack",
        };
        let ws = Client::try_connect(&s.ws_url(), Some(protocol))
            .await
            .expect("websocket connects");
        Spy {
            ws,
            wire,
            transcript: transcript.clone(),
        }
    }

    fn record(&self, bytes: &[u8]) {
        let mut t = self.transcript.lock().expect("transcript");
        t.extend_from_slice(bytes);
        t.push(b'\n');
    }

    async fn send(&mut self, frame: Value) {
        let msg = match self.wire {
            Wire::Json => Message::text(frame.to_string()),
            Wire::Msgpack => Message::binary(rmp_serde::to_vec_named(&frame).expect("msgpack")),
        };
        self.ws.send(msg).await.expect("send");
    }

    async fn send_raw(&mut self, text: bool, bytes: &[u8]) {
        let msg = if text {
            Message::text(String::from_utf8_lossy(bytes).into_owned())
        } else {
            Message::binary(bytes.to_vec())
        };
        self.ws.send(msg).await.expect("send");
    }

    /// The next frame or close, recorded raw, within [`DEADLINE`].
    async fn next(&mut self) -> Got {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a frame within the deadline");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    self.record(t.as_bytes());
                    return Got::Frame(serde_json::from_str(&t).expect("json frame"));
                }
                Some(Ok(Message::Binary(b))) => {
                    self.record(&b);
                    return Got::Frame(rmp_serde::from_slice(&b).expect("msgpack frame"));
                }
                Some(Ok(Message::Close(c))) => {
                    let code = c.as_ref().map(|c| u16::from(c.code)).unwrap_or(1005);
                    let reason = c.map(|c| c.reason.to_string()).unwrap_or_default();
                    self.record(format!("close {code} {reason}").as_bytes());
                    return Got::Closed(code);
                }
                Some(Ok(Message::Ping(p) | Message::Pong(p))) => self.record(&p),
                Some(Ok(Message::Frame(_))) => {}
                Some(Err(_)) | None => return Got::Closed(1006),
            }
        }
    }

    async fn frame(&mut self) -> Value {
        match self.next().await {
            Got::Frame(v) => v,
            Got::Closed(c) => panic!("expected a frame, the server closed with {c}"),
        }
    }

    async fn frame_of(&mut self, ty: &str) -> Value {
        loop {
            let f = self.frame().await;
            if f["type"] == ty {
                return f;
            }
        }
    }

    async fn error_code(&mut self) -> String {
        let f = self.frame_of("error").await;
        f["code"].as_str().unwrap_or("").to_owned()
    }

    async fn closed(&mut self) -> u16 {
        loop {
            if let Got::Closed(c) = self.next().await {
                return c;
            }
        }
    }

    async fn join(&mut self, room: &str, token: &str) -> Value {
        self.send(json!({"type": "join", "room": room, "token": token}))
            .await;
        let f = self.frame().await;
        assert_eq!(f["type"], "joined", "expected joined, got {f}");
        f
    }

    /// Sends `join` and returns the refusal's error code and close code.
    async fn refused(&mut self, room: &str, token: &str) -> (String, u16) {
        self.send(json!({"type": "join", "room": room, "token": token}))
            .await;
        let f = self.frame().await;
        assert_eq!(f["type"], "error", "expected a refusal, got {f}");
        let code = f["code"].as_str().unwrap_or("").to_owned();
        (code, self.closed().await)
    }
}

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

/// A plain HTTP/1.1 GET; the whole response (status line, headers, body).
async fn http_get(addr: SocketAddr, path: &str) -> String {
    roomlet_tests::http::fetch(addr, "GET", path, None, b"")
        .await
        .whole()
}

/// A token from roomlet's own minter (what `roomlet token create` prints).
fn mint(key: &str, secret: &str, room: &str, identity: &str, admin: bool, create: bool) -> String {
    Token::new(room, identity)
        .key(key, secret)
        .admin(admin)
        .create(create)
        .mint()
}

/// Join-token claims with `video` extended by `grant`.
fn claims(key: &str, room: &str, identity: &str, grant: Value) -> Value {
    let now = now_secs();
    let mut video = json!({"room": room, "roomJoin": true});
    if let (Some(v), Some(g)) = (video.as_object_mut(), grant.as_object()) {
        v.extend(g.clone());
    }
    json!({"iss": key, "sub": identity, "nbf": now - 5, "exp": now + 600, "video": video})
}

fn api_keys(pairs: &str) -> ApiKeys {
    ApiKeys::parse("ROOMLET_API_KEYS", &Secret::new(pairs)).expect("API keys parse")
}

/// A production-mode server (no dev key) with `api_keys`.
async fn start_keyed(pairs: &str) -> TestServer {
    start_with(
        |c| c.server.dev = false,
        Secrets {
            api_keys: api_keys(pairs),
            ..Secrets::default()
        },
    )
    .await
}

/// Connects, sends `join` and returns the refusal's error and close codes.
async fn refusal(s: &TestServer, room: &str, token: &str) -> (String, u16) {
    let mut c = Client::connect(&s.ws_url(), Wire::Json).await;
    c.send(json!({"type": "join", "room": room, "token": token}))
        .await;
    let f = c.frame().await;
    assert_eq!(f["type"], "error", "expected a refusal, got {f}");
    (
        f["code"].as_str().unwrap_or("").to_owned(),
        c.closed().await,
    )
}

fn peer_id(joined: &Value) -> String {
    joined["peerId"].as_str().expect("peerId").to_owned()
}

async fn client_error(c: &mut Client) -> String {
    c.frame_of("error").await["code"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// The `turn:` entry of a `joined` frame's `iceServers`.
fn turn_entry(joined: &Value) -> Value {
    joined["iceServers"]
        .as_array()
        .expect("iceServers")
        .iter()
        .find(|s| {
            s["urls"].as_array().is_some_and(|u| {
                u.iter()
                    .any(|u| u.as_str().unwrap_or("").starts_with("turn:"))
            })
        })
        .unwrap_or_else(|| panic!("no turn: entry in {}", joined["iceServers"]))
        .clone()
}

/// Checks a TURN REST username (`expiry:identity`) and returns the expiry.
fn turn_expiry(entry: &Value, identity: &str, ttl: u64, before: u64, after: u64) -> u64 {
    let username = entry["username"].as_str().expect("TURN username");
    let (expiry, who) = username
        .split_once(':')
        .unwrap_or_else(|| panic!("TURN username {username:?} is not expiry:identity"));
    assert_eq!(who, identity, "TURN username {username:?}");
    let expiry: u64 = expiry
        .parse()
        .unwrap_or_else(|_| panic!("TURN username {username:?}: expiry is not a number"));
    assert!(
        (before + ttl..=after + ttl).contains(&expiry),
        "TURN expiry {expiry} is not now + {ttl}s"
    );
    expiry
}

// ---------------------------------------------------------------------------
// 1. Sentinel secrets never leak.
// ---------------------------------------------------------------------------

const API_ONE: &str = "SENTINEL-api-one-7Hq2xV9mK4pLw3";
const API_TWO: &str = "SENTINEL-api-two-Zr8cN1bT6yQe5J";
const OPERATOR: &str = "SENTINEL-operator-Ub4kD7sW2gFa9M";
const TURN_SECRET: &str = "SENTINEL-turn-Xn6vR3hC8jYt1P";
/// Agora's certificate must be 32 hex characters: a recognisable run.
const AGORA_CERT: &str = "5e7e5e7e0a90ca0a90cafe5e7e5e7e01";
const LIVEKIT_SECRET: &str = "SENTINEL-livekit-Qw3Er5Ty7Ui9Op";
const SENTINELS: [(&str, &str); 6] = [
    ("API secret key-one", API_ONE),
    ("API secret key-two", API_TWO),
    ("operator credential", OPERATOR),
    ("TURN shared secret", TURN_SECRET),
    ("Agora app certificate", AGORA_CERT),
    ("LiveKit API secret", LIVEKIT_SECRET),
];

#[tokio::test]
async fn no_secret_reaches_the_log_a_frame_or_the_metrics() {
    // The scanner itself finds a planted secret in every form.
    for form in leak_forms(API_ONE) {
        let planted = format!("x{form}y");
        assert!(
            find_leak(&planted, &SENTINELS).is_some(),
            "the scanner missed {form:?}"
        );
    }

    let log = captured_log();
    // Every secret a node has (a compile error here means a new one to plant).
    let secrets = Secrets {
        api_keys: api_keys(&format!("key-one:{API_ONE}, key-two:{API_TWO}")),
        operator: Some(Secret::new(OPERATOR)),
        turn: Some(Secret::new(TURN_SECRET)),
        // This node has no bus; tests/distributed.rs checks that a NATS
        // password stays out of the error and the log.
        nats: Default::default(),
        media: MediaSecrets {
            agora: Some(Secret::new(AGORA_CERT)),
            livekit: Some(Secret::new(LIVEKIT_SECRET)),
        },
    };
    let s = start_with(
        |c| {
            c.server.dev = false;
            c.media.agora = Some(AgoraSection {
                app_id: "970CA35de60c44645bbae8a215061b33".into(),
            });
            c.media.livekit = Some(LiveKitSection {
                url: "wss://livekit.example.org".into(),
                regions: Default::default(),
                api_key: "APIsfu".into(),
            });
            c.turn = Some(TurnSection {
                urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
                ttl_seconds: 600,
            });
        },
        secrets,
    )
    .await;
    let wire = Arc::new(Mutex::new(Vec::new()));
    let room = "vault";
    // Tokens are bearer credentials: none may be logged either.
    let mut bearer: Vec<String> = Vec::new();

    // Good joins, signed by either key, in both encodings.
    let token = mint("key-one", API_ONE, room, "alice", false, true);
    bearer.push(token.clone());
    // Alice's frames on their own: her media credentials may be there only.
    let alice_wire = Arc::new(Mutex::new(Vec::new()));
    let mut alice = Spy::connect(&s, Wire::Json, &alice_wire).await;
    let before = now_secs();
    let ja = alice.join(room, &token).await;
    let mut media_tokens = Vec::new();
    for provider in ["agora", "livekit"] {
        let t = ja["media"][provider]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("a {provider} credential in {ja}"));
        media_tokens.push(t.to_owned());
    }
    alice.send(json!({"type": "media-token"})).await;
    let fresh = alice.frame_of("media-token").await;
    for provider in ["agora", "livekit"] {
        media_tokens.push(
            fresh["media"][provider]["token"]
                .as_str()
                .expect("fresh")
                .to_owned(),
        );
    }
    bearer.extend(media_tokens.iter().cloned());
    let after = now_secs();
    let alice_id = peer_id(&ja);
    let turn = turn_entry(&ja);
    let expiry = turn_expiry(&turn, "alice", 600, before, after);
    let credential = turn["credential"].as_str().expect("TURN credential");
    assert_eq!(
        credential,
        roomlet::gateway::turn::credential(&Secret::new(TURN_SECRET), "alice", expiry).credential,
        "the TURN credential is HMAC-SHA1(secret, username)"
    );
    assert_ne!(credential, TURN_SECRET);
    bearer.push(credential.to_owned());

    let token = mint("key-two", API_TWO, room, "bob", false, false);
    bearer.push(token.clone());
    let mut bob = Spy::connect(&s, Wire::Msgpack, &wire).await;
    let bob_id = peer_id(&bob.join(room, &token).await);
    assert_eq!(
        alice.frame_of("peer-joined").await["peer"]["id"],
        bob_id.as_str()
    );

    let token = hs256(
        &claims(
            "key-one",
            room,
            "viewer",
            json!({"canPublish": false, "canPublishData": false}),
        ),
        API_ONE,
    );
    bearer.push(token.clone());
    let mut viewer = Spy::connect(&s, Wire::Json, &wire).await;
    let viewer_id = peer_id(&viewer.join(room, &token).await);

    let token = mint("key-two", API_TWO, room, "admin", true, false);
    bearer.push(token.clone());
    let mut admin = Spy::connect(&s, Wire::Msgpack, &wire).await;
    admin.join(room, &token).await;

    // Messages and signals, and their refusals.
    alice
        .send(json!({"type": "message", "data": {"text": "hi all"}}))
        .await;
    assert_eq!(
        bob.frame_of("message").await["data"]["text"],
        "hi all",
        "room message"
    );
    bob.send(json!({"type": "message", "to": alice_id, "data": "psst"}))
        .await;
    assert_eq!(alice.frame_of("message").await["from"], bob_id.as_str());
    alice
        .send(json!({"type": "signal", "to": bob_id, "kind": "offer", "payload": {"sdp": "v=0"}}))
        .await;
    assert_eq!(bob.frame_of("signal").await["kind"], "offer");
    bob.send(
        json!({"type": "signal", "to": alice_id, "kind": "answer", "payload": {"sdp": "v=0"}}),
    )
    .await;
    assert_eq!(alice.frame_of("signal").await["kind"], "answer");
    alice
        .send(json!({"type": "signal", "to": bob_id, "kind": "candidate", "payload": {"candidate": "c"}}))
        .await;
    assert_eq!(bob.frame_of("signal").await["kind"], "candidate");
    alice
        .send(json!({"type": "signal", "to": "p-nobody", "kind": "offer", "payload": {}}))
        .await;
    assert_eq!(alice.error_code().await, "unknown-peer");
    alice
        .send(json!({"type": "signal", "to": alice_id, "kind": "offer", "payload": {}}))
        .await;
    assert_eq!(alice.error_code().await, "signal-to-self");
    viewer
        .send(json!({"type": "signal", "to": alice_id, "kind": "offer", "payload": {}}))
        .await;
    assert_eq!(viewer.error_code().await, "forbidden");
    viewer.send(json!({"type": "message", "data": 1})).await;
    assert_eq!(viewer.error_code().await, "forbidden");

    // Bad frames.
    alice.send_raw(true, b"{not json").await;
    assert_eq!(alice.error_code().await, "bad-frame");
    alice.send_raw(false, b"\x81\xa4type\xa4ping").await;
    assert_eq!(alice.error_code().await, "bad-frame", "binary on json");
    alice.send(json!({"type": "teleport"})).await;
    assert_eq!(alice.error_code().await, "unknown-type");
    alice.send(json!({"type": "signal"})).await;
    assert_eq!(alice.error_code().await, "bad-frame");
    alice.send(json!({"type": "stats", "packetLoss": 7})).await;
    assert_eq!(alice.error_code().await, "stats-invalid");
    alice.send(json!({"type": "ack", "seq": 1_000_000})).await;
    assert_eq!(alice.error_code().await, "bad-seq");
    alice
        .send(json!({"type": "join", "room": room, "token": bearer[0]}))
        .await;
    assert_eq!(alice.error_code().await, "already-joined");
    alice.send(json!({"type": "ping", "ts": 7})).await;
    assert_eq!(alice.frame_of("pong").await["ts"], 7.0);

    // Kick and metadata: refused without roomAdmin, done with it.
    bob.send(json!({"type": "kick", "peer": viewer_id, "reason": "x"}))
        .await;
    assert_eq!(bob.error_code().await, "forbidden");
    bob.send(json!({"type": "room-metadata", "metadata": "x"}))
        .await;
    assert_eq!(bob.error_code().await, "forbidden");
    admin
        .send(json!({"type": "kick", "peer": "p-nobody", "reason": "x"}))
        .await;
    assert_eq!(admin.error_code().await, "unknown-peer");
    admin
        .send(json!({"type": "room-metadata", "metadata": "{\"topic\":\"vault\"}"}))
        .await;
    assert_eq!(
        alice.frame_of("room-metadata").await["metadata"],
        "{\"topic\":\"vault\"}"
    );
    admin
        .send(json!({"type": "kick", "peer": viewer_id, "reason": "bye"}))
        .await;
    assert_eq!(viewer.frame_of("kicked").await["reason"], "bye");
    assert_eq!(viewer.closed().await, 4004);

    // Every kind of bad token, each on a fresh connection. Tokens signed
    // with the operator credential or the TURN secret are forgeries too.
    let good = claims("key-one", room, "mallory", json!({}));
    let with = |field: &str, value: Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };
    let mut no_join = good.clone();
    no_join["video"]["roomJoin"] = json!(false);
    let alg_none = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(json!({"alg": "none"}).to_string()),
            b64.encode(good.to_string())
        )
    };
    let now = now_secs();
    let cases = [
        ("garbage".to_owned(), "token-malformed"),
        (String::new(), "token-malformed"),
        (alg_none, "token-bad-algorithm"),
        (
            sign_jwt(&json!({"alg": "HS512"}), &good, API_ONE),
            "token-bad-algorithm",
        ),
        (hs256(&good, "not-the-secret"), "token-bad-signature"),
        (hs256(&good, API_TWO), "token-bad-signature"),
        (hs256(&good, OPERATOR), "token-bad-signature"),
        (hs256(&good, TURN_SECRET), "token-bad-signature"),
        (
            hs256(&with("iss", json!("key-three")), API_ONE),
            "token-unknown-key",
        ),
        (
            hs256(
                &with("iss", json!(roomlet::runtime::secrets::DEV_API_KEY)),
                roomlet::runtime::secrets::DEV_API_SECRET,
            ),
            "token-unknown-key",
        ),
        (
            hs256(&with("exp", json!(now - 3600)), API_ONE),
            "token-expired",
        ),
        (
            hs256(&with("nbf", json!(now + 3600)), API_ONE),
            "token-not-yet-valid",
        ),
        (
            mint("key-two", API_TWO, "elsewhere", "mallory", true, true),
            "token-wrong-room",
        ),
        (hs256(&no_join, API_ONE), "token-missing-grant"),
    ];
    for (token, code) in &cases {
        bearer.push(token.clone());
        let mut c = Spy::connect(&s, Wire::Json, &wire).await;
        assert_eq!(c.refused(room, token).await, ((*code).to_owned(), 4001));
    }
    // A valid token without roomCreate for a room that does not exist.
    let token = mint("key-one", API_ONE, "nowhere", "mallory", false, false);
    bearer.push(token.clone());
    let mut c = Spy::connect(&s, Wire::Msgpack, &wire).await;
    assert_eq!(
        c.refused("nowhere", &token).await,
        ("room-not-found".to_owned(), 4008)
    );
    // A resume with a made-up token.
    let mut c = Spy::connect(&s, Wire::Json, &wire).await;
    c.send(json!({"type": "resume", "resumeToken": "r-forged", "lastSeq": 0}))
        .await;
    assert_eq!(c.error_code().await, "resume-failed");
    assert_eq!(c.closed().await, 4007);
    // A frame over the size limit ends a joined session.
    let token = mint("key-one", API_ONE, room, "carol", false, false);
    bearer.push(token.clone());
    let mut carol = Spy::connect(&s, Wire::Json, &wire).await;
    carol.join(room, &token).await;
    let big = json!({"type": "message", "data": "x".repeat(70 * 1024)}).to_string();
    carol.send_raw(true, big.as_bytes()).await;
    assert_eq!(carol.error_code().await, "frame-too-large");
    assert_eq!(carol.closed().await, 1009);

    // Leave.
    alice.send(json!({"type": "leave"})).await;
    assert_eq!(alice.closed().await, 1000);
    loop {
        let left = bob.frame_of("peer-left").await;
        if left["peerId"] == alice_id.as_str() {
            assert_eq!(left["reason"], "leave");
            break;
        }
    }

    // The HTTP side, /metrics included, while sessions are still open.
    let mut http = String::new();
    for path in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/v1/admin/rooms",
        "/nope",
    ] {
        http.push_str(&http_get(s.running.internal_addr, path).await);
    }
    let metrics = http_get(s.running.internal_addr, "/metrics").await;
    assert!(
        metrics.starts_with("HTTP/1.1 200") && metrics.contains("roomlet_connections"),
        "metrics: {metrics}"
    );
    http.push_str(&metrics);
    let dev = http_get(s.addr(), "/v1/dev/token?room=vault&identity=eve").await;
    assert!(
        dev.starts_with("HTTP/1.1 404"),
        "no dev token endpoint without --dev: {dev}"
    );
    http.push_str(&dev);
    for path in ["/healthz", "/readyz", "/v1/ws"] {
        http.push_str(&http_get(s.addr(), path).await);
    }

    // Everyone goes; wait until every session has ended (and logged so).
    for mut c in [bob, admin] {
        c.send(json!({"type": "leave"})).await;
        assert_eq!(c.closed().await, 1000);
    }
    let gateway = s.running.gateway.clone();
    wait_for("every session to end", || gateway.connections() == 0).await;
    http.push_str(&http_get(s.running.internal_addr, "/metrics").await);

    // Now look.
    let own_log = log_text(&log.own);
    let log = log_text(&log.all);
    for proof in [
        "roomlet ready",
        "secrets.api_secret",
        "secrets.media_secret",
        "token accepted",
        "token rejected",
        "token refused",
        "tungstenite::protocol",
    ] {
        assert!(
            log.contains(proof),
            "the TRACE capture lacks {proof:?}: is it really capturing?"
        );
    }
    assert!(own_log.contains("token rejected"));
    let wire = String::from_utf8_lossy(&wire.lock().expect("transcript")).into_owned();
    let alice_wire = String::from_utf8_lossy(&alice_wire.lock().expect("transcript")).into_owned();
    assert!(wire.contains("token-bad-signature") && wire.contains("close 4001"));
    assert_no_leak("the log", &log, &SENTINELS);
    assert_no_leak("the frames clients received", &wire, &SENTINELS);
    assert_no_leak("the frames alice received", &alice_wire, &SENTINELS);
    let theirs: Vec<(&str, &str)> = media_tokens
        .iter()
        .map(|t| ("alice's media credential", t.as_str()))
        .collect();
    assert_no_leak("the frames other clients received", &wire, &theirs);
    let mut events = String::new();
    for file in std::fs::read_dir(roomlet::events::dir_in(s.dir.path()))
        .expect("the event log directory")
        .flatten()
    {
        events.push_str(&String::from_utf8_lossy(
            &std::fs::read(file.path()).expect("an event log file"),
        ));
    }
    assert!(events.contains("joined"), "the event log is being read");
    assert_no_leak("the event log", &events, &SENTINELS);
    assert_no_leak("the event log", &events, &theirs);
    assert_no_leak("the HTTP responses (/metrics …)", &http, &SENTINELS);
    // Bearer credentials (access tokens, the derived TURN password) are in
    // frames only where they belong (`joined`), never in roomlet's own log
    // or HTTP. (The WebSocket library's TRACE frame dumps do show them.)
    let bearer: Vec<(&str, &str)> = bearer
        .iter()
        .filter(|t| t.len() > 8)
        .map(|t| ("a bearer credential", t.as_str()))
        .collect();
    assert_no_leak("the log (WebSocket library aside)", &own_log, &bearer);
    assert_no_leak("the HTTP responses", &http, &bearer);
}

// ---------------------------------------------------------------------------
// 2. LiveKit-format tokens from an independent JWT implementation.
// ---------------------------------------------------------------------------

const OLD_KEY: &str = "APIold";
const OLD_SECRET: &str = "old-secret-b9Wf3kQz7Lm2Xc8Vn4Rt";
const NEW_KEY: &str = "APInew";
const NEW_SECRET: &str = "new-secret-Hs5Jd1Pq6Yg0Ke3Ua7Mw";

/// Signs `claims` as LiveKit's server SDKs do (an HS256 JWT), with the
/// `jsonwebtoken` crate (ring) rather than the hmac/sha2/base64 crates the
/// auth component verifies with.
fn livekit_jwt(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("jsonwebtoken signs")
}

/// A join token's claims as LiveKit's SDKs write them, including claims
/// roomlet does not use (`jti`, `kind`, `attributes`, extra grants).
fn livekit_claims(key: &str, room: &str, identity: &str, video: Value) -> Value {
    let now = now_secs();
    let mut grant = json!({"room": room, "roomJoin": true});
    if let (Some(g), Some(v)) = (grant.as_object_mut(), video.as_object()) {
        g.extend(v.clone());
    }
    json!({
        "iss": key,
        "sub": identity,
        "jti": identity,
        "name": format!("{identity} (LiveKit SDK)"),
        "metadata": format!("{{\"who\":\"{identity}\"}}"),
        "attributes": {},
        "kind": "standard",
        "nbf": now,
        "exp": now + 6 * 3600,
        "video": grant,
    })
}

#[tokio::test]
async fn livekit_format_tokens_from_an_independent_signer_are_accepted_and_honoured() {
    let s = start_keyed(&format!("{OLD_KEY}:{OLD_SECRET},{NEW_KEY}:{NEW_SECRET}")).await;
    let url = s.ws_url();
    let room = "livekit";

    // Alice: LiveKit defaults (no canPublish/canSubscribe/canPublishData),
    // plus grants roomlet ignores.
    let mut alice = Client::connect(&url, Wire::Json).await;
    let ja = alice
        .join(
            room,
            &livekit_jwt(
                OLD_SECRET,
                &livekit_claims(
                    OLD_KEY,
                    room,
                    "alice",
                    json!({"roomCreate": true, "canUpdateOwnMetadata": true,
                           "canPublishSources": ["camera", "microphone"]}),
                ),
            ),
        )
        .await;
    let alice_id = peer_id(&ja);
    assert_eq!(ja["peers"], json!([]));

    // Bob: explicit grants, no data channel messages.
    let mut bob = Client::connect(&url, Wire::Msgpack).await;
    let jb = bob
        .join(
            room,
            &livekit_jwt(
                NEW_SECRET,
                &livekit_claims(
                    NEW_KEY,
                    room,
                    "bob",
                    json!({"canPublish": true, "canSubscribe": true, "canPublishData": false}),
                ),
            ),
        )
        .await;
    let bob_id = peer_id(&jb);
    // `sub`, `name` and `metadata` become the peer's identity, name, metadata.
    assert_eq!(
        jb["peers"],
        json!([{"id": alice_id, "identity": "alice",
                "name": "alice (LiveKit SDK)", "metadata": "{\"who\":\"alice\"}"}])
    );
    let pj = alice.frame_of("peer-joined").await;
    assert_eq!(
        pj["peer"],
        json!({"id": bob_id, "identity": "bob",
               "name": "bob (LiveKit SDK)", "metadata": "{\"who\":\"bob\"}"})
    );

    // canPublishData=false: no messages.
    bob.send(json!({"type": "message", "data": "hello"})).await;
    assert_eq!(client_error(&mut bob).await, "forbidden");
    // canPublish=true: offers go through.
    bob.send(json!({"type": "signal", "to": alice_id, "kind": "offer", "payload": {"sdp": "v=0"}}))
        .await;
    let sig = alice.frame_of("signal").await;
    assert_eq!(
        (sig["from"].as_str(), sig["kind"].as_str()),
        (Some(bob_id.as_str()), Some("offer"))
    );
    // LiveKit defaults for alice: publish, subscribe and data all allowed.
    alice
        .send(json!({"type": "message", "data": {"text": "hi bob"}}))
        .await;
    let m = bob.frame_of("message").await;
    assert_eq!(
        (m["from"].as_str(), &m["data"]["text"]),
        (Some(alice_id.as_str()), &json!("hi bob"))
    );
    alice
        .send(json!({"type": "signal", "to": bob_id, "kind": "offer", "payload": {"sdp": "v=0"}}))
        .await;
    assert_eq!(bob.frame_of("signal").await["from"], alice_id.as_str());

    // And the other way round: what roomlet mints, an independent JWT
    // implementation verifies, with LiveKit's claim names.
    let token = mint(OLD_KEY, OLD_SECRET, room, "carol", true, false);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_nbf = true;
    validation.set_issuer(&[OLD_KEY]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
    let decoded = jsonwebtoken::decode::<Value>(
        &token,
        &DecodingKey::from_secret(OLD_SECRET.as_bytes()),
        &validation,
    )
    .expect("jsonwebtoken verifies roomlet's token");
    let c = decoded.claims;
    assert_eq!(decoded.header.alg, Algorithm::HS256);
    assert_eq!(
        (c["iss"].as_str(), c["sub"].as_str(), c["name"].as_str()),
        (Some(OLD_KEY), Some("carol"), Some("CAROL"))
    );
    assert_eq!(
        c["video"],
        json!({"room": room, "roomJoin": true, "roomCreate": false, "roomAdmin": true,
               "canPublish": true, "canSubscribe": true, "canPublishData": true})
    );
    let wrong = jsonwebtoken::decode::<Value>(
        &token,
        &DecodingKey::from_secret(NEW_SECRET.as_bytes()),
        &validation,
    );
    assert!(wrong.is_err(), "another key's secret does not verify it");
}

#[tokio::test]
async fn api_keys_rotate_without_downtime() {
    let room = "rotation";
    let old = |identity: &str| {
        livekit_jwt(
            OLD_SECRET,
            &livekit_claims(OLD_KEY, room, identity, json!({"roomCreate": true})),
        )
    };
    let new = |identity: &str| {
        livekit_jwt(
            NEW_SECRET,
            &livekit_claims(NEW_KEY, room, identity, json!({"roomCreate": true})),
        )
    };

    // During the rotation both pairs are configured: either signs.
    let s = start_keyed(&format!("{OLD_KEY}:{OLD_SECRET},{NEW_KEY}:{NEW_SECRET}")).await;
    let mut a = Client::connect(&s.ws_url(), Wire::Json).await;
    a.join(room, &old("a")).await;
    let mut b = Client::connect(&s.ws_url(), Wire::Msgpack).await;
    b.join(room, &new("b")).await;
    assert_eq!(a.frame_of("peer-joined").await["peer"]["identity"], "b");
    // A key id that is not configured.
    let retired = livekit_jwt(
        "retired-secret",
        &livekit_claims("APIretired", room, "c", json!({})),
    );
    assert_eq!(
        refusal(&s, room, &retired).await,
        ("token-unknown-key".to_owned(), 4001)
    );
    // The keys are not interchangeable: the old id with the new secret.
    let confused = livekit_jwt(NEW_SECRET, &livekit_claims(OLD_KEY, room, "d", json!({})));
    assert_eq!(
        refusal(&s, room, &confused).await,
        ("token-bad-signature".to_owned(), 4001)
    );

    // After the rotation only the new pair is configured.
    let s = start_keyed(&format!("{NEW_KEY}:{NEW_SECRET}")).await;
    assert_eq!(
        refusal(&s, room, &old("e")).await,
        ("token-unknown-key".to_owned(), 4001)
    );
    Client::connect(&s.ws_url(), Wire::Json)
        .await
        .join(room, &new("f"))
        .await;
}

#[tokio::test]
async fn room_create_decides_who_may_open_a_room() {
    let s = start(|_| {}).await;
    let (key, secret) = ApiKeys::dev()
        .first()
        .map(|(k, s)| (k.to_owned(), s.expose().to_owned()))
        .expect("dev key");
    let guest = mint(&key, &secret, "club", "guest", false, false);
    assert_eq!(
        refusal(&s, "club", &guest).await,
        ("room-not-found".to_owned(), 4008),
        "without roomCreate a room that does not exist is not opened"
    );
    let (mut host, _) = roomlet_tests::server::joined(&s, Wire::Json, "club", "host").await;
    let mut g = Client::connect(&s.ws_url(), Wire::Json).await;
    g.join("club", &guest).await;
    assert_eq!(
        host.frame_of("peer-joined").await["peer"]["identity"],
        "guest"
    );
}

// ---------------------------------------------------------------------------
// 3. TURN REST credentials against a real coturn.
// ---------------------------------------------------------------------------

/// How long coturn may take to answer its first STUN request.
const COTURN_START: Duration = Duration::from_secs(15);
/// How long one `turnutils_uclient` run may take.
const UCLIENT_RUN: Duration = Duration::from_secs(60);

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// A loopback port free for both UDP and TCP right now.
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("udp addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// A `turnserver` on loopback with REST credentials; killed on drop.
struct Coturn {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Coturn {
    fn spawn(secret: &str) -> Coturn {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let path = |name: &str| dir.path().join(name);
        // An empty config file, so /etc/turnserver.conf plays no part.
        std::fs::write(path("turnserver.conf"), "").expect("config");
        let log = path("turnserver.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let arg = |flag: &str, p: &Path| format!("{flag}={}", p.display());
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(path("turnserver.conf"))
            .args([
                "--use-auth-secret".to_owned(),
                format!("--static-auth-secret={secret}"),
                "--listening-ip=127.0.0.1".to_owned(),
                "--relay-ip=127.0.0.1".to_owned(),
                format!("--listening-port={port}"),
                "--no-tls".to_owned(),
                "--no-dtls".to_owned(),
                "--allow-loopback-peers".to_owned(),
                "--realm=roomlet".to_owned(),
                "--no-cli".to_owned(),
                "--log-file=stdout".to_owned(),
                arg("--pidfile", &path("turnserver.pid")),
                arg("--userdb", &path("turndb")),
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("turnserver starts");
        Coturn {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until coturn answers a STUN Binding request on its UDP port.
    async fn wait_ready(&mut self) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        sock.connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        let mut request = [0u8; 20];
        request[..2].copy_from_slice(&[0x00, 0x01]); // Binding request
        request[4..8].copy_from_slice(&0x2112_A442_u32.to_be_bytes()); // magic cookie
        request[8..].copy_from_slice(b"roomlet-test");
        let deadline = Instant::now() + COTURN_START;
        let mut buf = [0u8; 512];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("turnserver exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "turnserver did not answer STUN within {COTURN_START:?}:\n{}",
                self.log()
            );
            // Refused (ICMP) before it listens: just ask again.
            if sock.send(&request).await.is_ok()
                && let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(100), sock.recv(&mut buf)).await
                && n >= 20
                && buf[..2] == [0x01, 0x01]
                && buf[8..20] == request[8..]
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `turnutils_uclient` (two clients relaying to each other through
/// coturn, `-y`) with `user`/`pass`; exit success and its output.
async fn uclient(port: u16, user: &str, pass: &str) -> (bool, String) {
    let run = tokio::process::Command::new("turnutils_uclient")
        .args(["-u", user, "-w", pass, "-p", &port.to_string()])
        .args(["-y", "-n", "2", "-l", "64", "127.0.0.1"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(UCLIENT_RUN, run)
        .await
        .unwrap_or_else(|_| panic!("turnutils_uclient ran longer than {UCLIENT_RUN:?}"))
        .expect("turnutils_uclient runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Messages received through the relay, from uclient's last summary line.
fn relayed(output: &str) -> u64 {
    const FIELD: &str = "tot_recv_msgs=";
    output
        .rfind(FIELD)
        .and_then(|at| {
            output[at + FIELD.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn coturn_accepts_the_turn_credentials_in_joined() {
    if !on_path("turnserver") || !on_path("turnutils_uclient") {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "turnserver or turnutils_uclient is not on PATH: \
                 install Debian package coturn (apt-get install -y coturn)"
            );
        }
        println!("skipping: install Debian package coturn");
        return;
    }
    const SECRET: &str = "coturn-shared-secret-Vb7Kx2Nq9Dw4";
    let mut coturn = Coturn::spawn(SECRET);
    coturn.wait_ready().await;
    let port = coturn.port;

    let s = start_with(
        |c| {
            c.turn = Some(TurnSection {
                urls: vec![format!("turn:127.0.0.1:{port}?transport=udp")],
                ttl_seconds: 600,
            });
        },
        Secrets {
            turn: Some(Secret::new(SECRET)),
            ..Secrets::default()
        },
    )
    .await;
    let identity = "turn-tester";
    let mut c = Client::connect(&s.ws_url(), Wire::Json).await;
    let before = now_secs();
    let joined = c.join("turn", &dev_token("turn", identity)).await;
    let after = now_secs();
    let entry = turn_entry(&joined);
    assert_eq!(
        entry["urls"],
        json!([format!("turn:127.0.0.1:{port}?transport=udp")])
    );
    turn_expiry(&entry, identity, 600, before, after);
    let user = entry["username"].as_str().expect("username");
    let pass = entry["credential"].as_str().expect("credential");

    // The credential from `joined` allocates, and data flows both ways.
    let (ok, out) = uclient(port, user, pass).await;
    assert!(
        ok && !out.contains("Cannot complete Allocation") && relayed(&out) > 0,
        "coturn refused roomlet's credential:\n{out}\n--- turnserver log ---\n{}",
        coturn.log()
    );

    // A tampered, an expired and a wrongly keyed credential are refused.
    let mut tampered: Vec<char> = pass.chars().collect();
    tampered[0] = if tampered[0] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let expired = roomlet::gateway::turn::credential(
        &Secret::new(SECRET),
        identity,
        now_secs().saturating_sub(3600),
    );
    let foreign = roomlet::gateway::turn::credential(
        &Secret::new("not-the-secret"),
        identity,
        now_secs() + 600,
    );
    for (what, user, pass) in [
        ("tampered", user, tampered.as_str()),
        (
            "expired",
            expired.username.as_str(),
            expired.credential.as_str(),
        ),
        (
            "foreign",
            foreign.username.as_str(),
            foreign.credential.as_str(),
        ),
    ] {
        let (ok, out) = uclient(port, user, pass).await;
        assert!(
            (!ok || out.contains("Cannot complete Allocation")) && relayed(&out) == 0,
            "coturn accepted a {what} credential:\n{out}"
        );
    }
    drop(coturn);
}
