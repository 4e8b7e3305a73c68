//! Forwarding, and each fault's effect on one request.

use crate::fault::{Decider, Fault, Faults, Methods, ParseError};
use crate::io::AbortHandle;
use crate::log::{Entry, FaultLog};
use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use idem_core::headers::strip_hop_by_hop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The body of a request to the upstream or of a response to the client:
/// streamed through, or buffered.
pub(crate) type Body = Either<Incoming, Full<Bytes>>;

/// Why the service answers the client with no response at all: hyper then
/// drops the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NoResponse {
    /// A fault cut the connection.
    #[error("connection reset by idem chaos ({0})")]
    Aborted(Fault),
    /// The client's request body failed.
    #[error("reading the request body: {0}")]
    Body(#[from] hyper::Error),
    /// The request's path does not make an upstream URI.
    #[error("building the upstream URI: {0}")]
    Uri(#[from] http::Error),
}

/// Parses `--upstream`: `http[s]://host:port[/base]`.
pub fn parse_upstream(input: &str) -> Result<Uri, ParseError> {
    let bad = |why: &str| ParseError(format!("`{input}` {why}, e.g. http://127.0.0.1:3000"));
    let uri: Uri = input.trim().parse().map_err(|_| bad("is not a URL"))?;
    match uri.scheme() {
        None => return Err(bad("needs a scheme")),
        Some(s) if *s != Scheme::HTTP && *s != Scheme::HTTPS => {
            return Err(bad("is not http:// or https://"))
        }
        Some(_) => {}
    }
    if uri.authority().is_none() {
        return Err(bad("needs a host"));
    }
    Ok(uri)
}

/// Counts of what happened, for the summary.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub requests: u64,
    pub selected: u64,
    pub passed: u64,
    pub duplicate: u64,
    pub drop_response: u64,
    pub drop_request: u64,
    pub delay: u64,
    pub reset: u64,
}

struct Decisions {
    next_id: u64,
    decider: Decider,
    counts: Counts,
}

/// The proxy's shared state.
pub(crate) struct Chaos {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    methods: Methods,
    delay: Duration,
    decisions: Mutex<Decisions>,
    upstream_errors: AtomicU64,
    log: Option<FaultLog>,
}

impl std::fmt::Debug for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chaos")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("base_path", &self.base_path)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

/// What is forwarded: the request head with the upstream's URI.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    fn request(&self, body: Body) -> Request<Body> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

fn bad_gateway(error: &str) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "idem chaos: upstream error: {error}\n"
    )))));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

impl Chaos {
    pub(crate) fn new(
        upstream: &Uri,
        faults: &Faults,
        methods: Methods,
        seed: u64,
        log: Option<FaultLog>,
        tls: rustls::ClientConfig,
    ) -> Chaos {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.enforce_http(false);
        // HTTP/1.1 to the upstream, as the faults are written per request
        // on one HTTP/1.1 exchange.
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Chaos {
            client,
            scheme: upstream.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: upstream
                .authority()
                .cloned()
                .expect("parse_upstream checked the host"),
            base_path: upstream.path().trim_end_matches('/').to_owned(),
            methods,
            delay: faults.delay_duration(),
            decisions: Mutex::new(Decisions {
                next_id: 1,
                decider: Decider::new(faults, seed),
                counts: Counts::default(),
            }),
            upstream_errors: AtomicU64::new(0),
            log,
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        self.decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .counts
    }

    pub(crate) fn upstream_errors(&self) -> u64 {
        self.upstream_errors.load(Ordering::Relaxed)
    }

    /// Numbers the request and decides its fault, in arrival order under
    /// one lock, so a seed repeats the sequence of decisions.
    fn decide(&self, method: &Method) -> (u64, Option<Fault>) {
        let mut d = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        let id = d.next_id;
        d.next_id += 1;
        d.counts.requests += 1;
        if !self.methods.contains(method) {
            return (id, None);
        }
        d.counts.selected += 1;
        let fault = d.decider.decide();
        let c = &mut d.counts;
        match fault {
            None => c.passed += 1,
            Some(Fault::Duplicate) => c.duplicate += 1,
            Some(Fault::DropResponse) => c.drop_response += 1,
            Some(Fault::DropRequest) => c.drop_request += 1,
            Some(Fault::Delay) => c.delay += 1,
            Some(Fault::Reset) => c.reset += 1,
        }
        (id, fault)
    }

    fn head(&self, method: Method, uri: &Uri, mut headers: HeaderMap) -> Result<Head, http::Error> {
        let path_and_query = uri
            .path_and_query()
            .map(PathAndQuery::as_str)
            .unwrap_or("/");
        let pq = format!("{}{}", self.base_path, path_and_query);
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()?;
        strip_hop_by_hop(&mut headers, &[]);
        // The client sets Host from the upstream URI.
        headers.remove(HOST);
        Ok(Head {
            method,
            uri,
            headers,
        })
    }

    async fn forward(&self, head: &Head, body: Body) -> Result<Response<Incoming>, String> {
        match self.client.request(head.request(body)).await {
            Ok(mut response) => {
                strip_hop_by_hop(response.headers_mut(), &[]);
                Ok(response)
            }
            Err(e) => {
                self.upstream_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, uri = %head.uri, "upstream request failed");
                Err(e.to_string())
            }
        }
    }

