//! [`Rooms`]: the node's table of live rooms, and [`RoomHandle`], the way
//! into one room's mailbox.

use super::actor::{Command, RoomActor};
use super::delivery::{Delivery, LeaveReason};
use super::inbox::Outbox;
use crate::components::RoomsFunction;
use crate::components::bindings::types::{Grants, Peer, Rejection, RoomMessage, Signal};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Node-level room policy.
#[derive(Debug, Clone)]
pub struct RoomsConfig {
    /// Quiet period after which a room is snapshotted and its instance
    /// dropped; `None` keeps instances forever.
    pub hibernate_after: Option<Duration>,
    /// Most rooms on this node.
    pub max_rooms: usize,
    /// Most peers in one room, whatever the module says.
    pub max_peers_per_room: usize,
    /// Traps within `trap_window` after which the room is closed.
    pub trap_limit: u32,
    /// See `trap_limit`.
    pub trap_window: Duration,
    /// Mailbox depth per room: senders wait when it is full.
    pub mailbox: usize,
    /// Where rooms record joins, leaves, opens, closes and errors.
    pub events: crate::events::EventSink,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            hibernate_after: Some(Duration::from_secs(60)),
            max_rooms: 10_000,
            max_peers_per_room: 500,
            trap_limit: 5,
            trap_window: Duration::from_secs(60),
            mailbox: 256,
            events: Default::default(),
        }
    }
}

