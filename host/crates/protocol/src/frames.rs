//! Wire frames: what clients send and what the server sends back. One
//! schema for both encodings (JSON text, MessagePack binary); see
//! docs/protocol.md.

use crate::codes::ErrorText;
use crate::servers::{IceServer, Media, RegionLink};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// A client frame as decoded, before it is checked: every field optional,
/// so a missing field is reported by name instead of as a parse error.
/// `P` is the payload representation (raw JSON text or a parsed value).
/// The fields read only to pick a branch borrow from the frame's bytes
/// ([`Word`]): one allocation less each, on every frame.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireIn<'a, P> {
    #[serde(rename = "type", borrow)]
    pub frame_type: Option<Word<'a>>,
    pub room: Option<String>,
    pub token: Option<String>,
    pub resume_token: Option<String>,
    pub last_seq: Option<u64>,
    pub to: Option<String>,
    #[serde(borrow)]
    pub kind: Option<Word<'a>>,
    pub payload: Option<P>,
    pub data: Option<P>,
    pub ts: Option<f64>,
    pub seq: Option<u64>,
    pub peer: Option<String>,
    pub reason: Option<String>,
    pub metadata: Option<String>,
    pub rtt_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub packet_loss: Option<f64>,
    pub fps: Option<f64>,
    pub width: Option<f64>,
    pub height: Option<f64>,
    pub freeze_count: Option<f64>,
    pub concealed_samples: Option<f64>,
    pub id: Option<u64>,
}

/// A string field borrowed from the frame when it has no escapes. serde
/// borrows a bare `Cow<str>` field this way, but inside an `Option` it
/// always copies.
#[derive(Debug)]
pub(crate) struct Word<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Word<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
            // As `String` does: UTF-8 bytes are text (MessagePack `bin`).
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                std::str::from_utf8(v)
                    .map(|s| Cow::Owned(s.to_owned()))
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Bytes(v), &self))
            }
        }
        d.deserialize_str(Text).map(Word)
    }
}

/// Call-quality figures from a client's `getStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// Jitter, ms.
    pub jitter_ms: Option<f64>,
    /// Fraction of packets lost, 0..=1.
    pub packet_loss: Option<f64>,
    /// Received video frames per second.
    pub fps: Option<f64>,
    /// Received video width.
    pub width: Option<f64>,
    /// Received video height.
    pub height: Option<f64>,
    /// Video freezes so far.
    pub freeze_count: Option<f64>,
    /// Concealed audio samples so far.
    pub concealed_samples: Option<f64>,
}

/// A checked client frame. Payloads are JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Join a room.
    Join {
        /// Room name.
        room: String,
        /// Access token.
        token: String,
    },
    /// Take over a dropped session.
    Resume {
        /// From `joined`.
        resume_token: String,
        /// Highest stream seq received.
        last_seq: u64,
    },
    /// A WebRTC signal to one peer.
    Signal {
        /// Addressee.
        to: String,
        /// Offer, answer or candidate.
        kind: SignalKind,
        /// JSON text.
        payload: String,
        /// The client's frame id ([`FrameId`]).
        id: FrameId,
    },
    /// A room message.
    Message {
        /// Addressee, or the room.
        to: Option<String>,
        /// JSON text.
        data: String,
        /// The client's frame id ([`FrameId`]).
        id: FrameId,
    },
    /// Leave the room.
    Leave,
    /// Ping.
    Ping {
        /// Echoed in `pong`.
        ts: Option<f64>,
    },
    /// Highest stream seq seen.
    Ack {
        /// The seq.
        seq: u64,
    },
    /// Call-quality figures.
    Stats(Stats),
    /// Admin: remove a peer.
    Kick {
        /// Peer id.
        peer: String,
        /// Why.
        reason: String,
    },
    /// Admin: set room metadata.
    RoomMetadata {
        /// New metadata.
        metadata: String,
    },
    /// A new access token for the same identity and room, before the
    /// session's expires.
    Refresh {
        /// The token.
        token: String,
    },
    /// Fresh media-plane credentials, please.
    MediaToken,
}

