//! # chat-history: replay the last messages to whoever joins
//!
//! An example rooms plugin (see `docs/plugins.md`) whose state is durable:
//!
//! - room messages go to every other peer and are kept in the room's kv,
//!   the last `history-size` of them (config, default 20, at most
//!   [`MAX_HISTORY`]); messages addressed to one peer are delivered but
//!   not kept;
//! - a joining peer receives, from the room itself, one message
//!   `{"history":[ENTRY, ...]}`, oldest first (an empty list in a new room),
//!   right after its `joined` frame. An entry is
//!   `{"from":PEER_ID,"identity":I,"name":N,"data":DATA,"at":UNIX_MS}`.
//!
//! Nothing is kept in memory: kv is committed when each call returns and
//! lives in the node's data directory, so the history survives hibernation,
//! hot reloads, traps and server restarts. Each entry is its own key,
//! `msg/<20-digit sequence>`, so keys sort in arrival order and one entry
//! never has to fit another's size limit.

mod bindings {
    #![allow(unsafe_code, missing_docs, clippy::all, clippy::unwrap_used)]
    wit_bindgen::generate!({ world: "rooms", path: "../../../wit" });

    // The export symbols only make sense on wasm; natively the crate is
    // built for its unit tests and for clippy.
    #[cfg(target_arch = "wasm32")]
    use super::ChatHistory;
    #[cfg(target_arch = "wasm32")]
    export!(ChatHistory);
}

use bindings::exports::roomlet::signal::room::{
    Action, CreateCause, Guest, Outgoing, RoomSettings,
};
use bindings::roomlet::signal::log::{self, Level};
use bindings::roomlet::signal::types::{Peer, Rejection, RoomMessage, Signal, Target};
use bindings::roomlet::signal::{clock, config, kv, membership};
use serde_json::{Value, json};

/// Config key: how many messages to keep.
pub const HISTORY_SIZE_KEY: &str = "history-size";
/// Default for [`HISTORY_SIZE_KEY`].
pub const DEFAULT_HISTORY_SIZE: usize = 20;
/// Upper bound for [`HISTORY_SIZE_KEY`]: the host allows 1024 keys per room.
pub const MAX_HISTORY: usize = 1000;
/// Prefix of the history keys in kv.
pub const PREFIX: &str = "msg/";
/// Version tag of the (empty) snapshot.
pub const STATE_VERSION: &str = "chat-history/1";

/// The kv key of entry number `seq`: fixed width, so byte order is
/// arrival order.
pub fn key(seq: u64) -> String {
    format!("{PREFIX}{seq:020}")
}

/// The sequence number after the newest of `keys` (sorted), or 0.
pub fn next_seq(keys: &[String]) -> u64 {
    keys.last()
        .and_then(|k| k.strip_prefix(PREFIX)?.parse::<u64>().ok())
        .map_or(0, |n| n.saturating_add(1))
}

/// The oldest keys to delete so that at most `size` remain.
pub fn excess(keys: &[String], size: usize) -> &[String] {
    &keys[..keys.len().saturating_sub(size)]
}

/// Parses the `history-size` value (absent: the default; bad: `None`).
pub fn history_size(value: Option<&str>) -> Option<usize> {
    match value {
        None => Some(DEFAULT_HISTORY_SIZE),
        Some(v) => v.trim().parse::<usize>().ok().map(|n| n.min(MAX_HISTORY)),
    }
}

/// One history entry.
pub fn entry(sender: &str, who: Option<&Peer>, data: &str, at_ms: u64) -> Value {
    // The host hands modules valid JSON; keep anything else as a string.
    let data = serde_json::from_str::<Value>(data).unwrap_or_else(|_| Value::from(data));
    json!({
        "from": sender,
        "identity": who.map(|p| p.identity.as_str()).unwrap_or_default(),
        "name": who.map(|p| p.name.as_str()).unwrap_or_default(),
        "data": data,
        "at": at_ms,
    })
}

/// The message a joining peer receives.
pub fn history_message(entries: Vec<Value>) -> String {
    json!({ "history": entries }).to_string()
}

fn configured_size() -> usize {
    let value = config::get(HISTORY_SIZE_KEY);
    history_size(value.as_deref()).unwrap_or_else(|| {
        log::log(
            Level::Warn,
            &format!(
                "config {HISTORY_SIZE_KEY} = {value:?} is not a non-negative integer; using {DEFAULT_HISTORY_SIZE}"
            ),
        );
        DEFAULT_HISTORY_SIZE
    })
}

