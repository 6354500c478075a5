//! Media-plane credentials at join, resume and `media-token`: Agora RTC
//! tokens (AccessToken2) read back by an independent decoder, LiveKit
//! tokens checked by LiveKit's own server SDK (PyPI `livekit-api`), and the
//! refusals of a misconfigured provider. (Agora's published vectors are
//! checked in `modules/auth/src/agora.rs`; secrets staying out of logs,
//! frames and metrics in `tests/auth.rs`.)

use roomlet::config::media::{AgoraSection, LiveKitSection, MediaSecrets};
use roomlet::config::{Config, ConfigError};
use roomlet::runtime::secrets::{DEV_API_KEY, DEV_API_SECRET, Secret};
use roomlet::server::{Secrets, ServerError};
use roomlet_tests::agora;
use roomlet_tests::server::{Client, TestServer, Wire, start_with, test_config};
use roomlet_tests::tokens::{Token, hs256, now_secs};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;

const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
const CERTIFICATE: &str = "5CFd2fd1755d40ecb72977518be15d3b";
const LK_KEY: &str = "APIsfu-test";
const LK_SECRET: &str = "lk-secret-4Jd8sPq2Wm6Zr1Xn5Tb9";
/// Shorter than the test tokens' ten minutes: the media TTL decides.
const TTL: u64 = 300;

fn media(c: &mut Config) {
    c.media.ttl_seconds = TTL;
    c.media.agora = Some(AgoraSection {
        app_id: APP_ID.into(),
    });
    c.media.livekit = Some(LiveKitSection {
        url: "wss://lk.example.org".into(),
        regions: BTreeMap::from([(c.server.region.clone(), "wss://near.lk.example.org".into())]),
        api_key: LK_KEY.into(),
    });
}

fn media_secrets() -> Secrets {
    Secrets {
        media: MediaSecrets {
            agora: Some(Secret::new(CERTIFICATE)),
            livekit: Some(Secret::new(LK_SECRET)),
        },
        ..Secrets::default()
    }
}

async fn server() -> TestServer {
    start_with(media, media_secrets()).await
}

/// A dev-key token without `canPublish` and `canPublishData`.
fn viewer_token(room: &str, identity: &str) -> String {
    let now = now_secs();
    hs256(
        &json!({
            "iss": DEV_API_KEY, "sub": identity, "nbf": now - 5, "exp": now + 600,
            "video": {"room": room, "roomJoin": true, "roomCreate": true,
                      "canPublish": false, "canPublishData": false, "canSubscribe": true},
        }),
        DEV_API_SECRET,
    )
}

/// Agora's channel-name rules, written here from its documentation.
fn is_agora_channel(name: &str) -> bool {
    const PUNCT: &str = " !#$%&()+-:;<=.>?@[]^_{|}~,";
    !name.is_empty()
        && name.len() < 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || PUNCT.contains(c))
}

/// The `agora` credential of a `joined` or `media-token`, decoded and
/// checked against the certificate; its privileges.
fn agora_of(frame: &Value, peer: &str) -> BTreeMap<u16, u32> {
    let cred = &frame["media"]["agora"];
    assert_eq!(cred["appId"], APP_ID, "{frame}");
    assert_eq!(cred["account"], peer, "the account is the peer id: {frame}");
    let channel = cred["channel"].as_str().expect("channel");
    assert!(
        is_agora_channel(channel),
        "{channel:?} breaks Agora's rules"
    );
    let token = cred["token"].as_str().expect("token");
    assert!(token.starts_with("007"), "{token}");
    assert_eq!(agora::verify(token, CERTIFICATE), Ok(true), "signature");
    assert_eq!(agora::verify(token, &"0".repeat(32)), Ok(false));
    let d = agora::decode(token).expect("an independent decoder reads it");
    assert_eq!(d.app_id, APP_ID);
    let now = now_secs();
    assert!(u64::from(d.issue_ts).abs_diff(now) <= 5, "issued now");
    assert!(u64::from(d.expire) <= TTL && u64::from(d.expire) >= TTL - 5);
    let expires_at = cred["expiresAt"].as_u64().expect("expiresAt");
    assert_eq!(
        expires_at / 1000,
        u64::from(d.issue_ts) + u64::from(d.expire)
    );
    assert_eq!(d.services.len(), 1, "one RTC service");
    let rtc = &d.services[0];
    assert_eq!(rtc.kind, 1, "the RTC service");
    assert_eq!(rtc.channel, channel);
    assert_eq!(rtc.account, peer);
    for (&privilege, &secs) in &rtc.privileges {
        assert!(secs == d.expire, "privilege {privilege} lasts {secs}s");
    }
    rtc.privileges.clone()
}

