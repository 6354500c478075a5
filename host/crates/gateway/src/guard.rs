//! Per-connection guards: the frame rate limit and the bad-frame streak.

use std::time::{Duration, Instant};

/// How long a client may stay over its rate before it is disconnected.
const EXCESS_GRACE: Duration = Duration::from_secs(3);
/// Consecutive bad frames after which a client is disconnected.
pub(crate) const MAX_BAD_STREAK: u32 = 10;

/// A token bucket: `rate` frames per second, `burst` at once.
#[derive(Debug)]
pub(crate) struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    over_since: Option<Instant>,
}

/// What the limiter says about one frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rate {
    /// Within the limit.
    Ok,
    /// Over it: refuse this frame.
    Refuse,
    /// Over it for too long: disconnect.
    Disconnect,
}

impl RateLimit {
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            last: Instant::now(),
            over_since: None,
        }
    }

    /// Takes one token at `now`: the session's clock read for this frame,
    /// shared with its idle timer, one read per frame instead of two.
    pub fn check(&mut self, now: Instant) -> Rate {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            // Forgiven only once the client has really slowed down: a
            // flood that lets the odd frame through stays a flood.
            if self.tokens >= self.burst / 2.0 {
                self.over_since = None;
            }
            return Rate::Ok;
        }
        let since = *self.over_since.get_or_insert(now);
        if now.duration_since(since) > EXCESS_GRACE {
            Rate::Disconnect
        } else {
            Rate::Refuse
        }
    }
}

/// Checks call-quality figures: each present one must be finite and in range.
pub(crate) fn check_stats(s: &roomlet_protocol::frames::Stats) -> Result<(), String> {
    let checks: [(&str, Option<f64>, f64); 8] = [
        ("rttMs", s.rtt_ms, 60_000.0),
        ("jitterMs", s.jitter_ms, 60_000.0),
        ("packetLoss", s.packet_loss, 1.0),
        ("fps", s.fps, 240.0),
        ("width", s.width, 16_384.0),
        ("height", s.height, 16_384.0),
        ("freezeCount", s.freeze_count, 1e6),
        ("concealedSamples", s.concealed_samples, 1e12),
    ];
    for (name, v, max) in checks {
        if let Some(v) = v
            && (!v.is_finite() || !(0.0..=max).contains(&v))
        {
            return Err(format!("{name} must be within 0..={max}"));
        }
    }
    Ok(())
}