    /// Forwards and reads the whole answer.
    async fn forward_buffered(
        &self,
        head: &Head,
        body: Body,
    ) -> Result<Response<Full<Bytes>>, String> {
        let response = self.forward(head, body).await?;
        let (parts, body) = response.into_parts();
        match body.collect().await {
            Ok(bytes) => Ok(Response::from_parts(parts, Full::new(bytes.to_bytes()))),
            Err(e) => {
                self.upstream_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, uri = %head.uri, "upstream response failed");
                Err(format!("reading the upstream's response: {e}"))
            }
        }
    }

    fn streamed(result: Result<Response<Incoming>, String>) -> Response<Body> {
        match result {
            Ok(response) => response.map(Either::Left),
            Err(e) => bad_gateway(&e),
        }
    }

    /// One request: decide, then apply the fault (or none).
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        abort: AbortHandle,
    ) -> Result<Response<Body>, NoResponse> {
        let (id, fault) = self.decide(request.method());
        let (parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
        let key = parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let method = parts.method.clone();
        let head = self.head(parts.method, &parts.uri, parts.headers)?;
        let Some(fault) = fault else {
            return Ok(Self::streamed(
                self.forward(&head, Either::Left(body)).await,
            ));
        };
        let mut entry = Entry {
            time: String::new(),
            request_id: id,
            method: method.to_string(),
            path,
            idempotency_key: key,
            fault,
            upstream_status: None,
            duplicate_status: None,
            delay_ms: None,
            error: None,
        };
        tracing::debug!(request_id = id, %fault, %method, path = entry.path, "injecting a fault");
        let outcome = match fault {
            Fault::Reset => Err(NoResponse::Aborted(fault)),
            Fault::DropRequest => {
                // The client sends its whole request; it is lost after.
                body.collect().await?;
                Err(NoResponse::Aborted(fault))
            }
            Fault::DropResponse => {
                // The upstream does the work and answers in full; the
                // answer never reaches the client.
                match self.forward_buffered(&head, Either::Left(body)).await {
                    Ok(response) => entry.upstream_status = Some(response.status().as_u16()),
                    Err(e) => entry.error = Some(e),
                }
                Err(NoResponse::Aborted(fault))
            }
            Fault::Delay => {
                tokio::time::sleep(self.delay).await;
                entry.delay_ms = Some(self.delay.as_millis().try_into().unwrap_or(u64::MAX));
                let result = self.forward(&head, Either::Left(body)).await;
                match &result {
                    Ok(response) => entry.upstream_status = Some(response.status().as_u16()),
                    Err(e) => entry.error = Some(e.clone()),
                }
                Ok(Self::streamed(result))
            }
            Fault::Duplicate => {
                // Same head, same bytes, twice, one after the other: the
                // second is a retry of a request that already executed.
                let bytes = body.collect().await?.to_bytes();
                let first = self
                    .forward_buffered(&head, Either::Right(Full::new(bytes.clone())))
                    .await;
                let second = self
                    .forward_buffered(&head, Either::Right(Full::new(bytes)))
                    .await;
                entry.duplicate_status = second.as_ref().ok().map(|r| r.status().as_u16());
                Ok(match first {
                    Ok(response) => {
                        entry.upstream_status = Some(response.status().as_u16());
                        response.map(Either::Right)
                    }
                    Err(e) => {
                        let response = bad_gateway(&e);
                        entry.error = Some(e);
                        response
                    }
                })
            }
        };
        if let Some(log) = &self.log {
            entry.time = Entry::now();
            log.write(&entry);
        }
        match outcome {
            Ok(response) => Ok(response),
            Err(no_response) => {
                abort.abort();
                Err(no_response)
            }
        }
    }
}
