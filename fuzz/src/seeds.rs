//! Realistic first inputs for each target: the frames a client sends in
//! both encodings, real tokens, real bus messages. Written into
//! `fuzz/corpus/<target>/seed-<name>` by the ignored test
//! `write_seeds` in `tests/fuzz_corpus.rs` (see FUZZING.md); the replay
//! test checks them too.

use crate::checks::{
    BUS_TYPES, TOKEN_HEADER, TOKEN_KEY, TOKEN_NOW_MS, TOKEN_ROOM, TOKEN_SECRET, Target, sign_token,
};
use roomlet_bus::wire::{self, HomeOp, WireDelivery, WirePeer};
use serde::Serialize;
use serde_json::{Value, json};

/// The seeds of `target`, each with a name for its file.
pub fn seeds(target: Target) -> Vec<(String, Vec<u8>)> {
    match target {
        Target::FrameJson => client_frames()
            .into_iter()
            .map(|(name, frame)| (name.to_owned(), frame.to_string().into_bytes()))
            .collect(),
        Target::FrameMsgpack => client_frames()
            .into_iter()
            .map(|(name, frame)| (name.to_owned(), msgpack(&frame)))
            .collect(),
        Target::FrameRoundtrip => client_frames()
            .into_iter()
            .filter(|(_, frame)| frame["type"] == "signal" || frame["type"] == "message")
            .flat_map(|(name, frame)| {
                [
                    (
                        format!("{name}-json"),
                        prefixed(0, frame.to_string().as_bytes()),
                    ),
                    (format!("{name}-msgpack"), prefixed(1, &msgpack(&frame))),
                    (
                        format!("{name}-json-seq"),
                        prefixed(6, frame.to_string().as_bytes()),
                    ),
                ]
            })
            .collect(),
        Target::AccessToken => tokens(),
        Target::BusWire => bus_messages(),
    }
}

fn msgpack(v: &impl Serialize) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("a seed encodes")
}

fn prefixed(first: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    v.extend_from_slice(rest);
    v
}

/// One of each client frame, as docs/protocol.md shows them.
fn client_frames() -> Vec<(&'static str, Value)> {
    let token = sign_token(TOKEN_HEADER, &claims(600), TOKEN_SECRET);
    vec![
        (
            "join",
            json!({"type": "join", "room": "demo", "token": token}),
        ),
        (
            "resume",
            json!({"type": "resume", "resumeToken": "r-3f9a0c", "lastSeq": 17}),
        ),
        (
            "signal-offer",
            json!({"type": "signal", "to": "p-11c2", "kind": "offer",
                   "payload": {"type": "offer", "sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"}}),
        ),
        (
            "signal-answer",
            json!({"type": "signal", "to": "p-3f9a", "kind": "answer",
                   "payload": {"type": "answer", "sdp": "v=0\r\n"}}),
        ),
        (
            "signal-candidate",
            json!({"type": "signal", "to": "p-11c2", "kind": "candidate",
                   "payload": {"candidate": "candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0",
                               "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": null}}),
        ),
        (
            "message-room",
            json!({"type": "message", "data": {"text": "hi all"}}),
        ),
        (
            "message-peer",
            json!({"type": "message", "to": "p-11c2", "data": [1, -2, 3.5, "ü", true, null, {"n": 1e-7}]}),
        ),
        ("leave", json!({"type": "leave"})),
        ("ping", json!({"type": "ping", "ts": 1_700_000_000_123.5})),
        ("ack", json!({"type": "ack", "seq": 2})),
        (
            "stats",
            json!({"type": "stats", "rttMs": 42.5, "jitterMs": 3.1, "packetLoss": 0.01, "fps": 30,
                   "width": 1280, "height": 720, "freezeCount": 0, "concealedSamples": 1200}),
        ),
        (
            "kick",
            json!({"type": "kick", "peer": "p-11c2", "reason": "spam"}),
        ),
        (
            "room-metadata",
            json!({"type": "room-metadata", "metadata": "{\"topic\":\"standup\"}"}),
        ),
        ("refresh", json!({"type": "refresh", "token": token})),
        ("media-token", json!({"type": "media-token"})),
    ]
}

