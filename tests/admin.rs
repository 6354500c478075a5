//! The admin API and hot reload against a real server: every endpoint
//! with the right credential, a wrong-room admin token and none; component
//! upload, refusal and rollback; a reload under live traffic.

use roomlet::runtime::secrets::{ApiKeys, Secret};
use roomlet::server::Secrets;
use roomlet_tests::server::{Client, TestServer, Wire, joined, start_with, token};
use roomlet_tests::{hostile, http};
use serde_json::{Value, json};
use std::time::Duration;

const OPERATOR: &str = "operator-credential-for-tests-0123456789";

async fn server(rooms_component: Option<std::path::PathBuf>) -> TestServer {
    let secrets = Secrets {
        api_keys: ApiKeys::dev(),
        operator: Some(Secret::new(OPERATOR)),
        ..Default::default()
    };
    start_with(
        |c| {
            if let Some(p) = rooms_component {
                c.modules.insert(
                    "rooms".into(),
                    roomlet::config::ModuleSection {
                        path: Some(p),
                        ..Default::default()
                    },
                );
            }
        },
        secrets,
    )
    .await
}

fn hostile_path() -> std::path::PathBuf {
    match hostile() {
        roomlet::runtime::ComponentSource::File(p) => p,
        _ => unreachable!("the fixture is a file"),
    }
}

