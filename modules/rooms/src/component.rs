//! Glue between the WIT world `rooms` and [`crate::policy`].

mod bindings {
    #![allow(unsafe_code, missing_docs, clippy::all, clippy::unwrap_used)]
    wit_bindgen::generate!({ world: "rooms", path: "../../wit" });

    // The export symbols (`ns:pkg/iface@ver#func`) are only valid on wasm;
    // natively the crate is built for linting and unit tests.
    #[cfg(target_arch = "wasm32")]
    use super::Component;
    #[cfg(target_arch = "wasm32")]
    export!(Component);
}

use std::sync::{Mutex, MutexGuard};

use bindings::exports::roomlet::signal::room::{
    Action, CreateCause, Guest, Outgoing, RoomSettings,
};
use bindings::roomlet::signal::log::{self, Level};
use bindings::roomlet::signal::types::{Peer, Rejection, RoomMessage, Signal, Target};
use bindings::roomlet::signal::{config, kv, membership};

use crate::policy::{self, Host, Room, STATE_VERSION};

/// One instance is one room, and the host serialises calls into it.
static ROOM: Mutex<Room> = Mutex::new(Room::new());

fn room() -> MutexGuard<'static, Room> {
    // Never poisoned on wasm (panic = abort), but never trap on it anyway.
    ROOM.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The host imports behind [`policy::Host`].
struct Imports;

impl Host for Imports {
    fn config(&self, key: &str) -> Option<String> {
        config::get(key)
    }

    fn peer_ids(&self) -> Vec<String> {
        membership::peers().into_iter().map(|p| p.id).collect()
    }

    fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        kv::get(key)
    }

    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        kv::set(key, value).map_err(|e| match e {
            kv::KvError::TooLarge => "too-large".to_string(),
            kv::KvError::QuotaExceeded => "quota-exceeded".to_string(),
        })
    }

    fn log(&self, level: policy::Level, message: &str) {
        let level = match level {
            policy::Level::Debug => Level::Debug,
            policy::Level::Warn => Level::Warn,
        };
        log::log(level, message);
    }
}

fn rejection(r: policy::Rejection) -> Rejection {
    Rejection {
        code: r.code,
        reason: r.reason,
    }
}

fn actions(actions: Vec<policy::Action>) -> Vec<Action> {
    actions
        .into_iter()
        .map(|a| match a {
            policy::Action::Send { to, sender, data } => {
                Action::Send((to, Outgoing { sender, data }))
            }
            policy::Action::Broadcast {
                sender,
                data,
                except,
            } => Action::Broadcast((Outgoing { sender, data }, except)),
            policy::Action::Reject(r) => Action::Reject(rejection(r)),
            policy::Action::SetTimer(ms) => Action::SetTimer(ms),
            policy::Action::Close(reason) => Action::Close(reason),
        })
        .collect()
}

/// The exported `room` implementation.
struct Component;

impl Guest for Component {
    fn on_create(_cause: CreateCause) -> RoomSettings {
        RoomSettings {
            observe_signals: room().on_create(&Imports),
            // `on-message` routes as the host does without it.
            observe_messages: false,
        }
    }

    fn on_join(_peer: Peer) -> Result<Vec<Action>, Rejection> {
        room().on_join(&Imports).map(actions).map_err(rejection)
    }

    fn on_leave(_peer: Peer) -> Vec<Action> {
        actions(room().on_leave(&Imports))
    }

    fn on_message(message: RoomMessage) -> Vec<Action> {
        let target = match message.target {
            Target::Room => policy::Target::Room,
            Target::Peer(id) => policy::Target::Peer(id),
        };
        actions(room().on_message(&Imports, message.sender, target, message.data))
    }

    fn on_signal(_signal: Signal) -> Vec<Action> {
        Vec::new()
    }

    fn on_timer() -> Vec<Action> {
        actions(room().on_timer(&Imports))
    }

    fn state_version() -> String {
        STATE_VERSION.to_string()
    }

    fn snapshot() -> Vec<u8> {
        room().snapshot()
    }

    fn restore(version: String, state: Vec<u8>) -> Result<(), String> {
        room().restore(&version, &state)
    }
}
