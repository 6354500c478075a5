//! End to end in a real browser: headless Chromium opens the demo page
//! twice, both pages join one room on a real dev-mode server, and the test
//! asserts that their RTCPeerConnections reach `connected` and that a chat
//! line makes the round trip over the WebRTC data channel. A second test
//! kills and restarts the server under a joined page: the page's client
//! must resume by itself, keeping its peer id. A third restarts the server with SIGTERM
//! under a call: both pages keep their peer ids, tiles and peer
//! connections, and an ICE restart through the new process completes.
//! No mocks.
//!
//! Chromium is driven over the DevTools protocol (`--remote-debugging-port`)
//! with `Runtime.evaluate`. Without a `chromium` binary the test is skipped,
//! except under `CI=true`, where it fails.

use futures_util::{SinkExt, StreamExt};
use roomlet::config::IceServer;
use roomlet_tests::process::{Serve, ServeCommand};
use roomlet_tests::server;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long Chromium may take to open its DevTools port.
const BROWSER_START: Duration = Duration::from_secs(30);
/// How long one DevTools command may take.
const CDP_CALL: Duration = Duration::from_secs(15);
/// How long a page may take to join the room.
const PAGE_JOIN: Duration = Duration::from_secs(30);
/// How long the two peer connections (and the data channel) may take.
const PEERS_CONNECT: Duration = Duration::from_secs(60);
/// How long a chat line may take to arrive.
const CHAT_ARRIVES: Duration = Duration::from_secs(15);
/// A bound on the whole test, in case a step's own deadline is not reached.
const WHOLE_TEST: Duration = Duration::from_secs(240);
/// Polling period for page conditions.
const POLL: Duration = Duration::from_millis(100);

/// Flags verified on Chromium 156 (see DESIGN.md, "Known pitfalls"), plus a
/// few that only make the run more predictable.
/// mDNS host-candidate obfuscation is switched off so that ICE candidates
/// are plain loopback/LAN addresses even if getUserMedia is refused (then
/// Chromium would hand out `*.local` names that need a working mDNS
/// responder to resolve).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    // Two tabs, one of them in the background: keep its timers and
    // renderer at full speed (the demo's signaling runs on timers too).
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--remote-debugging-port=0",
];

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ------------------------------------------------------------------ browser

/// `chromium` or `chromium-browser` on `PATH` (or `ROOMLET_CHROMIUM`).
fn find_browser() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ROOMLET_CHROMIUM") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A running Chromium in its own process group, with a fresh profile.
/// Dropping it kills the whole group (also when the test panics).
struct Browser {
    child: Child,
    /// Chromium's profile (removed after the process is gone: fields drop
    /// after `Drop::drop`).
    profile: tempfile::TempDir,
    stderr_path: PathBuf,
    port: u16,
    browser_ws_path: String,
}

