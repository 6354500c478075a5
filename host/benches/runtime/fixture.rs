//! The rooms, peers and native counterparts the benchmarks run against.

use crate::PAYLOAD_BYTES;
use crate::PEERS;
use roomlet::rooms::{Delivery, Inbox, RoomHandle, Rooms, RoomsConfig, outbox};
use roomlet::runtime::bindings::room::{Action, CreateCause, Outgoing};
use roomlet::runtime::bindings::types::{Grants, Peer, Rejection, RoomMessage, Target};
use roomlet::runtime::{RoomInstance, RoomsFunction};
use roomlet_module_rooms::policy;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;
use tokio::runtime::Runtime;

pub(crate) fn peer(id: &str) -> Peer {
    Peer {
        id: id.into(),
        identity: format!("user-{id}"),
        name: id.to_uppercase(),
        metadata: String::new(),
        grants: Grants::JOIN
            | Grants::ROOM_CREATE
            | Grants::PUBLISH
            | Grants::SUBSCRIBE
            | Grants::PUBLISH_DATA,
    }
}

/// A JSON object of exactly [`PAYLOAD_BYTES`] bytes.
pub(crate) fn payload() -> String {
    let frame = r#"{"type":"chat","text":""}"#;
    let text = "x".repeat(PAYLOAD_BYTES - frame.len());
    let data = format!(r#"{{"type":"chat","text":"{text}"}}"#);
    assert_eq!(data.len(), PAYLOAD_BYTES);
    data
}

/// What every benchmark shares: the function, the message, a hibernation
/// snapshot, and the native counterpart's host.
pub(crate) struct Fixture {
    pub(crate) function: Arc<RoomsFunction>,
    pub(crate) room: Arc<str>,
    pub(crate) peers: Arc<Vec<Peer>>,
    pub(crate) message: RoomMessage,
    pub(crate) snapshot_version: String,
    pub(crate) snapshot: Vec<u8>,
    pub(crate) native_host: NativeHost,
}

impl Fixture {
    pub(crate) fn new(rt: &Runtime, function: &Arc<RoomsFunction>) -> Self {
        let peers: Arc<Vec<Peer>> = Arc::new((0..PEERS).map(|i| peer(&format!("p{i}"))).collect());
        let room: Arc<str> = "bench-room".into();
        // A room that saw some joins, hibernated as the actor does it.
        let (snapshot_version, snapshot) = rt.block_on(async {
            let mut i = function
                .instantiate(room.clone(), Arc::default())
                .await
                .expect("instance");
            i.on_create(CreateCause::Fresh).await.expect("on-create");
            for (n, p) in peers.iter().enumerate() {
                let r = i.on_join(p).await.expect("on-join");
                assert!(r.is_ok(), "join refused: {r:?}");
                i.set_peers(Arc::new(peers[..=n].to_vec()));
            }
            let version = i.state_version().await.expect("state-version");
            let state = i.snapshot().await.expect("snapshot");
            (version, state)
        });
        let native_host = NativeHost {
            config: HashMap::new(),
            peers: peers.iter().map(|p| p.id.clone()).collect(),
            kv: RefCell::default(),
        };
        Fixture {
            function: function.clone(),
            room,
            message: RoomMessage {
                sender: peers[0].id.clone(),
                target: Target::Room,
                data: payload(),
            },
            peers,
            snapshot_version,
            snapshot,
            native_host,
        }
    }

    pub(crate) async fn instantiate(&self) -> RoomInstance {
        self.function
            .instantiate(self.room.clone(), self.peers.clone())
            .await
            .expect("instance")
    }

    pub(crate) async fn revive(&self) -> RoomInstance {
        let mut i = self.instantiate().await;
        let r = i
            .restore(&self.snapshot_version, &self.snapshot)
            .await
            .expect("restore call");
        assert!(r.is_ok(), "snapshot refused: {r:?}");
        i
    }

    /// A created room with its 4 peers, as `on-message` sees it.
    pub(crate) async fn message_room(&self) -> RoomInstance {
        let mut i = self.revive().await;
        i.set_peers(self.peers.clone());
        let actions = i.on_message(&self.message).await.expect("on-message");
        assert!(
            matches!(&actions[..], [Action::Broadcast((out, except))]
                if out.sender == self.message.sender && out.data == self.message.data
                    && except == std::slice::from_ref(&self.message.sender)),
            "unexpected actions {actions:?}"
        );
        i
    }

    /// A native room in the same state as [`Fixture::message_room`].
    pub(crate) fn native_room(&self) -> policy::Room {
        let mut room = policy::Room::new();
        room.restore(&self.snapshot_version, &self.snapshot)
            .expect("native restore");
        room.on_create(&self.native_host);
        room
    }
}

/// The policy's imports, in memory.
pub(crate) struct NativeHost {
    pub(crate) config: HashMap<String, String>,
    pub(crate) peers: Vec<String>,
    pub(crate) kv: RefCell<BTreeMap<String, Vec<u8>>>,
}

impl policy::Host for NativeHost {
    fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }
    fn peer_ids(&self) -> Vec<String> {
        self.peers.clone()
    }
    fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.kv.borrow().get(key).cloned()
    }
    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.kv.borrow_mut().insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn log(&self, _level: policy::Level, _message: &str) {}
}

