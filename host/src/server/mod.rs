//! A whole node: [`start`] wires the capability crates into one server
//! from a [`Config`] and [`Secrets`], and returns the [`Running`] node once
//! both listeners are bound (tests start nodes in-process this way; the
//! binary is this and a signal handler). The HTTP front is in [`http`].

mod admit;
mod bus;
mod dev;
mod front;
mod http;
mod journal;
mod output;
mod restart;
mod upgrade;

use crate::config::{Config, ConfigError};
use crate::reload::Modules;
use front::Http;
use roomlet_bus::Bus;
use roomlet_bus::directory::NodeInfo;
use roomlet_bus::edge::Edge;
use roomlet_bus::home::Home;
use roomlet_bus::topology::Nats;
use roomlet_events::EventSink;
use roomlet_gateway::{Gateway, GatewayMetrics, Local, Settings as GatewaySettings, Topology};
use roomlet_rooms::{Rooms, RoomsConfig, RoomsMetrics};
use roomlet_runtime::engine::{self, EngineSettings};
use roomlet_runtime::kv::{KvLimits, KvStore, KvStoreError};
use roomlet_runtime::output::OutputSink;
use roomlet_runtime::secrets::{ApiKeys, DEV_OPERATOR_TOKEN, Secret, SecretError};
use roomlet_runtime::{
    AuthFunction, Function, FunctionSpec, Limits, LoadError, Loader, RelayFunction, RuntimeMetrics,
};
use roomlet_telemetry::Registry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// No API keys and not in dev mode.
    #[error(
        "no API keys configured: set ROOMLET_API_KEYS=key:secret (or ROOMLET_API_KEYS_FILE=/run/secrets/...), \
         or start with --dev for local development"
    )]
    NoApiKeys,
    /// A component failed to load. (Not a `source`: the message already
    /// carries it, and a report would print it twice.)
    #[error("{function} component: {error}")]
    Component {
        /// Which function.
        function: Function,
        /// Why.
        error: LoadError,
    },
    /// The kv store could not be opened.
    #[error("opening the key-value store: {0}")]
    Kv(#[from] KvStoreError),
    /// The engine could not be built.
    #[error("building the wasm engine: {0}")]
    Engine(String),
    /// I/O (data directory, listeners).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The bus to other nodes could not be set up.
    #[error(transparent)]
    Bus(#[from] roomlet_bus::BusError),
    /// The node could not take its liveness lease in time.
    #[error("could not register this node in the directory within {0:?}")]
    Lease(Duration),
    /// The room event log could not be opened.
    #[error(transparent)]
    Events(#[from] roomlet_events::EventLogError),
    /// The webhooks are misconfigured.
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::WebhookError),
}

/// Secrets a node needs, read from the environment (or `*_FILE`).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// API key pairs for access tokens.
    pub api_keys: ApiKeys,
    /// The operator credential for node-wide admin operations.
    pub operator: Option<Secret>,
    /// The TURN shared secret.
    pub turn: Option<Secret>,
    /// NATS credentials.
    pub nats: roomlet_bus::NatsCredentials,
    /// The media providers' secrets.
    pub media: crate::config::media::MediaSecrets,
}

impl Secrets {
    /// Reads `ROOMLET_API_KEYS`, `ROOMLET_OPERATOR_TOKEN` and
    /// `ROOMLET_TURN_SECRET` (each also as `*_FILE`).
    pub fn from_env() -> Result<Self, SecretError> {
        let api_keys = match roomlet_runtime::secrets::from_env("ROOMLET_API_KEYS")? {
            Some(s) => ApiKeys::parse("ROOMLET_API_KEYS", &s)?,
            None => ApiKeys::default(),
        };
        Ok(Self {
            api_keys,
            operator: roomlet_runtime::secrets::from_env("ROOMLET_OPERATOR_TOKEN")?,
            turn: roomlet_runtime::secrets::from_env("ROOMLET_TURN_SECRET")?,
            nats: roomlet_bus::NatsCredentials::from_env()?,
            media: crate::config::media::MediaSecrets::from_env()?,
        })
    }
}

