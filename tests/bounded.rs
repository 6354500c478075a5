//! Memory a client controls is bounded (issue 32): readers that never ack,
//! readers that stop reading, parked sessions, and frames trickled a byte
//! a second each leave the server's RSS within 64 MiB of where it started,
//! while a sender goes on at its full allowed rate (100 frames of 60 KB a
//! second). The server is a `roomlet serve` process of its own, so its RSS
//! is its alone.

use futures_util::{SinkExt, StreamExt};
use roomlet_tests::process::{Serve, ServeCommand};
use roomlet_tests::raw::{self, Raw, TEXT};
use roomlet_tests::server::{Client, Wire, dev_token};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;
/// The most RSS may grow in each scenario.
const BOUND: u64 = 64 * MIB;
/// A message's data: 60 KB, under the 64 KiB frame cap with its envelope.
const DATA_LEN: usize = 60_000;

fn serve(dir: &std::path::Path) -> Serve {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_roomlet-node"));
    // Room for the 100 parked sessions and their sender in one room.
    let config = dir.join("roomlet.toml");
    std::fs::write(&config, "[modules.rooms.config]\nmax-participants = 200\n").expect("config");
    ServeCommand::new(&bin, &dir.join("serve.log"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .dev(dir)
        .start()
        .unwrap_or_else(|log| panic!("roomlet serve did not start:\n{log}"))
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The highest RSS seen while it runs, sampled every 50 ms.
struct Peak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    start: u64,
}

impl Peak {
    fn watch(pid: u32) -> Peak {
        let start = rss(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(start));
        let task = {
            let (stop, peak) = (stop.clone(), peak.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    peak.fetch_max(rss(pid), Ordering::Relaxed);
                }
            })
        };
        Peak {
            stop,
            peak,
            task,
            start,
        }
    }

    /// Ends the watch: the growth over the start, in bytes.
    async fn growth(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed).saturating_sub(self.start)
    }
}

/// A JSON client joined to `room` that sends `seconds` of 60 KB messages
/// at 100 a second; returns how many it sent and the error frames it got.
fn sender(url: String, room: String, seconds: u64) -> tokio::task::JoinHandle<(u64, Vec<String>)> {
    tokio::spawn(async move {
        let mut c = Client::connect(&url, Wire::Json).await;
        c.join(&room, &dev_token(&room, "sender")).await;
        let (mut tx, mut rx) = c.into_inner().split();
        let errors = tokio::spawn(async move {
            let mut errors = Vec::new();
            while let Some(Ok(m)) = rx.next().await {
                if let Message::Text(t) = m
                    && t.contains(r#""type":"error""#)
                {
                    errors.push(t.chars().take(120).collect());
                }
            }
            errors
        });
        let text = json!({"type": "message", "data": "x".repeat(DATA_LEN)}).to_string();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut sent = 0;
        for _ in 0..seconds * 100 {
            tick.tick().await;
            if tx.send(Message::text(text.clone())).await.is_err() {
                break;
            }
            sent += 1;
        }
        let _ = tx.close().await;
        let errors = tokio::time::timeout(Duration::from_secs(10), errors)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        (sent, errors)
    })
}

/// 10 readers read everything and never ack, for 30 s: each keeps its
/// connection (no 1006) and gets nearly every message; the sender is never
/// refused; RSS grows by at most 64 MiB (the resume buffers' byte cap; the
/// 1,024-frame cap alone let 600 MB pile up).
async fn readers_that_never_ack(s: &Serve) {
    let room = "never-ack";
    let mut readers = Vec::new();
    for i in 0..10 {
        let mut c = Client::connect(&s.ws(), Wire::Json).await;
        c.join(room, &dev_token(room, &format!("reader-{i}"))).await;
        let (keep_open, mut rx) = c.into_inner().split();
        let count = Arc::new(AtomicU64::new(0));
        let counted = count.clone();
        let task = tokio::spawn(async move {
            let _keep_open = keep_open;
            while let Some(m) = rx.next().await {
                match m {
                    Ok(Message::Text(t)) if t.len() > DATA_LEN => {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Message::Close(c)) => return c.map_or(1005, |c| u16::from(c.code)),
                    Ok(_) => {}
                    Err(_) => return 1006,
                }
            }
            1006
        });
        readers.push((count, task));
    }
    let peak = Peak::watch(s.child.id());
    let (sent, errors) = sender(s.ws(), room.into(), 30).await.expect("sender");
    let growth = peak.growth().await;
    assert!(errors.is_empty(), "the sender was refused: {errors:?}");
    assert!(sent >= 2990, "the sender kept its rate: {sent} of 3000");
    let deadline = Instant::now() + roomlet_tests::DEADLINE;
    for (i, (count, task)) in readers.into_iter().enumerate() {
        while count.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
            assert!(!task.is_finished(), "reader {i} lost its connection");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            count.load(Ordering::Relaxed),
            sent,
            "reader {i} got every message"
        );
        assert!(!task.is_finished(), "reader {i} kept its connection");
        task.abort();
    }
    assert!(
        growth <= BOUND,
        "never-acking readers: RSS grew {} MiB",
        growth / MIB
    );
    eprintln!("never-acking readers: RSS grew {} MiB", growth / MIB);
}

