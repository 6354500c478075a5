//! Where a split deployment keeps its sessions: JetStream KV `P_sessions`,
//! one entry per joined session, so a client can resume at any gateway.
//!
//! The key is the SHA-256 of the session's resume token (the token is the
//! client's credential and is kept nowhere); the entry holds what a resume
//! needs that is not its stream: the peer, its room, encoding and token
//! expiry (the same record an all-in-one node keeps on disk), plus the
//! gateway holding the session and an epoch. It is written at join and
//! removed when the session ends, never per frame. A gateway taking a
//! session over bumps the epoch by compare-and-set on the entry's
//! revision, so two gateways can never both take one session; the one
//! that held it removes the entry only while it still names it.
//!
//! Entries expire a day after they were written: a gateway killed
//! outright removes nothing, and a session that lasts longer than that
//! without moving resumes only at the gateway holding it.

use super::BusError;
use crate::wire;
use async_nats::jetstream;
use async_nats::jetstream::kv::{Operation, Store};
use futures_util::StreamExt;
use roomlet_gateway::SessionImage;
use roomlet_gateway::journal::{SessionJournal, SessionKey, SessionRecord};
use roomlet_gateway::topology::BoxFuture;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long an entry outlives its last write.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// One session's entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSession {
    /// What re-creates it.
    pub record: SessionRecord,
    /// The gateway holding it.
    pub gateway: String,
    /// Bumped at each takeover.
    pub epoch: u64,
}

/// The sessions bucket, as one gateway uses it.
#[derive(Clone)]
pub struct SessionStore {
    kv: Store,
    node: String,
}

fn entry_key(key: &SessionKey) -> String {
    let mut s = String::with_capacity(2 + 64);
    s.push_str("s.");
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl SessionStore {
    pub(super) async fn open(
        js: &jetstream::Context,
        prefix: &str,
        node: &str,
    ) -> Result<Self, BusError> {
        Ok(Self {
            kv: super::directory::bucket(js, format!("{prefix}_sessions"), 1, MAX_AGE).await?,
            node: node.to_owned(),
        })
    }

    /// Takes the session under `key` for this gateway: its entry, as it
    /// was (naming the gateway that held it), once the takeover is
    /// written. `None` when there is no entry, it cannot be read, or
    /// another gateway took it first.
    pub async fn take(&self, key: &SessionKey) -> Option<StoredSession> {
        let k = entry_key(key);
        let entry = match self.kv.entry(&k).await {
            Ok(Some(e)) if e.operation == Operation::Put => e,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "reading a session's record failed");
                return None;
            }
        };
        let was: StoredSession = rmp_serde::from_slice(&entry.value).ok()?;
        let now = StoredSession {
            gateway: self.node.clone(),
            epoch: was.epoch + 1,
            record: was.record.clone(),
        };
        let value = rmp_serde::to_vec_named(&now).ok()?;
        match self.kv.update(&k, value.into(), entry.revision).await {
            Ok(_) => Some(was),
            Err(e) => {
                tracing::info!(error = %e, "a session's record changed meanwhile: another gateway took it");
                None
            }
        }
    }

    /// Removes the entry under `key` if it still names this gateway.
    pub async fn end(&self, key: &SessionKey) {
        let k = entry_key(key);
        let Ok(Some(entry)) = self.kv.entry(&k).await else {
            return;
        };
        let ours = entry.operation == Operation::Put
            && rmp_serde::from_slice::<StoredSession>(&entry.value)
                .is_ok_and(|s| s.gateway == self.node);
        if ours
            && let Err(e) = self
                .kv
                .delete_expect_revision(&k, Some(entry.revision))
                .await
        {
            tracing::debug!(error = %e, "removing a session's record failed");
        }
    }
}

impl SessionJournal for SessionStore {
    fn joined(&self, key: SessionKey, record: SessionRecord) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let stored = StoredSession {
                record,
                gateway: self.node.clone(),
                epoch: 0,
            };
            let value = rmp_serde::to_vec_named(&stored).map_err(|e| e.to_string())?;
            self.kv
                .put(entry_key(&key), value.into())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn ended(&self, key: SessionKey) {
        let store = self.clone();
        tokio::spawn(async move { store.end(&key).await });
    }
}

/// How long a gateway taking a session over waits for the one holding it
/// (a live one answers in a round trip; one killed outright has no
/// subscriber, and NATS says so at once).
const HAND_OVER_WAIT: Duration = Duration::from_secs(3);

impl super::Bus {
    /// Tells gateway `node` that a client resumed here with a token it
    /// issued ([`wire::SessionGone`]). Best effort: the session ends after
    /// its grace period anyway.
    pub async fn session_gone(&self, node: &str, token: &str) {
        let msg = wire::encode(&wire::SessionGone {
            token: token.to_owned(),
        });
        let subject = self.subject("resumed", Some(&super::subject_token(node)));
        if let Err(e) = self.client.publish(subject, msg).await {
            tracing::debug!(error = %e, "telling a gateway its session resumed elsewhere failed");
        }
    }

    /// Runs `on` with each resume token other gateways report for this one.
    pub async fn on_session_gone<F, Fut>(&self, on: F) -> Result<(), BusError>
    where
        F: Fn(String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        self.listen(Some(&self.node), "resumed", move |m: wire::SessionGone| {
            Some(on(m.token))
        })
        .await
    }

    /// Asks gateway `node` to hand over the session under `key`
    /// ([`wire::HandOver`]): its stream, or `None` when the gateway holds
    /// no such session, is gone, or did not answer in time.
    pub async fn hand_over(&self, node: &str, key: SessionKey) -> Option<SessionImage> {
        let ask = wire::encode(&wire::HandOver {
            key,
            to: self.node.clone(),
        });
        self.ask::<wire::HandedOver>(("handover", "handed-over"), node, ask, HAND_OVER_WAIT)
            .await
            .and_then(|h| h.session)
    }

    /// Answers [`wire::HandOver`] requests for this gateway with what
    /// `on` returns, each in its own task (a live session takes a moment
    /// to let go of its socket).
    pub async fn on_hand_over<F, Fut>(&self, on: F) -> Result<(), BusError>
    where
        F: Fn(SessionKey, String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Option<SessionImage>> + Send + 'static,
    {
        let mut sub = self
            .subscribe(self.subject("handover", Some(&self.node)))
            .await?;
        let client = self.client().clone();
        let malformed = self.metrics.malformed.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply) = msg.reply else {
                    continue;
                };
                let asked = wire::decode::<wire::HandOver>(&malformed, "handover", &msg.payload);
                let answer = asked.map(|h| on(h.key, h.to));
                let client = client.clone();
                tokio::spawn(async move {
                    let session = match answer {
                        Some(fut) => fut.await,
                        None => None,
                    };
                    let _ = client
                        .publish(reply, wire::encode(&wire::HandedOver { session }))
                        .await;
                });
            }
        });
        Ok(())
    }
}
