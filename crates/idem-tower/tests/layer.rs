//! The layer as a library user embeds it: around an axum router, driven
//! with `tower::ServiceExt::oneshot`, no sockets.

use axum::body::Body;
use axum::routing::post;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use idem_core::Timestamp;
use idem_store::{MemoryStore, Store};
use idem_tower::{Clock, IdempotencyLayer, IdempotencyLayerBuilder, Route};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tower::ServiceExt;

struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

struct App {
    router: Router,
    executions: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    clock: Arc<TestClock>,
    layer: IdempotencyLayer,
}

/// A layer on a fresh memory store, with the contract's defaults.
fn memory() -> IdempotencyLayerBuilder {
    IdempotencyLayer::builder(MemoryStore::new())
}

/// The layer `builder` makes, on the test's clock, around a router whose
/// `/charges` and `/refunds` answer at once (numbered by a shared count of
/// executions), `/slow` when the test opens the gate.
fn app(builder: IdempotencyLayerBuilder) -> App {
    let executions = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let clock = Arc::new(TestClock(AtomicI64::new(1_700_000_000_000)));
    let layer = builder.clock(clock.clone()).build();
    let (e1, e2, e3, g) = (
        executions.clone(),
        executions.clone(),
        executions.clone(),
        gate.clone(),
    );
    let router = Router::new()
        .route(
            "/charges",
            post(move |body: String| async move {
                let n = e1.fetch_add(1, Ordering::SeqCst) + 1;
                (StatusCode::CREATED, format!("charge {n} for {body}"))
            }),
        )
        .route(
            "/refunds",
            post(move |body: String| async move {
                let n = e3.fetch_add(1, Ordering::SeqCst) + 1;
                (StatusCode::CREATED, format!("refund {n} for {body}"))
            }),
        )
        .route(
            "/slow",
            post(move || async move {
                e2.fetch_add(1, Ordering::SeqCst);
                // Held until the test opens the gate; no timing involved.
                g.acquire().await.unwrap().forget();
                (StatusCode::CREATED, "slow done")
            }),
        )
        .layer(layer.clone());
    App {
        router,
        executions,
        gate,
        clock,
        layer,
    }
}

