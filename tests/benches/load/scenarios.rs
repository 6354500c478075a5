//! The scenarios that are not a traffic run: idle joined connections, room
//! churn, and process start to ready.

use crate::proto;
use crate::relay::source;
use crate::target::{ProcSample, Server, Spawn};
use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

async fn metric(server: &Arc<Server>, name: &'static str) -> Option<f64> {
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.metric(name))
        .await
        .ok()
        .flatten()
}

/// Waits (polling, with a deadline) until `name` reads `want`.
async fn wait_metric(
    server: &Arc<Server>,
    name: &'static str,
    want: f64,
    within: Duration,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if metric(server, name).await == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `conns` idle joined connections, `per_room` to a room: server memory per
/// connection as (RSS with N − RSS with 0) / N, with rooms live and again
/// after they hibernated (when `hibernate` is set in the server config).
/// What an idle browser client does: reads (tungstenite answers the
/// server's pings as it reads) and acknowledges what it saw within a
/// second, as clients/js does, so the server may drop its resume buffer.
async fn idle_client(c: proto::Conn) {
    let (mut sink, mut stream) = (c.sink, c.stream);
    // `proto::join` read the `joined` frame, which opens the stream as
    // seq 1: clients/js acks it within a second like any other frame.
    let mut last_seq = Some(1);
    let ack_timer = tokio::time::sleep(Duration::from_secs(1));
    tokio::pin!(ack_timer);
    loop {
        tokio::select! {
            m = stream.next() => {
                let Some(Ok(Message::Text(t))) = m else {
                    if m.is_none() { return; }
                    continue;
                };
                if let Some(seq) = proto::scan(&t, r#""seq":"#) {
                    if last_seq.is_none() {
                        ack_timer.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                    last_seq = Some(seq);
                }
            }
            _ = &mut ack_timer, if last_seq.is_some() => {
                if let Some(seq) = last_seq.take()
                    && sink.send(Message::text(proto::ack(seq))).await.is_err()
                {
                    return;
                }
            }
        }
    }
}

/// How [`idle`] runs.
pub struct Idle {
    /// Connections to open.
    pub conns: usize,
    /// Peers per room.
    pub per_room: usize,
    /// Client source addresses 127.0.0.1 ..= 127.0.0.N.
    pub sources: u8,
    /// Joins in flight at once.
    pub parallel: usize,
    /// Whether the server hibernates rooms (then wait for it).
    pub hibernated: bool,
    /// Keep the connections open after the report until stdin closes
    /// (a child of [`idle_processes`]).
    pub hold: bool,
}

pub async fn idle(server: Arc<Server>, opts: Idle) -> Result<()> {
    let Idle {
        conns,
        per_room,
        sources,
        parallel,
        hibernated,
        hold,
    } = opts;
    if let Some(limit) = crate::target::nofile_limit()
        && (limit as usize) < conns + 100
    {
        eprintln!(
            "warning: this process may open {limit} files; {conns} connections need more \
             (the hard limit cannot be raised without CAP_SYS_RESOURCE)"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let Some(before) = server.sample() else {
        bail!("no /proc figures for the server: give --pid");
    };
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..conns {
        let (server, gate, failed) = (server.clone(), gate.clone(), failed.clone());
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await.ok()?;
            let room = format!("idle-{}", i / per_room.max(1));
            let joined = proto::join(&server, &room, &format!("i{i}"), source(i, sources)).await;
            drop(permit);
            match joined {
                Ok(c) => Some(c),
                Err(e) => {
                    if failed.fetch_add(1, Relaxed) < 3 {
                        eprintln!("connection {i}: {e:#}");
                    }
                    None
                }
            }
        });
    }
    let mut clients = Vec::with_capacity(conns);
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some(c)) = done {
            clients.push(tokio::spawn(idle_client(c)));
        }
    }
    let joined = clients.len();
    let setup = started.elapsed();
    let rooms = joined.div_ceil(per_room.max(1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let Some(after) = server.sample() else {
        bail!("the server went away");
    };
    let per_conn = |a: &ProcSample| (a.rss as f64 - before.rss as f64) / joined.max(1) as f64;
    println!(
        "== idle: {joined} joined connections ({} failed), {per_room} per room ({rooms} rooms), {sources} source addresses",
        failed.load(Relaxed)
    );
    println!(
        "   joined in {:.2} s ({:.0} joins/s)",
        setup.as_secs_f64(),
        joined as f64 / setup.as_secs_f64()
    );
    println!(
        "   server RSS with 0: {:.1} MiB; with {joined}: {:.1} MiB; per connection {:.1} KiB (rooms live: {:?})",
        before.rss as f64 / 1048576.0,
        after.rss as f64 / 1048576.0,
        per_conn(&after) / 1024.0,
        metric(&server, "roomlet_rooms_live").await
    );
    let mut hibernated_per_conn = None;
    if hibernated {
        let ok = wait_metric(
            &server,
            "roomlet_rooms_hibernated",
            rooms as f64,
            Duration::from_secs(60),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let (true, Some(h)) = (ok, server.sample()) {
            println!(
                "   after all {rooms} rooms hibernated: RSS {:.1} MiB; per connection {:.1} KiB",
                h.rss as f64 / 1048576.0,
                per_conn(&h) / 1024.0
            );
            hibernated_per_conn = Some(per_conn(&h) / 1024.0);
        } else {
            println!("   rooms did not all hibernate within 60 s");
        }
    }
    println!(
        "RESULT label=idle conns={joined} kib_per_conn={:.2} kib_per_conn_hibernated={}",
        per_conn(&after) / 1024.0,
        hibernated_per_conn.map_or("n/a".into(), |v| format!("{v:.2}"))
    );
    if hold {
        // The parent measures every server at once while all children
        // hold their connections, then closes our stdin.
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let _ = tokio::task::spawn_blocking(|| {
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
        })
        .await;
    }
    for c in clients {
        c.abort();
    }
    Ok(())
}

/// Room churn: `workers` clients in a loop, each joining a fresh room and
/// leaving it; the rooms module closes an empty room after its
/// `empty-timeout-ms` (set to 0 by the caller), so every cycle is one room
/// created and closed.
pub async fn churn(server: Arc<Server>, workers: usize, duration: Duration) -> Result<()> {
    let cycles = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for wk in 0..workers {
        let (server, cycles, failed) = (server.clone(), cycles.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while started.elapsed() < duration {
                let room = format!("churn-{wk}-{i}");
                i += 1;
                match proto::join(&server, &room, "churner", None).await {
                    Ok(mut c) => {
                        let _ = c.sink.send(Message::text(r#"{"type":"leave"}"#)).await;
                        // The server closes with 1000 after `leave`.
                        while let Some(Ok(m)) = c.stream.next().await {
                            if matches!(m, Message::Close(_)) {
                                break;
                            }
                        }
                        cycles.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        if failed.fetch_add(1, Relaxed) < 3 {
                            eprintln!("churn: {e:#}");
                        }
                    }
                }
            }
        }));
    }
    let mut peak_live = 0.0f64;
    while tasks.iter().any(|t| !t.is_finished()) {
        if let Some(live) = metric(&server, "roomlet_rooms_live").await {
            peak_live = peak_live.max(live);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let joined_at = started.elapsed();
    let all_closed = wait_metric(&server, "roomlet_rooms_live", 0.0, Duration::from_secs(30)).await;
    let closed_at = started.elapsed();
    let n = cycles.load(Relaxed);
    println!(
        "== churn: {workers} concurrent clients, each: connect, join a new room, leave (room closes: empty-timeout-ms = 0)"
    );
    println!(
        "   {n} rooms created in {:.2} s: {:.0} rooms/s; failed {}",
        joined_at.as_secs_f64(),
        n as f64 / joined_at.as_secs_f64(),
        failed.load(Relaxed)
    );
    println!(
        "   all closed (roomlet_rooms_live = 0): {all_closed}, at {:.2} s: {:.0} rooms created and closed per s; peak live rooms {peak_live}",
        closed_at.as_secs_f64(),
        n as f64 / closed_at.as_secs_f64()
    );
    println!(
        "RESULT label=churn rooms={n} created_per_s={:.0} created_and_closed_per_s={:.0} all_closed={all_closed}",
        n as f64 / joined_at.as_secs_f64(),
        n as f64 / closed_at.as_secs_f64()
    );
    Ok(())
}

/// Process start to ready: spawn → `/readyz` 200, `runs` times on one data
/// directory; the first run compiles the components (cold cache), the rest
/// load the precompiled artifacts (warm).
pub fn startup(spec: &Spawn, runs: usize) -> Result<()> {
    let mut times = Vec::new();
    for _ in 0..runs.max(2) {
        let (server, took) = Server::start(spec)?;
        server.stop();
        times.push(took.as_nanos() as u64);
    }
    let cold = times[0] as f64 / 1e6;
    let mut warm = times[1..].to_vec();
    let [p50, _, _, max] = crate::relay::percentiles(&mut warm);
    let min = warm[0] as f64 / 1e6;
    println!(
        "== startup: spawn → /readyz 200, {} runs on one data dir",
        times.len()
    );
    println!("   cold (first run, compiles into the artifact cache): {cold:.1} ms");
    println!(
        "   warm ({} runs): p50 {:.1} ms, min {min:.1} ms, max {:.1} ms",
        warm.len(),
        p50 / 1000.0,
        max / 1000.0
    );
    println!(
        "RESULT label=startup cold_ms={cold:.1} warm_p50_ms={:.1} warm_min_ms={min:.1}",
        p50 / 1000.0
    );
    Ok(())
}

/// [`idle`] spread over several server processes, each loaded by a
/// generator process of its own (this executable, `idle --url … --hold`):
/// one process may open at most RLIMIT_NOFILE sockets (20,000 here, and
/// only CAP_SYS_RESOURCE raises the hard limit), so more connections than
/// that on one machine take several processes on both sides. Every child
/// holds its connections until all have reported; then all servers are
/// measured at the same moment.
pub fn idle_processes(servers: &[Arc<Server>], opts: &Idle, hibernate_ms: u64) -> Result<()> {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    std::thread::sleep(Duration::from_secs(1));
    let before = servers
        .iter()
        .map(|s| s.sample().context("no /proc figures for a server"))
        .collect::<Result<Vec<_>>>()?;
    let exe = std::env::current_exe().context("finding this generator's executable")?;
    let k = servers.len();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Option<u64>)>();
    let mut children = Vec::with_capacity(k);
    for (i, s) in servers.iter().enumerate() {
        let n = opts.conns / k + usize::from(i < opts.conns % k);
        let mut cmd = Command::new(&exe);
        cmd.arg("idle")
            .args(["--url", &s.public.to_string()])
            .args(["--conns", &n.to_string()])
            .args(["--per-room", &opts.per_room.to_string()])
            .args(["--sources", &opts.sources.to_string()])
            .args(["--parallel", &opts.parallel.to_string()])
            .args(["--hibernate-ms", &hibernate_ms.to_string()])
            // Inherits this process's core.
            .args(["--gen-cpu", "none", "--hold"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(pid) = s.pid {
            cmd.args(["--pid", &pid.to_string()]);
        }
        if let Some(internal) = s.internal {
            cmd.args(["--internal", &internal.to_string()]);
        }
        let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let out = child.stdout.take().context("child stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reported = false;
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("   [{i}] {line}");
                if !reported && line.starts_with("RESULT") {
                    reported = true;
                    let joined = line
                        .split_whitespace()
                        .find_map(|f| f.strip_prefix("conns="))
                        .and_then(|v| v.parse().ok());
                    let _ = tx.send((i, joined));
                }
            }
            if !reported {
                let _ = tx.send((i, None));
            }
        });
        children.push(child);
    }
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut joined = 0u64;
    for _ in 0..k {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Some(n))) => joined += n,
            Ok((i, None)) => bail!("generator process {i} ended without a result"),
            Err(_) => bail!("the generator processes did not all report within 15 minutes"),
        }
    }
    // Every child now holds its connections: measure all servers.
    let after = servers
        .iter()
        .map(|s| s.sample().context("a server went away"))
        .collect::<Result<Vec<_>>>()?;
    let gauge = |name| -> Option<f64> { servers.iter().map(|s| s.metric(name)).sum() };
    let connected = gauge("roomlet_connections");
    let (live, hibernated) = (
        gauge("roomlet_rooms_live"),
        gauge("roomlet_rooms_hibernated"),
    );
    let mib = |v: &[ProcSample]| v.iter().map(|p| p.rss as f64).sum::<f64>() / 1048576.0;
    let per_conn_kib = (mib(&after) - mib(&before)) * 1024.0 / joined.max(1) as f64;
    println!(
        "== idle over {k} server processes: {joined} joined connections held at once \
         (roomlet_connections {connected:?}), {} per room; rooms live {live:?}, hibernated {hibernated:?}",
        opts.per_room
    );
    println!(
        "   servers' RSS with 0: {:.1} MiB; with all: {:.1} MiB; per connection {per_conn_kib:.1} KiB",
        mib(&before),
        mib(&after)
    );
    println!(
        "RESULT label=idle-processes processes={k} conns={joined} connected={} kib_per_conn={per_conn_kib:.2}",
        connected.map_or("n/a".into(), |c| format!("{c:.0}"))
    );
    for mut c in children {
        drop(c.stdin.take());
        let _ = c.wait();
    }
    Ok(())
}
