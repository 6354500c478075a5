//! The room policy as plain Rust: no host imports, only the [`Host`] trait.

/// Version tag of the snapshot format written by [`Room::snapshot`].
pub const STATE_VERSION: &str = "roomlet-rooms/1";
/// kv key of the durable join counter (u64, little-endian).
pub const JOINS_KEY: &str = "stats/joins";
/// Config key: most peers in a room at once.
pub const MAX_PARTICIPANTS_KEY: &str = "max-participants";
/// Config key: how long an empty room lives, in milliseconds.
pub const EMPTY_TIMEOUT_KEY: &str = "empty-timeout-ms";
/// Default for [`MAX_PARTICIPANTS_KEY`].
pub const DEFAULT_MAX_PARTICIPANTS: u64 = 50;
/// Default for [`EMPTY_TIMEOUT_KEY`].
pub const DEFAULT_EMPTY_TIMEOUT_MS: u64 = 30_000;
/// Reason given to `close` when the empty-room timer fires.
pub const EMPTY_TIMEOUT_REASON: &str = "empty-timeout";

/// Log severity used by the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Diagnostic detail.
    Debug,
    /// Something odd that the policy worked around.
    Warn,
}

/// What the policy needs from the host (the WIT imports it uses).
pub trait Host {
    /// `config.get`.
    fn config(&self, key: &str) -> Option<String>;
    /// Ids of `membership.peers`, in join order.
    fn peer_ids(&self) -> Vec<String>;
    /// `kv.get`.
    fn kv_get(&self, key: &str) -> Option<Vec<u8>>;
    /// `kv.set`; the error is a description for the log.
    fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    /// `log.log`.
    fn log(&self, level: Level, message: &str);
}

/// A refusal: machine code and human reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable code, e.g. `room-full`.
    pub code: String,
    /// Human-readable reason.
    pub reason: String,
}

/// Where a room message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every peer but the sender.
    Room,
    /// One peer, by id.
    Peer(String),
}

/// What the policy asks the host to do (a subset of the WIT `action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `data` from `sender` to the listed peers.
    Send {
        /// Addressees.
        to: Vec<String>,
        /// Sender shown to them.
        sender: String,
        /// JSON payload.
        data: String,
    },
    /// Send `data` from `sender` to everyone but `except`.
    Broadcast {
        /// Sender shown to the receivers.
        sender: String,
        /// JSON payload.
        data: String,
        /// Peers left out.
        except: Vec<String>,
    },
    /// Refuse the message being handled.
    Reject(Rejection),
    /// Call `on-timer` after this many milliseconds.
    SetTimer(u64),
    /// Close the room with a reason.
    Close(String),
}

/// Configuration, read from the host on first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `max-participants`.
    pub max_participants: u64,
    /// `empty-timeout-ms`.
    pub empty_timeout_ms: u64,
}

impl Settings {
    /// Reads both keys, falling back to the defaults (with a warning when a
    /// value is present but not a non-negative integer).
    pub fn load(host: &impl Host) -> Self {
        Settings {
            max_participants: config_u64(host, MAX_PARTICIPANTS_KEY, DEFAULT_MAX_PARTICIPANTS),
            empty_timeout_ms: config_u64(host, EMPTY_TIMEOUT_KEY, DEFAULT_EMPTY_TIMEOUT_MS),
        }
    }
}

fn config_u64(host: &impl Host, key: &str, default: u64) -> u64 {
    match host.config(key) {
        None => default,
        Some(text) => text.trim().parse().unwrap_or_else(|_| {
            host.log(
                Level::Warn,
                &format!("config {key} = {text:?} is not a non-negative integer; using {default}"),
            );
            default
        }),
    }
}

/// The room's in-memory state and its handlers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Room {
    joins: u64,
    settings: Option<Settings>,
}

impl Room {
    /// A room that has seen no joins; settings load on first use.
    pub const fn new() -> Self {
        Room {
            joins: 0,
            settings: None,
        }
    }

    /// Joins admitted by this instance (and the ones it was restored from).
    pub fn joins(&self) -> u64 {
        self.joins
    }

