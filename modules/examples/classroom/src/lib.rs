//! # classroom: teachers and students
//!
//! An example rooms plugin (see `docs/plugins.md`). A peer's role comes
//! from its token's metadata: `{"role":"teacher"}` makes a teacher; anything
//! else (no metadata, other JSON, another role) makes a student. Tokens are
//! signed by the application's backend, so the role is as trustworthy as the
//! token.
//!
//! - A teacher's room message goes to everyone; a message addressed to one
//!   peer goes to that peer.
//! - A student's messages go to the teachers only: a room message to every
//!   teacher, a message addressed to a teacher to that teacher; a message
//!   addressed to another student is refused (`teachers-only`), and so is
//!   any message while no teacher is present (`no-teacher`).
//! - Raise a hand: a peer sends `{"action":"raise-hand"}` and the teachers
//!   receive `{"event":"hand-raised","peer":ID}` from the room itself. A
//!   muted student may still raise a hand (to ask to be unmuted).
//! - Teacher actions, each `{"action":A,"peer":ID}` naming a student:
//!   `mute` (the student receives `{"event":"muted"}` and its further
//!   messages are refused with `muted`), `unmute` (it receives
//!   `{"event":"unmuted"}`) and `remove` (the student is kicked). A
//!   non-teacher sending one is refused with `not-teacher`; naming a peer
//!   that is not in the room is `unknown-peer`, naming a teacher is
//!   `not-student`, and a teacher action without a `peer` is `bad-action`.
//!
//! State: the roles of the peers present and the muted identities (a muted
//! student who leaves and rejoins stays muted). It lives in memory and
//! travels through `snapshot`/`restore` (hibernation, hot reload); after a
//! trap the host calls `on-create` with `recovered`, and the roles are
//! rebuilt from `membership.peers` metadata — mutes are lost then, which is
//! logged. Durable state would belong in kv. `restore` refuses a
//! `classroom/1` snapshot it cannot decode, and takes another plugin's
//! snapshot as a fresh start from membership (so the classroom can be
//! hot-reloaded over live rooms of another plugin).
//!
//! The policy is [`Class`], plain Rust tested natively; the private
//! `bindings` module ties it to the WIT world `rooms`.

mod bindings {
    #![allow(unsafe_code, missing_docs, clippy::all, clippy::unwrap_used)]
    wit_bindgen::generate!({ world: "rooms", path: "../../../wit" });

    // The export symbols only make sense on wasm; natively the crate is
    // built for its unit tests and for clippy.
    #[cfg(target_arch = "wasm32")]
    use super::Classroom;
    #[cfg(target_arch = "wasm32")]
    export!(Classroom);
}

use bindings::exports::roomlet::signal::room::{
    Action, CreateCause, Guest, Outgoing, RoomSettings,
};
use bindings::roomlet::signal::log::{self, Level};
use bindings::roomlet::signal::membership;
use bindings::roomlet::signal::types::{Peer, Rejection, RoomMessage, Signal, Target};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

/// Version tag of the snapshot format (JSON of [`Class`]).
pub const STATE_VERSION: &str = "classroom/1";

/// What a peer is in the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Speaks to everyone, mutes and removes students.
    Teacher,
    /// Speaks to the teachers only.
    Student,
}

impl Role {
    /// The role named by token metadata `{"role":"teacher"}`; students
    /// otherwise.
    pub fn from_metadata(metadata: &str) -> Role {
        let role = serde_json::from_str::<serde_json::Value>(metadata)
            .ok()
            .and_then(|v| v.get("role")?.as_str().map(str::to_owned));
        match role.as_deref() {
            Some("teacher") => Role::Teacher,
            _ => Role::Student,
        }
    }
}

/// One peer present, as the class sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its role.
    pub role: Role,
    /// Its identity (mutes follow the identity, not the peer id).
    pub identity: String,
}

/// The class's in-memory state and its handlers. Pure: no host imports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Class {
    /// Peer id → member, for the peers present.
    members: BTreeMap<String, Member>,
    /// Identities of muted students.
    muted: BTreeSet<String>,
}

