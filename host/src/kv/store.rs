//! [`KvStore`]: redb on disk (or in memory for tests and benchmarks).

use redb::{ReadableDatabase, TableDefinition};
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

/// The node's room key-value store.
pub struct KvStore {
    replica: parking_lot::RwLock<Option<std::sync::Arc<dyn KvReplica>>>,
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
            db: parking_lot::RwLock::new(Some(db)),
            limits,
        })
    }

    /// Sends every later commit to `replica` too.
    pub fn set_replica(&self, replica: std::sync::Arc<dyn KvReplica>) {
        *self.replica.write() = Some(replica);
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
        match replica {
            None => self.with_db(|db| Self::write(db, room, writes)),
            Some(r) => {
                let writes: Vec<_> = writes.into_iter().collect();
                if let Err(e) = r.commit(room, &writes) {
                    // The room keeps working on this node; what did not
                    // reach the replica is lost only if the node is too.
                    tracing::error!(room, error = %e, "kv replica commit failed");
                }
                self.with_db(|db| Self::write(db, room, writes))
            }
        }
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
