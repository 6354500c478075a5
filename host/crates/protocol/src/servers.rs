//! What `joined` tells a client about the servers around it: ICE servers
//! for its peer connections, nearby regions to reconnect to, and the media
//! plane's credentials. Operators write the first two in the node's
//! configuration.

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

/// One media provider's credential for one peer (an SFU's join token).
/// It is a bearer credential: it goes to its peer and nowhere else (and,
/// in split mode, from the auth node that issued it to the peer's
/// gateway).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MediaCredential {
    /// Where to connect (LiveKit's server URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The provider's application id (Agora).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The channel or room at the provider.
    pub channel: String,
    /// The peer's account or identity at the provider.
    pub account: String,
    /// The token.
    pub token: String,
    /// When it stops admitting the peer (Unix ms).
    pub expires_at: u64,
}

impl std::fmt::Debug for MediaCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaCredential")
            .field("url", &self.url)
            .field("channel", &self.channel)
            .field("account", &self.account)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Media credentials by provider name (`agora`, `livekit`, or a custom
/// auth plugin's own).
pub type Media = std::collections::BTreeMap<String, MediaCredential>;