fn peer_id(frame: &Value) -> String {
    frame["peerId"].as_str().expect("peerId").to_owned()
}

#[tokio::test]
async fn joined_carries_agora_and_livekit_credentials_for_the_peer_not_the_identity() {
    let s = server().await;
    let room = "math/7b";
    let mut a1 = Client::connect(&s.ws_url(), Wire::Json).await;
    let j1 = a1.join(room, &Token::new(room, "ann").mint()).await;
    // The same identity from a second device, in the other encoding.
    let mut a2 = Client::connect(&s.ws_url(), Wire::Msgpack).await;
    let j2 = a2.join(room, &Token::new(room, "ann").mint()).await;
    let (p1, p2) = (peer_id(&j1), peer_id(&j2));
    assert_ne!(p1, p2);
    let publisher = agora_of(&j1, &p1);
    assert_eq!(
        publisher.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "join, audio, video, data"
    );
    agora_of(&j2, &p2);
    assert_eq!(
        j1["media"]["agora"]["channel"], j2["media"]["agora"]["channel"],
        "one room, one channel"
    );
    assert_ne!(j1["media"]["agora"]["token"], j2["media"]["agora"]["token"]);
    let lk = &j1["media"]["livekit"];
    assert_eq!(
        lk["url"], "wss://near.lk.example.org",
        "the region's server"
    );
    assert_eq!(lk["account"], p1.as_str());
    assert_eq!(lk["channel"], room);
    assert_ne!(j2["media"]["livekit"]["account"], lk["account"]);

    let mut v = Client::connect(&s.ws_url(), Wire::Json).await;
    let jv = v.join(room, &viewer_token(room, "vic")).await;
    let viewer = agora_of(&jv, &peer_id(&jv));
    assert_eq!(
        viewer.keys().copied().collect::<Vec<_>>(),
        [1],
        "a subscriber may only join"
    );
    let tokens = [&j1, &j2, &jv].map(|j| {
        j["media"]["livekit"]["token"]
            .as_str()
            .expect("livekit token")
            .to_owned()
    });
    let grants = livekit_verify(&tokens);
    if let Some(grants) = grants {
        for (g, (j, publish)) in grants.iter().zip([(&j1, true), (&j2, true), (&jv, false)]) {
            assert_eq!(g["identity"], j["peerId"], "{g}");
            assert_eq!(g["room"], room);
            assert_eq!(g["roomJoin"], true);
            assert_eq!(g["canPublish"], publish);
            assert_eq!(g["canPublishData"], publish);
            assert_eq!(g["canSubscribe"], true);
        }
    }
}