/// A started node. Dropping it stops the listeners and closes the store;
/// [`Running::stop`] also closes every room first.
pub struct Running {
    /// Where the public listener is bound.
    pub public_addr: SocketAddr,
    /// Where the internal listener is bound.
    pub internal_addr: SocketAddr,
    /// The gateway (sessions, rooms).
    pub gateway: Arc<Gateway>,
    /// Component versions (hot reload).
    pub modules: Arc<Modules>,
    /// The room event log.
    pub events: roomlet_events::EventSink,
    /// The webhook sender, when URLs are configured.
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// This node's metrics, as `/metrics` serves them.
    pub metrics: Registry,
    kv: Arc<KvStore>,
    shutdown: watch::Sender<bool>,
    bus: Option<Arc<Bus>>,
    home: Option<Arc<Home>>,
    node_info: NodeInfo,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    data_dir: std::path::PathBuf,
    /// All-in-one nodes: every joined session's record.
    journal: Option<Arc<journal::Journal>>,
}

impl Running {
    /// Stops accepting connections.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Stops the node in order: listeners, then every room (its peers are
    /// told the room closed), then the kv store, so another node can open
    /// the same data directory right away.
    pub async fn stop(self) {
        self.shutdown();
        self.gateway.set_draining();
        self.gateway.flush().await;
        if let Some(home) = &self.home {
            // Rooms move (kv in JetStream, memory as a snapshot) instead
            // of closing; the gateways re-home them at once.
            home.release_all(self.node_info.clone()).await;
        }
        if let Some(bus) = &self.bus {
            bus.withdraw().await;
        }
        self.gateway
            .rooms
            .close_all("shutdown", Duration::from_secs(5))
            .await;
        self.events.flush().await;
        if let Some(j) = &self.journal {
            j.close();
        }
        self.kv.close();
    }

    /// Graceful drain (SIGTERM): readiness fails, every client is sent
    /// `reconnect` (to `url`, or to wherever the client's list says) and
    /// closed; waits up to `grace` for the sockets to close and (with a
    /// bus) up to half of it for the sessions to be taken over where
    /// their clients resumed, then stops.
    /// (SIGTERM on a node with a bus; one that is its whole deployment
    /// restarts instead, [`Running::restart`].)
    pub async fn drain(self, url: Option<String>, grace: Duration) {
        self.gateway.send_reconnect(url);
        let started = tokio::time::Instant::now();
        let _ = tokio::time::timeout(grace, self.gateway.until_all_closed()).await;
        if self.bus.is_some() {
            // The sessions wait here for the gateways their clients resume
            // at, which take them over with their streams; for half the
            // grace at most, so the node is gone well before an
            // orchestrator's kill (what is left resumes from its record).
            let left = (started + grace / 2).saturating_duration_since(tokio::time::Instant::now());
            let _ = tokio::time::timeout(left, self.gateway.until_moved()).await;
        }
        self.stop().await;
    }

    /// Stops an all-in-one node so that the next one on its data directory
    /// carries on its calls: sessions hand themselves over (within half of
    /// `grace`), rooms are imaged, both are written to the data directory,
    /// then the node stops. Clients see a close with 1012 and resume.
    pub async fn restart(self, grace: Duration) {
        self.shutdown();
        let image = self.gateway.image_for_restart(grace / 2).await;
        let (rooms, sessions) = (image.rooms.len(), image.sessions.len());
        let dir = self.data_dir.clone();
        match tokio::task::spawn_blocking(move || restart::save(&dir, image)).await {
            Ok(Ok(())) => tracing::info!(
                rooms,
                sessions,
                "rooms and sessions written for the next run"
            ),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot write rooms and sessions for the next run; its clients will join afresh")
            }
            Err(e) => tracing::error!(error = %e, "writing rooms and sessions failed"),
        }
        self.stop().await;
    }

    /// The bus, when the node has one.
    pub fn bus(&self) -> Option<&Arc<Bus>> {
        self.bus.as_ref()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
        for t in &self.tasks {
            t.abort();
        }
        if let Some(j) = &self.journal {
            j.close();
        }
        self.kv.close();
    }
}

