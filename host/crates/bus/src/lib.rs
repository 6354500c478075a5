//! The bus between nodes: NATS (async-nats) for request/reply and
//! fan-out, JetStream KV for the room directory, node liveness and the
//! rooms' committed kv.
//!
//! Subjects and buckets all start with the deployment's prefix, so two
//! deployments can share one NATS cluster. Subjects used:
//! - `P.auth` (queue group): token checks for nodes without a local auth;
//! - `P.join.NODE`: a join sent to the node chosen as a room's home;
//! - `P.home.NODE`: every other frame for rooms homed on NODE;
//! - `P.gw.NODE`: deliveries for peers whose sockets NODE holds;
//! - `P.handover.NODE`: a session NODE holds, asked for by the gateway
//!   its client resumed at.
//!
//! Buckets: `P_nodes` (one liveness key per node, expiring after the lease
//! TTL), `P_rooms` (room → home node, written with compare-and-set),
//! `P_kv` (room state, one key per room key) and `P_sessions` (one record
//! per joined session, [`sessions`]).

pub mod auth;
pub mod config;
pub mod directory;
pub mod edge;
pub mod home;
mod metrics;
pub mod sessions;
pub mod store;
pub mod topology;
pub mod wire;

use crate::config::NatsSection;
use async_nats::jetstream;
use directory::Directory;
use futures_util::StreamExt;
pub use metrics::BusMetrics;
use roomlet_runtime::secrets::{Secret, SecretError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why the bus could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The NATS connection failed (wrong URL, credentials, TLS).
    #[error("connecting to NATS at {url}: {message}")]
    Connect {
        /// Where (credentials never appear in it).
        url: String,
        /// What the client said.
        message: String,
    },
    /// JetStream (buckets) is not available or refused a bucket.
    #[error(
        "setting up JetStream bucket {bucket}: {message} (is the server started with JetStream, -js?)"
    )]
    Bucket {
        /// Which bucket.
        bucket: String,
        /// Why.
        message: String,
    },
    /// A subscription could not be made.
    #[error("subscribing to {subject}: {message}")]
    Subscribe {
        /// Which subject.
        subject: String,
        /// Why.
        message: String,
    },
    /// A credential secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A live process on this bus already goes by this node's name.
    #[error(
        "node name {0} is taken: another live process on this bus runs under it; give each process its own (--node, ROOMLET_NODE; the default is the host name, which containers on the host network share)"
    )]
    NameTaken(String),
}

/// How long a starting node waits for JetStream to accept its buckets.
const BUCKET_RETRY: Duration = Duration::from_secs(30);

/// How long a starting node waits for a process already under its name to
/// answer: a live one answers in a round trip.
const NAME_CHECK: Duration = Duration::from_secs(1);
/// How long a join waits for a gateway to say whether it ended the joining
/// identity's dropped session: the join goes on either way.
const REAP_WAIT: Duration = Duration::from_secs(1);

/// An error with its causes, for messages that must say why.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !c_s.is_empty() && !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    if s.trim().is_empty() {
        s = format!("{e:?}");
    }
    s
}

/// NATS credentials, from secrets.
#[derive(Debug, Clone, Default)]
pub struct NatsCredentials {
    /// User name (with `password`).
    pub user: Option<Secret>,
    /// Password (with `user`).
    pub password: Option<Secret>,
    /// A bearer token.
    pub token: Option<Secret>,
    /// An nkey seed.
    pub nkey: Option<Secret>,
}

impl NatsCredentials {
    /// Reads `ROOMLET_NATS_USER`, `_PASSWORD`, `_TOKEN`, `_NKEY` (each
    /// also as `*_FILE`).
    pub fn from_env() -> Result<Self, SecretError> {
        Ok(Self {
            user: roomlet_runtime::secrets::from_env("ROOMLET_NATS_USER")?,
            password: roomlet_runtime::secrets::from_env("ROOMLET_NATS_PASSWORD")?,
            token: roomlet_runtime::secrets::from_env("ROOMLET_NATS_TOKEN")?,
            nkey: roomlet_runtime::secrets::from_env("ROOMLET_NATS_NKEY")?,
        })
    }
}

