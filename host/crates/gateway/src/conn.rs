//! The socket side of a session: reading client frames under the frame
//! limits, and writing server frames, numbered or not.

use crate::config::Keep;
use crate::guard::{MAX_BAD_STREAK, Rate, RateLimit};
use crate::metrics::GatewayMetrics;
use crate::resume::{PeerState, message};
use futures_util::{SinkExt, StreamExt};
use roomlet_protocol::codec::{self, DecodeError, Encoding};
use roomlet_protocol::{CloseCode, ErrorCode, ErrorText, Inbound, ServerFrame};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The longest close reason, in bytes (a close payload is the 2-byte code
/// and at most 123 bytes of reason).
const MAX_CLOSE_REASON: usize = 123;

/// How long, and how many bytes, a closing connection goes on reading
/// (a draining session's last frames are read for as long).
pub(crate) const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// A protocol violation's close reason.
fn violation(p: &tokio_tungstenite::tungstenite::error::ProtocolError) -> &'static str {
    use tokio_tungstenite::tungstenite::error::ProtocolError as P;
    match p {
        P::NonZeroReservedBits => "reserved bits set",
        P::UnmaskedFrameFromClient => "unmasked client frame",
        P::FragmentedControlFrame => "fragmented control frame",
        P::ControlFrameTooBig => "control frame over 125 bytes",
        P::UnknownControlFrameType(_) | P::UnknownDataFrameType(_) | P::InvalidOpcode(_) => {
            "reserved opcode"
        }
        P::UnexpectedContinueFrame => "continuation without a message",
        P::ExpectedFragment(_) => "new message inside a fragmented one",
        P::InvalidCloseSequence => "invalid close frame",
        _ => "protocol violation",
    }
}

/// A refusal that ends the connection (or not, when `close` is `None`).
pub(crate) struct Refusal {
    pub code: ErrorText,
    pub message: String,
    pub close: Option<CloseCode>,
    /// The client frame refused, when it had an id.
    pub id: roomlet_protocol::FrameId,
}

impl Refusal {
    pub fn new(
        code: impl Into<ErrorText>,
        message: impl Into<String>,
        close: Option<CloseCode>,
    ) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            close,
            id: 0,
        }
    }

    /// The same refusal, naming the client frame `id` it refuses.
    pub fn naming(self, id: roomlet_protocol::FrameId) -> Self {
        Self { id, ..self }
    }
}

/// What reading the socket gave.
pub(crate) enum Incoming {
    /// A client frame.
    Frame(Inbound),
    /// A frame refused before any logic, with its id when it had one
    /// (a rate-limited frame is named to its sender); the session goes on.
    Refused(DecodeError, roomlet_protocol::FrameId),
    /// The client broke a limit: answer `error`, then close.
    Close {
        code: CloseCode,
        error: ErrorCode,
        message: String,
    },
    /// The client broke the WebSocket protocol itself (RFC 6455): close
    /// with the RFC's code, no `error` frame.
    Violation(CloseCode, &'static str),
    /// The socket is gone.
    Gone,
}

impl Incoming {
    /// What a joined session answers: nothing for a frame or a lost
    /// socket, a refusal for the rest.
    pub fn refusal(self) -> Result<Inbound, Option<Refusal>> {
        match self {
            Incoming::Frame(f) => Ok(f),
            Incoming::Refused(e, id) => Err(Some(Refusal::new(e.code, e.message, None).naming(id))),
            Incoming::Close {
                code,
                error,
                message,
            } => Err(Some(Refusal::new(error, message, Some(code)))),
            Incoming::Violation(..) | Incoming::Gone => Err(None),
        }
    }
}

/// The socket side of a session.
pub(crate) struct Conn<S> {
    pub ws: WebSocketStream<S>,
    pub encoding: Encoding,
    pub rate: RateLimit,
    pub bad_streak: u32,
    pub last_heard: Instant,
    pub max_frame: usize,
    pub metrics: Arc<GatewayMetrics>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Sends a frame outside the numbered stream (no `seq`), flushed.
    pub async fn send(&mut self, frame: &ServerFrame) -> bool {
        self.metrics.sent(frame);
        self.ws
            .send(message(codec::encode(self.encoding, None, frame)))
            .await
            .is_ok()
    }

    /// Queues a frame outside the numbered stream (no `seq`).
    pub async fn feed(&mut self, frame: &ServerFrame) -> bool {
        self.metrics.sent(frame);
        self.ws
            .feed(message(codec::encode(self.encoding, None, frame)))
            .await
            .is_ok()
    }

    /// Numbers `frame` in the session's stream, remembers it for resume,
    /// and queues it (not flushed).
    pub async fn feed_numbered(
        &mut self,
        state: &mut PeerState,
        frame: &ServerFrame,
        keep: Keep,
    ) -> bool {
        self.metrics.sent(frame);
        let message = state.number(frame, keep);
        self.ws.feed(message).await.is_ok()
    }

    /// [`Conn::feed_numbered`], then flush.
    pub async fn send_numbered(
        &mut self,
        state: &mut PeerState,
        frame: &ServerFrame,
        keep: Keep,
    ) -> bool {
        self.feed_numbered(state, frame, keep).await && self.ws.flush().await.is_ok()
    }

