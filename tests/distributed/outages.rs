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
