//! [`RoomHandle`]: the way into one room's mailbox, and what the mailbox
//! carries and answers.

use super::delivery::LeaveReason;
use super::inbox::Outbox;
use super::members::RoomShared;
use roomlet_protocol::{ErrorCode, ErrorText};
use roomlet_runtime::RoomsFunction;
use roomlet_runtime::bindings::types::{Peer, Rejection, RoomMessage, Signal};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Why a join failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JoinError {
    /// The room's module refused it, with a code of its own.
    #[error("{}: {}", .0.code, .0.reason)]
    Rejected(Rejection),
    /// A host limit refused it (the room is full, the peer id is taken).
    #[error("{code}: {reason}")]
    Refused {
        /// Which limit.
        code: ErrorCode,
        /// Why, for people.
        reason: String,
    },
    /// The room does not exist and the peer may not create it.
    #[error("room does not exist")]
    RoomNotFound,
    /// The node's room limit is reached.
    #[error("node has no room for another room")]
    NodeFull,
    /// The room's module failed while handling the join.
    #[error("the room's module failed: {0}")]
    Module(String),
    /// The room cannot be reached now (with a bus: no home found, or the
    /// home is moving it): worth trying again shortly, unlike a refusal.
    #[error("{0}")]
    Unavailable(String),
}

impl JoinError {
    /// The stable error code sent to the client.
    pub fn code(&self) -> ErrorText {
        match self {
            JoinError::Rejected(r) => ErrorText::Module(r.code.as_str().into()),
            JoinError::Refused { code, .. } => ErrorText::Host(*code),
            JoinError::RoomNotFound => ErrorCode::RoomNotFound.into(),
            JoinError::NodeFull => ErrorCode::NodeFull.into(),
            JoinError::Module(_) => ErrorCode::ModuleError.into(),
            JoinError::Unavailable(_) => ErrorCode::Unavailable.into(),
        }
    }
}

/// What a successful join returns.
#[derive(Debug)]
pub struct Joined {
    /// The peers already present (hidden ones left out).
    pub peers: Vec<Arc<Peer>>,
    /// The room's metadata.
    pub metadata: String,
    /// Settles when the join is in the event log: `joined` waits for it.
    pub durable: roomlet_events::Receipt,
}

/// How a room is doing, for tests and the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStatus {
    /// It has a live instance.
    pub live: bool,
    /// It is hibernated (snapshot held, no instance).
    pub hibernated: bool,
    /// Peers present.
    pub members: usize,
    /// Traps in the current window.
    pub recent_traps: usize,
    /// Version label of the component serving it.
    pub version: String,
}

/// What a room's mailbox carries (a proxy's too), each command boxed: the
/// channel's first block holds 32 slots for as long as the room lives,
/// hibernated or not, and 32 pointers are 256 bytes where 32 commands
/// were 1.8 KB (BENCHMARKS.md, idle memory with 2 per room).
pub(super) enum Command {
    Join {
        peer: Peer,
        outbox: Outbox,
        reply: oneshot::Sender<Result<Joined, JoinError>>,
    },
    /// A member re-reported by its gateway after the room moved to this
    /// node: added without `on-join` and without announcing it.
    Rejoin {
        peer: Peer,
        outbox: Outbox,
        reply: oneshot::Sender<Joined>,
    },
    Leave {
        peer_id: String,
        reason: LeaveReason,
    },
    Message {
        message: RoomMessage,
    },
    Signal {
        signal: Signal,
    },
    Kick {
        peer_id: String,
        reason: String,
    },
    SetMetadata {
        metadata: String,
    },
    Hibernate {
        reply: oneshot::Sender<bool>,
    },
    Status {
        reply: oneshot::Sender<RoomStatus>,
    },
    Close {
        ending: Ending,
    },
    /// Move to another version of the rooms component (hot reload).
    Upgrade {
        function: Arc<RoomsFunction>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The module's in-memory state, for a move to another node.
    TakeSnapshot {
        reply: oneshot::Sender<Option<(String, Vec<u8>)>>,
    },
    /// The room as it is, for the next process; the room then ends quietly.
    Image {
        reply: oneshot::Sender<crate::image::RoomImage>,
    },
    /// State carried from another node: restored by the first call.
    PutSnapshot {
        version: String,
        state: Vec<u8>,
    },
    /// Send JetStream the room's kv writes it missed (NATS was away), in
    /// line with the room's own commits so a newer value is never
    /// overtaken by an older one.
    ReplayKv {
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// Every member, hidden ones included (admin API).
    Peers {
        reply: oneshot::Sender<Vec<Arc<Peer>>>,
    },
    /// A message from the room itself, bypassing the module (admin API).
    Announce {
        to: Option<String>,
        data: String,
    },
}

/// How a room's time on this node ends.
#[derive(Debug, Clone)]
pub(super) enum Ending {
    /// For good: every peer is told the room closed, with this reason.
    Closed(String),
    /// The room lives on elsewhere: every peer is told to follow it.
    Moved,
}

impl Ending {
    pub(super) fn reason(&self) -> &str {
        match self {
            Ending::Closed(r) => r,
            Ending::Moved => "moved",
        }
    }
}

/// A way into one room.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    pub(super) name: Arc<str>,
    pub(super) tx: mpsc::Sender<Box<Command>>,
    pub(super) shared: Arc<RoomShared>,
}

impl RoomHandle {
    /// The room's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The state shared with gateways.
    pub fn shared(&self) -> &Arc<RoomShared> {
        &self.shared
    }

