//! What `joined` tells a client about the servers around it: ICE servers
//! for its peer connections, and nearby regions to reconnect to. Operators
//! write the same shapes in the node's configuration.

use serde::{Deserialize, Serialize};

/// One ICE server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:` / `turn:` URLs.
    pub urls: Vec<String>,
    /// Static username (prefer `[turn]` with a shared secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Static credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A nearby region.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionLink {
    /// Region name.
    pub name: String,
    /// Its public WebSocket URL.
    pub url: String,
}
