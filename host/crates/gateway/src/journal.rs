//! A node that is its whole deployment keeps a record of every joined
//! session on disk, written before the client is told `joined` and removed
//! when the session ends for good: after the process is killed outright,
//! the next one on the same data directory gives each session back its
//! peer id, and its `joined` says `gap: true` (frames the dead process had
//! not delivered are lost). The store is the host's ([`SessionJournal`]).

use crate::BoxFuture;
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

/// One session: enough to take a `resume` and replay what was not acked.
#[derive(Debug, Serialize, Deserialize)]
pub struct SessionImage {
    /// SHA-256 of its resume token (the token is the client's secret).
    pub key: [u8; 32],
    /// Its peer id (the room image holds the peer).
    pub peer_id: String,
    /// Its room.
    pub room: String,
    /// Whether it speaks MessagePack (its frames are kept encoded).
    pub msgpack: bool,
    /// The next stream seq.
    pub next_seq: u64,
    /// Frames before this seq were dropped from the resume buffer.
    pub trimmed_before: u64,
    /// Its access token's expiry (Unix ms).
    pub expires_at_ms: u64,
    /// Re-created from a journal record: no stream to replay (`gap`).
    #[serde(default)]
    pub gap: bool,
    /// The highest client frame id its session took (0: none, or a
    /// session recorded before frame ids).
    #[serde(default)]
    pub last_id: roomlet_protocol::FrameId,
    /// Sent (or due) and not acknowledged, oldest first.
    pub unacked: Vec<FrameImage>,
}

/// One numbered frame, as it went out.
#[derive(Debug, Serialize, Deserialize)]
pub struct FrameImage {
    /// Its seq.
    pub seq: u64,
    /// Its type's index, for the frames-out metric when replayed.
    pub kind: u8,
    /// A binary WebSocket message (MessagePack) rather than text.
    pub binary: bool,
    /// The encoded frame.
    pub bytes: Vec<u8>,
}

impl SessionImage {
    /// A session re-created from its record, the process that held its
    /// stream gone: it resumes with `gap`.
    pub fn recorded(key: [u8; 32], r: &SessionRecord) -> Self {
        SessionImage {
            key,
            peer_id: r.peer.id.clone(),
            room: r.room.clone(),
            msgpack: r.msgpack,
            next_seq: 1,
            trimmed_before: 1,
            expires_at_ms: r.expires_at_ms,
            gap: true,
            // Forgotten with the process: receivers drop the copies.
            last_id: 0,
            unacked: Vec::new(),
        }
    }
}