/// Appends one entry and trims the oldest beyond the configured size.
/// kv trouble is logged, never a trap: the message is still delivered.
fn remember(message: &RoomMessage) {
    let size = configured_size();
    let mut keys = kv::keys(PREFIX);
    if size > 0 {
        let peers = membership::peers();
        let who = peers.iter().find(|p| p.id == message.sender);
        let value = entry(&message.sender, who, &message.data, clock::now_ms());
        let k = key(next_seq(&keys));
        match kv::set(&k, value.to_string().as_bytes()) {
            Ok(()) => keys.push(k),
            Err(e) => log::log(Level::Warn, &format!("message not kept in history: {e:?}")),
        }
    }
    for old in excess(&keys, size) {
        kv::delete(old);
    }
}

/// Every kept entry, oldest first.
fn recall() -> Vec<Value> {
    kv::keys(PREFIX)
        .iter()
        .filter_map(|k| kv::get(k))
        .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .collect()
}

/// The exported `room` implementation.
struct ChatHistory;

impl Guest for ChatHistory {
    fn on_create(_cause: CreateCause) -> RoomSettings {
        RoomSettings {
            observe_signals: false,
            observe_messages: true,
        }
    }

    fn on_join(peer: Peer) -> Result<Vec<Action>, Rejection> {
        // Run after the peer has joined, so it arrives after `joined`.
        Ok(vec![Action::Send((
            vec![peer.id],
            Outgoing {
                sender: String::new(),
                data: history_message(recall()),
            },
        ))])
    }

    fn on_leave(_peer: Peer) -> Vec<Action> {
        Vec::new()
    }

    fn on_message(message: RoomMessage) -> Vec<Action> {
        let out = Outgoing {
            sender: message.sender.clone(),
            data: message.data.clone(),
        };
        match &message.target {
            Target::Room => {
                remember(&message);
                vec![Action::Broadcast((out, vec![message.sender]))]
            }
            Target::Peer(to) => vec![Action::Send((vec![to.clone()], out))],
        }
    }

    fn on_signal(_signal: Signal) -> Vec<Action> {
        Vec::new()
    }

    fn on_timer() -> Vec<Action> {
        Vec::new()
    }

    fn state_version() -> String {
        STATE_VERSION.to_owned()
    }

    fn snapshot() -> Vec<u8> {
        // Everything is in kv already.
        Vec::new()
    }

    fn restore(_version: String, _state: Vec<u8>) -> Result<(), String> {
        // Everything is in kv, so any snapshot will do, even one written by
        // another plugin: this one can then replace it on live rooms (hot
        // reload) instead of having the reload refused.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_arrival_order() {
        let mut keys: Vec<String> = [10, 9, 100, 0].iter().map(|n| key(*n)).collect();
        keys.sort();
        assert_eq!(keys, vec![key(0), key(9), key(10), key(100)]);
        assert_eq!(next_seq(&keys), 101);
        assert_eq!(next_seq(&[]), 0);
    }

    #[test]
    fn trimming_keeps_the_newest() {
        let keys: Vec<String> = (0..5).map(key).collect();
        assert_eq!(excess(&keys, 3), &keys[..2]);
        assert!(excess(&keys, 5).is_empty());
        assert!(excess(&keys, 50).is_empty());
        assert_eq!(excess(&keys, 0), &keys[..]);
    }

    #[test]
    fn history_size_config() {
        assert_eq!(history_size(None), Some(20));
        assert_eq!(history_size(Some(" 5 ")), Some(5));
        assert_eq!(history_size(Some("0")), Some(0));
        assert_eq!(history_size(Some("99999")), Some(MAX_HISTORY));
        assert_eq!(history_size(Some("lots")), None);
        assert_eq!(history_size(Some("-1")), None);
    }

    #[test]
    fn entries_embed_the_data_as_json() {
        let e = entry("p-1", None, r#"{"text":"hi"}"#, 7);
        assert_eq!(
            e,
            json!({"from":"p-1","identity":"","name":"","data":{"text":"hi"},"at":7})
        );
        assert_eq!(entry("p-1", None, "not json", 7)["data"], json!("not json"));
        assert_eq!(
            history_message(vec![e.clone()]),
            json!({ "history": [e] }).to_string()
        );
    }
}
