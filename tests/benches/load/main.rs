//! roomlet's load generator: real WebSockets, the real protocol, a real
//! server process. A bench target (`harness = false`) so `cargo test` never
//! builds it; run it with
//!
//! ```text
//! cargo build --release -p roomlet
//! cargo bench -p roomlet-tests --bench load -- <command> [--option value]...
//! ```
//!
//! `help` lists the commands; BENCHMARKS.md has the scenario commands and
//! their figures. By default the generator starts the release `roomlet`
//! itself, pinned to core 0 (`taskset -c 0`), and pins itself to core 1, so
//! the server's `/proc` CPU time is its own work.

mod args;
mod floor;
mod netns;
mod noise;
mod proto;
mod relay;
mod scenarios;
mod sweep;
mod target;

use anyhow::{Context, Result, bail};
use args::Args;
use relay::Workload;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use target::{Kind, Server, Spawn};

const HELP: &str = "\
load generator for roomlet (see BENCHMARKS.md)

commands:
  run       N rooms x M peers sending timed frames; reports frames/s, latency, CPU per frame
            --rooms 1000 --peers 4 --rate 20000|max --mix 2:1:1 (signal:message:broadcast)
            --pad 64 --warmup 3 --duration 10 --window 16 (max rate: deliveries in flight per room)
            --ack-every 100 --sources 4 --label NAME
            --tick-us 50 (fixed rate: the sender sleeps this long between batches)
            --spin false (true: the generator's clients never sleep in epoll_wait, so the
            server does not pay for waking them, as it would not for clients on other hosts)
  compare   the same `run` workload against several servers, one after the other, with ratios
            --servers wasm=target/release/roomlet,native=PATH,matchbox=/tmp/matchbox/bin/matchbox_server
            (a name starting with `matchbox` is spoken to in matchbox's protocol;
            `floor=self` adds the floor: the least a relay on tokio + tungstenite can do)
  sweep     `run` at rising fixed rates against each server: the highest rate each sustains
            with p99 under a bound (throughput at equal p99; src: benches/load/sweep.rs)
            --servers as compare --rates 5000,10000,20000 --p99-us 1000,2000,5000 --repeat 1
  floor     HOST:PORT: serve as the floor (src: benches/load/floor.rs)
  idle      N idle joined connections: server memory per connection
            --conns 10000 --per-room 50 --sources 8 --hibernate-ms 5000 --parallel 64
            --processes K: K servers and K generator processes, connections spread evenly,
            all held at once and measured together (one process may open at most
            RLIMIT_NOFILE sockets: 20,000 here, and only CAP_SYS_RESOURCE raises it)
  churn     clients joining fresh rooms and leaving: rooms created and closed per second
            --workers 16 --duration 10
  startup   spawn -> /readyz 200 with a warm artifact cache
            --runs 11
  noise     the machine's own latency floor: how late a sleeping thread wakes on each
            (idle) core; run it before a latency run
            --cpus 0,1 --duration 10 --sleep-us 50

