//! [`KvStore`]: redb on disk (or in memory for tests and benchmarks).

use redb::{ReadableDatabase, TableDefinition};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// (room, key) → value.
const TABLE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("room_kv");

/// Errors of the store itself (disk, corruption), never of a module's input.
#[derive(Debug, thiserror::Error)]
pub enum KvStoreError {
    /// redb failed.
    #[error("key-value store: {0}")]
    Store(#[from] redb::Error),
    /// The store was closed (the node is shutting down).
    #[error("key-value store is closed")]
    Closed,
}

fn store_err(e: impl Into<redb::Error>) -> KvStoreError {
    KvStoreError::Store(e.into())
}

/// Bounds on what one room may store.
#[derive(Debug, Clone, Copy)]
pub struct KvLimits {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most keys one room may hold.
    pub max_keys: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 256,
            max_value_bytes: 64 * 1024,
            max_keys: 1024,
        }
    }
}

/// A second place committed writes go before a call's commit counts as
/// done: JetStream when rooms can move between nodes. Called from a
/// blocking thread, never from an async worker.
pub trait KvReplica: Send + Sync {
    /// Stores one call's writes (`None` deletes) for `room`.
    fn commit(&self, room: &str, writes: &[(&str, Option<&[u8]>)]) -> Result<(), String>;
}

/// Keys with their committed values (`None`: deleted).
type Current<'k> = Vec<(&'k str, Option<Vec<u8>>)>;

/// Where commits are copied, and the count of the keys it did not take at
/// once (`roomlet_kv_unreplicated_keys_total`, by result).
#[derive(Clone)]
struct Replica {
    sink: std::sync::Arc<dyn KvReplica>,
    keys: roomlet_telemetry::IntCounterVec,
}

impl Replica {
    fn count(&self, result: &str, n: usize) {
        self.keys.with_label_values(&[result]).inc_by(n as u64);
    }
}

/// The node's room key-value store.
pub struct KvStore {
    replica: parking_lot::RwLock<Option<Replica>>,
    /// Keys whose last commit did not reach the replica (NATS was away),
    /// by room. The room's next commit or [`KvStore::replay`] sends their
    /// current values, so the replica catches up instead of keeping a
    /// stale value until the key is next written.
    unreplicated: parking_lot::Mutex<HashMap<String, BTreeSet<String>>>,
    /// `None` once closed, so a node that stops releases the file (and its
    /// lock) even while stray tasks still hold the store.
    db: parking_lot::RwLock<Option<redb::Database>>,
    limits: KvLimits,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("limits", &self.limits)
            .finish()
    }
}

impl KvStore {
    /// Opens (or creates) the store in the file `path`.
    pub fn open(path: &Path, limits: KvLimits) -> Result<Self, KvStoreError> {
        let db = redb::Database::create(path).map_err(store_err)?;
        Self::init(db, limits)
    }

    /// A store that lives in memory only: for tests and benchmarks.
    pub fn in_memory(limits: KvLimits) -> Result<Self, KvStoreError> {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(store_err)?;
        Self::init(db, limits)
    }

    fn init(db: redb::Database, limits: KvLimits) -> Result<Self, KvStoreError> {
        let txn = db.begin_write().map_err(store_err)?;
        txn.open_table(TABLE).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        Ok(Self {
            replica: parking_lot::RwLock::new(None),
            unreplicated: parking_lot::Mutex::default(),
            db: parking_lot::RwLock::new(Some(db)),
            limits,
        })
    }

    /// Sends every later commit to `replica` too, counting in `keys` (by
    /// result: deferred, replayed, dropped) the keys it did not take at once.
    pub fn set_replica(
        &self,
        replica: std::sync::Arc<dyn KvReplica>,
        keys: roomlet_telemetry::IntCounterVec,
    ) {
        *self.replica.write() = Some(Replica {
            sink: replica,
            keys,
        });
    }

