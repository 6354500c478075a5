//! `kv`: the room's key-value store, buffered per call.
//!
//! Writes land in the call's [`KvTxn`](crate::kv::KvTxn); the room actor
//! commits them when the call returns and drops them when it traps.

use crate::bindings::rooms::roomlet::signal::kv::{Host, KvError};
use crate::state::HostState;

impl Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        let room = self.room.as_ref()?;
        let _span = tracing::trace_span!("kv.get", room = %room.name).entered();
        room.kv.get(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        let Some(room) = self.room.as_mut() else {
            return Err(KvError::QuotaExceeded);
        };
        let _span = tracing::trace_span!("kv.set", room = %room.name).entered();
        room.kv.set(key, value)
    }

    fn delete(&mut self, key: String) {
        if let Some(room) = self.room.as_mut() {
            let _span = tracing::trace_span!("kv.delete", room = %room.name).entered();
            room.kv.delete(key);
        }
    }

    fn keys(&mut self, prefix: String) -> Vec<String> {
        let Some(room) = self.room.as_ref() else {
            return Vec::new();
        };
        let _span = tracing::trace_span!("kv.keys", room = %room.name).entered();
        room.kv.keys(&prefix)
    }
}
