//! Decoding client frames and encoding server frames, in JSON (text) or
//! MessagePack (binary) — the subprotocol picks one per connection.

use super::codes::ErrorCode;
use super::contract;
use super::frames::{FrameId, Inbound, Numbered, ServerFrame, SignalKind, Stats, WireIn};
use std::fmt::Write as _;

/// The JSON subprotocol.
pub const JSON_PROTOCOL: &str = "roomlet.v1.json";
/// The MessagePack subprotocol.
pub const MSGPACK_PROTOCOL: &str = "roomlet.v1.msgpack";

/// One connection's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON text frames.
    Json,
    /// MessagePack binary frames.
    Msgpack,
}

impl Encoding {
    /// The encoding of a subprotocol name.
    pub fn from_protocol(p: &str) -> Option<Self> {
        match p.trim() {
            JSON_PROTOCOL => Some(Encoding::Json),
            MSGPACK_PROTOCOL => Some(Encoding::Msgpack),
            _ => None,
        }
    }

    /// Its subprotocol name.
    pub fn protocol(self) -> &'static str {
        match self {
            Encoding::Json => JSON_PROTOCOL,
            Encoding::Msgpack => MSGPACK_PROTOCOL,
        }
    }
}

/// Why a frame was refused before it reached any logic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// `bad-frame` or `unknown-type`.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

fn bad(message: impl Into<String>) -> DecodeError {
    DecodeError {
        code: ErrorCode::BadFrame,
        message: message.into(),
    }
}

/// Decodes a data frame's bytes. `text` says whether it came as a text frame.
pub fn decode(encoding: Encoding, text: bool, bytes: &[u8]) -> Result<Inbound, DecodeError> {
    match (encoding, text) {
        (_, true) => {
            let text =
                std::str::from_utf8(bytes).map_err(|e| bad(format!("invalid text frame: {e}")))?;
            decode_text(encoding, text)
        }
        (Encoding::Msgpack, false) => {
            contract::check_msgpack(bytes).map_err(bad)?;
            let wire: WireIn<serde_json::Value> = rmp_serde::from_slice(bytes)
                .map_err(|e| bad(format!("invalid MessagePack frame: {e}")))?;
            check(wire, |v| Ok(v.to_string()))
        }
        (Encoding::Json, false) => Err(bad("binary frame on a roomlet.v1.json connection")),
    }
}

/// Decodes a text frame, which the WebSocket layer has already checked is
/// UTF-8. Parsing from `str` spares serde_json checking every string in the
/// frame again, as it must when it parses bytes (BENCHMARKS.md,
/// "Instructions per relayed frame").
pub fn decode_text(encoding: Encoding, text: &str) -> Result<Inbound, DecodeError> {
    match encoding {
        Encoding::Json => {
            let wire: WireIn<&serde_json::value::RawValue> =
                serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON frame: {e}")))?;
            contract::check_json(text, contract::MAX_DEPTH + 1).map_err(bad)?;
            check(wire, |p| Ok(p.get().to_owned()))
        }
        Encoding::Msgpack => Err(bad("text frame on a roomlet.v1.msgpack connection")),
    }
}

/// A frame's `id`: absent is 0; present, it is 1 up to `u32::MAX`.
fn frame_id(id: Option<u64>) -> Result<FrameId, DecodeError> {
    match id {
        None => Ok(0),
        Some(n) => FrameId::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(format!("`id` must be from 1 to {}", FrameId::MAX))),
    }
}

fn need<T>(v: Option<T>, frame: &str, field: &str) -> Result<T, DecodeError> {
    v.ok_or_else(|| bad(format!("`{frame}` needs `{field}`")))
}

