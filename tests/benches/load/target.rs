//! The server under load: a child process this generator starts (pinned to
//! its own core, so its CPU time is its own) or a running one given by URL,
//! and what `/proc` says about it.

use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server speaks on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// roomlet (`/v1/ws`, `roomlet.v1.json`).
    Roomlet,
    /// `matchbox_server` (`/<room>`, its JSON events).
    Matchbox,
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// Which protocol it speaks.
    pub kind: Kind,
    /// The executable.
    pub bin: PathBuf,
    /// Core to pin it to (`taskset -c`); None: unpinned.
    pub cpu: Option<String>,
    /// Data directory (roomlet); reused to keep the artifact cache warm.
    pub data_dir: PathBuf,
    /// `[limits]` and `[rooms]` overrides, as TOML lines per section.
    pub limits: Vec<String>,
    /// `[rooms]` overrides.
    pub rooms: Vec<String>,
    /// `[modules.rooms.config]` entries.
    pub rooms_config: Vec<String>,
    /// Matchbox protocol: arguments before the listen address (the floor
    /// server is this generator's own `floor` command).
    pub args: Vec<String>,
}

/// A server to load: its addresses and, when known, its pid.
pub struct Server {
    /// Which protocol it speaks.
    pub kind: Kind,
    /// Public `host:port`.
    pub public: SocketAddr,
    /// roomlet's internal listener (`/metrics`), when known.
    pub internal: Option<SocketAddr>,
    /// For `/proc` figures.
    pub pid: Option<u32>,
    child: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The default roomlet release binary of this workspace.
pub fn default_roomlet_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/roomlet")
}

/// Where `cargo install matchbox_server --root /tmp/matchbox` puts it.
pub fn default_matchbox_bin() -> PathBuf {
    PathBuf::from("/tmp/matchbox/bin/matchbox_server")
}

impl Server {
    /// A server already running at `public` (pid for `/proc`, optional).
    pub fn running(
        kind: Kind,
        public: SocketAddr,
        internal: Option<SocketAddr>,
        pid: Option<u32>,
    ) -> Self {
        Self {
            kind,
            public,
            internal,
            pid,
            child: None,
        }
    }

    /// Starts `spec` and returns once it answers (roomlet: `/readyz` 200;
    /// matchbox: its port accepts), with the time that took.
    pub fn start(spec: &Spawn) -> Result<(Self, Duration)> {
        if !spec.bin.exists() {
            // `cargo bench` runs this in `tests/`: say where a relative
            // path was looked for.
            bail!(
                "{} not found: {}",
                std::path::absolute(&spec.bin)
                    .unwrap_or_else(|_| spec.bin.clone())
                    .display(),
                match spec.kind {
                    Kind::Roomlet => "run `cargo build --release -p roomlet`",
                    Kind::Matchbox => "run `cargo install matchbox_server --root /tmp/matchbox`",
                }
            );
        }
        std::fs::create_dir_all(&spec.data_dir)?;
        let public: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let internal: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut cmd = match &spec.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu).arg(&spec.bin);
                c
            }
            None => Command::new(&spec.bin),
        };
        match spec.kind {
            Kind::Roomlet => {
                let config = spec.data_dir.join("load-config.toml");
                std::fs::write(&config, spec.config_toml())?;
                cmd.arg("serve")
                    .arg("--dev")
                    .arg("--config")
                    .arg(&config)
                    .arg("--listen")
                    .arg(public.to_string())
                    .arg("--internal-listen")
                    .arg(internal.to_string())
                    .arg("--data-dir")
                    .arg(&spec.data_dir)
                    .env("RUST_LOG", "warn");
            }
            Kind::Matchbox => {
                cmd.args(&spec.args)
                    .arg(public.to_string())
                    .env("RUST_LOG", "warn");
            }
        }
        let log = std::fs::File::create(spec.data_dir.join("server.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let started = Instant::now();
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let mut server = Self {
            kind: spec.kind,
            public,
            internal: (spec.kind == Kind::Roomlet).then_some(internal),
            pid: Some(child.id()),
            child: Some(child),
        };
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Some(child) = server.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "server exited with {status}; see {}",
                    spec.data_dir.join("server.log").display()
                );
            }
            let up = match spec.kind {
                Kind::Roomlet => http_get(public, "/readyz").is_ok_and(|(code, _)| code == 200),
                Kind::Matchbox => TcpStream::connect(public).is_ok(),
            };
            if up {
                return Ok((server, started.elapsed()));
            }
            if Instant::now() > deadline {
                bail!("server not ready within 120 s");
            }
            std::thread::sleep(Duration::from_micros(250));
        }
    }

    /// Stops a child with SIGTERM-less kill and waits for it.
    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// RSS and CPU time now.
    pub fn sample(&self) -> Option<ProcSample> {
        self.pid.and_then(|p| ProcSample::read(&p.to_string()))
    }

    /// A gauge from roomlet's `/metrics` (sum over label sets).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (code, body) = http_get(self.internal?, "/metrics").ok()?;
        if code != 200 {
            return None;
        }
        let mut sum = None;
        for line in body.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (key, value) = line.rsplit_once(' ')?;
            let metric = key.split('{').next().unwrap_or(key);
            if metric == name {
                *sum.get_or_insert(0.0) += value.parse::<f64>().ok()?;
            }
        }
        sum
    }
}

