//! Sessions and their gateways: a dead gateway's peers leave once the resume grace is over, a restarted node is not its old process, a join at another gateway ends the session left behind, a lost lease sends sessions to join again. (Sessions that move between gateways: `moves.rs`.)

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_of_a_gateway_that_died_leave_their_rooms() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "orphans";
    // Orphans wait 1 s for their sessions to resume elsewhere (30 s by default).
    let grace = Duration::from_secs(1);
    let env = [("ROOMLET_LIMITS__RESUME_GRACE_MS", "1000")];
    let rooms = Node::try_start(&url, p, "rooms-1", "a", "rooms", &env, TTL).expect("starts");
    let gw_a = Node::start(&url, p, "gw-a", "a", "auth,relay");
    let gw_b = Node::start(&url, p, "gw-b", "a", "auth,relay");
    // alice may kick.
    let mut a = Client::connect(&gw_a.ws(), Wire::Json).await;
    a.join("r", &token("r", "alice", true)).await;
    let (_b, jb) = join(&gw_b, "r", "bob").await;
    let b_id = jb["peerId"].as_str().expect("peer id").to_owned();
    next_of(&mut a, "peer-joined", DEADLINE)
        .await
        .expect("peer-joined");
    // dave, on the same gateway, is kicked before it dies: no longer a
    // member, so not one of the peers it orphans.
    let (_d, jd) = join(&gw_b, "r", "dave").await;
    next_of(&mut a, "peer-joined", DEADLINE)
        .await
        .expect("peer-joined");
    a.send(json!({"type": "kick", "peer": jd["peerId"], "reason": "x"}))
        .await;
    let kicked = next_of(&mut a, "peer-left", DEADLINE)
        .await
        .expect("dave leaves");
    assert_eq!(kicked["reason"], "kicked", "{kicked}");

    // A crash: no leave is ever sent for bob.
    gw_b.signal("KILL");
    let killed = Instant::now();
    let left = next_of(&mut a, "peer-left", TTL + grace + DEADLINE)
        .await
        .expect("bob leaves once his gateway's lease and the grace are gone");
    assert_eq!(left["peerId"], b_id.as_str(), "{left}");
    assert_eq!(left["reason"], "timeout", "{left}");
    let took = killed.elapsed();
    assert!(
        took <= TTL * 2 + grace,
        "bob left {took:?} after the kill, more than twice the TTL and the grace"
    );
    // A newcomer is not told of him.
    let (_c, jc) = join(&gw_a, "r", "carol").await;
    assert_eq!(identities(&jc), ["alice"], "{jc}");
    // The home counts him, so an alert can tell a lost gateway from
    // ordinary timeouts.
    let orphaned = "roomlet_orphaned_peers_total";
    assert_eq!(rooms.metric(orphaned, &["cause=\"expired\""]).await, 1.0);
    assert_eq!(rooms.metric(orphaned, &["cause=\"restarted\""]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_its_old_name_is_not_taken_for_its_old_process() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "reborn";
    // Leases far longer than the test: no key expires, so only the new
    // processes' hello can tell the others what their old ones held.
    let long = Duration::from_secs(60);
    // Orphans wait 1 s for their sessions to resume elsewhere.
    let env = [("ROOMLET_LIMITS__RESUME_GRACE_MS", "1000")];
    let start = |name: &str, functions: &str| {
        Node::try_start(&url, p, name, "a", functions, &env, long).expect("starts")
    };
    let rooms = start("rooms-1", "rooms");
    let gw_a = start("gw-a", "auth,relay");
    let gw_b = start("gw-b", "auth,relay");
    let (mut a, _) = join(&gw_a, "r", "alice").await;
    let (_b, jb) = join(&gw_b, "r", "bob").await;
    let b_id = jb["peerId"].as_str().expect("peer id").to_owned();
    next_of(&mut a, "peer-joined", DEADLINE)
        .await
        .expect("peer-joined");

    // bob's gateway crashes and comes back as gw-b at once: bob is gone.
    gw_b.signal("KILL");
    drop(gw_b);
    let _gw_b = start("gw-b", "auth,relay");
    let left = next_of(&mut a, "peer-left", DEADLINE)
        .await
        .expect("bob leaves when his gateway's name comes back");
    assert_eq!(left["peerId"], b_id.as_str(), "{left}");
    let orphaned = rooms
        .metric("roomlet_orphaned_peers_total", &["cause=\"restarted\""])
        .await;
    assert_eq!(orphaned, 1.0);

    // The room's home does the same: gw-a moves the room (back to it).
    rooms.signal("KILL");
    drop(rooms);
    let _rooms = start("rooms-1", "rooms");
    gw_a.until_metric(
        "roomlet_rehomes_total",
        &["side=\"gateway\"", "result=\"ok\""],
        |v| v >= 1.0,
    )
    .await;
    // Without that, a newcomer's join would have opened the room afresh
    // on the new process, without alice.
    let (mut c, jc) = join(&gw_a, "r", "carol").await;
    assert_eq!(identities(&jc), ["alice"], "{jc}");
    a.send(message(json!({"text": "still one room"}))).await;
    assert_eq!(next_text(&mut c).await, "still one room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_at_another_gateway_ends_the_same_identitys_dropped_session() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "reload";
    let gw_a = Node::start(&url, p, "gw-a", "a", "auth,rooms,relay");
    let gw_b = Node::start(&url, p, "gw-b", "a", "auth,relay");
    // alice on two devices through gw-a, bob through gw-b.
    let (phone, jp) = join(&gw_a, "r", "alice").await;
    let (_laptop, jl) = join(&gw_a, "r", "alice").await;
    let (mut b, jb) = join(&gw_b, "r", "bob").await;
    let id = |j: &Value| j["peerId"].as_str().expect("peer id").to_owned();
    let (phone_id, laptop_id, b_id) = (id(&jp), id(&jl), id(&jb));

    // The phone's page reloads: its socket drops (gw-a parks the session
    // for resume) and it joins afresh, through gw-b this time.
    phone.drop_connection();
    gw_a.until_metric("roomlet_connections", &[], |v| v == 1.0)
        .await;
    let (_again, ja) = join(&gw_b, "r", "alice").await;
    let mut want = [laptop_id.as_str(), b_id.as_str()];
    want.sort_unstable();
    // Not the phone's old self; the laptop, whose socket is open, stays.
    assert_eq!(peer_ids(&ja), want, "{ja}");
    // bob is told at once, not after the 30 s grace period.
    let left = next_of(&mut b, "peer-left", DEADLINE)
        .await
        .expect("the phone's old session leaves");
    assert_eq!(left["peerId"], phone_id.as_str(), "{left}");
    assert_eq!(left["reason"], "timeout", "{left}");
    let came = next_of(&mut b, "peer-joined", DEADLINE)
        .await
        .expect("alice joins again");
    assert_eq!(came["peer"]["id"], ja["peerId"], "{came}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_process_under_one_node_name_is_refused() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let first = Node::start(&url, "twins", "gw-a", "a", "auth,rooms,relay");
    let (mut a, _) = join(&first, "r", "alice").await;
    let log = match Node::try_start(&url, "twins", "gw-a", "a", "auth,rooms,relay", &[], TTL) {
        Ok(_) => panic!("a second process started under a live node's name"),
        Err(log) => log,
    };
    assert!(log.contains("node name gw-a is taken"), "{log}");
    // The first one never noticed: no hello reached anyone.
    assert_eq!(first.ready().await, 200);
    let (_b, jb) = join(&first, "r", "bob").await;
    assert_eq!(jb["peers"][0]["identity"], "alice", "{jb}");
    next_of(&mut a, "peer-joined", DEADLINE)
        .await
        .expect("peer-joined");
    // A holder that is alive but silent (stopped) is taken over, as a
    // restart would be: its lease runs out meanwhile.
    first.signal("STOP");
    let second = Node::try_start(&url, "twins", "gw-a", "a", "auth,rooms,relay", &[], TTL)
        .expect("a silent holder's name is taken over");
    assert!(second.log().contains("did not answer"), "{}", second.log());
    assert_eq!(second.ready().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_loses_its_lease_tells_its_sessions_to_join_again() {
    let Some(bin) = nats_server() else { return };
    let mut nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "lapse";
    let _rooms = Node::start(&url, p, "rooms-1", "a", "rooms");
    let gw = Node::start(&url, p, "gw-a", "a", "auth,relay");
    let (mut a, _) = join(&gw, "r", "alice").await;

    // NATS away for longer than the TTL: the room's home would drop alice
    // as an orphan, so her gateway sends her to join again.
    nats.kill();
    let down = Instant::now();
    let r = next_of(&mut a, "reconnect", TTL + DEADLINE)
        .await
        .expect("a reconnect once the gateway's lease ran out");
    assert_eq!(r["reason"], "moved", "{r}");
    assert_eq!(a.closed().await, 4006);
    let took = down.elapsed();
    assert!(
        took <= TTL * 2,
        "told {took:?} after NATS went away, more than twice the TTL"
    );
    // Joining again meanwhile is "try again later" (1013), which the JS
    // client retries, not a final refusal.
    let mut c = Client::connect(&gw.ws(), Wire::Json).await;
    c.send(json!({"type": "join", "room": "r", "token": token("r", "carol", false)}))
        .await;
    let e = next_of(&mut c, "error", DEADLINE)
        .await
        .expect("an error frame");
    assert_eq!(e["code"], "unavailable", "{e}");
    assert_eq!(c.closed().await, 1013);
}
