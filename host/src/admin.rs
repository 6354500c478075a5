//! The admin API on the internal listener (docs/admin-api.md).
//!
//! Two credentials, never confused: the operator credential
//! (`ROOMLET_OPERATOR_TOKEN`) for node-wide operations — component
//! upload and rollback, listing and closing any room, drain — and a
//! LiveKit access token with `roomAdmin`, which reaches only its own
//! room's endpoints. A room admin can never upload code.

use crate::reload::Modules;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use roomlet_gateway::Gateway;
use roomlet_runtime::bindings::authenticator::{AuthError, AuthRequest};
use roomlet_runtime::bindings::types::Grants;
use roomlet_runtime::secrets::Secret;
use roomlet_runtime::{ComponentSource, Function};
use serde_json::{Value, json};
use std::sync::Arc;

/// Largest component upload.
const MAX_UPLOAD: usize = 64 << 20;
/// Largest JSON body.
const MAX_JSON: usize = 64 << 10;

/// What the admin API needs.
pub struct Admin {
    /// Sessions and rooms.
    pub gateway: Arc<Gateway>,
    /// Component versions.
    pub modules: Arc<Modules>,
    /// The operator credential, when configured.
    pub operator: Option<Secret>,
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Resp {
    json_response(status, json!({"error": code, "message": message.into()}))
}

/// Who is calling.
enum Caller {
    Operator,
    RoomAdmin,
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(t.trim().to_owned())
}

/// Compares without leaking where the first difference is, nor (hashed
/// first) the credential's length.
fn same(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let (ha, hb) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    ha.ct_eq(&hb).into()
}

impl Admin {
    fn is_operator(&self, token: &str) -> bool {
        self.operator
            .as_ref()
            .is_some_and(|op| same(op.expose(), token))
    }

