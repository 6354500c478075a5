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
    crate::tokens::Token::new(room, identity)
        .admin(admin)
        .mint()
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

    /// The WebSocket itself, for a test that splits it.
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
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
