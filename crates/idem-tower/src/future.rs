use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The future [`Idempotency`](crate::Idempotency) returns.
///
/// Dropping it (the client went away) does not cancel an execution the
/// layer started: that runs on its own task until its outcome is stored.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ResponseFuture<T, E> {
    inner: Pin<Box<dyn Future<Output = Result<T, E>> + Send>>,
}

impl<T, E> ResponseFuture<T, E> {
    pub(crate) fn new(f: impl Future<Output = Result<T, E>> + Send + 'static) -> Self {
        ResponseFuture { inner: Box::pin(f) }
    }
}

impl<T, E> Future for ResponseFuture<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T, E> fmt::Debug for ResponseFuture<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// Drives a future inline, on the caller's task, and hands it to the
/// layer's task tracker if the caller drops it before it finishes.
///
/// This is how an execution outlives a client that hangs up, without paying
/// for a task spawn on every request: the common case (the client waits)
/// runs inline; only an abandoned request is moved to a task of its own.
pub(crate) struct DetachOnDrop<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    future: Option<Pin<Box<F>>>,
    tracker: tokio_util::task::TaskTracker,
}

impl<F: Future + Send + 'static> DetachOnDrop<F>
where
    F::Output: Send + 'static,
{
    pub(crate) fn new(future: F, tracker: tokio_util::task::TaskTracker) -> Self {
        DetachOnDrop {
            future: Some(Box::pin(future)),
            tracker,
        }
    }
}

impl<F: Future + Send + 'static> Future for DetachOnDrop<F>
where
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(future) = self.future.as_mut() else {
            // Only reachable if polled after completion, which Future forbids.
            return Poll::Pending;
        };
        match future.as_mut().poll(cx) {
            Poll::Ready(output) => {
                self.future = None;
                Poll::Ready(output)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F: Future + Send + 'static> Drop for DetachOnDrop<F>
where
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        let Some(future) = self.future.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                self.tracker.spawn_on(future, &handle);
            }
            // No runtime to finish on (it is shutting down): the claim's
            // lease runs out and the key reads as outcome-unknown.
            Err(_) => tracing::error!("request abandoned while no runtime could finish it; its key will become outcome-unknown"),
        }
    }
}
