//! A rolling restart of every node of a two-region split deployment, one by
//! one, under load: no call notices. Peers keep their ids, nobody sees
//! anyone leave or join, every stream's seqs go on one by one (nothing
//! lost, twice or out of order), and traffic never stops for 2 s.

use super::*;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_tungstenite::tungstenite::Message;

/// Frames each peer sends per second: half room messages, half signals
/// to its partner (the 25 + 25).
const SENDS_PER_SECOND: u64 = 50;

/// What one peer saw.
#[derive(Debug, Default)]
struct Seen {
    peer_id: String,
    /// Room messages and signals from its partner, by kind, in order.
    messages: Vec<u64>,
    signals: Vec<u64>,
    /// The longest time between two frames from its partner.
    longest_silence: Duration,
    resumes: usize,
    /// `error unavailable` answers to frames it sent while its room moved
    /// between homes (the frame named is lost, and its sender told).
    told_unavailable: usize,
    /// Anything that breaks the guarantee, described.
    broken: Vec<String>,
}

/// Drives one peer: joins `room` through `gateways[first]`, sends until
/// `stop`, follows every `reconnect` by resuming at another gateway.
/// The gateways' URLs (a restarted one listens on a new port).
type Gateways = Arc<std::sync::Mutex<Vec<String>>>;

fn gateway(gateways: &Gateways, i: usize) -> String {
    gateways.lock().expect("gateways")[i].clone()
}

async fn drive(
    gateways: Gateways,
    first: usize,
    room: &'static str,
    identity: &'static str,
    partner: &'static str,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut at = first;
    let mut c = Client::connect(&gateway(&gateways, at), Wire::Json).await;
    let j = c.join(room, &token(room, identity, false)).await;
    seen.peer_id = j["peerId"].as_str().expect("peer id").to_owned();
    let resume_token = j["resumeToken"].as_str().expect("resume token").to_owned();
    let mut last_seq = j["seq"].as_u64().expect("joined is seq 1");
    // Known from `joined` if the partner came first, else from `peer-joined`.
    let mut partner_id: Option<String> = j["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["identity"] == partner))
        .and_then(|p| p["id"].as_str())
        .map(str::to_owned);
    let mut sent = 0u64;
    let mut last_heard: Option<Instant> = None;
    let (mut tx, mut rx) = c.into_inner().split();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / SENDS_PER_SECOND));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if stop.load(Ordering::Relaxed) {
                    return seen;
                }
                sent += 1;
                let frame = match &partner_id {
                    Some(p) if sent.is_multiple_of(2) => {
                        json!({"type": "signal", "to": p, "kind": "candidate", "payload": {"n": sent}})
                    }
                    _ => message(json!({"from": identity, "n": sent})),
                };
                // A socket closing under a drain refuses it: the frame is
                // lost before the server saw it, which the test does not
                // count (the client knows it did not go out).
                let _ = tx.send(Message::text(frame.to_string())).await;
                if sent.is_multiple_of(50) {
                    let _ = tx.send(Message::text(json!({"type": "ack", "seq": last_seq}).to_string())).await;
                }
            }
            msg = rx.next() => {
                let frame: Value = match msg {
                    Some(Ok(Message::Text(t))) => serde_json::from_str(&t).expect("json"),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        // Moved: resume at another gateway, the way the
                        // JS client does.
                        at = (at + 1) % 2;
                        let url = gateway(&gateways, at);
                        let mut c = Client::connect(&url, Wire::Json).await;
                        c.send(json!({"type": "resume", "resumeToken": resume_token, "lastSeq": last_seq})).await;
                        let j = c.frame().await;
                        if j["type"] != "joined" || j["peerId"] != seen.peer_id.as_str() || j["gap"] == true {
                            seen.broken.push(format!("{identity}: resume at {url} answered {j}"));
                            return seen;
                        }
                        seen.resumes += 1;
                        (tx, rx) = c.into_inner().split();
                        continue;
                    }
                    Some(Ok(_)) => continue,
                };
                if let Some(seq) = frame["seq"].as_u64() {
                    if seq != last_seq + 1 {
                        seen.broken.push(format!("{identity}: seq {seq} after {last_seq}: {frame}"));
                    }
                    last_seq = seq;
                }
                let from_partner = partner_id.as_deref().is_some_and(|p| frame["from"] == p);
                match frame["type"].as_str().unwrap_or("") {
                    "peer-joined" if frame["peer"]["identity"] == partner => {
                        if partner_id.is_some() {
                            seen.broken.push(format!("{identity}: the partner joined again: {frame}"));
                        }
                        partner_id = frame["peer"]["id"].as_str().map(str::to_owned);
                    }
                    "peer-left" | "peer-joined" => {
                        seen.broken.push(format!("{identity}: {frame}"));
                    }
                    "message" if from_partner => {
                        if let Some(n) = frame["data"]["n"].as_u64() {
                            seen.messages.push(n);
                        }
                    }
                    "signal" if from_partner => {
                        if let Some(n) = frame["payload"]["n"].as_u64() {
                            seen.signals.push(n);
                        }
                    }
                    "error" if frame["code"] == "unavailable" => seen.told_unavailable += 1,
                    "error" => seen.broken.push(format!("{identity}: {frame}")),
                    _ => {}
                }
                if from_partner {
                    let now = Instant::now();
                    if let Some(t) = last_heard {
                        seen.longest_silence = seen.longest_silence.max(now - t);
                    }
                    last_heard = Some(now);
                }
            }
        }
    }
}

