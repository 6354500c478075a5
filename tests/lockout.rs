//! Lock-out (issue 32): connections that never finish a request head,
//! idle keep-alives and heads trickled a byte at a time cannot keep real
//! clients out. Each crowd scenario runs a real `roomlet serve` under a
//! hard open-file limit of 1,024 (prlimit) that it cannot raise, with
//! 1,000 such connections from 127.0.0.1: a new client from the same
//! address still joins within 1 s, `/healthz` answers throughout (public
//! and internal), and the server closes at least 990 of the 1,000 within
//! 40 s. The rest are smaller, in-process: the head's deadline is not reset
//! by each byte, a full pending table closes its oldest connection, and a
//! per-source cap refuses the extra connection.

use roomlet_tests::DEADLINE;
use roomlet_tests::server::{Client, Wire, dev_token, start};
use serde_json::json;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Connections in each crowd the issue states; of which the server must
/// close at least 99% …
const CROWD: usize = 1000;
/// … within this long.
const CLOSED_WITHIN: Duration = Duration::from_secs(40);
/// A new client's connect and join, while the crowd holds on.
const JOIN_WITHIN: Duration = Duration::from_secs(1);
/// A `/healthz` poll's answer.
const HEALTHZ_WITHIN: Duration = Duration::from_secs(2);
/// A trickling client's pace: one byte of its head per this.
const TRICKLE: Duration = Duration::from_secs(5);

/// An upgrade request's head, never finished (no blank line).
const HEAD: &[u8] = b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Protocol: roomlet.v1.json\r\nUser-Agent: a-very-slow-client/1.0 (trickling one byte at a time)\r\n";

/// Raises this process's open-file soft limit to its hard limit (with
/// prlimit: the tests deny `unsafe`), for three crowds at once.
fn raise_own_open_file_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
        let hard: u64 = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(4)?.parse().ok())
            .expect("a numeric hard open-file limit");
        assert!(
            hard >= 5 * CROWD as u64,
            "the hard open-file limit ({hard}) is too low for four crowds of {CROWD} or so"
        );
        let ok = Command::new("prlimit")
            .args(["--pid", &std::process::id().to_string()])
            .arg(format!("--nofile={hard}:{hard}"))
            .status()
            .expect("prlimit (util-linux) runs")
            .success();
        assert!(ok, "prlimit could not raise this process's soft limit");
    });
}

/// `roomlet serve --dev` under `prlimit --nofile=1024:1024`, killed on
/// drop. (Started here, not by `process::ServeCommand`, which runs the
/// binary itself and cannot put prlimit in front.)
struct Limited {
    child: Child,
    public: SocketAddr,
    internal: SocketAddr,
    dir: tempfile::TempDir,
}

