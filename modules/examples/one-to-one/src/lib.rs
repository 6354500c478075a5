//! # one-to-one: a room for 1:1 calls
//!
//! An example rooms plugin (see `docs/plugins.md`):
//!
//! - the first two peers get in; a third is refused with the rejection
//!   code `one-to-one-full` (the client receives an `error` frame with that
//!   code and the reason, then the socket closes with 4009). Peers with the
//!   `hidden` grant (a recorder, a moderator's monitor) do not count;
//! - a room message goes to the other peer, a message addressed to a peer
//!   goes to that peer;
//! - there is no in-memory state, so `snapshot` is empty and `restore`
//!   accepts anything (even another plugin's snapshot, so this plugin can
//!   be hot-reloaded over it on live rooms).
//!
//! The decisions are plain functions ([`admit`], [`route`]) so they are
//! unit-tested natively; the private `bindings` module ties them to the WIT
//! world `rooms`.

mod bindings {
    #![allow(unsafe_code, missing_docs, clippy::all, clippy::unwrap_used)]
    wit_bindgen::generate!({ world: "rooms", path: "../../../wit" });

    // The export symbols only make sense on wasm; natively the crate is
    // built for its unit tests and for clippy.
    #[cfg(target_arch = "wasm32")]
    use super::OneToOne;
    #[cfg(target_arch = "wasm32")]
    export!(OneToOne);
}

use bindings::exports::roomlet::signal::room::{
    Action, CreateCause, Guest, Outgoing, RoomSettings,
};
use bindings::roomlet::signal::membership;
use bindings::roomlet::signal::types::{Grants, Peer, Rejection, RoomMessage, Signal, Target};

/// Most visible peers in the room.
pub const MAX_PEERS: usize = 2;
/// The rejection code a third peer receives.
pub const FULL_CODE: &str = "one-to-one-full";
/// Version tag of the (empty) snapshot.
pub const STATE_VERSION: &str = "one-to-one/1";

/// Whether `peer` has the `hidden` grant.
fn is_hidden(peer: &Peer) -> bool {
    (peer.grants & Grants::HIDDEN).bits() != 0
}

/// Whether `joining` may join a room whose members are `present`.
pub fn admit(present: &[Peer], joining: &Peer) -> Result<(), Rejection> {
    if is_hidden(joining) {
        return Ok(());
    }
    let visible = present.iter().filter(|p| !is_hidden(p)).count();
    if visible >= MAX_PEERS {
        return Err(Rejection {
            code: FULL_CODE.to_owned(),
            reason: format!("this is a one-to-one room and it already has {MAX_PEERS} peers"),
        });
    }
    Ok(())
}

/// Where a message goes: the other peer, or the addressed one.
pub fn route(message: RoomMessage) -> Vec<Action> {
    let out = Outgoing {
        sender: message.sender.clone(),
        data: message.data,
    };
    match message.target {
        Target::Room => vec![Action::Broadcast((out, vec![message.sender]))],
        Target::Peer(to) => vec![Action::Send((vec![to], out))],
    }
}

/// The exported `room` implementation.
struct OneToOne;

impl Guest for OneToOne {
    fn on_create(_cause: CreateCause) -> RoomSettings {
        RoomSettings {
            observe_signals: false,
            observe_messages: true,
        }
    }

    fn on_join(peer: Peer) -> Result<Vec<Action>, Rejection> {
        // `membership.peers` does not list the joining peer yet.
        admit(&membership::peers(), &peer).map(|()| Vec::new())
    }

    fn on_leave(_peer: Peer) -> Vec<Action> {
        Vec::new()
    }

    fn on_message(message: RoomMessage) -> Vec<Action> {
        route(message)
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
        Vec::new()
    }

    fn restore(_version: String, _state: Vec<u8>) -> Result<(), String> {
        // There is no in-memory state, so any snapshot will do, even one written by
        // another plugin: this one can then replace it on live rooms (hot
        // reload) instead of having the reload refused.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, grants: Grants) -> Peer {
        Peer {
            id: id.into(),
            identity: id.into(),
            name: id.into(),
            metadata: String::new(),
            grants,
        }
    }

    #[test]
    fn two_get_in_the_third_is_refused() {
        let a = peer("a", Grants::JOIN);
        let b = peer("b", Grants::JOIN);
        let c = peer("c", Grants::JOIN);
        assert!(admit(&[], &a).is_ok());
        assert!(admit(std::slice::from_ref(&a), &b).is_ok());
        let refused = admit(&[a, b], &c).expect_err("third peer");
        assert_eq!(refused.code, FULL_CODE);
        assert!(!refused.reason.is_empty());
    }

    #[test]
    fn hidden_peers_do_not_count() {
        let a = peer("a", Grants::JOIN);
        let rec = peer("rec", Grants::JOIN | Grants::HIDDEN);
        let b = peer("b", Grants::JOIN);
        assert!(admit(&[a.clone(), rec.clone()], &b).is_ok());
        assert!(admit(&[a, b], &rec).is_ok());
    }

    #[test]
    fn messages_go_to_the_other_peer() {
        let out = route(RoomMessage {
            sender: "a".into(),
            target: Target::Room,
            data: "1".into(),
        });
        assert!(
            matches!(&out[..], [Action::Broadcast((o, except))] if o.sender == "a" && except == &["a"])
        );
        let out = route(RoomMessage {
            sender: "a".into(),
            target: Target::Peer("b".into()),
            data: "2".into(),
        });
        assert!(matches!(&out[..], [Action::Send((to, o))] if to == &["b"] && o.data == "2"));
    }

    #[test]
    fn any_snapshot_is_accepted() {
        assert!(OneToOne::restore(STATE_VERSION.into(), Vec::new()).is_ok());
        assert!(OneToOne::restore("roomlet-rooms/1".into(), vec![7; 8]).is_ok());
    }
}
