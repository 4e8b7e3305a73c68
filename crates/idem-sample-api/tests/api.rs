//! The sample API over real HTTP: each flaw's defining behaviour, and the
//! behaviour every mode shares. No fixed sleeps: tests wait on conditions
//! with deadlines, and races are opened by the server's latency.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use idem_sample_api::{Flaw, RunningSampleApi, SampleApiOptions};
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Latency for tests that only need executions to happen.
const FAST: Duration = Duration::from_millis(20);
/// Latency for tests that need two requests to overlap, or a client to
/// give up before the payment is done: far above scheduling noise.
const SLOW: Duration = Duration::from_millis(300);
/// How long any one exchange, or any wait for a condition, may take.
const DEADLINE: Duration = Duration::from_secs(10);

const ALICE: &str = "Bearer alice";
const BOB: &str = "Bearer bob";
const PAY: &str = r#"{"amount":1000,"currency":"usd"}"#;
const DECLINE: &str = r#"{"amount":2000000,"currency":"usd"}"#;

/// The modes that keep one stored response per (tenant, key) and compare
/// payloads: everything but the ones these properties are the flaw of.
const FINGERPRINTING: [Flaw; 4] = [
    Flaw::None,
    Flaw::CheckThenAct,
    Flaw::UnscopedKeys,
    Flaw::StoreIfDelivered,
];
const SCOPED: [Flaw; 4] = [
    Flaw::None,
    Flaw::CheckThenAct,
    Flaw::PayloadIgnored,
    Flaw::StoreIfDelivered,
];
const LOCKING: [Flaw; 4] = [
    Flaw::None,
    Flaw::UnscopedKeys,
    Flaw::PayloadIgnored,
    Flaw::StoreIfDelivered,
];
/// Modes that honour keys at all.
const KEYED: [Flaw; 5] = [
    Flaw::None,
    Flaw::CheckThenAct,
    Flaw::UnscopedKeys,
    Flaw::PayloadIgnored,
    Flaw::StoreIfDelivered,
];

async fn start(flaw: Flaw, latency: Duration) -> RunningSampleApi {
    let mut options = SampleApiOptions::new(flaw);
    options.latency = latency;
    idem_sample_api::start(options)
        .await
        .expect("the sample API starts")
}

/// One answer, read whole.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    /// The payment id of a 201.
    fn id(&self) -> String {
        assert_eq!(self.status, StatusCode::CREATED, "{self:?}");
        self.json()["id"].as_str().expect("an id").to_owned()
    }

    /// The problem type of an `application/problem+json` answer.
    fn problem_type(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        self.json()["type"].as_str().expect("a type").to_owned()
    }
}

/// A request, built up by the helpers below.
struct Call {
    method: Method,
    path: &'static str,
    tenant: Option<&'static str>,
    key: Option<String>,
    body: String,
}

fn pay(tenant: &'static str, key: Option<&str>, body: &str) -> Call {
    Call {
        method: Method::POST,
        path: "/payments",
        tenant: Some(tenant),
        key: key.map(str::to_owned),
        body: body.to_owned(),
    }
}

fn get(path: &'static str, tenant: Option<&'static str>) -> Call {
    Call {
        method: Method::GET,
        path,
        tenant,
        key: None,
        body: String::new(),
    }
}

impl Call {
    fn request(&self, addr: SocketAddr) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.path)
            .header("host", addr.to_string());
        if let Some(tenant) = self.tenant {
            builder = builder.header("authorization", tenant);
        }
        if let Some(key) = &self.key {
            builder = builder.header("idempotency-key", key.as_str());
        }
        if !self.body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        builder
            .body(Full::new(Bytes::from(self.body.clone())))
            .expect("a valid request")
    }

    /// Sends it on a connection of its own and reads the whole answer.
    async fn send(self, api: &RunningSampleApi) -> Reply {
        let addr = api.addr();
        let exchange = async {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(connection);
            let response = sender
                .send_request(self.request(addr))
                .await
                .expect("a response");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("the body").to_bytes();
            Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        };
        tokio::time::timeout(DEADLINE, exchange)
            .await
            .expect("the exchange finishes in time")
    }

    /// Sends it, waits `patience` for an answer that cannot come that soon,
    /// and hangs up: a client timing out.
    async fn send_and_hang_up(self, api: &RunningSampleApi, patience: Duration) {
        let mut raw = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            self.method,
            self.path,
            api.addr(),
            self.body.len()
        );
        if let Some(tenant) = self.tenant {
            raw.push_str(&format!("authorization: {tenant}\r\n"));
        }
        if let Some(key) = &self.key {
            raw.push_str(&format!("idempotency-key: {key}\r\n"));
        }
        raw.push_str("\r\n");
        raw.push_str(&self.body);
        let mut stream = TcpStream::connect(api.addr()).await.expect("connect");
        stream.write_all(raw.as_bytes()).await.expect("send");
        let mut buf = [0u8; 1024];
        let early = tokio::time::timeout(patience, stream.read(&mut buf)).await;
        assert!(early.is_err(), "the API answered before the client gave up");
        drop(stream);
    }
}

