//! Hostile clients (issue 32): every WebSocket protocol violation and every
//! oversized frame ends with a close frame carrying the RFC's code, read by
//! a client that is still sending; a flood ends with 4003 every time; and
//! one input contract holds for both encodings.

use futures_util::{SinkExt, StreamExt};
use roomlet_tests::raw::{self, CLOSE, CONTINUATION, PING, Raw, TEXT, frame, good};
use roomlet_tests::server::{Client, TestServer, Wire, joined, start};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// Keeps writing valid pings until the server stops taking them (or 5 s):
/// a client still sending when the server closes is the one a reset
/// would hit before it reads the close frame.
fn keep_sending(mut wr: tokio::net::tcp::OwnedWriteHalf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ping = good(PING, b"still here");
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            for _ in 0..1_000_000 {
                if wr.write_all(&ping).await.is_err() {
                    break;
                }
            }
        })
        .await;
    })
}

/// Sends `bad` on a joined connection, goes on sending, and returns how
/// the connection ended.
async fn after(s: &TestServer, room: &str, bad: &[Vec<u8>]) -> raw::Ending {
    let mut c = Raw::joined(s.addr(), false, room, "mallory").await;
    for b in bad {
        c.send(b).await;
    }
    let Raw { mut reader, wr } = c;
    let writer = keep_sending(wr);
    let end = tokio::time::timeout(roomlet_tests::DEADLINE, reader.ending())
        .await
        .expect("the connection ends within the deadline");
    writer.abort();
    end
}

#[tokio::test]
async fn protocol_violations_close_with_the_rfc_code() {
    let s = start(|_| {}).await;
    let leave = json!({"type": "ping"}).to_string();
    let cases: Vec<(&str, Vec<Vec<u8>>, u16)> = vec![
        (
            "unmasked frame",
            vec![frame(true, 0, TEXT, false, leave.as_bytes())],
            1002,
        ),
        ("reserved opcode", vec![good(0x3, b"x")], 1002),
        ("reserved control opcode", vec![good(0xb, b"x")], 1002),
        (
            "RSV1 set",
            vec![frame(true, 4, TEXT, true, leave.as_bytes())],
            1002,
        ),
        ("stray continuation", vec![good(CONTINUATION, b"x")], 1002),
        (
            "fragmented ping",
            vec![frame(false, 0, PING, true, b"x")],
            1002,
        ),
        ("oversized ping", vec![good(PING, &[b'p'; 126])], 1002),
        (
            "close code 999",
            vec![good(CLOSE, &999u16.to_be_bytes())],
            1002,
        ),
        (
            "a new message inside a fragmented one",
            vec![frame(false, 0, TEXT, true, b"{\"ty"), good(TEXT, b"{}")],
            1002,
        ),
        (
            "invalid UTF-8 text",
            vec![good(TEXT, b"{\"type\":\"\xff\xfe\"}")],
            1007,
        ),
    ];
    for (i, (name, bad, want)) in cases.into_iter().enumerate() {
        let end = after(&s, &format!("violations-{i}"), &bad).await;
        assert_eq!(end.code, want, "{name}: closed with {end:?}");
    }
    // Bystanders carry on.
    let (_c, j) = joined(&s, Wire::Json, "after-violations", "ann").await;
    assert_eq!(j["type"], "joined");
}

#[tokio::test]
async fn frames_of_any_size_over_the_cap_get_frame_too_large_and_1009() {
    let s = start(|_| {}).await;
    for size in [300_000usize, 2 * 1024 * 1024, 10_000_000] {
        for fragmented in [false, true] {
            let body = format!("{{\"type\":\"message\",\"data\":\"{}\"}}", "x".repeat(size));
            let frames: Vec<Vec<u8>> = if fragmented {
                let chunks: Vec<&[u8]> = body.as_bytes().chunks(32 * 1024).collect();
                let last = chunks.len() - 1;
                chunks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let op = if i == 0 { TEXT } else { CONTINUATION };
                        frame(i == last, 0, op, true, c)
                    })
                    .collect()
            } else {
                vec![good(TEXT, body.as_bytes())]
            };
            let room = format!("big-{size}-{fragmented}");
            let Raw { mut reader, mut wr } = Raw::joined(s.addr(), false, &room, "bob").await;
            let writer = tokio::spawn(async move {
                for f in frames {
                    if wr.write_all(&f).await.is_err() {
                        break;
                    }
                }
            });
            let end = tokio::time::timeout(roomlet_tests::DEADLINE, reader.ending())
                .await
                .expect("ends");
            writer.abort();
            let what = format!("{size} bytes, fragmented: {fragmented}");
            assert_eq!(end.code, 1009, "{what}: {end:?}");
            assert!(
                end.frames
                    .iter()
                    .any(|f| f["type"] == "error" && f["code"] == "frame-too-large"),
                "{what}: frame-too-large before the close: {:?}",
                end.frames
            );
        }
    }
}

