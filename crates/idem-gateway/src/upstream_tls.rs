//! How the gateway reaches an `https://` upstream: rustls, Mozilla's roots
//! or a private CA, an optional client certificate (mTLS), and which HTTP
//! version to speak.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether the gateway speaks HTTP/2 to its upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamHttp2 {
    /// HTTP/2 when the upstream's TLS handshake offers it (ALPN `h2`),
    /// HTTP/1.1 otherwise and over `http://`.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Never,
    /// HTTP/2 only: ALPN `h2` over TLS, prior knowledge over `http://`.
    Always,
}

/// TLS to the upstream. The default trusts Mozilla's roots, presents no
/// client certificate, and lets ALPN pick the HTTP version.
///
/// ```
/// use idem_gateway::upstream_tls::{UpstreamHttp2, UpstreamTls};
/// let tls = UpstreamTls::default();
/// assert_eq!(tls.http2, UpstreamHttp2::Auto);
/// assert!(tls.client_config().is_ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// PEM file of the CA certificates that sign the upstream's
    /// certificate; with it, only those are trusted (not the public roots).
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate (chain) presented to the upstream.
    pub client_cert: Option<PathBuf>,
    /// PEM file of that certificate's private key.
    pub client_key: Option<PathBuf>,
    /// Whether to speak HTTP/2.
    pub http2: UpstreamHttp2,
}

/// A TLS file or setting that cannot be used; names the option.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct UpstreamTlsError {
    /// The configuration option at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn error(field: &'static str, problem: impl Into<String>) -> UpstreamTlsError {
    UpstreamTlsError {
        field,
        problem: problem.into(),
    }
}

fn read_certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, UpstreamTlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| error(field, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(error(
            field,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

impl UpstreamTls {
    /// The rustls client configuration (without ALPN, which the connector
    /// sets from [`UpstreamTls::http2`]).
    pub fn client_config(&self) -> Result<ClientConfig, UpstreamTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| error("upstream", format!("TLS: {e}")))?;
        let roots = match &self.ca {
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs("upstream_ca", path)? {
                    roots
                        .add(cert)
                        .map_err(|e| error("upstream_ca", format!("{}: {e}", path.display())))?;
                }
                roots
            }
        };
        let builder = builder.with_root_certificates(roots);
        match (&self.client_cert, &self.client_key) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let chain = read_certs("upstream_client_cert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    error(
                        "upstream_client_key",
                        format!("{}: {e} (expected a PEM private key)", key.display()),
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    error(
                        "upstream_client_key",
                        format!("does not go with upstream_client_cert: {e}"),
                    )
                })
            }
            (Some(_), None) => Err(error(
                "upstream_client_key",
                "required with upstream_client_cert",
            )),
            (None, Some(_)) => Err(error(
                "upstream_client_cert",
                "required with upstream_client_key",
            )),
        }
    }
}
