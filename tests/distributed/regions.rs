//! Rooms across gateways and regions: signals gateway to gateway, re-homing after a rooms node dies or pauses, drains, and messages a module does not observe.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_nodes_signal_across_regions_rehome_and_drain() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "split";
    let _auth = Node::start(&url, p, "auth-1", "a", "auth");
    let rooms1 = Node::start(&url, p, "rooms-1", "a", "rooms");
    let gw_a = Node::start(&url, p, "gw-a", "a", "relay");
    let gw_b = Node::start(&url, p, "gw-b", "b", "relay");
    assert_eq!(rooms1.ready().await, 200);
    assert_eq!(gw_a.ready().await, 200);
    // A rooms node holds no WebSockets.
    let (status, body) = http(rooms1.public, "GET", "/v1/ws", None, b"").await;
    assert_eq!(status, 404, "{body}");

    // Peers on gateways in two regions, one room homed on rooms-1.
    let (mut a, ja) = join(&gw_a, "class", "alice").await;
    assert_eq!(ja["region"], "a");
    let hist = next_of(&mut a, "message", DEADLINE).await.expect("history");
    assert!(history(&hist).is_empty(), "{hist}");
    let (mut b, jb) = join(&gw_b, "class", "bob").await;
    assert_eq!(jb["region"], "b");
    assert_eq!(jb["peers"][0]["identity"], "alice", "{jb}");
    let a_id = ja["peerId"].as_str().expect("peer id").to_owned();
    let b_id = jb["peerId"].as_str().expect("peer id").to_owned();
    let pj = next_of(&mut a, "peer-joined", DEADLINE)
        .await
        .expect("peer-joined");
    assert_eq!(pj["peer"]["id"], b_id.as_str());
    next_of(&mut b, "message", DEADLINE)
        .await
        .expect("bob's history");

    // Signaling gateway to gateway, both ways, in order.
    for i in 0..20 {
        a.send(json!({"type": "signal", "to": b_id, "kind": "candidate", "payload": {"i": i}}))
            .await;
    }
    for i in 0..20 {
        let s = next_of(&mut b, "signal", DEADLINE).await.expect("signal");
        assert_eq!(s["from"], a_id.as_str());
        assert_eq!(s["payload"]["i"], i, "signals keep their order");
    }
    b.send(json!({"type": "signal", "to": a_id, "kind": "answer", "payload": {"sdp": "v=0"}}))
        .await;
    let s = next_of(&mut a, "signal", DEADLINE).await.expect("answer");
    assert_eq!(s["kind"], "answer");
    // Room messages through the home, kept in its (JetStream) kv.
    for text in ["one", "two", "three"] {
        a.send(message(json!({"text": text}))).await;
        assert_eq!(next_text(&mut b).await, text);
    }

    // Kill the rooms node: a second one takes the room over.
    let rooms2 = Node::start(&url, p, "rooms-2", "a", "rooms");
    rooms1.signal("KILL");
    let killed = Instant::now();
    until_flowing(
        &mut a,
        &mut b,
        "after-kill",
        killed + TTL + Duration::from_secs(5),
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= TTL + Duration::from_secs(1),
        "re-homing took {took:?}, more than the liveness TTL + 1 s"
    );
    // Alice's first messages went to the dead node: she is told so.
    let e = next_of(&mut a, "error", DEADLINE)
        .await
        .expect("a notice of frames maybe lost");
    assert_eq!(e["code"], "unavailable", "{e}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("may not have been delivered")),
        "{e}"
    );
    assert!(rooms2.log().contains("room homed here"), "{}", rooms2.log());
    assert_eq!(gw_b.metric("roomlet_bus_ready", &[]).await, 1.0);
    assert!(
        gw_b.metric(
            "roomlet_rehomes_total",
            &["side=\"gateway\"", "result=\"ok\""]
        )
        .await
            >= 1.0
    );
    assert!(
        rooms2
            .metric("roomlet_rehomes_total", &["side=\"home\"", "result=\"ok\""])
            .await
            >= 1.0
    );
    // Committed kv survived the node: a new joiner gets the history.
    let (mut c, _) = join(&gw_a, "class", "carol").await;
    let hist = next_of(&mut c, "message", DEADLINE).await.expect("history");
    let texts: Vec<String> = history(&hist)
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(texts, ["one", "two", "three"], "{hist}");

    // Cut rooms-2 off (SIGSTOP: alive, but silent), let rooms-3 take the
    // room, then let rooms-2 run again: it must not serve the room.
    let rooms3 = Node::start(&url, p, "rooms-3", "b", "rooms");
    rooms2.signal("STOP");
    let stopped = Instant::now();
    until_flowing(
        &mut b,
        &mut a,
        "after-stop",
        stopped + TTL + Duration::from_secs(5),
    )
    .await;
    assert!(rooms3.log().contains("room homed here"), "{}", rooms3.log());
    rooms2.signal("CONT");
    let deadline = Instant::now() + DEADLINE;
    while !rooms2.log().contains("no longer this room's home") {
        assert!(
            Instant::now() < deadline,
            "rooms-2 did not give the room up: {}",
            rooms2.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Traffic keeps flowing through rooms-3 only, nothing doubled.
    for i in 0..10 {
        a.send(message(json!({"text": format!("late-{i}")}))).await;
    }
    for i in 0..10 {
        assert_eq!(next_text(&mut b).await, format!("late-{i}"));
    }
    let extra = next_of(&mut b, "message", Duration::from_millis(300)).await;
    assert!(
        extra.as_ref().is_none_or(|m| m["data"]["text"].is_null()),
        "a message arrived twice: {extra:?}"
    );

    // Homes are chosen by region: a room joined from region a lives on a
    // region-a rooms node, unless configured (`pinned-*` rooms live in b).
    let (_free, _) = join(&gw_a, "free-x", "dora").await;
    let (_pinned, _) = join(&gw_a, "pinned-x", "erin").await;
    assert!(
        rooms2.log().contains("room homed here room=free-x"),
        "{}",
        rooms2.log()
    );
    assert!(
        rooms3.log().contains("room homed here room=pinned-x"),
        "{}",
        rooms3.log()
    );

    // Drain gw-a: its clients get `reconnect` after every frame they sent
    // has been passed on; none is lost.
    for i in 0..50 {
        a.send(message(json!({"text": format!("pre-drain-{i}")})))
            .await;
    }
    gw_a.signal("TERM");
    let f = next_of(&mut a, "reconnect", DEADLINE)
        .await
        .expect("reconnect");
    assert_eq!(f["reason"], "draining");
    assert_eq!(a.closed().await, 4006);
    for i in 0..50 {
        assert_eq!(next_text(&mut b).await, format!("pre-drain-{i}"));
    }
    // Alice moves to the other gateway and carries on.
    let (mut a2, _) = join(&gw_b, "class", "alice").await;
    a2.send(message(json!({"text": "moved"}))).await;
    assert_eq!(next_text(&mut b).await, "moved");
}

/// A room whose module leaves `observe-messages` off (the hostile fixture,
/// in a room named `direct-…`): its messages go gateway to gateway, and
/// still do after its home drains and hands it to a node that restores it
/// without an `on-create` to ask. The new home is gw-2 itself, so gw-2
/// learns the settings from the room in its own process and gw-1 from the
/// bus. Were `"trap"` to reach the module, it would trap instead of
/// arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unobserved_messages_skip_the_home_before_and_after_a_handoff() {
    unobserved_messages_skip_the_home_after("TERM").await;
}