impl Browser {
    async fn launch(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let stderr_path = profile.path().join("chromium-stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
        let mut cmd = Command::new(binary);
        cmd.args(CHROMIUM_FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));
        let mut browser = Browser {
            child,
            profile,
            stderr_path,
            port: 0,
            browser_ws_path: String::new(),
        };

        // Chromium writes the port it bound (and the browser target's path)
        // to DevToolsActivePort in the profile once it listens.
        let port_file = browser.profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next())
                    && let Ok(port) = port.trim().parse::<u16>()
                {
                    browser.port = port;
                    browser.browser_ws_path = path.trim().to_string();
                    break;
                }
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                panic!(
                    "chromium exited ({status}) before opening its DevTools port\n{}",
                    browser.stderr_tail()
                );
            }
            if start.elapsed() > BROWSER_START {
                panic!(
                    "chromium wrote no {} within {BROWSER_START:?}\n{}",
                    port_file.display(),
                    browser.stderr_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
        browser
    }

    fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// The last lines Chromium wrote to stderr.
    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        format!(
            "--- chromium stderr (last {} lines) ---\n{}",
            tail.len(),
            tail.join("\n")
        )
    }

    /// Opens a tab at `url` and connects to its DevTools target.
    async fn open_page(&self, browser_cdp: &mut Cdp, name: &str, url: &str) -> Page {
        let created = browser_cdp
            .call("Target.createTarget", json!({ "url": url }))
            .await
            .unwrap_or_else(|e| panic!("Target.createTarget {url}: {e}\n{}", self.stderr_tail()));
        let target = created["targetId"]
            .as_str()
            .unwrap_or_else(|| panic!("Target.createTarget answered no targetId: {created}"));
        let cdp = Cdp::connect(&self.ws_url(&format!("/devtools/page/{target}")))
            .await
            .unwrap_or_else(|e| panic!("page {name}: {e}\n{}", self.stderr_tail()));
        Page {
            name: name.to_string(),
            cdp,
        }
    }

    /// Asks Chromium to quit and waits a little; Drop kills what is left.
    async fn close(mut self, browser_cdp: &mut Cdp) {
        let _ = browser_cdp.call("Browser.close", json!({})).await;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium leads its own process group (process_group(0)): kill the
        // group, so renderer, GPU and utility processes go too.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------------------- devtools

/// A DevTools protocol connection (browser or page target).
struct Cdp {
    ws: Ws,
    next_id: u64,
}

impl Cdp {
    async fn connect(url: &str) -> Result<Cdp, String> {
        let (ws, _) = tokio::time::timeout(CDP_CALL, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| format!("connecting to {url} timed out"))?
            .map_err(|e| format!("connecting to {url}: {e}"))?;
        Ok(Cdp { ws, next_id: 0 })
    }

    /// Sends a command and waits for its answer, skipping events.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        let deadline = Instant::now() + CDP_CALL;
        tokio::time::timeout_at(deadline, self.ws.send(Message::text(request.to_string())))
            .await
            .map_err(|_| format!("{method}: sending timed out"))?
            .map_err(|e| format!("{method}: send: {e}"))?;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| format!("{method}: no answer within {CDP_CALL:?}"))?;
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(c))) => {
                    return Err(format!("{method}: DevTools closed: {c:?}"));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("{method}: {e}")),
                None => return Err(format!("{method}: DevTools connection ended")),
            };
            let answer: Value = serde_json::from_str(text.as_str())
                .map_err(|e| format!("{method}: bad DevTools JSON ({e}): {text}"))?;
            if answer["id"] != id {
                continue; // an event, or a late answer to an abandoned call
            }
            if let Some(err) = answer.get("error") {
                return Err(format!("{method}: {err}"));
            }
            return Ok(answer["result"].clone());
        }
    }

    /// `Runtime.evaluate`, awaiting a promise result, returning it by value.
    async fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({
                    "expression": expression,
                    "awaitPromise": true,
                    "returnByValue": true,
                }),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            let what = ex["exception"]["description"]
                .as_str()
                .or(ex["text"].as_str())
                .unwrap_or("exception");
            return Err(format!("`{expression}` threw: {what}"));
        }
        Ok(r["result"].get("value").cloned().unwrap_or(Value::Null))
    }
}

/// One demo page.
struct Page {
    name: String,
    cdp: Cdp,
}

/// What the test reads from a page: `window.roomletDemo` and the log pane.
const SNAPSHOT_JS: &str = r#"(() => {
  const d = window.roomletDemo;
  const log = document.getElementById('log');
  return {
    url: location.href,
    title: document.title,
    present: !!d,
    peerId: d ? d.peerId : null,
    state: d ? d.state : null,
    connectionStates: d ? d.connectionStates : {},
    chatLog: d ? d.chatLog : [],
    pcCreated: d ? d.pcCreated : null,
    pcClosed: d ? d.pcClosed : null,
    tiles: d ? d.tiles() : null,
    iceRestarts: d ? d.iceRestarts : {},
    tokenTest: window.tokenTest || null,
    unconfirmed: d && d.client ? d.client.unconfirmed : null,
    status: (document.getElementById('status') || {}).textContent || null,
    log: log ? log.textContent : '',
  };
})()"#;

