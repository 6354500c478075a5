//! A NATS restart is survived.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_is_survived() {
    let Some(bin) = nats_server() else { return };
    let mut nats = Nats::start(bin, None);
    let url = nats.url();
    // A lease long enough to outlast the restart.
    let node = Node::try_start(
        &url,
        "restart",
        "solo",
        "a",
        "auth,rooms,relay",
        &[],
        Duration::from_secs(10),
    )
    .expect("starts");
    let (mut a, _) = join(&node, "r", "alice").await;
    let (mut b, _) = join(&node, "r", "bob").await;
    next_of(&mut a, "message", DEADLINE).await.expect("history");
    next_of(&mut b, "message", DEADLINE).await.expect("history");
    assert_eq!(node.ready().await, 200);

    nats.kill();
    let down = Instant::now();
    while node.ready().await == 200 {
        assert!(
            down.elapsed() < Duration::from_secs(2),
            "still ready 2 s after NATS went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The room it is home to keeps working for its local peers meanwhile.
    a.send(message(json!({"text": "during outage"}))).await;
    let m = next_of(&mut b, "message", DEADLINE)
        .await
        .expect("message during the outage");
    assert_eq!(m["data"]["text"], "during outage");
    // Its kv write (the chat history) could not reach JetStream.
    node.until_metric("roomlet_kv_unreplicated_keys_total", &["deferred"], |v| {
        v >= 1.0
    })
    .await;

    nats.spawn();
    let deadline = Instant::now() + DEADLINE;
    while node.ready().await != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after NATS returned: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The room's kv write made during the outage reaches JetStream on
    // its own (no later write of the room carries it).
    node.until_metric("roomlet_kv_unreplicated_keys_total", &["replayed"], |v| {
        v >= 1.0
    })
    .await;
    // Every key that waited was sent, each once; none was given up.
    let metric = "roomlet_kv_unreplicated_keys_total";
    let deferred = node.metric(metric, &["deferred"]).await;
    let replayed = node.metric(metric, &["replayed"]).await;
    let dropped = node.metric(metric, &["dropped"]).await;
    assert_eq!(
        (deferred, dropped),
        (replayed, 0.0),
        "deferred, dropped vs replayed"
    );
    a.send(message(json!({"text": "after"}))).await;
    let m = next_of(&mut b, "message", DEADLINE)
        .await
        .expect("message after the restart");
    assert_eq!(m["data"]["text"], "after");
    let (_c, jc) = join(&node, "r", "carol").await;
    assert_eq!(jc["peers"].as_array().map(Vec::len), Some(2), "{jc}");

    // The node drains; the room's next home loads its kv from JetStream,
    // the message sent during the outage included.
    let mut node = node;
    let next = Node::start(&url, "restart", "solo-2", "a", "auth,rooms,relay");
    assert_eq!(next.ready().await, 200);
    node.signal("TERM");
    assert_eq!(node.child_exit(DEADLINE), Some(0), "{}", node.log());
    let (mut d, _) = join(&next, "r", "dave").await;
    let hist = next_of(&mut d, "message", DEADLINE).await.expect("history");
    let texts = history(&hist);
    assert!(
        texts.iter().any(|t| t == "during outage") && texts.iter().any(|t| t == "after"),
        "{hist}"
    );
}

/// NATS away for 5 s, at the shipped liveness TTL: no node loses its
/// lease, so no room moves and no session is told to join again; traffic
/// flows again within 2 s of NATS being back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_second_nats_outage_costs_no_lease_at_the_shipped_ttl() {
    let Some(bin) = nats_server() else { return };
    let mut nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "outage5";
    let node = |name: &str, functions: &str| {
        Node::try_start(&url, p, name, "a", functions, &[], SHIPPED_TTL).expect("node starts")
    };
    let auth = node("auth-1", "auth");
    let rooms1 = node("rooms-1", "rooms");
    let gw_a = node("gw-a", "relay");
    let gw_b = node("gw-b", "relay");
    let (mut a, _) = join(&gw_a, "r", "alice").await;
    // A second rooms node, which would take the room were rooms-1's
    // lease to lapse.
    let rooms2 = node("rooms-2", "rooms");
    let (mut b, _) = join(&gw_b, "r", "bob").await;
    until_flowing(&mut a, &mut b, "before", Instant::now() + DEADLINE).await;
    let nodes = [&auth, &rooms1, &rooms2, &gw_a, &gw_b];

    nats.kill();
    let down = Instant::now();
    for n in nodes {
        while n.ready().await == 200 {
            assert!(down.elapsed() < Duration::from_secs(2), "still ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The outage itself: its length is the scenario, nothing waits on it.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down.elapsed())).await;
    nats.spawn();
    let back = Instant::now();
    until_flowing(&mut a, &mut b, "after-a", back + DEADLINE).await;
    until_flowing(&mut b, &mut a, "after-b", back + DEADLINE).await;
    let flowed = back.elapsed();
    for n in nodes {
        while n.ready().await != 200 {
            assert!(back.elapsed() < DEADLINE, "not ready again: {}", n.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        flowed < Duration::from_secs(2),
        "messages flowed again {flowed:?} after NATS returned"
    );
    assert!(!rooms1.log().contains("lease lost"), "{}", rooms1.log());
    assert!(
        !rooms2.log().contains("room homed here"),
        "{}",
        rooms2.log()
    );
    for gw in [&gw_a, &gw_b] {
        assert!(!gw.log().contains("home is gone"), "{}", gw.log());
        assert_eq!(
            gw.metric("roomlet_rehomes_total", &["side=\"gateway\""])
                .await,
            0.0
        );
    }
}
