//! The two wire protocols the generator speaks: roomlet's `roomlet.v1.json`
//! (docs/protocol.md) and matchbox_server's JSON events (`IdAssigned`,
//! `NewPeer`, `Signal { receiver | sender, data }`, one room per URL path).
//!
//! Every timed frame carries `{"lt":<ns since the generator started>,
//! "lk":<kind>,"p":"<padding>"}` as its payload; both servers pass payloads
//! through untouched, so a receiver finds the stamp by scanning for `"lt":`
//! without parsing the whole frame.

use crate::target::{Kind, Server};
use anyhow::{Context, Result, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The generator's clock: nanoseconds since its first use. Sender and
/// receiver are in this one process, so stamps compare directly.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// What a timed frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// `signal` (a candidate) to one peer.
    Signal = 0,
    /// `message` to one peer.
    Direct = 1,
    /// `message` to the room (fan-out to every other peer).
    Broadcast = 2,
}

impl FrameKind {
    /// All, in `lk` order.
    pub const ALL: [FrameKind; 3] = [FrameKind::Signal, FrameKind::Direct, FrameKind::Broadcast];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Signal => "signal",
            FrameKind::Direct => "message",
            FrameKind::Broadcast => "broadcast",
        }
    }
}

/// One WebSocket halves.
pub type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;
/// See [`Sink`].
pub type Stream = SplitStream<WebSocketStream<TcpStream>>;

/// A joined client.
pub struct Conn {
    /// Its peer id as the server named it.
    pub id: String,
    /// Writing half.
    pub sink: Sink,
    /// Reading half.
    pub stream: Stream,
}

/// A dev-key token (roomlet's `--dev` key pair) with every grant a
/// publishing peer needs, minted here rather than over `/v1/dev/token`.
fn token(room: &str, identity: &str) -> String {
    roomlet_tests::tokens::Token::new(room, identity)
        .name(None)
        .ttl(Duration::from_secs(3600))
        .mint()
}

/// Connects from `source` (an address on loopback, so 50,000 sockets do
/// not run out of ports on one address pair) and joins `room`.
pub async fn join(
    server: &Server,
    room: &str,
    identity: &str,
    source: Option<IpAddr>,
) -> Result<Conn> {
    let url = match server.kind {
        Kind::Roomlet => format!("ws://{}/v1/ws", server.public),
        Kind::Matchbox => format!("ws://{}/{room}", server.public),
    };
    let mut req = url.into_client_request()?;
    if server.kind == Kind::Roomlet {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("roomlet.v1.json"),
        );
    }
    let tcp = connect_from(server.public, source).await?;
    tcp.set_nodelay(true)?;
    // A small read buffer: tungstenite zero-fills all of it on every read.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(config))
        .await
        .context("websocket handshake")?;
    let (mut sink, mut stream) = ws.split();
    if server.kind == Kind::Roomlet {
        let join =
            serde_json::json!({"type": "join", "room": room, "token": token(room, identity)});
        sink.send(Message::text(join.to_string())).await?;
    }
    let deadline = Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout(deadline, stream.next())
            .await
            .context("no answer to join within 30 s")?;
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(c))) => bail!("closed while joining: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("joining: {e}"),
            None => bail!("closed while joining"),
        };
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let id = match server.kind {
            Kind::Roomlet => match v["type"].as_str() {
                Some("joined") => v["peerId"].as_str().map(str::to_string),
                Some("error") => bail!("join refused: {}", v["code"]),
                _ => None,
            },
            Kind::Matchbox => v["IdAssigned"].as_str().map(str::to_string),
        };
        if let Some(id) = id {
            return Ok(Conn { id, sink, stream });
        }
    }
}

async fn connect_from(server: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    Ok(socket.connect(server).await?)
}

/// The text of one timed frame from a peer to `to` (ignored for broadcast).
///
/// `lt` is when the frame was built; `ld`, at a fixed rate, when the
/// schedule said it was due (the two differ by the sending thread's own
/// lateness, which a latency measured from `lt` leaves out).
pub fn frame(kind: Kind, what: FrameKind, to: &str, pad: &str, due: Option<u64>) -> String {
    let due = due.map_or(String::new(), |d| format!(r#""ld":{d},"#));
    let body = format!(
        r#"{{"lt":{},{due}"lk":{},"p":"{pad}"}}"#,
        now_ns(),
        what as u8
    );
    match (kind, what) {
        (Kind::Roomlet, FrameKind::Signal) => {
            format!(r#"{{"type":"signal","to":"{to}","kind":"candidate","payload":{body}}}"#)
        }
        (Kind::Roomlet, FrameKind::Direct) => {
            format!(r#"{{"type":"message","to":"{to}","data":{body}}}"#)
        }
        (Kind::Roomlet, FrameKind::Broadcast) => format!(r#"{{"type":"message","data":{body}}}"#),
        (Kind::Matchbox, _) => format!(r#"{{"Signal":{{"receiver":"{to}","data":{body}}}}}"#),
    }
}

/// roomlet's `ack`.
pub fn ack(seq: u64) -> String {
    format!(r#"{{"type":"ack","seq":{seq}}}"#)
}

/// The unsigned integer after `key` in `text`, if any.
pub fn scan(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    text[at..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(None, |acc: Option<u64>, d| {
            Some(acc.unwrap_or(0) * 10 + u64::from(d - b'0'))
        })
}

/// The `code` of a roomlet `error` frame.
pub fn error_code(text: &str) -> Option<String> {
    if !text.contains(r#""type":"error""#) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(v["code"].as_str().unwrap_or("?").to_string())
}