fn reject(code: &str, reason: impl Into<String>) -> Vec<Action> {
    vec![Action::Reject(Rejection {
        code: code.to_owned(),
        reason: reason.into(),
    })]
}

/// A message from the room itself (empty sender) to `to`.
fn event(to: Vec<String>, data: serde_json::Value) -> Action {
    Action::Send((
        to,
        Outgoing {
            sender: String::new(),
            data: data.to_string(),
        },
    ))
}

impl Class {
    /// An empty class.
    pub const fn new() -> Self {
        Class {
            members: BTreeMap::new(),
            muted: BTreeSet::new(),
        }
    }

    /// A class rebuilt from the host's membership, after a trap lost the
    /// in-memory state: roles come back from metadata, mutes do not.
    pub fn recovered(peers: &[Peer]) -> Self {
        let mut class = Class::new();
        for p in peers {
            class.add(p);
        }
        class
    }

    /// The role of peer `id`, when present.
    pub fn role(&self, id: &str) -> Option<Role> {
        self.members.get(id).map(|m| m.role)
    }

    /// Whether the identity `identity` is muted.
    pub fn is_muted(&self, identity: &str) -> bool {
        self.muted.contains(identity)
    }

    fn add(&mut self, peer: &Peer) {
        self.members.insert(
            peer.id.clone(),
            Member {
                role: Role::from_metadata(&peer.metadata),
                identity: peer.identity.clone(),
            },
        );
    }

