//! Webhooks: `room_started`, `room_finished`, `participant_joined` and
//! `participant_left`, POSTed to every configured URL.
//!
//! Each request carries, in its `Authorization` header, an HS256 JWT
//! signed with an API secret (`iss` is the API key) whose `sha256` claim is
//! the base64 SHA-256 of the body, as LiveKit signs its webhooks, so a
//! receiver can check both origin and integrity with the key pair it
//! already uses for access tokens.
//!
//! Signaling never waits for a receiver: notifications go into a bounded
//! queue per URL (full: dropped and counted), and one task per URL
//! delivers them in order, retrying with exponential backoff a bounded
//! number of times.

mod client;

use base64::Engine as _;
use bytes::Bytes;
use client::Target;
use rand::Rng;
use roomlet_events::{Event, EventKind, Listener};
use roomlet_runtime::secrets::{ApiKeys, Secret};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// `[webhooks]` in the configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Receivers (`http://` only).
    pub urls: Vec<String>,
    /// The API key whose secret signs the requests; the first configured
    /// key when unset.
    pub api_key: Option<String>,
    /// Notifications waiting per URL; beyond that they are dropped.
    pub queue: usize,
    /// Attempts per notification, the first included.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles with each failure.
    pub initial_backoff_ms: u64,
    /// Longest wait between attempts.
    pub max_backoff_ms: u64,
    /// Time allowed for one attempt (connect, send, answer).
    pub timeout_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            api_key: None,
            queue: 1024,
            max_attempts: 8,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            timeout_ms: 5_000,
        }
    }
}

/// A `[webhooks]` section that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A URL is unusable.
    #[error("webhooks.urls[{index}]: {reason}")]
    BadUrl {
        /// Its position in the list (the URL itself may hold a secret).
        index: usize,
        /// What to change.
        reason: String,
    },
    /// `api_key` names a key that is not configured.
    #[error("webhooks.api_key {0:?} is not one of the configured API keys (ROOMLET_API_KEYS)")]
    UnknownKey(String),
    /// There is no key to sign with.
    #[error("webhooks need an API key to sign with: set ROOMLET_API_KEYS")]
    NoKey,
    /// A number is out of range.
    #[error("webhooks: {0}")]
    Invalid(String),
}

/// Delivery counts of one [`Webhooks`] (metrics hold the node-wide ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Accepted by a receiver (2xx).
    pub delivered: u64,
    /// Given up on after `max_attempts`.
    pub failed: u64,
    /// Not queued: the URL's queue was full.
    pub dropped: u64,
    /// Attempts that failed and were tried again.
    pub retries: u64,
}

/// This node's delivery counts, as `/metrics` serves them;
/// [`Webhooks::stats`] reads them back.
struct Counts {
    results: roomlet_telemetry::IntCounterVec,
    retried: roomlet_telemetry::IntCounter,
}

impl Counts {
    fn add(&self, result: &str) -> u64 {
        let c = self.results.with_label_values(&[result]);
        c.inc();
        c.get()
    }
}

struct Policy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    timeout: Duration,
    key: String,
    secret: Secret,
}

/// The webhook sender of a node.
pub struct Webhooks {
    queues: Vec<(String, mpsc::Sender<Bytes>)>,
    counts: Arc<Counts>,
}

/// The body of a notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Unique per notification: a receiver dedupes retried deliveries by it.
    pub id: String,
    /// `room_started`, `room_finished`, `participant_joined`, `participant_left`.
    pub event: String,
    /// Unix seconds when the event happened.
    pub created_at: u64,
    /// The node that saw it.
    pub node: String,
    /// Its region.
    pub region: String,
    /// The room.
    pub room: RoomInfo,
    /// The participant (participant events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantInfo>,
    /// Why (participant_left: leave, timeout, kicked, closed; room_finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A room in a notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoomInfo {
    /// Its name.
    pub name: String,
}

/// A participant in a notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// The peer id.
    pub sid: String,
    /// The identity from its access token.
    pub identity: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sha256: String,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// The webhook event name for a log event, if it has one.
pub fn event_name(kind: EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::RoomOpened => "room_started",
        EventKind::RoomClosed => "room_finished",
        EventKind::PeerJoined => "participant_joined",
        EventKind::PeerLeft | EventKind::PeerKicked => "participant_left",
        EventKind::ComponentError | EventKind::ComponentOutput => return None,
    })
}

fn random_id() -> String {
    let b: [u8; 12] = rand::rng().random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("WH_{hex}")
}

