//! Rooms' committed kv in JetStream, so a room's state outlives the node
//! that was its home. One KV entry per room key (`k.ROOM.KEY`, both
//! base64url): a call's writes are acknowledged by JetStream before the
//! call's commit counts as done, and a new home loads the room's keys
//! with one ordered consumer filtered to the room.

use super::BusError;
use super::wire::HandOff;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{DeliverPolicy, push};
use async_nats::jetstream::kv::Store;
use base64::Engine as _;
use futures_util::StreamExt;
use roomlet_runtime::kv::KvReplica;
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub(super) async fn open_bucket(js: &jetstream::Context, prefix: &str) -> Result<Store, BusError> {
    super::directory::bucket(js, format!("{prefix}_kv"), 1, Duration::ZERO).await
}

fn room_prefix(room: &str) -> String {
    format!("k.{}.", B64.encode(room))
}

/// The JetStream side of the rooms' kv.
pub struct JetStreamKv {
    store: Store,
    client: async_nats::Client,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    /// `roomlet_bus_malformed_total`: a snapshot that does not decode.
    malformed: roomlet_telemetry::IntCounterVec,
}

impl JetStreamKv {
    /// Over `store`, running its futures on the current runtime.
    pub fn new(
        store: Store,
        client: async_nats::Client,
        timeout: Duration,
        malformed: roomlet_telemetry::IntCounterVec,
    ) -> Self {
        Self {
            store,
            client,
            runtime: tokio::runtime::Handle::current(),
            timeout,
            malformed,
        }
    }

    /// Every committed key of `room` with its value.
    pub async fn load(&self, room: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let prefix = room_prefix(room);
        let stream = &self.store.stream;
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: format!("{}{prefix}>", self.store.prefix),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut pending = consumer.cached_info().num_pending;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while pending > 0 {
            let m = tokio::time::timeout(self.timeout, messages.next())
                .await
                .map_err(|_| "timed out loading the room's kv".to_string())?
                .ok_or("the kv consumer ended early")?
                .map_err(|e| e.to_string())?;
            pending = m.info().map(|i| i.pending).unwrap_or(0);
            let deleted = m
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some();
            if deleted {
                continue;
            }
            let Some(key) = m
                .subject
                .strip_prefix(&format!("{}{prefix}", self.store.prefix))
                .and_then(|k| B64.decode(k).ok())
                .and_then(|k| String::from_utf8(k).ok())
            else {
                continue;
            };
            out.push((key, m.payload.to_vec()));
        }
        Ok(out)
    }
}

fn snapshot_key(room: &str) -> String {
    format!("s.{}", B64.encode(room))
}

impl JetStreamKv {
    /// Leaves the room's in-memory state for its next home (drain).
    pub async fn put_snapshot(&self, room: &str, handoff: &HandOff) -> Result<(), String> {
        let body = rmp_serde::to_vec(handoff).map_err(|e| e.to_string())?;
        self.store
            .put(snapshot_key(room), body.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Takes (and removes) the state a previous home left, so it is used once.
    pub async fn take_snapshot(&self, room: &str) -> Result<Option<HandOff>, String> {
        let key = snapshot_key(room);
        let Some(body) = self.store.get(&key).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        self.store.purge(&key).await.map_err(|e| e.to_string())?;
        Ok(super::wire::decode(&self.malformed, "snapshot", &body))
    }
}

fn routing_key(room: &str) -> String {
    format!("o.{}", B64.encode(room))
}

impl JetStreamKv {
    /// Records what the room's module observes ([`crate::home`]'s routing).
    pub async fn put_routing(&self, room: &str, flags: (bool, bool)) -> Result<(), String> {
        let body = rmp_serde::to_vec(&flags).map_err(|e| e.to_string())?;
        self.store
            .put(routing_key(room), body.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The routing flags on record for `room`, if any.
    pub async fn routing(&self, room: &str) -> Result<Option<(bool, bool)>, String> {
        let Some(body) = self
            .store
            .get(routing_key(room))
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        Ok(super::wire::decode(&self.malformed, "routing", &body))
    }
}

impl KvReplica for JetStreamKv {
    fn commit(&self, room: &str, writes: &[(&str, Option<&[u8]>)]) -> Result<(), String> {
        let prefix = room_prefix(room);
        let store = self.store.clone();
        let keyed: Vec<(String, Option<bytes::Bytes>)> = writes
            .iter()
            .map(|(k, v)| {
                (
                    format!("{prefix}{}", B64.encode(k)),
                    v.map(bytes::Bytes::copy_from_slice),
                )
            })
            .collect();
        let timeout = self.timeout;
        self.runtime.block_on(async move {
            let puts = keyed.into_iter().map(|(k, v)| {
                let store = store.clone();
                async move {
                    match v {
                        Some(v) => store.put(k, v).await.map(|_| ()).map_err(|e| e.to_string()),
                        None => store.delete(k).await.map_err(|e| e.to_string()),
                    }
                }
            });
            let all = futures_util::future::join_all(puts);
            let results = tokio::time::timeout(timeout, all)
                .await
                .map_err(|_| "timed out".to_string())?;
            results.into_iter().collect::<Result<(), String>>()
        })
    }
}