    fn teachers_except(&self, except: &str) -> Vec<String> {
        self.members
            .iter()
            .filter(|(id, m)| m.role == Role::Teacher && id.as_str() != except)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// `on-join`: everyone may join; the role is recorded.
    pub fn on_join(&mut self, peer: &Peer) -> Vec<Action> {
        self.add(peer);
        Vec::new()
    }

    /// `on-leave`: forgets the peer (a mute stays with its identity).
    pub fn on_leave(&mut self, peer: &Peer) {
        self.members.remove(&peer.id);
    }

    /// `on-message`: actions first, then routing by role.
    pub fn on_message(&mut self, message: RoomMessage) -> Vec<Action> {
        let Some(sender) = self.members.get(&message.sender).cloned() else {
            return reject("unknown-peer", "you are not in this class");
        };
        let parsed = serde_json::from_str::<serde_json::Value>(&message.data).ok();
        let action = parsed
            .as_ref()
            .and_then(|v| v.get("action"))
            .and_then(|a| a.as_str());
        match action {
            Some("raise-hand") => return self.raise_hand(&message.sender),
            Some(a @ ("mute" | "unmute" | "remove")) => {
                let target = parsed
                    .as_ref()
                    .and_then(|v| v.get("peer"))
                    .and_then(|p| p.as_str());
                return self.teacher_action(&sender, a, target);
            }
            _ => {}
        }
        match sender.role {
            Role::Teacher => {
                let out = Outgoing {
                    sender: message.sender.clone(),
                    data: message.data,
                };
                match message.target {
                    Target::Room => vec![Action::Broadcast((out, vec![message.sender]))],
                    Target::Peer(to) => vec![Action::Send((vec![to], out))],
                }
            }
            Role::Student => {
                if self.is_muted(&sender.identity) {
                    return reject("muted", "a teacher has muted you");
                }
                let teachers = self.teachers_except(&message.sender);
                if teachers.is_empty() {
                    return reject("no-teacher", "no teacher is in the class");
                }
                let to = match message.target {
                    Target::Room => teachers,
                    Target::Peer(to) if teachers.contains(&to) => vec![to],
                    Target::Peer(_) => {
                        return reject("teachers-only", "students may write to teachers only");
                    }
                };
                vec![Action::Send((
                    to,
                    Outgoing {
                        sender: message.sender,
                        data: message.data,
                    },
                ))]
            }
        }
    }

    fn raise_hand(&self, sender: &str) -> Vec<Action> {
        let teachers = self.teachers_except(sender);
        if teachers.is_empty() {
            return reject("no-teacher", "no teacher is in the class");
        }
        vec![event(
            teachers,
            serde_json::json!({ "event": "hand-raised", "peer": sender }),
        )]
    }

    fn teacher_action(
        &mut self,
        sender: &Member,
        action: &str,
        target: Option<&str>,
    ) -> Vec<Action> {
        if sender.role != Role::Teacher {
            return reject("not-teacher", format!("only a teacher may {action}"));
        }
        let Some(target) = target else {
            return reject(
                "bad-action",
                format!("{action} needs the student's peer id in \"peer\""),
            );
        };
        let Some(student) = self.members.get(target).cloned() else {
            return reject("unknown-peer", format!("no peer {target:?} in this class"));
        };
        if student.role != Role::Student {
            return reject("not-student", format!("{target} is a teacher"));
        }
        match action {
            "mute" => {
                self.muted.insert(student.identity);
                vec![event(
                    vec![target.to_owned()],
                    serde_json::json!({ "event": "muted" }),
                )]
            }
            "unmute" => {
                self.muted.remove(&student.identity);
                vec![event(
                    vec![target.to_owned()],
                    serde_json::json!({ "event": "unmuted" }),
                )]
            }
            _ => {
                // The host does not call `on-leave` for a kick the module
                // asked for: forget the student here.
                self.members.remove(target);
                vec![Action::Kick((
                    target.to_owned(),
                    "removed by the teacher".to_owned(),
                ))]
            }
        }
    }

    /// `snapshot`: the whole class as JSON.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `restore`: accepts [`STATE_VERSION`] snapshots; on error the state is
    /// left as it was.
    pub fn restore(&mut self, version: &str, state: &[u8]) -> Result<(), String> {
        if version != STATE_VERSION {
            return Err(format!(
                "unsupported snapshot version {version:?} (expected {STATE_VERSION:?})"
            ));
        }
        *self = serde_json::from_slice(state)
            .map_err(|e| format!("undecodable {STATE_VERSION} snapshot: {e}"))?;
        Ok(())
    }
}

/// One instance is one room, and the host serialises calls into it.
static CLASS: Mutex<Class> = Mutex::new(Class::new());

fn class() -> MutexGuard<'static, Class> {
    CLASS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The exported `room` implementation.
struct Classroom;

impl Guest for Classroom {
    fn on_create(cause: CreateCause) -> RoomSettings {
        match cause {
            CreateCause::Fresh => *class() = Class::new(),
            CreateCause::Recovered => {
                let peers = membership::peers();
                log::log(
                    Level::Warn,
                    &format!(
                        "classroom recovered after a trap: roles of {} peers rebuilt from metadata, mutes lost",
                        peers.len()
                    ),
                );
                *class() = Class::recovered(&peers);
            }
        }
        RoomSettings {
            observe_signals: false,
            observe_messages: true,
        }
    }

    fn on_join(peer: Peer) -> Result<Vec<Action>, Rejection> {
        Ok(class().on_join(&peer))
    }

    fn on_leave(peer: Peer) -> Vec<Action> {
        class().on_leave(&peer);
        Vec::new()
    }

    fn on_message(message: RoomMessage) -> Vec<Action> {
        let mut class = class();
        if class.role(&message.sender).is_none() {
            // Not seen join (a snapshot from before it, say): the host's
            // membership is the truth.
            if let Some(p) = membership::peers()
                .into_iter()
                .find(|p| p.id == message.sender)
            {
                class.on_join(&p);
            }
        }
        class.on_message(message)
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
        class().snapshot()
    }