fn check<P>(
    w: WireIn<'_, P>,
    text: impl Fn(P) -> Result<String, DecodeError>,
) -> Result<Inbound, DecodeError> {
    let t = need(w.frame_type, "frame", "type")?;
    Ok(match &*t.0 {
        "join" => Inbound::Join {
            room: need(w.room, "join", "room")?,
            token: need(w.token, "join", "token")?,
        },
        "resume" => Inbound::Resume {
            resume_token: need(w.resume_token, "resume", "resumeToken")?,
            last_seq: need(w.last_seq, "resume", "lastSeq")?,
        },
        "signal" => {
            let kind = need(w.kind, "signal", "kind")?;
            let Some(kind) = SignalKind::from_name(&kind.0) else {
                return Err(bad(format!("unknown signal kind {:?}", kind.0)));
            };
            Inbound::Signal {
                to: need(w.to, "signal", "to")?,
                kind,
                payload: text(need(w.payload, "signal", "payload")?)?,
                id: frame_id(w.id)?,
            }
        }
        "message" => Inbound::Message {
            to: w.to,
            data: text(need(w.data, "message", "data")?)?,
            id: frame_id(w.id)?,
        },
        "leave" => Inbound::Leave,
        "ping" => Inbound::Ping { ts: w.ts },
        "ack" => Inbound::Ack {
            seq: need(w.seq, "ack", "seq")?,
        },
        "stats" => Inbound::Stats(Stats {
            rtt_ms: w.rtt_ms,
            jitter_ms: w.jitter_ms,
            packet_loss: w.packet_loss,
            fps: w.fps,
            width: w.width,
            height: w.height,
            freeze_count: w.freeze_count,
            concealed_samples: w.concealed_samples,
        }),
        "kick" => Inbound::Kick {
            peer: need(w.peer, "kick", "peer")?,
            reason: w.reason.unwrap_or_default(),
        },
        "room-metadata" => Inbound::RoomMetadata {
            metadata: need(w.metadata, "room-metadata", "metadata")?,
        },
        "media-token" => Inbound::MediaToken,
        "refresh" => Inbound::Refresh {
            token: need(w.token, "refresh", "token")?,
        },
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(DecodeError {
                code: ErrorCode::UnknownType,
                message: format!("unknown frame type {shown:?}"),
            });
        }
    })
}

/// A frame encoded for the wire: the text or binary WebSocket message's
/// body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// A text frame (JSON).
    Text(String),
    /// A binary frame (MessagePack).
    Binary(Vec<u8>),
}

/// Encodes a server frame, with its sequence number when it has one.
pub fn encode(encoding: Encoding, seq: Option<u64>, frame: &ServerFrame) -> Encoded {
    match encoding {
        Encoding::Json => Encoded::Text(encode_json(seq, frame)),
        Encoding::Msgpack => {
            let numbered = Numbered { seq, frame };
            match rmp_serde::to_vec_named(&numbered) {
                Ok(b) => Encoded::Binary(b),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode frame as MessagePack");
                    let err = ServerFrame::error(ErrorCode::Internal, "cannot encode frame");
                    Encoded::Binary(
                        rmp_serde::to_vec_named(&Numbered { seq, frame: &err }).unwrap_or_default(),
                    )
                }
            }
        }
    }
}

/// JSON encoding. Signals and messages — nearly all traffic — are written
/// directly: their payload is already JSON text, so it is spliced in
/// rather than parsed and re-serialised.
fn encode_json(seq: Option<u64>, frame: &ServerFrame) -> String {
    let (kind, from, signal_kind, body, id): (_, &str, _, &str, _) = match frame {
        ServerFrame::Signal {
            from,
            kind,
            payload,
            id,
        } => ("signal", from, Some(*kind), payload, *id),
        ServerFrame::Message { from, data, id } => ("message", from, None, data, *id),
        // One per burst of a client's numbered frames: written directly
        // too, serde's general path cost a tenth of a relayed frame.
        ServerFrame::Confirmed { id } if seq.is_none() => {
            let mut out = String::with_capacity(r#"{"type":"confirmed","id":}"#.len() + 10);
            out.push_str(r#"{"type":"confirmed","id":"#);
            let _ = write!(out, "{id}}}");
            return out;
        }
        other => {
            return serde_json::to_string(&Numbered { seq, frame: other }).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot encode frame as JSON");
                r#"{"type":"error","code":"internal","message":"cannot encode frame"}"#.into()
            });
        }
    };
    // Peer ids rarely need escaping; when they do, serde does it.
    let escaped;
    // `plain`: written between quotes as it is; otherwise serde's output,
    // quotes included.
    let (from, plain) = if from.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        escaped = serde_json::to_string(from).unwrap_or_else(|_| "\"\"".into());
        (escaped.as_str(), false)
    } else {
        (from, true)
    };
    // Sized exactly: `Message::text` keeps a buffer without spare capacity
    // as it is; one with spare capacity costs another allocation.
    let seq_len = seq.map_or(0, |s| r#","seq":"#.len() + decimal_len(s));
    let id_len = match id {
        0 => 0,
        id => r#","id":"#.len() + decimal_len(id.into()),
    };
    let mut out = String::with_capacity(
        r#"{"type":"","from":"#.len()
            + kind.len()
            + seq_len
            + id_len
            + from.len()
            + if plain { 2 } else { 0 }
            + signal_kind.map_or(r#","data":}"#.len(), |k| {
                r#","kind":"","payload":}"#.len() + k.len()
            })
            + body.len(),
    );
    out.push_str("{\"type\":\"");
    out.push_str(kind);
    out.push('"');
    if let Some(seq) = seq {
        out.push_str(",\"seq\":");
        let _ = write!(out, "{seq}");
    }
    out.push_str(",\"from\":");
    if plain {
        out.push('"');
        out.push_str(from);
        out.push('"');
    } else {
        out.push_str(from);
    }
    if id != 0 {
        out.push_str(",\"id\":");
        let _ = write!(out, "{id}");
    }
    match signal_kind {
        Some(k) => {
            out.push_str(",\"kind\":\"");
            out.push_str(k);
            out.push_str("\",\"payload\":");
        }
        None => out.push_str(",\"data\":"),
    }
    out.push_str(body);
    out.push('}');
    debug_assert_eq!(out.len(), out.capacity());
    out
}

