//! The traffic run: N rooms × M joined peers sending timed frames, either at
//! a fixed offered rate (open loop: frames leave on schedule whatever the
//! server does) or at the maximum rate (closed loop: each room keeps at most
//! `window` deliveries in flight, so the server's queue stays bounded and
//! latency means something).

use crate::proto::{self, Conn, FrameKind};
use crate::target::{Kind, ProcSample, Server};
use anyhow::{Result, bail};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// What to run.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Rooms.
    pub rooms: usize,
    /// Peers per room (at least 2).
    pub peers: usize,
    /// Offered frames per second; None: as fast as the server delivers.
    pub rate: Option<f64>,
    /// Weights of signal : direct message : broadcast.
    pub mix: [u32; 3],
    /// Padding bytes in each payload.
    pub pad: usize,
    /// Traffic before measuring.
    pub warmup: Duration,
    /// Measured traffic.
    pub duration: Duration,
    /// Max-rate mode: deliveries in flight per room.
    pub window: usize,
    /// roomlet: a client acks after this many stream frames.
    pub ack_every: u64,
    /// Fixed rate: how long the sending thread sleeps between batches
    /// (the kernel adds its ~50 µs timer slack).
    pub tick: Duration,
    /// Client source addresses 127.0.0.1 ..= 127.0.0.N.
    pub sources: u8,
    /// Rooms joining at once during setup.
    pub setup_parallel: usize,
    /// Keeps the generator's runtime thread busy instead of asleep in
    /// `epoll_wait`. On loopback the server's `send` runs the receiving
    /// socket's wake-up in its own context: a sleeping generator has the
    /// server send it an interrupt per delivery (a VM exit here), which
    /// clients on other hosts would not cost it.
    pub spin: bool,
}

/// What one run measured (within the measured window only).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Frames the clients sent, per second.
    pub sent_per_s: f64,
    /// Frames the clients received, per second.
    pub delivered_per_s: f64,
    /// Latency percentiles (µs) of all kinds: p50, p99, p99.9, max.
    pub latency: [f64; 4],
    /// Same, per frame kind (absent when the kind was not sent).
    pub by_kind: Vec<(&'static str, u64, [f64; 4])>,
    /// At a fixed rate: latency from when each frame was due by the
    /// schedule, not from when the sending thread built it. This counts
    /// the generator's own late wake-ups as latency (no coordinated
    /// omission), so it bounds the server's latency from above as the
    /// `latency` figures bound it from below.
    pub scheduled: Option<[f64; 4]>,
    /// Error frames by code, over the whole run.
    pub errors: BTreeMap<String, u64>,
    /// Connections closed by the server.
    pub closed: u64,
    /// Expected deliveries that never arrived (whole run, after a drain).
    pub lost: i64,
    /// Server RSS at the end, bytes.
    pub server_rss: Option<u64>,
    /// Server CPU seconds per second of wall time (1.0 = one core busy).
    pub server_cpu_util: Option<f64>,
    /// Server CPU time per delivered frame, µs.
    pub server_cpu_per_frame_us: Option<f64>,
    /// The part of the server's CPU time spent in the kernel (0..1).
    pub server_sys_share: Option<f64>,
    /// Generator CPU utilisation, for telling when the generator, not the
    /// server, is the bottleneck.
    pub gen_cpu_util: Option<f64>,
    /// Time to connect and join every peer.
    pub setup: Duration,
    /// How the deliveries slower than [`SLOW`] fall in time.
    pub slow: Slow,
}

/// A delivery slower than this counts as slow (the p99 target).
pub const SLOW: Duration = Duration::from_millis(1);

/// Slow deliveries by the 10 ms window they were sent in: spread evenly
/// they point at queueing; bunched in a few windows, at stalls.
#[derive(Debug, Clone, Default)]
pub struct Slow {
    /// Slow deliveries in the measured window.
    pub count: u64,
    /// 10 ms windows measured.
    pub windows: u64,
    /// Windows holding at least one slow delivery.
    pub hit: u64,
    /// The fullest windows: (ms since measuring began, slow deliveries).
    pub worst: Vec<(u64, u64)>,
}

