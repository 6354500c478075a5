//! A node that is its whole deployment keeps a record of every joined
//! session on disk, written before the client is told `joined` and removed
//! when the session ends for good: after the process is killed outright,
//! the next one on the same data directory gives each session back its
//! peer id, and its `joined` says `gap: true` (frames the dead process had
//! not delivered are lost). The store is the host's ([`SessionJournal`]).

use crate::topology::BoxFuture;
use roomlet_rooms::MemberImage;
use serde::{Deserialize, Serialize};

/// A session's key: the SHA-256 of its resume token (the token itself is
/// the client's credential and is kept nowhere).
pub type SessionKey = [u8; 32];

/// What a session's record holds: enough to re-create it, nothing of its
/// stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The peer as the room knows it.
    pub peer: MemberImage,
    /// Its room.
    pub room: String,
    /// Whether it speaks MessagePack.
    pub msgpack: bool,
    /// Its access token's expiry (Unix ms).
    pub expires_at_ms: u64,
}

/// Where session records are kept.
pub trait SessionJournal: Send + Sync + 'static {
    /// Records a joined session under `key` (its resume token's hash);
    /// resolves once the record is durable (`Err` says why it is not).
    fn joined(&self, key: SessionKey, record: SessionRecord) -> BoxFuture<'_, Result<(), String>>;

    /// The session under `key` has ended for good (no need to wait).
    fn ended(&self, key: SessionKey);
}
