//! [`Rooms`]: the node's rooms, started on first join.

use super::actor::RoomActor;
use super::config::RoomsConfig;
use super::handle::{Command, JoinError, Joined, RoomHandle};
use super::image::RoomImage;
use super::inbox::Outbox;
use super::table::{RoomTable, forget};
use parking_lot::RwLock;
use roomlet_runtime::RoomsFunction;
use roomlet_runtime::bindings::types::Peer;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

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

    /// Starts `image`'s room again, as the last process on this data
    /// directory left it, with the members that have an outbox here (by
    /// peer id). Nothing is recorded: to the room's calls and its event
    /// log the restart is a pause. `None` when a room of that name runs.
    pub fn restore(
        &self,
        image: RoomImage,
        outboxes: HashMap<String, Outbox>,
    ) -> Option<RoomHandle> {
        let mut table = self.table.lock();
        if table.contains_key(image.name.as_str()) {
            return None;
        }
        let (handle, mut actor, rx) = self.new_room(&image.name);
        actor.restore(image, outboxes);
        table.insert(handle.name.clone(), handle.clone());
        tokio::spawn(actor.run(rx));
        Some(handle)
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
        let (handle, actor, rx) = self.new_room(room);
        table.insert(handle.name.clone(), handle.clone());
        tokio::spawn(actor.run(rx));
        Ok(handle)
    }

    /// A room's handle and its actor, not yet running.
    fn new_room(&self, room: &str) -> (RoomHandle, RoomActor, mpsc::Receiver<Box<Command>>) {
        let name: Arc<str> = room.into();
        let (tx, rx) = mpsc::channel(self.config.mailbox);
        let handle = RoomHandle {
            name: name.clone(),
            tx,
            shared: Arc::default(),
        };
        let actor = RoomActor::new(
            name,
            self.function(),
            handle.shared.clone(),
            self.config.clone(),
            self.table.clone(),
        );
        (handle, actor, rx)
    }

    fn forget(&self, handle: &RoomHandle) {
        forget(&self.table, handle.name(), &handle.shared);
    }
}
