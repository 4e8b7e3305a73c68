//! How the gateway reaches an `https://` upstream: rustls, Mozilla's roots
//! or a private CA, an optional client certificate (mTLS), and which HTTP
//! version to speak.

use rustls::ClientConfig;
use serde::Deserialize;
use std::path::PathBuf;

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
pub use idem_tls::TlsFileError as UpstreamTlsError;

impl UpstreamTls {
    /// The rustls client configuration (without ALPN, which the connector
    /// sets from [`UpstreamTls::http2`]).
    pub fn client_config(&self) -> Result<ClientConfig, UpstreamTlsError> {
        let roots = idem_tls::roots(self.ca.as_deref().map(|ca| ("upstream_ca", ca)))?;
        let client_auth = match (&self.client_cert, &self.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((
                idem_tls::read_certs("upstream_client_cert", cert)?,
                idem_tls::read_key("upstream_client_key", key)?,
            )),
            (Some(_), None) => {
                return Err(UpstreamTlsError::new(
                    "upstream_client_key",
                    "required with upstream_client_cert",
                ))
            }
            (None, Some(_)) => {
                return Err(UpstreamTlsError::new(
                    "upstream_client_cert",
                    "required with upstream_client_key",
                ))
            }
        };
        let mtls = client_auth.is_some();
        idem_tls::client_config(roots, client_auth).map_err(|e| {
            if mtls {
                UpstreamTlsError::new(
                    "upstream_client_key",
                    format!("does not go with upstream_client_cert: {}", e.problem),
                )
            } else {
                e
            }
        })
    }
}