    /// Sends a close frame. The reason is cut to 123 bytes on a character
    /// boundary: a close frame's payload is at most 125 bytes (RFC 6455
    /// §5.5), and a longer one (a module's rejection code can be 400
    /// bytes) would not be sent at all.
    pub async fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code: code.value().into(),
            reason: reason[..reason.floor_char_boundary(MAX_CLOSE_REASON)]
                .to_owned()
                .into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
    }

    /// `frame-too-large` and 1009: the answer to a frame or message over
    /// the cap, whether tungstenite or this session found it.
    fn too_large(&self) -> Incoming {
        Incoming::Close {
            code: CloseCode::TooLarge,
            error: ErrorCode::FrameTooLarge,
            message: format!("frames are limited to {} bytes", self.max_frame),
        }
    }

    /// What a read error means: a protocol violation gets its RFC 6455
    /// close code (§7.4.1), a message over the cap `frame-too-large` and
    /// 1009, whatever its size or fragments; the rest is a lost socket.
    fn broken(&self, e: WsError) -> Incoming {
        use tokio_tungstenite::tungstenite::error::ProtocolError as P;
        match e {
            WsError::Capacity(_) => self.too_large(),
            WsError::Io(e) if crate::budget::is_spent(&e) => Incoming::Close {
                code: CloseCode::TryLater,
                error: ErrorCode::NodeFull,
                message: "the node holds too many unfinished frames; try again".into(),
            },
            WsError::Utf8(_) => Incoming::Violation(CloseCode::InvalidData, "invalid UTF-8"),
            WsError::Protocol(P::ResetWithoutClosingHandshake | P::ReceivedAfterClosing) => {
                Incoming::Gone
            }
            WsError::Protocol(p) => Incoming::Violation(CloseCode::ProtocolError, violation(&p)),
            _ => Incoming::Gone,
        }
    }

    /// The end of a connection: flushes what is queued (tungstenite's
    /// answer to a client's close among it), half-closes, then reads and
    /// discards until the client closes too, for at most [`LINGER`] and
    /// [`LINGER_BYTES`]. Closing a socket with unread input sends a reset,
    /// which a client still writing reads before the close frame: it would
    /// see 1006 instead of the code it was sent.
    pub async fn linger(&mut self) {
        let _ = tokio::time::timeout(LINGER, async {
            let _ = self.ws.flush().await;
            let io = self.ws.get_mut();
            let _ = io.shutdown().await;
            let mut buf = vec![0u8; 16 * 1024];
            let mut read = 0;
            while read < LINGER_BYTES {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
        })
        .await;
    }

    /// The next client frame. Reads only; never cancelled mid-write.
    pub async fn recv(&mut self) -> Incoming {
        loop {
            let msg = match self.ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return self.broken(e),
                None => return Incoming::Gone,
            };
            let now = Instant::now();
            self.last_heard = now;
            // Borrowed: the frame is decoded straight from tungstenite's buffer.
            let (text, bytes): (Option<&str>, &[u8]) = match &msg {
                Message::Text(t) => (Some(t.as_str()), t.as_bytes()),
                Message::Binary(b) => (None, b),
                Message::Close(_) => return Incoming::Gone,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            // tungstenite refuses a larger one already when the socket
            // was made with the node's config; not every caller's is.
            if bytes.len() > self.max_frame {
                return self.too_large();
            }
            let rate = self.rate.check(now.into_std());
            if let Rate::Disconnect = rate {
                return Incoming::Close {
                    code: CloseCode::RateLimited,
                    error: ErrorCode::RateLimited,
                    message: "over the frame rate limit for too long".into(),
                };
            }
            let decoded = match text {
                Some(text) => codec::decode_text(self.encoding, text),
                None => codec::decode(self.encoding, false, bytes),
            };
            if let Rate::Refuse = rate {
                // Decoded only for its id: the refusal of a numbered frame
                // names it, so its sender knows it is final. Bounded: past
                // 3 s of this the connection closes.
                let e = DecodeError {
                    code: ErrorCode::RateLimited,
                    message: "too many frames per second; this one was dropped".into(),
                };
                return Incoming::Refused(e, decoded.map_or(0, |f| f.frame_id()));
            }
            return match decoded {
                Ok(f) => {
                    self.metrics.frames_in.inc(f.type_index());
                    self.bad_streak = 0;
                    Incoming::Frame(f)
                }
                Err(e) => {
                    self.bad_streak += 1;
                    if self.bad_streak >= MAX_BAD_STREAK {
                        Incoming::Close {
                            code: CloseCode::Protocol,
                            error: e.code,
                            message: format!(
                                "{MAX_BAD_STREAK} bad frames in a row; last: {}",
                                e.message
                            ),
                        }
                    } else {
                        Incoming::Refused(e, 0)
                    }
                }
            };
        }
    }
}

/// How a joined session ended.
pub(crate) enum End {
    /// For good: the peer left, was kicked, or the room closed.
    Over,
    /// The socket is gone; the session may be resumed.
    Dropped,
}