/// Polls `condition` until it holds; panics once the deadline has passed.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + DEADLINE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `call` again until it is no longer refused as in progress (idem's
/// layer stores an outcome a moment after the payment counter moves).
async fn send_until_settled(api: &RunningSampleApi, call: impl Fn() -> Call) -> Reply {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let reply = call().send(api).await;
        if reply.status != StatusCode::CONFLICT {
            return reply;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "still in progress: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn count(api: &RunningSampleApi, tenant: Option<&'static str>) -> u64 {
    let reply = get("/payments/count", tenant).send(api).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.json()["count"].as_u64().expect("a count")
}

// ---------------------------------------------------------------------------
// Shared behaviour
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_executes_and_is_counted_per_tenant() {
    for flaw in Flaw::ALL {
        let api = start(flaw, FAST).await;
        let reply = pay(ALICE, Some("p1"), PAY).send(&api).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{flaw}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let body = reply.json();
        assert_eq!(body["id"], "pay_1", "{flaw}");
        assert_eq!(body["amount"], 1000, "{flaw}");
        assert_eq!(body["currency"], "usd", "{flaw}");
        assert_eq!(body["status"], "succeeded", "{flaw}");
        assert!(!reply.replayed(), "{flaw}");
        pay(BOB, None, PAY).send(&api).await.id();
        pay(BOB, None, PAY).send(&api).await.id();
        assert_eq!(api.payments(), 3, "{flaw}");
        assert_eq!(count(&api, Some(ALICE)).await, 1, "{flaw}");
        assert_eq!(count(&api, Some(BOB)).await, 2, "{flaw}");
        assert_eq!(count(&api, Some("Bearer carol")).await, 0, "{flaw}");
        assert_eq!(count(&api, None).await, 3, "{flaw}");
        api.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_payments_are_refused_without_executing() {
    let bad_bodies = [
        "not json",
        "[1000]",
        r#"{"currency":"usd"}"#,
        r#"{"amount":0}"#,
        r#"{"amount":-5}"#,
        r#"{"amount":10.5}"#,
        r#"{"amount":"1000"}"#,
    ];
    for flaw in Flaw::ALL {
        let api = start(flaw, FAST).await;
        for (i, body) in bad_bodies.iter().enumerate() {
            // A key of its own each: under idem's layer the 400 is the
            // handler's answer and is stored for its key.
            let key = format!("bad-{i}");
            let reply = pay(ALICE, Some(&key), body).send(&api).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{flaw} {body}");
            assert!(
                reply.problem_type().ends_with("/invalid-payment"),
                "{flaw} {body}: {reply:?}"
            );
        }
        let mut anonymous = pay(ALICE, Some("anon"), PAY);
        anonymous.tenant = None;
        let reply = anonymous.send(&api).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{flaw}");
        // Behind idem's layer the layer refuses it first: a keyed request
        // without a credential has no tenant to be scoped to.
        assert!(
            reply.problem_type().ends_with("/unauthorized")
                || reply.problem_type().ends_with("/credential-required"),
            "{flaw}: {reply:?}"
        );
        assert_eq!((api.payments(), api.declines()), (0, 0), "{flaw}");
        api.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_keys_are_refused_where_keys_are_honoured() {
    let long = "k".repeat(256);
    for flaw in KEYED {
        let api = start(flaw, FAST).await;
        for key in ["", "two words", long.as_str()] {
            let reply = pay(ALICE, Some(key), PAY).send(&api).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{flaw} {key:?}");
            assert!(
                reply.problem_type().ends_with("/invalid-key"),
                "{flaw}: {reply:?}"
            );
        }
        // The longest valid key is fine.
        pay(ALICE, Some(&"k".repeat(255)), PAY)
            .send(&api)
            .await
            .id();
        assert_eq!(api.payments(), 1, "{flaw}");
        api.shutdown().await;
    }
    // Ignoring the header means ignoring its validity too.
    let api = start(Flaw::NoIdempotency, FAST).await;
    pay(ALICE, Some("two words"), PAY).send(&api).await.id();
    assert_eq!(api.payments(), 1);
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_are_problems() {
    for flaw in [Flaw::None, Flaw::CheckThenAct] {
        let api = start(flaw, FAST).await;
        let mut call = pay(ALICE, Some("x"), PAY);
        call.path = "/charges";
        let reply = call.send(&api).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{flaw}");
        assert!(reply.problem_type().ends_with("/not-found"), "{flaw}");
        let reply = get("/payments", Some(ALICE)).send(&api).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{flaw}");
        assert_eq!(reply.header("allow"), Some("POST"), "{flaw}");
        assert_eq!(api.payments(), 0, "{flaw}");
        api.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_client_hangs_up_is_processed_anyway() {
    for flaw in Flaw::ALL {
        let api = start(flaw, SLOW).await;
        pay(ALICE, Some("gone"), PAY)
            .send_and_hang_up(&api, SLOW / 3)
            .await;
        wait_until(&format!("{flaw}: the payment completes"), || async {
            api.payments() == 1
        })
        .await;
        api.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_execute_and_are_replayed_where_keys_are_honoured() {
    for flaw in KEYED {
        let api = start(flaw, FAST).await;
        let first = pay(ALICE, Some("d1"), DECLINE).send(&api).await;
        assert_eq!(first.status, StatusCode::PAYMENT_REQUIRED, "{flaw}");
        assert_eq!(first.json()["error"], "card_declined", "{flaw}");
        assert_eq!(first.json()["decline_id"], "dec_1", "{flaw}");
        let again = pay(ALICE, Some("d1"), DECLINE).send(&api).await;
        assert_eq!(again.status, StatusCode::PAYMENT_REQUIRED, "{flaw}");
        assert_eq!(again.json()["decline_id"], "dec_1", "{flaw}");
        assert!(again.replayed(), "{flaw}");
        assert_eq!((api.declines(), api.payments()), (1, 0), "{flaw}");
        api.shutdown().await;
    }
    let api = start(Flaw::NoIdempotency, FAST).await;
    let first = pay(ALICE, Some("d1"), DECLINE).send(&api).await;
    let again = pay(ALICE, Some("d1"), DECLINE).send(&api).await;
    assert_eq!(first.json()["decline_id"], "dec_1");
    assert_eq!(again.json()["decline_id"], "dec_2");
    assert_eq!(api.declines(), 2);
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_retries_are_replayed_where_keys_are_honoured() {
    for flaw in KEYED {
        let api = start(flaw, FAST).await;
        let first = pay(ALICE, Some("k1"), PAY).send(&api).await;
        // The same payment, re-serialised: not a change.
        let reordered = r#"{ "currency": "usd", "amount": 1000 }"#;
        let again = pay(ALICE, Some("k1"), reordered).send(&api).await;
        assert_eq!(again.status, StatusCode::CREATED, "{flaw}: {again:?}");
        assert_eq!(again.id(), first.id(), "{flaw}");
        assert_eq!(again.body, first.body, "{flaw}");
        assert!(again.replayed(), "{flaw}");
        assert_eq!(again.header("idempotency-key"), Some("k1"), "{flaw}");
        assert_eq!(first.header("idempotency-key"), Some("k1"), "{flaw}");
        assert_eq!(api.payments(), 1, "{flaw}");
        api.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_payload_under_a_used_key_is_refused_where_fingerprinted() {
    for flaw in FINGERPRINTING {
        let api = start(flaw, FAST).await;
        pay(ALICE, Some("k1"), PAY).send(&api).await.id();
        let changed = pay(ALICE, Some("k1"), r#"{"amount":5000,"currency":"usd"}"#)
            .send(&api)
            .await;
        assert_eq!(changed.status, StatusCode::UNPROCESSABLE_ENTITY, "{flaw}");
        assert!(
            changed.problem_type().ends_with("/key-reused"),
            "{flaw}: {changed:?}"
        );
        assert_eq!(api.payments(), 1, "{flaw}");
        api.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_per_tenant_where_scoped() {
    for flaw in SCOPED {
        let api = start(flaw, FAST).await;
        let alice = pay(ALICE, Some("shared"), PAY).send(&api).await;
        let bob = pay(BOB, Some("shared"), PAY).send(&api).await;
        assert_ne!(bob.id(), alice.id(), "{flaw}");
        assert!(!bob.replayed(), "{flaw}");
        assert_eq!(api.payments(), 2, "{flaw}");
        assert_eq!(count(&api, Some(BOB)).await, 1, "{flaw}");
        api.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_duplicate_is_refused_where_keys_are_locked() {
    for flaw in LOCKING {
        let api = start(flaw, SLOW).await;
        let (a, b) = tokio::join!(
            pay(ALICE, Some("race"), PAY).send(&api),
            pay(ALICE, Some("race"), PAY).send(&api)
        );
        let (winner, loser) = if a.status == StatusCode::CREATED && !a.replayed() {
            (a, b)
        } else {
            (b, a)
        };
        winner.id();
        if loser.status == StatusCode::CONFLICT {
            assert!(
                loser.problem_type().ends_with("/request-in-progress"),
                "{flaw}: {loser:?}"
            );
            assert_eq!(loser.header("retry-after"), Some("1"), "{flaw}");
            assert_eq!(loser.header("idempotency-key"), Some("race"), "{flaw}");
        } else {
            assert_eq!(loser.id(), winner.id(), "{flaw}");
            assert!(loser.replayed(), "{flaw}");
        }
        assert_eq!(api.payments(), 1, "{flaw}");
        api.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_client_timeout_is_replayed_where_outcomes_are_kept() {
    for flaw in [
        Flaw::None,
        Flaw::CheckThenAct,
        Flaw::UnscopedKeys,
        Flaw::PayloadIgnored,
    ] {
        let api = start(flaw, SLOW).await;
        pay(ALICE, Some("timeout"), PAY)
            .send_and_hang_up(&api, SLOW / 3)
            .await;
        wait_until(&format!("{flaw}: the payment completes"), || async {
            api.payments() == 1
        })
        .await;
        let retry = send_until_settled(&api, || pay(ALICE, Some("timeout"), PAY)).await;
        assert_eq!(retry.id(), "pay_1", "{flaw}");
        assert!(retry.replayed(), "{flaw}");
        assert_eq!(api.payments(), 1, "{flaw}");
        api.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting() {
    let api = start(Flaw::None, FAST).await;
    let addr = api.addr();
    assert_eq!(api.url(), format!("http://{addr}"));
    api.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------
// Each flaw's defining bug
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_idempotency_executes_every_retry() {
    let api = start(Flaw::NoIdempotency, FAST).await;
    let first = pay(ALICE, Some("k1"), PAY).send(&api).await;
    let again = pay(ALICE, Some("k1"), PAY).send(&api).await;
    assert_ne!(again.id(), first.id());
    assert!(!again.replayed());
    assert_eq!(api.payments(), 2);
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_then_act_executes_concurrent_duplicates() {
    let api = start(Flaw::CheckThenAct, SLOW).await;
    let (a, b) = tokio::join!(
        pay(ALICE, Some("race"), PAY).send(&api),
        pay(ALICE, Some("race"), PAY).send(&api)
    );
    assert_ne!(a.id(), b.id());
    assert_eq!(api.payments(), 2);
    // Once one of them is stored, a sequential retry replays.
    let later = pay(ALICE, Some("race"), PAY).send(&api).await;
    assert!(later.replayed());
    assert_eq!(api.payments(), 2);
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unscoped_keys_leak_a_response_across_tenants() {
    let api = start(Flaw::UnscopedKeys, FAST).await;
    let alice = pay(ALICE, Some("shared"), PAY).send(&api).await;
    let bob = pay(BOB, Some("shared"), PAY).send(&api).await;
    assert_eq!(bob.status, StatusCode::CREATED);
    assert_eq!(bob.id(), alice.id());
    assert_eq!(bob.body, alice.body);
    assert!(bob.replayed());
    assert_eq!(api.payments(), 1);
    assert_eq!(count(&api, Some(BOB)).await, 0);
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_ignored_replays_the_old_response_to_a_changed_payload() {
    let api = start(Flaw::PayloadIgnored, FAST).await;
    let first = pay(ALICE, Some("k1"), PAY).send(&api).await;
    let changed = pay(ALICE, Some("k1"), r#"{"amount":5000,"currency":"eur"}"#)
        .send(&api)
        .await;
    assert_eq!(changed.status, StatusCode::CREATED);
    assert_eq!(changed.id(), first.id());
    assert_eq!(changed.json()["amount"], 1000);
    assert!(changed.replayed());
    assert_eq!(api.payments(), 1);
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_if_delivered_executes_the_retry_after_a_client_timeout() {
    let api = start(Flaw::StoreIfDelivered, SLOW).await;
    pay(ALICE, Some("timeout"), PAY)
        .send_and_hang_up(&api, SLOW / 3)
        .await;
    wait_until("the abandoned payment completes", || async {
        api.payments() == 1
    })
    .await;
    let retry = pay(ALICE, Some("timeout"), PAY).send(&api).await;
    assert_eq!(retry.id(), "pay_2");
    assert!(!retry.replayed());
    assert_eq!(api.payments(), 2);
    // A client that waits gets its response stored like anywhere else.
    let again = pay(ALICE, Some("timeout"), PAY).send(&api).await;
    assert_eq!(again.id(), "pay_2");
    assert!(again.replayed());
    api.shutdown().await;
}
