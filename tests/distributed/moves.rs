//! Sessions that move between gateways and keep their peer ids: a resume at
//! another gateway (the old one hands the stream over), a drained gateway
//! (its clients resume elsewhere), a gateway killed outright (its peers
//! wait out the grace for their clients; the resume says `gap`).

use super::*;

/// Every frame `c` reads until one satisfies `stop` (that one included).
async fn frames_until(c: &mut Client, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let f = c.frame().await;
        let done = stop(&f);
        seen.push(f);
        if done {
            return seen;
        }
    }
}

fn text_is(f: &Value, text: &str) -> bool {
    f["type"] == "message" && f["data"]["text"] == text
}

/// The highest stream seq among `frames`.
fn last_seq<'a>(frames: impl IntoIterator<Item = &'a Value>) -> u64 {
    frames
        .into_iter()
        .filter_map(|f| f["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The seqs of the numbered frames among `frames` go on from `after`, one
/// by one: none lost, none twice, in order.
fn assert_stream_goes_on(frames: &[Value], after: u64) {
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    let want: Vec<u64> = (after + 1..after + 1 + seqs.len() as u64).collect();
    assert_eq!(seqs, want, "{frames:?}");
}

fn no_one_left(frames: &[Value]) {
    let left: Vec<&Value> = frames.iter().filter(|f| f["type"] == "peer-left").collect();
    assert!(left.is_empty(), "peer-left during a move: {left:?}");
}

fn id(joined: &Value) -> String {
    joined["peerId"].as_str().expect("peer id").to_owned()
}

async fn resume(node: &Node, token: &str, last_seq: u64) -> (Client, Value) {
    let mut c = Client::connect(&node.ws(), Wire::Json).await;
    c.send(json!({"type": "resume", "resumeToken": token, "lastSeq": last_seq}))
        .await;
    let j = c.frame().await;
    assert_eq!(j["type"], "joined", "{j}");
    (c, j)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_at_another_gateway_keeps_the_peer_id_and_the_stream() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "move";
    let _rooms = Node::start(&url, p, "rooms-1", "a", "rooms");
    let gw_a = Node::start(&url, p, "gw-a", "a", "auth,relay");
    let gw_b = Node::start(&url, p, "gw-b", "a", "auth,relay");
    let gw_c = Node::start(&url, p, "gw-c", "a", "auth,relay");
    let (mut a, ja) = join(&gw_a, "r", "alice").await;
    let token = ja["resumeToken"].as_str().expect("resume token").to_owned();
    let (mut c, jc) = join(&gw_a, "r", "carol").await;
    let (mut b, jb) = join(&gw_b, "r", "bob").await;
    let (mut e, je) = join(&gw_c, "r", "erin").await;
    let (a_id, b_id, c_id, e_id) = (id(&ja), id(&jb), id(&jc), id(&je));
    let seen = frames_until(&mut a, |f| f["peer"]["identity"] == "erin").await;
    let last = last_seq(seen.iter().chain([&ja]));

    // alice's socket drops; the room goes on sending to her meanwhile.
    a.drop_connection();
    for i in 0..3 {
        b.send(message(json!({"text": format!("away-{i}")}))).await;
    }
    for i in 0..3 {
        assert_eq!(next_text(&mut c).await, format!("away-{i}"));
    }

    // Her client comes back through gw-b, which never held her session.
    let (mut a2, j) = resume(&gw_b, &token, last).await;
    assert_eq!(j["peerId"], a_id.as_str(), "{j}");
    assert_eq!(j["resumed"], true, "{j}");
    assert_ne!(
        j["gap"], true,
        "gw-a was alive to hand the stream over: {j}"
    );
    let replayed = frames_until(&mut a2, |f| text_is(f, "away-2")).await;
    assert_stream_goes_on(&replayed, last);
    for i in 0..3 {
        let want = format!("away-{i}");
        assert!(replayed.iter().any(|f| text_is(f, &want)), "{replayed:?}");
    }

    // Signals reach her at gw-b, from her old gateway, from her new one,
    // and from a third one (told by the room's home where she went).
    for (from, from_id) in [(&mut e, &e_id), (&mut c, &c_id), (&mut b, &b_id)] {
        from.send(json!({"type": "signal", "to": a_id, "kind": "offer", "payload": {"sdp": "x"}}))
            .await;
        let s = next_of(&mut a2, "signal", DEADLINE)
            .await
            .expect("the signal reaches alice at gw-b");
        assert_eq!(s["from"], from_id.as_str(), "{s}");
    }
    // And hers reach them; nobody saw her leave or join again.
    a2.send(message(json!({"text": "back"}))).await;
    a2.send(json!({"type": "signal", "to": c_id, "kind": "answer", "payload": {"sdp": "a"}}))
        .await;
    let at_b = frames_until(&mut b, |f| text_is(f, "back")).await;
    no_one_left(&at_b);
    assert!(
        !at_b
            .iter()
            .any(|f| f["type"] == "peer-joined" && f["peer"]["identity"] == "alice"),
        "{at_b:?}"
    );
    let at_c = frames_until(&mut c, |f| f["type"] == "signal").await;
    no_one_left(&at_c);
    assert_eq!(at_c.last().expect("signal")["from"], a_id.as_str());
    let at_e = frames_until(&mut e, |f| text_is(f, "back")).await;
    no_one_left(&at_e);
    // A newcomer finds her once, under her old id.
    let (_d, jd) = join(&gw_b, "r", "dave").await;
    let mut want = [a_id.as_str(), b_id.as_str(), c_id.as_str(), e_id.as_str()];
    want.sort_unstable();
    assert_eq!(peer_ids(&jd), want, "{jd}");
    // A token from a stranger is refused and harms no one.
    let mut stranger = Client::connect(&gw_b.ws(), Wire::Json).await;
    stranger
        .send(json!({"type": "resume", "resumeToken": "r-00.gw-a", "lastSeq": 0}))
        .await;
    assert_eq!(stranger.closed().await, 4007);
    // Her old gateway is not on the way: without it, erin's signals still
    // reach her (gw-c was told where she went, not left to gw-a's
    // sending on).
    gw_a.signal("KILL");
    e.send(json!({"type": "signal", "to": a_id, "kind": "candidate", "payload": {"sdp": "e2"}}))
        .await;
    let s = next_of(&mut a2, "signal", DEADLINE)
        .await
        .expect("erin's signal reaches alice without gw-a");
    assert_eq!(s["payload"]["sdp"], "e2", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_gateways_clients_resume_elsewhere_with_their_streams() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "drainmove";
    let _rooms = Node::start(&url, p, "rooms-1", "a", "rooms");
    let mut gw_a = Node::start(&url, p, "gw-a", "a", "auth,relay");
    let gw_b = Node::start(&url, p, "gw-b", "a", "auth,relay");
    let (mut a, ja) = join(&gw_a, "r", "alice").await;
    let token = ja["resumeToken"].as_str().expect("resume token").to_owned();
    let (mut b, _) = join(&gw_b, "r", "bob").await;
    let a_id = id(&ja);
    let _ = frames_until(&mut a, |f| f["peer"]["identity"] == "bob").await;

    gw_a.signal("TERM");
    let seen = frames_until(&mut a, |f| f["type"] == "reconnect").await;
    assert_eq!(seen.last().expect("reconnect")["reason"], "draining");
    assert_eq!(a.closed().await, 4006);
    let last = last_seq(seen.iter().chain([&ja]));
    // While she moves, bob writes to her.
    b.send(message(json!({"text": "while-moving"}))).await;
    b.send(json!({"type": "signal", "to": a_id, "kind": "offer", "payload": {"sdp": "b"}}))
        .await;

    let moved = Instant::now();
    let (mut a2, j) = resume(&gw_b, &token, last).await;
    assert_eq!(j["peerId"], a_id.as_str(), "{j}");
    assert_ne!(j["gap"], true, "a drain hands the stream over: {j}");
    let got = frames_until(&mut a2, |f| f["type"] == "signal").await;
    assert!(got.iter().any(|f| text_is(f, "while-moving")), "{got:?}");
    assert_stream_goes_on(&got, last);
    a2.send(message(json!({"text": "moved"}))).await;
    let at_b = frames_until(&mut b, |f| text_is(f, "moved")).await;
    assert!(
        moved.elapsed() < Duration::from_secs(2),
        "traffic flowed again {:?} after the resume",
        moved.elapsed()
    );
    no_one_left(&at_b);
    // The drained gateway is gone once its session moved.
    assert_eq!(gw_a.child_exit(DEADLINE), Some(0), "{}", gw_a.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateways_clients_resume_elsewhere_with_a_gap() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "killmove";
    // Orphans wait 6 s for their sessions here (30 s by default).
    let grace = Duration::from_secs(6);
    let grace_ms = grace.as_millis().to_string();
    let env = [("ROOMLET_LIMITS__RESUME_GRACE_MS", grace_ms.as_str())];
    let rooms = Node::try_start(&url, p, "rooms-1", "a", "rooms", &env, TTL).expect("starts");
    let gw_a = Node::start(&url, p, "gw-a", "a", "auth,relay");
    let gw_b = Node::start(&url, p, "gw-b", "a", "auth,relay");
    let (mut a, ja) = join(&gw_a, "r", "alice").await;
    let token = ja["resumeToken"].as_str().expect("resume token").to_owned();
    let (_d, jd) = join(&gw_a, "r", "dave").await;
    let (_e, je) = join(&gw_a, "r", "erin").await;
    let (mut b, jb) = join(&gw_b, "r", "bob").await;
    let (a_id, d_id, e_id) = (id(&ja), id(&jd), id(&je));
    let seen = frames_until(&mut a, |f| f["peer"]["identity"] == "bob").await;
    let last = last_seq(seen.iter().chain([&ja]));
    // Numbered signals, gateway to gateway (the module observes only
    // messages): bob has 1..=5 before gw-a dies.
    let bob = id(&jb);
    let signal = |n: u64| json!({"type": "signal", "to": bob, "kind": "candidate", "payload": {"n": n}, "id": n});
    for n in 1..=5 {
        a.send(signal(n)).await;
    }
    for n in 1..=5 {
        let s = next_of(&mut b, "signal", DEADLINE).await.expect("signal");
        assert_eq!(s["id"], n, "{s}");
    }

    gw_a.signal("KILL");
    // erin's page reloads: she joins afresh at gw-b, whose home cannot ask
    // the dead gw-a about her old session. That one leaves as soon as the
    // home finds gw-a gone, not after the grace.
    let (_e2, je2) = join(&gw_b, "r", "erin").await;
    // The room's home finds the gateway gone and waits for its clients.
    let deadline = Instant::now() + TTL * 2 + DEADLINE;
    while !rooms
        .log()
        .contains("leaves unless its session resumes elsewhere")
    {
        assert!(Instant::now() < deadline, "{}", rooms.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut a2, j) = resume(&gw_b, &token, last).await;
    assert_eq!(j["peerId"], a_id.as_str(), "{j}");
    assert_eq!(j["gap"], true, "what gw-a held died with it: {j}");
    // alice cannot know what of hers arrived: she sends it all again,
    // then goes on. Her new session does not know those ids (gw-a's
    // memory died with it); bob's session, whose gateway lives, drops
    // the copies.
    for n in 1..=6 {
        a2.send(signal(n)).await;
    }
    b.send(message(json!({"text": "after"}))).await;
    assert_eq!(next_text(&mut a2).await, "after");
    a2.send(message(json!({"text": "alive"}))).await;
    // erin's old self leaves first; dave, who never comes back, after the
    // grace; alice stays.
    let at_b = frames_until(&mut b, |f| {
        f["type"] == "peer-left" && f["peerId"] == d_id.as_str()
    })
    .await;
    let signals: Vec<&Value> = at_b.iter().filter(|f| f["type"] == "signal").collect();
    assert_eq!(signals.len(), 1, "copies reached bob: {signals:?}");
    assert_eq!(signals[0]["id"], 6, "{signals:?}");
    let left: Vec<&Value> = at_b.iter().filter(|f| f["type"] == "peer-left").collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(left[0]["peerId"], e_id.as_str(), "{left:?}");
    assert!(left.iter().all(|f| f["reason"] == "timeout"), "{left:?}");
    let alive = at_b.iter().position(|f| text_is(f, "alive"));
    let erin_left = at_b.iter().position(|f| f["type"] == "peer-left");
    assert!(
        erin_left < alive && alive.is_some(),
        "erin's ghost outlived the kill: {at_b:?}"
    );
    let orphaned = "roomlet_orphaned_peers_total";
    assert_eq!(rooms.metric(orphaned, &["cause=\"expired\""]).await, 2.0);
    // A newcomer finds alice once, under her old id, and erin once.
    let (_c, jc) = join(&gw_b, "r", "carol").await;
    let (b_id, e2_id) = (id(&jb), id(&je2));
    let mut want = [a_id.as_str(), b_id.as_str(), e2_id.as_str()];
    want.sort_unstable();
    assert_eq!(peer_ids(&jc), want, "{jc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_move_to_and_from_the_node_that_is_the_rooms_home() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "homemove";
    // gw-a is the room's home too: its sessions reach the room in-process.
    let gw_a = Node::start(&url, p, "gw-a", "a", "auth,rooms,relay");
    let gw_b = Node::start(&url, p, "gw-b", "a", "auth,relay");
    let (mut a, ja) = join(&gw_a, "r", "alice").await;
    let (mut c, jc) = join(&gw_a, "r", "carol").await;
    let (b, jb) = join(&gw_b, "r", "bob").await;
    let (a_id, b_id, c_id) = (id(&ja), id(&jb), id(&jc));
    let a_token = ja["resumeToken"].as_str().expect("resume token").to_owned();
    let b_token = jb["resumeToken"].as_str().expect("resume token").to_owned();
    let seen = frames_until(&mut a, |f| f["peer"]["identity"] == "bob").await;
    let a_last = last_seq(seen.iter().chain([&ja]));
    let b_last = jb["seq"].as_u64().expect("seq");

    // alice leaves the home's own gateway for gw-b, bob the other way.
    a.drop_connection();
    b.drop_connection();
    let (mut a2, j) = resume(&gw_b, &a_token, a_last).await;
    assert_eq!(j["peerId"], a_id.as_str(), "{j}");
    assert_ne!(j["gap"], true, "{j}");
    let (mut b2, j) = resume(&gw_a, &b_token, b_last).await;
    assert_eq!(j["peerId"], b_id.as_str(), "{j}");
    assert_ne!(j["gap"], true, "{j}");

    // carol, in the room's process, reaches both where they are now.
    for to in [&a_id, &b_id] {
        c.send(json!({"type": "signal", "to": to, "kind": "offer", "payload": {"sdp": "c"}}))
            .await;
    }
    for moved in [&mut a2, &mut b2] {
        let got = frames_until(moved, |f| f["type"] == "signal").await;
        no_one_left(&got);
        assert_eq!(got.last().expect("signal")["from"], c_id.as_str());
    }
    a2.send(message(json!({"text": "from alice"}))).await;
    let at_c = frames_until(&mut c, |f| text_is(f, "from alice")).await;
    no_one_left(&at_c);
    b2.send(json!({"type": "signal", "to": a_id, "kind": "answer", "payload": {"sdp": "b"}}))
        .await;
    let s = next_of(&mut a2, "signal", DEADLINE)
        .await
        .expect("bob's signal reaches alice");
    assert_eq!(s["from"], b_id.as_str(), "{s}");
}