    /// Replaces everything `room` holds with `entries` (a room arriving
    /// from another node), without sending it to the replica.
    pub fn replace_room(
        &self,
        room: &str,
        entries: &[(String, Vec<u8>)],
    ) -> Result<(), KvStoreError> {
        self.with_db(|db| {
            let old = Self::scan(db, room, "")?;
            let deletes = old
                .iter()
                .filter(|k| !entries.iter().any(|(e, _)| e == *k))
                .map(|k| (k.as_str(), None));
            let puts = entries
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_slice())));
            Self::write(db, room, deletes.chain(puts))
        })
    }

    /// Closes the database file; every later call fails with `Closed`.
    pub fn close(&self) {
        self.db.write().take();
    }

    fn with_db<R>(
        &self,
        f: impl FnOnce(&redb::Database) -> Result<R, KvStoreError>,
    ) -> Result<R, KvStoreError> {
        match self.db.read().as_ref() {
            Some(db) => f(db),
            None => Err(KvStoreError::Closed),
        }
    }

    /// The limits every room's writes are checked against.
    pub fn limits(&self) -> KvLimits {
        self.limits
    }

    /// The committed value of `key` in `room`.
    pub fn get(&self, room: &str, key: &str) -> Result<Option<Vec<u8>>, KvStoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(store_err)?;
            let table = txn.open_table(TABLE).map_err(store_err)?;
            Ok(table
                .get((room, key))
                .map_err(store_err)?
                .map(|v| v.value().to_vec()))
        })
    }

    /// Committed keys of `room` starting with `prefix`, in byte order.
    pub fn keys(&self, room: &str, prefix: &str) -> Result<Vec<String>, KvStoreError> {
        self.with_db(|db| Self::scan(db, room, prefix))
    }

    fn scan(db: &redb::Database, room: &str, prefix: &str) -> Result<Vec<String>, KvStoreError> {
        let txn = db.begin_read().map_err(store_err)?;
        let table = txn.open_table(TABLE).map_err(store_err)?;
        let mut out = Vec::new();
        for entry in table.range((room, prefix)..).map_err(store_err)? {
            let (k, _) = entry.map_err(store_err)?;
            let (r, key) = k.value();
            if r != room || !key.starts_with(prefix) {
                break;
            }
            out.push(key.to_owned());
        }
        Ok(out)
    }

    /// Applies one call's writes (`None` deletes) atomically and durably.
    pub fn commit<'a>(
        &self,
        room: &str,
        writes: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<(), KvStoreError> {
        let replica = self.replica.read().clone();
        let Some(r) = replica else {
            return self.with_db(|db| Self::write(db, room, writes));
        };
        let writes: Vec<_> = writes.into_iter().collect();
        if let Err(e) = self.replicate(&r, room, &writes)? {
            // The room keeps working on this node; what did not reach the
            // replica goes with the room's next commit or replay, and is
            // lost only if the node dies first.
            tracing::error!(room, error = %e, keys = writes.len(), "kv replica commit failed; kept to send again");
        }
        self.with_db(|db| Self::write(db, room, writes))
    }

    /// Rooms with writes the replica has not got.
    pub fn unreplicated_rooms(&self) -> Vec<String> {
        self.unreplicated.lock().keys().cloned().collect()
    }

    /// Whether `room` has writes the replica has not got.
    pub fn is_behind(&self, room: &str) -> bool {
        self.unreplicated.lock().contains_key(room)
    }

    /// Sends `room`'s keys the replica missed, at their current values.
    /// The number of keys sent; on failure they stay kept. Never while
    /// one of the room's commits runs (a value read here and sent after
    /// that commit's would be older): call it from the room's task, or
    /// once that task has ended.
    pub fn replay(&self, room: &str) -> Result<usize, String> {
        let Some(r) = self.replica.read().clone() else {
            return Ok(0);
        };
        self.replicate(&r, room, &[]).map_err(|e| e.to_string())?
    }

    /// Sends `writes` to the replica with the keys `room` missed earlier,
    /// at their current (committed) values, then settles those: sent,
    /// they wait no more; refused, `writes` wait with them. Only the
    /// room's own task changes its entry, so nothing races the settling.
    /// Outer error: reading the local store; inner: the replica. The
    /// number of earlier keys sent.
    fn replicate(
        &self,
        r: &Replica,
        room: &str,
        writes: &[(&str, Option<&[u8]>)],
    ) -> Result<Result<usize, String>, KvStoreError> {
        let keys: Vec<String> = self
            .unreplicated
            .lock()
            .get(room)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        let behind = self.current(
            room,
            keys.iter()
                .map(String::as_str)
                .filter(|k| !writes.iter().any(|(w, _)| w == k)),
        )?;
        let mut sent = writes.to_vec();
        sent.extend(behind.iter().map(|(k, v)| (*k, v.as_deref())));
        if sent.is_empty() {
            return Ok(Ok(0));
        }
        if let Err(e) = r.sink.commit(room, &sent) {
            let mut unreplicated = self.unreplicated.lock();
            let waiting = unreplicated.entry(room.to_owned()).or_default();
            // Counted once per key, so deferred − replayed − dropped is
            // what is waiting.
            let new = writes
                .iter()
                .filter(|(k, _)| waiting.insert((*k).to_owned()))
                .count();
            r.count("deferred", new);
            return Ok(Err(e));
        }
        if !keys.is_empty() {
            self.unreplicated.lock().remove(room);
            r.count("replayed", keys.len());
        }
        Ok(Ok(keys.len()))
    }

    /// Forgets what `room` could not send: the room left this node, and
    /// its new home's writes must not be overwritten with older ones.
    /// The number of keys given up.
    pub fn forget_unreplicated(&self, room: &str) -> usize {
        let n = self.unreplicated.lock().remove(room).map_or(0, |k| k.len());
        if let Some(r) = &*self.replica.read() {
            r.count("dropped", n);
        }
        n
    }

    /// The committed values of `keys` (`None`: deleted).
    fn current<'k>(
        &self,
        room: &str,
        keys: impl Iterator<Item = &'k str>,
    ) -> Result<Current<'k>, KvStoreError> {
        keys.map(|k| Ok((k, self.get(room, k)?))).collect()
    }

    fn write<'a>(
        db: &redb::Database,
        room: &str,
        writes: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Result<(), KvStoreError> {
        let txn = db.begin_write().map_err(store_err)?;
        {
            let mut table = txn.open_table(TABLE).map_err(store_err)?;
            for (key, value) in writes {
                match value {
                    Some(v) => {
                        table.insert((room, key), v).map_err(store_err)?;
                    }
                    None => {
                        table.remove((room, key)).map_err(store_err)?;
                    }
                }
            }
        }
        txn.commit().map_err(store_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// (room, key) → the last value that reached the replica.
    type Got = HashMap<(String, String), Option<Vec<u8>>>;

    /// A replica that is reachable or not, and remembers what reached it.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        got: parking_lot::Mutex<Got>,
    }

    impl KvReplica for Flaky {
        fn commit(&self, room: &str, writes: &[(&str, Option<&[u8]>)]) -> Result<(), String> {
            if self.down.load(Ordering::Relaxed) {
                return Err("unreachable".into());
            }
            let mut got = self.got.lock();
            for (k, v) in writes {
                got.insert((room.into(), (*k).into()), v.map(<[u8]>::to_vec));
            }
            Ok(())
        }
    }

    impl Flaky {
        fn value(&self, room: &str, key: &str) -> Option<Option<Vec<u8>>> {
            self.got.lock().get(&(room.into(), key.into())).cloned()
        }
    }

    fn store() -> (KvStore, Arc<Flaky>) {
        let kv = KvStore::in_memory(KvLimits::default()).expect("store");
        let replica = Arc::new(Flaky::default());
        kv.set_replica(
            replica.clone(),
            roomlet_telemetry::Registry::unserved().counter_vec("t_total", "test", &["result"]),
        );
        (kv, replica)
    }

    #[test]
    fn writes_missed_while_away_ride_with_the_rooms_next_commit() {
        let (kv, replica) = store();
        kv.commit("r", [("a", Some(&b"1"[..]))]).expect("commit");
        replica.down.store(true, Ordering::Relaxed);
        kv.commit("r", [("a", Some(&b"2"[..])), ("b", Some(&b"x"[..]))])
            .expect("commits locally while the replica is away");
        kv.commit("other", [("a", Some(&b"o"[..]))])
            .expect("commit");
        assert_eq!(kv.get("r", "a").expect("get"), Some(b"2".to_vec()));
        assert_eq!(replica.value("r", "a"), Some(Some(b"1".to_vec())));
        assert!(kv.is_behind("r") && kv.is_behind("other"));

        replica.down.store(false, Ordering::Relaxed);
        kv.commit("r", [("c", Some(&b"y"[..]))]).expect("commit");
        assert_eq!(replica.value("r", "a"), Some(Some(b"2".to_vec())));
        assert_eq!(replica.value("r", "b"), Some(Some(b"x".to_vec())));
        assert_eq!(replica.value("r", "c"), Some(Some(b"y".to_vec())));
        assert!(!kv.is_behind("r"));
        assert_eq!(kv.unreplicated_rooms(), vec!["other".to_owned()]);
    }

    #[test]
    fn a_replay_sends_current_values_and_deletions() {
        let (kv, replica) = store();
        kv.commit("r", [("gone", Some(&b"1"[..]))]).expect("commit");
        replica.down.store(true, Ordering::Relaxed);
        kv.commit("r", [("k", Some(&b"1"[..]))]).expect("commit");
        kv.commit("r", [("k", Some(&b"2"[..])), ("gone", None)])
            .expect("commit");
        assert_eq!(kv.replay("r"), Err("unreachable".into()));
        assert!(kv.is_behind("r"), "a failed replay keeps the keys");

        replica.down.store(false, Ordering::Relaxed);
        assert_eq!(kv.replay("r"), Ok(2));
        assert_eq!(replica.value("r", "k"), Some(Some(b"2".to_vec())));
        assert_eq!(replica.value("r", "gone"), Some(None));
        assert_eq!(kv.replay("r"), Ok(0), "nothing is sent twice");
    }

    #[test]
    fn a_room_that_left_forgets_what_it_could_not_send() {
        let (kv, replica) = store();
        replica.down.store(true, Ordering::Relaxed);
        kv.commit("r", [("k", Some(&b"1"[..])), ("j", None)])
            .expect("commit");
        assert_eq!(kv.forget_unreplicated("r"), 2);
        replica.down.store(false, Ordering::Relaxed);
        assert_eq!(kv.replay("r"), Ok(0));
        assert_eq!(replica.value("r", "k"), None);
    }
}
