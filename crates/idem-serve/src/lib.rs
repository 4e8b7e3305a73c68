//! Serving as every idem server does it (the gateway, its admin listener,
//! `idem chaos`, the sample API): accept until told to stop, never let an
//! accept error end the loop, and on stop give the open connections a
//! bounded time to finish.
//!
//! ```no_run
//! use hyper_util::server::graceful::GracefulShutdown;
//! use std::time::Duration;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run(listener: tokio::net::TcpListener, stop: CancellationToken) {
//! let graceful = GracefulShutdown::new();
//! while let Some((stream, _peer)) = idem_serve::accept(&listener, &stop).await {
//!     // build a hyper connection on `stream`, `graceful.watch(..)` it, spawn it
//!     # drop(stream);
//! }
//! drop(listener);
//! idem_serve::drain(graceful, Duration::from_secs(10)).await;
//! # }
//! ```

use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long to pause after a failed accept before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The next connection on `listener`, or `None` once `stop` is cancelled.
///
/// A failed accept (out of file descriptors, a connection reset while it
/// sat in the backlog) is logged and retried after a short pause: it never
/// ends the loop, and the pause keeps a full descriptor table from
/// spinning a core. The stream has `TCP_NODELAY` set: idem's exchanges are
/// small requests and answers that Nagle's algorithm would only delay.
pub async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e) => {
                // The address tells which listener (main or admin) it was.
                tracing::warn!(error = %e, addr = ?listener.local_addr().ok(), "accept failed");
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Tells every connection `graceful` watches to finish its exchange in
/// progress and close, and waits for them up to `grace`. Returns whether
/// all of them closed in time; the rest are left to be cut when their
/// tasks are dropped. Stop accepting (drop the listener) first.
pub async fn drain(graceful: GracefulShutdown, grace: Duration) -> bool {
    let closed = tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok();
    if !closed {
        tracing::debug!(
            grace_ms = grace.as_millis() as u64,
            "connections still open after the grace period"
        );
    }
    closed
}
