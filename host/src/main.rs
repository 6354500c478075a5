//! The `roomlet` binary: arguments, tracing, wiring. Everything else is
//! in the library, so tests start the same server in-process.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use roomlet::config::{Config, ModuleSection};
use roomlet::runtime::secrets::ApiKeys;
use roomlet::server::{self, Secrets};
use roomlet::tokens::{self, TokenRequest};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "roomlet",
    version,
    about = "Edge-deployable WebRTC signaling runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (all functions in one process by default).
    Serve(Box<ServeArgs>),
    /// Access tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Create something new from a template.
    New {
        #[command(subcommand)]
        what: NewCommand,
    },
    /// The room event log (docs/events.md).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Exit 0 when the server at --url answers ready (for health checks).
    Health {
        /// Readiness URL.
        #[arg(
            long,
            env = "ROOMLET_HEALTH_URL",
            default_value = "http://127.0.0.1:7700/readyz"
        )]
        url: String,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "ROOMLET_CONFIG")]
    config: Option<PathBuf>,
    /// Public listener address.
    #[arg(long, env = "ROOMLET_LISTEN")]
    listen: Option<SocketAddr>,
    /// Internal listener address (metrics, admin).
    #[arg(long, env = "ROOMLET_INTERNAL_LISTEN")]
    internal_listen: Option<SocketAddr>,
    /// Functions to run: any of auth,rooms,relay.
    #[arg(long, env = "ROOMLET_FUNCTIONS", value_delimiter = ',')]
    functions: Option<Vec<String>>,
    /// Replace a default component: FUNCTION=PATH.wasm (repeatable). With
    /// --dev the file is watched: rebuild it and the node reloads it, live
    /// rooms and sockets kept.
    #[arg(long = "module", env = "ROOMLET_MODULES", value_delimiter = ',')]
    modules: Vec<String>,
    /// A module's own config (what its `config.get` sees): FUNCTION.KEY=VALUE
    /// for one key, or FUNCTION=FILE.toml for a table of them (repeatable;
    /// VALUE is read as TOML when it parses, as a string otherwise).
    #[arg(
        long = "module-config",
        value_name = "FUNCTION.KEY=VALUE|FUNCTION=FILE"
    )]
    module_config: Vec<String>,
    /// Data directory (kv, event log, artifact cache).
    #[arg(long, env = "ROOMLET_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// This node's region.
    #[arg(long, env = "ROOMLET_REGION")]
    region: Option<String>,
    /// This node's name.
    #[arg(long, env = "ROOMLET_NODE")]
    node: Option<String>,
    /// Public WebSocket URL of this node.
    #[arg(long, env = "ROOMLET_PUBLIC_URL")]
    public_url: Option<String>,
    /// NATS URL (split and multi-node deployments).
    #[arg(long, env = "ROOMLET_NATS")]
    nats: Option<String>,
    /// Subject and bucket prefix on NATS, one per deployment.
    #[arg(long, env = "ROOMLET_NATS_PREFIX")]
    nats_prefix: Option<String>,
    /// Log format.
    #[arg(long, env = "ROOMLET_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Development mode: well-known API key and operator token, demo token
    /// endpoint, --module files watched and reloaded when they change.
    #[arg(long, env = "ROOMLET_DEV")]
    dev: bool,
}

#[derive(Subcommand)]
enum NewCommand {
    /// A rooms plugin (Rust crate or Python app) to start from: see docs/plugins.md.
    Plugin {
        /// Plugin name; also the directory created.
        name: String,
        /// Where to create the plugin's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// rust (cargo, wasm32-wasip2) or python (componentize-py).
        #[arg(long, default_value = "rust", value_parser = ["rust", "python"])]
        lang: String,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print events (one JSON object per line), oldest first.
    Tail {
        /// Data directory of the node (its events are in DIR/events).
        #[arg(long, env = "ROOMLET_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// TOML configuration file, for its server.data_dir.
        #[arg(long, env = "ROOMLET_CONFIG")]
        config: Option<PathBuf>,
        /// Only the last N events (default: every event kept).
        #[arg(short = 'n', long = "lines")]
        lines: Option<usize>,
        /// Keep printing events as they are appended.
        #[arg(short = 'f', long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print one access token on stdout.
    Create {
        /// Room the token is for.
        #[arg(long)]
        room: String,
        /// Identity (`sub`).
        #[arg(long)]
        identity: String,
        /// Lifetime, e.g. 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Application metadata (often JSON).
        #[arg(long)]
        metadata: Option<String>,
        /// Grant roomAdmin for the room.
        #[arg(long)]
        admin: bool,
        /// Do not grant roomCreate (joining then needs the room to exist).
        #[arg(long)]
        no_create: bool,
        /// Sign with the development key (as `serve --dev` accepts).
        #[arg(long, env = "ROOMLET_DEV")]
        dev: bool,
    },
}

/// A lifetime: `90s`, `30m`, `1h`, `7d`, `1h30m` (humantime), or bare seconds.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("bad duration {s:?} ({e}): expected e.g. 30m or 1h"))?,
    };
    if d.is_zero() {
        return Err("the lifetime must be positive".into());
    }
    Ok(d)
}