/// `ns` rises strictly: nothing twice, nothing out of order.
fn in_order(ns: &[u64]) -> bool {
    ns.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_is_invisible_to_calls() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "rolling";
    // Two regions, each with a rooms node and a gateway.
    let plan = [
        ("rooms-a", "a", "rooms"),
        ("gw-a", "a", "auth,relay"),
        ("rooms-b", "b", "rooms"),
        ("gw-b", "b", "auth,relay"),
    ];
    let mut nodes: Vec<Node> = plan
        .iter()
        .map(|(name, region, functions)| Node::start(&url, p, name, region, functions))
        .collect();
    let gateways: Gateways = Arc::new(std::sync::Mutex::new(vec![nodes[1].ws(), nodes[3].ws()]));
    let stop = Arc::new(AtomicBool::new(false));
    // Two rooms, each with a peer on either gateway.
    let peers = [
        ("r1", "alice", "bob", 0),
        ("r1", "bob", "alice", 1),
        ("r2", "carol", "dave", 0),
        ("r2", "dave", "carol", 1),
    ];
    let drivers: Vec<_> = peers
        .into_iter()
        .map(|(room, me, partner, gw)| {
            tokio::spawn(drive(gateways.clone(), gw, room, me, partner, stop.clone()))
        })
        .collect();
    // Under load for a moment, then every node in turn: drained (SIGTERM),
    // gone, and started again under its name.
    let warm = Instant::now() + Duration::from_secs(1);
    while Instant::now() < warm {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, (name, region, functions)) in plan.iter().enumerate() {
        nodes[i].signal("TERM");
        assert_eq!(
            nodes[i].child_exit(DEADLINE),
            Some(0),
            "{name} drains: {}",
            nodes[i].log()
        );
        nodes[i] = Node::start(&url, p, name, region, functions);
        assert_eq!(nodes[i].ready().await, 200, "{name} is back");
        if functions.contains("relay") {
            gateways.lock().expect("gateways")[i / 2] = nodes[i].ws();
        }
    }
    // A last stretch of load after the last restart.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for d in drivers {
        all.push(d.await.expect("driver"));
    }
    for s in &all {
        // The partner numbered messages and signals together: numbers
        // missing between its first and last are frames lost on the way
        // in (client frames carry no ids yet: the issue "Every frame
        // accounted for"), reported, not asserted.
        let mut got: Vec<u64> = s.messages.iter().chain(&s.signals).copied().collect();
        got.sort_unstable();
        let missing = match (got.first(), got.last()) {
            (Some(a), Some(b)) => (b - a + 1) as usize - got.len(),
            _ => 0,
        };
        eprintln!(
            "{}: {} messages, {} signals, {missing} missing, {} resumes, {} told unavailable, longest silence {:?}",
            s.peer_id,
            s.messages.len(),
            s.signals.len(),
            s.resumes,
            s.told_unavailable,
            s.longest_silence
        );
    }
    for s in &all {
        assert!(s.broken.is_empty(), "{:#?}", s.broken);
        assert!(
            in_order(&s.messages),
            "messages out of order: {:?}",
            s.messages
        );
        assert!(
            in_order(&s.signals),
            "signals out of order: {:?}",
            s.signals
        );
        assert!(
            s.longest_silence < Duration::from_secs(2),
            "{}'s partner was silent for {:?}",
            s.peer_id,
            s.longest_silence
        );
        assert!(s.messages.len() > 100 && s.signals.len() > 100, "{s:?}");
    }
    // Every peer moved twice (its gateway drained, then the other one).
    assert!(all.iter().all(|s| s.resumes >= 1), "{all:?}");
}
