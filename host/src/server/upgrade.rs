//! The WebSocket handshake on `/v1/ws`.

use super::admit::Socket;
use super::front::{Http, text};
use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use roomlet_gateway::budget::Budgeted;
use roomlet_gateway::{ClientInfo, Encoding};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

fn header_has(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The WebSocket handshake: checks it, picks the subprotocol, answers 101
/// and hands the upgraded connection to a gateway session. The upgrade
/// itself (the 101 sent, the socket handed over) has the request head's
/// deadline; `socket` counts against the listener's budget until the
/// session ends.
pub(super) fn upgrade(
    http: Arc<Http>,
    req: Request<Incoming>,
    addr: SocketAddr,
    socket: Arc<Socket>,
) -> Response<Full<Bytes>> {
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
    let deadline = Duration::from_millis(http.gateway.limits.request_head_timeout_ms);
    tokio::spawn(async move {
        match tokio::time::timeout(deadline, hyper::upgrade::on(req)).await {
            Ok(Ok(upgraded)) => {
                // Its unfinished frames count against the node's budget.
                let io = Budgeted::new(TokioIo::new(upgraded), gateway.read_budget.clone());
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
                // A task of its own: the upgrade's state is freed, not
                // carried for the whole session.
                // `map`, not an `async` block awaiting the session: that
                // would hold the session's future twice, as a capture and
                // as the future awaited (about 1 KiB per idle connection).
                let session = roomlet_gateway::serve(gateway, ws, encoding, client);
                tokio::spawn(session.map(move |()| drop(socket)));
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "websocket upgrade failed"),
            Err(_) => tracing::debug!(?deadline, "websocket upgrade not done within its deadline"),
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
