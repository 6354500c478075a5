//! What each fuzz target checks (issue 32), in one place: the targets in
//! `fuzz/fuzz_targets/` call [`Target::check`], and so does the stable
//! replay test `tests/fuzz_corpus.rs`, which includes this file with
//! `#[path]` and runs every committed corpus and regression input through
//! it. A check panics when a property fails: libFuzzer saves the input as
//! a crash, the replay test fails.
//!
//! - `frame_json`, `frame_msgpack`: a frame decoder answers any bytes with
//!   a frame or a `bad-frame`/`unknown-type` refusal; what it accepts is
//!   within the decoders' input contract ([`json_breach`],
//!   [`msgpack_breach`]) and decodes alike from the other encoding.
//! - `frame_roundtrip`: whatever `decode` accepts that carries client JSON
//!   (`signal`, `message`), the server frame a room delivers encodes in
//!   both encodings, never as the `internal` error frame, and both
//!   deliver the same value.
//! - `access_token`: `token::verify` on arbitrary token text, and on
//!   tokens correctly signed over arbitrary claims.
//! - `bus_wire`: every bus message type, decoded from arbitrary bytes,
//!   re-encodes and decodes again to the same value.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use roomlet_bus::wire;
use roomlet_module_auth::token::{self, TokenError, Verified};
use roomlet_protocol::codec::{Encoded, Encoding, decode, decode_text, encode};
use roomlet_protocol::{ErrorCode, Inbound, ServerFrame, Stats};
use serde::Serialize;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

/// A fuzz target; its name is its directory under `fuzz/corpus/`,
/// `fuzz/regressions/` and its file under `fuzz/fuzz_targets/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The JSON frame decoder.
    FrameJson,
    /// The MessagePack frame decoder.
    FrameMsgpack,
    /// Decode, then encode the delivered frame in both encodings.
    FrameRoundtrip,
    /// The access-token parser.
    AccessToken,
    /// The bus wire decoder.
    BusWire,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 5] = [
        Target::FrameJson,
        Target::FrameMsgpack,
        Target::FrameRoundtrip,
        Target::AccessToken,
        Target::BusWire,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Target::FrameJson => "frame_json",
            Target::FrameMsgpack => "frame_msgpack",
            Target::FrameRoundtrip => "frame_roundtrip",
            Target::AccessToken => "access_token",
            Target::BusWire => "bus_wire",
        }
    }

    /// Runs its check on one input; panics when a property fails.
    pub fn check(self, data: &[u8]) {
        match self {
            Target::FrameJson => frame_json(data),
            Target::FrameMsgpack => frame_msgpack(data),
            Target::FrameRoundtrip => frame_roundtrip(data),
            Target::AccessToken => access_token(data),
            Target::BusWire => bus_wire(data),
        }
    }
}

// ---------------------------------------------------------------------------
// Frame decoders.

/// The nesting the decoders accept in a `payload` or `data` (the input
/// contract); the frame around it is one level more.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// The JSON decoder, on the bytes of a text frame.
fn frame_json(data: &[u8]) {
    let decoded = decode(Encoding::Json, true, data);
    refused_as_a_decoder_does(&decoded);
    assert_bad_frame(
        decode(Encoding::Json, false, data),
        "a binary frame on JSON",
    );
    assert_bad_frame(
        decode(Encoding::Msgpack, true, data),
        "a text frame on MessagePack",
    );
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            decode_text(Encoding::Json, text),
            decoded,
            "decode_text and decode disagree"
        );
    }
    let Ok(frame) = decoded else { return };
    if let Some(text) = delivered_text(&frame)
        && let Some(breach) = json_breach(text)
    {
        panic!("the JSON decoder accepted data the input contract refuses ({breach}): {frame:?}");
    }
    // The same document in MessagePack is the same frame, when the
    // contract lets it through (both decoders check the whole frame).
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let msgpack = rmp_serde::to_vec_named(&value).expect("a JSON value encodes as MessagePack");
    if msgpack_breach(&msgpack).is_some() {
        return;
    }
    let twin = decode(Encoding::Msgpack, false, &msgpack)
        .unwrap_or_else(|e| panic!("accepted as JSON, refused as MessagePack ({e}): {frame:?}"));
    assert_same_frame(&frame, &twin);
}

