//! Auditing an `https://` API: a real TLS server (rustls, a certificate
//! made for the test) terminating in front of the sample API. The fault
//! points (held-back last byte, lost response, hang-up) must work over TLS
//! as over TCP, and certificates must be verified unless told otherwise.

use idem_audit::{audit, AuditOptions, Endpoint, NoProgress, ScenarioId, TlsSettings, Verdict};
use idem_sample_api::{Flaw, RunningSampleApi, SampleApiOptions};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Terminates TLS for `localhost` and pipes each connection to `upstream`.
/// Returns its address and the certificate's PEM.
async fn tls_front(upstream: SocketAddr) -> (SocketAddr, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = certified.cert.pem();
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, pem)
}

async fn api(flaw: Flaw) -> RunningSampleApi {
    let mut options = SampleApiOptions::new(flaw);
    // As in bug_classes.rs: the hang-up must land well inside the work.
    options.latency = Duration::from_millis(300);
    idem_sample_api::start(options).await.unwrap()
}

fn endpoint(front: SocketAddr) -> Endpoint {
    let base = format!("https://localhost:{}", front.port());
    let mut e = Endpoint::new(format!("{base}/payments").parse().unwrap())
        .with_body(r#"{"amount":2500}"#)
        .with_header("Authorization", "Bearer sk_a");
    e.id_field = Some("id".parse().unwrap());
    e.count_url = Some(format!("{base}/payments/count").parse().unwrap());
    e.scenarios = vec![
        ScenarioId::SequentialReplay,
        ScenarioId::ConcurrentBurst,
        ScenarioId::LostResponse,
        ScenarioId::AbandonedRequest,
    ];
    e.burst = 8;
    e.rounds = 2;
    e.abandon_after = Duration::from_millis(150);
    e
}

fn verdicts(report: &idem_audit::AuditReport) -> Vec<(ScenarioId, Verdict)> {
    report.scenarios.iter().map(|s| (s.id, s.verdict)).collect()
}

#[tokio::test]
async fn an_https_api_is_audited_with_every_fault_point_when_its_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    for (flaw, expected) in [
        (Flaw::None, Verdict::Pass),
        (Flaw::NoIdempotency, Verdict::Fail),
    ] {
        let api = api(flaw).await;
        let (front, pem) = tls_front(api.addr()).await;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pem).unwrap();
        let mut options = AuditOptions::new(vec![endpoint(front)]);
        options.tls = TlsSettings {
            ca_certs: vec![ca],
            insecure: false,
        };
        let report = audit(&options, &NoProgress)
            .await
            .expect("audit runs over TLS");
        for (id, verdict) in verdicts(&report) {
            assert_eq!(
                verdict,
                expected,
                "{flaw}: {id}\n{}",
                idem_audit::report::render(&report, Default::default(), Default::default())
            );
        }
    }
}

#[tokio::test]
async fn an_unknown_certificate_is_refused_before_anything_is_sent_unless_insecure() {
    let api = api(Flaw::None).await;
    let (front, _) = tls_front(api.addr()).await;
    let err = audit(&AuditOptions::new(vec![endpoint(front)]), &NoProgress)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("--cacert") && message.contains("--insecure"),
        "{message}"
    );
    assert_eq!(api.payments(), 0, "nothing executed");

    let mut options = AuditOptions::new(vec![endpoint(front)]);
    options.tls.insecure = true;
    let report = audit(&options, &NoProgress).await.unwrap();
    assert_eq!(report.verdict, Verdict::Pass);
}

#[tokio::test]
async fn a_cacert_file_without_certificates_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let mut options = AuditOptions::new(vec![Endpoint::new(
        "https://localhost:1/x".parse().unwrap(),
    )]);
    options.tls.ca_certs = vec![empty];
    let err = audit(&options, &NoProgress).await.unwrap_err();
    assert!(err.to_string().starts_with("--cacert"), "{err}");
}
