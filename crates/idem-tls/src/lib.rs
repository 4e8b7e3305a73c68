//! TLS files as idem's tools read them: PEM certificate chains and private
//! keys, Mozilla's roots or a private CA, into rustls configurations on
//! the `ring` provider. Every error names the option (or flag) that gave
//! the file, so a user knows which line to fix.
//!
//! ```
//! let roots = idem_tls::roots(None).unwrap(); // Mozilla's roots
//! let config = idem_tls::client_config(roots, None).unwrap();
//! assert!(config.alpn_protocols.is_empty());
//! ```

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::Arc;

pub mod danger;

/// A TLS file or setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct TlsFileError {
    /// The option or flag that named the file.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl TlsFileError {
    /// An error about `field`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        TlsFileError {
            field,
            problem: problem.into(),
        }
    }
}

/// The crypto provider every configuration here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The PEM certificates in `path` (at least one), for the option `field`.
pub fn read_certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| TlsFileError::new(field, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsFileError::new(
            field,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

/// The PEM private key (PKCS#8, PKCS#1 or SEC1) in `path`.
pub fn read_key(field: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsFileError::new(
            field,
            format!("{}: {e} (expected a PEM private key)", path.display()),
        )
    })
}

/// The roots to verify servers against: the CA certificates in
/// `ca = (option, file)` only, or Mozilla's roots without one.
pub fn roots(ca: Option<(&'static str, &Path)>) -> Result<RootCertStore, TlsFileError> {
    let Some((field, path)) = ca else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certs(field, path)? {
        roots
            .add(cert)
            .map_err(|e| TlsFileError::new(field, format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// A client configuration verifying against `roots`, presenting
/// `client_auth = (chain, key)` when given (mTLS). No ALPN: the caller
/// (or its connector) sets it.
pub fn client_config(
    roots: RootCertStore,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, TlsFileError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsFileError::new("tls", format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match client_auth {
        None => Ok(builder.with_no_client_auth()),
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            TlsFileError::new(
                "client key",
                format!("does not go with its certificate: {e}"),
            )
        }),
    }
}

/// Whether the certificate was refused for naming another host (its chain
/// was fine: rustls checks the chain first).
pub fn is_name_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. }
        )
    )
}

/// The rustls error somewhere in `e`'s chain of sources, if the failure
/// was TLS's. Drivers often wrap it in an `io::Error` (whose `source()` is
/// not always set), so those are looked into as well.
pub fn rustls_error<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use idem_testkit::tls::TestCa;

    #[test]
    fn a_private_ca_is_the_only_root_and_bad_files_name_their_option() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("test CA");
        let path = ca.write_cert(dir.path(), "ca");
        assert_eq!(roots(Some(("upstream_ca", &path))).unwrap().len(), 1);
        assert!(roots(None).unwrap().len() > 100, "Mozilla's roots");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not PEM").unwrap();
        let err = roots(Some(("--upstream-ca", &junk))).unwrap_err();
        assert_eq!(err.field, "--upstream-ca");
        assert!(err.problem.contains("no PEM certificate"), "{err}");
        let err = read_key("tls_key", &junk).unwrap_err();
        assert_eq!(err.field, "tls_key");
        let err = read_certs("tls_cert", &dir.path().join("missing.pem")).unwrap_err();
        assert!(err.problem.contains("missing.pem"), "{err}");
    }

    #[test]
    fn a_tls_failure_is_found_however_the_driver_wrapped_it() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refused.clone());
        assert_eq!(rustls_error(&io), Some(&refused));
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect")]
        struct Driver(#[source] std::io::Error);
        assert_eq!(rustls_error(&Driver(io)), Some(&refused));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(rustls_error(&other), None);
    }
}