/// Starts a node: loads the components, opens the data directory, binds
/// both listeners. Returns when the node is ready.
pub async fn start(config: Config, secrets: Secrets) -> Result<Running, ServerError> {
    config.validate()?;
    let functions = config.functions()?;
    let runs = |f: Function| functions.contains(&f);
    let node = config.node_name();
    let registry = Registry::new(&config.server.region, &node);
    let mut api_keys = api_keys(&config, &secrets, runs(Function::Auth))?;
    if runs(Function::Auth) {
        config
            .media
            .attach(&secrets.media, &mut api_keys)
            .map_err(|m| ServerError::Config(crate::config::ConfigError::Invalid(m)))?;
    }
    let api_keys = Arc::new(api_keys);
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| ServerError::Io {
        what: format!("creating data directory {}", data_dir.display()),
        source,
    })?;
    let kv = Arc::new(KvStore::open(
        &data_dir.join("kv.redb"),
        KvLimits::default(),
    )?);
    // After kv: its lock keeps a second node off this data directory.
    let webhooks = crate::webhooks::Webhooks::start(&config.webhooks, &api_keys, &registry)?;
    let events = EventSink::open(
        &roomlet_events::dir_in(data_dir),
        &config.events,
        &node,
        &config.server.region,
        webhooks.as_ref().map(|w| w.listener()),
        &registry,
    )?;
    let specs: HashMap<Function, FunctionSpec> = Function::ALL
        .iter()
        .map(|f| (*f, config.function_spec(*f)))
        .collect();
    let output = Arc::new(output::ToEventLog(events.clone()));
    let (loader, functions_loaded) = load(&config, &specs, &api_keys, &kv, &registry, output)?;
    let (auth, relay, rooms_fn) = functions_loaded;
    let rooms = Rooms::new(
        Arc::new(rooms_fn),
        rooms_config(&config, events.clone(), &registry),
    );
    let turn = match (&config.turn, &secrets.turn) {
        (Some(t), Some(s)) => Some((t.clone(), s.clone())),
        (Some(_), None) => {
            return Err(ServerError::Config(ConfigError::Invalid(
                "[turn] is configured but ROOMLET_TURN_SECRET (or ROOMLET_TURN_SECRET_FILE) is not set".into(),
            )));
        }
        _ => None,
    };
    let bus = match &config.nats.url {
        Some(_) => Some(
            Bus::connect(
                &config.nats,
                &secrets.nats,
                &node,
                &config.server.region,
                &registry,
            )
            .await?,
        ),
        None => None,
    };
    let mut home = None;
    let topology: Arc<dyn Topology> = match &bus {
        Some(bus) => {
            if runs(Function::Rooms) {
                let grace = Duration::from_millis(config.limits.resume_grace_ms);
                home = Some(Home::start(bus.clone(), rooms.clone(), kv.clone(), grace).await?);
            }
            let edge = if runs(Function::Relay) {
                let local = runs(Function::Rooms).then(|| rooms.clone());
                Some(Edge::start(bus.clone(), home.clone(), local).await?)
            } else {
                None
            };
            Arc::new(Nats::new(bus.clone(), edge, runs(Function::Auth)))
        }
        None => Arc::new(Local::new(rooms.clone())),
    };
    let gateway = Arc::new(Gateway::new(
        topology,
        rooms,
        (Arc::new(auth), Arc::new(relay)),
        GatewaySettings {
            limits: config.limits.clone(),
            region: config.server.region.clone(),
            regions: config.regions.clone(),
            ice_servers: config.ice_servers.clone(),
            turn,
            media: config.media.enabled(),
        },
        Arc::new(GatewayMetrics::new(&registry)),
    ));
    sample_node(&registry, &gateway);
    let journal = match bus {
        Some(_) => None,
        None => Some(restart::carry_on(&gateway, data_dir, &config)?),
    };
    let node_info = NodeInfo {
        region: config.server.region.clone(),
        functions: functions.iter().map(|f| f.to_string()).collect(),
        public_url: config.server.public_url.clone(),
        draining: false,
    };
    let mut tasks = Vec::new();
    if let Some(bus) = &bus {
        tasks.push(bus::join(bus, &gateway, &functions, &node_info).await?);
    }
    let modules = Arc::new(Modules::new(
        loader,
        specs,
        api_keys.clone(),
        kv.clone(),
        gateway.clone(),
        &registry,
    ));
    if config.server.dev {
        modules.watch_files();
    }
    // tungstenite refuses a larger frame or message before buffering it;
    // the session answers `frame-too-large` and 1009.
    let frame_cap = config.limits.max_frame_bytes;
    let http = Arc::new(Http {
        gateway: gateway.clone(),
        registry: registry.clone(),
        admin: crate::admin::Admin {
            gateway: gateway.clone(),
            modules: modules.clone(),
            operator: operator(&config, &secrets),
        },
        dev_keys: config.server.dev.then(|| api_keys.clone()),
        public_url: config.server.public_url.clone(),
        // tungstenite zero-fills its whole read buffer before every read:
        // at the 128 KiB default that was 150 KiB of RSS per idle socket and
        // the top symbol (memset) of a relay profile (BENCHMARKS.md).
        ws_config: WebSocketConfig::default()
            .read_buffer_size(2 * 1024)
            .max_message_size(Some(frame_cap))
            .max_frame_size(Some(frame_cap)),
        relay: runs(Function::Relay),
    });
    let (public, public_addr) = bind(config.server.listen, "public").await?;
    let (internal, internal_addr) = bind(config.server.internal_listen, "internal").await?;
    let (shutdown, rx) = watch::channel(false);
    let (gate, internal_gate) = admit::gates(&config.limits, &registry);
    tokio::spawn(http::accept(public, http.clone(), gate, rx.clone(), false));
    tokio::spawn(http::accept(internal, http, internal_gate, rx, true));
    tracing::info!(%public_addr, %internal_addr, region = %config.server.region, %node, "roomlet ready");
    Ok(Running {
        public_addr,
        internal_addr,
        gateway,
        modules,
        events,
        webhooks,
        metrics: registry,
        kv,
        shutdown,
        bus,
        home,
        node_info,
        tasks,
        data_dir: data_dir.clone(),
        journal,
    })
}

