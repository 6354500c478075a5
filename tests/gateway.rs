//! The gateway end to end: a real server on loopback, real WebSocket
//! clients, both encodings. Presence, targeted and broadcast delivery,
//! signals, every limit, error code and close code, resume, and a
//! misbehaving client that harms no neighbour.

use roomlet_tests::server::{
    Client, Got, TestServer, Wire, dev_token, joined, peer_ids, start, token,
};
use serde_json::{Value, json};
use std::time::Duration;

fn ty(f: &Value) -> &str {
    f["type"].as_str().unwrap_or("")
}

async fn error_code(c: &mut Client) -> String {
    let f = c.frame_of("error").await;
    f["code"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn unknown_subprotocol_is_refused_at_the_handshake() {
    let s = start(|_| {}).await;
    for offered in [None, Some("chat"), Some("roomlet.v2.json")] {
        let r = Client::try_connect(&s.ws_url(), offered).await;
        match r {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 400)
            }
            other => panic!(
                "offering {offered:?} must be refused, got {:?}",
                other.map(|_| "a socket")
            ),
        }
    }
}

#[tokio::test]
async fn rooms_presence_and_delivery_in_both_encodings() {
    let s = start(|_| {}).await;
    for wire in Wire::BOTH {
        let room = format!("presence-{wire:?}");
        let other_room = format!("other-{wire:?}");
        let (mut a, ja) = joined(&s, wire, &room, "alice").await;
        assert_eq!(ja["seq"], 1);
        assert_eq!(ja["peers"].as_array().map(Vec::len), Some(0));
        assert_eq!(ja["region"], "local");
        assert!(ja["resumeToken"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(ja["iceServers"].as_array().is_some_and(|v| !v.is_empty()));
        let a_id = ja["peerId"].as_str().expect("peer id").to_owned();

        // The other encoding in the same room: one schema for both.
        let other_wire = if wire == Wire::Json {
            Wire::Msgpack
        } else {
            Wire::Json
        };
        let (mut b, jb) = joined(&s, other_wire, &room, "bob").await;
        let b_id = jb["peerId"].as_str().expect("peer id").to_owned();
        assert_eq!(jb["peers"][0]["id"], a_id.as_str());
        assert_eq!(jb["peers"][0]["identity"], "alice");
        let pj = a.frame().await;
        assert_eq!(
            (ty(&pj), pj["peer"]["id"].as_str()),
            ("peer-joined", Some(b_id.as_str()))
        );
        assert_eq!(pj["seq"], 2);

        let (mut c, jc) = joined(&s, wire, &room, "carol").await;
        let c_id = jc["peerId"].as_str().expect("peer id").to_owned();
        assert_eq!(jc["peers"].as_array().map(Vec::len), Some(2));
        a.frame_of("peer-joined").await;
        b.frame_of("peer-joined").await;
        let (mut x, _) = joined(&s, wire, &other_room, "xavier").await;

        // Broadcast: everyone in the room but the sender, nobody elsewhere.
        a.send(json!({"type": "message", "data": {"text": "hi all", "n": [1, 2]}}))
            .await;
        for peer in [&mut b, &mut c] {
            let m = peer.frame_of("message").await;
            assert_eq!(m["from"], a_id.as_str());
            assert_eq!(m["data"], json!({"text": "hi all", "n": [1, 2]}));
        }
        // Targeted: only the target.
        b.send(json!({"type": "message", "to": c_id, "data": "psst"}))
            .await;
        let m = c.frame_of("message").await;
        assert_eq!(
            (m["from"].as_str(), &m["data"]),
            (Some(b_id.as_str()), &json!("psst"))
        );
        // A signal goes peer to peer.
        let sdp = json!({"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"});
        a.send(json!({"type": "signal", "to": b_id, "kind": "offer", "payload": sdp}))
            .await;
        let sig = b.frame_of("signal").await;
        assert_eq!(
            (sig["from"].as_str(), sig["kind"].as_str()),
            (Some(a_id.as_str()), Some("offer"))
        );
        assert_eq!(sig["payload"], sdp);
        b.send(json!({"type": "signal", "to": a_id, "kind": "answer", "payload": {"type": "answer", "sdp": "v=0"}}))
            .await;
        let ans = a.frame_of("signal").await;
        assert_eq!(ans["kind"], "answer");
        a.send(json!({"type": "signal", "to": b_id, "kind": "candidate", "payload": {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0"}})).await;
        assert_eq!(b.frame_of("signal").await["kind"], "candidate");

        // Ping/pong is a control frame without seq.
        x.send(json!({"type": "ping", "ts": 42})).await;
        let p = x.frame().await;
        assert_eq!(
            (ty(&p), &p["ts"], p.get("seq")),
            ("pong", &json!(42.0), None)
        );

        // Leave: the others see peer-left; the leaver is closed normally.
        c.send(json!({"type": "leave"})).await;
        assert_eq!(c.closed().await, 1000);
        for peer in [&mut a, &mut b] {
            let l = peer.frame_of("peer-left").await;
            assert_eq!(
                (l["peerId"].as_str(), l["reason"].as_str()),
                (Some(c_id.as_str()), Some("leave"))
            );
        }
        // The room across the way heard nothing but its own pong.
        x.send(json!({"type": "ping"})).await;
        assert_eq!(ty(&x.frame().await), "pong");
    }
}

#[tokio::test]
async fn sequence_numbers_are_gapless_and_acks_are_checked() {
    let s = start(|_| {}).await;
    let (mut a, _) = joined(&s, Wire::Json, "seq", "a").await;
    let (mut b, jb) = joined(&s, Wire::Json, "seq", "b").await;
    let b_id = jb["peerId"].as_str().expect("id").to_owned();
    let mut expected = 2; // joined was 1
    assert_eq!(a.frame().await["seq"], expected);
    for i in 0..50 {
        b.send(json!({"type": "message", "to": null, "data": i}))
            .await;
    }
    for i in 0..50 {
        expected += 1;
        let m = a.frame().await;
        assert_eq!(
            (m["seq"].as_u64(), &m["data"]),
            (Some(expected), &json!(i)),
            "in order, no gaps"
        );
        assert_eq!(m["from"], b_id.as_str());
    }
    a.send(json!({"type": "ack", "seq": expected})).await;
    a.send(json!({"type": "ack", "seq": expected + 100})).await;
    assert_eq!(error_code(&mut a).await, "bad-seq");
}

/// Mints a token with arbitrary claims using the dev secret.
fn custom_token(claims: Value) -> String {
    roomlet_tests::tokens::hs256(&claims, roomlet::runtime::secrets::DEV_API_SECRET)
}

fn claims(room: &str, identity: &str, grant: Value) -> Value {
    let now = roomlet_tests::now_secs();
    let mut video = json!({"room": room, "roomJoin": true, "roomCreate": true});
    if let (Some(v), Some(g)) = (video.as_object_mut(), grant.as_object()) {
        for (k, x) in g {
            v.insert(k.clone(), x.clone());
        }
    }
    json!({"iss": "devkey", "sub": identity, "exp": now + 600, "nbf": now - 5, "video": video})
}

#[tokio::test]
async fn grants_are_enforced_on_frames() {
    let s = start(|_| {}).await;
    let url = s.ws_url();
    let (mut full, jf) = joined(&s, Wire::Json, "g", "full").await;
    let full_id = jf["peerId"].as_str().expect("id").to_owned();
    let mut viewer = Client::connect(&url, Wire::Json).await;
    let jv = viewer
        .join(
            "g",
            &custom_token(claims(
                "g",
                "viewer",
                json!({"canPublish": false, "canPublishData": false}),
            )),
        )
        .await;
    let viewer_id = jv["peerId"].as_str().expect("id").to_owned();
    let mut deaf = Client::connect(&url, Wire::Json).await;
    let jd = deaf
        .join(
            "g",
            &custom_token(claims("g", "deaf", json!({"canSubscribe": false}))),
        )
        .await;
    let deaf_id = jd["peerId"].as_str().expect("id").to_owned();

    viewer
        .send(json!({"type": "signal", "to": full_id, "kind": "offer", "payload": {}}))
        .await;
    assert_eq!(
        error_code(&mut viewer).await,
        "forbidden",
        "no offers without canPublish"
    );
    viewer
        .send(json!({"type": "signal", "to": full_id, "kind": "answer", "payload": {"sdp": "x"}}))
        .await;
    assert_eq!(
        full.frame_of("signal").await["from"],
        viewer_id.as_str(),
        "answers are allowed"
    );
    viewer.send(json!({"type": "message", "data": 1})).await;
    assert_eq!(
        error_code(&mut viewer).await,
        "forbidden",
        "no messages without canPublishData"
    );
    full.send(json!({"type": "signal", "to": deaf_id, "kind": "offer", "payload": {}}))
        .await;
    assert_eq!(
        error_code(&mut full).await,
        "forbidden",
        "no offers to a peer without canSubscribe"
    );
    full.send(json!({"type": "kick", "peer": viewer_id})).await;
    assert_eq!(
        error_code(&mut full).await,
        "forbidden",
        "kick needs roomAdmin"
    );
    full.send(json!({"type": "room-metadata", "metadata": "x"}))
        .await;
    assert_eq!(
        error_code(&mut full).await,
        "forbidden",
        "metadata needs roomAdmin"
    );

    // A hidden peer is neither announced nor listed.
    let mut ghost = Client::connect(&url, Wire::Json).await;
    let jg = ghost
        .join(
            "g",
            &custom_token(claims("g", "ghost", json!({"hidden": true}))),
        )
        .await;
    assert_eq!(jg["peers"].as_array().map(Vec::len), Some(3));
    let (mut late, jl) = joined(&s, Wire::Json, "g", "late").await;
    let listed: Vec<&str> = jl["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["identity"].as_str())
        .collect();
    assert!(!listed.contains(&"ghost"), "hidden peer listed: {listed:?}");
    assert_eq!(
        full.frame_of("peer-joined").await["peer"]["identity"],
        "late",
        "the ghost was never announced"
    );

    // An admin kicks and sets metadata.
    let mut admin = Client::connect(&url, Wire::Json).await;
    admin.join("g", &token("g", "admin", true)).await;
    admin
        .send(json!({"type": "room-metadata", "metadata": "{\"topic\":\"rust\"}"}))
        .await;
    assert_eq!(
        late.frame_of("room-metadata").await["metadata"],
        "{\"topic\":\"rust\"}"
    );
    admin
        .send(json!({"type": "kick", "peer": viewer_id, "reason": "be nice"}))
        .await;
    let k = viewer.frame_of("kicked").await;
    assert_eq!(k["reason"], "be nice");
    assert_eq!(viewer.closed().await, 4004);
    let left = late.frame_of("peer-left").await;
    assert_eq!(
        (left["peerId"].as_str(), left["reason"].as_str()),
        (Some(viewer_id.as_str()), Some("kicked"))
    );
}

#[tokio::test]
async fn bad_tokens_get_their_own_code_and_close_4001() {
    let s = start(|_| {}).await;
    let now = roomlet_tests::now_secs();
    let good = claims("t", "x", json!({}));
    let mut expired = good.clone();
    expired["exp"] = json!(now - 3600);
    let mut future = good.clone();
    future["nbf"] = json!(now + 3600);
    let mut unknown = good.clone();
    unknown["iss"] = json!("nokey");
    let mut no_join = good.clone();
    no_join["video"]["roomJoin"] = json!(false);
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let alg_none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&good));
    let hs512 = roomlet_tests::sign_jwt(
        &json!({"alg": "HS512"}),
        &good,
        roomlet::runtime::secrets::DEV_API_SECRET,
    );
    let forged = roomlet_tests::sign_jwt(&json!({"alg": "HS256"}), &good, "not-the-secret");
    let cases = [
        ("garbage", "token-malformed"),
        (alg_none.as_str(), "token-bad-algorithm"),
        (hs512.as_str(), "token-bad-algorithm"),
        (forged.as_str(), "token-bad-signature"),
        (&custom_token(unknown), "token-unknown-key"),
        (&custom_token(expired), "token-expired"),
        (&custom_token(future), "token-not-yet-valid"),
        (&dev_token("other-room", "x"), "token-wrong-room"),
        (&custom_token(no_join), "token-missing-grant"),
    ];
    // A neighbour whose session must not notice any of it.
    let (mut n, _) = joined(&s, Wire::Json, "t", "neighbour").await;
    for (token, code) in cases {
        let mut c = Client::connect(&s.ws_url(), Wire::Json).await;
        c.send(json!({"type": "join", "room": "t", "token": token}))
            .await;
        let e = c.frame().await;
        assert_eq!(
            (ty(&e), e["code"].as_str()),
            ("error", Some(code)),
            "token case {code}"
        );
        let msg = e["message"].as_str().unwrap_or("");
        assert!(!msg.contains(roomlet::runtime::secrets::DEV_API_SECRET) || msg.is_empty());
        assert_eq!(c.closed().await, 4001, "{code} closes with 4001");
    }
    n.send(json!({"type": "ping", "ts": 1})).await;
    assert_eq!(ty(&n.frame().await), "pong");
}

#[tokio::test]
async fn malformed_and_out_of_order_frames_get_stable_codes() {
    let s = start(|_| {}).await;
    for wire in Wire::BOTH {
        let mut c = Client::connect(&s.ws_url(), wire).await;
        c.send(json!({"type": "message", "data": 1})).await;
        assert_eq!(error_code(&mut c).await, "not-joined");
        c.send(json!({"type": "teleport"})).await;
        assert_eq!(error_code(&mut c).await, "unknown-type");
        c.send(json!({"type": "join", "room": "m"})).await;
        assert_eq!(error_code(&mut c).await, "bad-frame", "missing token");
        c.send(json!({"no": "type"})).await;
        assert_eq!(error_code(&mut c).await, "bad-frame");
        c.send(json!({"type": "resume", "resumeToken": "r-nope", "lastSeq": 0}))
            .await;
        assert_eq!(error_code(&mut c).await, "resume-failed");
        assert_eq!(c.closed().await, 4007);

        let room = format!("m-{wire:?}");
        let (mut c, _) = joined(&s, wire, &room, "m").await;
        // The wrong frame kind for the encoding.
        c.send_raw(wire == Wire::Msgpack, b"{\"type\":\"ping\"}".to_vec())
            .await;
        assert_eq!(error_code(&mut c).await, "bad-frame");
        c.send_raw(wire == Wire::Json, vec![0xc1, 0xff, 0x00]).await;
        assert_eq!(error_code(&mut c).await, "bad-frame");
        c.send(json!({"type": "join", "room": room, "token": dev_token(&room, "m")}))
            .await;
        assert_eq!(error_code(&mut c).await, "already-joined");
        c.send(json!({"type": "signal", "to": "p-nobody", "kind": "offer", "payload": {}}))
            .await;
        assert_eq!(error_code(&mut c).await, "unknown-peer");
        c.send(json!({"type": "signal", "to": "p-nobody", "kind": "shout", "payload": {}}))
            .await;
        assert_eq!(error_code(&mut c).await, "bad-frame");
        c.send(json!({"type": "message", "to": "p-nobody", "data": 1}))
            .await;
        assert_eq!(error_code(&mut c).await, "unknown-peer");
        c.send(json!({"type": "stats", "rttMs": 12.5, "packetLoss": 0.01, "fps": 30}))
            .await;
        c.send(json!({"type": "stats", "packetLoss": 7})).await;
        assert_eq!(error_code(&mut c).await, "stats-invalid");
        c.send(json!({"type": "stats", "rttMs": -1})).await;
        assert_eq!(error_code(&mut c).await, "stats-invalid");
        // Ten bad frames in a row: protocol violation.
        for _ in 0..10 {
            c.send(json!({"type": 5})).await;
        }
        assert_eq!(c.closed().await, 4002);
    }
}

#[tokio::test]
async fn relay_policy_refusals_reach_the_sender() {
    let s = start(|c| {
        c.modules.insert(
            "relay".into(),
            roomlet::config::ModuleSection {
                config: [("max-payload-bytes".to_string(), toml::Value::Integer(64))].into(),
                ..Default::default()
            },
        );
    })
    .await;
    let (mut a, _) = joined(&s, Wire::Json, "relay", "a").await;
    let (mut b, jb) = joined(&s, Wire::Json, "relay", "b").await;
    let b_id = jb["peerId"].as_str().expect("id").to_owned();
    a.frame_of("peer-joined").await;
    a.send(
        json!({"type": "signal", "to": b_id, "kind": "offer", "payload": {"sdp": "x".repeat(100)}}),
    )
    .await;
    assert_eq!(error_code(&mut a).await, "payload-too-large");
    a.send(json!({"type": "message", "data": "y".repeat(100)}))
        .await;
    assert_eq!(error_code(&mut a).await, "payload-too-large");
    a.send(json!({"type": "message", "data": "ok"})).await;
    assert_eq!(b.frame_of("message").await["data"], "ok");
}

#[tokio::test]
async fn limits_have_clear_answers() {
    let s = start(|c| {
        c.limits.max_frame_bytes = 1024;
        c.limits.frames_per_second = 20;
        c.limits.frame_burst = 20;
        c.rooms.max_peers_per_room = 2;
        c.rooms.max_rooms = 2;
        c.limits.max_connections = 6;
    })
    .await;
    // Peers per room.
    let (_a, _) = joined(&s, Wire::Json, "l1", "a").await;
    let (_b, _) = joined(&s, Wire::Json, "l1", "b").await;
    let mut c = Client::connect(&s.ws_url(), Wire::Json).await;
    c.send(json!({"type": "join", "room": "l1", "token": dev_token("l1", "c")}))
        .await;
    assert_eq!(error_code(&mut c).await, "room-full");
    assert_eq!(c.closed().await, 4009);
    // Rooms per node.
    let (mut d, _) = joined(&s, Wire::Json, "l2", "d").await;
    let mut e = Client::connect(&s.ws_url(), Wire::Json).await;
    e.send(json!({"type": "join", "room": "l3", "token": dev_token("l3", "e")}))
        .await;
    assert_eq!(error_code(&mut e).await, "node-full");
    assert_eq!(e.closed().await, 1013);
    // Frame size.
    d.send(json!({"type": "message", "data": "z".repeat(2000)}))
        .await;
    assert_eq!(error_code(&mut d).await, "frame-too-large");
    assert_eq!(d.closed().await, 1009);
    // Frame rate: refused frames first, then a close after persisting.
    let (mut f, _) = joined(&s, Wire::Json, "l2", "f").await;
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let code = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never closed for rate"
        );
        for _ in 0..20 {
            f.send(json!({"type": "ping"})).await;
        }
        // Drain what is there without blocking on more.
        let mut closed = None;
        while let Ok(got) = tokio::time::timeout(Duration::from_millis(20), f.next()).await {
            match got {
                Got::Frame(fr) if fr["code"] == "rate-limited" => refused += 1,
                Got::Frame(_) => {}
                Got::Closed(c) => {
                    closed = Some(c);
                    break;
                }
            }
        }
        if let Some(c) = closed {
            break c;
        }
    };
    assert!(
        refused > 0,
        "over-rate frames are refused with rate-limited first"
    );
    assert_eq!(code, 4003);
    // Connections per node: 6 allowed; _a, _b, and these four.
    let mut extra = Vec::new();
    for _ in 0..4 {
        extra.push(Client::connect(&s.ws_url(), Wire::Json).await);
    }
    let mut over = Client::connect(&s.ws_url(), Wire::Json).await;
    assert_eq!(error_code(&mut over).await, "node-full");
    assert_eq!(over.closed().await, 1013);
}

#[tokio::test]
async fn idle_connections_are_closed_and_dead_peers_announced() {
    let s = start(|c| {
        c.limits.ping_interval_ms = 100;
        c.limits.idle_timeout_ms = 400;
        c.limits.resume_grace_ms = 300;
        c.limits.join_timeout_ms = 300;
    })
    .await;
    // Never joins: closed by the join timeout.
    let mut lurker = Client::connect(&s.ws_url(), Wire::Json).await;
    assert_eq!(error_code(&mut lurker).await, "join-timeout");
    assert_eq!(lurker.closed().await, 4005);
    // A dropped peer is announced after the grace period.
    let (mut a, _) = joined(&s, Wire::Json, "idle", "a").await;
    let (b, jb) = joined(&s, Wire::Json, "idle", "b").await;
    let b_id = jb["peerId"].as_str().expect("id").to_owned();
    a.frame_of("peer-joined").await;
    b.drop_connection();
    let left = a.frame_of("peer-left").await;
    assert_eq!(
        (left["peerId"].as_str(), left["reason"].as_str()),
        (Some(b_id.as_str()), Some("timeout"))
    );
    // a keeps answering pings (the client library answers server pings), so it stays.
    a.send(json!({"type": "ping"})).await;
    assert_eq!(ty(&a.frame_of("pong").await), "pong");
}

async fn resume_without_loss(s: &TestServer, wire: Wire) {
    let room = format!("resume-{wire:?}");
    let (mut a, _) = joined(s, wire, &room, "a").await;
    let (mut b, jb) = joined(s, wire, &room, "b").await;
    let token = jb["resumeToken"].as_str().expect("token").to_owned();
    a.frame_of("peer-joined").await;
    for i in 0..10 {
        a.send(json!({"type": "message", "data": i})).await;
    }
    let mut last_seq = 0;
    for i in 0..5 {
        let m = b.frame_of("message").await;
        assert_eq!(m["data"], i);
        last_seq = m["seq"].as_u64().expect("seq");
    }
    b.drop_connection();
    for i in 10..20 {
        a.send(json!({"type": "message", "data": i})).await;
    }
    let mut b2 = Client::connect(&s.ws_url(), wire).await;
    b2.send(json!({"type": "resume", "resumeToken": token, "lastSeq": last_seq}))
        .await;
    let j = b2.frame().await;
    assert_eq!((ty(&j), &j["resumed"]), ("joined", &json!(true)), "{j}");
    let mut seq = last_seq;
    for i in 5..20 {
        let m = b2.frame_of("message").await;
        seq += 1;
        assert_eq!(
            (m["data"].as_i64(), m["seq"].as_u64()),
            (Some(i), Some(seq)),
            "every missed frame once, in order"
        );
    }
    b2.send(json!({"type": "ping"})).await;
    assert_eq!(
        ty(&b2.frame().await),
        "pong",
        "nothing duplicated after the replay"
    );
    // The room never saw b leave.
    a.send(json!({"type": "ping"})).await;
    assert_eq!(ty(&a.frame().await), "pong", "no peer-left was sent to a");
}

#[tokio::test]
async fn resume_after_a_dropped_socket_loses_and_duplicates_nothing() {
    let s = start(|_| {}).await;
    for wire in Wire::BOTH {
        resume_without_loss(&s, wire).await;
    }
}

#[tokio::test]
async fn resume_takes_over_a_half_open_session() {
    let s = start(|_| {}).await;
    let (mut a, _) = joined(&s, Wire::Json, "takeover", "a").await;
    let (mut old, jb) = joined(&s, Wire::Json, "takeover", "b").await;
    let token = jb["resumeToken"].as_str().expect("token").to_owned();
    a.frame_of("peer-joined").await;
    a.send(json!({"type": "message", "data": "one"})).await;
    let m = old.frame_of("message").await;
    let last = m["seq"].as_u64().expect("seq");
    let mut new = Client::connect(&s.ws_url(), Wire::Json).await;
    new.send(json!({"type": "resume", "resumeToken": token, "lastSeq": last}))
        .await;
    assert_eq!(new.frame().await["resumed"], true);
    assert_eq!(old.closed().await, 4010);
    a.send(json!({"type": "message", "data": "two"})).await;
    let m = new.frame_of("message").await;
    assert_eq!(
        (m["data"].as_str(), m["seq"].as_u64()),
        (Some("two"), Some(last + 1))
    );
    // A resume that claims frames the server never sent is refused.
    let mut liar = Client::connect(&s.ws_url(), Wire::Json).await;
    liar.send(json!({"type": "resume", "resumeToken": token, "lastSeq": 10_000}))
        .await;
    assert_eq!(error_code(&mut liar).await, "resume-failed");
    assert_eq!(liar.closed().await, 4007);
}

#[tokio::test]
async fn resume_in_another_subprotocol_is_refused_clearly() {
    let s = start(|_| {}).await;
    let (mut a, _) = joined(&s, Wire::Json, "switch", "a").await;
    let (b, jb) = joined(&s, Wire::Json, "switch", "b").await;
    let token = jb["resumeToken"].as_str().expect("token").to_owned();
    a.frame_of("peer-joined").await;
    b.drop_connection();
    let mut b2 = Client::connect(&s.ws_url(), Wire::Msgpack).await;
    b2.send(json!({"type": "resume", "resumeToken": token, "lastSeq": 1}))
        .await;
    let e = b2.frame_of("error").await;
    assert_eq!(e["code"], "resume-failed");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("subprotocol")),
        "{e}"
    );
    assert_eq!(b2.closed().await, 4007);
    let left = a.frame_of("peer-left").await;
    assert_eq!(left["peerId"], jb["peerId"]);
}

#[tokio::test]
async fn a_garbage_client_does_not_disturb_its_neighbours() {
    let s = start(|c| c.limits.frames_per_second = 10_000).await;
    let (mut a, _) = joined(&s, Wire::Json, "calm", "a").await;
    let (mut b, _) = joined(&s, Wire::Msgpack, "calm", "b").await;
    a.frame_of("peer-joined").await;
    let (mut vandal, _) = joined(&s, Wire::Json, "calm", "vandal").await;
    let sender = tokio::spawn(async move {
        for i in 0..200 {
            a.send(json!({"type": "message", "data": i})).await;
        }
        a
    });
    let mut rng_state: u32 = 12345;
    for i in 0..300u32 {
        rng_state = rng_state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let junk: Vec<u8> = (0..(rng_state % 200))
            .map(|j| (rng_state >> (j % 24)) as u8)
            .collect();
        vandal.send_raw(i % 2 == 0, junk).await;
        if i % 7 == 0 {
            vandal.send(json!({"type": "ping"})).await; // keeps the bad streak below the close limit
        }
    }
    for i in 0..200 {
        let m = b.frame_of("message").await;
        assert_eq!(m["data"], i, "no frame lost or reordered");
    }
    let mut a = sender.await.expect("sender");
    a.send(json!({"type": "ping"})).await;
    assert_eq!(ty(&a.frame_of("pong").await), "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_again_replaces_the_same_users_dropped_session_not_a_live_one() {
    let s = start(|_| {}).await;
    let room = "again";
    let (mut a, ja) = joined(&s, Wire::Json, room, "a").await;
    let (b, jb) = joined(&s, Wire::Json, room, "b").await;
    let a_id = ja["peerId"].as_str().expect("peer id").to_owned();
    let old_b = jb["peerId"].as_str().expect("peer id").to_owned();
    a.frame_of("peer-joined").await;

    // b's page reloads: its socket drops (the session is parked for
    // resume) and it joins afresh under the same identity.
    b.drop_connection();
    roomlet_tests::wait_for("b's dropped session to be parked", || {
        s.running.gateway.connections() == 1
    })
    .await;
    let (_b, jb) = joined(&s, Wire::Json, room, "b").await;
    let new_b = jb["peerId"].as_str().expect("peer id").to_owned();
    assert_eq!(
        peer_ids(&jb),
        [a_id.as_str()],
        "only a, not b's old self: {jb}"
    );
    let left = a.frame_of("peer-left").await;
    assert_eq!(
        (&left["peerId"], &left["reason"]),
        (&json!(old_b), &json!("timeout")),
        "{left}"
    );
    let came = a.frame_of("peer-joined").await;
    assert_eq!(came["peer"]["id"], new_b.as_str(), "{came}");

    // A second live session under a's identity (another device) leaves
    // the first one alone.
    let (_a2, ja2) = joined(&s, Wire::Json, room, "a").await;
    let mut want = [a_id.as_str(), new_b.as_str()];
    want.sort_unstable();
    assert_eq!(peer_ids(&ja2), want, "{ja2}");
}

/// A client that opens a TCP connection and stalls in the HTTP request
/// head, or leaves a keep-alive connection idle, is closed once
/// `request_head_timeout_ms` passes: it cannot hold a file descriptor for
/// good (slowloris). A whole request still gets its answer meanwhile.
#[tokio::test]
async fn a_stalled_request_head_or_an_idle_keep_alive_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start(|c| c.limits.request_head_timeout_ms = 500).await;
    let started = std::time::Instant::now();
    let mut half = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    half.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut idle = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut silent = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    for (name, conn) in [
        ("half a head", &mut half),
        ("an idle keep-alive", &mut idle),
        ("nothing sent", &mut silent),
    ] {
        let mut got = Vec::new();
        let read = tokio::time::timeout(roomlet_tests::DEADLINE, conn.read_to_end(&mut got)).await;
        assert!(
            read.is_ok(),
            "{name}: still open after {:?}",
            roomlet_tests::DEADLINE
        );
        if name == "an idle keep-alive" {
            assert!(
                String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
                "the request was answered first: {}",
                String::from_utf8_lossy(&got)
            );
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed by the deadline, not at once ({:?})",
        started.elapsed()
    );
    // A real client is unaffected.
    let (_c, j) = roomlet_tests::server::joined(&s, Wire::Json, "after-stall", "ann").await;
    assert_eq!(j["type"], "joined");
}

/// A module's rejection code can be hundreds of bytes; the close frame's
/// reason is cut to 123 bytes on a character boundary, so the client still
/// reads the close code (a longer reason would not be sent at all).
#[tokio::test]
async fn a_long_rejection_code_still_closes_with_its_code() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = start(|c| {
        c.modules.entry("rooms".into()).or_default().path =
            Some(env!("ROOMLET_FIXTURE_HOSTILE").into());
    })
    .await;
    let code = "é".repeat(150);
    let token = roomlet_tests::tokens::Token::new("long", "lee")
        .metadata(Some(&format!("reject:{code}")))
        .mint();
    let mut ws = roomlet_tests::server::Client::try_connect(&s.ws_url(), Some("roomlet.v1.json"))
        .await
        .expect("connects");
    use futures_util::SinkExt;
    ws.send(Message::text(
        json!({"type": "join", "room": "long", "token": token}).to_string(),
    ))
    .await
    .expect("send");
    let mut closed = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(roomlet_tests::DEADLINE, ws.next()).await {
        match m {
            Message::Text(t) => {
                let f: Value = serde_json::from_str(&t).expect("json");
                assert_eq!(f["code"], code.as_str(), "the error frame has it whole");
            }
            Message::Close(c) => {
                closed = c;
                break;
            }
            _ => {}
        }
    }
    let close = closed.expect("a close frame, not a dropped connection");
    assert_eq!(u16::from(close.code), 4009);
    assert!(close.reason.len() <= 123, "{} bytes", close.reason.len());
    assert!(close.reason.len() >= 120, "cut at the limit, not before");
    assert!(code.starts_with(close.reason.as_str()));
}

// ---- Client frame ids ----

/// The next `confirmed` frame naming `id` or more, skipping others; how
/// many `confirmed` frames came before it.
async fn confirmed_up_to(c: &mut Client, id: u64) -> usize {
    let mut before = 0;
    loop {
        let f = c.frame_of("confirmed").await;
        assert!(f.get("seq").is_none(), "confirmations are unnumbered: {f}");
        if f["id"].as_u64().expect("id") >= id {
            return before;
        }
        before += 1;
    }
}

#[tokio::test]
async fn frame_ids_are_passed_on_confirmed_and_named_in_refusals() {
    let s = start(|_| {}).await;
    for wire in Wire::BOTH {
        let room = format!("ids-{wire:?}");
        let (mut a, ja) = joined(&s, wire, &room, "alice").await;
        let (mut b, jb) = joined(&s, wire, &room, "bob").await;
        let a_id = ja["peerId"].as_str().expect("peer id").to_owned();
        let b_id = jb["peerId"].as_str().expect("peer id").to_owned();
        a.frame_of("peer-joined").await;

        a.send(json!({"type": "signal", "to": b_id, "kind": "offer", "payload": {"sdp": "v=0"}, "id": 1}))
            .await;
        a.send(json!({"type": "message", "data": "hi", "id": 2}))
            .await;
        a.send(json!({"type": "signal", "to": "p-nobody", "kind": "candidate", "payload": {}, "id": 3}))
            .await;
        // Without an id, as before: no id passed on.
        a.send(json!({"type": "message", "data": "plain"})).await;
        let s1 = b.frame_of("signal").await;
        assert_eq!((&s1["from"], &s1["id"]), (&json!(a_id), &json!(1)), "{s1}");
        let m2 = b.frame_of("message").await;
        assert_eq!((&m2["data"], &m2["id"]), (&json!("hi"), &json!(2)), "{m2}");
        let plain = b.frame_of("message").await;
        assert_eq!(plain["data"], "plain");
        assert!(plain.get("id").is_none(), "{plain}");
        // The refusal names the frame, in the numbered stream.
        let e = a.frame_of("error").await;
        assert_eq!(
            (&e["code"], &e["id"]),
            (&json!("unknown-peer"), &json!(3)),
            "{e}"
        );
        assert!(e["seq"].as_u64().is_some(), "{e}");
        confirmed_up_to(&mut a, 3).await;

        // A frame whose id was taken already is a re-send, dropped by the
        // sender's session (and confirmed): even id 3, which was refused
        // and never reached bob, now as a message he could take.
        a.send(json!({"type": "message", "data": "again", "id": 3}))
            .await;
        a.send(json!({"type": "message", "data": "next", "id": 4}))
            .await;
        let m = b.frame_of("message").await;
        assert_eq!((&m["data"], &m["id"]), (&json!("next"), &json!(4)), "{m}");
        confirmed_up_to(&mut a, 4).await;

        // An id out of range is a bad frame, and names nothing.
        for bad in [json!(0), json!(1u64 << 32), json!(-5), json!("6")] {
            a.send(json!({"type": "message", "data": 1, "id": bad}))
                .await;
            let e = a.frame_of("error").await;
            assert_eq!(e["code"], "bad-frame", "{bad}: {e}");
            assert!(e.get("id").is_none(), "{e}");
        }
    }
}

#[tokio::test]
async fn confirmations_come_at_most_every_hundred_milliseconds() {
    let s = start(|_| {}).await;
    let (mut a, _) = joined(&s, Wire::Json, "ids-pace", "alice").await;
    let (mut b, _) = joined(&s, Wire::Json, "ids-pace", "bob").await;
    a.frame_of("peer-joined").await;
    let started = std::time::Instant::now();
    // Within the default burst (200): none is rate-limited.
    for id in 1..=150 {
        a.send(json!({"type": "message", "data": id, "id": id}))
            .await;
    }
    let before = confirmed_up_to(&mut a, 150).await;
    let periods = started.elapsed().as_millis() / 100;
    assert!(
        before as u128 <= periods + 1,
        "{before} confirmations before the last, in {periods} periods of 100 ms"
    );
    for id in 1..=150 {
        assert_eq!(b.frame_of("message").await["id"], id);
    }
}

/// A client whose socket dropped resumes and sends again what it was not
/// told was confirmed, then goes on: every frame reaches the receiver once.
#[tokio::test]
async fn a_resumed_sender_sends_again_and_no_one_gets_a_copy() {
    let s = start(|_| {}).await;
    for wire in Wire::BOTH {
        let room = format!("ids-resume-{wire:?}");
        let (mut a, ja) = joined(&s, wire, &room, "alice").await;
        let (mut b, _) = joined(&s, wire, &room, "bob").await;
        a.frame_of("peer-joined").await;
        let token = ja["resumeToken"].as_str().expect("token").to_owned();
        for id in 1..=10 {
            a.send(json!({"type": "message", "data": id, "id": id}))
                .await;
        }
        for id in 1..=10 {
            assert_eq!(b.frame_of("message").await["id"], id);
        }
        a.drop_connection();
        let mut a2 = Client::connect(&s.ws_url(), wire).await;
        a2.send(json!({"type": "resume", "resumeToken": token, "lastSeq": 1}))
            .await;
        assert_eq!(a2.frame().await["resumed"], true);
        for id in 1..=11 {
            a2.send(json!({"type": "message", "data": id, "id": id}))
                .await;
        }
        confirmed_up_to(&mut a2, 11).await;
        assert_eq!(b.frame_of("message").await["id"], 11, "no copy of 1..=10");
    }
}

/// Every numbered frame is accounted for under a rate limit: delivered,
/// or refused with its id; the last confirmation covers them all.
#[tokio::test]
async fn a_rate_limited_frame_is_refused_by_its_id() {
    let s = start(|c| {
        c.limits.frames_per_second = 5;
        c.limits.frame_burst = 5;
    })
    .await;
    let (mut a, _) = joined(&s, Wire::Json, "ids-rate", "alice").await;
    let (mut b, _) = joined(&s, Wire::Json, "ids-rate", "bob").await;
    a.frame_of("peer-joined").await;
    let n = 12u64;
    for id in 1..=n {
        a.send(json!({"type": "message", "data": id, "id": id}))
            .await;
    }
    let mut refused = Vec::new();
    loop {
        let f = a.frame().await;
        match f["type"].as_str() {
            Some("error") => {
                assert_eq!(f["code"], "rate-limited", "{f}");
                refused.push(f["id"].as_u64().expect("the refused frame's id"));
            }
            Some("confirmed") if f["id"] == n => break,
            _ => {}
        }
    }
    assert!(!refused.is_empty(), "the limit refused nothing");
    let mut delivered = Vec::new();
    while delivered.len() + refused.len() < n as usize {
        delivered.push(b.frame_of("message").await["id"].as_u64().expect("id"));
    }
    let mut all: Vec<u64> = delivered.iter().chain(&refused).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=n).collect::<Vec<_>>(),
        "delivered {delivered:?}, refused {refused:?}"
    );
}

