//! `/metrics` after a real session: the counters moved, every series
//! carries region and node, and Prometheus' own checker accepts the text.

use roomlet_tests::server::{Wire, joined, start};
use serde_json::json;
use std::collections::BTreeMap;

fn value(text: &str, series_prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_move_after_a_session_and_pass_promtool() {
    let s = start(|_| {}).await;
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
        ("roomlet_frames_in_total{", 5.0),
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
    served_as_committed(&text);

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

/// Metric names (`roomlet_*`, `process_*`) a file refers to.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for (i, _) in text
        .match_indices("roomlet_")
        .chain(text.match_indices("process_"))
    {
        let preceded = text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if preceded {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

/// One metric family as tests/fixtures/metrics.txt commits it.
struct Family {
    kind: String,
    labels: Vec<String>,
    bounds: Vec<String>,
}

/// tests/fixtures/metrics.txt: every family roomlet serves.
fn committed() -> BTreeMap<String, Family> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/metrics.txt");
    let text = std::fs::read_to_string(&path).expect("tests/fixtures/metrics.txt");
    let list = |s: &str| -> Vec<String> {
        if s == "-" {
            Vec::new()
        } else {
            s.split(',').map(str::to_owned).collect()
        }
    };
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "bad line in metrics.txt: {l}");
            (
                f[0].to_owned(),
                Family {
                    kind: f[1].to_owned(),
                    labels: list(f[2]),
                    bounds: list(f[3]),
                },
            )
        })
        .collect()
}

/// Holds a scrape to the committed list: every family served is listed
/// with its type; every sample carries the listed labels (and region and
/// node); every histogram has the listed bounds, then `+Inf`.
fn served_as_committed(text: &str) {
    let families = committed();
    let mut bounds: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').expect("a TYPE line names a type");
            let f = families
                .get(name)
                .unwrap_or_else(|| panic!("{name} is served but not in fixtures/metrics.txt"));
            assert_eq!(f.kind, kind, "{name} changed type");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, _) = line.rsplit_once(' ').expect("a sample has a value");
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|b| families.get(*b).is_some_and(|f| f.kind == "histogram"))
            })
            .unwrap_or(name);
        let f = families
            .get(family)
            .unwrap_or_else(|| panic!("{line}: {family} is not in fixtures/metrics.txt"));
        let mut names = Vec::new();
        let mut le = None;
        for pair in labels.trim_end_matches('}').split("\",") {
            let Some((k, v)) = pair.split_once("=\"") else {
                continue;
            };
            let k = k.trim_start_matches(',');
            match k {
                "region" | "node" => {}
                "le" => le = Some(v.trim_end_matches('"').to_owned()),
                other => names.push(other.to_owned()),
            }
        }
        names.sort();
        let mut want = f.labels.clone();
        want.sort();
        assert_eq!(
            names, want,
            "{line}: labels differ from fixtures/metrics.txt"
        );
        if let Some(le) = le {
            let others: String = labels.split(",le=").next().unwrap_or_default().to_owned();
            bounds
                .entry((family.to_owned(), others))
                .or_default()
                .push(le);
        }
    }
    for ((family, _), got) in bounds {
        let mut want = families[&family].bounds.clone();
        want.push("+Inf".into());
        assert_eq!(
            got, want,
            "{family}: buckets differ from fixtures/metrics.txt"
        );
    }
}

#[tokio::test]
async fn dashboards_alerts_and_autoscalers_name_only_served_metrics() {
    let served: std::collections::BTreeSet<String> = committed().into_keys().collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge-configs");
    for file in [
        "grafana/dashboards/roomlet.json",
        "prometheus/alerts.yml",
        "k8s/base/hpa.yaml",
        "k8s/monitoring/prometheus-adapter-config.yaml",
    ] {
        let body =
            std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let names = metric_names(&body);
        assert!(!names.is_empty(), "{file} names no metric");
        for name in names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|b| served.contains(*b)))
                .unwrap_or(&name);
            assert!(
                served.contains(base),
                "{file} uses {name}, which fixtures/metrics.txt does not list as served"
            );
        }
    }
}

/// Two nodes in one process (as tests and embedders run them) count apart
/// and label their series with their own region and node.
#[tokio::test]
async fn two_nodes_in_one_process_report_their_own_metrics() {
    let a = start(|c| {
        c.server.region = "eu-west".into();
        c.server.node = "node-a".into();
    })
    .await;
    let b = start(|c| {
        c.server.region = "us-east".into();
        c.server.node = "node-b".into();
    })
    .await;
    let (mut x, _) = joined(&a, Wire::Json, "two", "x").await;
    for _ in 0..3 {
        x.send(json!({"type": "ping"})).await;
        x.frame_of("pong").await;
    }
    let scrape = |s: &roomlet_tests::server::TestServer| {
        let addr = s.running.internal_addr;
        async move {
            roomlet_tests::http(addr, "GET", "/metrics", None, b"")
                .await
                .1
        }
    };
    let (ta, tb) = (scrape(&a).await, scrape(&b).await);
    let pings = |t: &str| value(t, "roomlet_frames_in_total{");
    assert!(
        pings(&ta) >= 4.0,
        "node a counted {} frames in:\n{ta}",
        pings(&ta)
    );
    assert_eq!(pings(&tb), 0.0, "node b counted node a's frames:\n{tb}");
    assert_eq!(value(&ta, "roomlet_connections{"), 1.0);
    assert_eq!(value(&tb, "roomlet_connections{"), 0.0);
    for (t, region, node) in [(&ta, "eu-west", "node-a"), (&tb, "us-east", "node-b")] {
        for line in t.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            assert!(
                line.contains(&format!("region=\"{region}\""))
                    && line.contains(&format!("node=\"{node}\"")),
                "a series of {node} carries another node's labels: {line}"
            );
        }
    }
    served_as_committed(&ta);
    served_as_committed(&tb);
}

#[test]
fn alert_rules_check_and_each_alert_fires_in_promtool() {
    let Some(promtool) = which("promtool") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "promtool is missing: install the Debian package prometheus"
        );
        println!("skipping: install the Debian package prometheus");
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge-configs/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file())
}