/// The same after its home is killed: the room is rebuilt from the peers
/// the gateways re-report, without a snapshot and without running the
/// module, so only the routing flags its first home committed keep the
/// messages off the new home (they default to "observe", which would
/// send `"trap"` to the module).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unobserved_messages_skip_the_home_after_it_is_killed_too() {
    unobserved_messages_skip_the_home_after("KILL").await;
}

async fn unobserved_messages_skip_the_home_after(how: &str) {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let node = |name: &str, functions: &str| {
        Node::start_with_module(&url, "unobserved", name, "a", functions, HOSTILE)
    };
    let _auth = node("auth-1", "auth");
    let mut rooms1 = node("rooms-1", "rooms");
    let gw1 = node("gw-1", "relay");
    let (mut ann, joined) = join(&gw1, "direct-1", "ann").await;
    let ann_id = joined["peerId"].as_str().expect("peer id").to_owned();
    // gw-2 runs rooms too, but the room is homed on rooms-1 already.
    let gw2 = node("gw-2", "rooms,relay");
    let (mut ben, joined) = join(&gw2, "direct-1", "ben").await;
    let ben_id = joined["peerId"].as_str().expect("peer id").to_owned();
    let trap_arrives = async |from: &mut Client, from_id: &str, to: &mut Client| {
        from.send(message(json!("trap"))).await;
        let m = next_of(to, "message", DEADLINE).await.expect("a message");
        assert_eq!(m["from"], from_id, "{m}");
        assert_eq!(m["data"], "trap", "{m}");
    };
    trap_arrives(&mut ann, &ann_id, &mut ben).await;
    trap_arrives(&mut ben, &ben_id, &mut ann).await;
    assert!(!gw2.log().contains("room homed here"), "{}", gw2.log());

    rooms1.signal(how);
    if how == "TERM" {
        assert_eq!(rooms1.child_exit(DEADLINE), Some(0), "rooms-1 drains");
    }
    let deadline = Instant::now() + TTL + DEADLINE;
    while ![&gw1, &gw2]
        .iter()
        .all(|g| g.log().contains("room re-homed room=direct-1 home=gw-2"))
    {
        assert!(Instant::now() < deadline, "both gateways re-home the room");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trap_arrives(&mut ann, &ann_id, &mut ben).await;
    trap_arrives(&mut ben, &ben_id, &mut ann).await;
    for c in [&mut ann, &mut ben] {
        let e = tokio::time::timeout(Duration::from_millis(300), c.frame_of("error")).await;
        assert!(e.is_err(), "the module saw a message: {e:?}");
    }
}