impl Page {
    /// The page's state; an evaluation error becomes `{"snapshotError": …}`
    /// (e.g. while the page is still navigating away from about:blank).
    async fn snapshot(&mut self) -> Value {
        match self.cdp.eval(SNAPSHOT_JS).await {
            Ok(v) if v.is_object() => v,
            Ok(v) => json!({ "snapshotError": format!("unexpected snapshot {v}") }),
            Err(e) => json!({ "snapshotError": e }),
        }
    }
}

fn describe(name: &str, s: &Value) -> String {
    if let Some(e) = s.get("snapshotError") {
        return format!("=== page {name}: no snapshot: {e}");
    }
    format!(
        "=== page {name}: {url}\n  title: {title}\n  state: {state}\n  peerId: {peer}\n  \
         connectionStates: {states}\n  chatLog: {chat}\n  --- log pane ---\n{log}",
        url = s["url"],
        title = s["title"],
        state = s["state"],
        peer = s["peerId"],
        states = s["connectionStates"],
        chat = s["chatLog"],
        log = s["log"].as_str().unwrap_or(""),
    )
}

/// Polls every page every [`POLL`] until `cond` holds on their snapshots,
/// failing after `deadline` (or at once when `cond` says the state is
/// hopeless) with every page's state, its log pane and Chromium's stderr.
async fn wait_until(
    what: &str,
    deadline: Duration,
    browser: &Browser,
    pages: &mut [&mut Page],
    mut cond: impl FnMut(&[Value]) -> Result<bool, String>,
) -> Vec<Value> {
    let start = Instant::now();
    let mut ticker = tokio::time::interval(POLL);
    loop {
        ticker.tick().await;
        let mut snaps = Vec::with_capacity(pages.len());
        for page in pages.iter_mut() {
            snaps.push(page.snapshot().await);
        }
        let verdict = cond(&snaps);
        let failure = match verdict {
            Ok(true) => return snaps,
            Ok(false) if start.elapsed() < deadline => continue,
            Ok(false) => format!("timed out after {deadline:?} waiting for {what}"),
            Err(why) => format!("gave up waiting for {what}: {why}"),
        };
        let report: Vec<String> = pages
            .iter()
            .zip(&snaps)
            .map(|(p, s)| describe(&p.name, s))
            .collect();
        panic!(
            "{failure} (after {:.1} s)\n{}\n{}",
            start.elapsed().as_secs_f64(),
            report.join("\n"),
            browser.stderr_tail()
        );
    }
}

/// Fails fast when a page can no longer get anywhere.
fn hopeless(s: &Value) -> Option<String> {
    match s["state"].as_str() {
        Some(st @ ("error" | "token needed" | "closed" | "kicked" | "failed")) => {
            Some(format!("page state is {st}"))
        }
        _ => None,
    }
}

fn peer_id(s: &Value) -> Option<&str> {
    s["peerId"].as_str().filter(|p| !p.is_empty())
}

/// Whether the page logged its data channel to `other` as open.
fn channel_open(s: &Value, other: &str) -> bool {
    s["log"]
        .as_str()
        .unwrap_or("")
        .lines()
        .any(|l| l.contains(" data channel with ") && l.contains(other) && l.ends_with(" open"))
}

fn got_chat(s: &Value, from: &str, text: &str) -> bool {
    s["chatLog"]
        .as_array()
        .is_some_and(|log| log.iter().any(|m| m["from"] == from && m["text"] == text))
}

// --------------------------------------------------------------------- test

fn demo_url(server: std::net::SocketAddr, room: &str, name: &str) -> String {
    format!("http://{server}/demo?room={room}&name={name}")
}