fn init_tracing(json: bool) {
    // The WebSocket library logs whole frames (access tokens included) at
    // DEBUG/TRACE, the NATS client its protocol lines (CONNECT carries the
    // credentials), and cranelift logs gigabytes: whatever RUST_LOG asks,
    // they stay at INFO, so no level can leak a secret into the log.
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let spec = format!(
        "{spec},tungstenite=info,tokio_tungstenite=info,async_nats=info,cranelift_codegen=info,wasmtime_internal_cranelift=info"
    );
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: files and log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the command. A failure prints as its chain of causes, one a line,
/// and exits 1: never with a backtrace, whatever `RUST_BACKTRACE` says,
/// since these are a user's errors (a missing file, a refused component),
/// not the program's.
pub(crate) fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Token {
            command:
                TokenCommand::Create {
                    room,
                    identity,
                    ttl,
                    name,
                    metadata,
                    admin,
                    no_create,
                    dev,
                },
        } => {
            let keys = Secrets::from_env()
                .context("reading ROOMLET_API_KEYS")?
                .api_keys;
            let keys = if !keys.is_empty() {
                keys
            } else if dev {
                ApiKeys::dev()
            } else {
                bail!(
                    "no API keys configured: set ROOMLET_API_KEYS=key:secret (or ROOMLET_API_KEYS_FILE), or pass --dev"
                );
            };
            let Some((key, secret)) = keys.first() else {
                bail!("no API key");
            };
            let request = TokenRequest {
                room,
                identity,
                name,
                metadata,
                ttl,
                admin,
                create: !no_create,
            };
            println!("{}", tokens::mint(key, secret, &request));
            Ok(())
        }
        Command::New {
            what: NewCommand::Plugin { name, dir, lang },
        } => {
            use roomlet::scaffold;
            let lang: scaffold::Lang = lang.parse().map_err(anyhow::Error::msg)?;
            let root = scaffold::new_plugin(&name, &dir, lang)?;
            println!(
                "created {}\nbuild it:  cd {} && {}\nrun it:    roomlet serve --dev --module rooms={}\n(--dev reloads the plugin each time the build rewrites it)",
                root.display(),
                root.display(),
                scaffold::build_command(&name, lang),
                scaffold::wasm_path(&name, lang).display(),
            );
            Ok(())
        }
        Command::Events {
            command:
                EventsCommand::Tail {
                    data_dir,
                    config,
                    lines,
                    follow,
                },
        } => {
            let data_dir = match data_dir {
                Some(d) => d,
                None => {
                    Config::load(config.as_deref())
                        .context("loading configuration")?
                        .server
                        .data_dir
                }
            };
            events_tail(&roomlet::events::dir_in(&data_dir), lines, follow)
        }
        Command::Health { url } => health(&url),
    }
}

/// `[modules.FUNCTION]` of `config`, created empty when absent.
fn module_section(config: &mut Config, function: roomlet::runtime::Function) -> &mut ModuleSection {
    config
        .modules
        .entry(function.name().to_owned())
        .or_default()
}

/// One `--module-config`: `FUNCTION.KEY=VALUE` or `FUNCTION=FILE.toml`.
fn module_config(
    arg: &str,
) -> Result<(
    roomlet::runtime::Function,
    std::collections::HashMap<String, toml::Value>,
)> {
    let Some((lhs, rhs)) = arg.split_once('=') else {
        bail!("--module-config {arg:?}: expected FUNCTION.KEY=VALUE or FUNCTION=FILE.toml");
    };
    let (function, key) = match lhs.split_once('.') {
        Some((f, k)) => (f, Some(k)),
        None => (lhs, None),
    };
    let function: roomlet::runtime::Function = function
        .parse()
        .map_err(|e| anyhow::anyhow!("--module-config {arg:?}: {e}"))?;
    let table = match key {
        Some("") => bail!("--module-config {arg:?}: the key is empty"),
        Some(key) => {
            // `x = VALUE` parses as TOML when VALUE is a TOML value
            // (50, true, [1, 2], "quoted"); anything else is a plain string.
            let value = toml::from_str::<toml::Table>(&format!("x = {rhs}"))
                .ok()
                .and_then(|mut t| t.remove("x"))
                .unwrap_or_else(|| toml::Value::String(rhs.to_owned()));
            [(key.to_owned(), value)].into()
        }
        None => {
            let text = std::fs::read_to_string(rhs)
                .with_context(|| format!("--module-config {arg:?}: reading {rhs}"))?;
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("--module-config {arg:?}: {rhs} is not TOML"))?;
            table.into_iter().collect()
        }
    };
    Ok((function, table))
}

