//! The floor: the least a WebSocket relay can do per signal on this stack
//! (tokio, tungstenite, loopback TCP), as a server the generator can load.
//!
//! It speaks the part of matchbox_server's protocol the generator uses
//! (`/<room>`, `IdAssigned`, `Signal { receiver → sender, data }`) and does
//! nothing else: no JSON parsing (it finds the receiver by scanning), no
//! rooms (ids are unique, so one table routes every frame), no `NewPeer`, no
//! limits. It runs on the runtime both servers use (tokio's multi-thread
//! one, a single worker under `taskset -c 0`), reads with roomlet's 2 KiB
//! buffer and batches writes as both do (all queued frames, one flush). So
//! its CPU per frame is what the socket work costs, and "server X / the
//! floor" bounds what cutting X's own logic could ever win on a benchmark.
//!
//! Run by `compare` for a server named `floor` (`--servers …,floor=self`);
//! by hand: `cargo bench -p roomlet-tests --bench load -- floor 127.0.0.1:PORT`.

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Peer id → its session's outbox.
type Table = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>>;

/// Serves on `addr` until killed.
pub fn serve(addr: SocketAddr) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let table: Table = Arc::default();
        let mut next = 0u64;
        loop {
            let (tcp, _) = listener.accept().await?;
            next += 1;
            tokio::spawn(session(tcp, format!("f-{next}"), table.clone()));
        }
    })
}

async fn session(tcp: TcpStream, id: String, table: Table) {
    let _ = tcp.set_nodelay(true);
    // roomlet's read buffer: tungstenite zero-fills all of it per read.
    let config = WebSocketConfig::default().read_buffer_size(2 * 1024);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    table.lock().expect("table").insert(id.clone(), tx);
    if ws
        .send(Message::text(format!(r#"{{"IdAssigned":"{id}"}}"#)))
        .await
        .is_ok()
    {
        relay(&mut ws, &id, &table, &mut rx).await;
    }
    table.lock().expect("table").remove(&id);
}

/// Socket frames out to their receivers; outbox frames to the socket, as
/// many as are queued per write (as roomlet and matchbox_server batch).
async fn relay(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    id: &str,
    table: &Table,
    rx: &mut mpsc::UnboundedReceiver<Message>,
) {
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(mut m) = out else { return };
                loop {
                    if ws.feed(m).await.is_err() {
                        return;
                    }
                    match rx.try_recv() {
                        Ok(next) => m = next,
                        Err(_) => break,
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    _ => return,
                };
                if let Some((to, data)) = signal(&text) {
                    let out = format!(r#"{{"Signal":{{"sender":"{id}","data":{data}}}}}"#);
                    if let Some(peer) = table.lock().expect("table").get(to) {
                        let _ = peer.send(Message::text(out));
                    }
                }
            }
        }
    }
}

/// `(receiver, data)` of `{"Signal":{"receiver":"ID","data":DATA}}`, found
/// by position, not parsed.
fn signal(text: &str) -> Option<(&str, &str)> {
    const RECEIVER: &str = r#""receiver":""#;
    const DATA: &str = r#""data":"#;
    let at = text.find(RECEIVER)? + RECEIVER.len();
    let to = &text[at..at + text[at..].find('"')?];
    let data = text.find(DATA)? + DATA.len();
    Some((to, text.get(data..text.len().checked_sub(2)?)?))
}
