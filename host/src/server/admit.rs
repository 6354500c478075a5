//! Admission on the HTTP front: which accepted sockets a listener keeps,
//! so that no client can starve the node of file descriptors.
//!
//! Every accepted socket holds a [`Socket`] until it closes (through its
//! WebSocket session, when it becomes one), and a listener keeps no more
//! than its budget: for the public one, the open-file soft limit (raised to
//! the hard one at start) less what was open at start and
//! `limits.reserved_fds`, which data files, NATS reconnects, webhooks and
//! the internal listener draw on. A socket that has not upgraded also
//! holds a [`Pending`] slot. At `limits.max_pending_connections`, or at the
//! budget, the oldest pending connection is closed to admit the new one,
//! so clients that stall or trickle a request head, or idle on a
//! keep-alive, cannot lock real clients out (hyper's head deadline,
//! `request_head_timeout_ms`, closes them in any case). Only when every
//! socket left is a WebSocket is a new connection refused, with HTTP 503.
//! `limits.max_connections_per_source` (off by default) caps one address.

use parking_lot::Mutex;
use roomlet_gateway::config::LimitsSection;
use roomlet_telemetry::{IntCounter, Registry};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// Connections the internal listener (metrics, admin) holds at once; the
/// oldest is closed for a new one. They come out of `reserved_fds`.
pub(super) const INTERNAL_CONNECTIONS: usize = 32;

/// How long a connection accepted at the budget waits for the one closed
/// for it to be gone before it is refused.
const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// A warning that repeats is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// One listener's admission: its open sockets and its pending table.
pub(super) struct Admission {
    listener: &'static str,
    /// Most open sockets.
    budget: usize,
    /// Most sockets not yet upgraded.
    max_pending: usize,
    /// Most open sockets per address; 0: no cap.
    per_source: usize,
    table: Mutex<Table>,
    /// Woken when a socket closes or an evicted slot is freed.
    released: Notify,
    accept_errors: IntCounter,
    logs: Mutex<Logs>,
}

#[derive(Default)]
struct Table {
    open: usize,
    next_id: u64,
    /// Pending slots by age (ids only grow): dropping one's sender tells
    /// its connection to close.
    pending: BTreeMap<u64, oneshot::Sender<()>>,
    /// Slots evicted whose connections have not ended yet.
    closing: usize,
    /// Open sockets per address (kept only with a per-source cap).
    sources: HashMap<IpAddr, usize>,
}

impl Table {
    fn evict_oldest(&mut self) -> bool {
        let evicted = self.pending.pop_first().is_some();
        self.closing += usize::from(evicted);
        evicted
    }
}

/// The warnings a listener rate-limits.
#[derive(Default)]
struct Logs {
    accept_errors: Throttle,
    refusals: Throttle,
}

/// Why a new connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Its address has `max_connections_per_source` open already.
    PerSource,
    /// The listener is at its budget and none of its sockets can go:
    /// every one is a WebSocket.
    Full,
}

/// An accepted socket, counted against its listener's budget until the
/// last holder (its connection, its upgrade, its session) lets go.
pub(super) struct Socket {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Drop for Socket {
    fn drop(&mut self) {
        let a = &self.admission;
        {
            let mut t = a.table.lock();
            t.open -= 1;
            if let Some(n) = t.sources.get_mut(&self.source) {
                *n -= 1;
                if *n == 0 {
                    t.sources.remove(&self.source);
                }
            }
        }
        a.released.notify_one();
    }
}

/// A connection's place in the pending table, until it upgrades or ends.
pub(super) struct Pending {
    admission: Arc<Admission>,
    id: u64,
    evicted: oneshot::Receiver<()>,
}

impl Pending {
    /// Resolves when the slot is taken for a newer connection: the
    /// connection is to close.
    pub(super) async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let a = &self.admission;
        let evicted = {
            let mut t = a.table.lock();
            let evicted = t.pending.remove(&self.id).is_none();
            if evicted {
                t.closing -= 1;
            }
            evicted
        };
        if evicted {
            a.released.notify_one();
        }
    }
}

impl Admission {
    fn new(
        listener: &'static str,
        budget: usize,
        max_pending: usize,
        per_source: usize,
        accept_errors: IntCounter,
    ) -> Arc<Self> {
        Arc::new(Self {
            listener,
            budget: budget.max(1),
            max_pending: max_pending.max(1),
            per_source,
            table: Mutex::default(),
            released: Notify::new(),
            accept_errors,
            logs: Mutex::default(),
        })
    }