server (all commands):
  --server-bin PATH   default: the workspace's target/release/roomlet
  --server-cpu 0      core for the server (`none`: unpinned); --gen-cpu 1 for this generator
  --data-dir DIR      the server's data dir (default: a fresh temp dir)
  --netns false       true: run generator and servers in a fresh network namespace (needs
                      root and `ip`): no host firewall rules, so no connection tracking on
                      loopback (the Docker engine's nat rule loads it for the host's)
  --fifo 0            1-99: run this generator and the servers it starts under SCHED_FIFO at
                      that priority (`chrt`, needs root), so the guest's own background work
                      (DAMON's kdamond, containerd, ksoftirqd) cannot hold a core for
                      milliseconds ahead of them; not with --spin true (the kernel's RT
                      throttling would stop a spinning generator 50 ms in every second)
  --url HOST:PORT     load a running server instead (then --pid PID for /proc figures,
                      --internal HOST:PORT for /metrics); --target roomlet|matchbox
";

fn main() -> Result<()> {
    // The floor server is started by `compare` as a child: before the
    // generator pins itself or parses options.
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if argv.first().is_some_and(|c| c == "floor") {
        let addr = argv.get(1).context("floor HOST:PORT")?;
        return floor::serve(addr.parse().context("floor HOST:PORT")?);
    }
    let args = Args::parse()?;
    if args.command == "help" {
        print!("{HELP}");
        return Ok(());
    }
    if args.get("netns", false)?
        && let Some(code) = netns::reexec()?
    {
        std::process::exit(code);
    }
    let gen_cpu = args.get("gen-cpu", "1".to_string())?;
    target::prepare_self((gen_cpu != "none").then_some(gen_cpu.as_str()));
    let fifo: u8 = args.get("fifo", 0)?;
    if fifo > 0 {
        if args.get("spin", false)? {
            bail!(
                "--fifo with --spin true: a real-time thread that never sleeps is throttled by the kernel"
            );
        }
        target::set_fifo(fifo)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tmp = tempfile::tempdir()?;
    let spawn = |kind: Kind, bin: PathBuf, tweak: &dyn Fn(&mut Spawn)| -> Result<Spawn> {
        let cpu = args.get("server-cpu", "0".to_string())?;
        let mut s = Spawn {
            kind,
            bin,
            cpu: (cpu != "none").then_some(cpu),
            data_dir: args
                .opt("data-dir")
                .map(PathBuf::from)
                .unwrap_or_else(|| tmp.path().join("data")),
            limits: Vec::new(),
            rooms: Vec::new(),
            rooms_config: Vec::new(),
            args: Vec::new(),
        };
        tweak(&mut s);
        Ok(s)
    };
    let server_bin = args
        .opt("server-bin")
        .map(PathBuf::from)
        .unwrap_or_else(target::default_roomlet_bin);
    // A running server, or one started here.
    let server = |tweak: &dyn Fn(&mut Spawn)| -> Result<Arc<Server>> {
        let kind = match args.get("target", "roomlet".to_string())?.as_str() {
            "roomlet" => Kind::Roomlet,
            "matchbox" => Kind::Matchbox,
            other => bail!("--target {other}: roomlet or matchbox"),
        };
        if let Some(url) = args.opt("url") {
            let internal = args.opt("internal").map(|a| a.parse()).transpose()?;
            return Ok(Arc::new(Server::running(
                kind,
                url.parse().context("--url HOST:PORT")?,
                internal,
                args.opt("pid").map(|p| p.parse()).transpose()?,
            )));
        }
        let bin = match kind {
            Kind::Roomlet => server_bin.clone(),
            Kind::Matchbox => target::default_matchbox_bin(),
        };
        let (s, took) = Server::start(&spawn(kind, bin, tweak)?)?;
        eprintln!("server {:?} pid {:?} ready in {took:?}", s.public, s.pid);
        Ok(Arc::new(s))
    };

    match args.command.as_str() {
        "sweep" => {
            let w = workload(&args)?;
            let list = args.get("servers", format!("roomlet={}", server_bin.display()))?;
            let rates = args.list("rates", "5000,10000,15000,20000,25000,30000")?;
            let bound = sweep::Bound {
                p99_us: args.list("p99-us", "1000,2000,5000")?,
                repeat: args.get("repeat", 1usize)?.max(1),
            };
            args.finish()?;
            sweep::sweep(&w, &rates, &server_list(&list)?, &bound, |name, bin, at| {
                run_server(&rt, at, name, bin, &spawn)
            })?;
        }
        "run" | "compare" => {
            let w = workload(&args)?;
            let limits = |s: &mut Spawn| traffic_limits(s, &w);
            if args.command == "run" {
                let label = args.get("label", "run".to_string())?;
                let srv = server(&limits)?;
                args.finish()?;
                let report = rt.block_on(relay::run(srv, &w))?;
                relay::print(&label, &w, &report);
            } else {
                let list = args.get("servers", format!("roomlet={}", server_bin.display()))?;
                args.finish()?;
                compare(&rt, &w, &list, &spawn)?;
            }
        }
        "idle" => {
            let conns = args.get("conns", 10_000usize)?;
            let per_room = args.get("per-room", 50usize)?;
            let hibernate_ms = args.get("hibernate-ms", 5000u64)?;
            let processes = args.get("processes", 1usize)?.max(1);
            let opts = scenarios::Idle {
                conns,
                per_room,
                sources: args.get("sources", 8u8)?,
                parallel: args.get("parallel", 64usize)?,
                hibernated: hibernate_ms > 0,
                hold: args.get("hold", false)?,
            };
            let per_server = conns.div_ceil(processes);
            let rooms = per_server.div_ceil(per_room.max(1));
            let tweak = |s: &mut Spawn| {
                s.limits
                    .push(format!("max_connections = {}", per_server + 1000));
                s.rooms.push(format!("max_rooms = {}", rooms + 100));
                s.rooms.push(format!("hibernate_after_ms = {hibernate_ms}"));
                s.rooms_config
                    .push(format!("\"max-participants\" = {}", per_room.max(1)));
            };
            if processes == 1 {
                let srv = server(&tweak)?;
                args.finish()?;
                rt.block_on(scenarios::idle(srv, opts))?;
            } else {
                if args.opt("url").is_some() {
                    bail!("--processes starts its own servers: drop --url");
                }
                let servers = (0..processes)
                    .map(|i| {
                        server(&|s: &mut Spawn| {
                            tweak(s);
                            s.data_dir = s.data_dir.join(format!("p{i}"));
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                args.finish()?;
                scenarios::idle_processes(&servers, &opts, hibernate_ms)?;
            }
        }
        "churn" => {
            let workers = args.get("workers", 16usize)?;
            let duration = Duration::from_secs_f64(args.get("duration", 10.0)?);
            let srv = server(&|s: &mut Spawn| {
                s.rooms_config.push("\"empty-timeout-ms\" = 0".into());
                s.rooms.push("hibernate_after_ms = 0".into());
            })?;
            args.finish()?;
            rt.block_on(scenarios::churn(srv, workers, duration))?;
        }
        "startup" => {
            let runs = args.get("runs", 11usize)?;
            let spec = spawn(Kind::Roomlet, server_bin.clone(), &|_| {})?;
            args.finish()?;
            scenarios::startup(&spec, runs)?;
        }
        "noise" | "noise-probe" => {
            let duration = Duration::from_secs_f64(args.get("duration", 10.0)?);
            let sleep = Duration::from_micros(args.get("sleep-us", 50)?);
            if args.command == "noise" {
                let cpus = args.get("cpus", "0,1".to_string())?;
                args.finish()?;
                noise::noise(&cpus, duration, sleep)?;
            } else {
                // One core's probe, started pinned by `noise`.
                let cpu = args.get("cpu", "?".to_string())?;
                args.finish()?;
                noise::run_probe(&cpu, duration, sleep);
            }
        }
        other => bail!("unknown command {other:?}; try `help`"),
    }
    Ok(())
}

fn workload(args: &Args) -> Result<Workload> {
    let rate = match args.get("rate", "20000".to_string())?.as_str() {
        "max" => None,
        r => Some(r.parse().context("--rate N or max")?),
    };
    let mix_text = args.get("mix", "2:1:1".to_string())?;
    let mix: Vec<u32> = mix_text
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("--mix A:B:C")?;
    let [a, b, c] = mix[..] else {
        bail!("--mix needs three weights, e.g. 2:1:1");
    };
    Ok(Workload {
        rooms: args.get("rooms", 1000)?,
        peers: args.get("peers", 4)?,
        rate,
        mix: [a, b, c],
        pad: args.get("pad", 64)?,
        warmup: Duration::from_secs_f64(args.get("warmup", 3.0)?),
        duration: Duration::from_secs_f64(args.get("duration", 10.0)?),
        window: args.get("window", 16)?,
        ack_every: args.get("ack-every", 100)?,
        tick: Duration::from_micros(args.get("tick-us", 50)?),
        sources: args.get("sources", 4)?,
        setup_parallel: args.get("setup-parallel", 32)?,
        spin: args.get("spin", false)?,
    })
}

/// Lifts the per-connection rate limit for max-rate runs (the server's
/// limit, not its capacity, would be measured otherwise) and makes room
/// for the rooms.
fn traffic_limits(s: &mut Spawn, w: &Workload) {
    if w.rate.is_none()
        || w.rate
            .is_some_and(|r| r / (w.rooms * w.peers) as f64 > 50.0)
    {
        s.limits.push("frames_per_second = 1000000".into());
        s.limits.push("frame_burst = 1000000".into());
    }
    s.rooms
        .push(format!("max_rooms = {}", w.rooms.max(10_000) + 100));
    s.rooms_config
        .push(format!("\"max-participants\" = {}", w.peers.max(50)));
}

/// Builds a server's start-up settings: kind, binary, config tweaks.
type SpawnFn<'a> = dyn Fn(Kind, PathBuf, &dyn Fn(&mut Spawn)) -> Result<Spawn> + 'a;

/// `--servers NAME=PATH,NAME=PATH` as pairs.
fn server_list(list: &str) -> Result<Vec<(&str, &str)>> {
    list.split(',')
        .map(|item| {
            item.split_once('=')
                .context("--servers NAME=PATH,NAME=PATH")
        })
        .collect()
}

/// Starts the server `name` names (a name starting with `matchbox` speaks
/// matchbox's protocol; `floor…` is this generator's floor), runs `w`
/// against it, and stops it. Every run gets a fresh server and data dir:
/// no run inherits another's rooms, peers or cache.
fn run_server(
    rt: &tokio::runtime::Runtime,
    w: &Workload,
    name: &str,
    bin: &str,
    spawn: &SpawnFn<'_>,
) -> Result<relay::Report> {
    let floor = name.starts_with("floor");
    let kind = if name.starts_with("matchbox") || floor {
        Kind::Matchbox
    } else {
        Kind::Roomlet
    };
    let bin = if floor {
        std::env::current_exe().context("this generator's path, for the floor")?
    } else {
        PathBuf::from(bin)
    };
    let spec = spawn(kind, bin, &|s| {
        traffic_limits(s, w);
        if floor {
            s.args = vec!["floor".into()];
        }
    })?;
    let (srv, took) = Server::start(&spec)?;
    eprintln!("{name}: pid {:?} ready in {took:?}", srv.pid);
    let srv = Arc::new(srv);
    let report = rt.block_on(relay::run(srv.clone(), w));
    drop(srv);
    let _ = std::fs::remove_dir_all(&spec.data_dir);
    report
}

fn compare(
    rt: &tokio::runtime::Runtime,
    w: &Workload,
    list: &str,
    spawn: &SpawnFn<'_>,
) -> Result<()> {
    let mut rows = Vec::new();
    for (name, bin) in server_list(list)? {
        let report = run_server(rt, w, name, bin, spawn)?;
        relay::print(name, w, &report);
        rows.push((name.to_string(), report));
    }
    let Some((base_name, base)) = rows.first() else {
        return Ok(());
    };
    println!("== compare (ratios against {base_name})");
    println!(
        "   server      delivered/s   ratio   p50 µs   p99 µs  p99.9 µs  CPU µs/frame  ratio  kernel"
    );
    for (name, r) in &rows {
        let cpu = r.server_cpu_per_frame_us.unwrap_or(f64::NAN);
        println!(
            "   {name:<10} {:>12.0}  {:>6.2}x  {:>7.0}  {:>7.0}  {:>8.0}  {:>12.2}  {:>5.2}x  {:>5.0} %",
            r.delivered_per_s,
            r.delivered_per_s / base.delivered_per_s,
            r.latency[0],
            r.latency[1],
            r.latency[2],
            cpu,
            cpu / base.server_cpu_per_frame_us.unwrap_or(f64::NAN),
            r.server_sys_share.unwrap_or(f64::NAN) * 100.0,
        );
    }
    Ok(())
}
