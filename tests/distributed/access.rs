//! Who may be on the bus: credentials, prefixes, client certificates, and malformed messages that must harm no one.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_and_prefixes_isolate() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, Some(("roomlet", "s3cret-pass")));
    let url = nats.url();
    let err = Node::try_start(
        &url,
        "x",
        "n",
        "a",
        "auth,rooms,relay",
        &[
            ("ROOMLET_NATS_USER", "roomlet"),
            ("ROOMLET_NATS_PASSWORD", "wrong-pass"),
            // Even at TRACE the password stays out of the log.
            ("RUST_LOG", "trace"),
        ],
        TTL,
    )
    .err()
    .expect("a node with a wrong password does not start");
    assert!(
        err.contains("connecting to NATS at nats://127.0.0.1"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("author"), "{err}");
    assert!(!err.contains("wrong-pass"), "the password leaked: {err}");

    let creds = [
        ("ROOMLET_NATS_USER", "roomlet"),
        ("ROOMLET_NATS_PASSWORD", "s3cret-pass"),
    ];
    let one =
        Node::try_start(&url, "one", "n1", "a", "auth,rooms,relay", &creds, TTL).expect("starts");
    let two =
        Node::try_start(&url, "two", "n2", "a", "auth,rooms,relay", &creds, TTL).expect("starts");
    let (mut a, _) = join(&one, "same", "alice").await;
    let (mut b, jb) = join(&two, "same", "bob").await;
    assert_eq!(
        jb["peers"],
        json!([]),
        "deployment two saw deployment one's peer"
    );
    a.send(message(json!({"text": "hello one"}))).await;
    b.send(message(json!({"text": "hello two"}))).await;
    // Each hears only its own deployment (its history message aside).
    next_of(&mut a, "message", DEADLINE).await.expect("history");
    next_of(&mut b, "message", DEADLINE).await.expect("history");
    assert!(
        next_of(&mut a, "message", Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        next_of(&mut b, "message", Duration::from_millis(300))
            .await
            .is_none()
    );
}

/// Bytes that are not the message a subject expects: empty, a byte
/// MessagePack never uses, a truncated array, a map of the wrong shape,
/// and an auth request whose token is right but whose address is a
/// number (the decoder's message would quote the token; the log must not).
fn garbage() -> Vec<Vec<u8>> {
    let wrong_shape = rmp_serde::to_vec_named(&json!({"room": 7, "op": "nope"})).expect("encodes");
    let near_miss = rmp_serde::to_vec_named(&json!({
        "token": "tok-SECRET-on-the-bus",
        "room": "class",
        "client_addr": 1234,
        "region": "a",
        "headers": [],
    }))
    .expect("encodes");
    vec![vec![], vec![0xc1], vec![0x92, 0x01], wrong_shape, near_miss]
}

/// Waits until `node`'s `roomlet_bus_malformed_total{subject}` is `n`.
async fn until_malformed(node: &Node, subject: &str, n: f64) {
    let label = format!("subject=\"{subject}\"");
    node.until_metric("roomlet_bus_malformed_total", &[&label], |v| v == n)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bus_messages_are_refused_counted_and_harm_no_one() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let p = "hostile";
    let auth = Node::start(&url, p, "auth-1", "a", "auth");
    let rooms = Node::start(&url, p, "rooms-1", "a", "rooms");
    let gw = Node::start(&url, p, "gw-1", "a", "relay");
    assert_eq!(rooms.ready().await, 200);
    assert_eq!(gw.ready().await, 200);
    let (mut a, ja) = join(&gw, "class", "alice").await;
    next_of(&mut a, "message", DEADLINE).await.expect("history");
    let (mut b, jb) = join(&gw, "class", "bob").await;
    next_of(&mut b, "message", DEADLINE).await.expect("history");
    let a_id = ja["peerId"].as_str().expect("peer id").to_owned();
    let b_id = jb["peerId"].as_str().expect("peer id").to_owned();

    let bus = async_nats::connect(url.as_str()).await.expect("connects");
    let n = garbage().len() as f64;
    for g in garbage() {
        // Requests get an answer that says no, in the wire's own terms.
        let r = bus
            .request(format!("{p}.auth"), g.clone().into())
            .await
            .expect("the auth node answers");
        assert!(
            matches!(
                rmp_serde::from_slice(&r.payload),
                Ok(roomlet::bus::wire::WireAuthReply::Failed)
            ),
            "auth answered {:?}",
            r.payload
        );
        let r = bus
            .request(format!("{p}.join.rooms-1"), g.clone().into())
            .await
            .expect("the rooms node answers");
        match rmp_serde::from_slice(&r.payload) {
            Ok(roomlet::bus::wire::JoinReply::Refused { code, .. }) => {
                assert_eq!(code, "bad-frame")
            }
            other => panic!("join answered {other:?}"),
        }
        let r = bus
            .request(format!("{p}.reap.gw-1"), g.clone().into())
            .await
            .expect("the gateway answers");
        assert!(
            matches!(
                rmp_serde::from_slice(&r.payload),
                Ok(roomlet::bus::wire::Reaped { ended: false })
            ),
            "reap answered {:?}",
            r.payload
        );
        let r = bus
            .request(format!("{p}.handover.gw-1"), g.clone().into())
            .await
            .expect("the gateway answers");
        assert!(
            matches!(
                rmp_serde::from_slice(&r.payload),
                Ok(roomlet::bus::wire::HandedOver { session: None })
            ),
            "handover answered {:?}",
            r.payload
        );
        // One-way messages are dropped.
        for subject in [
            format!("{p}.home.rooms-1"),
            format!("{p}.gw.gw-1"),
            format!("{p}.hello"),
            format!("{p}.resumed.gw-1"),
        ] {
            bus.publish(subject, g.clone().into())
                .await
                .expect("publishes");
        }
    }
    bus.flush().await.expect("flushes");
    until_malformed(&auth, "auth", n).await;
    until_malformed(&rooms, "join", n).await;
    until_malformed(&rooms, "home", n).await;
    until_malformed(&gw, "gw", n).await;
    until_malformed(&gw, "reap", n).await;
    until_malformed(&gw, "handover", n).await;
    until_malformed(&rooms, "hello", n).await;
    until_malformed(&gw, "hello", n).await;
    // The auth near-miss has a string `token`: a well-formed notice that
    // names no session here.
    until_malformed(&gw, "resumed", n - 1.0).await;

    // The room and its sessions carry on, and a newcomer gets in.
    a.send(json!({"type": "signal", "to": b_id, "kind": "offer", "payload": {"sdp": "v=0"}}))
        .await;
    let s = next_of(&mut b, "signal", DEADLINE).await.expect("signal");
    assert_eq!(s["from"], a_id.as_str());
    let (mut c, jc) = join(&gw, "class", "carol").await;
    assert_eq!(jc["peers"].as_array().map(Vec::len), Some(2), "{jc}");
    c.send(message(json!({"text": "still here"}))).await;
    assert_eq!(next_text(&mut a).await, "still here");
    for node in [&auth, &rooms, &gw] {
        let log = node.log();
        assert!(log.contains("malformed message on the bus"), "{log}");
        assert!(!log.contains("SECRET"), "a token reached the log: {log}");
        assert!(!log.contains("panicked"), "{log}");
    }

    // A gateway whose auth answer is garbage refuses the join clearly.
    let forged = Node::start(&url, "forged", "gw-2", "a", "rooms,relay");
    assert_eq!(forged.ready().await, 200);
    let mut answers = bus.subscribe("forged.auth").await.expect("subscribes");
    // The server knows the subscription once it answers a ping: without
    // this the join can find no responder ("unavailable"), not the liar.
    bus.flush().await.expect("flushes");
    let liar = bus.clone();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(m) = answers.next().await {
            if let Some(reply) = m.reply {
                let _ = liar.publish(reply, vec![0xc1].into()).await;
            }
        }
    });
    let mut d = Client::connect(&forged.ws(), Wire::Json).await;
    d.send(json!({"type": "join", "room": "class", "token": token("class", "dave", false)}))
        .await;
    let e = next_of(&mut d, "error", DEADLINE).await.expect("an error");
    assert_eq!(e["code"], "internal", "{e}");
    until_malformed(&forged, "auth-reply", 1.0).await;
}

