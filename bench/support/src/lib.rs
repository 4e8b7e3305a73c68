//! Shared helpers for the `idem` benchmark binaries (`bench-upstream` and
//! `bench-passthrough`). See `bench/README.md` for how they are used.

use std::io::Write as _;
use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Binds a TCP listener on `addr` and prints exactly one line,
/// `listening on ADDR`, to stdout (flushed) once the socket is bound, so that
/// scripts can wait for readiness. `ADDR` is the actually bound address, which
/// matters when port 0 was requested.
pub async fn bind_and_announce(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {local}")?;
    out.flush()?;
    Ok(listener)
}

/// A TLS acceptor serving the PEM certificate chain `cert` with its key
/// `key`, offering HTTP/1.1 only (what wrk speaks), on the same rustls
/// provider as the gateway, so TLS rows compare proxies, not TLS stacks.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let chain = idem_tls::read_certs("--tls-cert", cert)?;
    let key = idem_tls::read_key("--tls-key", key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(idem_tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}