impl Slow {
    fn from_stamps(stamps: &[u64], start_ns: u64, span: Duration) -> Self {
        let mut by_window = BTreeMap::<u64, u64>::new();
        for &s in stamps {
            *by_window
                .entry(s.saturating_sub(start_ns) / 10_000_000)
                .or_default() += 1;
        }
        let mut worst: Vec<(u64, u64)> = by_window.iter().map(|(w, n)| (w * 10, *n)).collect();
        worst.sort_by_key(|&(w, n)| (std::cmp::Reverse(n), w));
        worst.truncate(5);
        Self {
            count: stamps.len() as u64,
            windows: span.as_millis() as u64 / 10,
            hit: by_window.len() as u64,
            worst,
        }
    }
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    sent: AtomicU64,
    sent_window: AtomicU64,
    expected: AtomicU64,
    delivered: AtomicU64,
    delivered_window: AtomicU64,
    closed: AtomicU64,
    latencies: Mutex<[Vec<u64>; 3]>,
    /// Fixed rate: latencies from the due time, all kinds.
    scheduled: Mutex<Vec<u64>>,
    /// Send stamps of the slow deliveries.
    slow: Mutex<Vec<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

/// A tiny xorshift: which room, peer and kind send next.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Source address number `i` of `sources` on 127.0.0.0/8.
pub fn source(i: usize, sources: u8) -> Option<IpAddr> {
    (sources > 1).then(|| IpAddr::from([127, 0, 0, 1 + (i % usize::from(sources)) as u8]))
}

/// Connects and joins every peer of every room; rooms join in parallel,
/// the peers of one room one after the other.
pub async fn setup(server: &Arc<Server>, w: &Workload) -> Result<Vec<Vec<Conn>>> {
    let gate = Arc::new(Semaphore::new(w.setup_parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..w.rooms {
        let (server, gate, peers, sources) = (server.clone(), gate.clone(), w.peers, w.sources);
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let room = format!("load-{r}");
            let mut conns = Vec::with_capacity(peers);
            for p in 0..peers {
                let src = source(r * peers + p, sources);
                conns.push(proto::join(&server, &room, &format!("u{r}-{p}"), src).await?);
            }
            anyhow::Ok((r, conns))
        });
    }
    let mut rooms: Vec<Option<Vec<Conn>>> = (0..w.rooms).map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        let (r, conns) = done??;
        rooms[r] = Some(conns);
    }
    Ok(rooms.into_iter().flatten().collect())
}