    /// Node-wide endpoints: the operator credential only.
    // The error is the HTTP answer itself, built once per request.
    #[allow(clippy::result_large_err)]
    fn operator_only(&self, req: &Request<Incoming>) -> Result<(), Resp> {
        match bearer(req) {
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send Authorization: Bearer <operator credential>",
            )),
            Some(t) if self.is_operator(&t) => Ok(()),
            Some(_) => Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this endpoint needs the operator credential; room admin tokens cannot use it",
            )),
        }
    }

    /// Room endpoints: the operator, or a token with roomAdmin for this room.
    // The error is the HTTP answer itself, built once per request.
    #[allow(clippy::result_large_err)]
    async fn room_admin(&self, req: &Request<Incoming>, room: &str) -> Result<Caller, Resp> {
        let Some(token) = bearer(req) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send Authorization: Bearer <token>",
            ));
        };
        if self.is_operator(&token) {
            return Ok(Caller::Operator);
        }
        let request = AuthRequest {
            token,
            room: room.to_owned(),
            client_addr: "admin-api".into(),
            region: self.gateway.region.clone(),
            headers: Vec::new(),
        };
        match self.gateway.authenticate(&request).await {
            Ok(Ok(id)) if id.grants.contains(Grants::ROOM_ADMIN) => Ok(Caller::RoomAdmin),
            Ok(Ok(_)) => Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the token lacks roomAdmin",
            )),
            Ok(Err(AuthError::WrongRoom)) => Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the token is for another room",
            )),
            Ok(Err(_)) => Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the token was refused",
            )),
            Err(e @ roomlet_gateway::AuthUnavailable::NoAnswer(_)) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{e}; try again shortly"),
            )),
            Err(e) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "internal",
                format!("auth unavailable: {e}"),
            )),
        }
    }

    /// Routes one admin request (path under `/v1/admin/`).
    pub async fn handle(&self, req: Request<Incoming>) -> Resp {
        let path = req
            .uri()
            .path()
            .trim_start_matches("/v1/admin/")
            .trim_end_matches('/')
            .to_owned();
        let parts: Vec<&str> = path.split('/').collect();
        let method = req.method().clone();
        match (method, parts.as_slice()) {
            (Method::GET, ["rooms"]) => match self.operator_only(&req) {
                Ok(()) => self.list_rooms().await,
                Err(r) => r,
            },
            (Method::DELETE, ["rooms", room]) => match self.operator_only(&req) {
                Ok(()) => self.close_room(room).await,
                Err(r) => r,
            },
            (Method::POST, ["drain"]) => match self.operator_only(&req) {
                Ok(()) => {
                    self.gateway.set_draining();
                    tracing::info!("drain requested through the admin API");
                    json_response(StatusCode::OK, json!({"draining": true}))
                }
                Err(r) => r,
            },
            (Method::GET, ["modules"]) => match self.operator_only(&req) {
                Ok(()) => self.list_modules(),
                Err(r) => r,
            },
            (Method::PUT, ["modules", function]) => match self.operator_only(&req) {
                Ok(()) => self.upload(function, req).await,
                Err(r) => r,
            },
            (Method::POST, ["modules", function, "rollback"]) => match self.operator_only(&req) {
                Ok(()) => self.rollback(function).await,
                Err(r) => r,
            },
            (method, ["rooms", room, rest @ ..]) => {
                let room = room.to_string();
                if let Err(r) = self.room_admin(&req, &room).await {
                    return r;
                }
                let Some(handle) = self.gateway.rooms.get(&room) else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "room-not-found",
                        "no such room on this node",
                    );
                };
                match (method, rest) {
                    (Method::GET, ["participants"]) => {
                        let peers = handle.peers().await.unwrap_or_default();
                        let list: Vec<Value> = peers
                            .iter()
                            .map(|p| json!({"id": p.id, "identity": p.identity, "name": p.name, "metadata": p.metadata}))
                            .collect();
                        json_response(StatusCode::OK, json!({"room": room, "participants": list}))
                    }
                    (Method::DELETE, ["participants", peer]) => {
                        if handle.shared().peer(peer).is_none() {
                            return error(
                                StatusCode::NOT_FOUND,
                                "unknown-peer",
                                "no such peer in this room",
                            );
                        }
                        handle.kick(peer, "removed by a room admin").await;
                        json_response(StatusCode::OK, json!({"removed": peer}))
                    }
                    (Method::POST, ["messages"]) => match read_json(req).await {
                        Ok(body) => {
                            let Some(data) = body.get("data") else {
                                return error(
                                    StatusCode::BAD_REQUEST,
                                    "bad-request",
                                    "body needs `data`",
                                );
                            };
                            let to = body.get("to").and_then(Value::as_str).map(str::to_owned);
                            if let Some(to) = &to
                                && handle.shared().peer(to).is_none()
                            {
                                return error(
                                    StatusCode::NOT_FOUND,
                                    "unknown-peer",
                                    "no such peer in this room",
                                );
                            }
                            handle.announce(to, data.to_string()).await;
                            json_response(StatusCode::OK, json!({"sent": true}))
                        }
                        Err(r) => r,
                    },
                    (Method::PUT, ["metadata"]) => match read_json(req).await {
                        Ok(body) => match body.get("metadata").and_then(Value::as_str) {
                            Some(m) => {
                                handle.set_metadata(m.to_owned()).await;
                                json_response(StatusCode::OK, json!({"metadata": m}))
                            }
                            None => error(
                                StatusCode::BAD_REQUEST,
                                "bad-request",
                                "body needs a string `metadata`",
                            ),
                        },
                        Err(r) => r,
                    },
                    _ => error(StatusCode::NOT_FOUND, "not-found", "no such admin endpoint"),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "not-found", "no such admin endpoint"),
        }
    }

    async fn list_rooms(&self) -> Resp {
        let mut rooms = Vec::new();
        for name in self.gateway.rooms.names() {
            if let Some(h) = self.gateway.rooms.get(&name)
                && let Some(s) = h.status().await
            {
                rooms.push(json!({
                    "name": &*name,
                    "participants": s.members,
                    "live": s.live,
                    "hibernated": s.hibernated,
                    "moduleVersion": s.version,
                }));
            }
        }
        json_response(StatusCode::OK, json!({"rooms": rooms}))
    }

    async fn close_room(&self, room: &str) -> Resp {
        match self.gateway.rooms.get(room) {
            Some(h) => {
                h.close("closed by the operator").await;
                json_response(StatusCode::OK, json!({"closed": room}))
            }
            None => error(
                StatusCode::NOT_FOUND,
                "room-not-found",
                "no such room on this node",
            ),
        }
    }

    fn list_modules(&self) -> Resp {
        let list: serde_json::Map<String, Value> = self
            .modules
            .list()
            .into_iter()
            .map(|(f, versions)| {
                let current = versions.last().map(|v| v.version.clone());
                (
                    f.name().to_owned(),
                    json!({"current": current, "versions": versions}),
                )
            })
            .collect();
        json_response(StatusCode::OK, Value::Object(list))
    }

    async fn upload(&self, function: &str, req: Request<Incoming>) -> Resp {
        let function: Function = match function.parse() {
            Ok(f) => f,
            Err(e) => return error(StatusCode::NOT_FOUND, "unknown-function", e),
        };
        let body = match Limited::new(req.into_body(), MAX_UPLOAD).collect().await {
            Ok(b) => b.to_bytes().to_vec(),
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    format!("uploads are limited to {MAX_UPLOAD} bytes"),
                );
            }
        };
        match self
            .modules
            .deploy(function, ComponentSource::Bytes(body))
            .await
        {
            Ok(v) => json_response(
                StatusCode::OK,
                json!({"function": function.name(), "deployed": v}),
            ),
            Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, "refused", e.to_string()),
        }
    }

    async fn rollback(&self, function: &str) -> Resp {
        let function: Function = match function.parse() {
            Ok(f) => f,
            Err(e) => return error(StatusCode::NOT_FOUND, "unknown-function", e),
        };
        match self.modules.rollback(function).await {
            Ok(v) => json_response(
                StatusCode::OK,
                json!({"function": function.name(), "deployed": v}),
            ),
            Err(e) => error(StatusCode::CONFLICT, "refused", e.to_string()),
        }
    }
}

// The error is the HTTP answer itself, built once per request.
#[allow(clippy::result_large_err)]
async fn read_json(req: Request<Incoming>) -> Result<Value, Resp> {
    let body = Limited::new(req.into_body(), MAX_JSON)
        .collect()
        .await
        .map_err(|_| error(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "body too large"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!("invalid JSON: {e}"),
        )
    })
}
