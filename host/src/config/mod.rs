//! Server configuration: a TOML file (see `edge-configs/`), overridden by
//! command-line flags and their `ROOMLET_*` environment twins. Secrets are
//! never in the file: they come from the environment or from `*_FILE`
//! files (`roomlet_runtime::secrets`).

pub mod env;
pub mod media;

pub use roomlet_bus::config::NatsSection;
pub use roomlet_gateway::config::{LimitsSection, TurnSection};
pub use roomlet_protocol::{IceServer, RegionLink};
pub use roomlet_rooms::RoomsSection;
use roomlet_runtime::{ComponentSource, Function, FunctionSpec, Limits};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration that cannot be used, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config: {0}")]
    Invalid(String),
}

/// The configuration's top-level keys: each section, and the lists.
pub const TOP_LEVEL: &[&str] = &[
    "server",
    "limits",
    "rooms",
    "ice_servers",
    "turn",
    "regions",
    "modules",
    "nats",
    "events",
    "webhooks",
    "media",
];

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listeners, identity and deployment shape.
    pub server: ServerSection,
    /// Client-facing limits.
    pub limits: LimitsSection,
    /// Room policy.
    pub rooms: RoomsSection,
    /// ICE servers handed to clients in `joined`.
    pub ice_servers: Vec<IceServer>,
    /// TURN with coturn REST credentials.
    pub turn: Option<TurnSection>,
    /// Nearby regions listed in `joined`, for clients to pick the fastest.
    pub regions: Vec<RegionLink>,
    /// Per-function component settings.
    pub modules: HashMap<String, ModuleSection>,
    /// The NATS bus between nodes; absent in the all-in-one shape.
    pub nats: NatsSection,
    /// The room event log.
    pub events: roomlet_events::EventsConfig,
    /// Webhook receivers.
    pub webhooks: crate::webhooks::WebhooksConfig,
    /// Media-plane credentials (Agora, LiveKit).
    pub media: media::MediaSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSection::default(),
            limits: LimitsSection::default(),
            rooms: RoomsSection::default(),
            ice_servers: vec![IceServer {
                urls: vec!["stun:stun.l.google.com:19302".into()],
                username: None,
                credential: None,
            }],
            turn: None,
            regions: Vec::new(),
            modules: HashMap::new(),
            nats: NatsSection::default(),
            events: Default::default(),
            webhooks: Default::default(),
            media: Default::default(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Public listener (`/v1/ws`, `/demo`, `/healthz`, `/readyz`).
    pub listen: SocketAddr,
    /// Internal listener (`/metrics`, admin API). Never expose it.
    pub internal_listen: SocketAddr,
    /// This node's region.
    pub region: String,
    /// This node's name; defaults to the host name.
    pub node: String,
    /// Where kv, the event log and the artifact cache live.
    pub data_dir: PathBuf,
    /// Functions this process runs.
    pub functions: Vec<String>,
    /// The public WebSocket URL of this node, as clients should use it.
    pub public_url: Option<String>,
    /// Development mode: dev API key, demo token endpoint.
    pub dev: bool,
    /// On SIGTERM, how long clients get to move before the node stops.
    /// Keep it below the orchestrator's termination grace period.
    pub drain_grace_ms: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 7700).into(),
            internal_listen: ([127, 0, 0, 1], 7701).into(),
            region: "local".into(),
            node: String::new(),
            data_dir: PathBuf::from("roomlet-data"),
            functions: vec!["auth".into(), "rooms".into(), "relay".into()],
            public_url: None,
            dev: false,
            drain_grace_ms: 10_000,
        }
    }
}

/// `[modules.<function>]`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModuleSection {
    /// A component file replacing the embedded default.
    pub path: Option<PathBuf>,
    /// Memory cap per instance, MiB.
    pub memory_cap_mb: Option<usize>,
    /// CPU deadline per call, ms.
    pub deadline_ms: Option<u64>,
    /// The module's own `config` table.
    pub config: HashMap<String, toml::Value>,
}