/// A node's connection to the bus.
pub struct Bus {
    client: async_nats::Client,
    /// The deployment prefix.
    pub prefix: String,
    /// This node's name, safe as a subject token.
    pub node: String,
    /// This node's region.
    pub region: String,
    /// The directory (liveness, room homes).
    pub directory: Directory,
    /// Bucket of the rooms' committed kv.
    pub kv: jetstream::kv::Store,
    /// The sessions' records.
    pub sessions: sessions::SessionStore,
    request_timeout: Duration,
    /// Room-name prefixes pinned to a region, longest first.
    room_regions: Vec<(String, String)>,
    /// Unix ms until which this node's lease is known to hold.
    lease_until_ms: AtomicU64,
    /// Bumped each time the lease is regained after lapsing: rooms
    /// claimed in an earlier epoch may have been taken over meanwhile.
    lease_epoch: AtomicU64,
    /// Set when the node starts handing its rooms off.
    draining: std::sync::atomic::AtomicBool,
    /// What the bus counts.
    pub metrics: BusMetrics,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// `s` as a single NATS subject token.
pub fn subject_token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Bus {
    /// Connects and makes sure the buckets exist. Fails fast (a few
    /// seconds) on a wrong URL or refused credentials, so a misconfigured
    /// node never reports ready.
    pub async fn connect(
        settings: &NatsSection,
        creds: &NatsCredentials,
        node: &str,
        region: &str,
        registry: &roomlet_telemetry::Registry,
    ) -> Result<Arc<Self>, BusError> {
        let url = settings.url.clone().unwrap_or_default();
        let connect_err = |message: String| BusError::Connect {
            url: redact(&url),
            message,
        };
        // The TLS layer reports a missing file without its name.
        for (key, path) in [
            ("ca_file", &settings.ca_file),
            ("cert_file", &settings.cert_file),
            ("key_file", &settings.key_file),
        ] {
            if let Some(path) = path {
                std::fs::File::open(path)
                    .map_err(|e| connect_err(format!("nats.{key} {}: {e}", path.display())))?;
            }
        }
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("roomlet {node}"))
            .connection_timeout(Duration::from_secs(3))
            .request_timeout(Some(Duration::from_millis(settings.request_timeout_ms)))
            .require_tls(settings.tls || settings.cert_file.is_some())
            // Reconnect for ever, quickly: readiness reports the outage.
            .max_reconnects(None)
            .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(1000)));
        if let Some(ca) = &settings.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&settings.cert_file, &settings.key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        match (&creds.user, &creds.password, &creds.token, &creds.nkey) {
            (Some(u), Some(p), _, _) => {
                opts = opts.user_and_password(u.expose().into(), p.expose().into())
            }
            (_, _, Some(t), _) => opts = opts.token(t.expose().into()),
            (_, _, _, Some(k)) => opts = opts.nkey(k.expose().into()),
            _ => {}
        }
        let client = opts
            .connect(url.as_str())
            .await
            .map_err(|e| connect_err(chain(&e)))?;
        let js = jetstream::new(client.clone());
        let ttl = Duration::from_millis(settings.liveness_ttl_ms);
        let prefix = settings.prefix.clone();
        // JetStream may still be electing its leader (a cluster that has
        // just started): retry the buckets for a while, not for ever.
        let deadline = tokio::time::Instant::now() + BUCKET_RETRY;
        let (directory, kv, sessions) = loop {
            let r = async {
                let d = Directory::open(&js, &prefix, ttl).await?;
                let kv = store::open_bucket(&js, &prefix).await?;
                let s = sessions::SessionStore::open(&js, &prefix, &subject_token(node)).await?;
                Ok::<_, BusError>((d, kv, s))
            }
            .await;
            match r {
                Ok(x) => break x,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "JetStream not ready; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut room_regions: Vec<(String, String)> = settings
            .room_regions
            .iter()
            .map(|(p, r)| (p.clone(), r.clone()))
            .collect();
        room_regions.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let bus = Arc::new(Self {
            room_regions,
            client,
            prefix,
            node: subject_token(node),
            region: region.to_owned(),
            directory,
            kv,
            sessions,
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            lease_until_ms: AtomicU64::new(0),
            lease_epoch: AtomicU64::new(0),
            draining: std::sync::atomic::AtomicBool::new(false),
            metrics: BusMetrics::new(registry),
        });
        bus.claim_name().await?;
        Ok(bus)
    }

    /// Makes sure no live process goes by this node's name, then answers
    /// for it (`P.name.NODE`). Two processes under one name would share
    /// one liveness key and each other's deliveries (`P.gw.NODE`), and
    /// each one's `hello` would make the homes drop the other's peers.
    async fn claim_name(&self) -> Result<(), BusError> {
        let subject = self.subject("name", Some(&self.node));
        let asked = tokio::time::timeout(
            NAME_CHECK,
            self.client.request(subject.clone(), bytes::Bytes::new()),
        )
        .await;
        match asked {
            Ok(Ok(_)) => return Err(BusError::NameTaken(self.node.clone())),
            // Nobody subscribed: the name is free (or its process is gone).
            Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {}
            // Subscribed but silent: a process stopped or cut off, whose
            // lease runs out; this one takes over as if it had restarted.
            Ok(Err(e)) => tracing::warn!(error = %e, "checking this node's name on the bus"),
            Err(_) => tracing::warn!(
                "a process under this node's name did not answer within {NAME_CHECK:?}; taking the name over"
            ),
        }
        let mut sub = self.subscribe(subject).await?;
        let client = self.client.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = client.publish(reply, bytes::Bytes::new()).await;
                }
            }
        });
        Ok(())
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Subscribes to `subject`; the error names it.
    pub async fn subscribe(&self, subject: String) -> Result<async_nats::Subscriber, BusError> {
        self.client
            .subscribe(subject.clone())
            .await
            .map_err(|e| BusError::Subscribe {
                subject,
                message: e.to_string(),
            })
    }

    /// Tells every node that this process is new ([`wire::Hello`]); called
    /// once its own subscriptions are up and before it serves anything.
    pub async fn hello(&self) {
        let hello = wire::encode(&wire::Hello {
            node: self.node.clone(),
        });
        let sent = match self
            .client
            .publish(self.subject("hello", None), hello)
            .await
        {
            Ok(()) => self.client.flush().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "announcing this process on the bus failed");
        }
    }

    /// Runs `on` for every other node's [`wire::Hello`].
    pub async fn on_hello<F, Fut>(&self, on: F) -> Result<(), BusError>
    where
        F: Fn(String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let me = self.node.clone();
        self.listen(None, "hello", move |h: wire::Hello| {
            (h.node != me).then(|| on(h.node))
        })
        .await
    }

    /// Asks gateway `node` to end a dropped session ([`wire::Reap`]):
    /// whether it did (not: the session is live, or gone already); `None`
    /// when it did not answer in time (it may be dead: its peers become
    /// orphans once its lease is gone).
    pub async fn reap(&self, node: &str, reap: &wire::Reap) -> Option<bool> {
        self.ask::<wire::Reaped>(("reap", "reaped"), node, wire::encode(reap), REAP_WAIT)
            .await
            .map(|r| r.ended)
    }

    /// Asks `node` on `P.KIND.NODE` (request/reply) and decodes its answer
    /// (counted as malformed under `REPLY_KIND` when it does not decode).
    /// `None` when nobody answered within `wait`: the callers go on as if
    /// they had not asked.
    pub(crate) async fn ask<R: serde::de::DeserializeOwned>(
        &self,
        (kind, reply_kind): (&'static str, &'static str),
        node: &str,
        body: bytes::Bytes,
        wait: Duration,
    ) -> Option<R> {
        let subject = self.subject(kind, Some(&subject_token(node)));
        match tokio::time::timeout(wait, self.client.request(subject, body)).await {
            Ok(Ok(m)) => wire::decode::<R>(&self.metrics.malformed, reply_kind, &m.payload),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, gateway = %node, kind, "a gateway did not answer");
                None
            }
            Err(_) => {
                tracing::debug!(gateway = %node, kind, ?wait, "a gateway did not answer in time");
                None
            }
        }
    }

    /// Answers [`wire::Reap`] requests for this gateway with what `on`
    /// returns (whether it ended the session); a malformed one with no.
    pub async fn on_reap<F, Fut>(&self, on: F) -> Result<(), BusError>
    where
        F: Fn(wire::Reap) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let mut sub = self
            .subscribe(self.subject("reap", Some(&self.node)))
            .await?;
        let client = self.client.clone();
        let malformed = self.metrics.malformed.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply) = msg.reply else {
                    continue;
                };
                let ended = match wire::decode::<wire::Reap>(&malformed, "reap", &msg.payload) {
                    Some(reap) => on(reap).await,
                    None => false,
                };
                let _ = client
                    .publish(reply, wire::encode(&wire::Reaped { ended }))
                    .await;
            }
        });
        Ok(())
    }

    /// Subscribes to `P.kind[.node]` and runs what `on` returns for each
    /// message that decodes, one at a time.
    async fn listen<T, F, Fut>(
        &self,
        node: Option<&str>,
        kind: &'static str,
        on: F,
    ) -> Result<(), BusError>
    where
        T: serde::de::DeserializeOwned,
        F: Fn(T) -> Option<Fut> + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let mut sub = self.subscribe(self.subject(kind, node)).await?;
        let malformed = self.metrics.malformed.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Some(fut) = wire::decode::<T>(&malformed, kind, &msg.payload).and_then(&on) {
                    fut.await;
                }
            }
        });
        Ok(())
    }

    /// `P.kind.node` (or `P.kind` without a node).
    pub fn subject(&self, kind: &str, node: Option<&str>) -> String {
        match node {
            Some(n) => format!("{}.{kind}.{n}", self.prefix),
            None => format!("{}.{kind}", self.prefix),
        }
    }

    /// The region a new room should live in: its configured region, else
    /// this (the first joiner's gateway's) region.
    pub fn home_region(&self, room: &str) -> &str {
        self.room_regions
            .iter()
            .find(|(p, _)| room.starts_with(p.as_str()))
            .map(|(_, r)| r.as_str())
            .unwrap_or(&self.region)
    }

    /// How long a request may take.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Connected and holding a valid lease: ready to serve.
    pub fn is_ready(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
            && self.lease_valid()
    }

    /// Whether this node's liveness lease still holds (with a margin for
    /// clock drift): outside it, another node may have taken its rooms.
    pub fn lease_valid(&self) -> bool {
        roomlet_runtime::clock::unix_millis() < self.lease_until_ms.load(Ordering::Relaxed)
    }

    /// The current lease epoch.
    pub fn lease_epoch(&self) -> u64 {
        self.lease_epoch.load(Ordering::Relaxed)
    }

    /// Keeps this node's liveness key fresh, for ever. A renewal that
    /// fails leaves the lease to run out.
    pub async fn keep_alive(self: Arc<Self>, mut info: directory::NodeInfo) {
        let ttl = self.directory.ttl();
        let (every, patience) = renewal_pace(ttl);
        loop {
            info.draining = self.draining.load(Ordering::Relaxed);
            let started = roomlet_runtime::clock::unix_millis();
            match tokio::time::timeout(patience, self.directory.renew(&self.node, &info)).await {
                Ok(Ok(())) => {
                    // The key expires TTL after the server stored it,
                    // which is after `started`; keep a tenth of the TTL
                    // as a margin for clock drift between nodes.
                    let margin = ttl.as_millis() as u64 / 10;
                    if !self.lease_valid() {
                        self.lease_epoch.fetch_add(1, Ordering::Relaxed);
                    }
                    self.lease_until_ms
                        .store(started + ttl.as_millis() as u64 - margin, Ordering::Relaxed);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the liveness lease failed"),
                Err(_) => tracing::warn!("renewing the liveness lease timed out"),
            }
            let spent = roomlet_runtime::clock::unix_millis().saturating_sub(started);
            tokio::time::sleep(every.saturating_sub(Duration::from_millis(spent))).await;
        }
    }

    /// Announces at once that this node is handing its rooms off, so no
    /// gateway picks it as a new home meanwhile.
    pub async fn announce_draining(&self, mut info: directory::NodeInfo) {
        self.draining.store(true, Ordering::Relaxed);
        info.draining = true;
        if let Err(e) = self.directory.renew(&self.node, &info).await {
            tracing::warn!(error = %e, "announcing the drain failed");
        }
    }

    /// Whether the node is handing its rooms off.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Withdraws this node's liveness key (orderly stop), so others take
    /// its rooms at once instead of after the TTL.
    pub async fn withdraw(&self) {
        self.lease_until_ms.store(0, Ordering::Relaxed);
        if let Err(e) = self.directory.withdraw(&self.node).await {
            tracing::warn!(error = %e, "withdrawing the liveness key failed");
        }
        // The process may exit next: what its rooms' last notices
        // (`Moved`) queued must reach the server first.
        if let Err(e) = self.client.flush().await {
            tracing::warn!(error = %e, "flushing the bus failed");
        }
    }
}

/// How often the liveness key is renewed, and how long one renewal may
/// take before the next is tried. Every second at most, whatever the TTL:
/// what costs a lease in a NATS outage is the age of the last renewal when
/// NATS went away plus the time to get one through after it returns, so
/// the key is kept young (one put a second per node) rather than renewed
/// a few times per TTL. A renewal stuck in a dead connection is given up
/// after two seconds at most, so the first one after NATS returns is not
/// queued behind it; one slow renewal under load still leaves several
/// more within the TTL.
fn renewal_pace(ttl: Duration) -> (Duration, Duration) {
    let every = (ttl / 4).min(Duration::from_secs(1));
    let patience = (ttl / 2).min(Duration::from_secs(2));
    (every, patience)
}

/// A URL without its userinfo, for errors and logs.
fn redact(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}{}", &u[..s + 3], &u[at + 1..]),
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_userinfo() {
        assert_eq!(
            redact("nats://u:secret@h:4222,nats://h2:4222"),
            "nats://h:4222,nats://h2:4222"
        );
        assert_eq!(subject_token("a.b c*>"), "a_b_c__");
    }
}
