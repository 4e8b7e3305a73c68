//! The client's TCP stream, which a fault can turn into a reset.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Set by a fault to reset the connection it belongs to.
#[derive(Debug, Clone, Default)]
pub(crate) struct AbortHandle(Arc<AtomicBool>);

impl AbortHandle {
    /// From now on the connection fails every read and write (so hyper
    /// writes nothing more, not even a FIN) and closes with a TCP RST.
    pub(crate) fn abort(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_aborted(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A client connection that can be cut with a reset.
pub(crate) struct ClientStream {
    inner: TcpStream,
    abort: AbortHandle,
}

impl ClientStream {
    pub(crate) fn new(inner: TcpStream, abort: AbortHandle) -> ClientStream {
        ClientStream { inner, abort }
    }

    fn check(&self) -> io::Result<()> {
        if self.abort.is_aborted() {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection reset by idem chaos",
            ))
        } else {
            Ok(())
        }
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        if self.abort.is_aborted() {
            // SO_LINGER 0: closing sends RST instead of FIN, and the client
            // sees "connection reset by peer" rather than a clean EOF.
            if let Err(e) = self.inner.set_zero_linger() {
                tracing::debug!(error = %e, "cannot set SO_LINGER 0; the client gets a FIN");
            }
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