impl Config {
    /// Reads `path` (or the defaults when there is none), with the settings
    /// of this process's environment laid over it ([`env`]).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// [`Config::load`] with the environment given: `vars` instead of the
    /// process's.
    pub fn load_with_env(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (mut table, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                let origin = path.display().to_string();
                let table = text
                    .parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        path: origin.clone(),
                        message: e.to_string(),
                    })?;
                (table, origin)
            }
            None => (toml::Table::new(), "the defaults".to_owned()),
        };
        let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
        let env = env::overlay(vars, &defaults, TOP_LEVEL);
        for name in &env.unknown {
            tracing::warn!(
                variable = %name,
                "unknown ROOMLET_* variable, ignored: settings are ROOMLET_SECTION__KEY (docs/deploy.md), and it is no flag or secret either"
            );
        }
        let origin = if env.from.is_empty() {
            origin
        } else {
            format!("{origin} with {}", env.from.join(", "))
        };
        env::merge(&mut table, env.settings);
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: origin,
                    message: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let functions = self.functions()?;
        if functions.len() < Function::ALL.len() && self.nats.url.is_none() {
            return invalid(format!(
                "server.functions = {:?} runs only part of roomlet: the other functions are reached over NATS, so set [nats] url (or --nats URL)",
                self.server.functions
            ));
        }
        let p = &self.nats.prefix;
        if p.is_empty()
            || p.len() > 32
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return invalid(format!(
                "nats.prefix {p:?}: 1 to 32 characters of A-Z, a-z, 0-9, '-' and '_'"
            ));
        }
        if self.nats.cert_file.is_some() != self.nats.key_file.is_some() {
            return invalid(
                "nats.cert_file and nats.key_file go together: a client certificate needs its key"
                    .into(),
            );
        }
        if self.nats.liveness_ttl_ms < 1000 {
            return invalid("nats.liveness_ttl_ms must be at least 1000".into());
        }
        for name in self.modules.keys() {
            name.parse::<Function>()
                .map_err(|e| ConfigError::Invalid(format!("[modules.{name}]: {e}")))?;
        }
        let l = &self.limits;
        if l.max_frame_bytes < 256 || l.max_frame_bytes > 16 << 20 {
            return invalid(format!(
                "limits.max_frame_bytes {} must be within 256..=16777216",
                l.max_frame_bytes
            ));
        }
        if l.frames_per_second == 0 {
            return invalid("limits.frames_per_second must be positive".into());
        }
        if l.idle_timeout_ms <= l.ping_interval_ms {
            return invalid("limits.idle_timeout_ms must exceed limits.ping_interval_ms".into());
        }
        if self.rooms.max_rooms == 0 || self.rooms.max_peers_per_room == 0 {
            return invalid("rooms.max_rooms and rooms.max_peers_per_room must be positive".into());
        }
        if self.server.region.is_empty() {
            return invalid("server.region must not be empty".into());
        }
        self.media.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The functions this process runs.
    pub fn functions(&self) -> Result<Vec<Function>, ConfigError> {
        let mut out = Vec::new();
        for f in &self.server.functions {
            let f: Function = f.parse().map_err(ConfigError::Invalid)?;
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if out.is_empty() {
            return Err(ConfigError::Invalid("server.functions is empty".into()));
        }
        Ok(out)
    }

    /// How to load `function`'s component.
    pub fn function_spec(&self, function: Function) -> FunctionSpec {
        let section = self
            .modules
            .get(function.name())
            .cloned()
            .unwrap_or_default();
        let defaults = Limits::default();
        let media = match function {
            Function::Auth => self.media.auth_config(),
            _ => Vec::new(),
        };
        FunctionSpec {
            source: section
                .path
                .map(ComponentSource::File)
                .unwrap_or(ComponentSource::Embedded),
            config: section
                .config
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                // `[media]` wins over the same keys in `[modules.auth.config]`.
                .chain(media)
                .collect(),
            limits: Limits {
                memory_cap: section
                    .memory_cap_mb
                    .map(|m| m << 20)
                    .unwrap_or(defaults.memory_cap),
                deadline: section
                    .deadline_ms
                    .map(Duration::from_millis)
                    .unwrap_or(defaults.deadline),
            },
        }
    }

    /// This node's name: configured, else the host name, else "node".
    pub fn node_name(&self) -> String {
        if !self.server.node.is_empty() {
            return self.server.node.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "node".into())
    }
}

#[cfg(test)]
mod tests;
