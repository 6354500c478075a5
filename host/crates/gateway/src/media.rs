//! Media-plane credentials for a session (an SFU's join token): issued by
//! the auth function at join and resume and on a `media-token` frame,
//! handed to the client once, never kept.
//!
//! Credentials are bearer tokens for another service, so they go only into
//! the frame that answers their peer: not into the resume buffer (a
//! replayed `joined` goes without them), the session journal, the restart
//! image, a log line or a metric label.

use crate::Gateway;
use crate::resume::PeerState;
use roomlet_protocol::Media;
use roomlet_runtime::bindings::media::{MediaCause, MediaRequest};

/// A session asks for fresh credentials at most this often.
pub(crate) const MIN_INTERVAL_S: u32 = 10;

/// Issues the credentials of `state`'s peer, where tokens are checked,
/// never past its access token. A failure is logged and counted, and the
/// session goes on without them (its call still works peer to peer).
pub(crate) async fn issue(
    gw: &Gateway,
    state: &PeerState,
    cause: MediaCause,
) -> Result<Media, MediaFailure> {
    if !gw.media {
        return Err(MediaFailure::NotConfigured);
    }
    let request = MediaRequest {
        room: state.room.name().to_string(),
        peer: (*state.peer).clone(),
        region: gw.region.clone(),
        expires_at_ms: state.expires_at_ms,
        cause,
    };
    let outcome = gw.topology.issue_media(gw.auth(), &request).await;
    let cause = match cause {
        MediaCause::Join => "join",
        MediaCause::Resume => "resume",
        MediaCause::Refresh => "refresh",
    };
    match outcome {
        Ok(Ok(media)) => {
            for provider in media.keys() {
                gw.metrics
                    .media_issued
                    .with_label_values(&[provider_label(provider), cause])
                    .inc();
            }
            Ok(media)
        }
        Ok(Err(reason)) => {
            // The component's own words: it never puts a secret in them
            // (the default one does not; a plugin's are masked on output).
            tracing::info!(%reason, cause, "media credentials refused");
            gw.metrics
                .media_failures
                .with_label_values(&["refused"])
                .inc();
            Err(MediaFailure::Refused)
        }
        Err(e) => {
            tracing::warn!(error = %e, cause, "media credentials could not be issued");
            gw.metrics
                .media_failures
                .with_label_values(&["unavailable"])
                .inc();
            Err(MediaFailure::Unavailable)
        }
    }
}

/// Why a session has no fresh credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaFailure {
    /// No provider is configured on this node.
    NotConfigured,
    /// The auth function refused (the access token expired, say).
    Refused,
    /// The auth function failed or no auth node answered.
    Unavailable,
}

/// A metric label: the providers roomlet knows, else `other` (a plugin's
/// provider names are not a metric's to grow without bound).
fn provider_label(provider: &str) -> &'static str {
    match provider {
        "agora" => "agora",
        "livekit" => "livekit",
        _ => "other",
    }
}

/// Seconds on a coarse process clock, for the per-session rate limit:
/// four bytes in the session, not an `Instant`'s sixteen.
pub(crate) fn now_s() -> u32 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    // One more, so 0 stays "never".
    u32::try_from(start.elapsed().as_secs()).unwrap_or(u32::MAX - 1) + 1
}

/// Whether `state` may have fresh credentials now; if so, counts it.
pub(crate) fn take_turn(state: &mut PeerState) -> bool {
    let now = now_s();
    if state.media_at_s != 0 && now < state.media_at_s.saturating_add(MIN_INTERVAL_S) {
        return false;
    }
    state.media_at_s = now;
    true
}