    /// Admits a socket just accepted from `source`, closing the oldest
    /// pending connection when the table or the budget is full. The
    /// connection's task must drop the [`Socket`] (once its connection is
    /// closed) before the [`Pending`]: admission counts on that order.
    pub(super) async fn admit(
        self: &Arc<Self>,
        source: IpAddr,
    ) -> Result<(Arc<Socket>, Pending), Refused> {
        let give_up = Instant::now() + RELEASE_WAIT;
        loop {
            {
                let mut t = self.table.lock();
                if self.per_source > 0
                    && t.sources.get(&source).copied().unwrap_or(0) >= self.per_source
                {
                    return Err(Refused::PerSource);
                }
                while t.pending.len() >= self.max_pending && t.evict_oldest() {}
                if t.open < self.budget {
                    return Ok(self.register(&mut t, source));
                }
                // At the budget: one pending connection closes for this
                // one, unless one closing already will do.
                if t.open.saturating_sub(t.closing) >= self.budget && !t.evict_oldest() {
                    return Err(Refused::Full);
                }
            }
            // The slot's socket is gone once its task runs: soon.
            if tokio::time::timeout_at(give_up, self.released.notified())
                .await
                .is_err()
            {
                return Err(Refused::Full);
            }
        }
    }

    fn register(self: &Arc<Self>, t: &mut Table, source: IpAddr) -> (Arc<Socket>, Pending) {
        t.open += 1;
        if self.per_source > 0 {
            *t.sources.entry(source).or_default() += 1;
        }
        let id = t.next_id;
        t.next_id += 1;
        let (tx, rx) = oneshot::channel();
        t.pending.insert(id, tx);
        let socket = Arc::new(Socket {
            admission: self.clone(),
            source,
        });
        let pending = Pending {
            admission: self.clone(),
            id,
            evicted: rx,
        };
        (socket, pending)
    }

    /// Counts a failed `accept` and logs it (at most once per 10 s). Out
    /// of file descriptors, the oldest pending connection is closed to
    /// free one.
    pub(super) fn accept_failed(&self, error: &std::io::Error) {
        self.accept_errors.inc();
        if out_of_files(error) {
            self.table.lock().evict_oldest();
        }
        if let Some(suppressed) = self.logs.lock().accept_errors.ready(Instant::now()) {
            tracing::warn!(listener = self.listener, %error, suppressed, "accept failed");
        }
    }

    /// Logs a refusal: a full listener at most once per 10 s.
    pub(super) fn refused(&self, why: Refused, client: std::net::SocketAddr) {
        match why {
            Refused::PerSource => tracing::debug!(
                listener = self.listener,
                %client,
                "refused: too many connections from this address"
            ),
            Refused::Full => {
                if let Some(suppressed) = self.logs.lock().refusals.ready(Instant::now()) {
                    tracing::warn!(
                        listener = self.listener,
                        budget = self.budget,
                        suppressed,
                        "refusing connections: every socket the open-file limit allows is a WebSocket"
                    );
                }
            }
        }
    }
}

/// The public and the internal listener's admission. Raises the
/// open-file soft limit to the hard one first and logs what it got; call
/// once the node's files are open, just before the listeners accept.
pub(super) fn gates(
    limits: &LimitsSection,
    registry: &Registry,
) -> (Arc<Admission>, Arc<Admission>) {
    let limit = raise_open_file_limit();
    let open_at_start = open_fds();
    let budget = fd_budget(limit.soft, open_at_start, limits.reserved_fds);
    let shown = |l: Option<u64>| l.map_or("unlimited".to_owned(), |n| n.to_string());
    tracing::info!(
        soft = %shown(limit.soft),
        hard = %shown(limit.hard),
        was = %shown(limit.was),
        open_at_start,
        reserved = limits.reserved_fds,
        public_sockets = budget,
        "open-file limit"
    );
    if budget < limits.max_connections {
        tracing::warn!(
            max_connections = limits.max_connections,
            public_sockets = budget,
            "the open-file limit allows fewer sockets than limits.max_connections; raise the hard limit (ulimit -Hn, LimitNOFILE=, --ulimit nofile=)"
        );
    }
    let errors = registry.counter_vec(
        "roomlet_accept_errors_total",
        "Failed accepts on a listener (out of file descriptors and the like).",
        &["listener"],
    );
    let public = Admission::new(
        "public",
        budget,
        limits.max_pending_connections,
        limits.max_connections_per_source,
        errors.with_label_values(&["public"]),
    );
    let internal = Admission::new(
        "internal",
        INTERNAL_CONNECTIONS,
        INTERNAL_CONNECTIONS,
        0,
        errors.with_label_values(&["internal"]),
    );
    (public, internal)
}

/// The public listener's budget: what the soft limit leaves after the
/// descriptors open at start and the reserve (but at least half of what
/// it leaves, with a limit too low for the reserve). `None`: no limit.
fn fd_budget(soft: Option<u64>, open_at_start: usize, reserved: usize) -> usize {
    let Some(soft) = soft else {
        return usize::MAX;
    };
    let left = usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(open_at_start);
    left.saturating_sub(reserved).max(left / 2)
}