/// The hostile fixture with a custom section appended: the same logic
/// under a different hash, i.e. a new version.
fn hostile_v2() -> Vec<u8> {
    let mut bytes = std::fs::read(hostile_path()).expect("fixture");
    let name = b"roomlet-test-version";
    let payload = b"2";
    let content_len = 1 + name.len() + payload.len();
    bytes.push(0); // custom section
    bytes.push(content_len as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body expected ({e}): {body}"))
}

#[tokio::test]
async fn operator_endpoints_need_the_operator_credential() {
    let s = server(None).await;
    let internal = s.running.internal_addr;
    let (_a, ja) = joined(&s, Wire::Json, "ops", "alice").await;
    let admin_token = token("ops", "boss", true);
    for (method, path) in [
        ("GET", "/v1/admin/rooms"),
        ("GET", "/v1/admin/modules"),
        ("PUT", "/v1/admin/modules/rooms"),
        ("POST", "/v1/admin/modules/rooms/rollback"),
        ("DELETE", "/v1/admin/rooms/ops"),
        ("POST", "/v1/admin/drain"),
    ] {
        let (status, _) = http(internal, method, path, None, b"").await;
        assert_eq!(status, 401, "{method} {path} without a credential");
        let (status, body) = http(internal, method, path, Some(&admin_token), b"").await;
        assert_eq!(
            status, 403,
            "{method} {path} with a room admin token: {body}"
        );
    }
    let (status, body) = http(internal, "GET", "/v1/admin/rooms", Some(OPERATOR), b"").await;
    assert_eq!(status, 200);
    let rooms = parse(&body);
    assert_eq!(rooms["rooms"][0]["name"], "ops");
    assert_eq!(rooms["rooms"][0]["participants"], 1);
    let (status, body) = http(internal, "GET", "/v1/admin/modules", Some(OPERATOR), b"").await;
    assert_eq!(status, 200);
    assert_eq!(parse(&body)["rooms"]["versions"][0]["origin"], "embedded");
    assert!(ja["peerId"].is_string());
    // The public listener does not serve the admin API at all.
    let (status, _) = http(s.addr(), "GET", "/v1/admin/rooms", Some(OPERATOR), b"").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn room_admin_endpoints_with_right_wrong_and_no_credential() {
    let s = server(None).await;
    let internal = s.running.internal_addr;
    let (mut alice, ja) = joined(&s, Wire::Json, "class", "alice").await;
    let (mut bob, jb) = joined(&s, Wire::Json, "class", "bob").await;
    let bob_id = jb["peerId"].as_str().expect("id").to_owned();
    alice.frame_of("peer-joined").await;
    let right = token("class", "teacher", true);
    let wrong_room = token("elsewhere", "teacher", true);
    let not_admin = token("class", "student", false);
    let endpoints: Vec<(&str, String, Vec<u8>)> = vec![
        ("GET", "/v1/admin/rooms/class/participants".into(), vec![]),
        (
            "POST",
            "/v1/admin/rooms/class/messages".into(),
            br#"{"data":{"notice":"5 minutes left"}}"#.to_vec(),
        ),
        (
            "PUT",
            "/v1/admin/rooms/class/metadata".into(),
            br#"{"metadata":"exam"}"#.to_vec(),
        ),
        (
            "DELETE",
            format!("/v1/admin/rooms/class/participants/{bob_id}"),
            vec![],
        ),
    ];
    for (method, path, body) in &endpoints {
        let (status, _) = http(internal, method, path, None, body).await;
        assert_eq!(status, 401, "{method} {path} without a token");
        let (status, _) = http(internal, method, path, Some(&wrong_room), body).await;
        assert_eq!(
            status, 403,
            "{method} {path} with another room's admin token"
        );
        let (status, _) = http(internal, method, path, Some(&not_admin), body).await;
        assert_eq!(status, 403, "{method} {path} without roomAdmin");
    }
    // Nothing happened so far: bob is still there and heard nothing.
    let (status, body) = http(
        internal,
        "GET",
        "/v1/admin/rooms/class/participants",
        Some(&right),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<String> = parse(&body)["participants"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .collect();
    assert!(ids.contains(&bob_id) && ids.contains(&ja["peerId"].as_str().expect("id").to_owned()));
    let (status, _) = http(
        internal,
        "POST",
        "/v1/admin/rooms/class/messages",
        Some(&right),
        endpoints[1].2.as_slice(),
    )
    .await;
    assert_eq!(status, 200);
    for c in [&mut alice, &mut bob] {
        let m = c.frame_of("message").await;
        assert_eq!(
            (m["from"].as_str(), &m["data"]),
            (Some(""), &json!({"notice": "5 minutes left"}))
        );
    }
    let (status, _) = http(
        internal,
        "PUT",
        "/v1/admin/rooms/class/metadata",
        Some(&right),
        endpoints[2].2.as_slice(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(bob.frame_of("room-metadata").await["metadata"], "exam");
    let (status, _) = http(internal, "DELETE", &endpoints[3].1, Some(&right), b"").await;
    assert_eq!(status, 200);
    bob.frame_of("kicked").await;
    assert_eq!(bob.closed().await, 4004);
    let (status, _) = http(internal, "DELETE", &endpoints[3].1, Some(&right), b"").await;
    assert_eq!(status, 404, "removing a peer twice");
    // The operator may use room endpoints too, and close the room.
    let (status, _) = http(
        internal,
        "GET",
        "/v1/admin/rooms/class/participants",
        Some(OPERATOR),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = http(
        internal,
        "DELETE",
        "/v1/admin/rooms/class",
        Some(OPERATOR),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(alice.frame_of("error").await["code"], "room-closed");
    assert_eq!(alice.closed().await, 4008);
}

#[tokio::test]
async fn drain_makes_the_node_unready_and_refuses_joins() {
    let s = server(None).await;
    let (status, _) = http(s.addr(), "GET", "/readyz", None, b"").await;
    assert_eq!(status, 200);
    let (status, _) = http(
        s.running.internal_addr,
        "POST",
        "/v1/admin/drain",
        Some(OPERATOR),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = http(s.addr(), "GET", "/readyz", None, b"").await;
    assert_eq!(status, 503);
    let mut c = Client::connect(&s.ws_url(), Wire::Json).await;
    c.send(json!({"type": "join", "room": "late", "token": token("late", "x", false)}))
        .await;
    assert_eq!(c.frame_of("error").await["code"], "draining");
    assert_eq!(c.closed().await, 4006);
}

/// The drain (SIGTERM on a node with a bus): `reconnect` to every session, then the node stops as
/// soon as the last client has gone, not when the grace period ends.
#[tokio::test]
async fn a_drain_ends_when_the_last_client_has_gone() {
    let s = server(None).await;
    let (mut a, _) = joined(&s, Wire::Json, "d", "a").await;
    let (mut b, _) = joined(&s, Wire::Json, "d", "b").await;
    let TestServer { running, dir: _dir } = s;
    let gateway = running.gateway.clone();
    let grace = Duration::from_secs(600);
    let drain = tokio::spawn(running.drain(None, grace));
    for c in [&mut a, &mut b] {
        assert_eq!(c.frame_of("reconnect").await["reason"], "draining");
        assert_eq!(c.closed().await, 4006);
    }
    tokio::time::timeout(roomlet_tests::DEADLINE, drain)
        .await
        .expect("the drain ended within the deadline, not the 600 s grace")
        .expect("the drain task did not panic");
    assert_eq!(gateway.connections(), 0);
}

async fn count(c: &mut Client) -> u64 {
    c.send(json!({"type": "message", "data": "count"})).await;
    let m = c.frame_of("message").await;
    m["data"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a count")
}

#[tokio::test]
async fn broken_upgrades_are_refused_and_rollback_works() {
    let s = server(Some(hostile_path())).await;
    let internal = s.running.internal_addr;
    let (mut c, _) = joined(&s, Wire::Json, "up", "a").await;
    assert_eq!(count(&mut c).await, 1);
    let before = parse(
        &http(internal, "GET", "/v1/admin/modules", Some(OPERATOR), b"")
            .await
            .1,
    )["rooms"]["current"]
        .clone();

    // Not a component.
    let (status, body) = http(
        internal,
        "PUT",
        "/v1/admin/modules/rooms",
        Some(OPERATOR),
        b"\0asm garbage",
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        parse(&body)["message"]
            .as_str()
            .is_some_and(|m| m.contains("compile")),
        "{body}"
    );
    // A component of the wrong world.
    let relay = roomlet::runtime::embedded::bytes(roomlet::runtime::Function::Relay);
    let (status, body) = http(
        internal,
        "PUT",
        "/v1/admin/modules/rooms",
        Some(OPERATOR),
        relay,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    // The default rooms component, as if built against an older contract:
    // refused, naming both versions.
    let default_rooms = roomlet::runtime::embedded::bytes(roomlet::runtime::Function::Rooms);
    let old = with_contract_version(default_rooms, "0.1.0");
    let (status, body) = http(
        internal,
        "PUT",
        "/v1/admin/modules/rooms",
        Some(OPERATOR),
        &old,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let message = parse(&body)["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("built against roomlet:signal@0.1.0")
            && message.contains(&format!(
                "this host implements {}",
                roomlet::runtime::error::CONTRACT
            )),
        "{body}"
    );
    // A valid rooms component that refuses the live room's snapshot.
    let (status, body) = http(
        internal,
        "PUT",
        "/v1/admin/modules/rooms",
        Some(OPERATOR),
        default_rooms,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("refused the snapshot"), "{body}");
    // The old version kept serving, state intact, socket open.
    assert_eq!(count(&mut c).await, 2);
    let now = parse(
        &http(internal, "GET", "/v1/admin/modules", Some(OPERATOR), b"")
            .await
            .1,
    )["rooms"]["current"]
        .clone();
    assert_eq!(now, before);

    // A good upgrade carries the state over; a rollback brings the old version back.
    let (status, body) = http(
        internal,
        "PUT",
        "/v1/admin/modules/rooms",
        Some(OPERATOR),
        &hostile_v2(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v2 = parse(&body)["deployed"]["version"].clone();
    assert_ne!(v2, before);
    assert_eq!(
        count(&mut c).await,
        3,
        "state moved through snapshot/restore"
    );
    let (status, body) = http(
        internal,
        "POST",
        "/v1/admin/modules/rooms/rollback",
        Some(OPERATOR),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body)["deployed"]["version"], before);
    assert_eq!(count(&mut c).await, 4);
    let (status, _) = http(
        internal,
        "POST",
        "/v1/admin/modules/rooms/rollback",
        Some(OPERATOR),
        b"",
    )
    .await;
    assert_eq!(status, 409, "nothing older to roll back to");
    // auth and relay reload too.
    let auth = roomlet::runtime::embedded::bytes(roomlet::runtime::Function::Auth);
    let (status, body) = http(
        internal,
        "PUT",
        "/v1/admin/modules/auth",
        Some(OPERATOR),
        auth,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_d, jd) = joined(&s, Wire::Json, "up", "d").await;
    assert!(jd["peerId"].is_string(), "joins work on the reloaded auth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_live_traffic_loses_no_frame_and_closes_no_socket() {
    const ROOMS: usize = 100;
    const COUNTS: u64 = 20;
    let s = server(Some(hostile_path())).await;
    let internal = s.running.internal_addr;
    let mut tasks = Vec::new();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel::<()>(ROOMS);
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    for r in 0..ROOMS {
        let (mut c, _) = joined(
            &s,
            if r % 2 == 0 {
                Wire::Json
            } else {
                Wire::Msgpack
            },
            &format!("live-{r}"),
            "p",
        )
        .await;
        let started = started_tx.clone();
        let mut go = go_rx.clone();
        tasks.push(tokio::spawn(async move {
            // Half the traffic before the reload, half during and after.
            for expect in 1..=COUNTS / 2 {
                assert_eq!(count(&mut c).await, expect);
            }
            started.send(()).await.expect("report");
            go.wait_for(|g| *g).await.expect("go signal");
            for expect in COUNTS / 2 + 1..=COUNTS {
                assert_eq!(
                    count(&mut c).await,
                    expect,
                    "every frame answered once, in order, state kept"
                );
            }
            c.send(json!({"type": "ping"})).await;
            assert_eq!(
                c.frame_of("pong").await["type"],
                "pong",
                "the socket stayed open"
            );
        }));
    }
    for _ in 0..ROOMS {
        started_rx.recv().await.expect("room started");
    }
    // Let the second half start racing the reload.
    go_tx.send(true).expect("tasks listen");
    let (status, body) = http(
        internal,
        "PUT",
        "/v1/admin/modules/rooms",
        Some(OPERATOR),
        &hostile_v2(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for t in tasks {
        t.await.expect("room traffic task");
    }
    let rooms = parse(
        &http(internal, "GET", "/v1/admin/rooms", Some(OPERATOR), b"")
            .await
            .1,
    );
    let v2 = parse(&body)["deployed"]["version"].clone();
    for r in rooms["rooms"].as_array().expect("rooms") {
        assert_eq!(r["moduleVersion"], v2, "every room runs the new version");
    }
}

#[tokio::test]
async fn dev_mode_reloads_a_component_file_when_it_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("room.wasm");
    std::fs::copy(hostile_path(), &path).expect("copy fixture");
    let watched = path.clone();
    let s = roomlet_tests::server::start(move |c| {
        c.modules.insert(
            "rooms".into(),
            roomlet::config::ModuleSection {
                path: Some(watched),
                ..Default::default()
            },
        );
    })
    .await;
    let (mut c, _) = joined(&s, Wire::Json, "watched", "a").await;
    assert_eq!(count(&mut c).await, 1);
    let before = s.running.modules.list()[&roomlet::runtime::Function::Rooms].len();
    // Write the new version beside it and rename it in, as editors and
    // build tools do, so the watcher never sees half a file.
    let tmp = dir.path().join("room.wasm.tmp");
    std::fs::write(&tmp, hostile_v2()).expect("write v2");
    std::fs::rename(&tmp, &path).expect("rename v2");
    let modules = s.running.modules.clone();
    roomlet_tests::wait_for("the watcher to deploy the new file", || {
        modules.list()[&roomlet::runtime::Function::Rooms].len() > before
    })
    .await;
    assert_eq!(
        count(&mut c).await,
        2,
        "the room moved with its state, socket open"
    );
}

/// `component` with every `roomlet:signal/…@` name moved to `version`, as a
/// build against that version of the contract would name them. The
/// version strings are the same length, so the binary stays valid.
fn with_contract_version(component: &[u8], version: &str) -> Vec<u8> {
    let ours = roomlet::runtime::error::CONTRACT
        .rsplit_once('@')
        .expect("CONTRACT is name@version")
        .1;
    assert_eq!(
        ours.len(),
        version.len(),
        "same length keeps the binary valid"
    );
    let prefix = b"roomlet:signal/";
    let mut out = component.to_vec();
    let mut i = 0;
    let mut moved = 0;
    while let Some(at) = out[i..].windows(prefix.len()).position(|w| w == prefix) {
        let start = i + at + prefix.len();
        let name_len = out[start..]
            .iter()
            .take_while(|b| b.is_ascii_lowercase() || **b == b'-')
            .count();
        let v = start + name_len;
        if out.get(v) == Some(&b'@') && out[v + 1..].starts_with(ours.as_bytes()) {
            out[v + 1..v + 1 + ours.len()].copy_from_slice(version.as_bytes());
            moved += 1;
        }
        i = start;
    }
    assert!(moved > 0, "the component names no roomlet:signal interface");
    out
}

/// `--dev` with no operator credential configured takes the well-known one,
/// so the documented upload works on a developer's machine; the modules
/// listing names its fields as docs/admin-api.md does. Without `--dev`
/// there is no such default.
#[tokio::test]
async fn dev_mode_takes_the_well_known_operator_token_and_field_names_hold() {
    let dev = roomlet_tests::server::start(|_| {}).await;
    let dev_token = roomlet::runtime::secrets::DEV_OPERATOR_TOKEN;
    let internal = dev.running.internal_addr;
    let (status, body) = http(internal, "GET", "/v1/admin/modules", Some(dev_token), b"").await;
    assert_eq!(status, 200, "{body}");
    let modules = parse(&body);
    for function in ["auth", "rooms", "relay"] {
        let v = &modules[function]["versions"][0];
        for field in ["version", "origin", "deployed_at"] {
            assert!(
                !v[field].is_null(),
                "{function}: no {field} in {v} (docs/admin-api.md names it)"
            );
        }
        assert_eq!(modules[function]["current"], v["version"]);
    }
    let production = roomlet_tests::server::start_with(
        |c| c.server.dev = false,
        Secrets {
            api_keys: ApiKeys::dev(),
            ..Default::default()
        },
    )
    .await;
    let (status, _) = http(
        production.running.internal_addr,
        "GET",
        "/v1/admin/modules",
        Some(dev_token),
        b"",
    )
    .await;
    assert!(
        matches!(status, 401 | 403),
        "the dev operator token outside --dev: {status}"
    );
}
