//! `/metrics` after a real session: the counters moved, every series
//! carries region and node, and Prometheus' own checker accepts the text.

use roomlet_tests::server::{Wire, joined, start};
use serde_json::json;

fn value(text: &str, series_prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_move_after_a_session_and_pass_promtool() {
    let s = start(|c| c.server.region = "metrics-test".into()).await;
    let internal = s.running.internal_addr;
    let (mut a, _) = joined(&s, Wire::Json, "m", "a").await;
    let (mut b, jb) = joined(&s, Wire::Msgpack, "m", "b").await;
    let b_id = jb["peerId"].as_str().expect("id").to_owned();
    a.frame_of("peer-joined").await;
    a.send(json!({"type": "signal", "to": b_id, "kind": "offer", "payload": {"sdp": "v=0"}}))
        .await;
    b.frame_of("signal").await;
    a.send(json!({"type": "message", "data": "hi"})).await;
    b.frame_of("message").await;
    a.send(json!({"type": "stats", "rttMs": 42, "jitterMs": 3, "packetLoss": 0.01, "fps": 30, "height": 720})).await;
    a.send(json!({"type": "teleport"})).await;
    assert_eq!(a.frame_of("error").await["code"], "unknown-type");
    let mut bad = roomlet_tests::server::Client::connect(&s.ws_url(), Wire::Json).await;
    bad.send(json!({"type": "join", "room": "m", "token": "nope"}))
        .await;
    assert_eq!(bad.closed().await, 4001);

    let (status, text) = roomlet_tests::http(internal, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    for (series, at_least) in [
        ("roomlet_connections{", 2.0),
        ("roomlet_rooms{", 1.0),
        ("roomlet_peers{", 2.0),
        ("roomlet_frames_in_total{region=\"metrics-test\"", 5.0),
        ("roomlet_frames_out_total{", 5.0),
        ("roomlet_errors_total{", 2.0),
        ("roomlet_auth_failures_total{", 1.0),
        ("roomlet_join_duration_seconds_count{", 2.0),
        ("roomlet_component_call_duration_seconds_count{", 3.0),
        ("roomlet_instantiations_total{", 3.0),
        ("roomlet_call_rtt_seconds_count{", 1.0),
        ("process_resident_memory_bytes{", 1.0),
        ("process_open_fds{", 1.0),
    ] {
        let v = value(&text, series);
        assert!(
            v >= at_least,
            "{series} is {v}, expected at least {at_least}"
        );
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            line.contains("region=\"") && line.contains("node=\""),
            "unlabelled series: {line}"
        );
    }

    match which("promtool") {
        Some(promtool) => {
            let mut child = std::process::Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("promtool starts");
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("feed promtool");
            let out = child.wait_with_output().expect("promtool ends");
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("promtool is missing: install the Debian package prometheus")
        }
        None => println!("skipping promtool check: install the Debian package prometheus"),
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file())
}