/// Why a join failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JoinError {
    /// The module (or a host limit) refused it.
    #[error("{}: {}", .0.code, .0.reason)]
    Rejected(Rejection),
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
    pub fn code(&self) -> &str {
        match self {
            JoinError::Rejected(r) => &r.code,
            JoinError::RoomNotFound => "room-not-found",
            JoinError::NodeFull => "node-full",
            JoinError::Module(_) => "module-error",
            JoinError::Unavailable(_) => "unavailable",
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
    pub durable: crate::events::Receipt,
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

/// What gateways need without a trip through the mailbox: the outboxes
/// of the room's peers, for the signals and messages the module does not
/// observe.
#[derive(Debug)]
pub struct RoomShared {
    pub(super) members: RwLock<HashMap<Arc<str>, (Outbox, Grants)>>,
    pub(super) observe_signals: AtomicBool,
    pub(super) observe_messages: AtomicBool,
    pub(super) closed: AtomicBool,
}

/// Until a module says otherwise (`on-create`), frames go through it: a
/// room restored from a snapshot taken on another node runs no
/// `on-create` here, and routing through a module that did not ask is
/// only slower, while skipping one that did ask is wrong.
impl Default for RoomShared {
    fn default() -> Self {
        Self {
            members: RwLock::default(),
            observe_signals: AtomicBool::new(true),
            observe_messages: AtomicBool::new(true),
            closed: AtomicBool::new(false),
        }
    }
}

impl RoomShared {
    /// The outbox and grants of peer `id`.
    pub fn peer(&self, id: &str) -> Option<(Outbox, Grants)> {
        self.members.read().get(id).cloned()
    }

    /// Adds or replaces a member seen from outside the actor (a proxy's
    /// mirror of a room homed elsewhere).
    pub fn mirror_insert(&self, id: &str, outbox: Outbox, grants: Grants) {
        self.members.write().insert(id.into(), (outbox, grants));
    }

    /// Removes a mirrored member.
    pub fn mirror_remove(&self, id: &str) -> Option<(Outbox, Grants)> {
        self.members.write().remove(id)
    }

    /// Sends `delivery` to every member but `except`, as a room message
    /// the module does not observe.
    pub fn broadcast(&self, delivery: &Delivery, except: &str) {
        for (id, (outbox, _)) in self.members.read().iter() {
            if **id != *except {
                let _ = outbox.send(delivery.clone());
            }
        }
    }

    /// Every member id.
    pub fn member_ids(&self) -> Vec<Arc<str>> {
        self.members.read().keys().cloned().collect()
    }

    /// Marks a proxy closed.
    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Sets which frames go through the room's module, as its `on-create`
    /// asked (a proxy learns it from the home).
    pub fn set_observe(&self, signals: bool, messages: bool) {
        self.observe_signals.store(signals, Ordering::Relaxed);
        self.observe_messages.store(messages, Ordering::Relaxed);
    }

    /// Whether the room has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Whether the module wants to see signals.
    pub fn observe_signals(&self) -> bool {
        self.observe_signals.load(Ordering::Relaxed)
    }

    /// Whether the module wants to see messages.
    pub fn observe_messages(&self) -> bool {
        self.observe_messages.load(Ordering::Relaxed)
    }
}

/// A way into one room.
#[derive(Debug, Clone)]
pub struct RoomHandle {
    name: Arc<str>,
    tx: mpsc::Sender<Box<Command>>,
    shared: Arc<RoomShared>,
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
    async fn join(&self, peer: Peer, outbox: Outbox) -> Option<Result<Joined, JoinError>> {
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

    /// A room proxy: commands sent to it go to `tx` (a task that forwards
    /// them to the room's home on another node).
    pub fn proxy(name: Arc<str>, tx: mpsc::Sender<Box<Command>>, shared: Arc<RoomShared>) -> Self {
        Self { name, tx, shared }
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
            reason: reason.into(),
        })
        .await;
    }
}

pub(super) type RoomTable = Arc<Mutex<HashMap<Arc<str>, RoomHandle>>>;

/// The node's rooms.
#[derive(Clone)]
pub struct Rooms {
    function: Arc<RwLock<Arc<RoomsFunction>>>,
    table: RoomTable,
    config: Arc<RoomsConfig>,
}

impl Rooms {
    /// An empty table whose rooms run `function`.
    pub fn new(function: Arc<RoomsFunction>, config: RoomsConfig) -> Self {
        Self {
            function: Arc::new(RwLock::new(function)),
            table: Arc::default(),
            config: Arc::new(config),
        }
    }

    /// The component new rooms start with.
    pub fn function(&self) -> Arc<RoomsFunction> {
        self.function.read().clone()
    }

    /// Moves every room, and the rooms created from now on, to `function`.
    /// All or nothing: if one room refuses, the rooms already moved go back
    /// and the error names the room.
    pub async fn upgrade_all(&self, function: Arc<RoomsFunction>) -> Result<usize, String> {
        let old = std::mem::replace(&mut *self.function.write(), function.clone());
        let handles: Vec<RoomHandle> = self.table.lock().values().cloned().collect();
        let mut moved = Vec::with_capacity(handles.len());
        for h in handles {
            match h.upgrade(function.clone()).await {
                Ok(()) => moved.push(h),
                Err(e) => {
                    *self.function.write() = old.clone();
                    for m in &moved {
                        if let Err(back) = m.upgrade(old.clone()).await {
                            tracing::error!(room = %m.name(), error = %back, "room could not go back to the previous version");
                        }
                    }
                    return Err(format!("room {:?}: {e}", h.name()));
                }
            }
        }
        Ok(moved.len())
    }

    /// Closes every room (shutdown) and waits, up to `within`, for them to end.
    pub async fn close_all(&self, reason: &str, within: Duration) {
        let handles: Vec<RoomHandle> = self.table.lock().values().cloned().collect();
        for h in &handles {
            h.close(reason).await;
        }
        let deadline = tokio::time::Instant::now() + within;
        while !self.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The policy rooms run under.
    pub fn config(&self) -> &RoomsConfig {
        &self.config
    }

    /// The live room called `name`.
    pub fn get(&self, name: &str) -> Option<RoomHandle> {
        self.table.lock().get(name).cloned()
    }

    /// Names of every room on this node.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.table.lock().keys().cloned().collect()
    }

    /// Number of rooms on this node.
    pub fn len(&self) -> usize {
        self.table.lock().len()
    }

    /// Whether the node has no rooms.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The room's handle, starting it when it is not running here.
    pub fn open(&self, room: &str) -> Result<RoomHandle, JoinError> {
        self.get_or_start(room, true)
    }

    /// Joins `peer` to `room`, creating the room when `may_create`.
    pub async fn join(
        &self,
        room: &str,
        peer: Peer,
        outbox: Outbox,
        may_create: bool,
    ) -> Result<(RoomHandle, Joined), JoinError> {
        // A room that closes between lookup and join is simply recreated;
        // two tries cover that race, a third would mean a bug.
        for _ in 0..3 {
            let handle = self.get_or_start(room, may_create)?;
            if let Some(r) = handle.join(peer.clone(), outbox.clone()).await {
                return r.map(|j| (handle, j));
            }
            self.forget(&handle);
        }
        Err(JoinError::Module("room kept closing during join".into()))
    }

    fn get_or_start(&self, room: &str, may_create: bool) -> Result<RoomHandle, JoinError> {
        let mut table = self.table.lock();
        if let Some(h) = table.get(room)
            && !h.tx.is_closed()
        {
            return Ok(h.clone());
        }
        if !may_create {
            return Err(JoinError::RoomNotFound);
        }
        if table.len() >= self.config.max_rooms {
            return Err(JoinError::NodeFull);
        }
        let name: Arc<str> = room.into();
        let (tx, rx) = mpsc::channel(self.config.mailbox);
        let handle = RoomHandle {
            name: name.clone(),
            tx,
            shared: Arc::default(),
        };
        table.insert(name.clone(), handle.clone());
        let actor = RoomActor::new(
            name,
            self.function(),
            handle.shared.clone(),
            self.config.clone(),
            self.table.clone(),
        );
        tokio::spawn(actor.run(rx));
        Ok(handle)
    }

    fn forget(&self, handle: &RoomHandle) {
        forget(&self.table, handle.name(), &handle.shared);
    }
}

/// Removes `name` from the table if it still refers to that room.
pub(super) fn forget(table: &RoomTable, name: &str, shared: &Arc<RoomShared>) {
    let mut t = table.lock();
    if t.get(name).is_some_and(|h| Arc::ptr_eq(&h.shared, shared)) {
        t.remove(name);
    }
}
