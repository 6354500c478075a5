//! The room event log: joins, leaves, kicks, room open/close and
//! component errors, appended as JSON lines to size-rotated files under
//! `<data-dir>/events/`.
//!
//! An event that a client is acknowledged for (a join: `joined`) must
//! survive a crash of the node right after the acknowledgement. Syncing
//! once per event would cap a node at a few hundred joins per second, so a
//! single writer thread commits in groups: it takes everything queued,
//! writes it, syncs once, then releases every waiter the sync covered.
//! Whoever needs durability waits on the [`Receipt`]; everyone else drops it.
//!
//! Events that reached the disk are then handed to an optional listener
//! (the webhooks), so nothing is announced that the log does not hold.

mod metrics;
mod reader;
mod segments;
mod writer;

pub use reader::{Tail, read_last, tail};
pub use segments::{segment_name, segments};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use tokio::sync::oneshot;

/// `[events]` in the configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// A file is closed and a new one started once it would grow past this.
    pub max_file_bytes: u64,
    /// Files kept, the one being written included; older ones are deleted.
    pub keep_files: usize,
    /// Events waiting for the writer; when full, recording fails at once
    /// (a join is refused) instead of queueing without bound.
    pub queue: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 16 << 20,
            keep_files: 8,
            queue: 65_536,
        }
    }
}

impl EventsConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), EventLogError> {
        if self.max_file_bytes < 1024 {
            return Err(EventLogError::Config(format!(
                "events.max_file_bytes {} must be at least 1024",
                self.max_file_bytes
            )));
        }
        if self.keep_files == 0 || self.queue == 0 {
            return Err(EventLogError::Config(
                "events.keep_files and events.queue must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A room started on this node (fresh, or again after closing).
    RoomOpened,
    /// A room closed; `reason` says why.
    RoomClosed,
    /// A peer joined.
    PeerJoined,
    /// A peer left; `reason`: leave, timeout or closed.
    PeerLeft,
    /// A peer was removed by a room admin or the room's module.
    PeerKicked,
    /// The room's component failed (trap, deadline, memory cap…); `reason`
    /// is the kind of failure, `message` the whole error.
    ComponentError,
    /// A line a component wrote to stdout or stderr (a panic message);
    /// `reason` is the stream, `message` the line. Rate-limited per room.
    ComponentOutput,
}

impl EventKind {
    /// The name used in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RoomOpened => "room_opened",
            EventKind::RoomClosed => "room_closed",
            EventKind::PeerJoined => "peer_joined",
            EventKind::PeerLeft => "peer_left",
            EventKind::PeerKicked => "peer_kicked",
            EventKind::ComponentError => "component_error",
            EventKind::ComponentOutput => "component_output",
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it was recorded: RFC 3339, UTC, milliseconds.
    pub ts: String,
    /// The node that recorded it.
    pub node: String,
    /// That node's region.
    pub region: String,
    /// What happened.
    pub kind: EventKind,
    /// The room.
    pub room: String,
    /// The peer id (peer events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The peer's identity from its token (peer events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Why (leaves, kicks, closes, component errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The component version (component errors and output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_version: Option<String>,
    /// The function whose component it was (component output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// What the component said, or the whole error (component events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Event {
    /// An event about `room`; [`EventSink::record`] stamps time and node.
    pub fn new(kind: EventKind, room: &str) -> Self {
        Self {
            ts: String::new(),
            node: String::new(),
            region: String::new(),
            kind,
            room: room.to_owned(),
            peer: None,
            identity: None,
            reason: None,
            module_version: None,
            function: None,
            message: None,
        }
    }

    /// Names the peer.
    pub fn peer(mut self, id: &str, identity: &str) -> Self {
        self.peer = Some(id.to_owned());
        self.identity = Some(identity.to_owned());
        self
    }

    /// Says why.
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }

    /// Names the component version.
    pub fn module_version(mut self, version: &str) -> Self {
        self.module_version = Some(version.to_owned());
        self
    }

    /// Names the function.
    pub fn function(mut self, function: &str) -> Self {
        self.function = Some(function.to_owned());
        self
    }

    /// Says what the component said (or the whole error).
    pub fn message(mut self, message: &str) -> Self {
        self.message = Some(message.to_owned());
        self
    }
}

/// Why the event log could not take or keep an event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventLogError {
    /// Writing or syncing failed (disk full, read-only file system…).
    #[error("the event log in {dir} cannot be written: {message}")]
    Io {
        /// The log's directory.
        dir: String,
        /// The operating system's error.
        message: String,
    },
    /// More events are waiting than `events.queue` allows.
    #[error("the event log is overloaded ({0} events waiting)")]
    Overloaded(usize),
    /// The writer has stopped (the node is shutting down).
    #[error("the event log is closed")]
    Closed,
    /// The `[events]` settings are unusable.
    #[error("config: {0}")]
    Config(String),
}

/// Resolves once the event it was issued for is on disk, or failed.
#[must_use = "drop a receipt explicitly when durability does not matter"]
#[derive(Debug)]
pub struct Receipt(ReceiptInner);

#[derive(Debug)]
enum ReceiptInner {
    Ready(Result<(), EventLogError>),
    Pending(oneshot::Receiver<Result<(), EventLogError>>),
}

impl Receipt {
    /// A receipt that is already settled (no log configured, or refused).
    pub fn ready(r: Result<(), EventLogError>) -> Self {
        Self(ReceiptInner::Ready(r))
    }

