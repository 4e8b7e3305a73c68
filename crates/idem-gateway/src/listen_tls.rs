//! TLS termination on the gateway's listener: a certificate and key from
//! PEM files, reloaded on demand (SIGHUP in `idem gateway`) without
//! dropping connections, ALPN `h2` and `http/1.1`.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// Where the listener's certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenTls {
    /// PEM file of the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file of its private key.
    pub key: PathBuf,
}

/// A certificate or key that cannot be used; names the option.
pub use idem_tls::TlsFileError as ListenTlsError;

impl ListenTls {
    /// Reads and checks the pair.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, ListenTlsError> {
        let chain = idem_tls::read_certs("tls_cert", &self.cert)?;
        let key = idem_tls::read_key("tls_key", &self.key)?;
        let certified = CertifiedKey::from_der(chain, key, &idem_tls::provider()).map_err(|e| {
            ListenTlsError::new(
                "tls_key",
                format!("{}: does not go with tls_cert: {e}", self.key.display()),
            )
        })?;
        Ok(Arc::new(certified))
    }
}

/// The certificate in use, swapped whole on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The listener's TLS: its acceptor, and the files to reload from.
pub struct TlsTermination {
    files: ListenTls,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsTermination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTermination")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsTermination {
    /// Loads the certificate and key; offers `h2` and `http/1.1`.
    pub fn new(files: ListenTls) -> Result<Self, ListenTlsError> {
        let current = Arc::new(Current(RwLock::new(files.load()?)));
        let mut config = rustls::ServerConfig::builder_with_provider(idem_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ListenTlsError::new("tls_cert", format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsTermination {
            files,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again and, if they are good, serves new handshakes
    /// with them; connections already open keep theirs. On an error the
    /// certificate in use stays.
    pub fn reload(&self) -> Result<(), ListenTlsError> {
        let fresh = self.files.load()?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}
