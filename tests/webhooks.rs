//! Webhooks against a real local HTTP receiver: signed (an HS256 JWT
//! whose `sha256` claim covers the body), in order, retried until a
//! receiver that was down comes back, and never slowing signaling.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use roomlet::config::Config;
use roomlet::runtime::secrets::ApiKeys;
use roomlet::webhooks::WebhookStats;
use roomlet_tests::server::{Client, TestServer, Wire, joined, start};
use roomlet_tests::{DEADLINE, wait_for};
use serde_json::{Value, json};
use sha2::Digest as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One request the receiver got.
struct Hook {
    authorization: String,
    content_type: String,
    raw: Vec<u8>,
    body: Value,
}

/// Reads one HTTP/1.1 request (headers, then Content-Length bytes).
async fn read_request(s: &mut TcpStream) -> Option<(Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((headers, body))
}

/// A receiver on `listener`: answers 200 to every POST and hands it over.
fn receiver(listener: TcpListener) -> mpsc::UnboundedReceiver<Hook> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Some((headers, raw)) = read_request(&mut s).await else {
                    return;
                };
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                // Recorded before the answer: the sender posts the next
                // notification only after this one is answered, so the
                // channel's order is the delivery order.
                let body = serde_json::from_slice(&raw).expect("a JSON body");
                let _ = tx.send(Hook {
                    authorization: header("authorization"),
                    content_type: header("content-type"),
                    raw,
                    body,
                });
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    rx
}

/// A receiver that accepts connections and never answers.
fn black_hole(listener: TcpListener) {
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
}

async fn server(url: String, tweak: impl FnOnce(&mut Config)) -> TestServer {
    start(|c| {
        c.webhooks.urls = vec![url];
        c.webhooks.initial_backoff_ms = 20;
        c.webhooks.max_backoff_ms = 200;
        // An empty room closes soon after its last peer leaves.
        c.rooms.hibernate_after_ms = 100;
        tweak(c);
    })
    .await
}

fn stats(s: &TestServer) -> WebhookStats {
    s.running
        .webhooks
        .as_ref()
        .expect("webhooks configured")
        .stats()
}

/// The next notification, checked: content type, signature, body hash.
async fn next_hook(rx: &mut mpsc::UnboundedReceiver<Hook>) -> Value {
    let hook = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("a webhook within the deadline")
        .expect("receiver running");
    assert_eq!(hook.content_type, "application/webhook+json");
    let keys = ApiKeys::dev();
    let (key, secret) = keys.first().expect("dev key");
    let token = hook.authorization.trim_start_matches("Bearer ");
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.expose().as_bytes()),
        &Validation::new(Algorithm::HS256),
    )
    .unwrap_or_else(|e| panic!("the webhook JWT verifies with the API secret: {e}"))
    .claims;
    assert_eq!(claims["iss"], key, "iss is the API key");
    let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&hook.raw));
    assert_eq!(
        claims["sha256"],
        digest.as_str(),
        "sha256 claim covers the body"
    );
    assert!(
        jsonwebtoken::decode::<Value>(
            token,
            &DecodingKey::from_secret(b"some other secret"),
            &Validation::new(Algorithm::HS256),
        )
        .is_err(),
        "another secret does not verify it"
    );
    assert!(
        hook.body["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("WH_"))
    );
    assert!(
        hook.body["createdAt"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000)
    );
    hook.body
}

/// (event, participant identity or "", reason or "") of a notification.
fn summary(b: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&b["event"]),
        s(&b["participant"]["identity"]),
        s(&b["reason"]),
    )
}

fn expect(event: &str, identity: &str, reason: &str) -> (String, String, String) {
    (event.into(), identity.into(), reason.into())
}

/// Two peers join and leave; the room closes when empty.
async fn join_leave_close(s: &TestServer, room: &str) -> (String, String) {
    let (mut alice, ja) = joined(s, Wire::Json, room, "alice").await;
    let (mut bob, jb) = joined(s, Wire::Json, room, "bob").await;
    let _ = alice.frame_of("peer-joined").await;
    bob.send(json!({"type": "leave"})).await;
    let left = alice.frame_of("peer-left").await;
    assert_eq!(left["peerId"], jb["peerId"]);
    alice.send(json!({"type": "leave"})).await;
    let _ = alice.closed().await;
    let _ = bob.closed().await;
    (
        ja["peerId"].as_str().expect("id").to_owned(),
        jb["peerId"].as_str().expect("id").to_owned(),
    )
}

