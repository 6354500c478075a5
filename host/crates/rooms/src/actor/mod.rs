//! [`RoomActor`]: the task that owns one room.
//!
//! Its membership (who is in, what they are sent) is in [`membership`];
//! the life of its component instance (revive, commit, hibernate, move to
//! a new version, close) in [`instance`].

mod instance;
mod membership;
mod restart;

use crate::config::RoomsConfig;
use crate::delivery::Delivery;
use crate::handle::{Command, Ending, RoomStatus};
use crate::inbox::Outbox;
use crate::members::RoomShared;
use crate::table::{RoomTable, forget};
use roomlet_events::{Event, EventKind};
use roomlet_runtime::bindings::room::Action;
use roomlet_runtime::bindings::types::Peer;
use roomlet_runtime::{RoomInstance, RoomsFunction};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

/// Longest timer a module may set.
const MAX_TIMER: Duration = Duration::from_secs(24 * 3600);

/// What woke a room's task.
enum Wake {
    Command(Box<Command>),
    /// The module's timer.
    Timer,
    /// Quiet for `hibernate_after`.
    Idle,
}

struct Member {
    peer: Arc<Peer>,
    outbox: Outbox,
}

/// In-memory state carried across a hibernation.
struct Snapshot {
    version: String,
    state: Vec<u8>,
}

/// One room: membership (the host's truth), the module instance (or its
/// snapshot while hibernated), the module's timer and trap record.
pub(super) struct RoomActor {
    name: Arc<str>,
    function: Arc<RoomsFunction>,
    shared: Arc<RoomShared>,
    config: Arc<RoomsConfig>,
    table: RoomTable,
    members: Vec<Member>,
    /// `members` as `membership.peers` returns them: built when a call
    /// needs them, dropped on change and while hibernated (a copy of every
    /// peer that a sleeping room need not hold).
    peers: Option<Arc<Vec<Peer>>>,
    metadata: Arc<str>,
    /// Boxed: a hibernated room holds only the pointer's worth.
    instance: Option<Box<RoomInstance>>,
    snapshot: Option<Snapshot>,
    /// Whether `on-create` has run once (so a new instance is a recovery).
    created: bool,
    timer: Option<Instant>,
    last_activity: Instant,
    traps: VecDeque<Instant>,
    closed: bool,
    /// Started from a restart's image ([`RoomActor::restore`]).
    restored: bool,
}

impl RoomActor {
    pub(super) fn new(
        name: Arc<str>,
        function: Arc<RoomsFunction>,
        shared: Arc<RoomShared>,
        config: Arc<RoomsConfig>,
        table: RoomTable,
    ) -> Self {
        Self {
            name,
            function,
            shared,
            config,
            table,
            members: Vec::new(),
            peers: None,
            metadata: "".into(),
            instance: None,
            snapshot: None,
            created: false,
            timer: None,
            last_activity: Instant::now(),
            traps: VecDeque::new(),
            closed: false,
            restored: false,
        }
    }

