//! The gateway's metrics: frames each way, refusals, joins, resumes, and
//! the call quality clients report.

use roomlet_protocol::{Inbound, ServerFrame, Stats};
use roomlet_telemetry::{ByName, Histogram, IntCounterVec, Registry, buckets};

const RTT: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0];
const JITTER: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2];
const LOSS: &[f64] = &[0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5];
const FPS: &[f64] = &[1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 45.0, 60.0];
const HEIGHT: &[f64] = &[180.0, 240.0, 360.0, 480.0, 720.0, 1080.0, 1440.0, 2160.0];
const COUNTS: &[f64] = &[0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 1000.0];
const SAMPLES: &[f64] = &[0.0, 100.0, 1000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// What the gateway counts, registered in a node's [`Registry`].
pub struct GatewayMetrics {
    pub(crate) frames_in: ByName,
    pub(crate) frames_out: ByName,
    pub(crate) errors: IntCounterVec,
    pub(crate) auth_failures: IntCounterVec,
    pub(crate) resumes: IntCounterVec,
    pub(crate) join_seconds: Histogram,
    pub(crate) media_issued: IntCounterVec,
    pub(crate) media_failures: IntCounterVec,
    call: [Histogram; 7],
}

impl GatewayMetrics {
    /// Registers the gateway's metrics in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let h = |name: &str, help: &str, b: &[f64]| registry.histogram(name, help, b);
        Self {
            frames_in: ByName::new(
                registry.counter_vec(
                    "roomlet_frames_in_total",
                    "Client frames received, by type.",
                    &["type"],
                ),
                Inbound::TYPES,
            ),
            frames_out: ByName::new(
                registry.counter_vec(
                    "roomlet_frames_out_total",
                    "Frames sent to clients, by type.",
                    &["type"],
                ),
                ServerFrame::TYPES,
            ),
            errors: registry.counter_vec(
                "roomlet_errors_total",
                "Error frames sent to clients, by code.",
                &["code"],
            ),
            auth_failures: registry.counter_vec(
                "roomlet_auth_failures_total",
                "Access tokens refused, by reason.",
                &["reason"],
            ),
            resumes: registry.counter_vec(
                "roomlet_resumes_total",
                "Session resume attempts, by result.",
                &["result"],
            ),
            media_issued: registry.counter_vec(
                "roomlet_media_credentials_total",
                "Media-plane credentials issued, by provider and cause (join, resume, refresh).",
                &["provider", "cause"],
            ),
            media_failures: registry.counter_vec(
                "roomlet_media_credential_failures_total",
                "Media-plane credentials not issued, by reason (refused, unavailable).",
                &["reason"],
            ),
            join_seconds: h(
                "roomlet_join_duration_seconds",
                "Time from a join frame received to joined sent.",
                buckets::LATENCY,
            ),
            call: [
                h(
                    "roomlet_call_rtt_seconds",
                    "Client-reported WebRTC round-trip time.",
                    RTT,
                ),
                h(
                    "roomlet_call_jitter_seconds",
                    "Client-reported WebRTC jitter.",
                    JITTER,
                ),
                h(
                    "roomlet_call_packet_loss_ratio",
                    "Client-reported fraction of packets lost.",
                    LOSS,
                ),
                h(
                    "roomlet_call_video_fps",
                    "Client-reported received video frames per second.",
                    FPS,
                ),
                h(
                    "roomlet_call_video_height_pixels",
                    "Client-reported received video height.",
                    HEIGHT,
                ),
                h(
                    "roomlet_call_video_freezes",
                    "Client-reported video freeze count per report.",
                    COUNTS,
                ),
                h(
                    "roomlet_call_audio_concealed_samples",
                    "Client-reported concealed audio samples per report.",
                    SAMPLES,
                ),
            ],
        }
    }

    /// Counts a frame on its way out.
    pub(crate) fn sent(&self, frame: &ServerFrame) {
        self.frames_out.inc(frame.type_index());
        if let ServerFrame::Error { code, .. } = frame {
            self.errors.with_label_values(&[code.as_str()]).inc();
        }
    }

    /// Aggregates a client's call-quality report (checked finite already).
    pub(crate) fn call_quality(&self, s: &Stats) {
        let ms = |v: Option<f64>| v.map(|v| v / 1000.0);
        let figures = [
            ms(s.rtt_ms),
            ms(s.jitter_ms),
            s.packet_loss,
            s.fps,
            s.height,
            s.freeze_count,
            s.concealed_samples,
        ];
        for (h, v) in self.call.iter().zip(figures) {
            if let Some(v) = v {
                h.observe(v);
            }
        }
    }
}

impl Default for GatewayMetrics {
    /// Counted where nobody reads them (tests, benchmarks).
    fn default() -> Self {
        Self::new(&Registry::unserved())
    }
}
