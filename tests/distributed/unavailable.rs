//! Joins that cannot be served now answer `unavailable`, not a hang or a refusal.

use super::*;

/// alice's join to `room` at `gw` is refused as `unavailable`, saying
/// `says`, with close 1013: try again later.
async fn join_is_unavailable(gw: &Node, room: &str, says: &str) {
    let mut c = Client::connect(&gw.ws(), Wire::Json).await;
    c.send(json!({"type": "join", "room": room, "token": token(room, "alice", false)}))
        .await;
    let e = next_of(&mut c, "error", DEADLINE)
        .await
        .expect("an error frame");
    assert_eq!(e["code"], "unavailable", "{e}");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains(says)),
        "{e}"
    );
    assert_eq!(c.closed().await, 1013);
}

/// A join that no room could refuse, because no rooms node is alive to
/// home it, is `unavailable` with close 1013 (try again later), not the
/// room's refusal (4009) or an internal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_no_rooms_node_alive_is_unavailable_for_now() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let gw = Node::start(&nats.url(), "lonely", "gw-1", "a", "auth,relay");
    assert_eq!(gw.ready().await, 200);
    join_is_unavailable(&gw, "nowhere", "no rooms node is alive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_no_auth_node_alive_is_unavailable_for_now() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let gw = Node::start(&nats.url(), "authless", "gw-1", "a", "rooms,relay");
    assert_eq!(gw.ready().await, 200);
    // An outage, not a bug (`internal`, 1011): try again later.
    join_is_unavailable(&gw, "r", "no auth node answered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_whose_home_does_not_answer_is_unavailable_for_now() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    // A lease that outlives the test: the directory keeps naming the
    // stopped node, so the gateway asks it and hears nothing back.
    let rooms = Node::try_start(
        &nats.url(),
        "silent",
        "rooms-1",
        "a",
        "rooms",
        &[],
        Duration::from_secs(60),
    )
    .expect("starts");
    // The same lease for the gateway: the nodes bucket's max age follows
    // the last node to open it, and at a 3 s one the rooms node's key
    // would lapse between its renewals (every 15 s), so a slow start made
    // the join find no rooms node alive instead of a silent one.
    let gw = Node::try_start(
        &nats.url(),
        "silent",
        "gw-1",
        "a",
        "auth,relay",
        &[],
        Duration::from_secs(60),
    )
    .expect("starts");
    assert_eq!(rooms.ready().await, 200);
    assert_eq!(gw.ready().await, 200);
    rooms.signal("STOP");
    // Try again later (1013), not a room's refusal (4009), which is final.
    join_is_unavailable(&gw, "r", "did not answer").await;
    rooms.signal("CONT");
}
