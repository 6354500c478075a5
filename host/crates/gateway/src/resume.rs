//! Sessions that outlive their socket: the resume buffer and the table of
//! resumable sessions.
//!
//! A joined session's state ([`PeerState`]) belongs to the peer, not the
//! socket. When the socket drops it is parked under its resume token for
//! the grace period; a `resume` on a new socket takes it (even from a
//! socket the server still thinks is alive: the old one is told to hand
//! it over) and replays every frame after the client's last seq.

use super::topology::RoomLink;
use crate::config::Keep;
use parking_lot::Mutex;
use roomlet_protocol::codec::{self, Encoded, Encoding};
use roomlet_protocol::frames::ServerFrame;
use roomlet_rooms::{Inbox, LeaveReason};
use roomlet_runtime::bindings::types::Peer;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// A joined peer's session state.
pub(crate) struct PeerState {
    pub peer: Arc<Peer>,
    /// `peer.id`, shared: every signal and message this peer sends names
    /// it, and a reference count costs less than a copy per frame.
    pub sender: Arc<str>,
    pub room: RoomLink,
    pub inbox: Inbox,
    pub resume_token: String,
    /// The session's encoding: `unacked` holds frames encoded with it.
    pub encoding: Encoding,
    /// The next stream seq to assign.
    pub next_seq: u64,
    /// Sent but not acknowledged, oldest first, as they went out: kept
    /// encoded, a frame costs one reference-counted copy, not a clone of
    /// every string in it.
    pub unacked: VecDeque<Unacked>,
    /// The encoded size of `unacked`.
    pub unacked_bytes: usize,
    /// Frames before this seq were dropped from `unacked` for room.
    pub trimmed_before: u64,
    /// When the session's access token expires (Unix ms), as its last
    /// `join` or `refresh` said: what `joined` tells the client.
    pub expires_at_ms: u64,
    /// Re-created from its journal record after the process holding it
    /// was killed: its stream is gone, the resume says `gap: true`.
    pub gap: bool,
    /// When the session last got fresh media credentials (seconds on
    /// [`crate::media::now_s`]'s clock; 0: never), for their rate limit.
    pub media_at_s: u32,
    /// The ids of the client's frames taken and confirmed.
    pub ids: crate::frame_ids::Sent,
    /// The ids of other peers' frames delivered to the client.
    pub seen: crate::frame_ids::Seen,
}

/// A frame sent and not yet acknowledged.
pub(crate) struct Unacked {
    pub seq: u64,
    /// Its type's index in `ServerFrame::TYPES`, for the frames-out
    /// metric when it is replayed.
    pub kind: u8,
    pub message: Message,
}

/// Above this many slots, an emptied resume buffer gives its memory back:
/// an idle session then holds none.
const SHRINK_ABOVE: usize = 8;

impl PeerState {
    /// Numbers and encodes a frame, and remembers it for resume.
    pub fn number(&mut self, frame: &ServerFrame, keep: Keep) -> Message {
        self.number_keeping(frame, None, keep)
    }

    /// [`PeerState::number`], keeping `kept` instead of `frame` for a
    /// replay when some of `frame` must never be kept (media credentials).
    pub fn number_keeping(
        &mut self,
        frame: &ServerFrame,
        kept: Option<&ServerFrame>,
        keep: Keep,
    ) -> Message {
        let seq = self.next_seq;
        self.next_seq += 1;
        let message = message(codec::encode(self.encoding, Some(seq), frame));
        let stored = match kept {
            Some(k) => self::message(codec::encode(self.encoding, Some(seq), k)),
            None => message.clone(),
        };
        self.unacked_bytes += stored.len();
        self.unacked.push_back(Unacked {
            seq,
            kind: frame.type_index() as u8,
            message: stored,
        });
        while self.unacked.len() > keep.frames
            || (self.unacked.len() > 1 && self.unacked_bytes > keep.bytes)
        {
            if let Some(u) = self.unacked.pop_front() {
                self.unacked_bytes -= u.message.len();
                self.trimmed_before = u.seq + 1;
            }
        }
        message
    }

