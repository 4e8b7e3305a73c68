//! Serving: the handler as a Tower service, idem's layer around it in the
//! correct mode, HTTP/1.1 connections, graceful shutdown.

use crate::app::{App, BoxError};
use crate::Flaw;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use idem_store::MemoryStore;
use idem_tower::{Idempotency, IdempotencyConfig, IdempotencyLayer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::{Layer, ServiceExt};

/// The payments handler as a Tower service, for idem's layer to wrap.
#[derive(Debug, Clone)]
pub(crate) struct Handler(Arc<App>);

impl<B> tower::Service<Request<B>> for Handler
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let app = self.0.clone();
        Box::pin(async move { Ok(app.handle(request).await) })
    }
}

type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What a connection talks to: the bare handler, or idem's layer around it.
#[derive(Clone)]
pub(crate) enum Front {
    Bare(Arc<App>),
    Layered(Idempotency<Handler>),
}

impl Front {
    pub(crate) fn new(flaw: Flaw, app: Arc<App>) -> Front {
        match flaw {
            // The default config covers POST and PATCH on every path, keys
            // optional, scoped by a hash of Authorization; GETs pass through.
            Flaw::None => {
                let layer = IdempotencyLayer::new(
                    IdempotencyConfig::default(),
                    Arc::new(MemoryStore::new()),
                );
                Front::Layered(layer.layer(Handler(app)))
            }
            _ => Front::Bare(app),
        }
    }

    async fn call(self, request: Request<Incoming>) -> Response<ResponseBody> {
        match self {
            Front::Bare(app) => app
                .handle(request)
                .await
                .map(|body| body.map_err(|never| match never {}).boxed_unsync()),
            Front::Layered(service) => match service.oneshot(request).await {
                Ok(response) => response.map(BodyExt::boxed_unsync),
                Err(never) => match never {},
            },
        }
    }
}

/// Accepts connections until `stop` is cancelled (or its guard dropped),
/// then lets in-progress exchanges finish for up to `grace` and cuts the
/// rest.
pub(crate) async fn serve(
    listener: TcpListener,
    front: Front,
    stop: CancellationToken,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    while let Some((stream, _peer)) = idem_serve::accept(&listener, &stop).await {
        let front = front.clone();
        let service = hyper::service::service_fn(move |request| {
            let front = front.clone();
            async move { Ok::<_, Infallible>(front.call(request).await) }
        });
        // half_close stays off (hyper's default): a client that hangs up
        // mid-request ends the connection at once, and hyper drops the
        // handler's future. That is the "client gone" that
        // StoreIfDelivered reacts to.
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
        // Reap the connections that ended, so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if !idem_serve::drain(graceful, grace).await {
        tracing::debug!("grace period over; closing the remaining connections");
    }
    connections.shutdown().await;
}
