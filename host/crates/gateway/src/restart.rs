//! An all-in-one node restarting on the same data directory keeps its
//! calls: on the way down every session hands itself over (what its room
//! sent is delivered first and kept for the resume) and every room is
//! imaged; the host writes both to disk. On the way up the rooms start
//! again with their members and the sessions wait, parked, for their
//! clients' `resume`: same peer ids, no `peer-left`/`peer-joined`, and
//! every stream frame the client had not acknowledged replayed in order.

use crate::Gateway;
use crate::deliver::frame_for;
use crate::journal::{FrameImage, SessionImage, SessionRecord};
use crate::resume::{self, PeerState, Unacked};
use crate::topology::RoomLink;
use roomlet_protocol::Encoding;
use roomlet_rooms::{MemberImage, Outbox, RoomImage};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// What a node writes to disk when it restarts: its rooms and sessions.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct NodeImage {
    /// Every room that was running.
    pub rooms: Vec<RoomImage>,
    /// Every joined session, live or parked.
    pub sessions: Vec<SessionImage>,
}

impl Gateway {
    /// Asks every joined session to hand itself over (its socket closes
    /// with 1012), waits up to `within` for them, then images every room.
    /// The node must not take new connections meanwhile.
    pub async fn image_for_restart(&self, within: Duration) -> NodeImage {
        self.set_draining();
        let _ = self.drain.send(Some(crate::Drain::Restart));
        let _ = tokio::time::timeout(within, self.until_all_closed()).await;
        let keep = self.limits.keep();
        let mut states: Vec<(resume::Key, PeerState)> = std::mem::take(&mut *self.handed.lock())
            .into_iter()
            .map(|s| (resume::key(&s.resume_token), s))
            .collect();
        states.extend(self.resumable.take_all_parked());
        let mut image = NodeImage::default();
        for name in self.rooms.names() {
            if let Some(handle) = self.rooms.get(&name)
                && let Some(room) = handle.image().await
            {
                image.rooms.push(room);
            }
        }
        for (key, mut state) in states {
            // What the room sent after the socket closed is due too.
            let mut over = false;
            while let Some(d) = state.inbox.try_recv() {
                let Some((frame, close)) = frame_for(&mut state, d) else {
                    continue;
                };
                if close.is_some() {
                    over = true; // kicked, or the room closed: not resumable
                    break;
                }
                state.number(&frame, keep);
            }
            if !over {
                image.sessions.push(session_image(key, &state));
            }
        }
        image
    }

    /// Starts again what [`Gateway::image_for_restart`] wrote: each room
    /// with the members whose session came back, each session parked for
    /// `grace` under its resume token. Returns the rooms restored and the
    /// keys of the sessions parked.
    pub fn restore(
        self: &Arc<Self>,
        image: NodeImage,
        grace: Duration,
    ) -> (usize, Vec<resume::Key>) {
        let mut sessions: HashMap<String, Vec<SessionImage>> = HashMap::new();
        for s in image.sessions {
            sessions.entry(s.room.clone()).or_default().push(s);
        }
        let (mut rooms, mut parked) = (0, Vec::new());
        for room in image.rooms {
            // Each session of the room whose peer is a member, with the
            // outbox the room will reach it through.
            let mut members: HashMap<String, MemberImage> = room
                .members
                .iter()
                .map(|m| (m.id.clone(), m.clone()))
                .collect();
            let mut outboxes: HashMap<String, Outbox> = HashMap::new();
            let mut waiting = Vec::new();
            for s in sessions.remove(&room.name).unwrap_or_default() {
                let Some(member) = members.remove(&s.peer_id) else {
                    continue;
                };
                let (tx, inbox) = roomlet_rooms::outbox_capped(self.limits.inbox_bytes);
                outboxes.insert(s.peer_id.clone(), tx);
                waiting.push((s, member, inbox));
            }
            let Some(handle) = self.rooms.restore(room, outboxes) else {
                continue;
            };
            rooms += 1;
            for (s, member, inbox) in waiting {
                let key = s.key;
                let link = RoomLink::Local(handle.clone());
                let state = peer_state(s, Arc::new(member.into()), link, inbox);
                self.resumable.park_keyed(key, state, grace);
                parked.push(key);
            }
        }
        (rooms, parked)
    }
}

impl NodeImage {
    /// What a killed process left in its session journal: each room with
    /// the members that had a session (no memory: its module starts again
    /// as recovered), each session with `gap` (its stream died).
    pub fn from_journal(records: Vec<(resume::Key, SessionRecord)>) -> NodeImage {
        let mut rooms: HashMap<String, RoomImage> = HashMap::new();
        let mut sessions = Vec::with_capacity(records.len());
        for (key, r) in records {
            let room = rooms.entry(r.room.clone()).or_insert_with(|| RoomImage {
                name: r.room.clone(),
                members: Vec::new(),
                snapshot: None,
                observe: (false, false),
                metadata: String::new(),
                created: true,
                timer_ms: None,
            });
            sessions.push(SessionImage::recorded(key, &r));
            room.members.push(r.peer);
        }
        NodeImage {
            rooms: rooms.into_values().collect(),
            sessions,
        }
    }
}

pub(crate) fn session_image(key: resume::Key, s: &PeerState) -> SessionImage {
    SessionImage {
        key,
        peer_id: s.peer.id.clone(),
        room: s.room.name().to_string(),
        msgpack: s.encoding == Encoding::Msgpack,
        next_seq: s.next_seq,
        trimmed_before: s.trimmed_before,
        expires_at_ms: s.expires_at_ms,
        gap: s.gap,
        last_id: s.ids.last,
        unacked: s
            .unacked
            .iter()
            .map(|u| {
                let binary = matches!(u.message, Message::Binary(_));
                FrameImage {
                    seq: u.seq,
                    kind: u.kind,
                    binary,
                    bytes: u.message.clone().into_data().to_vec(),
                }
            })
            .collect(),
    }
}

pub(crate) fn peer_state(
    s: SessionImage,
    peer: Arc<roomlet_runtime::bindings::types::Peer>,
    room: RoomLink,
    inbox: roomlet_rooms::Inbox,
) -> PeerState {
    let unacked: VecDeque<Unacked> = s
        .unacked
        .into_iter()
        .filter_map(|f| {
            let message = if f.binary {
                Message::binary(f.bytes)
            } else {
                Message::text(String::from_utf8(f.bytes).ok()?)
            };
            Some(Unacked {
                seq: f.seq,
                kind: f.kind,
                message,
            })
        })
        .collect();
    PeerState {
        sender: peer.id.as_str().into(),
        peer,
        room,
        inbox,
        // Unknown until the client presents it: its hash is the key.
        resume_token: String::new(),
        encoding: if s.msgpack {
            Encoding::Msgpack
        } else {
            Encoding::Json
        },
        next_seq: s.next_seq,
        unacked_bytes: unacked.iter().map(|u| u.message.len()).sum(),
        unacked,
        trimmed_before: s.trimmed_before,
        expires_at_ms: s.expires_at_ms,
        gap: s.gap,
        // A new process's clock: the rate limit starts afresh.
        media_at_s: 0,
        // What the client was told stands; it re-sends the rest.
        ids: crate::frame_ids::Sent {
            last: s.last_id,
            told: s.last_id,
        },
        seen: Default::default(),
    }
}
