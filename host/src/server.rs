//! The HTTP side: the public listener (`/v1/ws`, `/demo`, `/healthz`,
//! `/readyz`, and `/v1/dev/token` in dev mode) and the internal one
//! (`/metrics`), on hyper 1.x. [`start`] wires a whole node from a
//! [`Config`] and returns once both listeners are bound.

use crate::config::{Config, ConfigError};
use crate::reload::Modules;
use crate::tokens::{self, TokenRequest};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use roomlet_bus::Bus;
use roomlet_bus::directory::NodeInfo;
use roomlet_bus::edge::Edge;
use roomlet_bus::home::Home;
use roomlet_bus::topology::Nats;
use roomlet_gateway::ClientInfo;
use roomlet_gateway::{
    Encoding, Gateway, GatewayMetrics, Local, Settings as GatewaySettings, Topology,
};
use roomlet_rooms::RoomsMetrics;
use roomlet_rooms::{Rooms, RoomsConfig};
use roomlet_runtime::RuntimeMetrics;
use roomlet_runtime::engine::{self, EngineSettings};
use roomlet_runtime::kv::{KvLimits, KvStore, KvStoreError};
use roomlet_runtime::secrets::{ApiKeys, Secret, SecretError};
use roomlet_runtime::{Function, LoadError, Loader};
use roomlet_telemetry::Registry;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

static DEMO_HTML: &str = include_str!("../../clients/js/demo.html");
static CLIENT_JS: &str = include_str!("../../clients/js/roomlet.js");

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
    /// A component failed to load.
    #[error("{function} component: {source}")]
    Component {
        /// Which function.
        function: Function,
        /// Why.
        source: LoadError,
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
        self.kv.close();
    }

    /// Graceful drain (SIGTERM): readiness fails, every client is sent
    /// `reconnect` (to `url`, or to wherever the client's list says) and
    /// closed; waits up to `grace` for the sessions to end, then stops.
    pub async fn drain(self, url: Option<String>, grace: Duration) {
        self.gateway.send_reconnect(url);
        let _ = tokio::time::timeout(grace, self.gateway.until_all_closed()).await;
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
        self.kv.close();
    }
}

struct Http {
    gateway: Arc<Gateway>,
    registry: Registry,
    admin: crate::admin::Admin,
    dev_keys: Option<Arc<ApiKeys>>,
    public_url: Option<String>,
    ws_config: WebSocketConfig,
    relay: bool,
}