/// Runs LiveKit's own verifier (PyPI `livekit-api`) over `tokens`: their
/// identities and grants. `None` when it is not installed (a failure under
/// `CI=true`).
fn livekit_verify(tokens: &[String]) -> Option<Vec<Value>> {
    const SCRIPT: &str = r#"
import json, sys
from livekit import api
v = api.TokenVerifier(sys.argv[1], sys.argv[2])
out = []
for t in sys.argv[3:]:
    c = v.verify(t)
    g = c.video
    out.append({"identity": c.identity, "name": c.name, "room": g.room, "roomJoin": g.room_join,
                "canPublish": g.can_publish, "canPublishData": g.can_publish_data,
                "canSubscribe": g.can_subscribe})
try:
    v.verify(sys.argv[3][:-2] + "xx")
    out.append("forged token accepted")
except Exception:
    pass
print(json.dumps(out))
"#;
    let probe = Command::new("python3")
        .args(["-c", "import livekit.api"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        let msg = "LiveKit's verifier is missing: python3 -m pip install livekit-api";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("skipping the LiveKit check: {msg}");
        return None;
    }
    let out = Command::new("python3")
        .args(["-c", SCRIPT, LK_KEY, LK_SECRET])
        .args(tokens)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "LiveKit's verifier refused a token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v.len(), tokens.len(), "{v:?}");
    Some(v)
}

#[tokio::test]
async fn odd_room_names_map_to_valid_agora_channels_and_livekit_keeps_them() {
    let s = server().await;
    let long = "é".repeat(64); // 128 bytes, the longest room name
    let mut seen = Vec::new();
    for room in ["a/b", "café ☕", long.as_str(), "plain_room-1"] {
        let mut c = Client::connect(&s.ws_url(), Wire::Json).await;
        let j = c.join(room, &Token::new(room, "u").mint()).await;
        agora_of(&j, &peer_id(&j));
        let channel = j["media"]["agora"]["channel"].as_str().expect("channel");
        if room == "plain_room-1" {
            assert_eq!(channel, room, "a valid name is kept");
        }
        assert_eq!(j["media"]["livekit"]["channel"], room);
        seen.push(channel.to_owned());
        // The same room again: the same channel.
        let mut c2 = Client::connect(&s.ws_url(), Wire::Json).await;
        let j2 = c2.join(room, &Token::new(room, "w").mint()).await;
        assert_eq!(j2["media"]["agora"]["channel"], channel);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "distinct rooms, distinct channels: {seen:?}");
}

#[tokio::test]
async fn a_resumed_session_gets_fresh_credentials_and_media_token_answers_once_per_interval() {
    let s = server().await;
    let room = "resumes";
    let mut c = Client::connect(&s.ws_url(), Wire::Json).await;
    let j = c.join(room, &Token::new(room, "rex").mint()).await;
    let peer = peer_id(&j);
    let first = j["media"]["agora"]["token"].clone();
    c.drop_connection();

    let mut c = Client::connect(&s.ws_url(), Wire::Json).await;
    c.send(json!({"type": "resume", "resumeToken": j["resumeToken"], "lastSeq": 0}))
        .await;
    let r = c.frame().await;
    assert_eq!(r["type"], "joined", "{r}");
    assert_eq!(r["resumed"], true);
    agora_of(&r, &peer);
    assert_eq!(r["media"]["livekit"]["account"], peer.as_str());
    // The replayed fresh `joined` (seq 1, never acked) goes without them.
    let replayed = c.frame().await;
    assert_eq!(replayed["seq"], 1, "{replayed}");
    assert!(replayed.get("media").is_none(), "{replayed}");

    c.send(json!({"type": "media-token"})).await;
    let m = c.frame_of("media-token").await;
    assert!(m.get("seq").is_none(), "outside the numbered stream: {m}");
    agora_of(&m, &peer);
    assert!(m["media"]["livekit"]["token"].is_string());
    c.send(json!({"type": "media-token"})).await;
    let e = c.frame_of("error").await;
    assert_eq!(e["code"], "rate-limited", "{e}");
    assert_ne!(first, m["media"]["agora"]["token"]);
    // Nothing the node keeps on disk (session journal, kv, event log, the
    // artifact cache) holds a credential.
    let tokens: Vec<String> = [&j, &r, &m]
        .iter()
        .flat_map(|f| {
            ["agora", "livekit"].map(|p| f["media"][p]["token"].as_str().map(str::to_owned))
        })
        .flatten()
        .collect();
    assert_eq!(tokens.len(), 6);
    let mut files = vec![s.dir.path().to_path_buf()];
    let mut read = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("dir")
                    .flatten()
                    .map(|e| e.path()),
            );
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
        read += 1;
        for t in &tokens {
            assert!(
                !text.contains(t.as_str()),
                "a media credential is in {}",
                path.display()
            );
        }
    }
    assert!(read >= 3, "the data directory was read ({read} files)");
    let (_, metrics) =
        roomlet_tests::http(s.running.internal_addr, "GET", "/metrics", None, b"").await;
    for line in [
        r#"roomlet_media_credentials_total{cause="join",node="#,
        r#"provider="livekit",region="local"} 1"#,
        r#"roomlet_media_credentials_total{cause="resume","#,
        r#"roomlet_media_credentials_total{cause="refresh","#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn without_providers_joined_has_no_media_and_media_token_says_so() {
    let s = start_with(|_| {}, Secrets::default()).await;
    let mut c = Client::connect(&s.ws_url(), Wire::Json).await;
    let j = c.join("plain", &Token::new("plain", "p").mint()).await;
    assert!(j.get("media").is_none(), "{j}");
    c.send(json!({"type": "media-token"})).await;
    let e = c.frame_of("error").await;
    assert_eq!(e["code"], "media-unavailable", "{e}");
}