/// The MessagePack decoder, on the bytes of a binary frame.
fn frame_msgpack(data: &[u8]) {
    let decoded = decode(Encoding::Msgpack, false, data);
    refused_as_a_decoder_does(&decoded);
    assert_bad_frame(
        decode(Encoding::Msgpack, true, data),
        "a text frame on MessagePack",
    );
    let Ok(frame) = decoded else { return };
    if let Some(breach) = msgpack_breach(data) {
        panic!(
            "the MessagePack decoder accepted a frame the input contract refuses ({breach}): {frame:?}"
        );
    }
    // The same document in JSON is the same frame. A `bin` (which the
    // decoder reads as text) has no JSON twin.
    let Ok(value) = rmp_serde::from_slice::<Value>(data) else {
        return;
    };
    let json = value.to_string();
    let twin = decode(Encoding::Json, true, json.as_bytes())
        .unwrap_or_else(|e| panic!("accepted as MessagePack, refused as JSON ({e}): {json}"));
    assert_same_frame(&frame, &twin);
}

/// The first byte picks the encoding (its low bit) and the sequence
/// number of the frame delivered (the rest); the frame follows.
fn frame_roundtrip(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let encoding = if selector & 1 == 0 {
        Encoding::Json
    } else {
        Encoding::Msgpack
    };
    let seq = match u64::from(selector >> 1) {
        0 => None,
        n => Some(u64::MAX / n),
    };
    let Ok(inbound) = decode(encoding, encoding == Encoding::Json, bytes) else {
        return;
    };
    // What the room delivers, from the addressee's point of view (the
    // client's `to` stands in for the sender's id: ids are the server's,
    // but the encoder must escape any).
    let (delivered, field, text) = match inbound {
        Inbound::Signal {
            to,
            kind,
            payload,
            id,
        } => (
            ServerFrame::Signal {
                from: to.as_str().into(),
                kind: kind.name(),
                payload: payload.as_str().into(),
                id,
            },
            "payload",
            payload,
        ),
        Inbound::Message { to, data, id } => (
            ServerFrame::Message {
                from: to.unwrap_or_default().as_str().into(),
                data: data.as_str().into(),
                id,
            },
            "data",
            data,
        ),
        _ => return,
    };
    let Encoded::Binary(msgpack) = encode(Encoding::Msgpack, seq, &delivered) else {
        panic!("a MessagePack frame encoded as text");
    };
    let msgpack: Value = rmp_serde::from_slice(&msgpack)
        .unwrap_or_else(|e| panic!("the MessagePack encoding does not decode ({e})"));
    delivered_as_sent(&msgpack, &delivered, seq, "MessagePack");
    let Encoded::Text(json) = encode(Encoding::Json, seq, &delivered) else {
        panic!("a JSON frame encoded as binary");
    };
    let json: Value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the JSON encoding does not parse ({e}): {json}"));
    delivered_as_sent(&json, &delivered, seq, "JSON");
    // Both encodings deliver the value the decoded frame's text denotes.
    let sent: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("a decoded {field} is no JSON value ({e}): {text}"));
    assert_eq!(json[field], sent, "the JSON encoding changed the {field}");
    assert_eq!(
        msgpack[field], sent,
        "the MessagePack encoding changed the {field}"
    );
}

/// `out` (a decoded server frame) is `frame` as sent, not the encoder's
/// `internal` error frame.
fn delivered_as_sent(out: &Value, frame: &ServerFrame, seq: Option<u64>, encoding: &str) {
    if out["type"] == "error" {
        panic!("the {encoding} encoder fell back to an error frame: {out}");
    }
    assert_eq!(out["type"], frame.type_name(), "{encoding}: wrong type");
    assert_eq!(
        out.get("seq").and_then(Value::as_u64),
        seq,
        "{encoding}: wrong seq"
    );
    let (from, kind) = match frame {
        ServerFrame::Signal { from, kind, .. } => (from, Some(*kind)),
        ServerFrame::Message { from, .. } => (from, None),
        _ => unreachable!("only signals and messages are delivered here"),
    };
    assert_eq!(
        out["from"].as_str(),
        Some(&**from),
        "{encoding}: wrong from"
    );
    assert_eq!(
        out.get("kind").and_then(Value::as_str),
        kind,
        "{encoding}: wrong kind"
    );
}

fn refused_as_a_decoder_does(decoded: &Result<Inbound, roomlet_protocol::DecodeError>) {
    if let Err(e) = decoded {
        assert!(
            matches!(e.code, ErrorCode::BadFrame | ErrorCode::UnknownType),
            "a decoder refused with {:?}",
            e.code
        );
    }
}

fn assert_bad_frame(decoded: Result<Inbound, roomlet_protocol::DecodeError>, what: &str) {
    match decoded {
        Err(e) if e.code == ErrorCode::BadFrame => {}
        other => panic!("{what} must be a bad-frame, got {other:?}"),
    }
}

