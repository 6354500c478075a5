//! The host runtime against real components: every export of each default
//! component through the host, and the isolation guarantees with the
//! hostile fixture (traps, deadlines, memory caps, kv atomicity,
//! hibernation).

use roomlet::rooms::{Delivery, JoinError, RoomsConfig};
use roomlet::runtime::bindings::authenticator::{AuthError, AuthRequest};
use roomlet::runtime::bindings::relay_policy::{Frame, FrameKind, Verdict};
use roomlet::runtime::bindings::room::{Action, CreateCause};
use roomlet::runtime::bindings::types::{Grants, RoomMessage, Signal, SignalKind, Target};
use roomlet::runtime::secrets::{ApiKeys, Secret};
use roomlet::runtime::{CallError, ComponentSource, FunctionSpec, Limits};
use roomlet_tests::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn msg(sender: &str, target: Target, data: &str) -> RoomMessage {
    RoomMessage {
        sender: sender.into(),
        target,
        data: data.into(),
    }
}

fn cmd(sender: &str, command: &str) -> RoomMessage {
    msg(sender, Target::Room, &format!("\"{command}\""))
}

fn no_hibernation() -> RoomsConfig {
    RoomsConfig {
        hibernate_after: None,
        ..RoomsConfig::default()
    }
}

#[tokio::test]
async fn auth_component_verifies_tokens_through_the_host() {
    let node = TestNode::new();
    let mut keys = ApiKeys::default();
    keys.insert("APIkey1", Secret::new("s3cret-s3cret-s3cret-s3cret-s3cret"));
    let auth = node
        .loader
        .auth(&FunctionSpec::default(), Arc::new(keys))
        .expect("auth loads");
    let now = now_secs();
    let claims = json!({
        "iss": "APIkey1", "sub": "alice", "name": "Alice", "exp": now + 600, "nbf": now - 10,
        "video": {"room": "r1", "roomJoin": true, "canPublish": false}
    });
    let token = roomlet_tests::tokens::hs256(&claims, "s3cret-s3cret-s3cret-s3cret-s3cret");
    let req = |token: &str, room: &str| AuthRequest {
        token: token.into(),
        room: room.into(),
        client_addr: "127.0.0.1:1".into(),
        region: "local".into(),
        headers: vec![],
    };
    let id = auth
        .authenticate(&req(&token, "r1"))
        .await
        .expect("no trap")
        .expect("valid token");
    assert_eq!(id.identity, "alice");
    assert_eq!(id.name, "Alice");
    assert_eq!(id.room, "r1");
    assert_eq!(id.expires_at_ms, (now + 600) * 1000);
    assert!(id.grants.contains(Grants::JOIN));
    assert!(
        !id.grants.contains(Grants::PUBLISH),
        "canPublish false is honoured"
    );
    assert!(
        id.grants.contains(Grants::SUBSCRIBE),
        "canSubscribe defaults to true"
    );

    let wrong_room = auth
        .authenticate(&req(&token, "r2"))
        .await
        .expect("no trap");
    assert!(
        matches!(wrong_room, Err(AuthError::WrongRoom)),
        "{wrong_room:?}"
    );
    let forged = roomlet_tests::tokens::hs256(&claims, "another-secret-another-secret-xx");
    let bad = auth
        .authenticate(&req(&forged, "r1"))
        .await
        .expect("no trap");
    assert!(matches!(bad, Err(AuthError::BadSignature)), "{bad:?}");
    let garbage = auth
        .authenticate(&req("not.a.jwt", "r1"))
        .await
        .expect("no trap");
    assert!(matches!(garbage, Err(AuthError::Malformed)), "{garbage:?}");
}