#[tokio::test]
async fn an_expired_session_is_told_to_refresh_first() {
    let s = server().await;
    let room = "short";
    let mut c = Client::connect(&s.ws_url(), Wire::Json).await;
    // A token about to expire: its credentials end with it.
    let j = c
        .join(
            room,
            &roomlet_tests::tokens::dev_token_expiring(room, "sam", 3),
        )
        .await;
    let left = j["media"]["agora"]["expiresAt"]
        .as_u64()
        .expect("expiresAt")
        / 1000;
    assert!(left <= now_secs() + 3, "never past the access token");
    roomlet_tests::wait_for("the access token to expire", || {
        now_secs() * 1000 > j["expiresAt"].as_u64().unwrap_or(0)
    })
    .await;
    c.send(json!({"type": "media-token"})).await;
    let e = c.frame_of("error").await;
    assert_eq!(e["code"], "token-expired", "{e}");
}

/// What `start` says about `tweak`ed media settings and `secrets`.
async fn refusal(tweak: impl FnOnce(&mut Config), secrets: Secrets) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    media(&mut config);
    tweak(&mut config);
    match roomlet::server::start(config, secrets).await {
        Ok(_) => panic!("the node started"),
        Err(e) => {
            assert!(
                matches!(e, ServerError::Config(ConfigError::Invalid(_))),
                "{e:?}"
            );
            e.to_string()
        }
    }
}

#[tokio::test]
async fn a_misconfigured_provider_refuses_to_start_with_a_clear_message() {
    let e = refusal(
        |c| {
            if let Some(a) = c.media.agora.as_mut() {
                a.app_id = "not-hex-at-all".into();
            }
        },
        media_secrets(),
    )
    .await;
    assert!(e.contains("media.agora.app_id must be 32 hex"), "{e}");
    let e = refusal(
        |c| {
            if let Some(l) = c.media.livekit.as_mut() {
                l.url = "lk.example.org".into();
            }
        },
        media_secrets(),
    )
    .await;
    assert!(e.contains("media.livekit.url") && e.contains("URL"), "{e}");
    let e = refusal(
        |c| {
            if let Some(l) = c.media.livekit.as_mut() {
                l.api_key = DEV_API_KEY.into();
            }
        },
        media_secrets(),
    )
    .await;
    assert!(e.contains("also one of roomlet's API keys"), "{e}");
    let mut missing = media_secrets();
    missing.media.agora = None;
    let e = refusal(|_| {}, missing).await;
    assert!(e.contains("ROOMLET_AGORA_APP_CERTIFICATE"), "{e}");
    let mut short = media_secrets();
    short.media.agora = Some(Secret::new("abc"));
    let e = refusal(|_| {}, short).await;
    assert!(e.contains("must be 32 hex"), "{e}");
    assert!(!e.contains("abc"), "never the value: {e}");
}

#[test]
fn a_certificate_file_that_cannot_be_read_stops_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("roomlet.toml");
    std::fs::write(&config, format!("[media.agora]\napp_id = \"{APP_ID}\"\n")).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_roomlet-node"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .args(["--internal-listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env(
            "ROOMLET_AGORA_APP_CERTIFICATE_FILE",
            dir.path().join("missing-certificate"),
        )
        .env_remove("ROOMLET_AGORA_APP_CERTIFICATE")
        .output()
        .expect("roomlet runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ROOMLET_AGORA_APP_CERTIFICATE_FILE names a file that cannot be read"),
        "{err}"
    );
}
