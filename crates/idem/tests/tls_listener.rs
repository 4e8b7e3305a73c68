//! `idem gateway` with `tls_cert` and `tls_key`: it serves HTTPS, and
//! SIGHUP makes it read the files again, so new connections get the new
//! certificate without a restart (issue 12).

mod support;

use idem_testkit::tls::TestCa;
use idem_testkit::{poll_until, Upstream};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::Idem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A keyed POST over TLS, trusting `ca` only: the status line, or why the
/// connection failed.
async fn post(addr: SocketAddr, ca: &TestCa, key: &str) -> Result<String, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config()));
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let request = format!(
            "POST /charges HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nauthorization: Bearer a\r\nidempotency-key: {key}\r\ncontent-length: 2\r\n\r\n{{}}"
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer).into_owned();
        Ok(text.lines().next().unwrap_or_default().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    old_ca
        .server_cert(&["localhost"])
        .write(dir.path(), "gateway");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "tls_cert = \"gateway.crt\"\ntls_key = \"gateway.key\"\n",
    )
    .unwrap();
    let api = Upstream::start().await;
    let store = format!("sqlite:{}", dir.path().join("idem.db").display());
    let gw = Idem::gateway(api.addr, &store, &config);

    assert_eq!(
        post(gw.addr, &old_ca, "before").await.unwrap(),
        "HTTP/1.1 201 Created"
    );

    new_ca
        .server_cert(&["localhost"])
        .write(dir.path(), "gateway");
    gw.signal("HUP");
    let addr = gw.addr;
    poll_until(
        "the new certificate to be served",
        Duration::from_secs(10),
        || {
            let new_ca = &new_ca;
            async move { post(addr, new_ca, "after").await.is_ok() }
        },
    )
    .await;
    let refused = post(addr, &old_ca, "old").await.unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    // The same process, still serving and remembering its keys.
    assert_eq!(api.count_key("before"), 1);
    assert_eq!(api.count_key("after"), 1);
    assert_eq!(api.count_key("old"), 0);
}
