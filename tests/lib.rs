//! Shared helpers for roomlet's integration tests: a runtime on a temp
//! data directory, peers with channel outboxes, tokens, and waiting for a
//! condition with a deadline (never a bare sleep).

use roomlet::components::bindings::types::{Grants, Peer};
use roomlet::components::engine::{self, EngineSettings};
use roomlet::components::{ComponentSource, FunctionSpec, Limits, Loader, RoomsFunction};
use roomlet::kv::{KvLimits, KvStore};
use roomlet::rooms::{Delivery, Rooms, RoomsConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long any test waits for something that should happen.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The hostile fixture component (see tests/fixtures/hostile).
pub fn hostile() -> ComponentSource {
    ComponentSource::File(PathBuf::from(env!("ROOMLET_FIXTURE_HOSTILE")))
}

/// An engine and loader sized for tests, with artifacts cached in `dir`.
pub fn loader(dir: &std::path::Path) -> Loader {
    let engine = engine::build(EngineSettings {
        max_instances: 200,
        max_memory: 64 << 20,
    })
    .expect("engine");
    Loader::new(engine, Some(dir.join("cache")))
}

/// A temp data dir with its kv store.
pub struct TestNode {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The loader.
    pub loader: Loader,
    /// The rooms' kv.
    pub kv: Arc<KvStore>,
}

impl TestNode {
    /// A fresh data directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let loader = loader(dir.path());
        let kv =
            Arc::new(KvStore::open(&dir.path().join("kv.redb"), KvLimits::default()).expect("kv"));
        Self { dir, loader, kv }
    }

    /// Loads a rooms component.
    pub fn rooms_function(
        &self,
        source: ComponentSource,
        config: &[(&str, &str)],
        limits: Limits,
    ) -> Arc<RoomsFunction> {
        let spec = FunctionSpec {
            source,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            limits,
        };
        Arc::new(
            self.loader
                .rooms(&spec, self.kv.clone())
                .expect("rooms component loads"),
        )
    }

    /// A room table running `function`.
    pub fn rooms(&self, function: Arc<RoomsFunction>, config: RoomsConfig) -> Rooms {
        Rooms::new(function, config)
    }
}

impl Default for TestNode {
    fn default() -> Self {
        Self::new()
    }
}

/// Tight limits so hostile tests finish fast.
pub fn test_limits() -> Limits {
    Limits {
        memory_cap: 16 << 20,
        deadline: Duration::from_millis(200),
    }
}

/// A peer with every grant but `hidden`.
pub fn peer(id: &str) -> Peer {
    Peer {
        id: id.into(),
        identity: format!("user-{id}"),
        name: id.to_uppercase(),
        metadata: String::new(),
        grants: Grants::JOIN
            | Grants::ROOM_CREATE
            | Grants::PUBLISH
            | Grants::SUBSCRIBE
            | Grants::PUBLISH_DATA,
    }
}

/// A peer's receiving end.
pub struct Inbox(pub mpsc::UnboundedReceiver<Delivery>);

/// A fresh outbox/inbox pair.
pub fn outbox() -> (mpsc::UnboundedSender<Delivery>, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Inbox(rx))
}

impl Inbox {
    /// The next delivery, or a panic after [`DEADLINE`].
    pub async fn next(&mut self) -> Delivery {
        tokio::time::timeout(DEADLINE, self.0.recv())
            .await
            .expect("a delivery within the deadline")
            .expect("outbox open")
    }

    /// The next `Message` delivery's data, skipping presence events.
    pub async fn next_message(&mut self) -> String {
        loop {
            match self.next().await {
                Delivery::Message { data, .. } => return data.to_string(),
                Delivery::PeerJoined(_) | Delivery::PeerLeft { .. } => continue,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The next delivery that is not a presence event.
    pub async fn next_non_presence(&mut self) -> Delivery {
        loop {
            match self.next().await {
                Delivery::PeerJoined(_) | Delivery::PeerLeft { .. } => continue,
                other => return other,
            }
        }
    }

    /// Whether nothing is waiting right now.
    pub fn is_empty(&mut self) -> bool {
        self.0.is_empty()
    }
}

/// Waits until `cond` holds, polling, or panics after [`DEADLINE`].
pub async fn wait_for<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Signs an HS256 JWT over `claims` with `secret`, independently of the
/// auth component's own code.
pub fn sign_jwt(header: &serde_json::Value, claims: &serde_json::Value, secret: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        b64.encode(mac.finalize().into_bytes())
    )
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
