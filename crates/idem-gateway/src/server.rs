//! Wiring: the listener, the layer around the proxy, the admin listener,
//! the sweeper, and graceful shutdown.

use crate::listen_tls::{ListenTls, ListenTlsError, TlsTermination};
use crate::proxy::{ClientAddr, Forwarding, InvalidUpstream, Proxy, TlsTerminated};
use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use idem_core::path::NormalisedPath;
use idem_core::{Problem, ProblemType};
use idem_store::Store;
use idem_tower::ResponseBody;
use idem_tower::{IdempotencyConfig, IdempotencyLayer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_layer::Layer;
use tower_service::Service;

/// Everything a running gateway needs, already validated.
pub struct GatewayOptions {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The API behind the gateway.
    pub upstream: Uri,
    /// The record store.
    pub store: Arc<dyn Store>,
    /// Where `/health` and `/metrics` are served, if anywhere.
    pub admin: Option<SocketAddr>,
    /// The contract's settings.
    pub idempotency: IdempotencyConfig,
    /// How long shutdown waits for connections and executions.
    pub shutdown_grace: Duration,
    /// How often expired records are swept.
    pub sweep_interval: Duration,
    /// Most records one sweep batch touches.
    pub sweep_batch: usize,
    /// Keep inbound forwarding headers and append to them (see
    /// [`Forwarding::trust_forwarded`]).
    pub trust_forwarded: bool,
    /// Accept cleartext HTTP/2 (prior knowledge). Off: HTTP/1.1 only.
    pub h2c: bool,
    /// TLS (and the HTTP version) to the upstream.
    pub upstream_tls: crate::upstream_tls::UpstreamTls,
    /// Terminate TLS on the listener with this certificate and key. Off:
    /// plain HTTP.
    pub listen_tls: Option<ListenTls>,
    /// Seal stored responses with these keys (any engine).
    pub encryption: Option<idem_store::KeyRing>,
    /// Timeouts and limits of client connections.
    pub limits: ConnectionLimits,
    /// The admin listener's bearer token, if any.
    pub admin_token: Option<crate::admin::AdminToken>,
    /// Where the main listener serves the idempotency policy document
    /// (answered by the gateway, never forwarded, no key needed); `None`
    /// turns it off. Default `/.well-known/idempotency`.
    pub policy_path: Option<String>,
}

impl std::fmt::Debug for GatewayOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store by engine name; the keys and the token never.
        f.debug_struct("GatewayOptions")
            .field("listen", &self.listen)
            .field("upstream", &self.upstream)
            .field("store", &self.store.engine())
            .field("admin", &self.admin)
            .field("idempotency", &self.idempotency)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("sweep_interval", &self.sweep_interval)
            .field("sweep_batch", &self.sweep_batch)
            .field("trust_forwarded", &self.trust_forwarded)
            .field("h2c", &self.h2c)
            .field("listen_tls", &self.listen_tls)
            .field("encryption", &self.encryption.is_some())
            .field("limits", &self.limits)
            .field("admin_token", &self.admin_token.is_some())
            .field("policy_path", &self.policy_path)
            .finish_non_exhaustive()
    }
}

/// What a client connection may hold: defaults safe on the open internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers, and how
    /// long an idle keep-alive connection is kept. Default 10 s: a client
    /// that trickles its headers (slowloris) is dropped.
    pub header_read_timeout: Duration,
    /// Client connections served at once. Past it the gateway stops
    /// accepting, so new clients wait in the kernel's listen backlog until a
    /// connection ends, instead of the process running out of file
    /// descriptors. Default 10,000, or fewer when the open-files limit
    /// cannot hold that many (each client may need a second descriptor
    /// upstream).
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        let fits = open_files_limit().map_or(10_000, |soft| soft.saturating_sub(64) / 2);
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: fits.clamp(16, 10_000),
        }
    }
}

/// The process's soft limit of open files, where the system tells.
fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
}

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The listen or admin address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The upstream URL is unusable.
    #[error(transparent)]
    Upstream(#[from] InvalidUpstream),
    /// The listener's certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] ListenTlsError),
}

/// A gateway that is serving.
#[derive(Debug)]
pub struct RunningGateway {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    tls: Option<Arc<TlsTermination>>,
}

impl RunningGateway {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stops accepting, lets in-flight requests finish and store their
    /// outcomes (up to the grace period), then returns.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Waits until the gateway stops (after [`RunningGateway::shutdown`] is
    /// requested elsewhere, or on a fatal error).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }

    /// Reads the listener's certificate and key again (`idem gateway` does
    /// on SIGHUP): new handshakes use them, open connections keep theirs.
    /// `None` without TLS; on an error the certificate in use stays.
    pub fn reload_tls(&self) -> Option<Result<(), ListenTlsError>> {
        self.tls.as_ref().map(|tls| tls.reload())
    }

