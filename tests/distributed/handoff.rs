//! A draining rooms node hands its rooms off with their memory.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_rooms_node_hands_its_rooms_off_with_their_memory() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "handoff";
    let node = |name: &str, functions: &str| {
        Node::start_with_module(&url, p, name, "a", functions, CLASSROOM)
    };
    let _auth = node("auth-1", "auth");
    let mut rooms1 = node("rooms-1", "rooms");
    let gw = node("gw-1", "relay");
    let teacher_token = Token::new("lesson", "ms-t")
        .name(None)
        .metadata(Some(r#"{"role":"teacher"}"#))
        .mint();
    let mut teacher = Client::connect(&gw.ws(), Wire::Json).await;
    teacher.join("lesson", &teacher_token).await;
    let (mut student, js) = join(&gw, "lesson", "sam").await;
    let sam = js["peerId"].as_str().expect("peer id").to_owned();
    teacher
        .send(message(json!({"action": "mute", "peer": sam})))
        .await;
    let muted = next_of(&mut student, "message", DEADLINE)
        .await
        .expect("muted");
    assert_eq!(muted["data"]["event"], "muted", "{muted}");

    // rooms-1 drains: the room moves to rooms-2 at once (no lease wait),
    // and the mute, which lives only in the module's memory, moves with it.
    let _rooms2 = node("rooms-2", "rooms");
    rooms1.signal("TERM");
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < TTL,
            "the hand-off waited for the lease to expire"
        );
        student.send(message(json!({"text": "may I?"}))).await;
        let e = next_of(&mut student, "error", DEADLINE)
            .await
            .expect("an error");
        match e["code"].as_str() {
            Some("muted") if rooms1.log().contains("room closed") => break,
            Some("muted") | Some("unavailable") => {}
            other => panic!("unexpected refusal {other:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = rooms1.child_exit(DEADLINE);
    assert_eq!(status, Some(0), "rooms-1 exits cleanly after the hand-off");
    // Still muted on the new home; the teacher heard none of it.
    student.send(message(json!({"text": "hello?"}))).await;
    let e = next_of(&mut student, "error", DEADLINE)
        .await
        .expect("an error");
    assert_eq!(e["code"], "muted", "{e}");
    // The teacher sent nothing during the move: no frame of hers was
    // lost, so she is told of none.
    let mut heard = Vec::new();
    while let Ok(f) = tokio::time::timeout(Duration::from_millis(300), teacher.frame()).await {
        heard.push(f);
    }
    assert!(
        heard
            .iter()
            .all(|f| f["type"] != "message" && f["type"] != "error"),
        "{heard:?}"
    );
}
