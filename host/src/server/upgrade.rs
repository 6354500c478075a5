//! The WebSocket handshake on `/v1/ws`.

use super::front::{Http, text};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use roomlet_gateway::{ClientInfo, Encoding};
use std::net::SocketAddr;
use std::sync::Arc;
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
/// and hands the upgraded connection to a gateway session.
pub(super) fn upgrade(
    http: Arc<Http>,
    req: Request<Incoming>,
    addr: SocketAddr,
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
