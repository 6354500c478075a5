//! When a session tells its client which frame ids it has handled.
//!
//! A standalone `confirmed` costs as much as relaying a frame (a write
//! through the WebSocket and TCP layers), and a client sending one frame a
//! second would pay one per frame. So a confirmation waits for a write to
//! ride with: the next batch of deliveries to this client carries it. Only
//! when nothing is written for [`CONFIRM_WITHIN`] does it go alone. Either
//! way at most one per [`CONFIRM_EVERY`]: a burst is confirmed once.

use crate::conn::Conn;
use crate::resume::PeerState;
use roomlet_protocol::ServerFrame;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

/// The least time between two confirmations.
pub(crate) const CONFIRM_EVERY: Duration = Duration::from_millis(100);

/// How long a confirmation waits for a write to ride with.
pub(crate) const CONFIRM_WITHIN: Duration = Duration::from_secs(1);

/// A session's confirmations: when the last went, and the timer of the
/// waiting one. The timer is allocated at the first id and reset after,
/// so a session that never numbers its frames holds no timer and one that
/// does allocates it once.
#[derive(Default)]
pub(crate) struct Confirms {
    last: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Confirms {
    /// Whether a confirmation waits on the timer.
    pub fn armed(&self) -> bool {
        self.armed
    }

    /// Resolves when the waiting confirmation must go alone.
    pub async fn wait(&mut self) {
        if let Some(t) = self.timer.as_mut() {
            t.await;
        }
    }

    /// After a client frame: arms the timer if an id waits for its
    /// confirmation and none is armed.
    pub fn after_frame(&mut self, state: &PeerState) {
        if self.armed || state.ids.due().is_none() {
            return;
        }
        let mut at = Instant::now() + CONFIRM_WITHIN;
        if let Some(last) = self.last {
            at = at.max(last + CONFIRM_EVERY);
        }
        match self.timer.as_mut() {
            Some(t) => t.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = true;
    }

    /// Queues the waiting confirmation into a write about to be flushed,
    /// unless the last one went less than [`CONFIRM_EVERY`] ago. `false`
    /// when the socket failed.
    pub async fn ride<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        state: &mut PeerState,
    ) -> bool {
        if !self.armed || self.last.is_some_and(|t| t.elapsed() < CONFIRM_EVERY) {
            return true;
        }
        match self.take(state) {
            Some(frame) => conn.feed(&frame).await,
            None => true,
        }
    }

    /// Sends the waiting confirmation alone (the timer fired). `false`
    /// when the socket failed.
    pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        state: &mut PeerState,
    ) -> bool {
        match self.take(state) {
            Some(frame) => conn.send(&frame).await,
            None => true,
        }
    }

    fn take(&mut self, state: &mut PeerState) -> Option<ServerFrame> {
        self.armed = false;
        let id = state.ids.due()?;
        state.ids.told = id;
        self.last = Some(Instant::now());
        Some(ServerFrame::Confirmed { id })
    }
}
