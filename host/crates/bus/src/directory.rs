//! The directory: which nodes are alive and which node is each room's
//! home, in JetStream KV.
//!
//! Liveness is one key per node in a bucket whose entries expire after
//! the lease TTL, so renewal traffic grows with nodes, not rooms. A room's
//! entry names its home and is only ever changed by compare-and-set on its
//! revision; a node takes a room over only when the entry is absent or
//! names a node whose liveness key is gone. The entry's revision fences
//! frames: a home serves a frame only when it was routed by the revision
//! the home holds.

use super::BusError;
use async_nats::jetstream;
use async_nats::jetstream::kv::{Operation, Store};
use base64::Engine as _;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a node announces with its liveness key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its region.
    pub region: String,
    /// The functions it runs.
    pub functions: Vec<String>,
    /// Its public WebSocket URL, if configured.
    pub public_url: Option<String>,
    /// Handing its rooms off: alive, but never chosen as a new home.
    #[serde(default)]
    pub draining: bool,
}

impl NodeInfo {
    /// Whether the node can be a room's home.
    pub fn runs_rooms(&self) -> bool {
        !self.draining && self.functions.iter().any(|f| f == "rooms")
    }
}

/// A room's directory entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomEntry {
    /// The home node.
    pub node: String,
    /// The home's region.
    pub region: String,
}

/// A directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Someone else changed the entry first.
    #[error("the directory entry changed meanwhile")]
    Conflict,
    /// NATS failed.
    #[error("directory: {0}")]
    Nats(String),
}

fn nats(e: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Nats(e.to_string())
}

/// The directory's two buckets.
#[derive(Clone)]
pub struct Directory {
    nodes: Store,
    rooms: Store,
    ttl: Duration,
}

/// A room name as a KV key (any string becomes `[A-Za-z0-9_-]`).
pub fn room_key(room: &str) -> String {
    format!(
        "r.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(room)
    )
}

pub(super) async fn bucket(
    js: &jetstream::Context,
    name: String,
    history: i64,
    max_age: Duration,
) -> Result<Store, BusError> {
    js.create_or_update_key_value(jetstream::kv::Config {
        bucket: name.clone(),
        history,
        max_age,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::Bucket {
        bucket: name,
        message: super::chain(&e),
    })
}

impl Directory {
    pub(super) async fn open(
        js: &jetstream::Context,
        prefix: &str,
        ttl: Duration,
    ) -> Result<Self, BusError> {
        Ok(Self {
            nodes: bucket(js, format!("{prefix}_nodes"), 1, ttl).await?,
            rooms: bucket(js, format!("{prefix}_rooms"), 1, Duration::ZERO).await?,
            ttl,
        })
    }

    /// The lease TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(super) async fn renew(&self, node: &str, info: &NodeInfo) -> Result<(), DirectoryError> {
        let value = serde_json::to_vec(info).map_err(nats)?;
        self.nodes
            .put(node, value.into())
            .await
            .map(|_| ())
            .map_err(nats)
    }

    pub(super) async fn withdraw(&self, node: &str) -> Result<(), DirectoryError> {
        self.nodes.purge(node).await.map_err(nats)
    }

    /// The node's announcement, when its lease holds.
    pub async fn node(&self, node: &str) -> Result<Option<NodeInfo>, DirectoryError> {
        match self.nodes.entry(node).await.map_err(nats)? {
            Some(e) if e.operation == Operation::Put => Ok(serde_json::from_slice(&e.value).ok()),
            _ => Ok(None),
        }
    }

    /// Every live node.
    pub async fn nodes(&self) -> Result<Vec<(String, NodeInfo)>, DirectoryError> {
        let mut keys = self.nodes.keys().await.map_err(nats)?;
        let mut names = Vec::new();
        while let Some(k) = keys.next().await {
            names.push(k.map_err(nats)?);
        }
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if let Some(info) = self.node(&n).await? {
                out.push((n, info));
            }
        }
        Ok(out)
    }

    /// The room's entry and its revision.
    pub async fn room(&self, room: &str) -> Result<Option<(RoomEntry, u64)>, DirectoryError> {
        match self.rooms.entry(room_key(room)).await.map_err(nats)? {
            Some(e) if e.operation == Operation::Put => Ok(serde_json::from_slice(&e.value)
                .ok()
                .map(|v| (v, e.revision))),
            _ => Ok(None),
        }
    }

    /// Writes the entry when there is none. The new revision.
    pub async fn create(&self, room: &str, entry: &RoomEntry) -> Result<u64, DirectoryError> {
        let value = serde_json::to_vec(entry).map_err(nats)?;
        self.rooms
            .create(room_key(room), value.into())
            .await
            .map_err(|e| match e.kind() {
                jetstream::kv::CreateErrorKind::AlreadyExists => DirectoryError::Conflict,
                _ => nats(e),
            })
    }

    /// Replaces the entry at revision `rev`. The new revision.
    pub async fn replace(
        &self,
        room: &str,
        entry: &RoomEntry,
        rev: u64,
    ) -> Result<u64, DirectoryError> {
        let value = serde_json::to_vec(entry).map_err(nats)?;
        self.rooms
            .update(room_key(room), value.into(), rev)
            .await
            .map_err(|e| match e.kind() {
                jetstream::kv::UpdateErrorKind::WrongLastRevision => DirectoryError::Conflict,
                _ => nats(e),
            })
    }

    /// Removes the entry if it is still at revision `rev`.
    pub async fn release(&self, room: &str, rev: u64) -> Result<(), DirectoryError> {
        self.rooms
            .delete_expect_revision(room_key(room), Some(rev))
            .await
            .map_err(nats)
    }
}