/// The API keys tokens are checked with: configured, or the development
/// pair with `--dev`; none on a node that does not check tokens.
fn api_keys(
    config: &Config,
    secrets: &Secrets,
    checks_tokens: bool,
) -> Result<ApiKeys, ServerError> {
    if !secrets.api_keys.is_empty() {
        Ok(secrets.api_keys.clone())
    } else if !checks_tokens {
        // Tokens are checked on an auth node; this one holds no keys.
        Ok(ApiKeys::default())
    } else if config.server.dev {
        tracing::warn!(
            "--dev: using the well-known development API key; never do this in production"
        );
        Ok(ApiKeys::dev())
    } else {
        Err(ServerError::NoApiKeys)
    }
}

/// The operator credential: configured, or in `--dev` the well-known one.
fn operator(config: &Config, secrets: &Secrets) -> Option<Secret> {
    secrets.operator.clone().or_else(|| {
        config.server.dev.then(|| {
            tracing::warn!(
                "--dev: the admin API takes the well-known operator token {DEV_OPERATOR_TOKEN:?}; never do this in production"
            );
            Secret::new(DEV_OPERATOR_TOKEN)
        })
    })
}

/// The three functions, loaded by an engine sized for the node.
type Loaded = (AuthFunction, RelayFunction, roomlet_runtime::RoomsFunction);