/// Opens a page and waits until it has joined the room.
async fn join_page(
    browser: &Browser,
    browser_cdp: &mut Cdp,
    server: std::net::SocketAddr,
    room: &str,
    name: &str,
) -> (Page, String) {
    let mut page = browser
        .open_page(browser_cdp, name, &demo_url(server, room, name))
        .await;
    let snaps = wait_until(
        &format!("page {name} to join room {room}"),
        PAGE_JOIN,
        browser,
        &mut [&mut page],
        |s| match hopeless(&s[0]) {
            Some(why) => Err(why),
            None => Ok(peer_id(&s[0]).is_some()),
        },
    )
    .await;
    let id = peer_id(&snaps[0]).expect("peer id").to_string();
    (page, id)
}

/// Sends a chat line from `page` and asserts it went out on ≥ 1 channel.
async fn send_chat(browser: &Browser, page: &mut Page, text: &str) {
    let expr = format!("window.roomletDemo.sendChat({})", json!(text));
    let count = page.cdp.eval(&expr).await.unwrap_or_else(|e| {
        panic!(
            "page {}: sendChat failed: {e}\n{}",
            page.name,
            browser.stderr_tail()
        )
    });
    assert!(
        count.as_u64().is_some_and(|n| n >= 1),
        "page {}: sendChat({text:?}) resolved {count}, expected at least one open data channel",
        page.name
    );
}

async fn run(binary: &Path) {
    // Hermetic: no public STUN server (the default), but still a real
    // `iceServers` entry for the page's RTCPeerConnection to accept; nothing
    // listens there, so the peers connect over loopback host candidates.
    let t0 = Instant::now();
    let lap = |what: &str| println!("[{:6.2} s] {what}", t0.elapsed().as_secs_f64());
    let server = server::start(|c| {
        c.ice_servers = vec![IceServer {
            urls: vec!["stun:127.0.0.1:9".into()],
            username: None,
            credential: None,
        }];
    });
    let (server, browser) = tokio::join!(server, Browser::launch(binary));
    lap("server and chromium started");
    let mut browser_cdp = Cdp::connect(&browser.ws_url(&browser.browser_ws_path))
        .await
        .unwrap_or_else(|e| panic!("browser target: {e}\n{}", browser.stderr_tail()));

    let room = "browser-e2e";
    let (mut a, a_id) = join_page(&browser, &mut browser_cdp, server.addr(), room, "alice").await;
    lap(&format!("alice joined as {a_id}"));
    let (mut b, b_id) = join_page(&browser, &mut browser_cdp, server.addr(), room, "bob").await;
    lap(&format!("bob joined as {b_id}"));
    assert_ne!(a_id, b_id, "the two pages got the same peer id");

    // Both RTCPeerConnections connected to each other, data channel open.
    let connected = |s: &Value, other: &str| s["connectionStates"][other] == "connected";
    wait_until(
        "both peer connections to be connected and the data channels open",
        PEERS_CONNECT,
        &browser,
        &mut [&mut a, &mut b],
        |s| {
            for (snap, other) in [(&s[0], &b_id), (&s[1], &a_id)] {
                if let Some(why) = hopeless(snap) {
                    return Err(why);
                }
                if snap["log"]
                    .as_str()
                    .unwrap_or("")
                    .contains("iceServers refused")
                {
                    return Err("the page refused the server's iceServers".into());
                }
                if snap["connectionStates"][other.as_str()] == "failed" {
                    return Err(format!("peer connection to {other} failed"));
                }
            }
            Ok(connected(&s[0], &b_id)
                && connected(&s[1], &a_id)
                && channel_open(&s[0], &b_id)
                && channel_open(&s[1], &a_id))
        },
    )
    .await;
    lap("both peer connections connected, data channels open");

    // A → B over the data channel.
    let hello = "hello from A";
    send_chat(&browser, &mut a, hello).await;
    wait_until(
        "B to receive A's chat line",
        CHAT_ARRIVES,
        &browser,
        &mut [&mut a, &mut b],
        |s| Ok(got_chat(&s[1], &a_id, hello)),
    )
    .await;
    lap("B received A's chat line");

    // B → A: the round trip.
    let reply = "hello from B, got: hello from A";
    send_chat(&browser, &mut b, reply).await;
    let snaps = wait_until(
        "A to receive B's reply",
        CHAT_ARRIVES,
        &browser,
        &mut [&mut a, &mut b],
        |s| Ok(got_chat(&s[0], &b_id, reply)),
    )
    .await;
    lap("A received B's reply");
    // Every signal each page sent (offers, answers, candidates) was
    // confirmed by the server: nothing is left to send again.
    wait_until(
        "both pages to hold no unconfirmed signal",
        CHAT_ARRIVES,
        &browser,
        &mut [&mut a, &mut b],
        |s| Ok(s.iter().all(|p| p["unconfirmed"] == 0)),
    )
    .await;
    // Nothing was lost or duplicated on the way.
    assert_eq!(
        snaps[0]["chatLog"],
        json!([{ "from": b_id, "text": reply }])
    );
    assert_eq!(
        snaps[1]["chatLog"],
        json!([{ "from": a_id, "text": hello }])
    );

    browser.close(&mut browser_cdp).await;
    lap("chromium closed");
    drop(server);
}