    /// Waits until the event is durable.
    pub async fn wait(self) -> Result<(), EventLogError> {
        match self.0 {
            ReceiptInner::Ready(r) => r,
            ReceiptInner::Pending(rx) => rx.await.unwrap_or(Err(EventLogError::Closed)),
        }
    }
}

/// Called by the writer with each event once it is durable. Runs on the
/// writer's thread: it must not block.
pub type Listener = Box<dyn FnMut(&Event) + Send>;

enum Msg {
    Record(
        Box<Event>,
        Option<oneshot::Sender<Result<(), EventLogError>>>,
    ),
    /// Answers once everything queued before it is durable.
    Barrier(oneshot::Sender<()>),
}

/// Where rooms record events; cheap to clone. The default records nothing
/// (rooms built without a node, in tests and benchmarks).
#[derive(Clone, Default)]
pub struct EventSink {
    inner: Option<Arc<SinkInner>>,
}

struct SinkInner {
    tx: SyncSender<Msg>,
    node: String,
    region: String,
    dir: PathBuf,
    queue: usize,
    overloaded: roomlet_telemetry::IntCounter,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(i) => write!(f, "EventSink({})", i.dir.display()),
            None => f.write_str("EventSink(off)"),
        }
    }
}

/// The log's directory under a data directory.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("events")
}

impl EventSink {
    /// Opens (creating) the log in `dir` and starts its writer thread.
    /// Events are stamped with `node` and `region`.
    pub fn open(
        dir: &Path,
        config: &EventsConfig,
        node: &str,
        region: &str,
        listener: Option<Listener>,
        registry: &roomlet_telemetry::Registry,
    ) -> Result<Self, EventLogError> {
        config.validate()?;
        let writer = writer::Writer::open(dir, config)?;
        let metrics = metrics::EventsMetrics::new(registry);
        let overloaded = metrics.errors.with_label_values(&["overloaded"]);
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue);
        std::thread::Builder::new()
            .name("roomlet-events".into())
            .spawn(move || writer.run(rx, listener, metrics))
            .map_err(|e| EventLogError::Io {
                dir: dir.display().to_string(),
                message: format!("starting the writer thread: {e}"),
            })?;
        Ok(Self {
            inner: Some(Arc::new(SinkInner {
                tx,
                node: node.to_owned(),
                region: region.to_owned(),
                dir: dir.to_owned(),
                queue: config.queue,
                overloaded,
            })),
        })
    }

    /// Queues `event` (stamping time, node and region); never blocks.
    /// Await the receipt where the event must be durable before going on.
    pub fn record(&self, mut event: Event) -> Receipt {
        let Some(inner) = &self.inner else {
            return Receipt::ready(Ok(()));
        };
        event.ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        event.node.clone_from(&inner.node);
        event.region.clone_from(&inner.region);
        let (done, rx) = oneshot::channel();
        match inner.tx.try_send(Msg::Record(Box::new(event), Some(done))) {
            Ok(()) => Receipt(ReceiptInner::Pending(rx)),
            Err(TrySendError::Full(_)) => {
                inner.overloaded.inc();
                Receipt::ready(Err(EventLogError::Overloaded(inner.queue)))
            }
            Err(TrySendError::Disconnected(_)) => Receipt::ready(Err(EventLogError::Closed)),
        }
    }

    /// Waits until every event recorded so far is durable (shutdown).
    pub async fn flush(&self) {
        let Some(inner) = &self.inner else { return };
        let (tx, rx) = oneshot::channel();
        let inner = inner.clone();
        // The queue may be full: wait for room off the async workers.
        let sent = tokio::task::spawn_blocking(move || inner.tx.send(Msg::Barrier(tx)).is_ok())
            .await
            .unwrap_or(false);
        if sent {
            let _ = rx.await;
        }
    }

    /// The log's directory, when there is a log.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.as_ref().map(|i| i.dir.as_path())
    }
}