    /// The room's task. Not an `async fn`: that would keep its arguments
    /// beside the block's moved copies, holding the actor twice in every
    /// room's task for as long as it lives.
    pub(super) fn run(
        mut self,
        mut rx: mpsc::Receiver<Box<Command>>,
    ) -> impl Future<Output = ()> + Send {
        let span = tracing::info_span!("room", room = %self.name);
        async move {
            tracing::debug!("room started");
            // A room restored after a restart was opened by the last process.
            if !self.restored {
                let _ = self
                    .config
                    .events
                    .record(Event::new(EventKind::RoomOpened, &self.name));
            } else if self.created && self.snapshot.is_none() {
                // Re-created after a crash, without the module's memory:
                // it starts now (`on-create(recovered)`), so the settings
                // it asks for hold from the first frame.
                if let Err(e) = self.revive().await {
                    tracing::warn!(error = %e, "restored room's module did not start");
                }
            }
            // Armed once and moved only when it fires: a command just moves
            // `last_activity` (re-arming per command cost a timer-wheel
            // insert and removal per frame).
            let mut idle_timer = std::pin::pin!(tokio::time::sleep(MAX_TIMER));
            while !self.closed {
                let idle_at = self
                    .config
                    .hibernate_after
                    .filter(|_| self.instance.is_some() || self.members.is_empty())
                    .map(|d| self.last_activity + d);
                if let Some(at) = idle_at
                    && at < idle_timer.deadline()
                {
                    idle_timer.as_mut().reset(at);
                }
                let wake = tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(cmd) => Wake::Command(cmd),
                        None => break,
                    },
                    _ = sleep_until(self.timer), if self.timer.is_some() => Wake::Timer,
                    _ = &mut idle_timer, if idle_at.is_some() => match idle_at {
                        Some(at) if at > Instant::now() => {
                            idle_timer.as_mut().reset(at);
                            continue;
                        }
                        _ => Wake::Idle,
                    },
                };
                // Boxed: the hooks await component calls, whose futures are
                // large; inline, they would size every room's task for as
                // long as it lives, hibernated or not.
                Box::pin(self.on_wake(wake)).await;
            }
            self.shared.closed.store(true, Ordering::Relaxed);
            forget(&self.table, &self.name, &self.shared);
            tracing::debug!("room finished");
        }
        .instrument(span)
    }

    async fn on_wake(&mut self, wake: Wake) {
        match wake {
            Wake::Command(cmd) => {
                // Looking at a room does not keep it awake.
                if !matches!(*cmd, Command::Status { .. } | Command::ReplayKv { .. }) {
                    self.last_activity = Instant::now();
                }
                self.handle(*cmd).await;
            }
            Wake::Timer => {
                self.timer = None;
                self.last_activity = Instant::now();
                if let Ok(actions) = self.call(async |i| i.on_timer().await).await {
                    self.apply(actions, None).await;
                }
            }
            Wake::Idle => {
                if self.members.is_empty() {
                    self.close(Ending::Closed("empty".into())).await;
                } else {
                    self.hibernate().await;
                }
                self.last_activity = Instant::now();
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join {
                peer,
                outbox,
                reply,
            } => {
                let r = self.join(peer, outbox).await;
                let _ = reply.send(r);
            }
            Command::Rejoin {
                peer,
                outbox,
                reply,
            } => {
                let _ = reply.send(self.rejoin(peer, outbox));
            }
            Command::Leave { peer_id, reason } => self.leave(&peer_id, reason, true).await,
            Command::Message { message } => {
                if self.member(&message.sender).is_none() {
                    return;
                }
                let sender = message.sender.clone();
                match self.call(async |i| i.on_message(&message).await).await {
                    Ok(actions) => self.apply(actions, Some(&sender)).await,
                    Err(e) => self.module_error(&sender, &e),
                }
            }
            Command::Signal { signal } => {
                let sender = signal.sender.clone();
                match self.call(async |i| i.on_signal(&signal).await).await {
                    Ok(actions) => {
                        let rejected = actions.iter().any(|a| matches!(a, Action::Reject(_)));
                        self.apply(actions, Some(&sender)).await;
                        if !rejected {
                            self.deliver_signal(signal);
                        }
                    }
                    Err(e) => self.module_error(&sender, &e),
                }
            }
            Command::Kick { peer_id, reason } => self.kick(&peer_id, &reason).await,
            Command::SetMetadata { metadata } => self.set_metadata(metadata),
            Command::Hibernate { reply } => {
                let _ = reply.send(self.hibernate().await);
            }
            Command::Status { reply } => {
                let _ = reply.send(RoomStatus {
                    live: self.instance.is_some(),
                    hibernated: self.snapshot.is_some(),
                    members: self.members.len(),
                    recent_traps: self.traps.len(),
                    version: self.function.version().to_owned(),
                });
            }
            Command::Close { ending } => self.close(ending).await,
            Command::Upgrade { function, reply } => {
                let r = self.upgrade(function).await;
                let _ = reply.send(r);
            }
            Command::TakeSnapshot { reply } => {
                let snap = if self.hibernate().await {
                    self.snapshot
                        .as_ref()
                        .map(|s| (s.version.clone(), s.state.clone()))
                } else {
                    self.snapshot
                        .as_ref()
                        .map(|s| (s.version.clone(), s.state.clone()))
                };
                let _ = reply.send(snap);
            }
            Command::Image { reply } => {
                let _ = reply.send(self.image().await);
            }
            Command::PutSnapshot { version, state } => {
                self.instance = None;
                if self.snapshot.replace(Snapshot { version, state }).is_none() {
                    self.config.metrics.hibernated.inc();
                }
                // It existed elsewhere: a new instance restores, not creates.
                self.created = true;
            }
            Command::ReplayKv { reply } => {
                let kv = self.function.kv().clone();
                let room = self.name.clone();
                let r = tokio::task::spawn_blocking(move || kv.replay(&room))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                let _ = reply.send(r);
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.members.iter().map(|m| m.peer.clone()).collect());
            }
            Command::Announce { to, data } => {
                let d = Delivery::Message {
                    from: "".into(),
                    data: data.into(),
                    id: 0,
                };
                match to {
                    Some(id) => {
                        if let Some(m) = self.member(&id) {
                            let _ = m.outbox.send(d);
                        }
                    }
                    None => self.broadcast(&d, None),
                }
            }
        }
    }

    fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| &*m.peer.id == id)
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