impl Limited {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
        let mut child = Command::new("prlimit")
            .args(["--nofile=1024:1024", "--"])
            .arg(env!("CARGO_BIN_EXE_roomlet-node"))
            .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
            .args(["--internal-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env_remove("ROOMLET_CONFIG")
            .env_remove("ROOMLET_API_KEYS")
            .env(
                "RUST_LOG",
                std::env::var("ROOMLET_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("prlimit (util-linux) starts roomlet serve");
        let Some((public, internal)) =
            roomlet_tests::listening(&mut child, Duration::from_secs(120))
        else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
            panic!("roomlet serve did not start under prlimit:\n{log}");
        };
        Self {
            child,
            public,
            internal,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// The node's "open-file limit" log line, checked to say that the
    /// limit stayed at 1,024 (hard: it could not raise it).
    fn file_limit_line(&self) -> String {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("open-file limit"))
            .unwrap_or_else(|| panic!("the node logs its open-file limit:\n{log}"))
            .to_owned();
        assert!(
            line.contains("soft=1024") && line.contains("hard=1024"),
            "{line}"
        );
        line
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- node {} log (last lines) ---", self.public);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a crowd's connections hold on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crowd {
    /// Half a request head, then nothing.
    PartialHeads,
    /// One whole `GET /healthz`, answered, then idle on keep-alive.
    IdleKeepAlives,
    /// A head sent one byte every [`TRICKLE`].
    Trickle,
}

/// One of the crowd: connects, holds on as `crowd` says (`started` counts
/// it once it has sent its first bytes), and reports on `closed` when the
/// server closes it.
async fn hold_on(
    addr: SocketAddr,
    crowd: Crowd,
    started: Arc<AtomicUsize>,
    closed: mpsc::UnboundedSender<Instant>,
) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let first: &[u8] = match crowd {
        Crowd::PartialHeads => b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        Crowd::IdleKeepAlives => b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        Crowd::Trickle => &HEAD[..1],
    };
    let mut sent = s.write_all(first).await.is_ok();
    started.fetch_add(1, Ordering::SeqCst);
    let mut next = 1;
    let mut buf = [0u8; 1024];
    while sent {
        let read = match crowd {
            Crowd::Trickle => tokio::time::timeout(TRICKLE, s.read(&mut buf)).await,
            _ => Ok(s.read(&mut buf).await),
        };
        match read {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => {
                // Never the whole head: it has no blank line.
                sent = s.write_all(&HEAD[next..=next]).await.is_ok();
                next = (next + 1).min(HEAD.len() - 1);
            }
        }
    }
    let _ = closed.send(Instant::now());
}

/// `GET path` on `addr` answers 200 within [`HEALTHZ_WITHIN`]: how long it
/// took, or why not.
async fn healthz(addr: SocketAddr) -> Result<Duration, String> {
    let asked = Instant::now();
    let r = tokio::task::spawn_blocking(move || {
        roomlet_tests::http::request(addr, "GET", "/healthz", None, b"", HEALTHZ_WITHIN)
    })
    .await
    .expect("the request's thread");
    match r {
        Some(r) if r.status == 200 => Ok(asked.elapsed()),
        Some(r) => Err(format!("{addr}: {}", r.status)),
        None => Err(format!("{addr}: no answer within {HEALTHZ_WITHIN:?}")),
    }
}

/// Polls `/healthz` on every address in turn until `stop`: the slowest
/// answer, how many polls, and every failure.
async fn poll_healthz(
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
) -> (Duration, usize, Vec<String>) {
    let (mut slowest, mut polls, mut failures) = (Duration::ZERO, 0, Vec::new());
    while !stop.load(Ordering::SeqCst) {
        for addr in &addrs {
            match healthz(*addr).await {
                Ok(took) => slowest = slowest.max(took),
                Err(e) => failures.push(e),
            }
            polls += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (slowest, polls, failures)
}

/// The scenario the issue states, for a crowd of `size`.
async fn crowd_cannot_lock_out(crowd: Crowd, size: usize) {
    let must_close = size - size / 100;
    raise_own_open_file_limit();
    let node = Limited::start();
    let budget = node.file_limit_line();
    let ws_url = format!("ws://{}/v1/ws", node.public);

    let started = Arc::new(AtomicUsize::new(0));
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let mut crowd_tasks = tokio::task::JoinSet::new();
    for _ in 0..size {
        crowd_tasks.spawn(hold_on(
            node.public,
            crowd,
            started.clone(),
            closed_tx.clone(),
        ));
    }
    drop(closed_tx);
    let set_up = Instant::now();
    while started.load(Ordering::SeqCst) < size {
        assert!(
            set_up.elapsed() < Duration::from_secs(60),
            "{crowd:?}: only {} of {size} connected and sent",
            started.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_healthz(vec![node.public, node.internal], stop.clone()));

    let joining = Instant::now();
    let room = format!("after-{crowd:?}");
    let mut newcomer = tokio::time::timeout(DEADLINE, Client::connect(&ws_url, Wire::Json))
        .await
        .unwrap_or_else(|_| {
            panic!("{crowd:?}: the newcomer could not connect within {DEADLINE:?}")
        });
    newcomer.join(&room, &dev_token(&room, "newcomer")).await;
    let joined_in = joining.elapsed();

    // Every close the server made, as time after t0.
    let mut closes = Vec::with_capacity(size);
    let give_up = t0 + CLOSED_WITHIN;
    while closes.len() < size {
        match tokio::time::timeout_at(give_up, closed_rx.recv()).await {
            Ok(Some(at)) => closes.push(at.saturating_duration_since(t0)),
            Ok(None) | Err(_) => break,
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (slowest, polls, failures) = poller.await.expect("the poller");
    // Still joined after the crowd: the newcomer was not one of those closed.
    newcomer.send(json!({"type": "ping", "ts": 1})).await;
    newcomer.frame_of("pong").await;
    crowd_tasks.abort_all();

    closes.sort_unstable();
    let at_once = closes.iter().filter(|d| d.is_zero()).count();
    let by = |n: usize| closes.get(n - 1).copied();
    eprintln!(
        "{crowd:?}: newcomer joined in {joined_in:?}; {} of {size} closed within {CLOSED_WITHIN:?} \
         ({at_once} before t0, half by {:?}, {must_close} by {:?}, the last by {:?}); \
         /healthz: {polls} polls, slowest {slowest:?}; node: {budget}",
        closes.len(),
        by(size / 2),
        by(must_close),
        closes.last(),
    );
    assert!(
        joined_in < JOIN_WITHIN,
        "{crowd:?}: the newcomer took {joined_in:?} to join"
    );
    assert!(
        failures.is_empty(),
        "{crowd:?}: /healthz failed {} of {polls} times: {failures:?}",
        failures.len()
    );
    assert!(polls >= 10, "{crowd:?}: /healthz polled only {polls} times");
    assert!(
        closes.len() >= must_close,
        "{crowd:?}: the server closed only {} of {size} within {CLOSED_WITHIN:?}",
        closes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_request_heads_cannot_lock_out_a_new_client() {
    crowd_cannot_lock_out(Crowd::PartialHeads, CROWD).await;
}

/// More partial heads than the node has file descriptors (1,100 against
/// 1,024; 1,000 leave a few free): without admission the newcomer would
/// wait in the listen backlog until the heads' deadline closed some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_partial_heads_than_file_descriptors_cannot_lock_out_a_new_client() {
    crowd_cannot_lock_out(Crowd::PartialHeads, 1100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alives_cannot_lock_out_a_new_client() {
    crowd_cannot_lock_out(Crowd::IdleKeepAlives, CROWD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_trickled_a_byte_at_a_time_cannot_lock_out_a_new_client() {
    crowd_cannot_lock_out(Crowd::Trickle, CROWD).await;
}

/// Reads until the server closes; how long that took, or `None` if it is
/// still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(start + within, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some((start.elapsed(), got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

async fn stalled(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    s
}

/// hyper's `header_read_timeout` is a deadline for the whole head, set
/// when the head begins: a client sending a byte every 150 ms is still
/// closed once the 600 ms deadline passes.
#[tokio::test]
async fn a_trickled_head_is_closed_at_its_deadline_which_each_byte_does_not_reset() {
    let s = start(|c| c.limits.request_head_timeout_ms = 600).await;
    let mut conn = TcpStream::connect(s.addr()).await.expect("connect");
    let began = Instant::now();
    let mut closed = None;
    for i in 0..HEAD.len().min(40) {
        if conn.write_all(&HEAD[i..=i]).await.is_err() {
            closed = Some(began.elapsed());
            break;
        }
        if let Some((after, _)) = closed_within(&mut conn, Duration::from_millis(150)).await {
            closed = Some(began.elapsed().max(after));
            break;
        }
    }
    let closed = closed.expect("still open after 40 bytes at 150 ms apiece (6 s)");
    assert!(
        closed >= Duration::from_millis(550) && closed < Duration::from_secs(3),
        "closed after {closed:?}, the deadline being 600 ms"
    );
}

/// At `max_pending_connections` the oldest connection not yet upgraded
/// is closed for the new one, long before its head's deadline; a joined
/// WebSocket is not in that table and stays.
#[tokio::test]
async fn a_full_pending_table_closes_its_oldest_connection_for_a_new_one() {
    let s = start(|c| {
        c.limits.max_pending_connections = 4;
        c.limits.request_head_timeout_ms = 30_000;
    })
    .await;
    let (mut joined, _) = roomlet_tests::server::joined(&s, Wire::Json, "pending", "ann").await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(stalled(s.addr()).await);
    }
    let (status, body) = roomlet_tests::http(s.addr(), "GET", "/healthz", None, b"").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ok\n"),
        "the fifth is served"
    );
    let (after, _) = closed_within(&mut held[0], DEADLINE)
        .await
        .expect("the oldest is closed");
    assert!(
        after < Duration::from_secs(5),
        "at once, not at the deadline: {after:?}"
    );
    for (i, conn) in held.iter_mut().enumerate().skip(1) {
        assert!(
            closed_within(conn, Duration::from_millis(200))
                .await
                .is_none(),
            "connection {i} is not the oldest and stays"
        );
    }
    joined.send(json!({"type": "ping", "ts": 7})).await;
    assert_eq!(joined.frame_of("pong").await["ts"], 7.0);
}

/// With `max_connections_per_source` set, the connection over it is
/// refused at once (503, or closed); once one of that address's
/// connections ends, another is admitted. The internal listener is apart
/// and serves `/metrics`, which lists the accept errors of both listeners.
#[tokio::test]
async fn a_per_source_cap_refuses_the_extra_connection() {
    let s = start(|c| {
        c.limits.max_connections_per_source = 3;
        c.limits.request_head_timeout_ms = 30_000;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(stalled(s.addr()).await);
    }
    let mut extra = TcpStream::connect(s.addr()).await.expect("connect");
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let (after, got) = closed_within(&mut extra, DEADLINE)
        .await
        .expect("the fourth is closed");
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 503"),
        "refused, not served: {got}"
    );
    assert!(after < Duration::from_secs(5), "at once: {after:?}");

    let (status, text) =
        roomlet_tests::http(s.running.internal_addr, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    for listener in ["public", "internal"] {
        let series = format!("roomlet_accept_errors_total{{listener=\"{listener}\",");
        assert!(text.contains(&series), "{series} on /metrics:\n{text}");
    }

    drop(held.pop());
    let freed = Instant::now();
    loop {
        let addr = s.addr();
        let answer = tokio::task::spawn_blocking(move || {
            roomlet_tests::http::request(addr, "GET", "/healthz", None, b"", DEADLINE)
        })
        .await
        .expect("the request's thread");
        if answer.is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(
            freed.elapsed() < DEADLINE,
            "no connection admitted after one of the three closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