/// `a` and `b`, decoded from the same document in the two encodings, are
/// the same frame, floats to within [`ULPS`].
fn assert_same_frame(a: &Inbound, b: &Inbound) {
    let same = match (a, b) {
        (
            Inbound::Signal {
                to,
                kind,
                payload,
                id,
            },
            Inbound::Signal {
                to: to_b,
                kind: kind_b,
                payload: payload_b,
                id: id_b,
            },
        ) => to == to_b && kind == kind_b && id == id_b && same_json_text(payload, payload_b),
        (
            Inbound::Message { to, data, id },
            Inbound::Message {
                to: to_b,
                data: data_b,
                id: id_b,
            },
        ) => to == to_b && id == id_b && same_json_text(data, data_b),
        (Inbound::Ping { ts }, Inbound::Ping { ts: ts_b }) => same_opt_f64(*ts, *ts_b),
        (Inbound::Stats(s), Inbound::Stats(t)) => same_stats(s, t),
        _ => a == b,
    };
    assert!(same, "the two encodings decode differently:\n{a:?}\n{b:?}");
}

fn same_stats(s: &Stats, t: &Stats) -> bool {
    [
        (s.rtt_ms, t.rtt_ms),
        (s.jitter_ms, t.jitter_ms),
        (s.packet_loss, t.packet_loss),
        (s.fps, t.fps),
        (s.width, t.width),
        (s.height, t.height),
        (s.freeze_count, t.freeze_count),
        (s.concealed_samples, t.concealed_samples),
    ]
    .into_iter()
    .all(|(a, b)| same_opt_f64(a, b))
}

fn same_opt_f64(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_f64(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// Whether `a` and `b` are at most [`ULPS`] apart.
fn same_f64(a: f64, b: f64) -> bool {
    a == b
        || (a.is_sign_negative() == b.is_sign_negative()
            && a.to_bits().abs_diff(b.to_bits()) <= ULPS)
}

/// How far apart, in units in the last place, two decodings of one float
/// may be. serde_json (without its `float_roundtrip` feature) parses a
/// float to within a few ulps, not always to the nearest: it rounds the
/// digits, the power of ten and their product or quotient, and once more
/// below 1e-308. Seen by the fuzzer: MessagePack's `1.0000002004240115e-7`,
/// written as JSON and read back, came out 2 ulps higher.
const ULPS: u64 = 8;

fn same_json_text(a: &str, b: &str) -> bool {
    let parse = |t: &str| {
        serde_json::from_str::<Value>(t)
            .unwrap_or_else(|e| panic!("a decoded payload is no JSON value ({e}): {t}"))
    };
    same_value(&parse(a), &parse(b))
}

/// `a` and `b` are the same JSON value, floats to within [`ULPS`]
/// (integers exactly).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || ((x.is_f64() || y.is_f64())
                    && x.as_f64()
                        .zip(y.as_f64())
                        .is_some_and(|(x, y)| same_f64(x, y)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// The JSON text a frame carries to other peers (`payload`, `data`).
fn delivered_text(frame: &Inbound) -> Option<&str> {
    match frame {
        Inbound::Signal { payload, .. } => Some(payload),
        Inbound::Message { data, .. } => Some(data),
        _ => None,
    }
}

/// What in a frame's JSON `payload` or `data` the decoders' input
/// contract refuses: nesting deeper than [`MAX_PAYLOAD_DEPTH`], a number
/// outside f64 (`1e400`), a lone surrogate escape, a key given twice.
/// `None` when it is within.
pub fn json_breach(text: &str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_str(text);
    Strict::new(MAX_PAYLOAD_DEPTH)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .err()
        .map(|e| e.to_string())
}

/// What in a MessagePack frame the input contract refuses: more than one
/// value, nesting deeper than a frame around [`MAX_PAYLOAD_DEPTH`] levels,
/// an ext, NaN or an infinity, a key that is not a string, a key given
/// twice. `None` when it is within. Lenient where the contract does not
/// say: a `bin` key reads as its bytes.
pub fn msgpack_breach(bytes: &[u8]) -> Option<String> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    match Strict::new(MAX_PAYLOAD_DEPTH + 1).deserialize(&mut de) {
        Ok(()) if de.position() as usize == bytes.len() => None,
        Ok(()) => Some(format!(
            "{} bytes after the frame",
            bytes.len() - de.position() as usize
        )),
        Err(e) => Some(e.to_string()),
    }
}

/// Walks one value, refusing what the input contract refuses. serde_json
/// itself refuses `1e400` and lone surrogates when it reads them as
/// values.
#[derive(Clone, Copy)]
struct Strict {
    /// Containers around the value.
    depth: usize,
    /// How many there may be.
    limit: usize,
}

impl Strict {
    fn new(limit: usize) -> Self {
        Strict { depth: 0, limit }
    }

    /// The walker for a container's elements.
    fn enter<E: de::Error>(self) -> Result<Strict, E> {
        let depth = self.depth + 1;
        if depth > self.limit {
            return Err(E::custom(format!("nested {depth} deep")));
        }
        Ok(Strict { depth, ..self })
    }
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value within the input contract")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom(format!("the number {v}")))
        }
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }

    /// rmp-serde hands a MessagePack ext over as a newtype struct.
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(de::Error::custom("a MessagePack ext"))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key_seed(Key)? {
            if !keys.insert(key) {
                return Err(de::Error::custom("a key given twice"));
            }
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// A map key: a string (or bytes, which the decoder reads as one).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Vec<u8>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Key {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Ok(v.as_bytes().to_vec())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
}

// ---------------------------------------------------------------------------
// Access tokens.

/// The API key and secret the `access_token` target signs and verifies
/// with; any `iss` gets this secret.
pub const TOKEN_KEY: &str = "APIfuzz";
/// See [`TOKEN_KEY`].
pub const TOKEN_SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret";
/// The room every token is checked for.
pub const TOKEN_ROOM: &str = "lobby";
/// The time tokens are checked at (Unix ms).
pub const TOKEN_NOW_MS: u64 = 1_700_000_000_000;
const TOKEN_LEEWAY_MS: u64 = 5_000;
/// The header of a structured input without one.
pub const TOKEN_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

/// A JWT signed with `secret` over `header` and `claims` (any bytes) the
/// way `token::verify` checks it: HMAC-SHA256 over the base64url (no
/// padding) header and claims joined by a dot.
pub fn sign_token(header: &[u8], claims: &[u8], secret: &str) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(signed.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}.{signature}")
}

