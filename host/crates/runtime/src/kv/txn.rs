//! [`KvTxn`]: one call's view of a room's store.

use super::store::KvStore;
use crate::bindings::rooms::roomlet::signal::kv::KvError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A room's store as one call sees it: committed data plus the call's own
/// buffered writes. Dropping it discards the writes; [`KvTxn::take_writes`]
/// hands them to the actor to commit.
#[derive(Debug)]
pub struct KvTxn {
    store: Arc<KvStore>,
    room: Arc<str>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
}

impl KvTxn {
    /// A transaction on `room` with no writes yet.
    pub fn new(store: Arc<KvStore>, room: Arc<str>) -> Self {
        Self {
            store,
            room,
            writes: BTreeMap::new(),
        }
    }

    /// The value as this call sees it.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(w) = self.writes.get(key) {
            return w.clone();
        }
        match self.store.get(&self.room, key) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(room = %self.room, error = %e, "kv read failed");
                None
            }
        }
    }

    /// Buffers a write after checking the room's limits.
    pub fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        let limits = self.store.limits();
        if key.len() > limits.max_key_bytes || value.len() > limits.max_value_bytes {
            return Err(KvError::TooLarge);
        }
        if self.get(&key).is_none() && self.keys("").len() >= limits.max_keys {
            return Err(KvError::QuotaExceeded);
        }
        self.writes.insert(key, Some(value));
        Ok(())
    }

    /// Buffers a delete.
    pub fn delete(&mut self, key: String) {
        self.writes.insert(key, None);
    }

    /// Keys starting with `prefix`, committed ones merged with this call's.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: std::collections::BTreeSet<String> = match self.store.keys(&self.room, prefix)
        {
            Ok(k) => k.into_iter().collect(),
            Err(e) => {
                tracing::error!(room = %self.room, error = %e, "kv scan failed");
                Default::default()
            }
        };
        for (k, v) in self.writes.range(prefix.to_owned()..) {
            if !k.starts_with(prefix) {
                break;
            }
            if v.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        keys.into_iter().collect()
    }

    /// Takes the buffered writes, leaving the transaction empty.
    pub fn take_writes(&mut self) -> BTreeMap<String, Option<Vec<u8>>> {
        std::mem::take(&mut self.writes)
    }

    /// The store this transaction reads from and commits to.
    pub fn store(&self) -> &Arc<KvStore> {
        &self.store
    }
}
