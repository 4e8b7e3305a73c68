//! Counting upstreams: real HTTP/1.1 servers on 127.0.0.1 that count the
//! side effects they execute. [`Upstream`] records every request (counts
//! per path, idempotency key, method) and answers as the test says;
//! [`counting_upstream`] only counts, behind the count endpoints `idem
//! soak` reads.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The body of an [`Upstream`]'s answers.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// An [`Upstream`]'s answer to one request; `None` drops the connection
/// without an answer.
pub type Reply = Option<Response<Body>>;

/// A response with `status` and `body`.
pub fn reply(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
}

/// One request as the upstream received it (its body read in full).
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its method.
    pub method: Method,
    /// The request target: path and query.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// Its `Idempotency-Key`, if it had one.
    pub key: Option<String>,
    /// Which request this was: 1 for the first the upstream received.
    pub number: usize,
    /// Which request to this `path` (1 for the first).
    pub number_on_path: usize,
    /// Which request with this `method` (1 for the first).
    pub number_with_method: usize,
    /// The HTTP version it came in (HTTP/2 when a TLS front negotiated
    /// `h2`, or with prior knowledge).
    pub version: http::Version,
}

type BoxedReply = Pin<Box<dyn Future<Output = Reply> + Send>>;
type Answer = dyn Fn(Seen, Gate) -> BoxedReply + Send + Sync;

struct State {
    seen: Mutex<Vec<Seen>>,
    answer: Box<Answer>,
}

impl State {
    async fn record(&self, req: Request<Incoming>) -> Seen {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let key = parts
            .headers
            .get("idempotency-key")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        // The target as an HTTP/1.1 request line has it (an HTTP/2
        // request's URI also carries the scheme and authority).
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
        let mut all = self.seen.lock().unwrap();
        let seen = Seen {
            number: all.len() + 1,
            number_on_path: 1 + all.iter().filter(|s| s.path == path).count(),
            number_with_method: 1 + all.iter().filter(|s| s.method == parts.method).count(),
            method: parts.method,
            path,
            headers: parts.headers,
            body,
            key,
            version: parts.version,
        };
        all.push(seen.clone());
        seen
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 that records every request, then
/// answers it: by default (see [`Upstream::start`]) or as the test says
/// ([`Upstream::answering`]). Clones share the server.
#[derive(Clone)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its answers hold requests until the test lets them through.
    pub gate: Gate,
    state: Arc<State>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

/// Where an upstream's answers hold requests ([`Gate::hold`]) until the
/// test lets them through: a few ([`Gate::add_permits`]), or all
/// ([`Gate::release`]).
#[derive(Clone, Debug)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    /// Waits until the test lets this request through.
    pub async fn hold(&self) {
        if let Ok(permit) = self.0.acquire().await {
            permit.forget();
        }
    }

    /// Lets `n` held requests through (held now or later).
    pub fn add_permits(&self, n: usize) {
        self.0.add_permits(n);
    }

    /// Lets every held request through, now and later.
    pub fn release(&self) {
        self.0.close();
    }
}

/// Returned to hyper to drop the connection without writing a response.
#[derive(Debug)]
struct HangUp;

impl std::fmt::Display for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for HangUp {}

impl Upstream {
    /// An upstream that answers `{"key":KEY,"execution":N}` (N numbers the
    /// executions), 200 to GET and 201 to anything else. Keys starting with
    /// `slow-` are held (see [`Gate`]) until the test lets them through.
    pub async fn start() -> Upstream {
        Upstream::answering(|seen: Seen, gate: Gate| async move {
            let key = seen.key.unwrap_or_default();
            if key.starts_with("slow-") {
                gate.hold().await;
            }
            let status = if seen.method == Method::GET { 200 } else { 201 };
            let execution = seen.number;
            Some(reply(
                status,
                format!("{{\"key\":\"{key}\",\"execution\":{execution}}}"),
            ))
        })
        .await
    }

    /// An upstream that answers each request (once recorded) with what
    /// `answer` returns; `answer` holds requests at the gate it is given.
    pub async fn answering<A, F>(answer: A) -> Upstream
    where
        A: Fn(Seen, Gate) -> F + Send + Sync + 'static,
        F: Future<Output = Reply> + Send + 'static,
    {
        let gate = Gate(Arc::new(Semaphore::new(0)));
        let state = Arc::new(State {
            seen: Mutex::default(),
            answer: Box::new(move |seen: Seen, gate: Gate| -> BoxedReply {
                Box::pin(answer(seen, gate))
            }),
        });
        let (serving, holding) = (state.clone(), gate.clone());
        let addr = serve(move |req| {
            let (state, gate) = (serving.clone(), holding.clone());
            async move {
                let seen = state.record(req).await;
                (state.answer)(seen, gate).await.ok_or(HangUp)
            }
        })
        .await;
        Upstream { addr, gate, state }
    }

    /// Its base URI (`http://ADDR`).
    pub fn uri(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The last request received on `path`.
    pub fn last_seen(&self, path: &str) -> Seen {
        self.seen()
            .into_iter()
            .rev()
            .find(|s| s.path == path)
            .unwrap_or_else(|| panic!("upstream never saw {path}"))
    }

    fn count_where(&self, matches: impl Fn(&Seen) -> bool) -> usize {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| matches(s))
            .count()
    }

    /// Requests (side effects) on exactly `path` so far.
    pub fn count(&self, path: &str) -> usize {
        self.count_where(|s| s.path == path)
    }

    /// Requests with the idempotency key `key` so far.
    pub fn count_key(&self, key: &str) -> usize {
        self.count_where(|s| s.key.as_deref() == Some(key))
    }

    /// Requests with `method` so far.
    pub fn count_method(&self, method: Method) -> usize {
        self.count_where(|s| s.method == method)
    }

    /// Requests on any path so far.
    pub fn total(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// Lets every held request through, now and later.
    pub fn release(&self) {
        self.gate.release();
    }
}

/// The simplest counting upstream: a count of side effects, which the test
/// may preset, and the count endpoints `idem soak` reads. Every POST is one
/// side effect (201 `{"id":N}`); `GET /count` answers `{"count":N}`,
/// `GET /stats` `{"stats":{"charges":N}}`, `GET /text` a body that is not
/// JSON, any other GET 404.
pub async fn counting_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    let addr = serve(move |req: Request<Incoming>| {
        let counter = counter.clone();
        async move {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let _ = req.into_body().collect().await;
            let (status, body) = if method == Method::POST {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                (201, format!(r#"{{"id":{n}}}"#))
            } else {
                let n = counter.load(Ordering::SeqCst);
                match path.as_str() {
                    "/count" => (200, format!(r#"{{"count":{n}}}"#)),
                    "/stats" => (200, format!(r#"{{"stats":{{"charges":{n}}}}}"#)),
                    "/text" => (200, "many".to_owned()),
                    _ => (404, "{}".to_owned()),
                }
            };
            let mut response = reply(status, body);
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            Ok::<_, Infallible>(response)
        }
    })
    .await;
    (addr, count)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves HTTP/1.1 (and HTTP/2 with prior knowledge, which is what a TLS
/// front that negotiated `h2` pipes in) on a free 127.0.0.1 port,
/// answering every request with `handle`, until the test's runtime ends.
/// Returns the address.
async fn serve<H, F, E>(handle: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, E>> + Send + 'static,
    E: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        // Until the test's runtime ends.
        let forever = tokio_util::sync::CancellationToken::new();
        while let Some((stream, _)) = idem_serve::accept(&listener, &forever).await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