/// Starts a node: loads the components, opens the data directory, binds
/// both listeners. Returns when the node is ready.
pub async fn start(config: Config, secrets: Secrets) -> Result<Running, ServerError> {
    config.validate()?;
    let functions = config.functions()?;
    let runs = |f: Function| functions.contains(&f);
    let dev = config.server.dev;
    let node = config.node_name();
    let registry = Registry::new(&config.server.region, &node);
    let api_keys = if !secrets.api_keys.is_empty() {
        secrets.api_keys.clone()
    } else if !runs(Function::Auth) {
        // Tokens are checked on an auth node; this one holds no keys.
        ApiKeys::default()
    } else if dev {
        tracing::warn!(
            "--dev: using the well-known development API key; never do this in production"
        );
        ApiKeys::dev()
    } else {
        return Err(ServerError::NoApiKeys);
    };
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
    let events = roomlet_events::EventSink::open(
        &roomlet_events::dir_in(data_dir),
        &config.events,
        &node,
        &config.server.region,
        webhooks.as_ref().map(|w| w.listener()),
        &registry,
    )?;
    let specs: std::collections::HashMap<Function, roomlet_runtime::FunctionSpec> = Function::ALL
        .iter()
        .map(|f| (*f, config.function_spec(*f)))
        .collect();
    let max_memory = Function::ALL
        .iter()
        .map(|f| config.function_spec(*f).limits.memory_cap)
        .max()
        .unwrap_or(64 << 20)
        .max(1 << 20);
    let engine = engine::build(EngineSettings {
        max_instances: u32::try_from(config.rooms.max_rooms)
            .unwrap_or(u32::MAX)
            .saturating_add(256),
        max_memory,
    })
    .map_err(|e| ServerError::Engine(format!("{e:#}")))?;
    let loader = Loader::new(engine, Some(data_dir.join("cache")))
        .with_metrics(Arc::new(RuntimeMetrics::new(&registry)));
    let component_err = |function| move |source| ServerError::Component { function, source };
    let auth = loader
        .auth(&config.function_spec(Function::Auth), api_keys.clone())
        .map_err(component_err(Function::Auth))?;
    let relay = loader
        .relay(&config.function_spec(Function::Relay))
        .map_err(component_err(Function::Relay))?;
    let rooms_fn = loader
        .rooms(&config.function_spec(Function::Rooms), kv.clone())
        .map_err(component_err(Function::Rooms))?;
    let r = &config.rooms;
    let rooms = Rooms::new(
        Arc::new(rooms_fn),
        RoomsConfig {
            hibernate_after: (r.hibernate_after_ms > 0)
                .then(|| Duration::from_millis(r.hibernate_after_ms)),
            max_rooms: r.max_rooms,
            max_peers_per_room: r.max_peers_per_room,
            trap_limit: r.trap_limit,
            trap_window: Duration::from_millis(r.trap_window_ms),
            events: events.clone(),
            metrics: RoomsMetrics::new(&registry),
            ..RoomsConfig::default()
        },
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
    let mut tasks = Vec::new();
    let mut home = None;
    let topology: Arc<dyn Topology> = match &bus {
        Some(bus) => {
            if runs(Function::Rooms) {
                home = Some(Home::start(bus.clone(), rooms.clone(), kv.clone()).await?);
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
        rooms.clone(),
        (Arc::new(auth), Arc::new(relay)),
        GatewaySettings {
            limits: config.limits.clone(),
            region: config.server.region.clone(),
            regions: config.regions.clone(),
            ice_servers: config.ice_servers.clone(),
            turn,
        },
        Arc::new(GatewayMetrics::new(&registry)),
    ));
    sample_node(&registry, &gateway);
    let node_info = NodeInfo {
        region: config.server.region.clone(),
        functions: functions.iter().map(|f| f.to_string()).collect(),
        public_url: config.server.public_url.clone(),
        draining: false,
    };
    if let Some(bus) = &bus {
        if runs(Function::Auth) {
            let g = gateway.clone();
            roomlet_bus::auth::serve(bus.clone(), Arc::new(move || g.auth())).await?;
        }
        if runs(Function::Relay) {
            let g = gateway.clone();
            bus.on_session_gone(move |token| {
                let g = g.clone();
                async move { g.end_resumed_elsewhere(&token).await }
            })
            .await?;
            let g = gateway.clone();
            bus.on_reap(move |r| {
                let g = g.clone();
                async move { g.reap_parked(&r.room, &r.identity, &r.peer).await }
            })
            .await?;
        }
        tasks.push(tokio::spawn(bus.clone().keep_alive(node_info.clone())));
        let within = Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + within;
        while !bus.lease_valid() {
            if tokio::time::Instant::now() > deadline {
                return Err(ServerError::Lease(within));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Before serving: what this name held until now is gone.
        bus.hello().await;
    }
    let modules = Arc::new(Modules::new(
        loader,
        specs,
        api_keys.clone(),
        kv.clone(),
        gateway.clone(),
        &registry,
    ));
    if dev {
        modules.watch_files();
    }
    let frame_cap = config.limits.max_frame_bytes.saturating_mul(4);
    let http = Arc::new(Http {
        gateway: gateway.clone(),
        registry: registry.clone(),
        admin: crate::admin::Admin {
            gateway: gateway.clone(),
            modules: modules.clone(),
            operator: secrets.operator.clone(),
        },
        dev_keys: dev.then(|| api_keys.clone()),
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
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Io {
                what: format!("binding {addr}"),
                source,
            })
    };
    let public = bind(config.server.listen).await?;
    let internal = bind(config.server.internal_listen).await?;
    let public_addr = public.local_addr().map_err(|source| ServerError::Io {
        what: "reading the public address".into(),
        source,
    })?;
    let internal_addr = internal.local_addr().map_err(|source| ServerError::Io {
        what: "reading the internal address".into(),
        source,
    })?;
    let (shutdown, rx) = watch::channel(false);
    tokio::spawn(accept(public, http.clone(), rx.clone(), false));
    tokio::spawn(accept(internal, http, rx, true));
    tracing::info!(%public_addr, %internal_addr, region = %config.server.region, node = %config.node_name(), "roomlet ready");
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
    })
}

async fn accept(
    listener: TcpListener,
    http: Arc<Http>,
    mut shutdown: watch::Receiver<bool>,
    internal: bool,
) {
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let http = http.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let http = http.clone();
                async move {
                    Ok::<_, Infallible>(if internal {
                        route_internal(&http, req).await
                    } else {
                        route_public(http, req, addr)
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "http connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn with_type(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn route_public(
    http: Arc<Http>,
    req: Request<Incoming>,
    addr: SocketAddr,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/v1/ws" if !http.relay => text(
            StatusCode::NOT_FOUND,
            "this node does not run the relay function; connect to a gateway\n",
        ),
        "/v1/ws" => upgrade(http, req, addr),
        "/demo" | "/demo/" => with_type(DEMO_HTML, "text/html; charset=utf-8"),
        "/demo/roomlet.js" => with_type(CLIENT_JS, "text/javascript; charset=utf-8"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => ready(&http),
        "/v1/dev/token" => dev_token(&http, &req),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn route_internal(http: &Http, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path().starts_with("/v1/admin/") {
        return http.admin.handle(req).await;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => ready(http),
        "/metrics" => metrics(http),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn ready(http: &Http) -> Response<Full<Bytes>> {
    match http.gateway.readiness() {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

fn metrics(http: &Http) -> Response<Full<Bytes>> {
    with_type_owned(
        http.registry.render(),
        "text/plain; version=0.0.4; charset=utf-8",
    )
}

/// The node's figures read at each scrape rather than tracked.
fn sample_node(registry: &Registry, gateway: &Arc<Gateway>) {
    let g = gateway.clone();
    registry.sampled_gauge(
        "roomlet_connections",
        "Open WebSocket connections.",
        move || g.connections() as f64,
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

fn with_type_owned(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `--dev` only: a token for any room and identity, for the demo page.
fn dev_token(http: &Http, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(keys) = &http.dev_keys else {
        return text(
            StatusCode::NOT_FOUND,
            "not found (the demo token endpoint exists only with --dev)\n",
        );
    };
    let Some((key, secret)) = keys.first() else {
        return text(StatusCode::NOT_FOUND, "no API key\n");
    };
    let room = query_param(req, "room").unwrap_or_else(|| "demo".into());
    let identity = query_param(req, "identity").unwrap_or_else(|| "guest".into());
    if room.is_empty() || room.len() > 128 || identity.is_empty() || identity.len() > 128 {
        return text(
            StatusCode::BAD_REQUEST,
            "room and identity must be 1 to 128 characters\n",
        );
    }
    let token = tokens::mint(
        key,
        secret,
        &TokenRequest {
            room,
            name: Some(identity.clone()),
            identity,
            metadata: None,
            ttl: Duration::from_secs(3600),
            admin: false,
            create: true,
        },
    );
    let url = http.public_url.clone().unwrap_or_else(|| {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1:7700");
        format!("ws://{host}/v1/ws")
    });
    let body = serde_json::json!({ "token": token, "url": url }).to_string();
    with_type_owned(body, "application/json")
}

fn header_has(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The WebSocket handshake: checks it, picks the subprotocol, answers 101
/// and hands the upgraded connection to a gateway session.
fn upgrade(http: Arc<Http>, req: Request<Incoming>, addr: SocketAddr) -> Response<Full<Bytes>> {
    if !header_has(&req, header::UPGRADE, "websocket")
        || !header_has(&req, header::CONNECTION, "upgrade")
    {
        return text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket only\n",
        );
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return text(
            StatusCode::BAD_REQUEST,
            "unsupported WebSocket version (13 required)\n",
        );
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let encoding = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(Encoding::from_protocol);
    let Some(encoding) = encoding else {
        return text(
            StatusCode::BAD_REQUEST,
            "unsupported subprotocol: offer roomlet.v1.json or roomlet.v1.msgpack\n",
        );
    };
    let headers = ["user-agent", "origin", "x-forwarded-for"]
        .iter()
        .filter_map(|n| {
            let v = req.headers().get(*n)?.to_str().ok()?;
            Some((n.to_string(), v.chars().take(256).collect()))
        })
        .collect();
    let client = ClientInfo {
        addr: addr.to_string(),
        headers,
    };
    let gateway = http.gateway.clone();
    let ws_config = http.ws_config;
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config),
                )
                .await;
                // A task of its own: the upgrade's state is freed, not
                // carried for the whole session.
                tokio::spawn(roomlet_gateway::serve(gateway, ws, encoding, client));
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(encoding.protocol()),
    );
    r
}
