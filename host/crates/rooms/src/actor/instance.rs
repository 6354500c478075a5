//! The life of a room's component instance: revived on demand, its kv
//! committed after each call, dropped on a trap or when the room sleeps,
//! moved to a new version, and gone when the room closes.

use super::{RoomActor, Snapshot};
use crate::delivery::{Delivery, LeaveReason};
use crate::handle::Ending;

use roomlet_events::{Event, EventKind};
use roomlet_runtime::bindings::room::CreateCause;
use roomlet_runtime::{CallError, RoomInstance, RoomsFunction};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

impl RoomActor {
    /// Runs one hook on the live instance (reviving it first), commits its
    /// kv writes when it returns, and drops the instance when it fails.
    pub(super) async fn call<R>(
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
    pub(super) async fn revive(&mut self) -> Result<(), CallError> {
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
    pub(super) async fn commit(&mut self) {
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

    pub(super) async fn trapped(&mut self, e: &CallError) {
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
                .message(&e.to_string())
                .module_version(self.function.version()),
        );
        if self.traps.len() >= self.config.trap_limit as usize {
            Box::pin(self.close(Ending::Closed("module-failed".into()))).await;
        }
    }

    /// Moves the room to `function`: snapshot from the old instance (or
    /// the hibernation snapshot), restore into a new one. When anything
    /// fails the room keeps its old instance and state, untouched.
    pub(super) async fn upgrade(&mut self, function: Arc<RoomsFunction>) -> Result<(), String> {
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
    pub(super) fn take_snapshot(&mut self) -> Option<Snapshot> {
        let s = self.snapshot.take();
        if s.is_some() {
            self.config.metrics.hibernated.dec();
        }
        s
    }

    /// Snapshots the module's in-memory state and drops the instance.
    pub(super) async fn hibernate(&mut self) -> bool {
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

    pub(super) async fn close(&mut self, ending: Ending) {
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