/// A client's number for one of its `signal` and `message` frames, rising
/// within a session (1 up to `u32::MAX`; 0: the frame has none). The
/// server confirms ids cumulatively, names the id in a refusal, drops a
/// frame whose id is not above the last one (a re-send), and passes the id
/// on with the frame so receivers can drop a copy they already have.
///
/// 32 bits, not 64: it rides in every queued delivery, which stays five
/// words with it (`roomlet_rooms::Delivery`); at a hundred frames a second
/// a session would need more than a year to run out.
pub type FrameId = u32;

impl Inbound {
    /// Every client frame `type`, indexed by [`Inbound::type_index`].
    pub const TYPES: &[&str] = &[
        "join",
        "resume",
        "signal",
        "message",
        "leave",
        "ping",
        "ack",
        "stats",
        "kick",
        "room-metadata",
        "refresh",
        "media-token",
    ];

    /// The frame's place in [`Inbound::TYPES`] (metrics count by it).
    pub fn type_index(&self) -> usize {
        match self {
            Inbound::Join { .. } => 0,
            Inbound::Resume { .. } => 1,
            Inbound::Signal { .. } => 2,
            Inbound::Message { .. } => 3,
            Inbound::Leave => 4,
            Inbound::Ping { .. } => 5,
            Inbound::Ack { .. } => 6,
            Inbound::Stats(_) => 7,
            Inbound::Kick { .. } => 8,
            Inbound::RoomMetadata { .. } => 9,
            Inbound::Refresh { .. } => 10,
            Inbound::MediaToken => 11,
        }
    }

    /// The frame's `type`.
    pub fn type_name(&self) -> &'static str {
        Self::TYPES[self.type_index()]
    }

    /// The client's id for a `signal` or `message` (0: none, or another
    /// type).
    pub fn frame_id(&self) -> FrameId {
        match self {
            Inbound::Signal { id, .. } | Inbound::Message { id, .. } => *id,
            _ => 0,
        }
    }
}

/// A peer as clients see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WirePeer {
    /// Peer id.
    pub id: String,
    /// Identity.
    pub identity: String,
    /// Display name.
    pub name: String,
    /// Metadata.
    pub metadata: String,
}

/// What a `signal` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
    /// An ICE candidate.
    Candidate,
}

impl SignalKind {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::Offer => "offer",
            SignalKind::Answer => "answer",
            SignalKind::Candidate => "candidate",
        }
    }

    /// The kind named `name` on the wire.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "offer" => Some(SignalKind::Offer),
            "answer" => Some(SignalKind::Answer),
            "candidate" => Some(SignalKind::Candidate),
            _ => None,
        }
    }
}

/// A frame from the server.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum ServerFrame {
    /// You are in.
    Joined {
        /// Your peer id.
        peer_id: String,
        /// The room.
        room: String,
        /// Who is there.
        peers: Vec<WirePeer>,
        /// STUN/TURN servers.
        ice_servers: Vec<IceServer>,
        /// For `resume`.
        resume_token: String,
        /// This node's region.
        region: String,
        /// Nearby regions.
        regions: Vec<RegionLink>,
        /// Room metadata.
        metadata: String,
        /// Whether this answers a `resume`.
        resumed: bool,
        /// When the session's access token expires (Unix ms): a client
        /// sends `refresh` before then (a fresh join needs a valid token).
        expires_at: u64,
        /// On a resume after the process holding the session was killed:
        /// frames it had not delivered are lost, and the stream goes on
        /// after the client's `lastSeq`. Absent when false.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        gap: bool,
        /// Media-plane credentials, by provider. Absent when none is
        /// configured. Never kept in the resume buffer: a replayed
        /// `joined` goes without them (a `media-token` gets fresh ones).
        #[serde(skip_serializing_if = "Media::is_empty")]
        media: Media,
    },
    /// Someone joined.
    PeerJoined {
        /// Who.
        peer: WirePeer,
    },
    /// Someone left.
    PeerLeft {
        /// Who.
        peer_id: String,
        /// Why.
        reason: String,
    },
    /// A signal for you.
    Signal {
        /// Sender.
        from: Arc<str>,
        /// Offer, answer or candidate.
        kind: &'static str,
        /// JSON text, embedded as JSON. Owned: a signal goes to one peer.
        #[serde(serialize_with = "json_text")]
        payload: Box<str>,
        /// The sender's frame id (absent when it gave none).
        #[serde(skip_serializing_if = "no_id")]
        id: FrameId,
    },
    /// A message for you.
    Message {
        /// Sender (empty: the room).
        from: Arc<str>,
        /// JSON text, embedded as JSON.
        #[serde(serialize_with = "json_text")]
        data: Arc<str>,
        /// The sender's frame id (absent when it gave none, and in what a
        /// room module sends).
        #[serde(skip_serializing_if = "no_id")]
        id: FrameId,
    },
    /// Answer to `ping`.
    Pong {
        /// Echo of the ping's `ts`.
        #[serde(skip_serializing_if = "Option::is_none")]
        ts: Option<f64>,
    },
    /// Something was refused.
    Error {
        /// Stable code.
        code: ErrorText,
        /// Human reason.
        message: String,
        /// The id of the client frame refused, when it had one: final,
        /// the frame will not be delivered.
        #[serde(skip_serializing_if = "no_id")]
        id: FrameId,
    },
    /// You were removed.
    Kicked {
        /// Why.
        reason: String,
    },
    /// Room metadata changed.
    RoomMetadata {
        /// New metadata.
        metadata: Arc<str>,
    },
    /// Go to another node and resume there.
    Reconnect {
        /// Why.
        reason: String,
        /// Where.
        #[serde(skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// The `refresh` token was taken.
    Refreshed {
        /// Its expiry (Unix ms).
        expires_at: u64,
    },
    /// Answer to `media-token`.
    MediaToken {
        /// Media-plane credentials, by provider.
        media: Media,
    },
    /// Every client frame with an id up to this one has been handled:
    /// handed on towards its receivers, or refused (an `error` naming it
    /// came first). Outside the numbered stream.
    Confirmed {
        /// The highest id handled.
        id: FrameId,
    },
}