    /// Forgets frames up to `seq`. False when `seq` is ahead of what was sent.
    pub fn ack(&mut self, seq: u64) -> bool {
        if seq >= self.next_seq {
            return false;
        }
        while self.unacked.front().is_some_and(|u| u.seq <= seq) {
            if let Some(u) = self.unacked.pop_front() {
                self.unacked_bytes -= u.message.len();
            }
        }
        if self.unacked.is_empty() && self.unacked.capacity() > SHRINK_ABOVE {
            self.unacked = VecDeque::new();
        }
        true
    }

    /// Prepares a replay after `last_seq`: false when it cannot be exact.
    pub fn rewind(&mut self, last_seq: u64) -> bool {
        if last_seq >= self.next_seq || last_seq + 1 < self.trimmed_before {
            return false;
        }
        self.ack(last_seq);
        true
    }
}

/// How a live session is asked to give up its state.
/// One shot: a takeover ends the session it takes.
pub(crate) type Takeover = oneshot::Sender<oneshot::Sender<PeerState>>;

enum Slot {
    Live(Takeover),
    Parked {
        state: Box<PeerState>,
        generation: u64,
    },
}

/// What the table is keyed by: a resume token's SHA-256, so the table can
/// be written to disk across a restart ([`crate::restart`]) without it.
pub(crate) type Key = crate::journal::SessionKey;

