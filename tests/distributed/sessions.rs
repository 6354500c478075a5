//! Sessions and their gateways: a dead gateway's peers leave, a restarted node is not its old process, resumes and joins at another gateway end the session left behind, a lost lease sends sessions to join again.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_of_a_gateway_that_died_leave_their_rooms() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "orphans";
    let rooms = Node::start(&url, p, "rooms-1", "a", "rooms");
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
    let left = next_of(&mut a, "peer-left", TTL + DEADLINE)
        .await
        .expect("bob leaves once his gateway's lease is gone");
    assert_eq!(left["peerId"], b_id.as_str(), "{left}");
    assert_eq!(left["reason"], "timeout", "{left}");
    let took = killed.elapsed();
    assert!(
        took <= TTL * 2,
        "bob left {took:?} after the kill, more than twice the TTL"
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
    let start = |name: &str, functions: &str| {
        Node::try_start(&url, p, name, "a", functions, &[], long).expect("starts")
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
async fn a_resume_at_another_gateway_ends_the_session_left_behind() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "elsewhere";
    let gw_a = Node::start(&url, p, "gw-a", "a", "auth,rooms,relay");
    let gw_b = Node::start(&url, p, "gw-b", "a", "auth,relay");
    let (a, ja) = join(&gw_a, "r", "alice").await;
    let (mut b, _) = join(&gw_b, "r", "bob").await;
    let a_id = ja["peerId"].as_str().expect("peer id").to_owned();
    let token = ja["resumeToken"].as_str().expect("resume token").to_owned();

    // alice's socket drops; her client comes back through gw-b, which
    // never held her session: the resume fails there...
    a.drop_connection();
    let mut again = Client::connect(&gw_b.ws(), Wire::Json).await;
    again
        .send(json!({"type": "resume", "resumeToken": token, "lastSeq": 1}))
        .await;
    let e = next_of(&mut again, "error", DEADLINE)
        .await
        .expect("an error frame");
    assert_eq!(e["code"], "resume-failed", "{e}");
    assert_eq!(again.closed().await, 4007);
    // ...and the session she left on gw-a ends at once, not after the
    // 30 s grace period: she will join again, and must not be in the
    // room twice meanwhile.
    let left = next_of(&mut b, "peer-left", DEADLINE)
        .await
        .expect("alice's old session leaves");
    assert_eq!(left["peerId"], a_id.as_str(), "{left}");
    // A token from a stranger names no gateway that holds it: refused
    // the same way, and harms no one.
    let mut stranger = Client::connect(&gw_b.ws(), Wire::Json).await;
    stranger
        .send(json!({"type": "resume", "resumeToken": "r-00.gw-a.*>", "lastSeq": 0}))
        .await;
    assert_eq!(stranger.closed().await, 4007);
    let (_c, jc) = join(&gw_a, "r", "carol").await;
    assert_eq!(identities(&jc), ["bob"], "{jc}");
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