impl Spawn {
    fn config_toml(&self) -> String {
        let mut s = String::from("[limits]\n");
        for l in &self.limits {
            s += l;
            s += "\n";
        }
        s += "[rooms]\n";
        for l in &self.rooms {
            s += l;
            s += "\n";
        }
        s += "[modules.rooms.config]\n";
        for l in &self.rooms_config {
            s += l;
            s += "\n";
        }
        s
    }
}

/// A plain HTTP/1.1 GET: status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    roomlet_tests::http::request(addr, "GET", path, None, b"", Duration::from_secs(5))
        .map(|r| (r.status, r.body))
        .with_context(|| format!("no HTTP answer from {addr}{path}"))
}

/// One reading of `/proc/PID/{status,stat}`.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// Resident set, bytes.
    pub rss: u64,
    /// utime + stime, seconds.
    pub cpu: f64,
    /// stime alone: the kernel's share (system calls, the loopback TCP
    /// path they run, wake-ups), seconds.
    pub sys: f64,
}

impl ProcSample {
    /// Reads `pid` (a number or `self`).
    pub fn read(pid: &str) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces: fields start after its ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat (1-based), so 11
        // and 12 after the name; in clock ticks (USER_HZ = 100 on Linux).
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some(Self {
            rss: rss_kb * 1024,
            cpu: (utime + stime) / 100.0,
            sys: stime / 100.0,
        })
    }
}

/// Pins this process to `cpu` and raises its open-files soft limit to the
/// hard one, with util-linux tools (no `unsafe` here; a child inherits both).
pub fn prepare_self(cpu: Option<&str>) {
    let pid = std::process::id().to_string();
    if let Some(cpu) = cpu {
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", cpu, &pid])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not pin the generator to cpu {cpu} (taskset)");
        }
    }
    let hard = Command::new("prlimit")
        .args([
            "--pid",
            &pid,
            "--nofile",
            "--raw",
            "--noheadings",
            "-o",
            "HARD",
        ])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string());
    if let Some(hard) = hard.filter(|h| !h.is_empty()) {
        let _ = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
            .status();
    }
}

/// Puts every thread of this process under `SCHED_FIFO` at `priority`
/// with util-linux's `chrt`; the servers it starts later, and their
/// threads, inherit it.
///
/// Why: on the bench machines a normal-priority thread woken by a frame
/// can wait 1-4 ms behind DAMON's `kdamond`, `containerd` or `ksoftirqd`
/// on its core (`perf sched timehist`, nineteenth session), and that wait,
/// not the relay, set the p99 of every fixed-rate run before.
pub fn set_fifo(priority: u8) -> Result<()> {
    if !(1..=99).contains(&priority) {
        bail!("--fifo {priority}: a SCHED_FIFO priority is 1 to 99");
    }
    let pid = std::process::id().to_string();
    let status = Command::new("chrt")
        .args(["-a", "-f", "-p", &priority.to_string(), &pid])
        .status()
        .context("running `chrt` (util-linux) for --fifo")?;
    if !status.success() {
        bail!("--fifo {priority}: `chrt` failed ({status}); real-time scheduling needs root");
    }
    Ok(())
}

/// The open-files soft limit of this process.
pub fn nofile_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}