/// Builds the engine and loads the functions' components as `specs` say.
fn load(
    config: &Config,
    specs: &HashMap<Function, FunctionSpec>,
    api_keys: &Arc<ApiKeys>,
    kv: &Arc<KvStore>,
    registry: &Registry,
    output: Arc<dyn OutputSink>,
) -> Result<(Loader, Loaded), ServerError> {
    let max_memory = specs
        .values()
        .map(|s| s.limits.memory_cap)
        .max()
        .unwrap_or(Limits::default().memory_cap)
        .max(1 << 20);
    let engine = engine::build(EngineSettings {
        max_instances: u32::try_from(config.rooms.max_rooms)
            .unwrap_or(u32::MAX)
            .saturating_add(256),
        max_memory,
    })
    .map_err(|e| ServerError::Engine(format!("{e:#}")))?;
    let loader = Loader::new(engine, Some(config.server.data_dir.join("cache")))
        .with_metrics(Arc::new(RuntimeMetrics::new(registry)))
        .with_output(output);
    let component_err = |function| move |error| ServerError::Component { function, error };
    let auth = loader
        .auth(&specs[&Function::Auth], api_keys.clone())
        .map_err(component_err(Function::Auth))?;
    let relay = loader
        .relay(&specs[&Function::Relay])
        .map_err(component_err(Function::Relay))?;
    let rooms = loader
        .rooms(&specs[&Function::Rooms], kv.clone())
        .map_err(component_err(Function::Rooms))?;
    Ok((loader, (auth, relay, rooms)))
}

/// `[rooms]` as the room table takes it.
fn rooms_config(config: &Config, events: EventSink, registry: &Registry) -> RoomsConfig {
    let r = &config.rooms;
    RoomsConfig {
        hibernate_after: (r.hibernate_after_ms > 0)
            .then(|| Duration::from_millis(r.hibernate_after_ms)),
        max_rooms: r.max_rooms,
        max_peers_per_room: r.max_peers_per_room,
        trap_limit: r.trap_limit,
        trap_window: Duration::from_millis(r.trap_window_ms),
        events,
        metrics: RoomsMetrics::new(registry),
        ..RoomsConfig::default()
    }
}

/// A listener on `addr`, and the address it got.
async fn bind(addr: SocketAddr, which: &str) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Io {
            what: format!("binding {addr}"),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Io {
        what: format!("reading the {which} address"),
        source,
    })?;
    Ok((listener, bound))
}

/// The node's figures read at each scrape rather than tracked.
fn sample_node(registry: &Registry, gateway: &Arc<Gateway>) {
    let g = gateway.clone();
    registry.sampled_gauge(
        "roomlet_connections",
        "Open WebSocket connections.",
        move || g.connections() as f64,
    );
    let b = gateway.read_budget.clone();
    registry.sampled_gauge(
        "roomlet_unfinished_frame_bytes",
        "Bytes of client frames not yet complete (limit: unfinished_frame_bytes).",
        move || b.held() as f64,
    );
    let g = gateway.clone();
    registry.sampled_gauge(
        "roomlet_rooms",
        "Rooms on this node (live and hibernated).",
        move || g.rooms.len() as f64,
    );
    let g = gateway.clone();
    registry.sampled_gauge("roomlet_draining", "1 while the node drains.", move || {
        f64::from(u8::from(g.is_draining()))
    });
    if gateway.topology().bus_ready().is_some() {
        let g = gateway.clone();
        registry.sampled_gauge(
            "roomlet_bus_ready",
            "1 while the NATS bus is connected and this node's lease is valid.",
            move || f64::from(u8::from(g.topology().bus_ready().unwrap_or(false))),
        );
    }
}
