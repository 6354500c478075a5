//! Property tests of the session state machine: 100,000 generated inputs
//! per encoding — arbitrary bytes and well-formed-but-wrong frames — fed
//! to one joined session over an in-memory duplex. After each input the
//! test sends a ping and reads up to the pong: an input the decoder
//! refuses must be answered by an error frame with the decoder's code,
//! the session must never close, and a neighbour's traffic must flow.

use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use roomlet::gateway::ClientInfo;
use roomlet::protocol::codec::{self, Encoding};
use roomlet_tests::server::{Wire, joined, start};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

const INPUTS: usize = 100_000;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[ -~]{0,24}".prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Frames with a real type (or a near miss) and random fields; `leave` is
/// left out because it ends the session by design.
fn wrong_frame() -> impl Strategy<Value = Value> {
    let ty = prop_oneof![
        Just("join".to_owned()),
        Just("resume".to_owned()),
        Just("signal".to_owned()),
        Just("message".to_owned()),
        Just("ping".to_owned()),
        Just("ack".to_owned()),
        Just("stats".to_owned()),
        Just("kick".to_owned()),
        Just("room-metadata".to_owned()),
        "[a-z-]{0,12}".prop_filter("not leave", |t| t != "leave"),
    ];
    let field = prop_oneof![
        Just("room"),
        Just("token"),
        Just("resumeToken"),
        Just("lastSeq"),
        Just("to"),
        Just("kind"),
        Just("payload"),
        Just("data"),
        Just("ts"),
        Just("seq"),
        Just("peer"),
        Just("reason"),
        Just("metadata"),
        Just("rttMs"),
        Just("packetLoss"),
        Just("fps"),
        Just("width"),
    ];
    let kind = prop_oneof![
        Just(json!("offer")),
        Just(json!("answer")),
        Just(json!("candidate")),
        value()
    ];
    (ty, prop::collection::vec((field, value()), 0..6), kind).prop_map(|(ty, fields, kind)| {
        let mut m = serde_json::Map::new();
        for (k, v) in fields {
            m.insert(k.to_owned(), v);
        }
        if ty == "signal" && !m.contains_key("kind") {
            m.insert("kind".into(), kind);
        }
        m.insert("type".into(), Value::from(ty));
        Value::Object(m)
    })
}

/// One generated input: (is text frame, bytes).
fn input(wire: Wire) -> impl Strategy<Value = (bool, Vec<u8>)> {
    let native_text = wire == Wire::Json;
    prop_oneof![
        1 => (any::<bool>(), prop::collection::vec(any::<u8>(), 0..200)),
        3 => wrong_frame().prop_map(move |v| {
            let bytes = if native_text { v.to_string().into_bytes() } else { rmp_serde::to_vec_named(&v).unwrap_or_default() };
            (native_text, bytes)
        }),
    ]
}

async fn run(wire: Wire) {
    let encoding = if wire == Wire::Json {
        Encoding::Json
    } else {
        Encoding::Msgpack
    };
    let server = start(|c| {
        c.limits.frames_per_second = 10_000_000;
        c.limits.frame_burst = 10_000_000;
        c.limits.max_frame_bytes = 4096;
        // The neighbours read only at checkpoints: on a loaded machine
        // those came more than the 45 s idle timeout apart, and the
        // neighbour, not answering pings meanwhile, was closed (4005).
        c.limits.idle_timeout_ms = 600_000;
    })
    .await;
    let room = format!("fuzz-{wire:?}");
    let (mut neighbour, _) = joined(&server, Wire::Json, &room, "neighbour").await;
    let (mut other, jo) = joined(&server, Wire::Json, &room, "other").await;
    let other_id = jo["peerId"].as_str().expect("peer id").to_owned();
    neighbour.frame_of("peer-joined").await;

    // The fuzzed session: the real gateway over an in-memory duplex.
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let gateway = server.running.gateway.clone();
    let ws = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
    let client = ClientInfo {
        addr: "fuzz".into(),
        headers: vec![],
    };
    let session = roomlet::gateway::serve(gateway, ws, encoding, client);
    // Every idle connection holds this future for its whole life: the
    // socket and the join's state belong in boxes (BENCHMARKS.md, idle
    // memory). It is 304 bytes; the socket alone is 416.
    let size = size_of_val(&session);
    assert!(
        size <= 512,
        "a session's spawned future grew to {size} bytes"
    );
    tokio::spawn(session);
    let mut ws = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    let token = roomlet_tests::server::dev_token(&room, "fuzzer");
    let send_json = |v: Value| match wire {
        Wire::Json => Message::text(v.to_string()),
        Wire::Msgpack => Message::binary(rmp_serde::to_vec_named(&v).unwrap_or_default()),
    };
    let decode = |m: Message| -> Option<Value> {
        match m {
            Message::Text(t) => serde_json::from_str(&t).ok(),
            Message::Binary(b) => rmp_serde::from_slice(&b).ok(),
            _ => None,
        }
    };
    ws.send(send_json(
        json!({"type": "join", "room": room, "token": token}),
    ))
    .await
    .expect("join");

    let strategy = input(wire);
    let mut runner = TestRunner::deterministic();
    let mut refused = 0usize;
    // Inputs are pipelined in batches; each is followed by a ping whose
    // pong marks the end of that input's answers (a session answers in order).
    const BATCH: usize = 100;
    for batch in 0..INPUTS / BATCH {
        let mut expected = Vec::with_capacity(BATCH);
        for j in 0..BATCH {
            let i = batch * BATCH + j;
            let (text, bytes) = strategy.new_tree(&mut runner).expect("value").current();
            expected.push(codec::decode(encoding, text, &bytes).err().map(|e| e.code));
            let msg = if text {
                Message::text(String::from_utf8_lossy(&bytes).into_owned())
            } else {
                Message::binary(bytes)
            };
            ws.feed(msg).await.expect("send input");
            ws.feed(send_json(json!({"type": "ping", "ts": i})))
                .await
                .expect("send ping");
        }
        ws.flush().await.expect("flush");
        for (j, code) in expected.into_iter().enumerate() {
            let i = batch * BATCH + j;
            let mut errors = Vec::new();
            loop {
                let m = tokio::time::timeout(roomlet_tests::DEADLINE, ws.next())
                    .await
                    .expect("an answer within the deadline")
                    .expect("socket open")
                    .expect("no socket error");
                if let Message::Close(c) = m {
                    panic!("input {i} closed the session: {c:?}");
                }
                let Some(f) = decode(m) else { continue };
                match f["type"].as_str() {
                    Some("pong") if f["ts"].as_f64() == Some(i as f64) => break,
                    Some("error") => errors.push(f["code"].as_str().unwrap_or("").to_owned()),
                    _ => {}
                }
            }
            if let Some(code) = code {
                refused += 1;
                assert!(
                    errors.iter().any(|e| e == code.as_str()),
                    "input {i} was refused by the decoder with {code}, answered {errors:?}"
                );
            }
        }
        if batch % 100 == 0 {
            // The neighbours' conversation goes on.
            other.send(json!({"type": "message", "data": batch})).await;
            loop {
                let m = neighbour.frame_of("message").await;
                if m["from"] == other_id.as_str() {
                    assert_eq!(m["data"], batch);
                    break;
                }
            }
        }
    }
    assert!(
        refused > INPUTS / 10,
        "the generator produced refusable input ({refused})"
    );
    println!("{wire:?}: {INPUTS} inputs, {refused} refused by the decoder, session alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_100k_generated_json_inputs() {
    run(Wire::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_survives_100k_generated_msgpack_inputs() {
    run(Wire::Msgpack).await;
}