    fn restore(version: String, state: Vec<u8>) -> Result<(), String> {
        if version != STATE_VERSION {
            // Another plugin's snapshot (a hot reload that replaces it):
            // nothing to read, so start from the host's membership, as after
            // a trap. A snapshot of ours that does not decode is refused
            // below, which rolls a reload back.
            log::log(
                Level::Info,
                &format!("classroom replaces a {version:?} room: roles rebuilt from metadata"),
            );
            *class() = Class::recovered(&membership::peers());
            return Ok(());
        }
        class().restore(&version, &state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bindings::roomlet::signal::types::Grants;

    fn peer(id: &str, metadata: &str) -> Peer {
        Peer {
            id: id.into(),
            identity: format!("user-{id}"),
            name: id.into(),
            metadata: metadata.into(),
            grants: Grants::JOIN | Grants::PUBLISH_DATA,
        }
    }

    const TEACHER: &str = r#"{"role":"teacher"}"#;
    const STUDENT: &str = r#"{"role":"student"}"#;

    fn msg(sender: &str, target: Target, data: &str) -> RoomMessage {
        RoomMessage {
            sender: sender.into(),
            target,
            data: data.into(),
        }
    }

    /// A class with teacher `t` and students `s1`, `s2`.
    fn class() -> Class {
        let mut c = Class::new();
        c.on_join(&peer("t", TEACHER));
        c.on_join(&peer("s1", STUDENT));
        c.on_join(&peer("s2", ""));
        c
    }

    fn rejection(actions: &[Action]) -> &str {
        match actions {
            [Action::Reject(r)] => &r.code,
            other => panic!("expected one rejection, got {other:?}"),
        }
    }

    fn sent(actions: &[Action]) -> (Vec<String>, String, serde_json::Value) {
        match actions {
            [Action::Send((to, o))] => (
                to.clone(),
                o.sender.clone(),
                serde_json::from_str(&o.data).expect("json"),
            ),
            other => panic!("expected one send, got {other:?}"),
        }
    }

    #[test]
    fn roles_come_from_metadata() {
        assert_eq!(Role::from_metadata(TEACHER), Role::Teacher);
        assert_eq!(Role::from_metadata(STUDENT), Role::Student);
        assert_eq!(Role::from_metadata(""), Role::Student);
        assert_eq!(Role::from_metadata("not json"), Role::Student);
        assert_eq!(Role::from_metadata(r#"{"role":"admin"}"#), Role::Student);
    }

    #[test]
    fn students_reach_teachers_only_teachers_reach_everyone() {
        let mut c = class();
        let (to, from, data) = sent(&c.on_message(msg("s1", Target::Room, r#"{"q":1}"#)));
        assert_eq!(
            (to, from, data),
            (vec!["t".into()], "s1".into(), serde_json::json!({"q":1}))
        );
        assert_eq!(
            rejection(&c.on_message(msg("s1", Target::Peer("s2".into()), "1"))),
            "teachers-only"
        );
        let (to, _, _) = sent(&c.on_message(msg("s1", Target::Peer("t".into()), "1")));
        assert_eq!(to, vec!["t".to_string()]);
        let out = c.on_message(msg("t", Target::Room, "2"));
        assert!(
            matches!(&out[..], [Action::Broadcast((o, ex))] if o.sender == "t" && ex == &["t"])
        );
    }

    #[test]
    fn no_teacher_no_audience() {
        let mut c = Class::new();
        c.on_join(&peer("s1", STUDENT));
        assert_eq!(
            rejection(&c.on_message(msg("s1", Target::Room, "1"))),
            "no-teacher"
        );
        assert_eq!(
            rejection(&c.on_message(msg("s1", Target::Room, r#"{"action":"raise-hand"}"#))),
            "no-teacher"
        );
    }

    #[test]
    fn raise_hand_reaches_the_teachers() {
        let mut c = class();
        c.on_join(&peer("t2", TEACHER));
        let (mut to, from, data) =
            sent(&c.on_message(msg("s2", Target::Room, r#"{"action":"raise-hand"}"#)));
        to.sort();
        assert_eq!(to, vec!["t".to_string(), "t2".into()]);
        assert_eq!(from, "");
        assert_eq!(data, serde_json::json!({"event":"hand-raised","peer":"s2"}));
    }

    #[test]
    fn mute_unmute_and_remove() {
        let mut c = class();
        let (to, _, data) =
            sent(&c.on_message(msg("t", Target::Room, r#"{"action":"mute","peer":"s1"}"#)));
        assert_eq!(
            (to, data),
            (vec!["s1".into()], serde_json::json!({"event":"muted"}))
        );
        assert!(c.is_muted("user-s1"));
        assert_eq!(
            rejection(&c.on_message(msg("s1", Target::Room, "1"))),
            "muted"
        );
        // A muted student may still ask to speak; others are unaffected.
        sent(&c.on_message(msg("s1", Target::Room, r#"{"action":"raise-hand"}"#)));
        sent(&c.on_message(msg("s2", Target::Room, "1")));
        // Leaving and rejoining does not lift the mute.
        c.on_leave(&peer("s1", STUDENT));
        c.on_join(&peer("s1b", STUDENT).with_identity("user-s1"));
        assert_eq!(
            rejection(&c.on_message(msg("s1b", Target::Room, "1"))),
            "muted"
        );
        let (_, _, data) = sent(&c.on_message(msg(
            "t",
            Target::Room,
            r#"{"action":"unmute","peer":"s1b"}"#,
        )));
        assert_eq!(data, serde_json::json!({"event":"unmuted"}));
        sent(&c.on_message(msg("s1b", Target::Room, "1")));
        let out = c.on_message(msg("t", Target::Room, r#"{"action":"remove","peer":"s2"}"#));
        assert!(matches!(&out[..], [Action::Kick((id, _))] if id == "s2"));
        assert_eq!(c.role("s2"), None, "a kicked student is forgotten");
    }

    #[test]
    fn teacher_actions_are_checked() {
        let mut c = class();
        for action in ["mute", "unmute", "remove"] {
            let data = format!(r#"{{"action":"{action}","peer":"s2"}}"#);
            assert_eq!(
                rejection(&c.on_message(msg("s1", Target::Room, &data))),
                "not-teacher"
            );
        }
        assert!(!c.is_muted("user-s2"));
        let cases = [
            (r#"{"action":"mute"}"#, "bad-action"),
            (r#"{"action":"mute","peer":"zed"}"#, "unknown-peer"),
            (r#"{"action":"remove","peer":"t"}"#, "not-student"),
        ];
        for (data, code) in cases {
            assert_eq!(
                rejection(&c.on_message(msg("t", Target::Room, data))),
                code,
                "{data}"
            );
        }
    }

    #[test]
    fn other_json_is_just_a_message() {
        let mut c = class();
        let (to, _, _) = sent(&c.on_message(msg("s1", Target::Room, r#"{"action":"dance"}"#)));
        assert_eq!(to, vec!["t".to_string()]);
        sent(&c.on_message(msg("s1", Target::Room, r#""a string""#)));
    }

    #[test]
    fn snapshot_carries_roles_and_mutes() {
        let mut c = class();
        c.on_message(msg("t", Target::Room, r#"{"action":"mute","peer":"s1"}"#));
        let snap = c.snapshot();
        let mut fresh = Class::new();
        fresh.restore(STATE_VERSION, &snap).expect("restore");
        assert_eq!(fresh, c);
        assert_eq!(fresh.role("t"), Some(Role::Teacher));
        assert!(fresh.is_muted("user-s1"));
        assert!(fresh.restore("classroom/0", &snap).is_err());
        assert!(fresh.restore(STATE_VERSION, b"garbage").is_err());
        assert_eq!(fresh, c, "a refused restore keeps the state");
    }

    #[test]
    fn recovery_rebuilds_roles_but_not_mutes() {
        let mut c = class();
        c.on_message(msg("t", Target::Room, r#"{"action":"mute","peer":"s1"}"#));
        let peers = [peer("t", TEACHER), peer("s1", STUDENT)];
        let r = Class::recovered(&peers);
        assert_eq!(r.role("t"), Some(Role::Teacher));
        assert_eq!(r.role("s1"), Some(Role::Student));
        assert_eq!(r.role("s2"), None);
        assert!(!r.is_muted("user-s1"));
    }

    trait WithIdentity {
        fn with_identity(self, identity: &str) -> Self;
    }

    impl WithIdentity for Peer {
        fn with_identity(mut self, identity: &str) -> Self {
            self.identity = identity.into();
            self
        }
    }
}
