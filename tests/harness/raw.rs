//! A WebSocket client that writes frames byte by byte: what a broken or
//! hostile client sends (unmasked frames, reserved bits, huge lengths,
//! half a frame), which no WebSocket library will.

use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Opcodes.
pub const CONTINUATION: u8 = 0x0;
/// A text frame.
pub const TEXT: u8 = 0x1;
/// A binary frame.
pub const BINARY: u8 = 0x2;
/// A close frame.
pub const CLOSE: u8 = 0x8;
/// A ping.
pub const PING: u8 = 0x9;

/// One frame as a client sends it: `rsv` is the three reserved bits
/// (0–7), `masked` whether the payload is masked (clients must).
pub fn frame(fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let mask_bit = u8::from(masked) << 7;
    let len = payload.len();
    if len < 126 {
        f.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        f.push(mask_bit | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(mask_bit | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// A masked, final frame: what a well-behaved client sends.
pub fn good(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, 0, opcode, true, payload)
}

/// A connection after its handshake.
pub struct Raw {
    /// The read side.
    pub reader: Reader,
    /// The write side.
    pub wr: OwnedWriteHalf,
}

/// The read side of a [`Raw`] connection: server frames.
pub struct Reader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
}

/// How a connection ended, as its reader saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    /// The close frame's code; 1006 when the connection ended without one
    /// (a reset or a bare EOF).
    pub code: u16,
    /// Its reason.
    pub reason: String,
    /// The data frames read before it, decoded.
    pub frames: Vec<Value>,
}

impl Raw {
    /// Connects and upgrades with `protocol`.
    pub async fn connect(addr: SocketAddr, protocol: &str) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (rd, mut wr) = stream.into_split();
        let head = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        );
        wr.write_all(head.as_bytes()).await.expect("handshake");
        let mut reader = Reader {
            rd,
            buf: Vec::new(),
        };
        loop {
            if let Some(end) = reader.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let response = String::from_utf8_lossy(&reader.buf[..end]).into_owned();
                assert!(
                    response.starts_with("HTTP/1.1 101"),
                    "upgrade refused: {response}"
                );
                reader.buf.drain(..end + 4);
                return Raw { reader, wr };
            }
            assert!(
                reader.fill().await,
                "the server closed during the handshake"
            );
        }
    }

    /// Connects and joins `room` as `identity` (JSON, or MessagePack when
    /// `msgpack`).
    pub async fn joined(addr: SocketAddr, msgpack: bool, room: &str, identity: &str) -> Raw {
        let protocol = if msgpack {
            "roomlet.v1.msgpack"
        } else {
            "roomlet.v1.json"
        };
        let mut raw = Raw::connect(addr, protocol).await;
        let join = serde_json::json!({
            "type": "join", "room": room, "token": crate::server::dev_token(room, identity)
        });
        let bytes = if msgpack {
            good(BINARY, &rmp_serde::to_vec_named(&join).expect("msgpack"))
        } else {
            good(TEXT, join.to_string().as_bytes())
        };
        raw.send(&bytes).await;
        let (op, payload) = raw.reader.read_frame().await.expect("joined");
        let joined = decode(op, &payload).expect("a data frame");
        assert_eq!(joined["type"], "joined", "{joined}");
        raw
    }

    /// Writes bytes as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("write");
    }
}

impl Reader {
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.rd.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn need(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            if !self.fill().await {
                return false;
            }
        }
        true
    }

    /// The next server frame (opcode, payload); `None` at EOF or a reset.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if !self.need(2).await {
            return None;
        }
        let op = self.buf[0] & 0x0f;
        let (len, at) = match self.buf[1] & 0x7f {
            126 => {
                if !self.need(4).await {
                    return None;
                }
                (
                    usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                    4,
                )
            }
            127 => {
                if !self.need(10).await {
                    return None;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (usize::from(n), 2),
        };
        if !self.need(at + len).await {
            return None;
        }
        let payload = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Some((op, payload))
    }

    /// Reads until the server's close frame (or the end without one).
    pub async fn ending(&mut self) -> Ending {
        let mut frames = Vec::new();
        while let Some((op, payload)) = self.read_frame().await {
            if op == CLOSE {
                let code = payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                return Ending {
                    code,
                    reason: reason.into_owned(),
                    frames,
                };
            }
            if let Some(v) = decode(op, &payload) {
                frames.push(v);
            }
        }
        Ending {
            code: 1006,
            reason: String::new(),
            frames,
        }
    }
}

/// A data frame's payload as JSON (text) or MessagePack (binary).
pub fn decode(op: u8, payload: &[u8]) -> Option<Value> {
    match op {
        TEXT => serde_json::from_slice(payload).ok(),
        BINARY => rmp_serde::from_slice(payload).ok(),
        _ => None,
    }
}