fn expected_sequence() -> Vec<(String, String, String)> {
    vec![
        expect("room_started", "", ""),
        expect("participant_joined", "alice", ""),
        expect("participant_joined", "bob", ""),
        expect("participant_left", "bob", "leave"),
        expect("participant_left", "alice", "leave"),
        expect("room_finished", "", "empty"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_notifications_arrive_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "http://{}/hooks/roomlet?source=test",
        listener.local_addr().expect("addr")
    );
    let mut rx = receiver(listener);
    let s = server(url, |_| {}).await;
    let (alice_id, bob_id) = join_leave_close(&s, "hooked").await;
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(next_hook(&mut rx).await);
    }
    assert_eq!(
        got.iter().map(summary).collect::<Vec<_>>(),
        expected_sequence()
    );
    for b in &got {
        assert_eq!(b["room"]["name"], "hooked");
        assert_eq!(b["region"], "local");
    }
    assert_eq!(got[1]["participant"]["sid"], alice_id.as_str());
    assert_eq!(got[2]["participant"]["sid"], bob_id.as_str());
    let mut ids: Vec<&str> = got.iter().filter_map(|b| b["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every notification has its own id");
    wait_for("the delivered count", || stats(&s).delivered == 6).await;
    assert_eq!(stats(&s).failed + stats(&s).dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_was_down_gets_everything_after_retries() {
    // Reserve a port, then free it: connections are refused until the
    // receiver binds it again.
    let addr: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let s = server(format!("http://{addr}/"), |c| {
        c.webhooks.max_attempts = 1000;
    })
    .await;
    let started = Instant::now();
    join_leave_close(&s, "outage").await;
    let signaling = started.elapsed();
    assert!(
        signaling < Duration::from_secs(3),
        "signaling is not held up by the receiver being down: {signaling:?}"
    );
    wait_for("failed attempts to be retried", || stats(&s).retries >= 3).await;
    assert_eq!(stats(&s).delivered, 0);
    let mut rx = receiver(TcpListener::bind(addr).await.expect("rebind the same port"));
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(summary(&next_hook(&mut rx).await));
    }
    assert_eq!(got, expected_sequence(), "nothing lost, order kept");
    wait_for("the delivered count", || stats(&s).delivered == 6).await;
    assert_eq!(stats(&s).failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_receiver_never_slows_joins_and_overflow_is_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    black_hole(listener);
    let s = server(url, |c| {
        c.webhooks.queue = 2;
        c.webhooks.timeout_ms = 60_000;
    })
    .await;
    let mut clients: Vec<Client> = Vec::new();
    let started = Instant::now();
    for i in 0..30 {
        let t = Instant::now();
        let (c, _) = joined(&s, Wire::Json, "busy", &format!("user-{i}")).await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "join {i} took {:?} with the receiver hanging",
            t.elapsed()
        );
        clients.push(c);
    }
    eprintln!(
        "30 joins with a hanging webhook receiver: {:?}",
        started.elapsed()
    );
    // One notification is stuck in flight, two wait: the rest are dropped.
    wait_for("dropped notifications", || stats(&s).dropped >= 25).await;
    assert_eq!(stats(&s).delivered, 0);
    let (status, text) =
        roomlet_tests::http(s.running.internal_addr, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    let dropped: f64 = text
        .lines()
        .find(|l| l.starts_with("roomlet_webhooks_total{") && l.contains("result=\"dropped\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("roomlet_webhooks_total{result=\"dropped\"} is served");
    assert!(dropped >= 25.0, "dropped counter: {dropped}");
}

#[tokio::test]
async fn unusable_webhook_settings_are_refused_at_start() {
    for (url, api_key, needle) in [
        ("https://example.com/hook", None, "TLS-terminating proxy"),
        ("http://user:pw@example.com/hook", None, "credentials"),
        ("http://127.0.0.1:9/", Some("nokey"), "webhooks.api_key"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = roomlet_tests::server::test_config(dir.path());
        config.webhooks.urls = vec![url.into()];
        config.webhooks.api_key = api_key.map(str::to_owned);
        let err = match roomlet::server::start(config, Default::default()).await {
            Ok(_) => panic!("{url} must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{url}: {err}");
        assert!(
            !err.contains("pw@"),
            "the URL's credentials are not echoed: {err}"
        );
    }
}