/// The key of `token`.
pub(crate) fn key(token: &str) -> Key {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Resume token → session.
#[derive(Default)]
pub(crate) struct Resumable {
    slots: Mutex<Slots>,
    generation: std::sync::atomic::AtomicU64,
    /// Told when a session ends for good (all-in-one nodes).
    pub journal: std::sync::OnceLock<Arc<dyn crate::journal::SessionJournal>>,
}

#[derive(Default)]
struct Slots {
    by_token: HashMap<Key, Slot>,
    /// The parked sessions' keys by room and identity, so a join can
    /// find its own user's dropped session without a scan.
    parked: HashMap<(Arc<str>, String), Vec<Key>>,
}

impl Slots {
    /// Removes `token`'s slot (and its index entry when parked).
    fn remove(&mut self, token: &Key) -> Option<Slot> {
        let slot = self.by_token.remove(token)?;
        if let Slot::Parked { state, .. } = &slot {
            let key = parked_key(state);
            if let Some(tokens) = self.parked.get_mut(&key) {
                tokens.retain(|t| t != token);
                if tokens.is_empty() {
                    self.parked.remove(&key);
                }
            }
        }
        Some(slot)
    }

    fn insert(&mut self, token: Key, slot: Slot) {
        self.remove(&token);
        if let Slot::Parked { state, .. } = &slot {
            self.parked
                .entry(parked_key(state))
                .or_default()
                .push(token);
        }
        self.by_token.insert(token, slot);
    }
}

fn parked_key(state: &PeerState) -> (Arc<str>, String) {
    (state.room.name().clone(), state.peer.identity.clone())
}

impl Resumable {
    /// Registers a live session.
    pub fn live(&self, token: &str, takeover: Takeover) {
        self.slots.lock().insert(key(token), Slot::Live(takeover));
    }

    /// Forgets a session that ended for good.
    pub fn remove(&self, token: &str) {
        let token = key(token);
        self.slots.lock().remove(&token);
        self.ended_key(token);
    }

    /// A session taken out of the table has ended for good after all
    /// (a refused resume).
    pub fn ended(&self, token: &str) {
        self.ended_key(key(token));
    }

    fn ended_key(&self, token: Key) {
        if let Some(j) = self.journal.get() {
            j.ended(token);
        }
    }

    /// Parks a session whose socket dropped; after `grace` it leaves its room.
    pub fn park(self: &Arc<Self>, state: PeerState, grace: Duration) {
        let token = key(&state.resume_token);
        self.park_keyed(token, state, grace);
    }

    /// How many sessions are parked.
    pub fn parked(&self) -> usize {
        self.slots.lock().parked.values().map(Vec::len).sum()
    }

    /// Every parked session, taken out of the table (a restart writes them
    /// to disk; their grace timers then find nothing).
    pub fn take_all_parked(&self) -> Vec<(Key, PeerState)> {
        let mut slots = self.slots.lock();
        let keys: Vec<Key> = slots.parked.values().flatten().copied().collect();
        keys.into_iter()
            .filter_map(|k| match slots.remove(&k) {
                Some(Slot::Parked { state, .. }) => Some((k, *state)),
                _ => None,
            })
            .collect()
    }

    /// [`Resumable::park`] for a session known by its key only (one the
    /// last process on this data directory left).
    pub fn park_keyed(self: &Arc<Self>, token: Key, state: PeerState, grace: Duration) {
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(room = %state.room.name(), peer = %state.peer.id, "session parked for resume");
        self.slots.lock().insert(
            token,
            Slot::Parked {
                state: Box::new(state),
                generation,
            },
        );
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let expired = {
                let mut slots = this.slots.lock();
                match slots.by_token.get(&token) {
                    Some(Slot::Parked { generation: g, .. }) if *g == generation => {
                        slots.remove(&token)
                    }
                    _ => None,
                }
            };
            if let Some(Slot::Parked { state, .. }) = expired {
                tracing::debug!(room = %state.room.name(), peer = %state.peer.id, "resume grace period over");
                this.ended_key(token);
                state.room.leave(&state.peer.id, LeaveReason::Timeout).await;
            }
        });
    }

    /// Takes the sessions of `identity` in `room` whose socket dropped: the
    /// same user joining again without a resume (a reload, or a resume
    /// refused at another gateway) replaces them.
    pub fn take_parked_of(&self, room: &str, identity: &str) -> Vec<PeerState> {
        let mut slots = self.slots.lock();
        let by = (Arc::<str>::from(room), identity.to_owned());
        let Some(tokens) = slots.parked.remove(&by) else {
            return Vec::new();
        };
        let taken: Vec<PeerState> = tokens
            .iter()
            .filter_map(|t| match slots.remove(t) {
                Some(Slot::Parked { state, .. }) => Some(*state),
                _ => None, // the index holds parked tokens only
            })
            .collect();
        drop(slots);
        for t in tokens {
            self.ended_key(t);
        }
        taken
    }

    /// Takes the parked session of peer `peer` (of `identity`) in `room`,
    /// if its socket is gone: the same identity joined through another
    /// gateway. A live session is another device and stays.
    pub fn take_parked_peer(&self, room: &str, identity: &str, peer: &str) -> Option<PeerState> {
        let mut slots = self.slots.lock();
        let slots = &mut *slots;
        let by = (Arc::<str>::from(room), identity.to_owned());
        let token = slots.parked.get(&by)?.iter().find(|t| {
            matches!(slots.by_token.get(*t), Some(Slot::Parked { state, .. }) if state.peer.id == peer)
        })?;
        let token = *token;
        let taken = match slots.remove(&token) {
            Some(Slot::Parked { state, .. }) => Some(*state),
            _ => None, // the index holds parked tokens only
        };
        if taken.is_some() {
            self.ended_key(token);
        }
        taken
    }

    /// Takes the session for `token`, asking a live one to hand it over.
    pub async fn take(&self, token: &str) -> Option<PeerState> {
        self.take_key(key(token)).await
    }

    /// [`Resumable::take`] by the token's key (another gateway asking for
    /// the session knows no more: the token is the client's secret).
    pub async fn take_key(&self, token: Key) -> Option<PeerState> {
        let slot = self.slots.lock().remove(&token)?;
        match slot {
            Slot::Parked { state, .. } => Some(*state),
            Slot::Live(takeover) => {
                let (tx, rx) = oneshot::channel();
                if takeover.send(tx).is_ok()
                    && let Ok(Ok(state)) = tokio::time::timeout(Duration::from_secs(5), rx).await
                {
                    return Some(state);
                }
                // The session ended on its own meanwhile and parked itself.
                let slot = self.slots.lock().remove(&token);
                match slot {
                    Some(Slot::Parked { state, .. }) => Some(*state),
                    Some(live) => {
                        self.slots.lock().insert(token, live);
                        None
                    }
                    None => None,
                }
            }
        }
    }
}

/// An encoded frame as the WebSocket message that carries it.
pub(crate) fn message(encoded: Encoded) -> Message {
    match encoded {
        Encoded::Text(t) => Message::text(t),
        Encoded::Binary(b) => Message::binary(b),
    }
}