impl Webhooks {
    /// Starts one delivery task per URL; `None` when no URL is configured.
    /// Must be called inside the tokio runtime.
    pub fn start(
        config: &WebhooksConfig,
        keys: &ApiKeys,
        registry: &roomlet_telemetry::Registry,
    ) -> Result<Option<Arc<Self>>, WebhookError> {
        if config.urls.is_empty() {
            return Ok(None);
        }
        if config.queue == 0 || config.max_attempts == 0 || config.timeout_ms == 0 {
            return Err(WebhookError::Invalid(
                "queue, max_attempts and timeout_ms must be positive".into(),
            ));
        }
        let targets = config
            .urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                Target::parse(url).map_err(|reason| WebhookError::BadUrl { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (key, secret) = match &config.api_key {
            Some(k) => match keys.api_secret(k) {
                Some(s) => (k.clone(), Secret::new(s)),
                None => return Err(WebhookError::UnknownKey(k.clone())),
            },
            None => match keys.first() {
                Some((k, s)) => (k.to_owned(), s.clone()),
                None => return Err(WebhookError::NoKey),
            },
        };
        let policy = Arc::new(Policy {
            max_attempts: config.max_attempts,
            initial_backoff: Duration::from_millis(config.initial_backoff_ms),
            max_backoff: Duration::from_millis(
                config.max_backoff_ms.max(config.initial_backoff_ms),
            ),
            timeout: Duration::from_millis(config.timeout_ms),
            key,
            secret,
        });
        let counts = Arc::new(Counts {
            results: registry.counter_vec(
                "roomlet_webhooks_total",
                "Webhook notifications by result: delivered, failed (attempts exhausted), dropped (queue full).",
                &["result"],
            ),
            retried: registry.counter(
                "roomlet_webhook_retries_total",
                "Webhook delivery attempts that failed and were retried.",
            ),
        });
        let queues = targets
            .into_iter()
            .map(|target| {
                let (tx, rx) = mpsc::channel(config.queue);
                let name = target.authority.clone();
                tokio::spawn(deliver(target, rx, policy.clone(), counts.clone()));
                (name, tx)
            })
            .collect();
        Ok(Some(Arc::new(Self { queues, counts })))
    }

    /// Queues the notification for `event`, if it has one; never waits.
    pub fn notify(&self, event: &Event) {
        let Some(name) = event_name(event.kind) else {
            return;
        };
        let n = Notification {
            id: random_id(),
            event: name.to_owned(),
            created_at: roomlet_runtime::clock::unix_secs(),
            node: event.node.clone(),
            region: event.region.clone(),
            room: RoomInfo {
                name: event.room.clone(),
            },
            participant: event.peer.as_ref().map(|sid| ParticipantInfo {
                sid: sid.clone(),
                identity: event.identity.clone().unwrap_or_default(),
            }),
            reason: event.reason.clone(),
        };
        let body = match serde_json::to_vec(&n) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "webhook body not serialisable");
                return;
            }
        };
        for (receiver, tx) in &self.queues {
            if tx.try_send(body.clone()).is_err() {
                let dropped = self.counts.add("dropped");
                // Not once per drop: an outage would flood the log.
                if dropped.is_power_of_two() {
                    tracing::warn!(%receiver, dropped, "webhook queue full; notifications dropped");
                }
            }
        }
    }

    /// A listener for the event log: notifications only for durable events.
    pub fn listener(self: &Arc<Self>) -> Listener {
        let this = self.clone();
        Box::new(move |e| this.notify(e))
    }

    /// Delivery counts so far.
    pub fn stats(&self) -> WebhookStats {
        let c = &self.counts;
        let result = |r: &str| c.results.with_label_values(&[r]).get();
        WebhookStats {
            delivered: result("delivered"),
            failed: result("failed"),
            dropped: result("dropped"),
            retries: c.retried.get(),
        }
    }
}

/// The `Authorization` value for `body`.
fn authorization(policy: &Policy, body: &[u8]) -> String {
    let now = roomlet_runtime::clock::unix_secs();
    let claims = Claims {
        iss: &policy.key,
        sha256: base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body)),
        iat: now,
        nbf: now.saturating_sub(1),
        exp: now + 300,
    };
    crate::tokens::sign(&policy.key, &policy.secret, &claims)
}

/// Backoff before attempt `failed + 1`: doubling, capped, with jitter so
/// nodes that lost the same receiver do not retry in step.
fn backoff(policy: &Policy, failed: u32) -> Duration {
    let base = policy
        .initial_backoff
        .saturating_mul(1u32 << failed.saturating_sub(1).min(20))
        .min(policy.max_backoff);
    let half = base / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// Delivers one URL's notifications in order until the queue closes.
async fn deliver(
    target: Target,
    mut rx: mpsc::Receiver<Bytes>,
    policy: Arc<Policy>,
    counts: Arc<Counts>,
) {
    let receiver = target.authority.clone();
    while let Some(body) = rx.recv().await {
        let mut attempt = 1;
        loop {
            let auth = authorization(&policy, &body);
            let outcome =
                tokio::time::timeout(policy.timeout, client::post(&target, body.clone(), &auth))
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()));
            let error = match outcome {
                Ok(status) if status.is_success() => {
                    counts.add("delivered");
                    break;
                }
                Ok(status) => format!("answered {status}"),
                Err(e) => e,
            };
            if attempt >= policy.max_attempts {
                counts.add("failed");
                tracing::warn!(%receiver, attempts = attempt, %error, "webhook not delivered; giving up on it");
                break;
            }
            counts.retried.inc();
            tracing::debug!(%receiver, attempt, %error, "webhook attempt failed; retrying");
            tokio::time::sleep(backoff(&policy, attempt)).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        let p = Policy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            timeout: Duration::from_secs(1),
            key: "k".into(),
            secret: Secret::new("s"),
        };
        for (failed, lo, hi) in [
            (1, 50, 100),
            (2, 100, 200),
            (3, 200, 400),
            (5, 500, 1000),
            (30, 500, 1000),
        ] {
            let b = backoff(&p, failed).as_millis();
            assert!((lo..=hi).contains(&b), "after {failed} failures: {b} ms");
        }
    }
}