/// PEM files for a NATS server that verifies its clients: a CA, the
/// server's certificate for 127.0.0.1, and a client certificate.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
            KeyPair,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("writes a PEM file")
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");
        write("ca.pem", ca.pem());
        for (name, san, usage) in [
            ("server", "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
            (
                "client",
                "roomlet-node",
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(vec![san.to_owned()]).expect("params");
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).expect("signed by the CA");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_that_verifies_clients_takes_only_nodes_with_a_certificate() {
    let Some(bin) = nats_server() else { return };
    let pki = Pki::new();
    let nats = Nats::start_with(
        bin,
        None,
        &[
            "--tlsverify",
            "--tlscert",
            &pki.path("server.pem"),
            "--tlskey",
            &pki.path("server.key"),
            "--tlscacert",
            &pki.path("ca.pem"),
        ],
    );
    let url = nats.url();
    let ca = format!("ca_file = {:?}\n", pki.path("ca.pem"));
    let certified = format!(
        "{ca}cert_file = {:?}\nkey_file = {:?}\n",
        pki.path("client.pem"),
        pki.path("client.key")
    );
    let node = Node::try_start_with_nats(&url, "mtls", "n1", &certified)
        .expect("a node with a client certificate starts");
    assert_eq!(node.ready().await, 200);
    let (mut a, _) = join(&node, "r", "alice").await;
    next_of(&mut a, "message", DEADLINE).await.expect("history");
    let (mut b, _) = join(&node, "r", "bob").await;
    next_of(&mut b, "message", DEADLINE).await.expect("history");
    a.send(message(json!({"text": "over mutual TLS"}))).await;
    assert_eq!(next_text(&mut b).await, "over mutual TLS");

    // Without a certificate the server refuses it: the node says so and stops.
    let err = Node::try_start_with_nats(&url, "mtls", "n2", &format!("tls = true\n{ca}"))
        .err()
        .expect("a node without a client certificate does not start");
    assert!(
        err.contains("connecting to NATS at nats://127.0.0.1"),
        "{err}"
    );
    assert!(err.contains("CertificateRequired"), "{err}");
    // A certificate without its key is a configuration error.
    let err = Node::try_start_with_nats(
        &url,
        "mtls",
        "n3",
        &format!("{ca}cert_file = {:?}\n", pki.path("client.pem")),
    )
    .err()
    .expect("a certificate without a key is refused");
    assert!(
        err.contains("nats.cert_file and nats.key_file go together"),
        "{err}"
    );
    // A key file that is not there is named.
    let err = Node::try_start_with_nats(
        &url,
        "mtls",
        "n4",
        &format!(
            "{ca}cert_file = {:?}\nkey_file = \"/nonexistent/nats-client.key\"\n",
            pki.path("client.pem")
        ),
    )
    .err()
    .expect("a missing key file is refused");
    assert!(err.contains("/nonexistent/nats-client.key"), "{err}");
    let key = std::fs::read_to_string(pki.path("client.key")).expect("key");
    let key_body = key.lines().nth(1).expect("a PEM body line");
    assert!(
        !node.log().contains(key_body),
        "the client key reached the log"
    );
}

/// Media credentials come from where tokens are checked: a gateway that
/// runs no auth function asks an auth node over the bus (`P.media`), which
/// alone holds the provider's secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_auth_gets_media_credentials_from_an_auth_node() {
    let Some(bin) = nats_server() else { return };
    let nats = Nats::start(bin, None);
    let url = nats.url();
    let media = "[media.livekit]\nurl = \"wss://lk.example.org\"\napi_key = \"APIsfu\"\n";
    let secret = "lk-secret-only-on-the-auth-node";
    let _auth = Node::spawn(
        &url,
        "md",
        "auth-node",
        "a",
        "auth,rooms",
        &[("ROOMLET_LIVEKIT_API_SECRET", secret)],
        TTL,
        CHAT_HISTORY,
        media,
    )
    .expect("the auth node starts");
    let gateway = Node::spawn(
        &url,
        "md",
        "gateway",
        "a",
        "relay",
        &[],
        TTL,
        CHAT_HISTORY,
        media,
    )
    .expect("a gateway without the secret starts: it does not issue");
    let (mut c, joined) = join(&gateway, "sfu-room", "ann").await;
    let lk = &joined["media"]["livekit"];
    assert_eq!(lk["account"], joined["peerId"], "{joined}");
    assert_eq!(lk["channel"], "sfu-room");
    let token = lk["token"].as_str().expect("a LiveKit token");
    let payload = token.split('.').nth(1).expect("a JWT");
    use base64::Engine as _;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64"),
    )
    .expect("claims");
    assert_eq!(claims["iss"], "APIsfu");
    assert_eq!(claims["video"]["room"], "sfu-room");
    let (signing_input, signature) = token.rsplit_once('.').expect("a JWT");
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(signing_input.as_bytes());
    assert_eq!(
        signature,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()),
        "signed with the auth node's secret"
    );
    c.send(json!({"type": "media-token"})).await;
    let fresh = next_of(&mut c, "media-token", DEADLINE)
        .await
        .expect("a media-token answer");
    assert!(fresh["media"]["livekit"]["token"].is_string(), "{fresh}");
    assert!(
        gateway
            .metric("roomlet_media_credentials_total", &["cause=\"refresh\""])
            .await
            >= 1.0
    );
}
