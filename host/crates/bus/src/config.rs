//! `[nats]`: this crate's section of the node's configuration.

use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

/// `[nats]`: the bus between nodes. Credentials are secrets
/// (`ROOMLET_NATS_USER`/`ROOMLET_NATS_PASSWORD`, `ROOMLET_NATS_TOKEN` or
/// `ROOMLET_NATS_NKEY`, each also as `*_FILE`), never in this file.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSection {
    /// Server URL(s), comma-separated; none runs without a bus.
    pub url: Option<String>,
    /// Subject and bucket prefix, one per deployment, so deployments can
    /// share a NATS cluster without seeing each other.
    pub prefix: String,
    /// How long a node's liveness lease lasts without renewal. A dead
    /// node's rooms are re-homed after this; a cut-off node stops serving
    /// its rooms before it. The default (15 s) outlasts a NATS restart of
    /// 5 s with seconds to spare (reconnect, JetStream recovery, the last
    /// renewal's age, the drift margin); a shorter one re-homes a dead
    /// node's rooms sooner and loses every lease to a NATS restart that
    /// outlasts it.
    pub liveness_ttl_ms: u64,
    /// Require TLS to the NATS server.
    pub tls: bool,
    /// Extra CA certificates (PEM) for the NATS server's certificate.
    pub ca_file: Option<PathBuf>,
    /// This node's client certificate (PEM), for a NATS server that
    /// verifies clients (`verify: true`). Implies `tls`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM). A path, so the key
    /// itself stays in a mounted secret, never in this file.
    pub key_file: Option<PathBuf>,
    /// How long a request over the bus may take.
    pub request_timeout_ms: u64,
    /// Room-name prefix → region: such rooms are homed in that region
    /// whoever joins first (otherwise in the first joiner's region).
    pub room_regions: HashMap<String, String>,
}

impl Default for NatsSection {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "roomlet".into(),
            liveness_ttl_ms: 15_000,
            tls: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            request_timeout_ms: 2000,
            room_regions: HashMap::new(),
        }
    }
}