/// Runs `w` against `server` and measures.
pub async fn run(server: Arc<Server>, w: &Workload) -> Result<Report> {
    if w.peers < 2 {
        bail!("--peers must be at least 2 (signals need an addressee)");
    }
    if server.kind == Kind::Matchbox && w.mix[1..].iter().any(|&x| x > 0) {
        bail!("matchbox_server relays signals only: use --mix 1:0:0");
    }
    let setup_started = Instant::now();
    let rooms = setup(&server, w).await?;
    let setup = setup_started.elapsed();
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        sent_window: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        delivered_window: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        latencies: Mutex::new(Default::default()),
        scheduled: Mutex::new(Vec::new()),
        slow: Mutex::new(Vec::new()),
        errors: Mutex::new(BTreeMap::new()),
    });
    let windows: Vec<Arc<Semaphore>> = (0..w.rooms)
        .map(|_| Arc::new(Semaphore::new(w.window.max(w.peers))))
        .collect();
    let mut ids: Vec<Vec<String>> = Vec::with_capacity(w.rooms);
    let mut writers: Vec<mpsc::UnboundedSender<Message>> = Vec::new();
    let mut tasks = Vec::new();
    for (r, conns) in rooms.into_iter().enumerate() {
        ids.push(conns.iter().map(|c| c.id.clone()).collect());
        for conn in conns {
            let (tx, rx) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(write_loop(conn.sink, rx)));
            let window = w.rate.is_none().then(|| windows[r].clone());
            tasks.push(tokio::spawn(read_loop(
                conn.stream,
                tx.clone(),
                shared.clone(),
                window,
                (server.kind == Kind::Roomlet).then_some(w.ack_every),
            )));
            writers.push(tx);
        }
    }
    let pad = "x".repeat(w.pad);
    let kinds: Vec<FrameKind> = FrameKind::ALL
        .iter()
        .zip(w.mix)
        .flat_map(|(k, n)| std::iter::repeat_n(*k, n as usize))
        .collect();
    if kinds.is_empty() {
        bail!("--mix has no non-zero weight");
    }
    // FRAME_IDS=1: roomlet frames carry client frame ids, as the JS
    // client sends them (the server then confirms them).
    let frame_ids = (server.kind == Kind::Roomlet
        && std::env::var("FRAME_IDS").as_deref() == Ok("1"))
    .then(|| (0..writers.len()).map(|_| AtomicU32::new(0)).collect());
    let ctx = Arc::new(SendCtx {
        kind: server.kind,
        ids,
        frame_ids,
        writers,
        pad,
        kinds,
        peers: w.peers,
        shared: shared.clone(),
    });
    match w.rate {
        Some(rate) => {
            let ctx = ctx.clone();
            let tick = w.tick;
            std::thread::spawn(move || fixed_rate(ctx, rate, tick));
        }
        None => {
            for (r, window) in windows.iter().enumerate() {
                tasks.push(tokio::spawn(max_rate(ctx.clone(), r, window.clone())));
            }
        }
    }

    if w.spin {
        // Yielding keeps the thread runnable: the driver is then polled
        // with a zero timeout between the other tasks.
        tasks.push(tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        }));
    }
    tokio::time::sleep(w.warmup).await;
    let s0 = server.sample();
    let g0 = ProcSample::read("self");
    let t0 = Instant::now();
    let t0_ns = proto::now_ns();
    shared.measuring.store(true, Relaxed);
    tokio::time::sleep(w.duration).await;
    shared.measuring.store(false, Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let s1 = server.sample();
    let g1 = ProcSample::read("self");
    shared.stop.store(true, Relaxed);
    // Drain: let frames in flight arrive before counting the lost ones.
    let drain = Instant::now();
    while shared.delivered.load(Relaxed) < shared.expected.load(Relaxed)
        && drain.elapsed() < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in &tasks {
        t.abort();
    }

    let delivered_window = shared.delivered_window.load(Relaxed) as f64;
    let mut lat = std::mem::take(&mut *shared.latencies.lock().expect("latencies"));
    let mut all: Vec<u64> = lat.iter().flatten().copied().collect();
    let mut by_kind = Vec::new();
    for (k, v) in FrameKind::ALL.iter().zip(lat.iter_mut()) {
        if !v.is_empty() {
            by_kind.push((k.name(), v.len() as u64, percentiles(v)));
        }
    }
    let mut scheduled = std::mem::take(&mut *shared.scheduled.lock().expect("scheduled"));
    let cpu = |a: Option<ProcSample>, b: Option<ProcSample>| Some(b?.cpu - a?.cpu);
    let sys = |a: Option<ProcSample>, b: Option<ProcSample>| Some(b?.sys - a?.sys);
    let server_cpu = cpu(s0, s1);
    let server_sys = sys(s0, s1);
    Ok(Report {
        sent_per_s: shared.sent_window.load(Relaxed) as f64 / elapsed,
        delivered_per_s: delivered_window / elapsed,
        latency: percentiles(&mut all),
        by_kind,
        scheduled: (!scheduled.is_empty()).then(|| percentiles(&mut scheduled)),
        errors: shared.errors.lock().expect("errors").clone(),
        closed: shared.closed.load(Relaxed),
        lost: shared.expected.load(Relaxed) as i64 - shared.delivered.load(Relaxed) as i64,
        server_rss: s1.map(|s| s.rss),
        server_cpu_util: server_cpu.map(|c| c / elapsed),
        server_cpu_per_frame_us: server_cpu
            .filter(|_| delivered_window > 0.0)
            .map(|c| c * 1e6 / delivered_window),
        server_sys_share: server_sys
            .zip(server_cpu)
            .filter(|(_, cpu)| *cpu > 0.0)
            .map(|(sys, cpu)| sys / cpu),
        gen_cpu_util: cpu(g0, g1).map(|c| c / elapsed),
        setup,
        slow: Slow::from_stamps(&shared.slow.lock().expect("slow"), t0_ns, w.duration),
    })
}

/// p50, p99, p99.9 and max of nanosecond samples, in µs.
pub fn percentiles(v: &mut [u64]) -> [f64; 4] {
    if v.is_empty() {
        return [f64::NAN; 4];
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)] as f64 / 1000.0;
    [
        at(0.50),
        at(0.99),
        at(0.999),
        v[v.len() - 1] as f64 / 1000.0,
    ]
}

struct SendCtx {
    kind: Kind,
    ids: Vec<Vec<String>>,
    /// The last frame id of each connection, when frames carry ids.
    frame_ids: Option<Vec<AtomicU32>>,
    writers: Vec<mpsc::UnboundedSender<Message>>,
    pad: String,
    kinds: Vec<FrameKind>,
    peers: usize,
    shared: Arc<Shared>,
}

