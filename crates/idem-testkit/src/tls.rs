//! TLS for tests: a certificate authority made in the test ([`TestCa`]),
//! certificates it signs for servers and clients, and a TLS front
//! ([`TlsFront`]) that terminates TLS and pipes each connection to a plain
//! server, such as an [`Upstream`](crate::Upstream).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// A certificate and its private key, as PEM.
#[derive(Debug, Clone)]
pub struct CertifiedPem {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

impl CertifiedPem {
    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert).expect("write the certificate");
        std::fs::write(&key, &self.key).expect("write the key");
        (cert, key)
    }
}

/// A certificate authority of the test's own.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate, as PEM (what a client or server trusts).
    pub cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("the CA certificate");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `dir/NAME.crt`; returns its path.
    pub fn write_cert(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.crt"));
        std::fs::write(&path, &self.cert_pem).expect("write the CA certificate");
        path
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server_cert(&self, names: &[&str]) -> CertifiedPem {
        self.sign(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with the common name `name`.
    pub fn client_cert(&self, name: &str) -> CertifiedPem {
        self.sign(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn sign(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> CertifiedPem {
        let key = KeyPair::generate().expect("a key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("certificate params");
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a signed certificate");
        CertifiedPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A client configuration that trusts this CA only (no ALPN).
    pub fn client_config(&self) -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(self.roots())
        .with_no_client_auth()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("CA PEM");
        roots.add(der).expect("the CA certificate as a root");
        roots
    }
}

/// What a [`TlsFront`] offers and asks for.
#[derive(Debug)]
pub struct TlsFrontOptions<'a> {
    /// The certificate it presents.
    pub cert: CertifiedPem,
    /// Require a client certificate signed by this CA (mTLS).
    pub client_ca: Option<&'a TestCa>,
    /// The ALPN protocols it accepts, in its order of preference (empty:
    /// no ALPN).
    pub alpn: Vec<Vec<u8>>,
}

impl<'a> TlsFrontOptions<'a> {
    /// Presents `cert`, asks for no client certificate, accepts `h2` and
    /// `http/1.1`.
    pub fn new(cert: CertifiedPem) -> Self {
        TlsFrontOptions {
            cert,
            client_ca: None,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// Terminates TLS on a free 127.0.0.1 port and pipes each connection to
/// a plain server, until the test's runtime ends.
#[derive(Debug)]
pub struct TlsFront {
    /// Where clients connect.
    pub addr: SocketAddr,
}

impl TlsFront {
    /// A front for `backend`.
    pub async fn start(backend: SocketAddr, options: TlsFrontOptions<'_>) -> TlsFront {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match options.client_ca {
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider)
                        .build()
                        .expect("a client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(options.cert.cert.as_bytes())
                .collect::<Result<_, _>>()
                .expect("certificate PEM");
        let key =
            PrivateKeyDer::from_pem_slice(options.cert.key.as_bytes()).expect("private key PEM");
        let mut config = builder
            .with_single_cert(certs, key)
            .expect("a server configuration");
        config.alpn_protocols = options.alpn;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            // Until the test's runtime ends.
            let forever = tokio_util::sync::CancellationToken::new();
            while let Some((tcp, _)) = idem_serve::accept(&listener, &forever).await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A refused handshake just ends the connection: the
                    // client sees why.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { addr }
    }
}