/// Claims for [`TOKEN_KEY`], valid for `ttl_s` seconds around
/// [`TOKEN_NOW_MS`].
fn claims(ttl_s: i64) -> Vec<u8> {
    let now_s = (TOKEN_NOW_MS / 1000) as i64;
    json!({
        "iss": TOKEN_KEY,
        "sub": "alice",
        "name": "Alice",
        "metadata": "{\"color\":\"red\"}",
        "nbf": now_s - 10,
        "exp": now_s + ttl_s,
        "video": {"room": TOKEN_ROOM, "roomJoin": true, "canPublish": true, "roomAdmin": false},
    })
    .to_string()
    .into_bytes()
}

fn tokens() -> Vec<(String, Vec<u8>)> {
    let valid = claims(600);
    let expired = claims(-600);
    let mut header_and_claims = TOKEN_HEADER.to_vec();
    header_and_claims.push(b'\n');
    header_and_claims.extend_from_slice(&valid);
    vec![
        (
            "valid".into(),
            prefixed(0, sign_token(TOKEN_HEADER, &valid, TOKEN_SECRET).as_bytes()),
        ),
        (
            "expired".into(),
            prefixed(
                0,
                sign_token(TOKEN_HEADER, &expired, TOKEN_SECRET).as_bytes(),
            ),
        ),
        (
            "other-secret".into(),
            prefixed(
                0,
                sign_token(TOKEN_HEADER, &valid, "not-the-secret").as_bytes(),
            ),
        ),
        ("claims".into(), prefixed(1, &valid)),
        ("claims-expired".into(), prefixed(1, &expired)),
        ("header-and-claims".into(), prefixed(2, &header_and_claims)),
    ]
}

fn peer(id: &str) -> WirePeer {
    WirePeer {
        id: id.into(),
        identity: "alice".into(),
        name: "Alice".into(),
        metadata: "{\"color\":\"red\"}".into(),
        grants: 0b0101_1011,
    }
}

