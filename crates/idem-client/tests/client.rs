//! The retrying client against real servers on 127.0.0.1: a scripted,
//! counting upstream, `idem gateway` in-process, and `idem chaos` losing
//! responses. No fixed sleeps: conditions are awaited with deadlines or
//! channel signals.

use http::{Extensions, StatusCode};
use idem_chaos::{ChaosOptions, Faults, Methods, RunningChaos};
use idem_client::{Error, GaveUp, IdempotencyKey, IdempotentRetry, ResponseExt, RetryPolicy};
use idem_core::ProblemType;
use idem_gateway::{GatewayOptions, RunningGateway};
use idem_store::MemoryStore;
use idem_testkit::{reply, Gate, Reply};
use idem_tower::IdempotencyConfig;
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------

/// One scripted answer: status and headers, body `{"scripted":STATUS}`.
type Scripted = (u16, Vec<(&'static str, String)>);

#[derive(Default)]
struct State {
    /// Answers of `/script`, consumed in order; 201 once empty.
    script: Mutex<VecDeque<Scripted>>,
}

/// The shared counting upstream ([`idem_testkit::Upstream`]: a real
/// HTTP/1.1 server that counts what it executes), answering:
/// - `/charges`: 201 `{"id":N}`
/// - `/script`:  the next scripted answer, or 201 `{"id":N}`
/// - `/hang`:    never answers
/// - `/slow`:    waits for [`idem_testkit::Upstream::release`], then 201
#[derive(Clone)]
struct Upstream {
    inner: idem_testkit::Upstream,
    state: Arc<State>,
}

impl std::ops::Deref for Upstream {
    type Target = idem_testkit::Upstream;

    fn deref(&self) -> &idem_testkit::Upstream {
        &self.inner
    }
}

impl Upstream {
    async fn start() -> Upstream {
        let state = Arc::new(State::default());
        let answering = state.clone();
        let inner = idem_testkit::Upstream::answering(move |seen, gate| {
            answer(answering.clone(), seen, gate)
        })
        .await;
        Upstream { inner, state }
    }

    /// Executions of `/charges` per idempotency key.
    fn per_key(&self) -> HashMap<String, usize> {
        let mut per_key = HashMap::new();
        for seen in self.seen().into_iter().filter(|s| s.path == "/charges") {
            *per_key.entry(seen.key.unwrap_or_default()).or_default() += 1;
        }
        per_key
    }

    /// The `Idempotency-Key` of every request, in order (`None` if absent).
    fn keys(&self) -> Vec<Option<String>> {
        self.seen().into_iter().map(|s| s.key).collect()
    }

    fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.script.lock().unwrap().extend(answers);
    }
}

async fn answer(state: Arc<State>, seen: idem_testkit::Seen, gate: Gate) -> Reply {
    let n = seen.number_on_path;
    let answer = |status: u16, headers: Vec<(&'static str, String)>, body: String| {
        let mut r = reply(status, body);
        for (name, value) in headers {
            r.headers_mut().insert(name, value.parse().unwrap());
        }
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        Some(r)
    };
    match seen.path.as_str() {
        "/charges" => answer(201, vec![], format!(r#"{{"id":{n}}}"#)),
        "/script" => match state.script.lock().unwrap().pop_front() {
            Some((status, headers)) => {
                answer(status, headers, format!(r#"{{"scripted":{status}}}"#))
            }
            None => answer(201, vec![], format!(r#"{{"id":{n}}}"#)),
        },
        "/hang" => std::future::pending().await,
        "/slow" => {
            gate.hold().await;
            answer(201, vec![], format!(r#"{{"slow":{n}}}"#))
        }
        _ => answer(404, vec![], "{}".into()),
    }
}

// ---------------------------------------------------------------------------
// Gateway, chaos, client
// ---------------------------------------------------------------------------

struct Gateway {
    addr: SocketAddr,
    running: RunningGateway,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.running.stop_token().cancel();
    }
}

async fn gateway(upstream: &Upstream, config: IdempotencyConfig) -> Gateway {
    let running = idem_gateway::start(GatewayOptions {
        idempotency: config,
        shutdown_grace: Duration::from_secs(5),
        sweep_interval: Duration::from_millis(50),
        sweep_batch: 100,
        ..GatewayOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            format!("http://{}", upstream.addr).parse().unwrap(),
            Arc::new(MemoryStore::new()),
        )
    })
    .await
    .expect("gateway starts");
    Gateway {
        addr: running.addr(),
        running,
    }
}

async fn chaos(upstream: SocketAddr, faults: Faults, seed: u64) -> RunningChaos {
    idem_chaos::start(ChaosOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: format!("http://{upstream}").parse().unwrap(),
        upstream_ca: None,
        faults,
        methods: Methods::default(),
        seed: Some(seed),
        log: None,
    })
    .await
    .expect("chaos starts")
}

/// A fast policy for tests: small backoff, seeded jitter.
fn policy() -> RetryPolicy {
    RetryPolicy::default()
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .max_attempts(10)
        .deadline(Duration::from_secs(20))
        .seed(11)
}

/// A plain HTTP client that authenticates as one tenant, as real API
/// clients do (the gateway refuses keyed requests without a credential).
fn http_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_static("Bearer client-test"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client without TLS builds")
}

fn client(policy: RetryPolicy) -> ClientWithMiddleware {
    idem_client::client(http_client(), policy)
}

/// One attempt as the inner end of the chain saw it.
#[derive(Debug, Clone)]
struct Seen {
    key: Option<String>,
    status: Option<u16>,
}

/// Sends what each attempt got to a channel; placed after (inside) the
/// retrying middleware.
struct Recorder(mpsc::UnboundedSender<Seen>);

#[async_trait::async_trait]
impl Middleware for Recorder {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let key = req
            .headers()
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap().to_owned());
        let result = next.run(req, extensions).await;
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        let _ = self.0.send(Seen { key, status });
        result
    }
}

fn recording_client(policy: RetryPolicy) -> (ClientWithMiddleware, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = reqwest_middleware::ClientBuilder::new(http_client())
        .with(IdempotentRetry::new(policy))
        .with(Recorder(tx))
        .build();
    (client, rx)
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    let mut seen = Vec::new();
    while let Ok(s) = rx.try_recv() {
        seen.push(s);
    }
    seen
}

async fn post(
    client: &ClientWithMiddleware,
    url: &str,
    body: &str,
) -> Result<reqwest::Response, Error> {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map_err(Error::from)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn exactly_one_effect_per_operation_through_chaos_and_the_gateway() {
    let upstream = Upstream::start().await;
    let gateway = gateway(&upstream, IdempotencyConfig::default()).await;
    let faults = Faults {
        drop_response: 0.3,
        ..Faults::default()
    };
    let chaos = chaos(gateway.addr, faults, 7).await;
    let client = client(policy());
    let url = format!("http://{}/charges", chaos.addr());
    let operations = 60;
    let mut tasks = Vec::new();
    for i in 0..operations {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            post(&client, &url, &format!(r#"{{"amount":{i}}}"#)).await
        }));
    }
    let mut retried = 0;
    let mut replayed = 0;
    let mut keys = Vec::new();
    for task in tasks {
        let response = task.await.unwrap().expect("every operation succeeds");
        assert_eq!(response.status(), StatusCode::CREATED);
        let op = response.operation().unwrap().clone();
        if op.attempts > 1 {
            retried += 1;
        }
        if op.replayed {
            assert!(response.is_replayed());
            replayed += 1;
        }
        keys.push(op.key.unwrap());
    }
    let summary = chaos.shutdown().await;
    assert!(summary.drop_response > 0, "{summary}");
    assert!(
        retried > 0 && replayed > 0,
        "retried {retried}, replayed {replayed}"
    );
    // Exactly one effect per logical operation, under its own key.
    let per_key = upstream.per_key();
    assert_eq!(per_key.len(), operations, "{per_key:?}");
    assert!(per_key.values().all(|&n| n == 1), "{per_key:?}");
    for key in keys {
        assert_eq!(per_key.get(&key), Some(&1), "key {key}");
        assert!(
            uuid::Uuid::parse_str(&key).is_ok(),
            "generated keys are UUIDs: {key}"
        );
    }
    assert_eq!(upstream.count("/charges"), operations);
}

#[tokio::test]
async fn retry_after_is_honoured_in_seconds_and_as_a_date_with_the_same_key() {
    let upstream = Upstream::start().await;
    let (client, mut rx) = recording_client(policy());
    let url = upstream.url("/script");

    upstream.script([(503, vec![("retry-after", "1".to_owned())])]);
    let started = Instant::now();
    let response = post(&client, &url, "{}").await.unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.operation().unwrap().attempts, 2);
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    let seen = drain(&mut rx);
    assert_eq!(seen.len(), 2);
    assert!(seen[0].key.is_some());
    assert_eq!(seen[0].key, seen[1].key, "one key across retries");
    assert_eq!(response.operation().unwrap().key, seen[0].key);

    // An HTTP-date two seconds ahead: at least one second away, given the
    // date's one-second resolution.
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    upstream.script([(429, vec![("retry-after", at)])]);
    let started = Instant::now();
    let response = post(&client, &url, "{}").await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(response.operation().unwrap().attempts, 2);
}

#[tokio::test]
async fn retryable_statuses_are_retried_and_others_are_not() {
    let upstream = Upstream::start().await;
    let (client, mut rx) = recording_client(policy());
    let url = upstream.url("/script");

    upstream.script([
        (425, vec![]),
        (500, vec![]),
        (502, vec![]),
        (503, vec![]),
        (504, vec![]),
        (408, vec![]),
    ]);
    let response = post(&client, &url, "{}").await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.operation().unwrap().attempts, 7);
    let seen = drain(&mut rx);
    let key = seen[0].key.clone();
    assert!(seen.iter().all(|s| s.key == key), "{seen:?}");

    for status in [400, 401, 403, 404, 409, 410, 412, 422] {
        upstream.script([(status, vec![])]);
        let response = post(&client, &url, "{}").await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.operation().unwrap().attempts, 1, "{status}");
        // The body is still there for the caller.
        assert_eq!(
            response.text().await.unwrap(),
            format!(r#"{{"scripted":{status}}}"#)
        );
    }
    // A replayed response is a stored outcome: retrying cannot change it.
    upstream.script([(500, vec![("idempotent-replayed", "true".to_owned())])]);
    let response = post(&client, &url, "{}").await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let op = response.operation().unwrap();
    assert_eq!((op.attempts, op.replayed), (1, true));
}

#[tokio::test]
async fn keys_are_generated_supplied_or_absent() {
    let upstream = Upstream::start().await;
    let client = client(policy());
    let url = upstream.url("/script");

    // A GET carries no key and is retried all the same.
    upstream.script([(503, vec![])]);
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let op = response.operation().unwrap();
    assert_eq!((op.key.clone(), op.attempts), (None, 2));
    assert_eq!(upstream.keys(), vec![None, None]);

    // A key the caller set as a header is kept (and reported unquoted).
    upstream.script([(503, vec![])]);
    let response = client
        .post(&url)
        .header("idempotency-key", r#""order-42""#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.operation().unwrap().key.as_deref(),
        Some("order-42")
    );
    assert_eq!(
        &upstream.keys()[2..],
        [
            Some(r#""order-42""#.to_owned()),
            Some(r#""order-42""#.to_owned())
        ]
    );

    // ... or as an extension, which also works on methods that get no
    // generated key.
    let response = client
        .put(&url)
        .with_extension(IdempotencyKey::parse(b"put-7").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.operation().unwrap().key.as_deref(), Some("put-7"));
    assert_eq!(upstream.keys().last().unwrap().as_deref(), Some("put-7"));

    // A POST that gets no key is sent once: repeating it could execute it twice.
    let no_keys = idem_client::client(http_client(), policy().key_methods([]));
    upstream.script([(503, vec![])]);
    let response = post(&no_keys, &url, "{}").await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let op = response.operation().unwrap();
    assert_eq!((op.key.clone(), op.attempts), (None, 1));
}

#[tokio::test]
async fn request_in_progress_is_retried_until_the_replay() {
    let upstream = Upstream::start().await;
    let gateway = gateway(&upstream, IdempotencyConfig::default()).await;
    let url = format!("http://{}/slow", gateway.addr);

    // The first request holds the key while the upstream is held.
    let first = tokio::spawn({
        let url = url.clone();
        async move {
            http_client()
                .post(&url)
                .header("idempotency-key", "k-slow")
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let until = Instant::now() + Duration::from_secs(5);
    while upstream.count("/slow") < 1 {
        assert!(
            Instant::now() < until,
            "the first request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let (client, mut rx) = recording_client(policy());
    let second = tokio::spawn(async move {
        client
            .post(&url)
            .with_extension(IdempotencyKey::parse(b"k-slow").unwrap())
            .body("{}")
            .send()
            .await
            .map_err(Error::from)
    });
    let seen = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an attempt in time")
        .unwrap();
    assert_eq!(seen.status, Some(409), "request-in-progress first");
    upstream.release();

    let response = second.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let op = response.operation().unwrap();
    assert!(op.replayed, "{op:?}");
    assert!(op.attempts >= 2, "{op:?}");
    assert_eq!(first.await.unwrap(), StatusCode::CREATED);
    assert_eq!(upstream.count("/slow"), 1);
}

#[tokio::test]
async fn key_reused_is_not_retried() {
    let upstream = Upstream::start().await;
    let gateway = gateway(&upstream, IdempotencyConfig::default()).await;
    let (client, mut rx) = recording_client(policy());
    let url = format!("http://{}/charges", gateway.addr);
    let send = |body: &'static str| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .with_extension(IdempotencyKey::parse(b"k-reused").unwrap())
            .body(body)
            .send()
    };
    let response = send(r#"{"amount":1}"#).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let _ = drain(&mut rx);

    let response = send(r#"{"amount":2}"#).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let op = response.operation().unwrap().clone();
    assert_eq!(op.attempts, 1);
    assert_eq!(op.problem, Some(ProblemType::KeyReused));
    // The problem body is still readable after the middleware looked at it.
    let body: serde_json::Value = response.json_body().await;
    assert!(
        body["type"].as_str().unwrap().ends_with("/key-reused"),
        "{body}"
    );
    assert_eq!(drain(&mut rx).len(), 1, "one attempt reached the wire");
    assert_eq!(upstream.count("/charges"), 1);
}

#[tokio::test]
async fn outcome_unknown_is_its_own_error() {
    let upstream = Upstream::start().await;
    let mut config = IdempotencyConfig::default();
    config.upstream_timeout = Duration::from_millis(200);
    let gateway = gateway(&upstream, config).await;
    let url = format!("http://{}/hang", gateway.addr);

    // 504 upstream-timeout, retried, then 409 outcome-unknown.
    let error = post(&client(policy()), &url, "{}").await.unwrap_err();
    assert!(error.is_outcome_unknown(), "{error}");
    assert_eq!(error.attempts(), 2);
    let key = error.key().expect("the key to reconcile").to_owned();
    assert!(error.to_string().contains(&key), "{error}");
    let Error::OutcomeUnknown { detail, .. } = &error else {
        unreachable!()
    };
    assert!(detail.is_some());
    assert_eq!(upstream.count("/hang"), 1, "never executed twice");

    // With no retry left, the 504 upstream-timeout says the same.
    let error = post(&client(policy().max_attempts(1)), &url, "{}")
        .await
        .unwrap_err();
    assert!(error.is_outcome_unknown(), "{error}");
    assert_eq!(error.attempts(), 1);
    assert_eq!(upstream.count("/hang"), 2);
}

#[tokio::test]
async fn the_deadline_is_respected() {
    let upstream = Upstream::start().await;
    let slack = Duration::from_millis(700);

    // An attempt still running at the deadline is abandoned.
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let error = post(
        &client(policy().deadline(deadline)),
        &upstream.url("/hang"),
        "{}",
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert!(error.is_deadline() && error.is_timeout(), "{error}");
    assert!(took >= deadline && took < deadline + slack, "{took:?}");

    // Retryable answers are retried until the deadline, and the last one is
    // returned.
    upstream.script((0..10_000).map(|_| (503, vec![])));
    let deadline = Duration::from_millis(400);
    let started = Instant::now();
    let response = post(
        &client(policy().max_attempts(10_000).deadline(deadline)),
        &upstream.url("/script"),
        "{}",
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.operation().unwrap().attempts > 2);
    assert!(took < deadline + slack, "{took:?}");
    upstream.state.script.lock().unwrap().clear();

    // A Retry-After beyond the deadline ends the operation at once.
    upstream.script([(503, vec![("retry-after", "30".to_owned())])]);
    let started = Instant::now();
    let response = post(
        &client(policy().deadline(Duration::from_secs(5))),
        &upstream.url("/script"),
        "{}",
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.operation().unwrap().attempts, 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The attempt timeout cuts each attempt; the attempts run out first.
    let before = upstream.count("/hang");
    let error = post(
        &client(
            policy()
                .attempt_timeout(Duration::from_millis(100))
                .max_attempts(3),
        ),
        &upstream.url("/hang"),
        "{}",
    )
    .await
    .unwrap_err();
    assert!(error.is_exhausted() && error.is_timeout(), "{error}");
    assert_eq!(error.attempts(), 3);
    assert_eq!(upstream.count("/hang") - before, 3);
}

#[tokio::test]
async fn connection_errors_are_retried_then_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let error = post(
        &client(policy().max_attempts(3)),
        &format!("http://{closed}/charges"),
        "{}",
    )
    .await
    .unwrap_err();
    assert!(error.is_exhausted() && error.is_connect(), "{error:?}");
    assert_eq!(error.attempts(), 3);
    assert!(error.key().is_some());
    let Error::NoResponse { reason, .. } = error else {
        unreachable!()
    };
    assert_eq!(reason, GaveUp::MaxAttempts);
}

/// `response.json()` needs reqwest's `json` feature; this reads the body by
/// hand.
trait JsonBody {
    async fn json_body(self) -> serde_json::Value;
}

impl JsonBody for reqwest::Response {
    async fn json_body(self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

#[tokio::test]
async fn a_terminal_conflict_ends_the_operation_at_once() {
    let upstream = Upstream::start().await;
    // `{"id":N}` is over this limit: streamed to the first caller, stored
    // without a body, so a retry gets 409 response-not-replayable.
    let mut config = IdempotencyConfig::default();
    config.max_response_body = 4;
    let gateway = gateway(&upstream, config).await;
    let (client, mut rx) = recording_client(policy().max_attempts(5));
    let url = format!("http://{}/charges", gateway.addr);
    let send = || {
        client
            .post(&url)
            .header("content-type", "application/json")
            .with_extension(IdempotencyKey::parse(b"k-terminal").unwrap())
            .body(r#"{"amount":1}"#)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::CREATED);
    let _ = drain(&mut rx);

    let response = send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(response.headers().get("retry-after").is_none());
    let op = response.operation().unwrap().clone();
    assert_eq!(op.problem, Some(ProblemType::ResponseNotReplayable));
    assert_eq!(op.attempts, 1, "a terminal 409 is not retried");
    let body: serde_json::Value = response.json_body().await;
    assert_eq!(body["retryable"], false, "{body}");
    assert_eq!(drain(&mut rx).len(), 1, "one attempt reached the wire");
    assert_eq!(upstream.count("/charges"), 1);
}