impl SendCtx {
    fn fanout(&self, k: FrameKind) -> u32 {
        match k {
            FrameKind::Broadcast => (self.peers - 1) as u32,
            _ => 1,
        }
    }

    /// Sends one frame of kind `k` from a random peer of room `r`; `due`
    /// is its place in a fixed-rate schedule ([`proto::now_ns`] time).
    fn send(&self, rng: &mut Rng, r: usize, k: FrameKind, due: Option<u64>) {
        let from = rng.below(self.peers);
        let to = (from + 1 + rng.below(self.peers - 1)) % self.peers;
        let mut text = proto::frame(self.kind, k, &self.ids[r][to], &self.pad, due);
        if let Some(ids) = &self.frame_ids {
            let id = ids[r * self.peers + from].fetch_add(1, Relaxed) + 1;
            text.pop();
            text.push_str(&format!(",\"id\":{id}}}"));
        }
        let s = &self.shared;
        if self.writers[r * self.peers + from]
            .send(Message::text(text))
            .is_ok()
        {
            s.sent.fetch_add(1, Relaxed);
            if s.measuring.load(Relaxed) {
                s.sent_window.fetch_add(1, Relaxed);
            }
            s.expected.fetch_add(u64::from(self.fanout(k)), Relaxed);
        }
    }
}

/// Open loop: send what the schedule says is due, about every 100 µs.
///
/// A thread, not a task: tokio's timers tick in milliseconds, and a 1 ms
/// tick sends the rate in bursts (20 frames at once at 20,000/s) that
/// queue behind each other in the server, which measures the burst rather
/// than the relay. `thread::sleep(50 µs)` wakes after ~100 µs (the
/// default timer slack); the writer tasks are woken through their channels.
fn fixed_rate(ctx: Arc<SendCtx>, rate: f64, tick: Duration) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let rooms = ctx.ids.len();
    let start_ns = proto::now_ns();
    let mut n: u64 = 0;
    while !ctx.shared.stop.load(Relaxed) {
        std::thread::sleep(tick);
        let due = ((proto::now_ns() - start_ns) as f64 * rate / 1e9) as u64;
        while n < due {
            let k = ctx.kinds[rng.below(ctx.kinds.len())];
            let r = rng.below(rooms);
            let at = start_ns + (n as f64 * 1e9 / rate) as u64;
            ctx.send(&mut rng, r, k, Some(at));
            n += 1;
        }
    }
}

/// Closed loop for room `r`: send whenever the room's window has room.
async fn max_rate(ctx: Arc<SendCtx>, r: usize, window: Arc<Semaphore>) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (r as u64 + 1));
    while !ctx.shared.stop.load(Relaxed) {
        let k = ctx.kinds[rng.below(ctx.kinds.len())];
        let need = ctx.fanout(k);
        match tokio::time::timeout(Duration::from_secs(1), window.acquire_many(need)).await {
            Ok(Ok(p)) => p.forget(),
            // A delivery went missing: give its credit back and go on
            // (counted as lost at the end).
            Ok(Err(_)) => return,
            Err(_) => {
                window.add_permits(need as usize);
                continue;
            }
        }
        ctx.send(&mut rng, r, k, None);
        // Let the readers run between sends on this one-core generator.
        tokio::task::yield_now().await;
    }
}