    async fn send(&self, cmd: Command) -> bool {
        self.tx.send(Box::new(cmd)).await.is_ok()
    }

    /// Asks the room to admit `peer`, whose deliveries go to `outbox`.
    /// `None` means the room has closed meanwhile.
    pub(super) async fn join(
        &self,
        peer: Peer,
        outbox: Outbox,
    ) -> Option<Result<Joined, JoinError>> {
        let (reply, rx) = oneshot::channel();
        if !self
            .send(Command::Join {
                peer,
                outbox,
                reply,
            })
            .await
        {
            return None;
        }
        rx.await.ok()
    }

    /// The module's in-memory state (the instance is dropped, as when
    /// hibernating), for handing the room to another node.
    pub async fn take_snapshot(&self) -> Option<(String, Vec<u8>)> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::TakeSnapshot { reply }).await {
            return None;
        }
        rx.await.ok().flatten()
    }

    /// Sends the replica the room's kv writes it missed; the number of
    /// keys sent. `None` when the room's task has ended.
    pub async fn replay_kv(&self) -> Option<Result<usize, String>> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::ReplayKv { reply }).await {
            return None;
        }
        rx.await.ok()
    }

    /// The room's members, memory and timer, for the process that takes
    /// over this node's data directory; the room then ends here without
    /// telling anyone (no leave, no close). `None` when it had ended.
    pub async fn image(&self) -> Option<crate::image::RoomImage> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Image { reply }).await {
            return None;
        }
        rx.await.ok()
    }

    /// Hands the room state carried from another node.
    pub async fn put_snapshot(&self, version: String, state: Vec<u8>) {
        self.send(Command::PutSnapshot { version, state }).await;
    }

    /// Re-adds a member whose room moved here. `None` when the room closed.
    pub async fn rejoin(&self, peer: Peer, outbox: Outbox) -> Option<Joined> {
        let (reply, rx) = oneshot::channel();
        if !self
            .send(Command::Rejoin {
                peer,
                outbox,
                reply,
            })
            .await
        {
            return None;
        }
        rx.await.ok()
    }

    /// The peer has left.
    pub async fn leave(&self, peer_id: &str, reason: LeaveReason) {
        self.send(Command::Leave {
            peer_id: peer_id.into(),
            reason,
        })
        .await;
    }

    /// A room message from a peer.
    pub async fn message(&self, message: RoomMessage) {
        self.send(Command::Message { message }).await;
    }

    /// A signal, when the module observes signals.
    pub async fn signal(&self, signal: Signal) {
        self.send(Command::Signal { signal }).await;
    }

    /// A room admin removes a peer.
    pub async fn kick(&self, peer_id: &str, reason: &str) {
        self.send(Command::Kick {
            peer_id: peer_id.into(),
            reason: reason.into(),
        })
        .await;
    }

    /// A room admin sets the room's metadata.
    pub async fn set_metadata(&self, metadata: String) {
        self.send(Command::SetMetadata { metadata }).await;
    }

    /// Snapshots the room and drops its instance now. Returns false when
    /// there was nothing to hibernate.
    pub async fn hibernate(&self) -> bool {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Hibernate { reply }).await && rx.await.unwrap_or(false)
    }

    /// The room's status, or `None` when it has closed.
    pub async fn status(&self) -> Option<RoomStatus> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Status { reply }).await {
            return None;
        }
        rx.await.ok()
    }

    /// Every member, hidden ones included; `None` when the room has closed.
    pub async fn peers(&self) -> Option<Vec<Arc<Peer>>> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Peers { reply }).await {
            return None;
        }
        rx.await.ok()
    }

    /// Sends a message from the room itself to one peer or to everyone.
    pub async fn announce(&self, to: Option<String>, data: String) -> bool {
        self.send(Command::Announce { to, data }).await
    }

    /// Moves the room to another component version.
    pub async fn upgrade(&self, function: Arc<RoomsFunction>) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        if !self.send(Command::Upgrade { function, reply }).await {
            return Ok(()); // closed meanwhile: nothing to move
        }
        rx.await.unwrap_or(Ok(()))
    }

    /// Closes the room; every peer receives `Closed`.
    pub async fn close(&self, reason: &str) {
        self.send(Command::Close {
            ending: Ending::Closed(reason.into()),
        })
        .await;
    }

    /// Ends the room here because it lives on elsewhere; every peer
    /// receives [`Delivery::Moved`] and follows it.
    pub async fn release(&self) {
        self.send(Command::Close {
            ending: Ending::Moved,
        })
        .await;
    }
}