/// The first byte picks the mode: 0, the rest is the token's text; 1, the
/// rest is the claims, signed under [`TOKEN_HEADER`]; 2, the rest is the
/// header and the claims split at the first newline, signed.
fn access_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            if let Ok(v) = verify(&token, TOKEN_SECRET) {
                verified_as_claimed(&token, &v);
            }
        }
        signed => {
            let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) if signed == 2 => (&rest[..at], &rest[at + 1..]),
                _ => (TOKEN_HEADER, rest),
            };
            let token = sign_token(header, claims, TOKEN_SECRET);
            match verify(&token, TOKEN_SECRET) {
                Ok(v) => {
                    verified_as_claimed(&token, &v);
                    assert!(
                        verify(&token, "another-secret").is_err(),
                        "a token verified under two secrets"
                    );
                }
                Err(e @ (TokenError::BadSignature | TokenError::UnknownKey)) => {
                    panic!("a token signed with the key's secret was refused as {e:?}: {token}")
                }
                Err(_) => {}
            }
        }
    }
}

fn verify(token: &str, secret: &str) -> Result<Verified, TokenError> {
    token::verify(token, TOKEN_ROOM, TOKEN_NOW_MS, TOKEN_LEEWAY_MS, |_| {
        Some(secret.to_owned())
    })
}

/// A verified token is for [`TOKEN_ROOM`], grants the join, has not
/// expired, and says what its claims say, read independently.
fn verified_as_claimed(token: &str, v: &Verified) {
    assert_eq!(v.room, TOKEN_ROOM, "room: {token}");
    assert!(v.grants.join, "join grant: {token}");
    assert!(!v.identity.is_empty(), "an empty identity: {token}");
    assert!(
        TOKEN_NOW_MS <= v.expires_at_ms.saturating_add(TOKEN_LEEWAY_MS),
        "an expired token verified: {token}"
    );
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .unwrap_or_else(|| panic!("a verified token's claims are no base64url: {token}"));
    // serde skips the claims `verify` does not read without checking them
    // (invalid UTF-8, a lone surrogate escape, `1e400` pass there); a
    // serde_json::Value refuses them, and then there is nothing to compare.
    let Ok(claims) = serde_json::from_str::<Value>(&String::from_utf8_lossy(&claims)) else {
        return;
    };
    assert_eq!(claims["iss"].as_str(), Some(v.key.as_str()), "key: {token}");
    assert_eq!(
        claims["sub"].as_str(),
        Some(v.identity.as_str()),
        "identity: {token}"
    );
    assert_eq!(
        claims["video"]["room"].as_str(),
        Some(TOKEN_ROOM),
        "room: {token}"
    );
    assert_eq!(claims["video"]["roomJoin"], true, "roomJoin: {token}");
    assert_eq!(
        v.name,
        claims["name"].as_str().unwrap_or_default(),
        "name: {token}"
    );
}