/// Chromium, or `None` (the test skips) outside CI.
fn browser_or_skip() -> Option<PathBuf> {
    let binary = find_browser();
    if binary.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "no chromium or chromium-browser on PATH (nor a file at $ROOMLET_CHROMIUM): \
                 install the Debian package chromium (apt-get install -y chromium)"
            );
        }
        println!("skipping: install Debian package chromium");
    }
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chromium_pages_connect_and_chat_over_a_data_channel() {
    let Some(binary) = browser_or_skip() else {
        return;
    };
    let start = std::time::Instant::now();
    tokio::time::timeout(WHOLE_TEST, run(&binary))
        .await
        .unwrap_or_else(|_| panic!("the browser test took longer than {WHOLE_TEST:?}"));
    println!(
        "browser e2e with {} passed in {:.1} s",
        binary.display(),
        start.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------- a server that restarts

/// `roomlet serve --dev` as a process of its own, so the test can kill it
/// the way a crash would (every socket gone at once: dropping a
/// [`Serve`] SIGKILLs it) and start it again. Listens on `listen` (port
/// 0: any), with `data` as its data directory (its log goes there too).
fn start_server(listen: &str, data: &Path) -> Serve {
    start_server_with(listen, data, &[])
}

/// [`start_server`] with more arguments.
fn start_server_with(listen: &str, data: &Path, extra: &[&str]) -> Serve {
    serve_command(listen, data, extra)
        .start()
        .unwrap_or_else(|log| panic!("the server did not say where it listens:\n{log}"))
}

/// How [`start_server_with`] starts it, for a test to add to.
fn serve_command(listen: &str, data: &Path, extra: &[&str]) -> ServeCommand {
    ServeCommand::new(
        Path::new(env!("CARGO_BIN_EXE_roomlet-node")),
        &data.join("server.log"),
    )
    .args([
        "--dev",
        "--listen",
        listen,
        "--internal-listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(data)
    .args(extra.iter().copied())
    .within(BROWSER_START)
}

/// A crash and restart (SIGKILL, a new process on the same data
/// directory): the page's client resumes, the server gives the session
/// back from its journal with the same peer id and `gap: true`, and the
/// page says frames may have been lost.
async fn rejoin_after_restart(binary: &Path) {
    let data = tempfile::tempdir().expect("data dir");
    let first = start_server("127.0.0.1:0", data.path());
    let addr = first.public;
    let browser = Browser::launch(binary).await;
    let mut browser_cdp = Cdp::connect(&browser.ws_url(&browser.browser_ws_path))
        .await
        .unwrap_or_else(|e| panic!("browser target: {e}\n{}", browser.stderr_tail()));
    let (mut page, before) = join_page(&browser, &mut browser_cdp, addr, "restart", "alice").await;

    drop(first); // killed, as a crash would
    let _second = start_server(&addr.to_string(), data.path());
    wait_until(
        "the page to resume under its peer id, told of the gap",
        PAGE_JOIN,
        &browser,
        &mut [&mut page],
        |s| match hopeless(&s[0]) {
            Some(why) => Err(why),
            None => Ok(s[0]["state"] == "joined"
                && peer_id(&s[0]) == Some(before.as_str())
                && s[0]["log"]
                    .as_str()
                    .unwrap_or("")
                    .contains("restarted without warning")),
        },
    )
    .await;
    browser.close(&mut browser_cdp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_resumes_after_the_server_was_killed_and_restarted() {
    let Some(binary) = browser_or_skip() else {
        return;
    };
    tokio::time::timeout(WHOLE_TEST, rejoin_after_restart(&binary))
        .await
        .unwrap_or_else(|_| panic!("the restart test took longer than {WHOLE_TEST:?}"));
}

/// SIGTERM and a new process on the same data directory and port under a
/// call: both pages resume with their peer ids, no RTCPeerConnection is
/// created or closed, each page shows one tile per person, and an ICE
/// restart negotiated through the new process completes.
async fn call_survives_a_restart(binary: &Path) {
    let t0 = Instant::now();
    let lap = |what: &str| println!("[{:6.2} s] {what}", t0.elapsed().as_secs_f64());
    let data = tempfile::tempdir().expect("data dir");
    let listen = format!("127.0.0.1:{}", roomlet_tests::process::free_port());
    let mut first = start_server(&listen, data.path());
    let addr = first.public;
    let browser = Browser::launch(binary).await;
    let mut browser_cdp = Cdp::connect(&browser.ws_url(&browser.browser_ws_path))
        .await
        .unwrap_or_else(|e| panic!("browser target: {e}\n{}", browser.stderr_tail()));
    let room = "restart-call";
    let (mut a, a_id) = join_page(&browser, &mut browser_cdp, addr, room, "alice").await;
    let (mut b, b_id) = join_page(&browser, &mut browser_cdp, addr, room, "bob").await;
    let connected = |s: &Value, other: &str| s["connectionStates"][other] == "connected";
    let before = wait_until(
        "the call to connect",
        PEERS_CONNECT,
        &browser,
        &mut [&mut a, &mut b],
        |s| {
            if let Some(why) = hopeless(&s[0]).or_else(|| hopeless(&s[1])) {
                return Err(why);
            }
            Ok(connected(&s[0], &b_id) && connected(&s[1], &a_id))
        },
    )
    .await;
    lap("the call is connected");

    first.signal("TERM");
    assert_eq!(
        first.exit_within(Duration::from_secs(15)),
        Some(0),
        "the server stops within its drain grace"
    );
    lap("the server stopped");
    let _second = start_server(&listen, data.path());
    lap("the server is back");
    let resumed = |s: &Value| {
        s["log"].as_str().unwrap_or("").contains("session resumed") && s["state"] == "connected"
    };
    let after = wait_until(
        "both pages to resume",
        PAGE_JOIN,
        &browser,
        &mut [&mut a, &mut b],
        |s| {
            if let Some(why) = hopeless(&s[0]).or_else(|| hopeless(&s[1])) {
                return Err(why);
            }
            Ok(resumed(&s[0]) && resumed(&s[1]))
        },
    )
    .await;
    lap("both pages resumed");
    for (i, (id, page)) in [(&a_id, &after[0]), (&b_id, &after[1])]
        .into_iter()
        .enumerate()
    {
        assert_eq!(peer_id(page), Some(id.as_str()), "the same peer id");
        assert_eq!(
            page["tiles"],
            2,
            "one tile per person: {}",
            describe("page", page)
        );
        assert_eq!(
            (&page["pcCreated"], &page["pcClosed"]),
            (&before[i]["pcCreated"], &before[i]["pcClosed"]),
            "no peer connection created or closed across the restart"
        );
        assert!(
            !page["log"].as_str().unwrap_or("").contains("peer left"),
            "nobody left: {}",
            describe("page", page)
        );
    }

    // An ICE restart, offered and answered through the new process.
    let expr = format!("window.roomletDemo.restartIce({})", json!(b_id));
    a.cdp
        .eval(&expr)
        .await
        .unwrap_or_else(|e| panic!("restartIce: {e}\n{}", browser.stderr_tail()));
    wait_until(
        "the ICE restart to complete",
        PEERS_CONNECT,
        &browser,
        &mut [&mut a, &mut b],
        |s| {
            Ok(s[0]["iceRestarts"][b_id.as_str()].as_u64() >= Some(1)
                && connected(&s[0], &b_id)
                && connected(&s[1], &a_id))
        },
    )
    .await;
    lap("the ICE restart completed");
    browser.close(&mut browser_cdp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_survives_a_server_restart() {
    let Some(binary) = browser_or_skip() else {
        return;
    };
    tokio::time::timeout(WHOLE_TEST, call_survives_a_restart(&binary))
        .await
        .unwrap_or_else(|_| panic!("the restart test took longer than {WHOLE_TEST:?}"));
}

/// The JS client's `getToken`: a join refused as expired is tried again
/// once with a fresh token; a token about to expire is refreshed over the
/// session (`refresh` → `refreshed`) before it does; and the media
/// credentials `joined` carried (LiveKit's, here) are in `client.media`
/// and replaced by fresh ones (`media-token`) before they expire.
async fn js_client_tokens(binary: &Path) {
    let data = tempfile::tempdir().expect("data dir");
    let config = data.path().join("media.toml");
    std::fs::write(
        &config,
        "[media]\nttl_seconds = 12\n[media.livekit]\nurl = \"wss://lk.example.org\"\napi_key = \"APIsfu\"\n",
    )
    .expect("config");
    let config = config.to_str().expect("a UTF-8 path");
    let server = serve_command("127.0.0.1:0", data.path(), &["--config", config])
        .env("ROOMLET_LIVEKIT_API_SECRET", "lk-browser-test-secret")
        .start()
        .unwrap_or_else(|log| panic!("the server did not say where it listens:\n{log}"));
    let browser = Browser::launch(binary).await;
    let mut browser_cdp = Cdp::connect(&browser.ws_url(&browser.browser_ws_path))
        .await
        .unwrap_or_else(|e| panic!("browser target: {e}\n{}", browser.stderr_tail()));
    let (mut page, _) = join_page(&browser, &mut browser_cdp, server.public, "host", "host").await;
    let expired = roomlet_tests::tokens::dev_token_expiring("tok", "ann", -60);
    let short = roomlet_tests::tokens::dev_token_expiring("tok", "ann", 3);
    let script = format!(
        r#"(async () => {{
  const {{ RoomletClient }} = await import('/demo/roomlet.js');
  const url = `ws://${{location.host}}/v1/ws`;
  const t = window.tokenTest = {{ calls: 0, refreshed: 0, callsAtJoin: null, media: [] }};
  const getToken = async () => {{
    t.calls += 1;
    const r = await fetch('/v1/dev/token?room=tok&identity=ann');
    return (await r.json()).token;
  }};
  const a = new RoomletClient(url, {{ token: {expired}, room: 'tok', getToken }});
  await a.connect();
  t.callsAtJoin = t.calls;
  await a.leave();
  const b = new RoomletClient(url, {{ token: {short}, room: 'tok', getToken }});
  b.addEventListener('refreshed', () => {{ t.refreshed += 1; }});
  b.addEventListener('media', (e) => {{ t.media.push(e.detail.media.livekit.token); }});
  await b.connect();
  window.tokenClient = b;
  t.livekitUrl = b.media.livekit.url;
  return t.callsAtJoin;
}})()"#,
        expired = json!(expired),
        short = json!(short),
    );
    let calls = page
        .cdp
        .eval(&script)
        .await
        .unwrap_or_else(|e| panic!("token script: {e}\n{}", browser.stderr_tail()));
    assert_eq!(
        calls, 1,
        "the expired token was refused and getToken called once"
    );
    wait_until(
        "the short token to be refreshed",
        CHAT_ARRIVES,
        &browser,
        &mut [&mut page],
        |s| Ok(s[0]["tokenTest"]["refreshed"].as_u64() >= Some(1)),
    )
    .await;
    // The access token lasted 3 s, so did the first credentials: fresh
    // ones came before they expired, and more after `refreshed` (at most
    // one `media-token` per 10 s, so within the 12 s media TTL).
    wait_until(
        "fresh media credentials",
        CHAT_ARRIVES,
        &browser,
        &mut [&mut page],
        |s| {
            let tokens = s[0]["tokenTest"]["media"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            Ok(tokens.len() >= 2 && tokens[0] != tokens[1])
        },
    )
    .await;
    let t = page.snapshot().await;
    assert_eq!(
        t["tokenTest"]["livekitUrl"], "wss://lk.example.org",
        "client.media.livekit"
    );
    browser.close(&mut browser_cdp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_gets_fresh_tokens() {
    let Some(binary) = browser_or_skip() else {
        return;
    };
    tokio::time::timeout(WHOLE_TEST, js_client_tokens(&binary))
        .await
        .unwrap_or_else(|_| panic!("the token test took longer than {WHOLE_TEST:?}"));
}

/// A page whose join is refused says why on the page: a third person in a
/// one-to-one room (the example plugin) sees the module's code and reason.
async fn refusal_is_shown(binary: &Path) {
    let data = tempfile::tempdir().expect("data dir");
    let rooms = format!("rooms={}", env!("ROOMLET_EXAMPLE_ONE_TO_ONE"));
    let server = start_server_with("127.0.0.1:0", data.path(), &["--module", &rooms]);
    let browser = Browser::launch(binary).await;
    let mut browser_cdp = Cdp::connect(&browser.ws_url(&browser.browser_ws_path))
        .await
        .unwrap_or_else(|e| panic!("browser target: {e}\n{}", browser.stderr_tail()));
    let (_a, _) = join_page(&browser, &mut browser_cdp, server.public, "pair", "alice").await;
    let (_b, _) = join_page(&browser, &mut browser_cdp, server.public, "pair", "bob").await;
    let mut c = browser
        .open_page(
            &mut browser_cdp,
            "carol",
            &demo_url(server.public, "pair", "carol"),
        )
        .await;
    let snaps = wait_until(
        "the third page to be refused",
        PAGE_JOIN,
        &browser,
        &mut [&mut c],
        |s| Ok(s[0]["state"] == "error"),
    )
    .await;
    let status = snaps[0]["status"].as_str().unwrap_or_default();
    assert!(
        status.starts_with("error: one-to-one-full"),
        "the page shows the refusal: {}",
        describe("carol", &snaps[0])
    );
    browser.close(&mut browser_cdp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_is_shown_on_the_page() {
    let Some(binary) = browser_or_skip() else {
        return;
    };
    tokio::time::timeout(WHOLE_TEST, refusal_is_shown(&binary))
        .await
        .unwrap_or_else(|_| panic!("the refusal test took longer than {WHOLE_TEST:?}"));
}
