//! Every key of the configuration has its environment twin.

use super::*;

/// Every leaf key of `t` (a table's keys joined; a list is one leaf).
fn leaves(t: &toml::Table, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, toml::Value)>) {
    for (k, v) in t {
        path.push(k.clone());
        match v {
            toml::Value::Table(inner) if !inner.is_empty() => leaves(inner, path, out),
            v => out.push((path.clone(), v.clone())),
        }
        path.pop();
    }
}

/// A configuration with every optional key set, so that each is walked.
fn full() -> Config {
    let mut c = Config::default();
    c.nats.url = Some("nats://127.0.0.1:4222".into());
    c.nats.ca_file = Some("/ca.pem".into());
    c.nats.cert_file = Some("/cert.pem".into());
    c.nats.key_file = Some("/key.pem".into());
    c.nats.room_regions.insert("pinned-".into(), "eu".into());
    c.server.public_url = Some("wss://example.org/v1/ws".into());
    c.webhooks.api_key = Some("key".into());
    c.webhooks.urls = vec!["http://127.0.0.1:9/hook".into()];
    c.regions = vec![RegionLink {
        name: "us-east".into(),
        url: "wss://us.example.org/v1/ws".into(),
    }];
    c.turn = Some(TurnSection {
        urls: vec!["turn:example.org".into()],
        ttl_seconds: 60,
    });
    c.modules.insert(
        "rooms".into(),
        ModuleSection {
            path: Some("/rooms.wasm".into()),
            memory_cap_mb: Some(16),
            deadline_ms: Some(50),
            config: [("greeting".to_owned(), toml::Value::String("hi".into()))].into(),
        },
    );
    c
}

/// A value for `key` other than `old`, valid where `old` was, and its
/// text in an environment variable.
fn another(key: &[String], old: &toml::Value) -> (toml::Value, String) {
    match old {
        toml::Value::String(s) if s.parse::<SocketAddr>().is_ok() => {
            let v = "127.0.0.1:4321".to_owned();
            (toml::Value::String(v.clone()), v)
        }
        toml::Value::String(s) => {
            let v = format!("{s}x");
            (toml::Value::String(v.clone()), v)
        }
        toml::Value::Integer(n) => (toml::Value::Integer(n + 1), (n + 1).to_string()),
        toml::Value::Boolean(b) => (toml::Value::Boolean(!b), (!b).to_string()),
        toml::Value::Float(f) => (toml::Value::Float(f + 0.5), (f + 0.5).to_string()),
        toml::Value::Array(items) => {
            // The same items in another order, or one more item like the first.
            let mut items = items.clone();
            match key.last().map(String::as_str) {
                Some("functions") => items.reverse(),
                _ if items.is_empty() => {
                    items.push(toml::Value::String("http://127.0.0.1:9/x".into()))
                }
                _ => {
                    let first = items[0].clone();
                    items.push(first);
                }
            }
            let v = toml::Value::Array(items);
            let text = v.to_string();
            (v, text)
        }
        other => panic!("{key:?}: no other value made for {other:?}"),
    }
}

#[test]
fn every_key_has_an_environment_twin() {
    let mut keys = Vec::new();
    let base = toml::Table::try_from(full()).expect("the configuration serialises");
    leaves(&base, &mut Vec::new(), &mut keys);
    assert!(keys.len() >= 50, "too few keys walked: {}", keys.len());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("roomlet.toml");
    std::fs::write(&file, toml::to_string(&full()).expect("toml")).expect("write");
    for (key, old) in keys {
        let (new, text) = another(&key, &old);
        let var = format!(
            "ROOMLET_{}",
            key.iter()
                .map(|k| k.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join("__")
        );
        let loaded = Config::load_with_env(Some(&file), [(var.clone(), text.clone())])
            .unwrap_or_else(|e| panic!("{var}={text}: {e}"));
        let got = toml::Table::try_from(loaded).expect("serialises");
        let mut v = toml::Value::Table(got);
        for k in &key {
            v = v
                .get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{var}: {k} is gone from the loaded configuration"));
        }
        assert_eq!(v, new, "{var}={text} did not set {}", key.join("."));
    }
}

#[test]
fn an_unknown_setting_names_its_variable_and_secrets_are_no_settings() {
    let e = Config::load_with_env(None, [("ROOMLET_NATS__LIVENESS_TLL_MS".into(), "9".into())])
        .expect_err("a misspelt key is refused");
    let text = e.to_string();
    assert!(
        text.contains("ROOMLET_NATS__LIVENESS_TLL_MS") && text.contains("liveness_tll_ms"),
        "{text}"
    );
    let c = Config::load_with_env(
        None,
        [
            ("ROOMLET_API_KEYS".into(), "k:s".into()),
            ("ROOMLET_NATS_PASSWORD".into(), "p".into()),
            ("ROOMLET_TURN_SECRET_FILE".into(), "/x".into()),
            ("ROOMLET_LISTEN".into(), "127.0.0.1:1".into()),
        ],
    )
    .expect("flags and secrets are not settings");
    assert_eq!(c.server.listen, Config::default().server.listen);
}

#[test]
fn millisecond_settings_take_integers_and_every_edge_config_loads() {
    let c = Config::load_with_env(
        None,
        [("ROOMLET_LIMITS__IDLE_TIMEOUT_MS".into(), "60000".into())],
    )
    .expect("loads");
    assert_eq!(c.limits.idle_timeout_ms, 60_000);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge-configs");
    let mut n = 0;
    for dir in [
        root.clone(),
        root.join("k8s/base"),
        root.join("k8s/overlays/eu-west"),
        root.join("k8s/overlays/us-east"),
    ] {
        for e in std::fs::read_dir(&dir).expect("edge-configs").flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml") {
                Config::load_with_env(Some(&p), std::iter::empty())
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
    }
    assert!(n >= 4, "only {n} edge configs found");
}
