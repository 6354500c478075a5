//! The HTTP front: the public listener (`/v1/ws`, `/demo`, `/healthz`,
//! `/readyz`, and `/v1/dev/token` in dev mode) and the internal one
//! (`/metrics`, `/v1/admin/...`), on hyper 1.x.

use super::admit::{Admission, Pending, Socket};
use super::dev::dev_token;
use super::front::{Http, text, with_type, with_type_owned};
use super::upgrade::upgrade;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

static DEMO_HTML: &str = include_str!("../../../clients/js/demo.html");
static CLIENT_JS: &str = include_str!("../../../clients/js/roomlet.js");

/// Accepts connections on `listener` until shutdown, each admitted by
/// `gate` (which may close an older one for it, or refuse it) and served
/// on a task of its own.
pub(super) async fn accept(
    listener: TcpListener,
    http: Arc<Http>,
    gate: Arc<Admission>,
    mut shutdown: watch::Receiver<bool>,
    internal: bool,
) {
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    gate.accept_failed(&e);
                    // Out of file descriptors and the like: back off
                    // instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        match gate.admit(addr.ip().to_canonical()).await {
            Ok((socket, pending)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(
                    stream,
                    addr,
                    http.clone(),
                    (socket, pending),
                    internal,
                ));
            }
            Err(why) => {
                gate.refused(why, addr);
                refuse(&stream);
            }
        }
    }
}

/// Serves one admitted connection until it ends, upgrades, or its slot is
/// taken for a newer one.
async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    http: Arc<Http>,
    (socket, mut pending): (Arc<Socket>, Pending),
    internal: bool,
) {
    let head_timeout = Duration::from_millis(http.gateway.limits.request_head_timeout_ms);
    let counted = socket.clone();
    let service = service_fn(move |req| {
        let http = http.clone();
        let socket = counted.clone();
        async move {
            Ok::<_, Infallible>(if internal {
                route_internal(&http, req).await
            } else {
                route_public(http, req, addr, socket)
            })
        }
    });
    // hyper enforces the head's deadline only with a timer set. It runs
    // from the first poll for a head to the head's end (not reset by each
    // byte), and again while a keep-alive connection waits for the next.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::trace!(error = %e, "http connection ended with an error");
        },
        () = pending.evicted() => {
            tracing::debug!(client = %addr, "connection closed for a newer one");
        }
    }
    // The connection is closed (or upgraded): the socket is counted as
    // such before its slot is freed, as admission expects.
    drop(socket);
    drop(pending);
}

/// Closes a refused connection at once, with a 503 if its buffer takes it.
fn refuse(stream: &TcpStream) {
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
}

fn route_public(
    http: Arc<Http>,
    req: Request<Incoming>,
    addr: SocketAddr,
    socket: Arc<Socket>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/v1/ws" if !http.relay => text(
            StatusCode::NOT_FOUND,
            "this node does not run the relay function; connect to a gateway\n",
        ),
        "/v1/ws" => upgrade(http, req, addr, socket),
        "/demo" | "/demo/" => with_type(DEMO_HTML, "text/html; charset=utf-8"),
        "/demo/roomlet.js" => with_type(CLIENT_JS, "text/javascript; charset=utf-8"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => ready(&http),
        "/v1/dev/token" => dev_token(&http, &req),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn route_internal(http: &Http, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path().starts_with("/v1/admin/") {
        return http.admin.handle(req).await;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => ready(http),
        "/metrics" => metrics(http),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn ready(http: &Http) -> Response<Full<Bytes>> {
    match http.gateway.readiness() {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

fn metrics(http: &Http) -> Response<Full<Bytes>> {
    with_type_owned(
        http.registry.render(),
        "text/plain; version=0.0.4; charset=utf-8",
    )
}
