//! The rooms' durable key-value store, and the per-call transaction that
//! gives modules commit-on-return, discard-on-trap semantics.
//!
//! All-in-one servers keep it in one embedded redb file under the data
//! directory; every room's keys live under the room's name.

mod store;
mod txn;

pub use store::{KvLimits, KvReplica, KvStore, KvStoreError};
pub use txn::KvTxn;
