//! A minimal HTTP/1.1 client for webhook POSTs: plain http, one request
//! per connection. https endpoints go through a TLS-terminating proxy
//! (a sidecar or the receiver's load balancer); see docs/events.md.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where one webhook goes.
#[derive(Debug, Clone)]
pub(super) struct Target {
    host: String,
    port: u16,
    /// `host:port` as written: the Host header, and what logs show (the
    /// path and query may carry a receiver's secret; they are not logged).
    pub(super) authority: String,
    path: String,
}

impl Target {
    /// Parses an `http://` URL; the error says what to change.
    pub(super) fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected http://host[:port]/path"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(
                    "https is not built in: send to a TLS-terminating proxy over http://".into(),
                );
            }
            _ => return Err("expected an http:// URL".into()),
        }
        let Some(authority) = uri.authority() else {
            return Err("the URL has no host".into());
        };
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        Ok(Self {
            host,
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into()),
        })
    }
}

/// POSTs `body`; the receiver's status, or why there is none.
pub(super) async fn post(
    target: &Target,
    body: Bytes,
    authorization: &str,
) -> Result<StatusCode, String> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let req = Request::post(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/webhook+json")
        .header(AUTHORIZATION, authorization)
        .header(USER_AGENT, concat!("roomlet/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    let mut request = std::pin::pin!(sender.send_request(req));
    let mut conn = std::pin::pin!(conn);
    // The connection must be driven for the request to make progress; if
    // it ends first, the request's own result says how.
    let response = tokio::select! {
        biased;
        r = &mut request => r,
        _ = &mut conn => request.await,
    };
    response
        .map(|r| r.status())
        .map_err(|e| format!("request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn urls() {
        let t = Target::parse("http://127.0.0.1:8080/hook?x=1").expect("valid");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/hook?x=1")
        );
        let t = Target::parse("http://[::1]/").expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert!(
            Target::parse("https://example.com/")
                .unwrap_err()
                .contains("proxy")
        );
        assert!(Target::parse("http://u:p@example.com/").is_err());
        assert!(Target::parse("ftp://example.com/").is_err());
    }
}
