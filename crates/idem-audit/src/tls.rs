//! TLS for `https://` targets: rustls with Mozilla's roots, plus the
//! user's own CA certificates (`--cacert`), or no verification at all
//! (`--insecure`, for a staging host with a self-signed certificate).

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How `https://` targets are verified.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// PEM files of CA certificates trusted besides Mozilla's roots.
    pub ca_certs: Vec<PathBuf>,
    /// Accept any certificate (the handshake's signatures are still
    /// checked). The command line warns on stderr.
    pub insecure: bool,
}

/// A ready TLS client configuration, shared by every connection of a run.
#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
}

impl Tls {
    /// Builds the configuration; errors name the flag.
    pub(crate) fn new(settings: &TlsSettings) -> Result<Tls, idem_tls::TlsFileError> {
        let provider = idem_tls::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| idem_tls::TlsFileError::new("tls", format!("TLS: {e}")))?;
        let mut config = if settings.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(idem_tls::danger::AnyCertificate::new(
                    provider,
                )))
                .with_no_client_auth()
        } else {
            // Each --cacert adds to Mozilla's roots.
            let mut roots = idem_tls::roots(None)?;
            for path in &settings.ca_certs {
                for cert in idem_tls::read_certs("--cacert", path)? {
                    roots.add(cert).map_err(|e| {
                        idem_tls::TlsFileError::new("--cacert", format!("{}: {e}", path.display()))
                    })?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        // The auditor speaks HTTP/1.1 only; say so, so no server picks h2.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The handshake with `host` over `tcp`.
    pub(crate) async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_owned())
            .map_err(|e| format!("`{host}` is not a TLS server name: {e}"))?;
        self.connector.connect(name, tcp).await.map_err(|e| {
            let mut reason = e.to_string();
            if reason.contains("certificate") {
                reason.push_str(
                    " (a private CA or a self-signed certificate? trust it with --cacert FILE, or skip verification with --insecure)",
                );
            }
            reason
        })
    }
}