/// One message of each bus type, as a node sends them.
fn bus_messages() -> Vec<(String, Vec<u8>)> {
    let to_home = |op| wire::ToHome {
        room: "demo".into(),
        rev: 7,
        gateway: "node-a".into(),
        op,
    };
    let to_gateway = |delivery| wire::ToGateway {
        room: "demo".into(),
        peer: "p-11c2".into(),
        delivery,
    };
    let encoded: Vec<(&str, Vec<u8>)> = vec![
        (
            "ToHome",
            wire::encode(&to_home(HomeOp::Signal {
                sender: "p-3f9a".into(),
                to: "p-11c2".into(),
                kind: 0,
                payload: r#"{"type":"offer","sdp":"v=0\r\n"}"#.into(),
            }))
            .to_vec(),
        ),
        (
            "ToHome",
            wire::encode(&to_home(HomeOp::Message {
                sender: "p-3f9a".into(),
                to: None,
                data: r#"{"text":"hi all"}"#.into(),
            }))
            .to_vec(),
        ),
        (
            "ToHome",
            wire::encode(&to_home(HomeOp::Leave {
                peer: "p-3f9a".into(),
                reason: 1,
            }))
            .to_vec(),
        ),
        (
            "JoinRequest",
            wire::encode(&wire::JoinRequest {
                room: "demo".into(),
                peer: peer("p-3f9a"),
                gateway: "node-a".into(),
                region: "eu".into(),
                may_create: true,
                rejoin: false,
                seen_rev: Some(6),
                moved_from: None,
            })
            .to_vec(),
        ),
        (
            "JoinReply",
            wire::encode(&wire::JoinReply::Joined {
                rev: 7,
                peers: vec![(peer("p-11c2"), "node-b".into())],
                metadata: String::new(),
                observe_signals: false,
                observe_messages: true,
            })
            .to_vec(),
        ),
        (
            "JoinReply",
            wire::encode(&wire::JoinReply::Refused {
                code: "room-full".into(),
                message: "the room is full".into(),
            })
            .to_vec(),
        ),
        (
            "ToGateway",
            wire::encode(&to_gateway(WireDelivery::PeerJoined {
                peer: peer("p-3f9a"),
                at: "node-a".into(),
            }))
            .to_vec(),
        ),
        (
            "ToGateway",
            wire::encode(&to_gateway(WireDelivery::Signal {
                from: "p-3f9a".into(),
                kind: 2,
                payload:
                    r#"{"candidate":"candidate:1 1 udp 1 203.0.113.7 46154 typ host","sdpMid":"0"}"#
                        .into(),
                id: 12,
            }))
            .to_vec(),
        ),
        (
            "ToGateway",
            wire::encode(&to_gateway(WireDelivery::Error {
                code: "unknown-peer".into(),
                message: "no such peer".into(),
            }))
            .to_vec(),
        ),
        (
            "SessionGone",
            wire::encode(&wire::SessionGone {
                token: "r-3f9a0c".into(),
            })
            .to_vec(),
        ),
        (
            "Reap",
            wire::encode(&wire::Reap {
                room: "demo".into(),
                identity: "alice".into(),
                peer: "p-3f9a".into(),
            })
            .to_vec(),
        ),
        (
            "Reaped",
            wire::encode(&wire::Reaped { ended: true }).to_vec(),
        ),
        (
            "Hello",
            wire::encode(&wire::Hello {
                node: "node-a".into(),
            })
            .to_vec(),
        ),
        (
            "WireAuthRequest",
            wire::encode(&wire::WireAuthRequest {
                token: sign_token(TOKEN_HEADER, &claims(600), TOKEN_SECRET),
                room: "demo".into(),
                client_addr: "203.0.113.7:51234".into(),
                region: "eu".into(),
                headers: vec![("user-agent".into(), "Mozilla/5.0".into())],
            })
            .to_vec(),
        ),
        (
            "WireAuthReply",
            wire::encode(&wire::WireAuthReply::Ok {
                identity: "alice".into(),
                name: "Alice".into(),
                metadata: String::new(),
                room: "demo".into(),
                grants: 0b0101_1011,
                expires_at_ms: TOKEN_NOW_MS + 600_000,
            })
            .to_vec(),
        ),
        (
            "WireAuthReply",
            wire::encode(&wire::WireAuthReply::Refused {
                kind: "missing-grant".into(),
                detail: "roomJoin".into(),
            })
            .to_vec(),
        ),
        (
            "HandOff",
            wire::encode(&wire::HandOff {
                version: "rooms-1.0.0".into(),
                state: vec![0x82, 0xa1, b'n', 0x01, 0xa1, b'm', 0xc0],
                observe: Some((true, false)),
            })
            .to_vec(),
        ),
        (
            "ToGateway",
            wire::encode(&to_gateway(WireDelivery::Relocated {
                at: "node-b".into(),
            }))
            .to_vec(),
        ),
        (
            "HandOver",
            wire::encode(&wire::HandOver {
                key: [0x5a; 32],
                to: "node-b".into(),
            })
            .to_vec(),
        ),
        (
            "HandedOver",
            wire::encode(&wire::HandedOver {
                session: Some(wire::SessionImage {
                    key: [0x5a; 32],
                    peer_id: "p-3f9a".into(),
                    room: "demo".into(),
                    msgpack: false,
                    next_seq: 9,
                    trimmed_before: 7,
                    expires_at_ms: TOKEN_NOW_MS + 600_000,
                    gap: false,
                    last_id: 41,
                    unacked: vec![wire::FrameImage {
                        seq: 7,
                        kind: 4,
                        binary: false,
                        bytes: br#"{"type":"message","seq":7,"from":"p-11c2","data":{"n":1}}"#
                            .to_vec(),
                    }],
                }),
            })
            .to_vec(),
        ),
        (
            "HandedOver",
            wire::encode(&wire::HandedOver { session: None }).to_vec(),
        ),
    ];
    encoded
        .into_iter()
        .enumerate()
        .map(|(i, (ty, bytes))| {
            let index = BUS_TYPES
                .iter()
                .position(|t| *t == ty)
                .expect("a bus type in BUS_TYPES");
            (
                format!("{i:02}-{ty}"),
                prefixed(u8::try_from(index).expect("few bus types"), &bytes),
            )
        })
        .collect()
}
