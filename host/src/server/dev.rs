//! `--dev` only: `/v1/dev/token`, a token for the demo page.

use super::front::{Http, text, with_type_owned};
use crate::tokens::{self, TokenRequest};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use std::time::Duration;

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `--dev` only: a token for any room and identity, for the demo page.
pub(super) fn dev_token(http: &Http, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(keys) = &http.dev_keys else {
        return text(
            StatusCode::NOT_FOUND,
            "not found (the demo token endpoint exists only with --dev)\n",
        );
    };
    let Some((key, secret)) = keys.first() else {
        return text(StatusCode::NOT_FOUND, "no API key\n");
    };
    let room = query_param(req, "room").unwrap_or_else(|| "demo".into());
    let identity = query_param(req, "identity").unwrap_or_else(|| "guest".into());
    if room.is_empty() || room.len() > 128 || identity.is_empty() || identity.len() > 128 {
        return text(
            StatusCode::BAD_REQUEST,
            "room and identity must be 1 to 128 characters\n",
        );
    }
    let token = tokens::mint(
        key,
        secret,
        &TokenRequest {
            room,
            name: Some(identity.clone()),
            identity,
            metadata: None,
            ttl: Duration::from_secs(3600),
            admin: false,
            create: true,
        },
    );
    let url = http.public_url.clone().unwrap_or_else(|| {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1:7700");
        format!("ws://{host}/v1/ws")
    });
    let body = serde_json::json!({ "token": token, "url": url }).to_string();
    with_type_owned(body, "application/json")
}