fn no_id(id: &FrameId) -> bool {
    *id == 0
}

impl ServerFrame {
    /// Every server frame `type`, indexed by [`ServerFrame::type_index`].
    pub const TYPES: &[&str] = &[
        "joined",
        "peer-joined",
        "peer-left",
        "signal",
        "message",
        "pong",
        "error",
        "kicked",
        "room-metadata",
        "reconnect",
        "refreshed",
        "media-token",
        "confirmed",
    ];

    /// The frame's place in [`ServerFrame::TYPES`] (metrics count by it).
    pub fn type_index(&self) -> usize {
        match self {
            ServerFrame::Joined { .. } => 0,
            ServerFrame::PeerJoined { .. } => 1,
            ServerFrame::PeerLeft { .. } => 2,
            ServerFrame::Signal { .. } => 3,
            ServerFrame::Message { .. } => 4,
            ServerFrame::Pong { .. } => 5,
            ServerFrame::Error { .. } => 6,
            ServerFrame::Kicked { .. } => 7,
            ServerFrame::RoomMetadata { .. } => 8,
            ServerFrame::Reconnect { .. } => 9,
            ServerFrame::Refreshed { .. } => 10,
            ServerFrame::MediaToken { .. } => 11,
            ServerFrame::Confirmed { .. } => 12,
        }
    }

    /// The frame's `type`.
    pub fn type_name(&self) -> &'static str {
        Self::TYPES[self.type_index()]
    }

    /// An `error` frame.
    pub fn error(code: impl Into<ErrorText>, message: impl Into<String>) -> Self {
        Self::refusal(code, message, 0)
    }

    /// An `error` frame refusing the client frame `id` (0: one without).
    pub fn refusal(code: impl Into<ErrorText>, message: impl Into<String>, id: FrameId) -> Self {
        ServerFrame::Error {
            code: code.into(),
            message: message.into(),
            id,
        }
    }
}

/// Embeds JSON text as JSON (for JSON) or as the value it denotes (for
/// MessagePack), so a payload crosses encodings intact.
fn json_text<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::Error;
    if s.is_human_readable() {
        let raw =
            serde_json::value::RawValue::from_string(text.to_string()).map_err(S::Error::custom)?;
        raw.serialize(s)
    } else {
        let value: serde_json::Value = serde_json::from_str(text).map_err(S::Error::custom)?;
        value.serialize(s)
    }
}

/// A server frame with its stream sequence number.
#[derive(Serialize)]
pub(crate) struct Numbered<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub frame: &'a ServerFrame,
}