    /// A token that, when cancelled, starts graceful shutdown.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Binds the listeners and starts serving.
pub async fn start(options: GatewayOptions) -> Result<RunningGateway, GatewayError> {
    let forwarding = Forwarding::for_config(&options.idempotency, options.trust_forwarded);
    let proxy = Proxy::new(&options.upstream, forwarding, &options.upstream_tls)?;
    let tls = match options.listen_tls {
        Some(files) => Some(Arc::new(TlsTermination::new(files)?)),
        None => None,
    };
    let store: Arc<dyn Store> = match options.encryption {
        Some(keys) => Arc::new(idem_store::SealedStore::new(options.store, keys)),
        None => options.store,
    };
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: options.listen,
                source,
            })?;
    let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
        addr: options.listen,
        source,
    })?;
    let stop = CancellationToken::new();
    let admin_addr = match options.admin {
        Some(admin) => {
            crate::admin::prometheus();
            let admin_listener =
                TcpListener::bind(admin)
                    .await
                    .map_err(|source| GatewayError::Bind {
                        addr: admin,
                        source,
                    })?;
            let bound = admin_listener
                .local_addr()
                .map_err(|source| GatewayError::Bind {
                    addr: admin,
                    source,
                })?;
            let keys = crate::admin::keys::KeysApi {
                store: store.clone(),
                scope: options.idempotency.scope.clone(),
                retention: options.idempotency.retention,
                replay_headers: options.idempotency.replay_headers.clone(),
            };
            tokio::spawn(crate::admin::serve(
                admin_listener,
                keys,
                options.admin_token.clone(),
                stop.clone(),
            ));
            Some(bound)
        }
        None => None,
    };
    let layer = IdempotencyLayer::new(options.idempotency, store.clone());
    let published = options
        .policy_path
        .map(|path| Arc::new(Published::new(path, &layer)));
    tokio::spawn(sweep(
        store,
        layer.clock().clone(),
        options.sweep_interval,
        options.sweep_batch,
        stop.clone(),
    ));
    let service = layer.layer(proxy);
    let serving = Serving {
        service,
        layer,
        published,
        tls: tls.clone(),
        limits: options.limits,
        h2c: options.h2c,
        grace: options.shutdown_grace,
    };
    let task = tokio::spawn(serve(listener, serving, stop.clone()));
    tracing::info!(%addr, upstream = %options.upstream, "gateway listening");
    Ok(RunningGateway {
        addr,
        admin_addr,
        stop,
        task,
        tls,
    })
}

/// A connection builder with the client limits: header timeout, HTTP/2
/// streams and header list size.
fn connection_builder(limits: ConnectionLimits) -> AutoBuilder<TokioExecutor> {
    let mut builder = AutoBuilder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(limits.header_read_timeout));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(Some(256))
        .max_header_list_size(64 * 1024);
    builder
}

