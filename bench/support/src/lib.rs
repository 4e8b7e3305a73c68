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
