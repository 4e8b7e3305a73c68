//! TLS termination on the listener (issue 12): a certificate made in the
//! test, clients that trust its CA, HTTP/2 by ALPN, a stalled handshake
//! dropped within the header timeout, and a reload that serves new
//! handshakes with the new certificate while open connections go on.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use idem_gateway::listen_tls::ListenTls;
use idem_gateway::{GatewayOptions, RunningGateway};
use idem_store::MemoryStore;
use idem_testkit::tls::TestCa;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::io::AsyncReadExt;

type HttpsClient = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client that trusts `ca` only; HTTP/2 if the server offers it unless
/// `http1_only`.
fn client(ca: &TestCa, http1_only: bool) -> HttpsClient {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(ca.client_config())
        .https_only();
    let connector = if http1_only {
        builder.enable_http1().build()
    } else {
        builder.enable_http1().enable_http2().build()
    };
    HyperClient::builder(TokioExecutor::new()).build(connector)
}

/// A keyed POST to `/charges`: status, version, replayed, body.
async fn post(
    client: &HttpsClient,
    gateway: &RunningGateway,
    key: &str,
) -> Result<(u16, http::Version, bool, Bytes), String> {
    let request = http::Request::post(format!(
        "https://localhost:{}/charges",
        gateway.addr().port()
    ))
    .header("authorization", "Bearer t")
    .header("idempotency-key", key)
    .body(Full::new(Bytes::from_static(b"{}")))
    .unwrap();
    let response = tokio::time::timeout(EXCHANGE_TIMEOUT, client.request(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let (status, version) = (response.status().as_u16(), response.version());
    let replayed = response.headers().contains_key("idempotent-replayed");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, version, replayed, body))
}

/// A gateway with TLS from `ca`'s certificate for localhost, its
/// certificate files in `dir`.
async fn tls_gateway(upstream: &Upstream, ca: &TestCa, dir: &std::path::Path) -> RunningGateway {
    let (cert, key) = ca.server_cert(&["localhost"]).write(dir, "gateway");
    let mut options = GatewayOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        upstream.uri(),
        Arc::new(MemoryStore::new()),
    );
    options.listen_tls = Some(ListenTls { cert, key });
    options.limits.header_read_timeout = Duration::from_secs(1);
    idem_gateway::start(options).await.expect("gateway starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_holds_over_tls_with_http2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("gateway CA");
    let upstream = Upstream::start().await;
    let gateway = tls_gateway(&upstream, &ca, dir.path()).await;
    for (http1_only, version) in [
        (false, http::Version::HTTP_2),
        (true, http::Version::HTTP_11),
    ] {
        let client = client(&ca, http1_only);
        let key = format!("tls-{http1_only}");
        let (status, got, replayed, first) = post(&client, &gateway, &key).await.unwrap();
        assert_eq!((status, got, replayed), (201, version, false));
        let (status, _, replayed, again) = post(&client, &gateway, &key).await.unwrap();
        assert_eq!((status, replayed), (201, true));
        assert_eq!(again, first);
        assert_eq!(upstream.count_key(&key), 1);
        let seen = upstream.last_seen("/charges");
        assert_eq!(
            seen.headers.get("x-forwarded-proto").unwrap(),
            "https",
            "the upstream is told the client used TLS"
        );
    }
    // A client that does not trust the certificate gets nowhere.
    let stranger = client(&TestCa::new("another CA"), false);
    let refused = post(&stranger, &gateway, "stranger").await.unwrap_err();
    assert!(refused.contains("Certificate"), "{refused}");
    assert_eq!(upstream.count_key("stranger"), 0);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_dropped_within_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("gateway CA");
    let upstream = Upstream::start().await;
    let gateway = tls_gateway(&upstream, &ca, dir.path()).await;
    let mut silent = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "a client that never starts its handshake is kept: {closed:?}"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_new_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    let upstream = Upstream::start().await;
    let gateway = tls_gateway(&upstream, &old_ca, dir.path()).await;
    let old_client = client(&old_ca, false);
    assert_eq!(post(&old_client, &gateway, "before").await.unwrap().0, 201);

    // A broken file is refused and the certificate in use stays.
    std::fs::write(dir.path().join("gateway.key"), "not a key").unwrap();
    let err = gateway.reload_tls().unwrap().unwrap_err();
    assert_eq!(err.field, "tls_key", "{err}");
    assert_eq!(
        post(&client(&old_ca, false), &gateway, "still-old")
            .await
            .unwrap()
            .0,
        201
    );

    new_ca
        .server_cert(&["localhost"])
        .write(dir.path(), "gateway");
    gateway.reload_tls().unwrap().unwrap();
    // New connections get the new certificate...
    assert_eq!(
        post(&client(&new_ca, false), &gateway, "after")
            .await
            .unwrap()
            .0,
        201
    );
    assert!(post(&client(&old_ca, false), &gateway, "old-ca")
        .await
        .is_err());
    // ...and the HTTP/2 connection opened before goes on.
    let (status, version, _, _) = post(&old_client, &gateway, "same-connection")
        .await
        .unwrap();
    assert_eq!((status, version), (201, http::Version::HTTP_2));
    gateway.shutdown().await;
}
