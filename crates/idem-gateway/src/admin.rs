//! The admin listener: `/health` and `/metrics` (Prometheus text).

use bytes::Bytes;
use http::{header::CONTENT_TYPE, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use idem_store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by an embedding
            // program); then this handle renders nothing, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Serves the admin endpoints on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, store: Arc<dyn Store>, stop: CancellationToken) {
    let handle = prometheus();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let store = store.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let store = store.clone();
                let handle = handle.clone();
                async move { Ok::<_, Infallible>(route(req, &*store, &handle).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(
    req: Request<Incoming>,
    store: &dyn Store,
    handle: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/health" => match store.ping().await {
            Ok(()) => (
                StatusCode::OK,
                "application/json",
                format!(r#"{{"status":"ok","store":"{}"}}"#, store.engine()),
            ),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                serde_json::json!({"status": "store-unavailable", "store": store.engine(), "error": e.to_string()}).to_string(),
            ),
        },
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", handle.render()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found: try /health or /metrics\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
