//! Shared harness for the gateway's contract tests: a real upstream HTTP
//! server that counts side effects, an in-process gateway, a small client,
//! and a deadline-bounded polling helper. No fixed sleeps: tests wait on
//! conditions.

#![allow(dead_code, missing_docs)]

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use idem_core::scope::Resolved;
use idem_core::{IdempotencyKey, Record, RecordId, RecordState, ScopeRule};
use idem_gateway::{GatewayOptions, RunningGateway};
use idem_store::{
    Claim, ClaimOutcome, Completion, MemoryStore, SqliteOptions, SqliteStore, Store, StoreError,
    SweepReport, Write,
};
use idem_testkit::{reply, Gate, Reply, Seen};
use idem_tower::IdempotencyConfig;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any single client exchange may take before the test fails.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default deadline for `wait_until`.
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);
/// A date no real clock produces, to tell the upstream's `Date` apart.
pub(crate) const UPSTREAM_DATE: &str = "Wed, 01 Jan 2020 00:00:00 GMT";

// ---------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------

/// Polls `condition` every few milliseconds until it holds; panics with
/// `what` once `deadline` has passed.
pub(crate) async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= until {
            panic!("timed out after {deadline:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------

/// The shared counting upstream ([`idem_testkit::Upstream`]: a real
/// HTTP/1.1 server on 127.0.0.1:0 that counts side effects per path),
/// answering by path (any method):
/// - `/charges...` : 201 `{"charge":N}` + `Set-Cookie`, `Date`,
///   `X-RateLimit-Remaining`, `X-Custom: yes`
/// - `/status/NNN` : status NNN, body `{"status":NNN}`
/// - `/slow`       : counts, waits for [`Upstream::release`], then 201 `{"slow":N}`
/// - `/big/N`      : 201 with a body of N bytes
/// - `/hang`       : counts, never answers
/// - `/reset`      : reads the request, drops the connection unanswered
/// - `/flaky`      : first call like `/reset`, later calls 201 `{"flaky":N}`
/// - `/stream`     : 200, sends `first\n`, waits for the release, sends `second\n`
/// - anything else : 200 `ok`
pub(crate) struct Upstream(idem_testkit::Upstream);

impl std::ops::Deref for Upstream {
    type Target = idem_testkit::Upstream;

    fn deref(&self) -> &idem_testkit::Upstream {
        &self.0
    }
}

impl Upstream {
    pub(crate) async fn start() -> Upstream {
        Upstream(idem_testkit::Upstream::answering(answer).await)
    }

    /// Waits until `path` has been executed at least `n` times.
    pub(crate) async fn wait_for_count(&self, path: &str, n: usize) {
        wait_until(
            DEADLINE,
            &format!("the upstream executed {path} {n} time(s)"),
            || async { self.count(path) >= n },
        )
        .await;
    }
}

async fn answer(seen: Seen, gate: Gate) -> Reply {
    let path = seen.path.as_str();
    let n = seen.number_on_path;
    if path.starts_with("/charges") {
        let mut r = reply(201, format!(r#"{{"charge":{n}}}"#));
        let h = r.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert(
            "set-cookie",
            HeaderValue::from_static("session=secret; HttpOnly"),
        );
        h.insert("date", HeaderValue::from_static(UPSTREAM_DATE));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("99"));
        h.insert("x-custom", HeaderValue::from_static("yes"));
        return Some(r);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().expect("/status/NNN");
        let mut r = reply(code, format!(r#"{{"status":{code}}}"#));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        return Some(r);
    }
    if let Some(len) = path.strip_prefix("/big/") {
        let len: usize = len.parse().expect("/big/N");
        let body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        return Some(reply(201, body));
    }
    match path {
        "/slow" => {
            gate.hold().await;
            Some(reply(201, format!(r#"{{"slow":{n}}}"#)))
        }
        "/hang" => std::future::pending().await,
        "/reset" => None,
        "/flaky" if n == 1 => None,
        "/flaky" => Some(reply(201, format!(r#"{{"flaky":{n}}}"#))),
        "/stream" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"first\n")).await;
                gate.hold().await;
                let _ = tx.send(Bytes::from_static(b"second\n")).await;
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            Some(Response::new(StreamBody::new(stream).boxed_unsync()))
        }
        _ => Some(reply(200, "ok")),
    }
}

// ---------------------------------------------------------------------------
// Stores
// ---------------------------------------------------------------------------

/// Which engine a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Memory,
    Sqlite,
}

/// A store and whatever must outlive it (the SQLite file's directory).
#[derive(Clone)]
pub(crate) struct TestStore {
    pub store: Arc<dyn Store>,
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl TestStore {
    pub(crate) fn new(engine: Engine) -> TestStore {
        match engine {
            Engine::Memory => TestStore {
                store: Arc::new(MemoryStore::new()),
                _dir: None,
            },
            Engine::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let store =
                    SqliteStore::open(&dir.path().join("idem.db"), SqliteOptions::default())
                        .expect("open sqlite store");
                TestStore {
                    store: Arc::new(store),
                    _dir: Some(Arc::new(dir)),
                }
            }
        }
    }

    pub(crate) fn from(store: Arc<dyn Store>) -> TestStore {
        TestStore { store, _dir: None }
    }

    pub(crate) async fn get(&self, id: &RecordId) -> Option<Record> {
        self.store.get(id).await.expect("store.get")
    }

    pub(crate) async fn state(&self, id: &RecordId) -> Option<RecordState> {
        self.get(id).await.map(|r| r.state)
    }

    pub(crate) async fn wait_for_state(&self, id: &RecordId, state: RecordState) {
        wait_until(
            DEADLINE,
            &format!("the record of {:?} is {state:?}", id.key),
            || async { self.state(id).await == Some(state) },
        )
        .await;
    }
}

/// The credential every test request carries unless it names its own
/// `Authorization` or asks for none ([`Req::anonymous`]): keyed requests
/// without one are refused by default.
pub(crate) const TEST_CREDENTIAL: &str = "Bearer test-tenant";

/// The record id of `key` sent with the default test credential, under the
/// default scope rule (a hash of `Authorization`).
pub(crate) fn tenant_id(key: &str) -> RecordId {
    scoped_id(
        &ScopeRule::default(),
        &[("authorization", TEST_CREDENTIAL)],
        key,
    )
}

/// The record id of `key` sent with `headers`, under `rule`.
pub(crate) fn scoped_id(rule: &ScopeRule, headers: &[(&str, &str)], key: &str) -> RecordId {
    let mut map = http::HeaderMap::new();
    for (n, v) in headers {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let scope = match rule.resolve(&map, idem_core::Timestamp::now()) {
        Ok(Resolved::Scope(scope)) => scope,
        other => panic!("no scope for {headers:?}: {other:?}"),
    };
    RecordId {
        scope,
        key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
    }
}

/// A store that fails every operation, as an unreachable database would.
pub(crate) struct FailingStore;

fn injected(op: &'static str) -> StoreError {
    StoreError::new(
        "failing",
        op,
        "injected failure: the store cannot be reached",
    )
}

#[async_trait::async_trait]
impl Store for FailingStore {
    async fn claim(&self, _claim: Claim) -> Result<ClaimOutcome, StoreError> {
        Err(injected("claim"))
    }
    async fn renew(
        &self,
        _id: &RecordId,
        _token: u64,
        _now: idem_core::Timestamp,
        _lease_until: idem_core::Timestamp,
    ) -> Result<Write, StoreError> {
        Err(injected("renew"))
    }
    async fn complete(
        &self,
        _id: &RecordId,
        _token: u64,
        _completion: Completion,
    ) -> Result<Write, StoreError> {
        Err(injected("complete"))
    }
    async fn mark_unknown(
        &self,
        _id: &RecordId,
        _token: u64,
        _now: idem_core::Timestamp,
    ) -> Result<Write, StoreError> {
        Err(injected("mark_unknown"))
    }
    async fn release(&self, _id: &RecordId, _token: u64) -> Result<Write, StoreError> {
        Err(injected("release"))
    }
    async fn get(&self, _id: &RecordId) -> Result<Option<Record>, StoreError> {
        Err(injected("get"))
    }
    async fn sweep(
        &self,
        _now: idem_core::Timestamp,
        _limit: usize,
    ) -> Result<SweepReport, StoreError> {
        Err(injected("sweep"))
    }
    async fn operate(
        &self,
        _id: &RecordId,
        _token: u64,
        _action: idem_core::operator::OperatorAction,
        _now: idem_core::Timestamp,
    ) -> Result<
        Result<idem_core::operator::Operated, idem_core::operator::OperatorRefusal>,
        StoreError,
    > {
        Err(injected("operate"))
    }
    async fn list(&self, _query: idem_store::ListQuery) -> Result<Vec<Record>, StoreError> {
        Err(injected("list"))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(injected("ping"))
    }
    fn engine(&self) -> &'static str {
        "failing"
    }
}

// ---------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------

/// A gateway running in-process on 127.0.0.1:0 with an admin listener.
pub(crate) struct Gateway {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub store: TestStore,
    pub client: Client,
    running: Option<RunningGateway>,
}

impl Gateway {
    pub(crate) async fn start(
        upstream: Uri,
        config: IdempotencyConfig,
        store: TestStore,
    ) -> Gateway {
        let tls = idem_gateway::upstream_tls::UpstreamTls::default();
        Gateway::start_with_tls(upstream, config, store, tls).await
    }

    /// [`Gateway::start`], reaching the upstream as `upstream_tls` says.
    pub(crate) async fn start_with_tls(
        upstream: Uri,
        config: IdempotencyConfig,
        store: TestStore,
        upstream_tls: idem_gateway::upstream_tls::UpstreamTls,
    ) -> Gateway {
        Gateway::start_customised(upstream, config, store, |options| {
            options.upstream_tls = upstream_tls;
        })
        .await
    }

    /// [`Gateway::start`] with the options as `customise` leaves them
    /// (e.g. another `policy_path`).
    pub(crate) async fn start_customised(
        upstream: Uri,
        config: IdempotencyConfig,
        store: TestStore,
        customise: impl FnOnce(&mut GatewayOptions),
    ) -> Gateway {
        let mut options = GatewayOptions {
            admin: Some("127.0.0.1:0".parse().unwrap()),
            idempotency: config,
            shutdown_grace: Duration::from_secs(5),
            sweep_interval: Duration::from_millis(50),
            sweep_batch: 100,
            ..GatewayOptions::new(
                "127.0.0.1:0".parse().unwrap(),
                upstream,
                store.store.clone(),
            )
        };
        customise(&mut options);
        let running = idem_gateway::start(options).await.expect("gateway starts");
        let addr = running.addr();
        Gateway {
            addr,
            admin_addr: running.admin_addr().expect("admin enabled"),
            store,
            client: Client::new(addr),
            running: Some(running),
        }
    }

    pub(crate) async fn send(&self, req: Req) -> Resp {
        self.client.send(req).await
    }

    /// Takes the running gateway out, e.g. to shut it down from a task.
    pub(crate) fn take_running(&mut self) -> RunningGateway {
        self.running.take().expect("gateway still running")
    }

    pub(crate) async fn admin_get(&self, path: &str) -> Resp {
        Client::new(self.admin_addr).send(Req::get(path)).await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.stop_token().cancel();
        }
    }
}

/// An upstream and a gateway in front of it, with `config`, on `engine`.
pub(crate) async fn setup_on(engine: Engine, config: IdempotencyConfig) -> (Upstream, Gateway) {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(upstream.uri(), config, TestStore::new(engine)).await;
    (upstream, gateway)
}

/// An upstream and a gateway in front of it on the memory store, run with
/// the settings of the configuration file `toml` (parsed and checked as
/// `idem gateway --config` does).
pub(crate) async fn setup_from_toml(toml: &str) -> (Upstream, Gateway) {
    let settings = idem_gateway::config::parse(toml)
        .and_then(|file| file.into_settings())
        .unwrap_or_else(|e| panic!("test configuration refused: {e}"));
    let upstream = Upstream::start().await;
    let policy_path = settings.policy_path.clone();
    let gateway = Gateway::start_customised(
        upstream.uri(),
        settings.idempotency,
        TestStore::new(Engine::Memory),
        |options| options.policy_path = policy_path,
    )
    .await;
    (upstream, gateway)
}

/// [`setup_on`] with the memory store.
pub(crate) async fn setup(config: IdempotencyConfig) -> (Upstream, Gateway) {
    setup_on(Engine::Memory, config).await
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// A request to build: method, path, raw headers, body.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// Send [`TEST_CREDENTIAL`] unless an `Authorization` header is given.
    pub credential: bool,
}

impl Req {
    pub(crate) fn new(method: Method, path: &str) -> Req {
        Req {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
            credential: true,
        }
    }
    /// Without the default test credential.
    pub(crate) fn anonymous(mut self) -> Req {
        self.credential = false;
        self
    }
    pub(crate) fn post(path: &str) -> Req {
        Req::new(Method::POST, path)
    }
    pub(crate) fn patch(path: &str) -> Req {
        Req::new(Method::PATCH, path)
    }
    pub(crate) fn get(path: &str) -> Req {
        Req::new(Method::GET, path)
    }
    /// Adds an `Idempotency-Key` header (appended: call twice for two).
    pub(crate) fn key(self, key: impl AsRef<[u8]>) -> Req {
        self.header("idempotency-key", key)
    }
    pub(crate) fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Req {
        self.headers.push((
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value.as_ref()).unwrap(),
        ));
        self
    }
    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Req {
        self.body = body.into();
        self
    }
    /// A JSON body with `Content-Type: application/json`.
    pub(crate) fn json(self, body: &str) -> Req {
        self.header("content-type", "application/json")
            .body(Bytes::copy_from_slice(body.as_bytes()))
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub(crate) fn is_replay(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }
    /// Whether this is a problem response with this slug.
    pub(crate) fn is_problem(&self, slug: &str) -> bool {
        self.header("content-type") == Some(idem_core::problem::PROBLEM_CONTENT_TYPE)
            && serde_json::from_slice::<serde_json::Value>(&self.body)
                .ok()
                .and_then(|v| v["type"].as_str().map(|t| t.ends_with(&format!("/{slug}"))))
                .unwrap_or(false)
    }
    /// Asserts an RFC 9457 problem with `slug` and `status`, and returns its
    /// JSON body.
    #[track_caller]
    pub(crate) fn assert_problem(&self, status: u16, slug: &str) -> serde_json::Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status} {slug}, got {} {:?} {}",
            self.status,
            self.headers,
            self.text()
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "problem content type; body {}",
            self.text()
        );
        let v = self.json();
        let ty = v["type"].as_str().expect("problem has a type");
        assert!(
            ty.ends_with(&format!("/{slug}")),
            "type {ty} should end with /{slug}"
        );
        assert_eq!(v["status"], status, "status field of {v}");
        assert!(v["title"].is_string(), "title in {v}");
        assert!(v["detail"].is_string(), "detail in {v}");
        v
    }
}

/// A pooled HTTP/1.1 client to one address.
#[derive(Clone)]
pub(crate) struct Client {
    addr: SocketAddr,
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn build(&self, req: Req) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(req.method)
            .uri(format!("http://{}{}", self.addr, req.path));
        let has_auth = req
            .headers
            .iter()
            .any(|(n, _)| n == http::header::AUTHORIZATION);
        if req.credential && !has_auth {
            builder = builder.header(http::header::AUTHORIZATION, TEST_CREDENTIAL);
        }
        for (name, value) in req.headers {
            builder = builder.header(name, value);
        }
        builder.body(Full::new(req.body)).unwrap()
    }

    /// Sends and reads the whole response.
    pub(crate) async fn send(&self, req: Req) -> Resp {
        let what = format!("{} {}", req.method, req.path);
        let exchange = async {
            let response = self
                .inner
                .request(self.build(req))
                .await
                .expect("request sent");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("response body").to_bytes();
            Resp {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| panic!("{what}: no response within {EXCHANGE_TIMEOUT:?}"))
    }

    /// Sends and returns the response with its body unread (for streaming).
    pub(crate) async fn send_streaming(&self, req: Req) -> Response<Incoming> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.inner.request(self.build(req)))
            .await
            .expect("response head in time")
            .expect("request sent")
    }
}

// ---------------------------------------------------------------------------
// Raw TCP
// ---------------------------------------------------------------------------

/// A raw HTTP/1.1 request's bytes, with [`TEST_CREDENTIAL`] unless
/// `headers` name an `Authorization`.
pub(crate) fn raw_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
    {
        out.push_str(&format!("authorization: {TEST_CREDENTIAL}\r\n"));
    }
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Opens a connection and writes `bytes`; the caller decides when to drop it.
pub(crate) async fn raw_send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// Writes `bytes` (which should say `connection: close`) and reads until
/// the server closes; returns the status code and the raw response text.
pub(crate) async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut stream = raw_send(addr, bytes).await;
    let mut buf = Vec::new();
    tokio::time::timeout(EXCHANGE_TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .expect("raw response in time")
        .expect("raw read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// A local port nothing listens on.
pub(crate) async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}