/// A confirmation rides with the next frames written to the client, in the
/// same write, where one that goes alone waits up to a second for them.
#[tokio::test]
async fn a_confirmation_rides_with_the_next_delivery() {
    let s = start(|_| {}).await;
    let (mut a, _) = joined(&s, Wire::Json, "ids-ride", "alice").await;
    let (mut b, _) = joined(&s, Wire::Json, "ids-ride", "bob").await;
    a.frame_of("peer-joined").await;
    a.send(json!({"type": "message", "data": "from a", "id": 1}))
        .await;
    assert_eq!(b.frame_of("message").await["id"], 1);
    b.send(json!({"type": "message", "data": "from b"})).await;
    let (mut message, mut confirmed) = (None, None);
    while message.is_none() || confirmed.is_none() {
        let f = a.frame().await;
        let now = std::time::Instant::now();
        match f["type"].as_str() {
            Some("message") => message = Some(now),
            Some("confirmed") => {
                assert_eq!(f["id"], 1, "{f}");
                confirmed = Some(now);
            }
            _ => {}
        }
    }
    // Alone, it would come a second after alice's frame, long after bob's
    // message; riding, with it (or before it, on a machine slow enough for
    // the second to pass first).
    let late = confirmed
        .zip(message)
        .map(|(c, m)| c.saturating_duration_since(m));
    assert!(
        late < Some(std::time::Duration::from_millis(300)),
        "the confirmation came {late:?} after the message"
    );
}
