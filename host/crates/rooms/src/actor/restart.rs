//! A room across a restart of its all-in-one node: imaged on the way down,
//! started again from the image on the way up, with no leave, join, open
//! or close recorded or told to anyone.

use super::{RoomActor, Snapshot};
use crate::image::{MemberImage, RoomImage};
use crate::inbox::Outbox;
use roomlet_runtime::bindings::types::Peer;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl RoomActor {
    /// The room as it is now, its module's memory snapshotted; the room
    /// then ends here without a word (it goes on in the next process).
    pub(crate) async fn image(&mut self) -> RoomImage {
        self.hibernate().await;
        let now = Instant::now();
        let snapshot = self.take_snapshot();
        let image = RoomImage {
            name: self.name.to_string(),
            members: self
                .members
                .iter()
                .map(|m| MemberImage::from(&*m.peer))
                .collect(),
            snapshot: snapshot.map(|s| (s.version, s.state)),
            observe: (
                self.shared.observe_signals(),
                self.shared.observe_messages(),
            ),
            metadata: self.metadata.to_string(),
            created: self.created,
            timer_ms: self
                .timer
                .map(|t| t.saturating_duration_since(now).as_millis() as u64),
        };
        self.closed = true;
        self.instance = None;
        self.config.metrics.peers.sub(self.members.len() as i64);
        self.members.clear();
        self.shared.members.write().clear();
        tracing::debug!(members = image.members.len(), "room imaged for a restart");
        image
    }

    /// Takes back what [`RoomActor::image`] left: the members that have a
    /// session to come back to (`outboxes`, by peer id), the module's memory
    /// (restored by the first call, as after hibernation), its timer.
    pub(crate) fn restore(&mut self, image: RoomImage, mut outboxes: HashMap<String, Outbox>) {
        for m in image.members {
            let Some(outbox) = outboxes.remove(&m.id) else {
                continue; // its session did not make it: no ghost
            };
            self.seat(Arc::new(Peer::from(m)), outbox);
        }
        if let Some((version, state)) = image.snapshot {
            self.snapshot = Some(Snapshot { version, state });
            self.config.metrics.hibernated.inc();
        }
        self.shared.set_observe(image.observe.0, image.observe.1);
        self.metadata = image.metadata.into();
        self.created = image.created;
        self.timer = image
            .timer_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        self.restored = true;
    }
}