/// Decimal digits of `n`.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_fast_path_matches_serde() {
        // Escaped and plain senders, and seqs of every width: the fast path
        // sizes its buffer exactly (a debug assertion checks it).
        for from in ["p-1\"x", "p-2", "", "tab\there"] {
            for seq in [
                None,
                Some(0),
                Some(9),
                Some(10),
                Some(7_654_321),
                Some(u64::MAX),
            ] {
                let frames = [
                    ServerFrame::Signal {
                        from: from.into(),
                        kind: "offer",
                        payload: r#"{"sdp":"v=0\r\n"}"#.into(),
                        id: 0,
                    },
                    ServerFrame::Message {
                        from: from.into(),
                        data: "[1,2]".into(),
                        id: 0,
                    },
                    ServerFrame::Signal {
                        from: from.into(),
                        kind: "candidate",
                        payload: "{}".into(),
                        id: 9,
                    },
                    ServerFrame::Message {
                        from: from.into(),
                        data: "null".into(),
                        id: u32::MAX,
                    },
                    ServerFrame::Confirmed { id: 7 },
                    ServerFrame::Confirmed { id: u32::MAX },
                ];
                for f in &frames {
                    let fast: serde_json::Value =
                        serde_json::from_str(&encode_json(seq, f)).expect("json");
                    let slow = serde_json::to_value(Numbered { seq, frame: f }).expect("json");
                    assert_eq!(fast, slow);
                }
            }
        }
    }

    #[test]
    fn frame_ids_are_one_to_u32_max_in_both_encodings() {
        for enc in [Encoding::Json, Encoding::Msgpack] {
            let frame = |id: serde_json::Value| {
                let v = serde_json::json!({"type": "message", "data": 1, "id": id});
                match enc {
                    Encoding::Json => decode(enc, true, v.to_string().as_bytes()),
                    Encoding::Msgpack => {
                        decode(enc, false, &rmp_serde::to_vec_named(&v).expect("msgpack"))
                    }
                }
            };
            let id_of = |r: Result<Inbound, DecodeError>| match r {
                Ok(Inbound::Message { id, .. }) => Ok(id),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.code),
            };
            assert_eq!(id_of(frame(serde_json::json!(1))), Ok(1));
            assert_eq!(id_of(frame(serde_json::json!(u32::MAX))), Ok(u32::MAX));
            for bad in [
                serde_json::json!(0),
                serde_json::json!(u64::from(u32::MAX) + 1),
                serde_json::json!(-1),
                serde_json::json!(1.5),
                serde_json::json!("7"),
            ] {
                assert_eq!(id_of(frame(bad.clone())), Err(ErrorCode::BadFrame), "{bad}");
            }
        }
    }

    #[test]
    fn escaped_type_and_kind_decode_as_plain_ones() {
        let json = br#"{"type":"sig\u006eal","to":"p-2","kind":"\u006fffer","payload":{}}"#;
        match decode(Encoding::Json, true, json).expect("json") {
            Inbound::Signal {
                to,
                kind,
                payload,
                id,
            } => {
                assert_eq!(to, "p-2");
                assert_eq!(kind, SignalKind::Offer);
                assert_eq!(payload, "{}");
                assert_eq!(id, 0);
            }
            other => panic!("{other:?}"),
        }
        // A MessagePack `bin` holding UTF-8 reads as text, as before.
        let mp = rmp_serde::to_vec_named(&serde_json::json!({"type": "leave"})).expect("msgpack");
        let mut bin = vec![0x81, 0xa4];
        bin.extend_from_slice(b"type");
        bin.extend_from_slice(&[0xc4, 5]);
        bin.extend_from_slice(b"leave");
        assert_eq!(decode(Encoding::Msgpack, false, &mp), Ok(Inbound::Leave));
        assert_eq!(decode(Encoding::Msgpack, false, &bin), Ok(Inbound::Leave));
    }

    #[test]
    fn decodes_both_encodings_alike() {
        let json = br#"{"type":"signal","to":"p-2","kind":"candidate","payload":{"candidate":"c","sdpMid":"0"}}"#;
        let a = decode(Encoding::Json, true, json).expect("json");
        let v: serde_json::Value = serde_json::from_slice(json).expect("value");
        let mp = rmp_serde::to_vec_named(&v).expect("msgpack");
        let b = decode(Encoding::Msgpack, false, &mp).expect("msgpack");
        match (a, b) {
            (Inbound::Signal { payload: pa, .. }, Inbound::Signal { payload: pb, .. }) => {
                let va: serde_json::Value = serde_json::from_str(&pa).expect("a");
                let vb: serde_json::Value = serde_json::from_str(&pb).expect("b");
                assert_eq!(va, vb);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_raw_value_marker_smuggles_nothing_past_the_contract() {
        // serde_json reads a map whose first key is its raw-value marker as
        // the JSON in the key's string: here 100 levels deep.
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let data = serde_json::json!({"$serde_json::private::RawValue": deep});
        let frame = serde_json::json!({"type": "message", "data": data});
        let msgpack = rmp_serde::to_vec_named(&frame).expect("encodes");
        let e = decode(Encoding::Msgpack, false, &msgpack).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame, "{}", e.message);
        let json = frame.to_string();
        let e = decode(Encoding::Json, true, json.as_bytes()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame, "{}", e.message);
    }

    #[test]
    fn refuses_with_stable_codes() {
        assert_eq!(
            decode(Encoding::Json, true, b"{").unwrap_err().code,
            ErrorCode::BadFrame
        );
        assert_eq!(
            decode(Encoding::Json, true, br#"{"type":"nope"}"#)
                .unwrap_err()
                .code,
            ErrorCode::UnknownType
        );
        assert_eq!(
            decode(Encoding::Json, true, br#"{"type":"join","room":"r"}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadFrame
        );
        assert_eq!(
            decode(Encoding::Json, false, br#"{"type":"leave"}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadFrame
        );
        assert_eq!(
            decode(Encoding::Msgpack, true, b"x").unwrap_err().code,
            ErrorCode::BadFrame
        );
        // The contract covers a whole frame, fields it does not use
        // included, in JSON as in MessagePack.
        for frame in [
            r#"{"type":"leave","x":1e400}"#,
            r#"{"type":"leave","x":"\ud800"}"#,
            r#"{"type":"leave","x":{"k":1,"k":2}}"#,
        ] {
            let e = decode(Encoding::Json, true, frame.as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadFrame, "{frame}");
            let v: serde_json::Value = serde_json::json!({"type": "leave", "x": [[[[1]]]]});
            assert!(decode(Encoding::Json, true, v.to_string().as_bytes()).is_ok());
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100_000))]

        /// Arbitrary bytes never panic the decoder and always get an answer.
        #[test]
        fn json_decoder_answers_any_bytes(text in any::<bool>(), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            match decode(Encoding::Json, text, &bytes) {
                Ok(_) => {}
                Err(e) => prop_assert!(e.code == ErrorCode::BadFrame || e.code == ErrorCode::UnknownType),
            }
        }

        /// The same for MessagePack.
        #[test]
        fn msgpack_decoder_answers_any_bytes(text in any::<bool>(), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            match decode(Encoding::Msgpack, text, &bytes) {
                Ok(_) => {}
                Err(e) => prop_assert!(e.code == ErrorCode::BadFrame || e.code == ErrorCode::UnknownType),
            }
        }
    }
}
