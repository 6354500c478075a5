//! What the HTTP front serves from, and its plain answers.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use roomlet_gateway::Gateway;
use roomlet_runtime::secrets::ApiKeys;
use roomlet_telemetry::Registry;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What the listeners serve from.
pub(super) struct Http {
    /// Sessions and rooms.
    pub gateway: Arc<Gateway>,
    /// The node's metrics.
    pub registry: Registry,
    /// The admin API.
    pub admin: crate::admin::Admin,
    /// `--dev`: the key the demo's tokens are signed with.
    pub dev_keys: Option<Arc<ApiKeys>>,
    /// The public WebSocket URL clients are told.
    pub public_url: Option<String>,
    /// WebSocket limits and buffers.
    pub ws_config: WebSocketConfig,
    /// Whether this node holds client sockets.
    pub relay: bool,
}

/// A plain-text answer.
pub(super) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A static body of `content_type`.
pub(super) fn with_type(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A body of `content_type`.
pub(super) fn with_type_owned(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