/// A keyed POST from one authenticated user (keyed requests without a
/// credential are refused by default).
fn post_with_key(path: &str, key: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("authorization", "Bearer user-1")
        .header("idempotency-key", key)
        .header("content-type", "text/plain")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn send(router: &Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let response = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_keyed_request_without_a_credential_is_refused_and_never_executed() {
    let app = app(memory());
    let anonymous = Request::post("/charges")
        .header("idempotency-key", "k-anon")
        .body(Body::from("10 eur"))
        .unwrap();
    let (status, headers, body) = send(&app.router, anonymous).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(body.contains("credential-required"), "{body}");
    assert_eq!(headers["idempotency-key"], "k-anon");
    assert_eq!(app.executions.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn handler_runs_once_per_key_and_retries_get_the_replay() {
    let app = app(memory());
    let (s1, h1, b1) = send(&app.router, post_with_key("/charges", "k1", "10 eur")).await;
    let (s2, h2, b2) = send(&app.router, post_with_key("/charges", "k1", "10 eur")).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(b1, "charge 1 for 10 eur");
    assert_eq!(b2, b1);
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(h2.get("idempotency-key").unwrap(), "k1");
    assert_eq!(app.executions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dropped_request_future_does_not_cancel_the_handler() {
    let app = app(memory());
    // The client gives up: its future is dropped while the handler waits.
    let pending = tokio::spawn({
        let router = app.router.clone();
        async move { send(&router, post_with_key("/slow", "k1", "")).await }
    });
    wait_until("the handler to start", || {
        app.executions.load(Ordering::SeqCst) == 1
    })
    .await;
    pending.abort();
    let _ = pending.await;
    let (status, _, _) = send(&app.router, post_with_key("/slow", "k1", "")).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a retry during execution is told to wait"
    );
    app.gate.add_permits(2);
    app.layer.drain().await;
    let (status, headers, body) = send(&app.router, post_with_key("/slow", "k1", "")).await;
    assert_eq!((status, body.as_str()), (StatusCode::CREATED, "slow done"));
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.executions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn replay_turns_into_key_expired_after_retention() {
    let app = app(memory().retention(Duration::from_secs(60)));
    let _ = send(&app.router, post_with_key("/charges", "k1", "x")).await;
    app.clock.0.fetch_add(60_000, Ordering::SeqCst);
    let (status, headers, body) = send(&app.router, post_with_key("/charges", "k1", "x")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        headers.get("content-type").unwrap(),
        "application/problem+json"
    );
    assert!(body.contains("/key-expired"), "{body}");
    assert_eq!(app.executions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn required_key_and_uncovered_methods() {
    let app = app(memory().route(Route::new("/charges")).require_key());
    let keyless = Request::post("/charges").body(Body::from("x")).unwrap();
    let (status, _, body) = send(&app.router, keyless).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("/missing-key"), "{body}");
    // /slow is not a covered route: a key there is ignored.
    let app2 = app.router.clone();
    let h = tokio::spawn(async move { send(&app2, post_with_key("/slow", "k", "")).await });
    wait_until("the handler to start", || {
        app.executions.load(Ordering::SeqCst) == 1
    })
    .await;
    let h2 = tokio::spawn({
        let r = app.router.clone();
        async move { send(&r, post_with_key("/slow", "k", "")).await }
    });
    wait_until("the second handler to start", || {
        app.executions.load(Ordering::SeqCst) == 2
    })
    .await;
    app.gate.add_permits(2);
    let _ = (h.await.unwrap(), h2.await.unwrap());
}

/// A real memory store whose `complete` fails while `down` is set: the
/// store outage of a networked engine, reduced to the one operation.
struct CompletionOutage {
    inner: MemoryStore,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Store for CompletionOutage {
    async fn claim(
        &self,
        c: idem_store::Claim,
    ) -> Result<idem_store::ClaimOutcome, idem_store::StoreError> {
        self.inner.claim(c).await
    }
    async fn renew(
        &self,
        id: &idem_core::RecordId,
        t: u64,
        n: Timestamp,
        l: Timestamp,
    ) -> Result<idem_store::Write, idem_store::StoreError> {
        self.inner.renew(id, t, n, l).await
    }
    async fn complete(
        &self,
        id: &idem_core::RecordId,
        t: u64,
        c: idem_store::Completion,
    ) -> Result<idem_store::Write, idem_store::StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(idem_store::StoreError::new(
                "outage",
                "complete",
                "connection refused",
            ));
        }
        self.inner.complete(id, t, c).await
    }
    async fn mark_unknown(
        &self,
        id: &idem_core::RecordId,
        t: u64,
        n: Timestamp,
    ) -> Result<idem_store::Write, idem_store::StoreError> {
        self.inner.mark_unknown(id, t, n).await
    }
    async fn release(
        &self,
        id: &idem_core::RecordId,
        t: u64,
    ) -> Result<idem_store::Write, idem_store::StoreError> {
        self.inner.release(id, t).await
    }
    async fn get(
        &self,
        id: &idem_core::RecordId,
    ) -> Result<Option<idem_core::Record>, idem_store::StoreError> {
        self.inner.get(id).await
    }
    async fn sweep(
        &self,
        n: Timestamp,
        l: usize,
    ) -> Result<idem_store::SweepReport, idem_store::StoreError> {
        self.inner.sweep(n, l).await
    }
    async fn operate(
        &self,
        id: &idem_core::RecordId,
        t: u64,
        a: idem_core::operator::OperatorAction,
        n: Timestamp,
    ) -> Result<
        Result<idem_core::operator::Operated, idem_core::operator::OperatorRefusal>,
        idem_store::StoreError,
    > {
        self.inner.operate(id, t, a, n).await
    }
    async fn list(
        &self,
        q: idem_store::ListQuery,
    ) -> Result<Vec<idem_core::Record>, idem_store::StoreError> {
        self.inner.list(q).await
    }
    async fn ping(&self) -> Result<(), idem_store::StoreError> {
        Ok(())
    }
    fn engine(&self) -> &'static str {
        "outage"
    }
}

#[tokio::test]
async fn outcome_is_stored_once_the_store_returns_and_never_re_executed() {
    let store = Arc::new(CompletionOutage {
        inner: MemoryStore::new(),
        down: std::sync::atomic::AtomicBool::new(true),
    });
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = executions.clone();
    let router = Router::new()
        .route(
            "/charges",
            post(move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (StatusCode::CREATED, "charged")
            }),
        )
        .layer(IdempotencyLayer::builder(store.clone()).build());
    // The store cannot take the outcome, but the client gets the real answer.
    let (status, _, body) = send(&router, post_with_key("/charges", "k1", "x")).await;
    assert_eq!((status, body.as_str()), (StatusCode::CREATED, "charged"));
    // Meanwhile a retry is held off, not executed again.
    let (status, _, _) = send(&router, post_with_key("/charges", "k1", "x")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    store.down.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, headers, body) = send(&router, post_with_key("/charges", "k1", "x")).await;
        if status == StatusCode::CREATED {
            assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
            assert_eq!(body, "charged");
            break;
        }
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outcome was never stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(executions.load(Ordering::SeqCst), 1);
}

/// A real SQLite file in a directory that lives as long as the test.
fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = idem_store::SqliteStore::open(&dir.path().join("idem.db"), Default::default())
        .expect("open the SQLite store");
    (Arc::new(store), dir)
}

#[tokio::test]
async fn a_short_retention_route_expires_its_record_while_the_default_route_keeps_its_own() {
    let mut quick = Route::new("/charges");
    quick.policy.retention = Some(Duration::from_secs(60));
    let (store, _dir) = sqlite();
    let app = app(IdempotencyLayer::builder(store).routes([quick, Route::new("/")]));
    let (s1, _, charge) = send(&app.router, post_with_key("/charges", "k-charge", "x")).await;
    let (s2, _, refund) = send(&app.router, post_with_key("/refunds", "k-refund", "x")).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));

    // Just before the short window ends, both replay.
    app.clock.0.fetch_add(59_999, Ordering::SeqCst);
    let (_, h, body) = send(&app.router, post_with_key("/charges", "k-charge", "x")).await;
    assert_eq!(h.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(body, charge);

    // At 60 s the route's record is a tombstone; the default route's (24 h)
    // still replays.
    app.clock.0.fetch_add(1, Ordering::SeqCst);
    let (status, headers, body) =
        send(&app.router, post_with_key("/charges", "k-charge", "x")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("/key-expired"), "{body}");
    assert!(headers.get("retry-after").is_none());
    let (status, headers, body) =
        send(&app.router, post_with_key("/refunds", "k-refund", "x")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::CREATED, refund.as_str())
    );
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.executions.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_route_without_a_tombstone_period_executes_a_key_again_once_its_retention_is_over() {
    let mut quick = Route::new("/charges");
    quick.policy.retention = Some(Duration::from_secs(60));
    quick.policy.tombstone_retention = Some(Duration::ZERO);
    let (store, _dir) = sqlite();
    let app = app(IdempotencyLayer::builder(store).routes([quick, Route::new("/")]));
    let _ = send(&app.router, post_with_key("/charges", "k1", "x")).await;
    let _ = send(&app.router, post_with_key("/refunds", "k2", "x")).await;
    app.clock.0.fetch_add(60_000, Ordering::SeqCst);
    // No tombstone on /charges: the key is free, the request runs again.
    let (status, headers, body) = send(&app.router, post_with_key("/charges", "k1", "x")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::CREATED, "charge 3 for x")
    );
    assert!(headers.get("idempotent-replayed").is_none());
    // The default route's tombstone period (7 d) is untouched: past its
    // 24 h it answers key-expired.
    app.clock.0.fetch_add(24 * 3_600_000, Ordering::SeqCst);
    let (status, _, body) = send(&app.router, post_with_key("/refunds", "k2", "x")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("/key-expired"), "{body}");
    assert_eq!(app.executions.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_route_releases_on_its_own_statuses() {
    // /charges releases nothing (every outcome stored); the default route
    // keeps the default list, where 503 releases.
    let mut stores_all = Route::new("/flaky-stored");
    stores_all.policy.release_statuses = Some(idem_tower::ReleaseStatuses::new([]));
    let executions = Arc::new(AtomicUsize::new(0));
    let (a, b) = (executions.clone(), executions.clone());
    let layer = memory().routes([stores_all, Route::new("/")]).build();
    let router = Router::new()
        .route(
            "/flaky-stored",
            post(move || async move {
                a.fetch_add(1, Ordering::SeqCst);
                StatusCode::SERVICE_UNAVAILABLE
            }),
        )
        .route(
            "/flaky-released",
            post(move || async move {
                b.fetch_add(1, Ordering::SeqCst);
                StatusCode::SERVICE_UNAVAILABLE
            }),
        )
        .layer(layer);
    for _ in 0..2 {
        let (status, _, _) = send(&router, post_with_key("/flaky-stored", "k1", "")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _, _) = send(&router, post_with_key("/flaky-released", "k2", "")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // Stored once and replayed on the first route; executed twice on the other.
    assert_eq!(executions.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_layer_without_routes_on_one_axum_route_covers_that_route_alone() {
    let executions = Arc::new(AtomicUsize::new(0));
    let (a, b) = (executions.clone(), executions.clone());
    let idempotency = memory().require_key().build();
    let router = Router::new()
        .route(
            "/v1/charges/{id}/capture",
            post(move || async move {
                let n = a.fetch_add(1, Ordering::SeqCst) + 1;
                (StatusCode::CREATED, format!("capture {n}"))
            })
            .route_layer(idempotency),
        )
        .route(
            "/refunds",
            post(move || async move {
                b.fetch_add(1, Ordering::SeqCst);
                StatusCode::CREATED
            }),
        );
    // The layer's route: a key is required, and a retry replays.
    let keyless = Request::post("/v1/charges/ch_1/capture")
        .header("authorization", "Bearer user-1")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&router, keyless).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("/missing-key"), "{body}");
    let first = send(&router, post_with_key("/v1/charges/ch_1/capture", "k1", "")).await;
    let retry = send(&router, post_with_key("/v1/charges/ch_1/capture", "k1", "")).await;
    assert_eq!(
        (first.0, first.2.as_str()),
        (StatusCode::CREATED, "capture 1")
    );
    assert_eq!(retry.2, "capture 1");
    assert_eq!(retry.1.get("idempotent-replayed").unwrap(), "true");
    // Another route is not under the layer: no key needed, nothing replayed.
    let keyless = Request::post("/refunds").body(Body::empty()).unwrap();
    assert_eq!(send(&router, keyless).await.0, StatusCode::CREATED);
    let (_, headers, _) = send(&router, post_with_key("/refunds", "k1", "")).await;
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(executions.load(Ordering::SeqCst), 3);
}

/// A keyed POST whose body arrives in `chunks`, one frame each.
fn post_in_chunks(path: &str, key: &str, chunks: &[&'static str]) -> Request<Body> {
    let frames = chunks
        .iter()
        .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(c.as_bytes())));
    Request::post(path)
        .header("authorization", "Bearer user-1")
        .header("idempotency-key", key)
        .header("content-type", "text/plain")
        .body(Body::from_stream(futures_util::stream::iter(
            frames.collect::<Vec<_>>(),
        )))
        .unwrap()
}

/// A body is the same request however the client's bytes were framed: the
/// handler gets them joined, and the retry in one piece is the replay; a
/// body that differs in a later chunk is refused as another request.
#[tokio::test]
async fn a_body_in_several_chunks_is_one_request_however_it_is_framed() {
    let app = app(memory());
    let (s1, _, b1) = send(
        &app.router,
        post_in_chunks("/charges", "k-chunks", &["10", " e", "ur"]),
    )
    .await;
    assert_eq!(s1, StatusCode::CREATED);
    assert_eq!(b1, "charge 1 for 10 eur");
    let (s2, h2, b2) = send(&app.router, post_with_key("/charges", "k-chunks", "10 eur")).await;
    assert_eq!((s2, b2.as_str()), (StatusCode::CREATED, b1.as_str()));
    assert_eq!(h2["idempotent-replayed"], "true");
    let (s3, _, _) = send(
        &app.router,
        post_in_chunks("/charges", "k-chunks", &["10", " e", "uR"]),
    )
    .await;
    assert_eq!(s3, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.executions.load(Ordering::SeqCst), 1);
}
