//! Token checks and media credentials across nodes: an auth node answers
//! `P.auth` and `P.media` requests (queue groups, so auth nodes scale
//! out), a node without a local auth function sends them.

use super::Bus;
use super::wire::{self, WireAuthReply, WireAuthRequest, WirePeer};
use futures_util::StreamExt;
use roomlet_gateway::AuthUnavailable;
use roomlet_gateway::topology::{MediaOutcome, issue_media_here};
use roomlet_protocol::Media;
use roomlet_runtime::AuthFunction;
use roomlet_runtime::bindings::authenticator::{AuthError, AuthRequest};
use roomlet_runtime::bindings::media::{MediaCause, MediaRequest};
use roomlet_runtime::bindings::types::Identity;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The auth function current at each call: a reload replaces it.
pub type CurrentAuth = Arc<dyn Fn() -> Arc<AuthFunction> + Send + Sync>;

/// Answers auth and media requests with this node's auth function until
/// the subscriptions end.
pub async fn serve(bus: Arc<Bus>, auth: CurrentAuth) -> Result<(), super::BusError> {
    answer(
        bus.clone(),
        auth.clone(),
        "auth",
        |bus, auth, payload| async move {
            let answer =
                match wire::decode::<WireAuthRequest>(&bus.metrics.malformed, "auth", &payload) {
                    Some(req) => match auth.authenticate(&req.into()).await {
                        Ok(r) => WireAuthReply::from_result(&r),
                        Err(e) => {
                            tracing::warn!(error = %e, "auth component failed");
                            WireAuthReply::Failed
                        }
                    },
                    None => WireAuthReply::Failed,
                };
            wire::encode(&answer)
        },
    )
    .await?;
    answer(bus, auth, "media", |bus, auth, payload| async move {
        let answer = match wire::decode::<WireMediaRequest>(
            &bus.metrics.malformed,
            "media",
            &payload,
        ) {
            Some(req) => match issue_media_here(auth, &req.into()).await {
                Ok(Ok(media)) => WireMediaReply::Ok(media),
                Ok(Err(why)) => WireMediaReply::Refused(why),
                Err(e) => {
                    tracing::warn!(error = %e, "auth component failed issuing media credentials");
                    WireMediaReply::Failed
                }
            },
            None => WireMediaReply::Failed,
        };
        wire::encode(&answer)
    })
    .await
}

/// Answers requests on subject `name` (a queue group, so auth nodes scale
/// out) with `handle`, each on its own task, with the auth function
/// current when the request came.
async fn answer<F, Fut>(
    bus: Arc<Bus>,
    auth: CurrentAuth,
    name: &'static str,
    handle: F,
) -> Result<(), super::BusError>
where
    F: Fn(Arc<Bus>, Arc<AuthFunction>, bytes::Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bytes::Bytes> + Send,
{
    let subject = bus.subject(name, None);
    let mut sub = bus
        .client()
        .queue_subscribe(subject.clone(), format!("{}.{name}", bus.prefix))
        .await
        .map_err(|e| super::BusError::Subscribe {
            subject,
            message: e.to_string(),
        })?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let bus = bus.clone();
            let auth = auth();
            let handle = handle.clone();
            tokio::spawn(async move {
                let body = handle(bus.clone(), auth, msg.payload).await;
                let _ = bus.client().publish(reply, body).await;
            });
        }
    });
    Ok(())
}

/// Asks an auth node. `Err` when none answered in time or it failed.
pub async fn authenticate(
    bus: &Bus,
    request: &AuthRequest,
) -> Result<Result<Identity, AuthError>, AuthUnavailable> {
    let body = wire::encode(&WireAuthRequest::from(request));
    let started = std::time::Instant::now();
    let msg = bus
        .client()
        .request(bus.subject("auth", None), body)
        .await
        .map_err(|e| AuthUnavailable::NoAnswer(e.to_string()))?;
    bus.metrics
        .request_seconds
        .observe(started.elapsed().as_secs_f64());
    wire::decode::<WireAuthReply>(&bus.metrics.malformed, "auth-reply", &msg.payload)
        .and_then(WireAuthReply::into_result)
        .ok_or_else(|| AuthUnavailable::Failed("the auth node failed".into()))
}

/// Asks an auth node for a peer's media credentials.
pub async fn issue_media(bus: &Bus, request: &MediaRequest) -> MediaOutcome {
    let body = wire::encode(&WireMediaRequest::from(request));
    let msg = bus
        .client()
        .request(bus.subject("media", None), body)
        .await
        .map_err(|e| AuthUnavailable::NoAnswer(e.to_string()))?;
    match wire::decode::<WireMediaReply>(&bus.metrics.malformed, "media-reply", &msg.payload) {
        Some(WireMediaReply::Ok(media)) => Ok(Ok(media)),
        Some(WireMediaReply::Refused(why)) => Ok(Err(why)),
        Some(WireMediaReply::Failed) | None => {
            Err(AuthUnavailable::Failed("the auth node failed".into()))
        }
    }
}

// The media request and reply on the wire (beside the token check's, in
// `wire`: these travel only between a gateway and an auth node).

/// A media credential request for an auth node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireMediaRequest {
    pub room: String,
    pub peer: WirePeer,
    pub region: String,
    pub expires_at_ms: u64,
    /// 0 join, 1 resume, 2 refresh.
    pub cause: u8,
}

impl From<&MediaRequest> for WireMediaRequest {
    fn from(r: &MediaRequest) -> Self {
        Self {
            room: r.room.clone(),
            peer: WirePeer::from(&r.peer),
            region: r.region.clone(),
            expires_at_ms: r.expires_at_ms,
            cause: match r.cause {
                MediaCause::Join => 0,
                MediaCause::Resume => 1,
                MediaCause::Refresh => 2,
            },
        }
    }
}

impl From<WireMediaRequest> for MediaRequest {
    fn from(r: WireMediaRequest) -> Self {
        Self {
            room: r.room,
            peer: r.peer.into(),
            region: r.region,
            expires_at_ms: r.expires_at_ms,
            cause: match r.cause {
                0 => MediaCause::Join,
                1 => MediaCause::Resume,
                _ => MediaCause::Refresh,
            },
        }
    }
}

/// The auth node's answer to a media request.
#[derive(Serialize, Deserialize)]
pub(crate) enum WireMediaReply {
    Ok(Media),
    /// The component refused, saying why.
    Refused(String),
    /// The auth component failed.
    Failed,
}