    fn settings(&mut self, host: &impl Host) -> Settings {
        *self.settings.get_or_insert_with(|| Settings::load(host))
    }

    /// `on-create`: (re)reads the config. Returns `observe-signals`.
    pub fn on_create(&mut self, host: &impl Host) -> bool {
        self.settings = Some(Settings::load(host));
        false
    }

    /// `on-join`: refuses the peer when the room is full; otherwise counts it.
    pub fn on_join(&mut self, host: &impl Host) -> Result<Vec<Action>, Rejection> {
        let max = self.settings(host).max_participants;
        let present = host.peer_ids().len() as u64;
        if present >= max {
            host.log(
                Level::Debug,
                &format!("join refused: {present} peers present, max {max}"),
            );
            return Err(Rejection {
                code: "room-full".to_string(),
                reason: format!("room is full (max {max} participants)"),
            });
        }
        self.joins = self.joins.saturating_add(1);
        bump_kv_counter(host, JOINS_KEY);
        Ok(Vec::new())
    }

    /// `on-leave`: starts the empty-room timer when nobody is left.
    pub fn on_leave(&mut self, host: &impl Host) -> Vec<Action> {
        if host.peer_ids().is_empty() {
            vec![Action::SetTimer(self.settings(host).empty_timeout_ms)]
        } else {
            Vec::new()
        }
    }

    /// `on-message`: routes a room message.
    pub fn on_message(
        &mut self,
        host: &impl Host,
        sender: String,
        target: Target,
        data: String,
    ) -> Vec<Action> {
        match target {
            Target::Room => vec![Action::Broadcast {
                except: vec![sender.clone()],
                sender,
                data,
            }],
            Target::Peer(to) => {
                if host.peer_ids().contains(&to) {
                    vec![Action::Send {
                        to: vec![to],
                        sender,
                        data,
                    }]
                } else {
                    vec![Action::Reject(Rejection {
                        code: "unknown-peer".to_string(),
                        reason: format!("no peer {to:?} in this room"),
                    })]
                }
            }
        }
    }

    /// `on-timer`: closes the room if it is still empty.
    pub fn on_timer(&mut self, host: &impl Host) -> Vec<Action> {
        if host.peer_ids().is_empty() {
            vec![Action::Close(EMPTY_TIMEOUT_REASON.to_string())]
        } else {
            Vec::new()
        }
    }