fn serve(args: ServeArgs) -> Result<()> {
    init_tracing(args.log_format == "json");
    let mut config = Config::load(args.config.as_deref()).context("loading configuration")?;
    let s = &mut config.server;
    if let Some(v) = args.listen {
        s.listen = v;
    }
    if let Some(v) = args.internal_listen {
        s.internal_listen = v;
    }
    if let Some(v) = args.functions {
        s.functions = v;
    }
    if let Some(v) = args.data_dir {
        s.data_dir = v;
    }
    if let Some(v) = args.region {
        s.region = v;
    }
    if let Some(v) = args.node {
        s.node = v;
    }
    if let Some(v) = args.public_url {
        s.public_url = Some(v);
    }
    s.dev |= args.dev;
    if let Some(url) = args.nats {
        config.nats.url = Some(url);
    }
    if let Some(prefix) = args.nats_prefix {
        config.nats.prefix = prefix;
    }
    for m in &args.modules {
        let Some((function, path)) = m.split_once('=') else {
            bail!("--module {m:?}: expected FUNCTION=PATH.wasm");
        };
        let function: roomlet::runtime::Function = function.parse().map_err(anyhow::Error::msg)?;
        module_section(&mut config, function).path = Some(PathBuf::from(path));
    }
    for c in &args.module_config {
        let (function, table) = module_config(c)?;
        module_section(&mut config, function).config.extend(table);
    }
    let secrets = Secrets::from_env().context("reading secrets")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let dev = config.server.dev;
        let grace = std::time::Duration::from_millis(config.server.drain_grace_ms);
        // Where draining clients are sent: another region's gateway.
        let hint = config
            .regions
            .iter()
            .find(|r| r.name != config.server.region)
            .map(|r| r.url.clone());
        // As the server decides it: --dev and no operator credential set.
        let dev_operator = dev && secrets.operator.is_none();
        let running = server::start(config, secrets)
            .await
            .context("starting roomlet")?;
        let shown = match running.public_addr {
            a if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
            a => a.to_string(),
        };
        println!("roomlet is listening on http://{shown}");
        println!("internal listener on http://{}", running.internal_addr);
        let modules = running.modules.list();
        for f in roomlet::runtime::Function::ALL {
            if let Some(v) = modules.get(&f).and_then(|v| v.last()) {
                println!("{f}: {} ({})", v.origin, v.version);
            }
        }
        if dev {
            println!("demo: open http://{shown}/demo in two browser tabs");
            if dev_operator {
                println!(
                    "admin API: operator token {:?} (dev only)",
                    roomlet::runtime::secrets::DEV_OPERATOR_TOKEN
                );
            }
        }
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        if running.bus().is_none() {
            // The whole deployment in one process: the next process on
            // this data directory carries the calls on (docs/protocol.md,
            // "Restarts"); there is nowhere else to send them.
            tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "shutting down: writing rooms and sessions for the next run"
            );
            running.restart(grace).await;
        } else {
            tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "shutting down: sending clients elsewhere, moving rooms"
            );
            running.drain(hint, grace).await;
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Prints the log's last events, then follows it when asked.
fn events_tail(dir: &std::path::Path, lines: Option<usize>, follow: bool) -> Result<()> {
    let (first, mut tail) = roomlet::events::read_last(dir, lines)
        .with_context(|| format!("reading the event log in {}", dir.display()))?;
    if first.is_empty() && !follow && roomlet::events::segments(dir)?.is_empty() {
        eprintln!("no event log in {}", dir.display());
    }
    let mut out = std::io::stdout().lock();
    let mut print = |lines: Vec<String>| -> bool {
        for l in lines {
            // A closed pipe (`| head`) ends the command quietly.
            if writeln!(out, "{l}").is_err() {
                return false;
            }
        }
        out.flush().is_ok()
    };
    if !print(first) || !follow {
        return Ok(());
    }
    loop {
        let new = tail
            .poll()
            .with_context(|| format!("reading the event log in {}", dir.display()))?;
        if new.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        } else if !print(new) {
            return Ok(());
        }
    }
}

/// A minimal HTTP/1.1 GET (no TLS): the image has no shell or curl.
fn health(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/readyz"),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} resolves to nothing"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .context("sending the request")?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).context("reading the response")?;
    let head = String::from_utf8_lossy(&buf[..n]);
    if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        bail!("not ready: {}", head.lines().next().unwrap_or("no answer"))
    }
}
