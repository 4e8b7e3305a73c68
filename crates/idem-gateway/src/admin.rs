//! The admin listener: `/health` and `/metrics` (Prometheus text), and the
//! keys API under `/v1/keys` ([`keys`]), which needs the admin token.

pub mod keys;

use bytes::Bytes;
use http::{header::CONTENT_TYPE, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use idem_store::Store;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Latencies in seconds; batch sizes in operations (a store
            // batches at most a few hundred).
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ])
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(idem_store::BATCH_SIZE_METRIC.to_owned()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                    )
                })
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

/// How often `/health`'s view of the store is refreshed: `/health` answers
/// from the last probe, so polling it never loads the store.
const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// How long one probe may take before the store counts as unavailable.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The last store probe: `None` while it answered, else why not.
type Probe = tokio::sync::watch::Receiver<Option<String>>;

async fn ping(store: &dyn Store) -> Option<String> {
    match tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => None,
        // What failed and why: the error, then its causes.
        Ok(Err(e)) => Some(idem_core::causes::Causes(&e).to_string()),
        Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// Probes once (so the first `/health` already knows), then keeps probing
/// in the background.
async fn probe(store: Arc<dyn Store>, stop: CancellationToken) -> Probe {
    let (tx, rx) = tokio::sync::watch::channel(ping(&*store).await);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(PROBE_EVERY) => {}
                () = stop.cancelled() => return,
            }
            tx.send_replace(ping(&*store).await);
        }
    });
    rx
}

/// The admin listener's secret: with it, callers must send
/// `Authorization: Bearer <token>` to see details (and, later, to act).
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    /// A token; `None` when empty.
    pub fn new(token: &str) -> Option<Self> {
        let t = token.trim();
        (!t.is_empty()).then(|| AdminToken(t.into()))
    }

    /// Whether `request` carries it (compared in constant time).
    fn admits<B>(&self, request: &Request<B>) -> bool {
        let Some(sent) = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        else {
            return false;
        };
        let (a, b) = (sent.trim().as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Serves the admin endpoints on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    keys: keys::KeysApi,
    token: Option<AdminToken>,
    stop: CancellationToken,
) {
    let store = keys.store.clone();
    let handle = prometheus();
    if token.is_none() && listener.local_addr().is_ok_and(|a| !a.ip().is_loopback()) {
        tracing::warn!(
            addr = ?listener.local_addr().ok(),
            "the admin listener is reachable beyond this host and has no admin_token_env: anyone who can reach it can read its endpoints"
        );
    }
    let engine = store.engine();
    let health = probe(store, stop.clone()).await;
    loop {
        let Some((stream, _)) = idem_serve::accept(&listener, &stop).await else {
            return;
        };
        let (handle, health, token, keys) =
            (handle.clone(), health.clone(), token.clone(), keys.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (handle, health, token, keys) =
                    (handle.clone(), health.clone(), token.clone(), keys.clone());
                async move {
                    if req.uri().path().starts_with("/v1/") {
                        return Ok::<_, Infallible>(keys_route(req, token.as_ref(), &keys).await);
                    }
                    Ok::<_, Infallible>(route(req, engine, &health, token.as_ref(), &handle))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The keys API: only with the admin token, and only when one is
/// configured (acting on keys is never open, not even on loopback).
async fn keys_route(
    req: Request<Incoming>,
    token: Option<&AdminToken>,
    keys: &keys::KeysApi,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt as _;
    let answer = match token {
        None => keys::problem(
            StatusCode::UNAUTHORIZED,
            "admin-token-required",
            "the keys API is off: set admin_token_env to turn it on",
        ),
        Some(t) if !t.admits(&req) => keys::problem(
            StatusCode::UNAUTHORIZED,
            "admin-token-required",
            "send Authorization: Bearer <the admin token>",
        ),
        Some(_) => {
            let (parts, body) = req.into_parts();
            let limited = http_body_util::Limited::new(body, keys::MAX_RESOLVE_BODY);
            match limited.collect().await {
                Ok(body) => {
                    keys.handle(
                        &parts.method,
                        parts.uri.path(),
                        parts.uri.query().unwrap_or_default(),
                        body.to_bytes(),
                    )
                    .await
                }
                Err(_) => keys::problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "bad-admin-request",
                    "body: over 16 MiB or not read completely",
                ),
            }
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() = answer.status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static(answer.content_type),
    );
    if answer.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"idem admin\""),
        );
    }
    response
}

fn route(
    req: Request<Incoming>,
    engine: &'static str,
    health: &Probe,
    token: Option<&AdminToken>,
    handle: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    // Without a token configured, everything is shown (loopback default).
    let trusted = token.is_none_or(|t| t.admits(&req));
    let (status, content_type, body) = match req.uri().path() {
        "/health" => match &*health.borrow() {
            None => (
                StatusCode::OK,
                "application/json",
                serde_json::json!({"status": "ok", "store": engine}).to_string(),
            ),
            Some(error) => {
                let mut body = serde_json::json!({"status": "store-unavailable", "store": engine});
                if trusted {
                    body["error"] = serde_json::Value::String(error.clone());
                }
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    body.to_string(),
                )
            }
        },
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", handle.render()),
        // The console holds no data: it asks for the token and calls the
        // keys API, which checks it.
        "/" => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            CONSOLE_HTML.to_owned(),
        ),
        "/console.js" => (
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            CONSOLE_JS.to_owned(),
        ),
        "/console.css" => (
            StatusCode::OK,
            "text/css; charset=utf-8",
            CONSOLE_CSS.to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /health, /metrics or /v1/keys\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    // Nothing but this origin's own files; no framing (clickjacking of the
    // release buttons).
    response.headers_mut().insert(
        http::HeaderName::from_static("content-security-policy"),
        http::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'none'",
        ),
    );
    response
}

const CONSOLE_HTML: &str = include_str!("admin/console.html");
const CONSOLE_JS: &str = include_str!("admin/console.js");
const CONSOLE_CSS: &str = include_str!("admin/console.css");