async fn write_loop(mut sink: proto::Sink, mut rx: mpsc::UnboundedReceiver<Message>) {
    while let Some(m) = rx.recv().await {
        if sink.feed(m).await.is_err() {
            return;
        }
        while let Ok(m) = rx.try_recv() {
            if sink.feed(m).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

async fn read_loop(
    mut stream: proto::Stream,
    tx: mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
    window: Option<Arc<Semaphore>>,
    ack_every: Option<u64>,
) {
    let mut unacked = 0u64;
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if let Some(stamp) = proto::scan(&text, r#""lt":"#) {
            let now = proto::now_ns();
            let latency = now.saturating_sub(stamp);
            shared.delivered.fetch_add(1, Relaxed);
            if shared.measuring.load(Relaxed) {
                shared.delivered_window.fetch_add(1, Relaxed);
                let k = proto::scan(&text, r#""lk":"#).unwrap_or(0).min(2) as usize;
                if let Ok(mut l) = shared.latencies.lock() {
                    l[k].push(latency);
                }
                if let Some(due) = proto::scan(&text, r#""ld":"#)
                    && let Ok(mut l) = shared.scheduled.lock()
                {
                    l.push(now.saturating_sub(due));
                }
                if latency >= SLOW.as_nanos() as u64
                    && let Ok(mut s) = shared.slow.lock()
                {
                    s.push(stamp);
                }
            }
            if let Some(w) = &window {
                w.add_permits(1);
            }
        } else if let Some(code) = proto::error_code(&text)
            && let Ok(mut e) = shared.errors.lock()
        {
            *e.entry(code).or_default() += 1;
        }
        if let Some(every) = ack_every {
            unacked += 1;
            if unacked >= every
                && let Some(seq) = proto::scan(&text, r#""seq":"#)
            {
                unacked = 0;
                let _ = tx.send(Message::text(proto::ack(seq)));
            }
        }
    }
    shared.closed.fetch_add(1, Relaxed);
}

/// Prints a report, one figure per line, and a `RESULT` line to grep.
pub fn print(label: &str, w: &Workload, r: &Report) {
    let mode = match w.rate {
        Some(rate) => format!("fixed {rate:.0} frames/s"),
        None => format!("max rate, window {} deliveries/room", w.window),
    };
    println!(
        "== {label}: {} rooms x {} peers, {mode}, mix signal:message:broadcast = {}:{}:{}, payload pad {} B{}",
        w.rooms,
        w.peers,
        w.mix[0],
        w.mix[1],
        w.mix[2],
        w.pad,
        if w.spin { ", spinning generator" } else { "" }
    );
    println!(
        "   setup {:.2} s; measured {:.1} s after {:.1} s warm-up",
        r.setup.as_secs_f64(),
        w.duration.as_secs_f64(),
        w.warmup.as_secs_f64()
    );
    println!(
        "   sent {:.0} frames/s, delivered {:.0} frames/s",
        r.sent_per_s, r.delivered_per_s
    );
    let [p50, p99, p999, max] = r.latency;
    println!(
        "   latency all: p50 {p50:.0} µs, p99 {p99:.0} µs, p99.9 {p999:.0} µs, max {max:.0} µs"
    );
    for (k, n, [p50, p99, p999, max]) in &r.by_kind {
        println!(
            "   latency {k} ({n}): p50 {p50:.0} µs, p99 {p99:.0} µs, p99.9 {p999:.0} µs, max {max:.0} µs"
        );
    }
    if let Some([p50, p99, p999, max]) = r.scheduled {
        println!(
            "   latency from schedule (counts the generator's late sends): p50 {p50:.0} µs, p99 {p99:.0} µs, p99.9 {p999:.0} µs, max {max:.0} µs"
        );
    }
    let s = &r.slow;
    let worst: Vec<String> = s
        .worst
        .iter()
        .map(|(ms, n)| format!("+{ms} ms: {n}"))
        .collect();
    println!(
        "   slower than {} ms: {} deliveries, sent in {} of {} 10-ms windows; fullest: {}",
        SLOW.as_millis(),
        s.count,
        s.hit,
        s.windows,
        worst.join(", ")
    );
    println!(
        "   errors {:?}, closed {}, lost {}",
        r.errors, r.closed, r.lost
    );
    let opt = |v: Option<f64>, unit: &str| v.map_or("n/a".into(), |v| format!("{v:.2} {unit}"));
    println!(
        "   server: RSS {}, CPU {} of a core, {} per delivered frame ({} in the kernel); generator CPU {} of a core",
        opt(r.server_rss.map(|b| b as f64 / 1048576.0), "MiB"),
        opt(r.server_cpu_util.map(|c| c * 100.0), "%"),
        opt(r.server_cpu_per_frame_us, "µs"),
        opt(r.server_sys_share.map(|c| c * 100.0), "%"),
        opt(r.gen_cpu_util.map(|c| c * 100.0), "%"),
    );
    let sched = r.scheduled.map_or(String::new(), |[p50, p99, _, _]| {
        format!(" sched_p50_us={p50:.0} sched_p99_us={p99:.0}")
    });
    println!(
        "RESULT label={label} delivered_per_s={:.0} p50_us={p50:.0} p99_us={p99:.0} p999_us={p999:.0}{sched} cpu_us_per_frame={} sys_share={} errors={} lost={}",
        r.delivered_per_s,
        r.server_cpu_per_frame_us
            .map_or("n/a".into(), |v| format!("{v:.2}")),
        r.server_sys_share
            .map_or("n/a".into(), |v| format!("{v:.2}")),
        r.errors.values().sum::<u64>(),
        r.lost
    );
}
