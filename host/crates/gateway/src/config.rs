//! `[limits]` and `[turn]`: this crate's sections of the node's
//! configuration.

use serde::Deserialize;

/// `[limits]`: what one client may do.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest client frame, in bytes.
    pub max_frame_bytes: usize,
    /// Sustained frames per second per connection.
    pub frames_per_second: u32,
    /// Burst above the sustained rate.
    pub frame_burst: u32,
    /// Most WebSocket connections on this node.
    pub max_connections: usize,
    /// Server ping interval.
    pub ping_interval_ms: u64,
    /// A connection silent this long is closed (4005).
    pub idle_timeout_ms: u64,
    /// How long a dropped session may be resumed.
    pub resume_grace_ms: u64,
    /// Unacknowledged frames kept per session for resume.
    pub resume_buffer: usize,
    /// Bytes of unacknowledged frames kept per session for resume: a
    /// client that reads but never acks stays connected, and the oldest
    /// frames go first (a resume from before them fails).
    pub resume_buffer_bytes: usize,
    /// Bytes queued for one session that its socket has not taken yet (a
    /// client that stops reading, or a dropped session in its grace).
    /// Past it the session is cut: `too-slow` and 4011, and a resume says
    /// `gap: true`.
    pub inbox_bytes: usize,
    /// Bytes of client frames not yet complete, on the whole node: past
    /// it, the connection whose read would pass it is closed (`node-full`,
    /// 1013). Each connection holds at most `max_frame_bytes` of them.
    pub unfinished_frame_bytes: usize,
    /// Time allowed between connecting and sending `join`.
    pub join_timeout_ms: u64,
    /// Time allowed for an HTTP request's head (the WebSocket upgrade
    /// request included), and for the next one on an idle keep-alive
    /// connection: a client that trickles or stalls is closed, so it
    /// cannot hold a file descriptor for good.
    pub request_head_timeout_ms: u64,
    /// Most connections not yet upgraded to a WebSocket (a request head
    /// on its way, an HTTP keep-alive, a handshake): when a new one comes
    /// and they are this many, the oldest is closed to admit it, so
    /// clients that stall or idle cannot lock real ones out. At least 1.
    pub max_pending_connections: usize,
    /// Most open connections from one IP address (0: no cap, the
    /// default; behind an ingress or a load balancer every client has its
    /// address). The one over is refused with HTTP 503.
    pub max_connections_per_source: usize,
    /// File descriptors the public listener leaves to the rest of the
    /// node (data files, NATS reconnects, webhooks, the internal
    /// listener's 32 connections): its sockets stop at the open-file soft
    /// limit less the descriptors open at start and these.
    pub reserved_fds: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            frames_per_second: 100,
            frame_burst: 200,
            max_connections: 60_000,
            ping_interval_ms: 15_000,
            idle_timeout_ms: 45_000,
            resume_grace_ms: 30_000,
            resume_buffer: 1024,
            resume_buffer_bytes: 1024 * 1024,
            inbox_bytes: 4 * 1024 * 1024,
            unfinished_frame_bytes: 128 * 1024 * 1024,
            join_timeout_ms: 10_000,
            request_head_timeout_ms: 10_000,
            max_pending_connections: 4096,
            max_connections_per_source: 0,
            reserved_fds: 128,
        }
    }
}

impl LimitsSection {
    /// What a session's resume buffer keeps.
    pub fn keep(&self) -> Keep {
        Keep {
            frames: self.resume_buffer,
            bytes: self.resume_buffer_bytes,
        }
    }
}

/// The bounds of a session's resume buffer: the newest frame is always
/// kept, then older ones while both hold.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// At most this many frames.
    pub frames: usize,
    /// At most this many encoded bytes.
    pub bytes: usize,
}

/// `[turn]`: a TURN server using coturn's REST scheme; the shared secret
/// comes from `ROOMLET_TURN_SECRET` (or `_FILE`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TurnSection {
    /// `turn:` URLs.
    pub urls: Vec<String>,
    /// Credential lifetime in seconds.
    #[serde(default = "default_turn_ttl")]
    pub ttl_seconds: u64,
}

fn default_turn_ttl() -> u64 {
    3600
}
