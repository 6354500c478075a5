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
    /// Time allowed between connecting and sending `join`.
    pub join_timeout_ms: u64,
    /// Time allowed for an HTTP request's head (the WebSocket upgrade
    /// request included), and for the next one on an idle keep-alive
    /// connection: a client that trickles or stalls is closed, so it
    /// cannot hold a file descriptor for good.
    pub request_head_timeout_ms: u64,
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
            join_timeout_ms: 10_000,
            request_head_timeout_ms: 10_000,
        }
    }
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