/// 10 readers stop reading: each is cut off once its queue passes its cap
/// and, reading again, finds `too-slow` and 4011; RSS stays bounded.
async fn readers_that_stop_reading(s: &Serve) {
    let room = "stopped";
    let mut readers = Vec::new();
    for i in 0..10 {
        readers.push(Raw::joined(s.public, false, room, &format!("sleeper-{i}")).await);
    }
    let peak = Peak::watch(s.child.id());
    let (sent, errors) = sender(s.ws(), room.into(), 12).await.expect("sender");
    let growth = peak.growth().await;
    assert!(errors.is_empty(), "the sender was refused: {errors:?}");
    assert!(sent >= 1190, "the sender kept its rate: {sent} of 1200");
    for (i, mut r) in readers.into_iter().enumerate() {
        let end = tokio::time::timeout(Duration::from_secs(30), r.reader.ending())
            .await
            .expect("the reader reaches the end");
        assert_eq!(end.code, 4011, "sleeper {i}: {} {:?}", end.code, end.reason);
        assert!(
            end.frames
                .iter()
                .any(|f| f["type"] == "error" && f["code"] == "too-slow"),
            "sleeper {i} was told why"
        );
    }
    assert!(
        growth <= BOUND,
        "readers that stopped: RSS grew {} MiB",
        growth / MIB
    );
    eprintln!("readers that stopped: RSS grew {} MiB", growth / MIB);
}

/// 100 sessions whose sockets dropped wait out their grace while the room
/// goes on sending 60 KB messages.
async fn parked_sessions(s: &Serve) {
    let room = "parked";
    for i in 0..100 {
        let mut c = Client::connect(&s.ws(), Wire::Json).await;
        c.join(room, &dev_token(room, &format!("away-{i}"))).await;
        c.drop_connection();
    }
    let peak = Peak::watch(s.child.id());
    let (sent, errors) = sender(s.ws(), room.into(), 10).await.expect("sender");
    let growth = peak.growth().await;
    assert!(errors.is_empty(), "the sender was refused: {errors:?}");
    assert!(sent >= 990, "the sender kept its rate: {sent} of 1000");
    assert!(
        growth <= BOUND,
        "100 parked sessions: RSS grew {} MiB",
        growth / MIB
    );
    eprintln!("100 parked sessions: RSS grew {} MiB", growth / MIB);
}

/// 1,000 connections each announce a 64 KiB frame and send it a byte a
/// second.
async fn trickled_frames(s: &Serve) {
    let mut conns = Vec::new();
    for i in 0..1000 {
        let room = format!("trickle-{}", i % 20);
        let mut c = Raw::joined(s.public, false, &room, &format!("drip-{i}")).await;
        let head = raw::frame(true, 0, TEXT, true, &vec![b' '; 64 * 1024]);
        // The header and mask: 14 bytes; the payload follows a byte a second.
        c.send(&head[..14]).await;
        conns.push((c, 14usize, head));
    }
    let peak = Peak::watch(s.child.id());
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < Duration::from_secs(20) {
        tick.tick().await;
        for (c, at, head) in &mut conns {
            if *at < head.len() && c.wr.write_all(&head[*at..*at + 1]).await.is_ok() {
                *at += 1;
            }
        }
    }
    let growth = peak.growth().await;
    assert!(
        growth <= BOUND,
        "1,000 trickled frames: RSS grew {} MiB",
        growth / MIB
    );
    eprintln!("1,000 trickled frames: RSS grew {} MiB", growth / MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_client_controls_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = serve(dir.path());
    readers_that_never_ack(&s).await;
    readers_that_stop_reading(&s).await;
    parked_sessions(&s).await;
    trickled_frames(&s).await;
}