/// Whether the client sends its first byte within `within`.
async fn first_bytes_within(stream: &TcpStream, within: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.peek(&mut first)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// What the main listener answers with, and on which terms.
struct Serving {
    /// The layer around the proxy.
    service: idem_tower::Idempotency<Proxy>,
    /// The same layer, for its problem responses and its drain.
    layer: IdempotencyLayer,
    /// The policy document, answered by the gateway itself.
    published: Option<Arc<Published>>,
    tls: Option<Arc<TlsTermination>>,
    limits: ConnectionLimits,
    h2c: bool,
    /// How long shutdown waits for connections and executions.
    grace: Duration,
}

/// Serves `listener` until `stop`, then drains within the grace period.
async fn serve(listener: TcpListener, serving: Serving, stop: CancellationToken) {
    let Serving {
        service,
        layer,
        published,
        tls,
        limits,
        h2c,
        grace,
    } = serving;
    warn_if_descriptors_short(limits.max_connections);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // HTTP/2 only where it was asked for: over TLS when ALPN chose `h2`,
    // in the clear with `h2c`. An h2c client would otherwise reach paths
    // (e.g. `:authority` without `Host`) that HTTP/1.1 deployments never
    // see.
    let both = connection_builder(limits);
    let http1_only = connection_builder(limits).http1_only();
    loop {
        // A free slot first: at the limit, new clients wait in the backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // closed: never, the semaphore lives here
            },
            () = stop.cancelled() => break,
        };
        let Some((stream, peer)) = idem_serve::accept(&listener, &stop).await else {
            break;
        };
        let service = service.clone();
        let terminated = tls.is_some();
        let (layer, published) = (layer.clone(), published.clone());
        let hyper_service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ClientAddr(peer));
            if terminated {
                request.extensions_mut().insert(TlsTerminated);
            }
            let answered = published.as_ref().and_then(|p| p.answer(&request));
            let mut service = service.clone();
            let layer = layer.clone();
            async move {
                if let Some(response) = answered {
                    return Ok(response);
                }
                match service.call(request).await {
                    Ok(response) => Ok::<_, Infallible>(response),
                    Err(e) => {
                        tracing::warn!(error = %e, "request failed before a response");
                        Ok(layer.problem_response(Problem::new(
                            ProblemType::UpstreamUnavailable,
                            format!("The upstream request failed: {e}"),
                        )))
                    }
                }
            }
        });
        let (both, http1_only) = (both.clone(), http1_only.clone());
        let watcher = graceful.watcher();
        let header_read_timeout = limits.header_read_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let ended = match tls {
                Some(tls) => {
                    // The handshake counts against the header timeout: a
                    // client that stalls in it holds a slot no longer.
                    let handshake = tls.acceptor().accept(stream);
                    let stream = match tokio::time::timeout(header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "no TLS handshake within the header read timeout; closed");
                            return;
                        }
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let builder = if h2 { both } else { http1_only };
                    let connection = builder.serve_connection(TokioIo::new(stream), hyper_service);
                    watcher.watch(connection.into_owned()).await
                }
                None => {
                    // With h2c on, the version is read from the first
                    // bytes, before hyper's header timer runs: a client that
                    // sends nothing would hold its slot for ever.
                    if h2c && !first_bytes_within(&stream, header_read_timeout).await {
                        tracing::debug!(%peer, "no request bytes within the header read timeout; closed");
                        return;
                    }
                    let builder = if h2c { both } else { http1_only };
                    // Not `with_upgrades`: the proxy forwards no upgrades,
                    // and that mode would ignore `http1_only`.
                    let connection = builder.serve_connection(TokioIo::new(stream), hyper_service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    let drained = async {
        graceful.shutdown().await;
        layer.drain().await;
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(in_progress = layer.executions_in_progress(), "grace period over; exiting with executions still running (their keys become outcome-unknown)");
    }
}

/// The policy document, served by the gateway itself at its path: never
/// forwarded upstream, whatever the method, and no key needed.
struct Published {
    path: String,
    body: Bytes,
}

impl Published {
    fn new(path: String, layer: &IdempotencyLayer) -> Published {
        // A `serde_json::Value` always serialises.
        let body = serde_json::to_vec_pretty(&layer.policy_document()).unwrap_or_default();
        Published {
            path,
            body: Bytes::from(body),
        }
    }

    /// The answer to a request for the document (`None` for any other
    /// path): 200 with the JSON to GET and HEAD, 405 to other methods.
    fn answer<B, RB>(&self, request: &Request<B>) -> Option<Response<ResponseBody<RB>>> {
        if NormalisedPath::new(request.uri().path()).as_str() != self.path {
            return None;
        }
        let readable = request.method() == Method::GET || request.method() == Method::HEAD;
        let body = if readable {
            self.body.clone()
        } else {
            Bytes::new()
        };
        let len = body.len();
        let mut response = if readable {
            let mut ok = Response::new(ResponseBody::full(body));
            let headers = ok.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
            ok
        } else {
            let mut refused = Response::new(ResponseBody::full(body));
            *refused.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            refused
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            refused
        };
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
        Some(response)
    }
}

/// Logs a warning when the process may run out of file descriptors before
/// `max_connections` (each connection needs one, and upstream connections
/// and the store need more).
fn warn_if_descriptors_short(max_connections: usize) {
    if let Some(soft) = open_files_limit() {
        if max_connections.saturating_mul(2).saturating_add(64) > soft {
            tracing::warn!(
                max_connections,
                open_files_limit = soft,
                "max_connections may exceed the open-files limit (each client connection can need a second descriptor upstream); raise `ulimit -n` or lower max_connections"
            );
        }
    }
}

async fn sweep(
    store: Arc<dyn Store>,
    clock: Arc<dyn idem_tower::Clock>,
    every: Duration,
    batch: usize,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        // Batches until one comes back short: the pace follows the backlog,
        // so the sweeper keeps up with any completion rate. Between full
        // batches it rests as long as the batch took, so sweeping never
        // takes more than half of the store's time.
        let mut full_batches: u64 = 0;
        loop {
            let started = std::time::Instant::now();
            match store.sweep(clock.now(), batch).await {
                Ok(report) => {
                    let swept = report.deleted + report.tombstoned;
                    metrics::counter!(SWEPT, "action" => "deleted")
                        .increment(report.deleted as u64);
                    metrics::counter!(SWEPT, "action" => "tombstoned")
                        .increment(report.tombstoned as u64);
                    if swept < batch {
                        break;
                    }
                    full_batches += 1;
                    metrics::gauge!(SWEEP_BACKLOG).set(full_batches as f64);
                }
                Err(e) => {
                    tracing::warn!(error = &e as &dyn std::error::Error, "sweep failed");
                    break;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(started.elapsed()) => {}
                () = stop.cancelled() => return,
            }
        }
        if full_batches > 0 {
            tracing::debug!(full_batches, "sweep caught up");
        }
        metrics::gauge!(SWEEP_BACKLOG).set(0.0);
    }
}

/// Counter of records swept, by `action` (`deleted`, `tombstoned`).
const SWEPT: &str = "idem_swept_records_total";
/// Gauge: full sweep batches in a row in the pass under way (each means
/// `sweep_batch` more expired records were waiting); 0 once caught up.
const SWEEP_BACKLOG: &str = "idem_sweep_backlog_batches";