#[tokio::test]
async fn relay_component_forwards_and_rejects() {
    let node = TestNode::new();
    let spec = FunctionSpec {
        config: [("max-payload-bytes".to_string(), "100".to_string())].into(),
        ..FunctionSpec::default()
    };
    let relay = node.loader.relay(&spec).expect("relay loads");
    fn frame<'a>(kind: FrameKind, to: Option<&'a str>, payload: &'a str) -> Frame<'a> {
        Frame {
            kind,
            room: "r",
            sender: "a",
            to,
            payload,
        }
    }
    let offer = FrameKind::Signal(SignalKind::Offer);
    let v = relay
        .check(frame(offer, Some("b"), r#"{"sdp":"v=0"}"#))
        .await
        .expect("no trap");
    assert!(matches!(v, Verdict::Forward), "{v:?}");
    let v = relay
        .check(frame(offer, Some("b"), &"x".repeat(200)))
        .await
        .expect("no trap");
    assert!(
        matches!(&v, Verdict::Reject(r) if r.code == "payload-too-large"),
        "{v:?}"
    );
    let v = relay
        .check(frame(offer, None, "{}"))
        .await
        .expect("no trap");
    assert!(
        matches!(&v, Verdict::Reject(r) if r.code == "signal-needs-target"),
        "{v:?}"
    );
    let v = relay
        .check(frame(offer, Some("a"), "{}"))
        .await
        .expect("no trap");
    assert!(
        matches!(&v, Verdict::Reject(r) if r.code == "signal-to-self"),
        "{v:?}"
    );
    let v = relay
        .check(frame(FrameKind::Message, None, "[1,2]"))
        .await
        .expect("no trap");
    assert!(matches!(v, Verdict::Forward), "{v:?}");
}

#[tokio::test]
async fn rooms_component_every_export_through_the_host() {
    let node = TestNode::new();
    let f = node.rooms_function(
        ComponentSource::Embedded,
        &[("max-participants", "2"), ("empty-timeout-ms", "1234")],
        Limits::default(),
    );
    let mut room = f
        .instantiate("direct".into(), Arc::new(vec![]))
        .await
        .expect("instance");
    let settings = room.on_create(CreateCause::Fresh).await.expect("on-create");
    assert!(!settings.observe_signals);
    assert!(!settings.observe_messages);
    let a = peer("a");
    assert!(room.on_join(&a).await.expect("on-join").is_ok());
    room.set_peers(Arc::new(vec![a.clone()]));
    let b = peer("b");
    assert!(room.on_join(&b).await.expect("on-join").is_ok());
    room.set_peers(Arc::new(vec![a.clone(), b.clone()]));
    let full = room.on_join(&peer("c")).await.expect("on-join");
    assert!(matches!(&full, Err(r) if r.code == "room-full"), "{full:?}");

    let actions = room
        .on_message(&msg("a", Target::Room, "1"))
        .await
        .expect("on-message");
    assert!(
        matches!(&actions[..], [Action::Broadcast((out, except))] if out.sender == "a" && except == &["a".to_string()]),
        "{actions:?}"
    );
    let actions = room
        .on_message(&msg("a", Target::Peer("b".into()), "2"))
        .await
        .expect("on-message");
    assert!(
        matches!(&actions[..], [Action::Send((to, _))] if to == &["b".to_string()]),
        "{actions:?}"
    );
    let actions = room
        .on_message(&msg("a", Target::Peer("zz".into()), "3"))
        .await
        .expect("on-message");
    assert!(
        matches!(&actions[..], [Action::Reject(r)] if r.code == "unknown-peer"),
        "{actions:?}"
    );
    let sig = Signal {
        sender: "a".into(),
        to: "b".into(),
        kind: SignalKind::Offer,
        payload: "{}".into(),
    };
    assert!(room.on_signal(&sig).await.expect("on-signal").is_empty());

    room.set_peers(Arc::new(vec![]));
    let actions = room.on_leave(&b).await.expect("on-leave");
    assert!(
        matches!(&actions[..], [Action::SetTimer(1234)]),
        "{actions:?}"
    );
    let actions = room.on_timer().await.expect("on-timer");
    assert!(matches!(&actions[..], [Action::Close(_)]), "{actions:?}");

    let version = room.state_version().await.expect("state-version");
    let snap = room.snapshot().await.expect("snapshot");
    let mut other = f
        .instantiate("direct".into(), Arc::new(vec![]))
        .await
        .expect("instance");
    assert_eq!(
        other.restore(&version, &snap).await.expect("restore"),
        Ok(())
    );
    let refused = other
        .restore("someone-else/9", &snap)
        .await
        .expect("restore");
    assert!(refused.is_err(), "a foreign snapshot version is refused");
    let refused = other.restore(&version, b"\xff").await.expect("restore");
    assert!(refused.is_err(), "garbage is refused");
}

#[tokio::test]
async fn snapshot_restore_round_trip_and_refusal() {
    let node = TestNode::new();
    let f = node.rooms_function(hostile(), &[], test_limits());
    let mut a = f
        .instantiate("r".into(), Arc::new(vec![]))
        .await
        .expect("instance");
    a.on_create(CreateCause::Fresh).await.expect("create");
    for _ in 0..3 {
        a.on_message(&cmd("p", "count")).await.expect("count");
    }
    let v = a.state_version().await.expect("version");
    let snap = a.snapshot().await.expect("snapshot");
    let mut b = f
        .instantiate("r".into(), Arc::new(vec![]))
        .await
        .expect("instance");
    assert_eq!(b.restore(&v, &snap).await.expect("restore"), Ok(()));
    let actions = b.on_message(&cmd("p", "count")).await.expect("count");
    assert!(
        matches!(&actions[..], [Action::Send((_, out))] if out.data == "\"4\""),
        "{actions:?}"
    );
    let mut c = f
        .instantiate("r".into(), Arc::new(vec![]))
        .await
        .expect("instance");
    let refused = c
        .restore("hostile/0", &snap)
        .await
        .expect("restore returns");
    assert!(
        refused
            .unwrap_err()
            .contains("unsupported snapshot version")
    );
}

#[tokio::test]
async fn kv_commits_on_return_and_discards_on_trap() {
    let node = TestNode::new();
    let rooms = node.rooms(
        node.rooms_function(hostile(), &[], test_limits()),
        no_hibernation(),
    );
    let (tx, mut inbox) = outbox();
    let (room, _) = rooms.join("kv", peer("a"), tx, true).await.expect("join");
    room.message(cmd("a", "set k1 v1")).await;
    assert_eq!(inbox.next_message().await, "\"ok\"");
    room.message(cmd("a", "set-then-trap k2 v2")).await;
    assert!(
        matches!(inbox.next().await, Delivery::Error { code, .. } if code.as_str() == "module-error")
    );
    room.message(cmd("a", "get k1")).await;
    assert_eq!(inbox.next_message().await, "\"v1\"");
    room.message(cmd("a", "get k2")).await;
    assert_eq!(
        inbox.next_message().await,
        "\"none\"",
        "the trapped call's write is discarded"
    );
    // Committed means durable: the store itself has it.
    assert_eq!(node.kv.get("kv", "k1").expect("read"), Some(b"v1".to_vec()));
    assert_eq!(node.kv.get("kv", "k2").expect("read"), None);
}

#[tokio::test]
async fn a_trapping_room_recovers_and_the_other_keeps_its_state() {
    let node = TestNode::new();
    let rooms = node.rooms(
        node.rooms_function(hostile(), &[], test_limits()),
        no_hibernation(),
    );
    let (ta, mut ia) = outbox();
    let (tb, mut ib) = outbox();
    let (ra, _) = rooms.join("a", peer("pa"), ta, true).await.expect("join a");
    let (rb, _) = rooms.join("b", peer("pb"), tb, true).await.expect("join b");
    for expect in ["\"1\"", "\"2\"", "\"3\""] {
        rb.message(cmd("pb", "count")).await;
        assert_eq!(ib.next_message().await, expect);
    }
    ra.message(cmd("pa", "count")).await;
    assert_eq!(ia.next_message().await, "\"1\"");
    ra.message(cmd("pa", "trap")).await;
    assert!(
        matches!(ia.next().await, Delivery::Error { code, .. } if code.as_str() == "module-error")
    );
    // Room a is back on a fresh instance (in-memory state gone, membership kept).
    ra.message(cmd("pa", "count")).await;
    assert_eq!(ia.next_message().await, "\"1\"");
    let status = ra.status().await.expect("a is open");
    assert_eq!((status.members, status.recent_traps), (1, 1));
    rb.message(cmd("pb", "count")).await;
    assert_eq!(ib.next_message().await, "\"4\"", "room b kept its state");
}

#[tokio::test]
async fn an_endless_loop_hits_the_deadline_while_other_rooms_answer() {
    let node = TestNode::new();
    let limits = Limits {
        deadline: Duration::from_millis(1500),
        ..test_limits()
    };
    let rooms = node.rooms(
        node.rooms_function(hostile(), &[], limits),
        no_hibernation(),
    );
    let (ta, mut ia) = outbox();
    let (tb, mut ib) = outbox();
    let (ra, _) = rooms
        .join("looping", peer("pa"), ta, true)
        .await
        .expect("join");
    let (rb, _) = rooms
        .join("busy", peer("pb"), tb, true)
        .await
        .expect("join");
    let started = tokio::time::Instant::now();
    ra.message(cmd("pa", "loop")).await;
    // While room a spins, room b answers many times over.
    for i in 1..=20 {
        rb.message(cmd("pb", "count")).await;
        assert_eq!(ib.next_message().await, format!("\"{i}\""));
    }
    let answered_in = started.elapsed();
    assert!(ia.is_empty(), "the loop is still running while b answered");
    assert!(
        matches!(ia.next().await, Delivery::Error { code, .. } if code.as_str() == "module-error")
    );
    let stopped_in = started.elapsed();
    assert!(
        answered_in < stopped_in,
        "b answered ({answered_in:?}) before a was stopped ({stopped_in:?})"
    );
    assert!(
        stopped_in >= Duration::from_millis(1400),
        "stopped by the deadline, not earlier: {stopped_in:?}"
    );
    ra.message(cmd("pa", "count")).await;
    assert_eq!(ia.next_message().await, "\"1\"", "room a recovered");
}

#[tokio::test]
async fn a_memory_grab_is_stopped_by_the_cap() {
    let node = TestNode::new();
    let f = node.rooms_function(hostile(), &[], test_limits());
    let mut room = f
        .instantiate("m".into(), Arc::new(vec![]))
        .await
        .expect("instance");
    room.on_create(CreateCause::Fresh).await.expect("create");
    let r = room.on_message(&cmd("p", "grow")).await;
    assert!(matches!(r, Err(CallError::MemoryCap)), "{r:?}");

    // Through the actor the room survives it.
    let rooms = node.rooms(f, no_hibernation());
    let (tx, mut inbox) = outbox();
    let (handle, _) = rooms.join("m", peer("p"), tx, true).await.expect("join");
    handle.message(cmd("p", "grow")).await;
    assert!(
        matches!(inbox.next().await, Delivery::Error { code, .. } if code.as_str() == "module-error")
    );
    handle.message(cmd("p", "count")).await;
    assert_eq!(inbox.next_message().await, "\"1\"");
}

#[tokio::test]
async fn an_idle_room_hibernates_and_revives_with_its_state() {
    let node = TestNode::new();
    let config = RoomsConfig {
        hibernate_after: Some(Duration::from_millis(100)),
        ..RoomsConfig::default()
    };
    let rooms = node.rooms(node.rooms_function(hostile(), &[], test_limits()), config);
    let (tx, mut inbox) = outbox();
    let (room, _) = rooms.join("h", peer("p"), tx, true).await.expect("join");
    for expect in ["\"1\"", "\"2\""] {
        room.message(cmd("p", "count")).await;
        assert_eq!(inbox.next_message().await, expect);
    }
    // Waits for the quiet period to pass by itself (no explicit hibernate).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let s = room.status().await.expect("open");
        if s.hibernated {
            assert!(!s.live, "a hibernated room has no instance");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "room never hibernated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    room.message(cmd("p", "count")).await;
    assert_eq!(
        inbox.next_message().await,
        "\"3\"",
        "revived with its state"
    );
    let s = room.status().await.expect("open");
    assert!(s.live && !s.hibernated);
}

/// The quiet-period timer is armed once and moved forward when it fires:
/// a room that keeps getting frames across several quiet periods never
/// hibernates early, and still hibernates once it is really quiet.
#[tokio::test]
async fn activity_keeps_a_room_awake_past_its_quiet_period() {
    let quiet = Duration::from_millis(300);
    let node = TestNode::new();
    let config = RoomsConfig {
        hibernate_after: Some(quiet),
        ..RoomsConfig::default()
    };
    let rooms = node.rooms(node.rooms_function(hostile(), &[], test_limits()), config);
    let (tx, mut inbox) = outbox();
    let (room, _) = rooms
        .join("awake", peer("p"), tx, true)
        .await
        .expect("join");
    let started = tokio::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < quiet * 4 {
        let sent = tokio::time::Instant::now();
        room.message(cmd("p", "count")).await;
        n += 1;
        assert_eq!(inbox.next_message().await, format!("\"{n}\""));
        tokio::time::sleep(quiet / 6).await;
        let s = room.status().await.expect("open");
        // The room's last activity is no earlier than `sent`: it may only
        // have hibernated if a whole quiet period has passed since.
        assert!(
            !s.hibernated || sent.elapsed() >= quiet,
            "hibernated {:?} after a frame, before its quiet period",
            sent.elapsed()
        );
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !room.status().await.expect("open").hibernated {
        assert!(
            tokio::time::Instant::now() < deadline,
            "room never hibernated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    room.message(cmd("p", "count")).await;
    assert_eq!(inbox.next_message().await, format!("\"{}\"", n + 1));
}

#[tokio::test]
async fn repeated_traps_close_only_the_offending_room() {
    let node = TestNode::new();
    let config = RoomsConfig {
        trap_limit: 3,
        ..no_hibernation()
    };
    let rooms = node.rooms(node.rooms_function(hostile(), &[], test_limits()), config);
    let (ta, mut ia) = outbox();
    let (tb, mut ib) = outbox();
    let (ra, _) = rooms.join("bad", peer("pa"), ta, true).await.expect("join");
    let (rb, _) = rooms
        .join("good", peer("pb"), tb, true)
        .await
        .expect("join");
    for _ in 0..3 {
        ra.message(cmd("pa", "trap")).await;
    }
    let mut closed = false;
    for _ in 0..4 {
        match ia.next().await {
            Delivery::Error { .. } => {}
            Delivery::Closed { reason } => {
                assert_eq!(reason, "module-failed");
                closed = true;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(closed, "the room closed after 3 traps");
    wait_for("the bad room to leave the table", || {
        rooms.get("bad").is_none()
    })
    .await;
    rb.message(cmd("pb", "count")).await;
    assert_eq!(ib.next_message().await, "\"1\"");
}

#[tokio::test]
async fn default_room_policy_through_the_actor() {
    let node = TestNode::new();
    let f = node.rooms_function(
        ComponentSource::Embedded,
        &[("max-participants", "2"), ("empty-timeout-ms", "50")],
        Limits::default(),
    );
    let rooms = node.rooms(f, no_hibernation());
    let (ta, mut ia) = outbox();
    let (tb, mut ib) = outbox();
    let (room, joined) = rooms.join("r", peer("a"), ta, true).await.expect("a joins");
    assert!(joined.peers.is_empty());
    let (_, joined) = rooms.join("r", peer("b"), tb, true).await.expect("b joins");
    assert_eq!(joined.peers.len(), 1);
    assert!(matches!(ia.next().await, Delivery::PeerJoined(p) if p.id == "b"));
    let (tc, _ic) = outbox();
    let full = rooms.join("r", peer("c"), tc, true).await;
    assert!(
        matches!(&full, Err(JoinError::Rejected(r)) if r.code == "room-full"),
        "{full:?}"
    );
    let (td, _id) = outbox();
    let missing = rooms.join("nope", peer("d"), td, false).await;
    assert!(matches!(missing, Err(JoinError::RoomNotFound)));

    room.message(msg("a", Target::Room, r#"{"hello":1}"#)).await;
    assert_eq!(ib.next_message().await, r#"{"hello":1}"#);
    room.message(msg("b", Target::Peer("a".into()), "\"direct\""))
        .await;
    assert_eq!(ia.next_message().await, "\"direct\"");
    assert!(ib.is_empty(), "a targeted message reaches only its target");

    room.leave("b", roomlet::rooms::LeaveReason::Left).await;
    assert!(matches!(ia.next().await, Delivery::PeerLeft { peer_id, .. } if &*peer_id == "b"));
    room.leave("a", roomlet::rooms::LeaveReason::Left).await;
    wait_for("the empty room to close on its timer", || {
        rooms.get("r").is_none()
    })
    .await;
}

/// A component that does not load says all the parser said and, where the
/// bytes show the mistake, what to do about it.
#[test]
fn load_errors_print_in_full_and_name_the_fix() {
    use roomlet::runtime::{Function, embedded};
    let node = TestNode::new();
    let load_as_relay = |bytes: Vec<u8>| {
        let spec = FunctionSpec {
            source: ComponentSource::Bytes(bytes),
            ..FunctionSpec::default()
        };
        node.loader
            .relay(&spec)
            .err()
            .expect("the component is refused")
            .to_string()
    };
    let not_wasm = load_as_relay(b"#!/bin/sh\necho hello\n".to_vec());
    assert!(
        not_wasm.contains("not a WebAssembly file") && not_wasm.contains("wasm32-wasip2"),
        "{not_wasm}"
    );
    // The parser's message runs past its first line ("expected=[" and the
    // bytes it expected): all of it is there.
    let tail = not_wasm
        .split("expected=[")
        .nth(1)
        .unwrap_or_else(|| panic!("the parser's message: {not_wasm}"));
    assert!(tail.contains(']'), "cut off: {not_wasm}");
    // An empty core module: what `--target wasm32-wasip1` builds.
    let core = load_as_relay(b"\0asm\x01\0\0\0".to_vec());
    assert!(
        core.contains("core WebAssembly module") && core.contains("--target wasm32-wasip2"),
        "{core}"
    );
    let rooms_as_relay = load_as_relay(embedded::bytes(Function::Rooms).to_vec());
    assert!(
        rooms_as_relay.contains("this is a rooms component")
            && rooms_as_relay.contains("--module rooms="),
        "{rooms_as_relay}"
    );
}

/// The command line prints a refused component as its causes, the fix
/// among them, and never a backtrace, even with `RUST_BACKTRACE` set.
#[test]
fn a_refused_component_at_start_is_a_user_error_without_a_backtrace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomlet-node"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .args(["--internal-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--module")
        .arg(format!("rooms={}", core.display()))
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("roomlet-node runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: starting roomlet")
            && stderr.contains("caused by: rooms component")
            && stderr.contains("--target wasm32-wasip2"),
        "{stderr}"
    );
    assert!(
        !stderr.to_lowercase().contains("backtrace"),
        "a user error came with a backtrace:\n{stderr}"
    );
}
