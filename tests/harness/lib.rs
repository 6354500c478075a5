//! The shared harness of roomlet's integration tests: a runtime on a temp
//! data directory, peers with channel outboxes, waiting for a condition
//! with a deadline (never a bare sleep), and one of each tool every test
//! file needs: the token minter ([`tokens`]), the HTTP client ([`http`]),
//! the process and nats-server launcher ([`process`]), and in-process
//! servers with real WebSocket clients ([`server`]).

pub mod agora;
pub mod http;
pub mod process;
pub mod raw;
pub mod server;
pub mod tokens;

pub use http::http;
pub use tokens::{now_secs, sign_jwt};

use roomlet::rooms::{Delivery, Outbox, Rooms, RoomsConfig};
use roomlet::runtime::bindings::types::{Grants, Peer};
use roomlet::runtime::engine::{self, EngineSettings};
use roomlet::runtime::kv::{KvLimits, KvStore};
use roomlet::runtime::{ComponentSource, FunctionSpec, Limits, Loader, RoomsFunction};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
pub struct Inbox(pub roomlet::rooms::Inbox);

/// A fresh outbox/inbox pair.
pub fn outbox() -> (Outbox, Inbox) {
    let (tx, rx) = roomlet::rooms::outbox();
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

/// Where a `roomlet serve` child process listens, public then internal,
/// as it prints them on stdout (which this takes); `None` if it exits or
/// says nothing for `within`.
pub fn listening(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<(std::net::SocketAddr, std::net::SocketAddr)> {
    use std::io::BufRead;
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut public = None;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.strip_prefix("roomlet is listening on http://") {
                public = addr.parse().ok();
            }
            if let Some(addr) = line.strip_prefix("internal listener on http://")
                && let (Some(p), Ok(i)) = (public.take(), addr.parse())
            {
                let _ = tx.send((p, i));
            }
        }
    });
    rx.recv_timeout(within).ok()
}
