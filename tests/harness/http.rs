//! The one HTTP/1.1 client of the tests: one request per connection,
//! `Connection: close`, a chunked body reassembled. Blocking at heart, so
//! synchronous tests (images, processes) and async ones share it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    /// The body, de-chunked.
    pub body: String,
}

impl Response {
    /// The status line, headers and body, as one text (to search for a
    /// leaked secret wherever it would be).
    pub fn whole(&self) -> String {
        format!("{}\r\n\r\n{}", self.head, self.body)
    }
}

/// Sends `method path` to `addr` with an optional bearer token and body;
/// `None` when nothing answers within `within`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &[u8],
    within: Duration,
) -> Option<Response> {
    let mut s = TcpStream::connect_timeout(&addr, within.min(Duration::from_secs(5))).ok()?;
    s.set_read_timeout(Some(within)).ok()?;
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some(Response {
        status,
        head: head.to_owned(),
        body: if chunked {
            dechunk(body)?
        } else {
            body.to_owned()
        },
    })
}

/// [`request`] from async code (on a blocking thread); panics when nothing
/// answers within a minute. (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let r = fetch(addr, method, path, bearer, body).await;
    (r.status, r.body)
}

/// [`request`] from async code, the whole [`Response`].
pub async fn fetch(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Response {
    let (method, path) = (method.to_owned(), path.to_owned());
    let (bearer, body) = (bearer.map(str::to_owned), body.to_vec());
    tokio::task::spawn_blocking(move || {
        request(
            addr,
            &method,
            &path,
            bearer.as_deref(),
            &body,
            Duration::from_secs(60),
        )
    })
    .await
    .expect("the request's thread")
    .unwrap_or_else(|| panic!("no HTTP answer from {addr}"))
}

/// The body of a `Transfer-Encoding: chunked` response (Prometheus' API
/// sends large answers so).
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}
