//! [`RoomActor`]: the task that owns one room.

use super::config::RoomsConfig;
use super::delivery::{Delivery, LeaveReason};
use super::handle::{Command, Ending, JoinError, Joined, RoomStatus};
use super::inbox::Outbox;
use super::members::RoomShared;
use super::table::{RoomTable, forget};
use roomlet_events::{Event, EventKind};
use roomlet_protocol::ErrorCode;
use roomlet_runtime::bindings::room::{Action, CreateCause, Outgoing};
use roomlet_runtime::bindings::types::{Grants, Peer, Signal};
use roomlet_runtime::{CallError, RoomInstance, RoomsFunction};
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
            let _ = self
                .config
                .events
                .record(Event::new(EventKind::RoomOpened, &self.name));
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

    async fn join(&mut self, peer: Peer, outbox: Outbox) -> Result<Joined, JoinError> {
        if self.members.len() >= self.config.max_peers_per_room {
            return Err(JoinError::Refused {
                code: ErrorCode::RoomFull,
                reason: format!(
                    "room is full (this node allows {} peers per room)",
                    self.config.max_peers_per_room
                ),
            });
        }
        if self.member(&peer.id).is_some() {
            return Err(JoinError::Refused {
                code: ErrorCode::AlreadyJoined,
                reason: "a peer with this id is already in the room".into(),
            });
        }
        let actions = match self.call(async |i| i.on_join(&peer).await).await {
            Ok(Ok(actions)) => actions,
            Ok(Err(rejection)) => return Err(JoinError::Rejected(rejection)),
            Err(e) => return Err(JoinError::Module(e.to_string())),
        };
        let peer = Arc::new(peer);
        let durable = self
            .config
            .events
            .record(Event::new(EventKind::PeerJoined, &self.name).peer(&peer.id, &peer.identity));
        let joined = Joined {
            durable,
            peers: self
                .members
                .iter()
                .filter(|m| !m.peer.grants.contains(Grants::HIDDEN))
                .map(|m| m.peer.clone())
                .collect(),
            metadata: self.metadata.to_string(),
        };
        if !peer.grants.contains(Grants::HIDDEN) {
            self.broadcast(&Delivery::PeerJoined(peer.clone()), None);
        }
        self.shared
            .members
            .write()
            .insert(peer.id.as_str().into(), (outbox.clone(), peer.grants));
        self.config.metrics.peers.inc();
        self.members.push(Member {
            peer: peer.clone(),
            outbox,
        });
        self.refresh_peers();
        tracing::debug!(peer = %peer.id, identity = %peer.identity, "peer joined");
        self.apply(actions, Some(&peer.id)).await;
        Ok(joined)
    }

    fn rejoin(&mut self, peer: Peer, outbox: Outbox) -> Joined {
        let joined = Joined {
            // A re-report after a move: the join was logged where it happened.
            durable: roomlet_events::Receipt::ready(Ok(())),
            peers: self
                .members
                .iter()
                .filter(|m| !m.peer.grants.contains(Grants::HIDDEN) && m.peer.id != peer.id)
                .map(|m| m.peer.clone())
                .collect(),
            metadata: self.metadata.to_string(),
        };
        let peer = Arc::new(peer);
        self.shared
            .members
            .write()
            .insert(peer.id.as_str().into(), (outbox.clone(), peer.grants));
        match self.members.iter_mut().find(|m| m.peer.id == peer.id) {
            Some(m) => m.outbox = outbox,
            None => {
                self.config.metrics.peers.inc();
                self.members.push(Member { peer, outbox });
            }
        }
        self.refresh_peers();
        joined
    }

    /// Removes a member; `notify_module` calls `on-leave`.
    async fn leave(&mut self, peer_id: &str, reason: LeaveReason, notify_module: bool) {
        let Some(pos) = self.members.iter().position(|m| &*m.peer.id == peer_id) else {
            return;
        };
        let member = self.members.remove(pos);
        self.config.metrics.peers.dec();
        self.shared.members.write().remove(peer_id);
        self.refresh_peers();
        if !member.peer.grants.contains(Grants::HIDDEN) {
            self.broadcast(
                &Delivery::PeerLeft {
                    peer_id: member.peer.id.as_str().into(),
                    reason,
                },
                None,
            );
        }
        tracing::debug!(peer = %peer_id, reason = reason.as_str(), "peer left");
        let kind = match reason {
            LeaveReason::Kicked => EventKind::PeerKicked,
            _ => EventKind::PeerLeft,
        };
        let _ = self.config.events.record(
            Event::new(kind, &self.name)
                .peer(peer_id, &member.peer.identity)
                .reason(reason.as_str()),
        );
        if notify_module
            && let Ok(actions) = self.call(async |i| i.on_leave(&member.peer).await).await
        {
            self.apply(actions, None).await;
        }
    }

    async fn kick(&mut self, peer_id: &str, reason: &str) {
        if let Some(m) = self.member(peer_id) {
            let _ = m.outbox.send(Delivery::Kicked {
                reason: reason.to_owned(),
            });
            self.leave(peer_id, LeaveReason::Kicked, true).await;
        }
    }

    fn set_metadata(&mut self, metadata: String) {
        self.metadata = metadata.into();
        self.broadcast(&Delivery::Metadata(self.metadata.clone()), None);
    }

    /// The membership changed: the module's copy is rebuilt on next use.
    fn refresh_peers(&mut self) {
        self.peers = None;
    }

    /// The members as the module sees them.
    fn peers(&mut self) -> Arc<Vec<Peer>> {
        self.peers
            .get_or_insert_with(|| {
                Arc::new(self.members.iter().map(|m| (*m.peer).clone()).collect())
            })
            .clone()
    }

    fn broadcast(&self, delivery: &Delivery, except: Option<&[String]>) {
        for m in &self.members {
            if except.is_some_and(|ex| ex.iter().any(|e| *e == m.peer.id)) {
                continue;
            }
            let _ = m.outbox.send(delivery.clone());
        }
    }

    fn deliver_signal(&self, signal: Signal) {
        if let Some(m) = self.member(&signal.to) {
            let _ = m.outbox.send(Delivery::Signal {
                from: signal.sender.into(),
                kind: signal.kind,
                payload: signal.payload.into(),
            });
        }
    }

    fn module_error(&self, sender: &str, e: &CallError) {
        if let Some(m) = self.member(sender) {
            let _ = m.outbox.send(Delivery::Error {
                code: ErrorCode::ModuleError,
                message: format!("the room's module failed on this frame ({})", e.kind()).into(),
            });
        }
    }

    /// Runs what a hook asked for. `sender` is the peer whose frame is
    /// being handled (the target of `reject`).
    async fn apply(&mut self, actions: Vec<Action>, sender: Option<&str>) {
        for action in actions {
            if self.closed {
                return;
            }
            match action {
                Action::Send((to, out)) => {
                    let d = outgoing(out);
                    for id in to {
                        if let Some(m) = self.member(&id) {
                            let _ = m.outbox.send(d.clone());
                        }
                    }
                }
                Action::Broadcast((out, except)) => {
                    self.broadcast(&outgoing(out), Some(&except));
                }
                Action::Reject(r) => {
                    if let Some(m) = sender.and_then(|s| self.member(s)) {
                        let _ = m.outbox.send(Delivery::Rejected {
                            code: r.code.into(),
                            message: r.reason.into(),
                        });
                    }
                }
                Action::Kick((peer_id, reason)) => {
                    if let Some(m) = self.member(&peer_id) {
                        let _ = m.outbox.send(Delivery::Kicked { reason });
                        // The module asked for it: it is not told again.
                        Box::pin(self.leave(&peer_id, LeaveReason::Kicked, false)).await;
                    }
                }
                Action::SetMetadata(m) => self.set_metadata(m),
                Action::SetTimer(ms) => {
                    self.timer = Some(Instant::now() + Duration::from_millis(ms).min(MAX_TIMER));
                }
                Action::Close(reason) => Box::pin(self.close(Ending::Closed(reason))).await,
            }
        }
    }

    /// Runs one hook on the live instance (reviving it first), commits its
    /// kv writes when it returns, and drops the instance when it fails.
    async fn call<R>(
        &mut self,
        f: impl AsyncFnOnce(&mut RoomInstance) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        if self.instance.is_none() {
            self.revive().await?;
        }
        let peers = self.peers();
        let Some(instance) = self.instance.as_mut() else {
            return Err(CallError::Instantiate("no instance".into()));
        };
        instance.set_peers(peers);
        match f(instance).await {
            Ok(r) => {
                self.commit().await;
                Ok(r)
            }
            Err(e) => {
                self.instance = None;
                self.trapped(&e).await;
                Err(e)
            }
        }
    }

    /// A new instance: restored from the hibernation snapshot, or created
    /// (fresh the first time, recovered after a trap).
    async fn revive(&mut self) -> Result<(), CallError> {
        let peers = self.peers();
        let mut instance = self
            .function
            .instantiate(self.name.clone(), peers)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "cannot instantiate room"))?;
        let restored = match self.take_snapshot() {
            Some(s) => match instance.restore(&s.version, &s.state).await {
                Ok(Ok(())) => true,
                Ok(Err(reason)) => {
                    tracing::warn!(%reason, "module refused its own snapshot; starting it as recovered");
                    false
                }
                Err(e) => {
                    self.trapped(&e).await;
                    return Err(e);
                }
            },
            None => false,
        };
        if !restored {
            let cause = if self.created {
                CreateCause::Recovered
            } else {
                CreateCause::Fresh
            };
            match instance.on_create(cause).await {
                Ok(settings) => self
                    .shared
                    .set_observe(settings.observe_signals, settings.observe_messages),
                Err(e) => {
                    self.trapped(&e).await;
                    return Err(e);
                }
            }
            self.created = true;
        }
        self.instance = Some(Box::new(instance));
        self.commit().await;
        Ok(())
    }

    /// Commits the last call's kv writes.
    async fn commit(&mut self) {
        let Some(instance) = self.instance.as_mut() else {
            return;
        };
        let writes = instance.take_writes();
        if writes.is_empty() {
            return;
        }
        let kv = self.function.kv().clone();
        let room = self.name.clone();
        // redb commits fsync: keep that off the async workers.
        let r = tokio::task::spawn_blocking(move || {
            kv.commit(
                &room,
                writes.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
            )
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "kv commit failed"),
            Err(e) => tracing::error!(error = %e, "kv commit task failed"),
        }
    }

    async fn trapped(&mut self, e: &CallError) {
        let now = Instant::now();
        self.traps.push_back(now);
        while self
            .traps
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.config.trap_window)
        {
            self.traps.pop_front();
        }
        tracing::warn!(
            kind = e.kind(),
            error = %e,
            module_version = self.function.version(),
            recent_traps = self.traps.len(),
            "room module failed; its instance is discarded"
        );
        let _ = self.config.events.record(
            Event::new(EventKind::ComponentError, &self.name)
                .reason(e.kind())
                .module_version(self.function.version()),
        );
        if self.traps.len() >= self.config.trap_limit as usize {
            Box::pin(self.close(Ending::Closed("module-failed".into()))).await;
        }
    }

    /// Moves the room to `function`: snapshot from the old instance (or
    /// the hibernation snapshot), restore into a new one. When anything
    /// fails the room keeps its old instance and state, untouched.
    async fn upgrade(&mut self, function: Arc<RoomsFunction>) -> Result<(), String> {
        let carried = match self.instance.as_mut() {
            Some(old) => {
                let version = old
                    .state_version()
                    .await
                    .map_err(|e| format!("old version failed to snapshot: {e}"))?;
                let state = old
                    .snapshot()
                    .await
                    .map_err(|e| format!("old version failed to snapshot: {e}"))?;
                Some(Snapshot { version, state })
            }
            None => None,
        };
        let peers = self.peers();
        let snapshot = carried.as_ref().or(self.snapshot.as_ref());
        let mut new = function
            .instantiate(self.name.clone(), peers)
            .await
            .map_err(|e| format!("new version failed to instantiate: {e}"))?;
        let settings = match snapshot {
            Some(s) => {
                match new.restore(&s.version, &s.state).await {
                    Ok(Ok(())) => {}
                    Ok(Err(reason)) => {
                        return Err(format!("new version refused the snapshot: {reason}"));
                    }
                    Err(e) => return Err(format!("new version failed to restore: {e}")),
                }
                None
            }
            None => {
                let cause = if self.created {
                    CreateCause::Recovered
                } else {
                    CreateCause::Fresh
                };
                Some(
                    new.on_create(cause)
                        .await
                        .map_err(|e| format!("new version failed on-create: {e}"))?,
                )
            }
        };
        if let Some(settings) = settings {
            self.shared
                .set_observe(settings.observe_signals, settings.observe_messages);
        }
        self.created = true;
        self.take_snapshot();
        self.instance = Some(Box::new(new));
        self.function = function;
        self.commit().await;
        tracing::info!(
            module_version = self.function.version(),
            "room moved to a new module version"
        );
        Ok(())
    }

    /// Takes the hibernation snapshot, keeping the gauge in step.
    fn take_snapshot(&mut self) -> Option<Snapshot> {
        let s = self.snapshot.take();
        if s.is_some() {
            self.config.metrics.hibernated.dec();
        }
        s
    }

    /// Snapshots the module's in-memory state and drops the instance.
    async fn hibernate(&mut self) -> bool {
        let Some(instance) = self.instance.as_mut() else {
            return false;
        };
        let version = instance.state_version().await;
        let state = match version {
            Ok(v) => instance.snapshot().await.map(|s| (v, s)),
            Err(e) => Err(e),
        };
        self.instance = None;
        self.peers = None;
        match state {
            Ok((version, state)) => {
                tracing::debug!(bytes = state.len(), "room hibernated");
                if self.snapshot.replace(Snapshot { version, state }).is_none() {
                    self.config.metrics.hibernated.inc();
                }
                true
            }
            Err(e) => {
                self.trapped(&e).await;
                false
            }
        }
    }

    async fn close(&mut self, ending: Ending) {
        let reason = ending.reason();
        if self.closed {
            return;
        }
        self.closed = true;
        self.shared.closed.store(true, Ordering::Relaxed);
        self.config.metrics.peers.sub(self.members.len() as i64);
        self.take_snapshot();
        for m in self.members.drain(..) {
            let _ = self.config.events.record(
                Event::new(EventKind::PeerLeft, &self.name)
                    .peer(&m.peer.id, &m.peer.identity)
                    .reason(LeaveReason::Closed.as_str()),
            );
            let _ = m.outbox.send(match &ending {
                Ending::Closed(reason) => Delivery::Closed {
                    reason: reason.clone(),
                },
                Ending::Moved => Delivery::Moved,
            });
        }
        self.shared.members.write().clear();
        self.instance = None;
        tracing::info!(reason, "room closed");
        let _ = self
            .config
            .events
            .record(Event::new(EventKind::RoomClosed, &self.name).reason(reason));
    }
}

fn outgoing(out: Outgoing) -> Delivery {
    Delivery::Message {
        from: out.sender.into(),
        data: out.data.into(),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
