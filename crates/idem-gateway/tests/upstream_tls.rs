//! An `https://` upstream (issue 12): a real TLS server with certificates
//! made in the test ([`idem_testkit::tls`]) in front of the counting
//! upstream. The contract holds over TLS; a certificate the gateway cannot
//! trust, or a client certificate it does not have, answers 502
//! `upstream-unavailable` with nothing executed and the key released;
//! ALPN picks HTTP/2 unless told otherwise.

mod support;

use idem_gateway::upstream_tls::{UpstreamHttp2, UpstreamTls};
use idem_testkit::tls::{TestCa, TlsFront, TlsFrontOptions};
use idem_tower::IdempotencyConfig;
use std::path::PathBuf;
use support::*;

/// The counting upstream behind a TLS front for `localhost`, signed by
/// `ca`; mTLS against `client_ca` when given.
async fn https_upstream(ca: &TestCa, client_ca: Option<&TestCa>) -> (Upstream, http::Uri) {
    let upstream = Upstream::start().await;
    let mut options = TlsFrontOptions::new(ca.server_cert(&["localhost"]));
    options.client_ca = client_ca;
    let front = TlsFront::start(upstream.addr, options).await;
    let uri = format!("https://localhost:{}", front.addr.port())
        .parse()
        .unwrap();
    (upstream, uri)
}

/// Trusting `ca` only.
fn trusting(dir: &tempfile::TempDir, ca: &TestCa) -> UpstreamTls {
    UpstreamTls {
        ca: Some(ca.write_cert(dir.path(), "upstream-ca")),
        ..UpstreamTls::default()
    }
}

async fn gateway(uri: http::Uri, tls: UpstreamTls) -> Gateway {
    Gateway::start_with_tls(
        uri,
        IdempotencyConfig::default(),
        TestStore::new(Engine::Memory),
        tls,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_over_an_https_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("upstream CA");
    let (upstream, uri) = https_upstream(&ca, None).await;
    let gw = gateway(uri, trusting(&dir, &ca)).await;

    let first = gw
        .send(Req::post("/charges").key("k1").json(r#"{"a":1}"#))
        .await;
    assert_eq!(first.status, 201, "{}", first.text());
    let replay = gw
        .send(Req::post("/charges").key("k1").json(r#"{"a":1}"#))
        .await;
    assert!(replay.is_replay());
    assert_eq!(replay.body, first.body);
    gw.send(Req::post("/charges").key("k1").json(r#"{"a":2}"#))
        .await
        .assert_problem(422, "key-reused");
    assert_eq!(upstream.count_key("k1"), 1);

    // A request in flight: its duplicate gets 409.
    let slow = tokio::spawn({
        let client = gw.client.clone();
        async move { client.send(Req::post("/slow").key("k2")).await }
    });
    upstream.wait_for_count("/slow", 1).await;
    gw.send(Req::post("/slow").key("k2"))
        .await
        .assert_problem(409, "request-in-progress");
    upstream.gate.add_permits(1);
    assert_eq!(slow.await.unwrap().status, 201);
    assert_eq!(upstream.count_key("k2"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_and_the_key_released() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (TestCa::new("upstream CA"), TestCa::new("another CA"));
    let (upstream, uri) = https_upstream(&ca, None).await;
    // Neither a CA the upstream's certificate is not signed by, nor the
    // public roots (which never signed a test certificate) let it through.
    for tls in [trusting(&dir, &other), UpstreamTls::default()] {
        let gw = gateway(uri.clone(), tls).await;
        for _ in 0..2 {
            // Twice: the key was released, so the retry is refused for the
            // same reason, not 409.
            let answer = gw.send(Req::post("/charges").key("bad-ca")).await;
            let problem = answer.assert_problem(502, "upstream-unavailable");
            let detail = problem["detail"]
                .as_str()
                .unwrap_or_default()
                .to_lowercase();
            assert!(detail.contains("certificate"), "{detail}");
        }
    }
    assert_eq!(upstream.total(), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_requires_a_client_certificate_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, clients) = (TestCa::new("upstream CA"), TestCa::new("client CA"));
    let (upstream, uri) = https_upstream(&ca, Some(&clients)).await;

    // TLS 1.3 judges the client's certificate after the client has begun
    // to send: over HTTP/2 and HTTP/1.1 alike the refusal must read as
    // "not executed", never as outcome-unknown.
    for http2 in [UpstreamHttp2::Auto, UpstreamHttp2::Never] {
        let tls = UpstreamTls {
            http2,
            ..trusting(&dir, &ca)
        };
        let without = gateway(uri.clone(), tls).await;
        without
            .send(Req::post("/charges").key("mtls"))
            .await
            .assert_problem(502, "upstream-unavailable");
    }
    assert_eq!(upstream.total(), 0);

    let (cert, key) = clients.client_cert("gateway").write(dir.path(), "client");
    let with = gateway(
        uri,
        UpstreamTls {
            client_cert: Some(cert),
            client_key: Some(key),
            ..trusting(&dir, &ca)
        },
    )
    .await;
    let answer = with.send(Req::post("/charges").key("mtls")).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(upstream.count_key("mtls"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_picks_http2_unless_told_never() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("upstream CA");
    let (upstream, uri) = https_upstream(&ca, None).await;
    for (mode, version) in [
        (UpstreamHttp2::Auto, http::Version::HTTP_2),
        (UpstreamHttp2::Always, http::Version::HTTP_2),
        (UpstreamHttp2::Never, http::Version::HTTP_11),
    ] {
        let tls = UpstreamTls {
            http2: mode,
            ..trusting(&dir, &ca)
        };
        let gw = gateway(uri.clone(), tls).await;
        let key = format!("alpn-{mode:?}");
        let answer = gw.send(Req::post("/charges").key(&key)).await;
        assert_eq!(answer.status, 201, "{mode:?}: {}", answer.text());
        let seen = upstream.last_seen("/charges");
        assert_eq!(seen.key.as_deref(), Some(key.as_str()));
        assert_eq!(seen.version, version, "{mode:?}");
    }
}

#[test]
fn a_bad_tls_file_is_refused_naming_its_option() {
    let dir = tempfile::tempdir().unwrap();
    let missing = PathBuf::from("/nonexistent/ca.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let cases = [
        (
            UpstreamTls {
                ca: Some(missing.clone()),
                ..UpstreamTls::default()
            },
            "upstream_ca",
        ),
        (
            UpstreamTls {
                ca: Some(not_pem.clone()),
                ..UpstreamTls::default()
            },
            "upstream_ca",
        ),
        (
            UpstreamTls {
                client_cert: Some(not_pem.clone()),
                ..UpstreamTls::default()
            },
            "upstream_client_key",
        ),
    ];
    for (tls, field) in cases {
        let err = tls.client_config().unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}