/// The open-file limit (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileLimit {
    /// In force now.
    soft: Option<u64>,
    hard: Option<u64>,
    /// The soft limit before it was raised.
    was: Option<u64>,
}

#[cfg(unix)]
fn raise_open_file_limit() -> FileLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    if before.current != before.maximum {
        let raised = Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open-file soft limit to the hard limit");
        }
    }
    let now = getrlimit(Resource::Nofile);
    FileLimit {
        soft: now.current,
        hard: now.maximum,
        was: before.current,
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> FileLimit {
    FileLimit {
        soft: None,
        hard: None,
        was: None,
    }
}

/// Descriptors this process has open (0 where it cannot tell).
fn open_fds() -> usize {
    ["/proc/self/fd", "/dev/fd"]
        .iter()
        .find_map(|d| std::fs::read_dir(d).ok())
        .map_or(0, |d| d.count())
}

/// Whether `accept` failed for want of a file descriptor.
fn out_of_files(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        use rustix::io::Errno;
        matches!(Errno::from_io_error(e), Some(Errno::MFILE | Errno::NFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// A warning's rate limit: at most one per [`LOG_EVERY`].
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// Whether to log now, with how many were not logged since the last.
    fn ready(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn admission(budget: usize, max_pending: usize, per_source: usize) -> Arc<Admission> {
        Admission::new(
            "test",
            budget,
            max_pending,
            per_source,
            Registry::unserved().counter("accept_errors", "test"),
        )
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    async fn admit(a: &Arc<Admission>, ip: IpAddr) -> (Arc<Socket>, Pending) {
        a.admit(ip).await.expect("admitted")
    }

    /// Whether the slot was evicted, without waiting.
    fn is_evicted(p: &mut Pending) -> bool {
        p.evicted
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
    }

    #[tokio::test]
    async fn a_full_pending_table_closes_its_oldest() {
        let a = admission(100, 2, 0);
        let (_s1, mut p1) = admit(&a, A).await;
        let (_s2, mut p2) = admit(&a, A).await;
        let (_s3, mut p3) = admit(&a, A).await;
        assert!(is_evicted(&mut p1), "the oldest went");
        assert!(!is_evicted(&mut p2) && !is_evicted(&mut p3));
    }

    #[tokio::test]
    async fn at_the_budget_a_new_socket_waits_for_the_oldest_to_close() {
        let a = admission(2, 10, 0);
        let (s1, mut p1) = admit(&a, A).await;
        let (_s2, _p2) = admit(&a, A).await;
        let closer = tokio::spawn(async move {
            p1.evicted().await;
            drop(s1);
            drop(p1);
        });
        let (_s3, _p3) = admit(&a, A).await;
        closer.await.expect("the oldest was told to close");
        assert_eq!(a.table.lock().open, 2);
    }

    #[tokio::test]
    async fn upgraded_sockets_are_not_evicted_and_a_full_listener_refuses() {
        let a = admission(2, 10, 0);
        let (_s1, p1) = admit(&a, A).await;
        let (_s2, p2) = admit(&a, A).await;
        // Both upgraded: out of the pending table, still open.
        drop((p1, p2));
        let started = Instant::now();
        assert_eq!(a.admit(A).await.err(), Some(Refused::Full));
        assert!(started.elapsed() < RELEASE_WAIT, "refused at once");
    }

    #[tokio::test]
    async fn the_per_source_cap_counts_open_sockets_of_one_address() {
        let a = admission(100, 100, 2);
        let (s1, p1) = admit(&a, A).await;
        let (_s2, _p2) = admit(&a, A).await;
        assert_eq!(a.admit(A).await.err(), Some(Refused::PerSource));
        let (_s3, _p3) = admit(&a, B).await;
        drop((s1, p1));
        let (_s4, _p4) = admit(&a, A).await;
        assert_eq!(a.table.lock().sources.get(&A), Some(&2));
    }

    #[test]
    fn the_budget_keeps_the_reserve_and_at_least_half() {
        assert_eq!(fd_budget(Some(1024), 40, 128), 856);
        assert_eq!(fd_budget(Some(200), 40, 128), 80);
        assert_eq!(fd_budget(None, 40, 128), usize::MAX);
        assert_eq!(fd_budget(Some(10), 40, 128), 0);
    }

    #[test]
    fn a_repeated_warning_is_logged_once_per_interval_with_the_count_between() {
        let mut t = Throttle::default();
        let start = Instant::now();
        assert_eq!(t.ready(start), Some(0));
        assert_eq!(t.ready(start + Duration::from_secs(1)), None);
        assert_eq!(t.ready(start + Duration::from_secs(9)), None);
        assert_eq!(t.ready(start + LOG_EVERY), Some(2));
    }
}