/// The policy alone: the strings it takes by value are copied, as the
/// component receives its own copies.
pub(crate) fn native_policy(
    room: &mut policy::Room,
    host: &NativeHost,
    m: &RoomMessage,
) -> Vec<policy::Action> {
    let target = match &m.target {
        Target::Room => policy::Target::Room,
        Target::Peer(id) => policy::Target::Peer(id.clone()),
    };
    room.on_message(host, m.sender.clone(), target, m.data.clone())
}

/// The policy plus the component's glue (modules/rooms/src/component.rs):
/// WIT message in, WIT actions out, without the canonical ABI.
pub(crate) fn native_glue(
    room: &mut policy::Room,
    host: &NativeHost,
    m: &RoomMessage,
) -> Vec<Action> {
    let m = m.clone();
    let target = match m.target {
        Target::Room => policy::Target::Room,
        Target::Peer(id) => policy::Target::Peer(id),
    };
    room.on_message(host, m.sender, target, m.data)
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
            policy::Action::Reject(r) => Action::Reject(Rejection {
                code: r.code,
                reason: r.reason,
            }),
            policy::Action::SetTimer(ms) => Action::SetTimer(ms),
            policy::Action::Close(reason) => Action::Close(reason),
        })
        .collect()
}

/// A room run by its actor, with one inbox per peer.
pub(crate) struct ActorRoom {
    pub(crate) rooms: Rooms,
    pub(crate) handle: RoomHandle,
    pub(crate) inboxes: Vec<Inbox>,
}

impl ActorRoom {
    pub(crate) async fn new(fx: &Fixture) -> Self {
        let rooms = Rooms::new(
            fx.function.clone(),
            RoomsConfig {
                hibernate_after: None,
                ..RoomsConfig::default()
            },
        );
        let mut handle = None;
        let mut inboxes = Vec::new();
        for p in fx.peers.iter() {
            let (tx, rx) = outbox();
            let (h, _) = rooms
                .join("actor-room", p.clone(), tx, true)
                .await
                .expect("join");
            handle = Some(h);
            inboxes.push(rx);
        }
        let mut room = ActorRoom {
            rooms,
            handle: handle.expect("at least one peer"),
            inboxes,
        };
        // Presence events from the joins.
        for rx in &mut room.inboxes {
            while rx.try_recv().is_some() {}
        }
        room.round_trip(&fx.message).await;
        room
    }

    /// One message in, and the broadcast out at every other peer.
    pub(crate) async fn round_trip(&mut self, m: &RoomMessage) {
        self.handle.message(m.clone()).await;
        for rx in &mut self.inboxes[1..] {
            match rx.recv().await {
                Some(Delivery::Message { data, .. }) => {
                    black_box(data);
                }
                other => panic!("expected the broadcast, got {other:?}"),
            }
        }
    }

    pub(crate) async fn close(self) {
        self.handle.close("bench done").await;
        drop(self.rooms);
    }
}
