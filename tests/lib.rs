//! Shared helpers for roomlet's integration tests: a runtime on a temp
//! data directory, peers with channel outboxes, tokens, and waiting for a
//! condition with a deadline (never a bare sleep).

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

pub mod server {
    //! A real server in-process on loopback port 0, and a real WebSocket
    //! client speaking either encoding.

    use super::DEADLINE;
    use futures_util::{SinkExt, StreamExt};
    use roomlet::config::Config;
    use roomlet::server::{Running, Secrets};
    use serde_json::Value;
    use std::net::SocketAddr;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;

    /// The ids of the peers a `joined` frame lists, sorted.
    pub fn peer_ids(joined: &Value) -> Vec<&str> {
        let mut ids: Vec<&str> = joined["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .filter_map(|p| p["id"].as_str())
            .collect();
        ids.sort_unstable();
        ids
    }
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    /// A started server and its data directory.
    pub struct TestServer {
        /// The node.
        pub running: Running,
        /// Its data directory (removed on drop).
        pub dir: tempfile::TempDir,
    }

    impl TestServer {
        /// The public address.
        pub fn addr(&self) -> SocketAddr {
            self.running.public_addr
        }

        /// `ws://…/v1/ws`.
        pub fn ws_url(&self) -> String {
            format!("ws://{}/v1/ws", self.addr())
        }
    }

    /// A config for tests: loopback, port 0, a temp data dir, dev mode.
    pub fn test_config(dir: &std::path::Path) -> Config {
        let mut c = Config::default();
        c.server.listen = "127.0.0.1:0".parse().expect("addr");
        c.server.internal_listen = "127.0.0.1:0".parse().expect("addr");
        c.server.data_dir = dir.to_path_buf();
        c.server.dev = true;
        c.rooms.hibernate_after_ms = 0;
        c
    }

    /// Starts a dev-mode server; `tweak` adjusts the config first.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
        start_with(tweak, Secrets::default()).await
    }

    /// Starts a server with the given secrets.
    pub async fn start_with(tweak: impl FnOnce(&mut Config), secrets: Secrets) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let running = roomlet::server::start(config, secrets)
            .await
            .expect("server starts");
        TestServer { running, dir }
    }

    /// A dev-key token for `room`/`identity` with every grant but admin.
    pub fn dev_token(room: &str, identity: &str) -> String {
        token(room, identity, false)
    }

    /// A dev-key token, with roomAdmin when `admin`.
    pub fn token(room: &str, identity: &str, admin: bool) -> String {
        let keys = roomlet::runtime::secrets::ApiKeys::dev();
        let (key, secret) = keys.first().expect("dev key");
        roomlet::tokens::mint(
            key,
            secret,
            &roomlet::tokens::TokenRequest {
                room: room.into(),
                identity: identity.into(),
                name: Some(identity.to_uppercase()),
                metadata: None,
                ttl: std::time::Duration::from_secs(600),
                admin,
                create: true,
            },
        )
    }

    /// The encodings a test can speak.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Wire {
        /// `roomlet.v1.json`.
        Json,
        /// `roomlet.v1.msgpack`.
        Msgpack,
    }

    impl Wire {
        /// Both, for tests that run once per encoding.
        pub const BOTH: [Wire; 2] = [Wire::Json, Wire::Msgpack];

        fn protocol(self) -> &'static str {
            match self {
                Wire::Json => "roomlet.v1.json",
                Wire::Msgpack => "roomlet.v1.msgpack",
            }
        }
    }

    /// What a client saw when waiting for a frame.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Got {
        /// A decoded frame.
        Frame(Value),
        /// The server closed with this code.
        Closed(u16),
    }

    /// A real WebSocket client.
    pub struct Client {
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        /// Its encoding.
        pub wire: Wire,
    }

    impl Client {
        /// Connects with `wire`'s subprotocol.
        pub async fn connect(url: &str, wire: Wire) -> Client {
            Self::try_connect(url, Some(wire.protocol()))
                .await
                .map(|ws| Client { ws, wire })
                .expect("websocket connects")
        }

        /// Connects offering `protocol` (None: offer none).
        pub async fn try_connect(
            url: &str,
            protocol: Option<&str>,
        ) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, tokio_tungstenite::tungstenite::Error>
        {
            let mut req = url.into_client_request()?;
            if let Some(p) = protocol {
                req.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_str(p).expect("header"),
                );
            }
            tokio_tungstenite::connect_async(req)
                .await
                .map(|(ws, _)| ws)
        }

        /// Sends a frame given as JSON, in this client's encoding.
        pub async fn send(&mut self, frame: Value) {
            let msg = match self.wire {
                Wire::Json => Message::text(frame.to_string()),
                Wire::Msgpack => Message::binary(rmp_serde::to_vec_named(&frame).expect("msgpack")),
            };
            self.ws.send(msg).await.expect("send");
        }

        /// Sends raw bytes as a text or binary frame.
        pub async fn send_raw(&mut self, text: bool, bytes: Vec<u8>) {
            let msg = if text {
                Message::text(String::from_utf8_lossy(&bytes).into_owned())
            } else {
                Message::binary(bytes)
            };
            let _ = self.ws.send(msg).await;
        }

        /// The next frame or close, within [`DEADLINE`].
        pub async fn next(&mut self) -> Got {
            loop {
                let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                    .await
                    .expect("a frame within the deadline");
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        return Got::Frame(serde_json::from_str(&t).expect("json frame"));
                    }
                    Some(Ok(Message::Binary(b))) => {
                        return Got::Frame(rmp_serde::from_slice(&b).expect("msgpack frame"));
                    }
                    Some(Ok(Message::Close(c))) => {
                        return Got::Closed(c.map(|c| u16::from(c.code)).unwrap_or(1005));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Got::Closed(1006),
                }
            }
        }

        /// The next frame; panics on close.
        pub async fn frame(&mut self) -> Value {
            match self.next().await {
                Got::Frame(v) => v,
                Got::Closed(c) => panic!("expected a frame, the server closed with {c}"),
            }
        }

        /// The next frame of type `ty`, skipping others (presence, etc.).
        pub async fn frame_of(&mut self, ty: &str) -> Value {
            loop {
                let f = self.frame().await;
                if f["type"] == ty {
                    return f;
                }
            }
        }

        /// Skips frames until the server closes; returns the close code.
        pub async fn closed(&mut self) -> u16 {
            loop {
                if let Got::Closed(c) = self.next().await {
                    return c;
                }
            }
        }

        /// Sends `join` and returns the `joined` frame.
        pub async fn join(&mut self, room: &str, token: &str) -> Value {
            self.send(serde_json::json!({"type": "join", "room": room, "token": token}))
                .await;
            let f = self.frame().await;
            assert_eq!(f["type"], "joined", "expected joined, got {f}");
            f
        }

        /// Drops the TCP connection without a close handshake.
        pub fn drop_connection(self) {
            drop(self.ws);
        }

        /// Closes politely.
        pub async fn close(mut self) {
            let _ = self.ws.close(None).await;
        }
    }

    /// Connects and joins `room` as `identity`.
    pub async fn joined(
        server: &TestServer,
        wire: Wire,
        room: &str,
        identity: &str,
    ) -> (Client, Value) {
        let mut c = Client::connect(&server.ws_url(), wire).await;
        let j = c.join(room, &dev_token(room, identity)).await;
        (c, j)
    }
}

/// A minimal HTTP/1.1 client for the admin API and metrics: one request
/// per connection. Returns (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(DEADLINE, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(body).await.expect("write body");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
