//! Token checks across nodes: an auth node answers `P.auth` requests (a
//! queue group, so auth nodes scale out), a node without a local auth
//! function sends them.

use super::Bus;
use super::wire::{self, WireAuthReply, WireAuthRequest};
use futures_util::StreamExt;
use roomlet_gateway::AuthUnavailable;
use roomlet_runtime::AuthFunction;
use roomlet_runtime::bindings::authenticator::{AuthError, AuthRequest};
use roomlet_runtime::bindings::types::Identity;
use std::sync::Arc;

/// The auth function current at each call: a reload replaces it.
pub type CurrentAuth = Arc<dyn Fn() -> Arc<AuthFunction> + Send + Sync>;

/// Answers auth requests with this node's auth function until the
/// subscription ends.
pub async fn serve(bus: Arc<Bus>, auth: CurrentAuth) -> Result<(), super::BusError> {
    let subject = bus.subject("auth", None);
    let mut sub = bus
        .client()
        .queue_subscribe(subject.clone(), format!("{}.auth", bus.prefix))
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
            tokio::spawn(async move {
                let answer = match wire::decode::<WireAuthRequest>(
                    &bus.metrics.malformed,
                    "auth",
                    &msg.payload,
                ) {
                    Some(req) => {
                        let req: AuthRequest = req.into();
                        match auth.authenticate(&req).await {
                            Ok(r) => WireAuthReply::from_result(&r),
                            Err(e) => {
                                tracing::warn!(error = %e, "auth component failed");
                                WireAuthReply::Failed
                            }
                        }
                    }
                    None => WireAuthReply::Failed,
                };
                let _ = bus.client().publish(reply, wire::encode(&answer)).await;
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