// ---------------------------------------------------------------------------
// The bus.

/// The bus message types, indexed by a `bus_wire` input's first byte.
pub const BUS_TYPES: [&str; 13] = [
    "ToHome",
    "JoinRequest",
    "JoinReply",
    "ToGateway",
    "SessionGone",
    "Reap",
    "Reaped",
    "Hello",
    "WireAuthRequest",
    "WireAuthReply",
    "HandOff",
    "HandOver",
    "HandedOver",
];

/// The first byte picks the message type ([`BUS_TYPES`], modulo its
/// length); the rest is the message.
fn bus_wire(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match usize::from(kind) % BUS_TYPES.len() {
        0 => {
            round_trip::<wire::ToHome>(bytes);
        }
        1 => {
            round_trip::<wire::JoinRequest>(bytes);
        }
        2 => {
            round_trip::<wire::JoinReply>(bytes);
        }
        3 => {
            if let Some(to) = round_trip::<wire::ToGateway>(bytes) {
                // A delivery as the gateway hands it on, and back: after
                // one trip (which normalises codes) the next changes
                // nothing.
                let Some(once) = to.delivery.into_delivery() else {
                    return;
                };
                let once = wire::WireDelivery::from_delivery(&once, |_| "gateway".into());
                let once_text = format!("{once:?}");
                let twice = once
                    .into_delivery()
                    .map(|d| wire::WireDelivery::from_delivery(&d, |_| "gateway".into()));
                assert_eq!(
                    Some(once_text),
                    twice.map(|d| format!("{d:?}")),
                    "a delivery changed on its second trip"
                );
            }
        }
        4 => {
            round_trip::<wire::SessionGone>(bytes);
        }
        5 => {
            round_trip::<wire::Reap>(bytes);
        }
        6 => {
            round_trip::<wire::Reaped>(bytes);
        }
        7 => {
            round_trip::<wire::Hello>(bytes);
        }
        8 => {
            round_trip::<wire::WireAuthRequest>(bytes);
        }
        9 => {
            if let Some(reply) = round_trip::<wire::WireAuthReply>(bytes) {
                let Some(once) = reply.into_result() else {
                    return;
                };
                let once = wire::WireAuthReply::from_result(&once);
                let once_text = format!("{once:?}");
                let twice = once
                    .into_result()
                    .map(|r| format!("{:?}", wire::WireAuthReply::from_result(&r)));
                assert_eq!(
                    Some(once_text),
                    twice,
                    "an auth reply changed on its second trip"
                );
            }
        }
        10 => {
            round_trip::<wire::HandOff>(bytes);
        }
        11 => {
            round_trip::<wire::HandOver>(bytes);
        }
        _ => {
            round_trip::<wire::HandedOver>(bytes);
        }
    }
}

/// Decodes `bytes` as a `T` the way the bus does; when it decodes, its
/// encoding decodes again to the same value and encodes to the same
/// bytes.
fn round_trip<T: Serialize + DeserializeOwned + fmt::Debug>(bytes: &[u8]) -> Option<T> {
    let v: T = wire::decode(malformed(), "fuzz", bytes)?;
    let encoded = wire::encode(&v);
    let again: T = wire::decode(malformed(), "fuzz", &encoded)
        .unwrap_or_else(|| panic!("re-encoded, it does not decode: {v:?}"));
    assert_eq!(
        format!("{v:?}"),
        format!("{again:?}"),
        "changed by a round trip"
    );
    assert_eq!(
        wire::encode(&again),
        encoded,
        "encodes differently after a round trip: {v:?}"
    );
    Some(again)
}

/// The counter `wire::decode` counts malformed messages in.
fn malformed() -> &'static roomlet_telemetry::IntCounterVec {
    static COUNTER: OnceLock<roomlet_telemetry::IntCounterVec> = OnceLock::new();
    COUNTER.get_or_init(|| {
        roomlet_telemetry::Registry::unserved().counter_vec(
            "fuzz_bus_malformed_total",
            "malformed bus messages",
            &["subject"],
        )
    })
}