/// Ten clients flood at once, 10,000 frames a second until the server
/// closes (past the 3 s grace), reading slowly; every one reads 4003,
/// none a reset.
#[tokio::test]
async fn a_flood_ends_with_4003_every_time() {
    let s = start(|_| {}).await;
    let floods = (0..10).map(|i| {
        let url = s.ws_url();
        tokio::spawn(async move {
            let mut c = Client::connect(&url, Wire::Json).await;
            let room = format!("flood-{i}");
            c.join(&room, &roomlet_tests::server::dev_token(&room, "fay"))
                .await;
            let ws = c.into_inner();
            let (mut tx, mut rx) = ws.split();
            // 10,000 a second until the server closes (at most 10 s).
            let writer = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                for _ in 0..1000 {
                    tick.tick().await;
                    for _ in 0..100 {
                        if tx.feed(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
                            return;
                        }
                    }
                    if tx.flush().await.is_err() {
                        return;
                    }
                }
            });
            // A slow reader: it reads nothing for the first 4 s, so the
            // server's answers pile up behind the close frame, and the
            // server closes with the client's frames still unread. Closing
            // so used to send a reset that dropped them all: 1006.
            tokio::time::sleep(Duration::from_secs(4)).await;
            let mut code = 1006;
            while let Some(m) = rx.next().await {
                match m {
                    Ok(Message::Close(c)) => {
                        code = c.map_or(1005, |c| u16::from(c.code));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            writer.abort();
            code
        })
    });
    let mut codes = Vec::new();
    for f in floods.collect::<Vec<_>>() {
        codes.push(
            tokio::time::timeout(Duration::from_secs(30), f)
                .await
                .expect("the flood ends")
                .expect("no panic"),
        );
    }
    assert_eq!(codes, vec![4003; 10], "every flood ends with 4003");
}

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

async fn refused(c: &mut Client) -> String {
    let f = c.frame_of("error").await;
    f["code"].as_str().unwrap_or_default().to_owned()
}

/// Data nested past 64 levels, numbers JSON cannot carry to MessagePack
/// (or back), lone surrogates, repeated keys, `ext` values and bytes after
/// the frame are refused as `bad-frame` in either encoding, and nothing
/// reaches a peer; what is accepted reaches peers in both encodings.
#[tokio::test]
async fn one_input_contract_for_both_encodings() {
    let s = start(|_| {}).await;
    let room = "contract";
    let (mut json_in, _) = joined(&s, Wire::Json, room, "jay").await;
    let (mut pack_in, _) = joined(&s, Wire::Msgpack, room, "pam").await;
    let (mut json_out, _) = joined(&s, Wire::Json, room, "jon").await;
    let (mut pack_out, _) = joined(&s, Wire::Msgpack, room, "pat").await;
    let message = |data: Value| json!({"type": "message", "data": data});
    let pack = |v: &Value| rmp_serde::to_vec_named(v).expect("msgpack");

    // Accepted at the limit, delivered to both encodings.
    json_out.send(message(nested(64))).await;
    pack_out.send(message(nested(64))).await;
    for c in [&mut json_in, &mut pack_in] {
        for _ in 0..2 {
            let m = c.frame_of("message").await;
            assert_eq!(
                m["data"],
                nested(64),
                "{:?} receives the deepest data",
                c.wire
            );
        }
    }

    // Refused in JSON.
    let json_bad = [
        message(nested(65)).to_string(),
        r#"{"type":"message","data":1e400}"#.to_owned(),
        r#"{"type":"message","data":["\ud800"]}"#.to_owned(),
        r#"{"type":"message","data":{"a":1,"a":2}}"#.to_owned(),
        r#"{"type":"signal","to":"p-1","kind":"offer","payload":{"sdp":"x","sdp":"y"}}"#.to_owned(),
        format!("{} {{}}", message(json!(1))),
    ];
    for bad in &json_bad {
        json_out.send_raw(true, bad.as_bytes().to_vec()).await;
        assert_eq!(refused(&mut json_out).await, "bad-frame", "JSON {bad:.80}");
    }
    // Refused in MessagePack.
    let mut trailing = pack(&message(json!(1)));
    trailing.push(0xc0);
    // `{"type":"message","data":VALUE}` with VALUE as raw bytes.
    let with_data = |value: &[u8]| {
        let mut f = vec![0x82, 0xa4];
        f.extend_from_slice(b"type");
        f.push(0xa7);
        f.extend_from_slice(b"message");
        f.push(0xa4);
        f.extend_from_slice(b"data");
        f.extend_from_slice(value);
        f
    };
    let nan = with_data(&[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]);
    let ext = with_data(&[0xd4, 1, 2]);
    let int_key = with_data(&[0x81, 0x07, 0x00]);
    let repeated_key = with_data(&[0x82, 0xa1, b'k', 0, 0xa1, b'k', 1]);
    let pack_bad = [
        ("deep", pack(&message(nested(65)))),
        ("trailing", trailing),
        ("NaN", nan),
        ("ext", ext),
        ("integer key", int_key),
        ("repeated key", repeated_key),
    ];
    for (name, bad) in pack_bad {
        pack_out.send_raw(false, bad).await;
        assert_eq!(
            refused(&mut pack_out).await,
            "bad-frame",
            "MessagePack {name}"
        );
    }

    // Nothing of that reached a peer: the next message is the marker.
    json_out.send(message(json!("marker"))).await;
    for c in [&mut json_in, &mut pack_in] {
        let m = c.frame_of("message").await;
        assert_eq!(m["data"], "marker", "{:?} saw only the marker", c.wire);
    }
    // And the senders were never closed for it (nine bad frames in a
    // row would have been; the marker broke the JSON sender's streak).
    for c in [&mut json_out, &mut pack_out] {
        c.send(json!({"type": "ping"})).await;
        assert_eq!(c.frame_of("pong").await["type"], "pong", "{:?}", c.wire);
    }
}

/// An oversized token meets the frame cap first (docs/auth.md): a `join`
/// over 64 KiB is `frame-too-large` and 1009; only under a larger frame
/// cap does the token's own 64 KiB limit answer, `token-malformed` and 4001.
#[tokio::test]
async fn an_oversized_token_meets_the_frame_cap_first() {
    let token = "e".repeat(70 * 1024);
    for (cap, code, close) in [
        (None, "frame-too-large", 1009),
        (Some(256 * 1024), "token-malformed", 4001),
    ] {
        let s = start(|c| {
            if let Some(cap) = cap {
                c.limits.max_frame_bytes = cap;
            }
        })
        .await;
        let mut c = Client::connect(&s.ws_url(), Wire::Json).await;
        c.send(json!({"type": "join", "room": "big-token", "token": token}))
            .await;
        let f = c.frame_of("error").await;
        assert_eq!(f["code"], code, "frame cap {cap:?}");
        assert_eq!(c.closed().await, close, "frame cap {cap:?}");
    }
}

/// Unfinished frames count against one node-wide budget: with 100 KB of
/// it, a client holding 60 KB of a frame leaves no room for another's
/// 60 KB message (`node-full`, 1013); once the first frame completes, the
/// budget is free again.
#[tokio::test]
async fn unfinished_frames_share_one_node_wide_budget() {
    let s = start(|c| c.limits.unfinished_frame_bytes = 100_000).await;
    let budget = s.running.gateway.read_budget.clone();
    let held_at_least = |n: usize| {
        let budget = budget.clone();
        async move {
            let deadline = std::time::Instant::now() + roomlet_tests::DEADLINE;
            while budget.held() < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "held {}",
                    budget.held()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let text = json!({"type": "message", "data": "x".repeat(60_000)}).to_string();
    let whole = good(TEXT, text.as_bytes());
    let (head, tail) = whole.split_at(whole.len() - 10);

    let mut holder = Raw::joined(s.addr(), false, "budget", "holder").await;
    holder.send(head).await;
    held_at_least(60_000).await;

    let (mut late, _) = joined(&s, Wire::Json, "budget", "late").await;
    late.send(serde_json::from_str(&text).expect("json")).await;
    assert_eq!(late.frame_of("error").await["code"], "node-full");
    assert_eq!(late.closed().await, 1013);

    // The holder finishes its frame: the budget is free, and the same
    // message from someone else goes through.
    holder.send(tail).await;
    let (mut next, _) = joined(&s, Wire::Json, "budget", "next").await;
    next.send(serde_json::from_str(&text).expect("json")).await;
    loop {
        let (op, f) = tokio::time::timeout(roomlet_tests::DEADLINE, holder.reader.read_frame())
            .await
            .expect("a frame in time")
            .expect("a frame");
        let f = raw::decode(op, &f).expect("a data frame");
        if f["type"] == "message" {
            assert_eq!(f["data"].as_str().map(str::len), Some(60_000));
            break;
        }
    }
    let deadline = std::time::Instant::now() + roomlet_tests::DEADLINE;
    while budget.held() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "unfinished: {}",
            budget.held()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