    /// `snapshot`: the join counter as 8 little-endian bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.joins.to_le_bytes().to_vec()
    }

    /// `restore`: accepts only [`STATE_VERSION`] snapshots of 8 bytes.
    /// On error the current state is left untouched.
    pub fn restore(&mut self, version: &str, state: &[u8]) -> Result<(), String> {
        if version != STATE_VERSION {
            return Err(format!(
                "unsupported snapshot version {version:?} (expected {STATE_VERSION:?})"
            ));
        }
        let bytes: [u8; 8] = state.try_into().map_err(|_| {
            format!(
                "undecodable {STATE_VERSION} snapshot: expected 8 bytes, got {}",
                state.len()
            )
        })?;
        self.joins = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Adds one to the u64 LE counter at `key`; kv trouble is logged, not fatal.
fn bump_kv_counter(host: &impl Host, key: &str) {
    let current = match host.kv_get(key) {
        None => 0,
        Some(bytes) => match <[u8; 8]>::try_from(bytes.as_slice()) {
            Ok(bytes) => u64::from_le_bytes(bytes),
            Err(_) => {
                host.log(
                    Level::Warn,
                    &format!("kv {key} holds {} bytes, not a u64; resetting", bytes.len()),
                );
                0
            }
        },
    };
    let next = current.saturating_add(1);
    if let Err(e) = host.kv_set(key, &next.to_le_bytes()) {
        host.log(Level::Warn, &format!("kv {key} not updated: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct FakeHost {
        config: BTreeMap<String, String>,
        peers: RefCell<Vec<String>>,
        kv: RefCell<BTreeMap<String, Vec<u8>>>,
        kv_full: bool,
        logs: RefCell<Vec<(Level, String)>>,
    }

    impl FakeHost {
        fn with_config(pairs: &[(&str, &str)]) -> Self {
            FakeHost {
                config: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }
        }
        fn set_peers(&self, ids: &[&str]) {
            *self.peers.borrow_mut() = ids.iter().map(|s| s.to_string()).collect();
        }
        fn kv_joins(&self) -> Option<u64> {
            let kv = self.kv.borrow();
            let bytes = kv.get(JOINS_KEY)?;
            Some(u64::from_le_bytes(bytes.as_slice().try_into().ok()?))
        }
        fn warnings(&self) -> usize {
            self.logs
                .borrow()
                .iter()
                .filter(|(l, _)| *l == Level::Warn)
                .count()
        }
    }

    impl Host for FakeHost {
        fn config(&self, key: &str) -> Option<String> {
            self.config.get(key).cloned()
        }
        fn peer_ids(&self) -> Vec<String> {
            self.peers.borrow().clone()
        }
        fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
            self.kv.borrow().get(key).cloned()
        }
        fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            if self.kv_full {
                return Err("quota-exceeded".to_string());
            }
            self.kv.borrow_mut().insert(key.to_string(), value.to_vec());
            Ok(())
        }
        fn log(&self, level: Level, message: &str) {
            self.logs.borrow_mut().push((level, message.to_string()));
        }
    }

    #[test]
    fn create_reads_config_and_observes_no_signals() {
        let host = FakeHost::with_config(&[("max-participants", "3"), ("empty-timeout-ms", "10")]);
        let mut room = Room::new();
        assert!(!room.on_create(&host));
        assert_eq!(
            room.settings,
            Some(Settings {
                max_participants: 3,
                empty_timeout_ms: 10
            })
        );
    }

    #[test]
    fn defaults_and_bad_config() {
        let host = FakeHost::default();
        assert_eq!(
            Settings::load(&host),
            Settings {
                max_participants: 50,
                empty_timeout_ms: 30_000
            }
        );
        let host =
            FakeHost::with_config(&[("max-participants", "lots"), ("empty-timeout-ms", "-5")]);
        assert_eq!(
            Settings::load(&host),
            Settings {
                max_participants: 50,
                empty_timeout_ms: 30_000
            }
        );
        assert_eq!(host.warnings(), 2);
    }

    #[test]
    fn join_until_full() {
        let host = FakeHost::with_config(&[("max-participants", "2")]);
        let mut room = Room::new();
        room.on_create(&host);
        assert_eq!(room.on_join(&host), Ok(vec![]));
        host.set_peers(&["p1"]);
        assert_eq!(room.on_join(&host), Ok(vec![]));
        host.set_peers(&["p1", "p2"]);
        assert_eq!(
            room.on_join(&host),
            Err(Rejection {
                code: "room-full".to_string(),
                reason: "room is full (max 2 participants)".to_string(),
            })
        );
        assert_eq!(room.joins(), 2);
        assert_eq!(host.kv_joins(), Some(2));
    }

    #[test]
    fn default_limit_is_fifty() {
        let host = FakeHost::default();
        let mut room = Room::new();
        let ids: Vec<String> = (0..49).map(|i| format!("p{i}")).collect();
        *host.peers.borrow_mut() = ids.clone();
        assert!(room.on_join(&host).is_ok());
        host.peers.borrow_mut().push("p49".to_string());
        assert_eq!(
            room.on_join(&host).map_err(|r| r.code),
            Err("room-full".to_string())
        );
    }

    #[test]
    fn zero_max_refuses_everyone() {
        let host = FakeHost::with_config(&[("max-participants", "0")]);
        let mut room = Room::new();
        assert!(room.on_join(&host).is_err());
        assert_eq!(room.joins(), 0);
        assert_eq!(host.kv_joins(), None);
    }

    #[test]
    fn kv_counter_survives_instances_and_tolerates_trouble() {
        let host = FakeHost::default();
        let mut room = Room::new();
        room.on_join(&host).expect("join");
        // A new instance (e.g. after a trap) loses memory but not kv.
        let mut room = Room::new();
        room.on_join(&host).expect("join");
        assert_eq!(room.joins(), 1);
        assert_eq!(host.kv_joins(), Some(2));
        // A garbled value is reset, with a warning.
        host.kv
            .borrow_mut()
            .insert(JOINS_KEY.to_string(), vec![1, 2, 3]);
        room.on_join(&host).expect("join");
        assert_eq!(host.kv_joins(), Some(1));
        assert_eq!(host.warnings(), 1);
        // A refused write does not refuse the join.
        let full = FakeHost {
            kv_full: true,
            ..Default::default()
        };
        assert_eq!(room.on_join(&full), Ok(vec![]));
        assert_eq!(full.warnings(), 1);
    }

    #[test]
    fn room_message_broadcasts_to_others() {
        let host = FakeHost::default();
        host.set_peers(&["a", "b"]);
        let mut room = Room::new();
        assert_eq!(
            room.on_message(&host, "a".into(), Target::Room, "{\"x\":1}".into()),
            vec![Action::Broadcast {
                sender: "a".into(),
                data: "{\"x\":1}".into(),
                except: vec!["a".into()],
            }]
        );
    }

    #[test]
    fn peer_message_to_member_and_stranger() {
        let host = FakeHost::default();
        host.set_peers(&["a", "b"]);
        let mut room = Room::new();
        assert_eq!(
            room.on_message(&host, "a".into(), Target::Peer("b".into()), "1".into()),
            vec![Action::Send {
                to: vec!["b".into()],
                sender: "a".into(),
                data: "1".into(),
            }]
        );
        let out = room.on_message(&host, "a".into(), Target::Peer("zed".into()), "1".into());
        assert!(
            matches!(&out[..], [Action::Reject(r)] if r.code == "unknown-peer"),
            "{out:?}"
        );
    }

    #[test]
    fn test_trap_string_is_just_data() {
        let host = FakeHost::default();
        host.set_peers(&["a"]);
        let mut room = Room::new();
        let data = "\"__roomlet_test_trap__\"".to_string();
        assert_eq!(
            room.on_message(&host, "a".into(), Target::Room, data.clone()),
            vec![Action::Broadcast {
                sender: "a".into(),
                data,
                except: vec!["a".into()],
            }]
        );
    }

    #[test]
    fn last_leave_arms_timer_and_timer_closes_empty_room() {
        let host = FakeHost::with_config(&[("empty-timeout-ms", "1234")]);
        let mut room = Room::new();
        room.on_create(&host);
        host.set_peers(&["b"]);
        assert_eq!(room.on_leave(&host), vec![]);
        host.set_peers(&[]);
        assert_eq!(room.on_leave(&host), vec![Action::SetTimer(1234)]);
        assert_eq!(
            room.on_timer(&host),
            vec![Action::Close("empty-timeout".into())]
        );
    }

    #[test]
    fn timer_does_nothing_when_someone_rejoined() {
        let host = FakeHost::default();
        let mut room = Room::new();
        assert_eq!(room.on_leave(&host), vec![Action::SetTimer(30_000)]);
        host.set_peers(&["c"]);
        assert_eq!(room.on_timer(&host), vec![]);
    }

    #[test]
    fn snapshot_round_trip() {
        let host = FakeHost::default();
        let mut room = Room::new();
        for _ in 0..3 {
            room.on_join(&host).expect("join");
        }
        let snap = room.snapshot();
        let mut fresh = Room::new();
        fresh.restore(STATE_VERSION, &snap).expect("restore");
        assert_eq!(fresh.joins(), 3);
    }

    #[test]
    fn restore_refuses_other_versions_and_garbage() {
        let mut room = Room::new();
        room.restore(STATE_VERSION, &7u64.to_le_bytes())
            .expect("restore");
        let err = room
            .restore("roomlet-rooms/2", &1u64.to_le_bytes())
            .expect_err("version");
        assert!(err.contains("unsupported snapshot version"), "{err}");
        for bad in [&[][..], &[1, 2, 3], &[0; 9]] {
            assert!(room.restore(STATE_VERSION, bad).is_err());
        }
        assert_eq!(room.joins(), 7, "a refused restore keeps the state");
    }
}
