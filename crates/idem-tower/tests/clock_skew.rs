//! Layers whose clocks disagree, sharing one Redis store (issue 10,
//! finding 10). As found, each gateway decided leases on its own wall
//! clock: one running an hour ahead declared live claims
//! `outcome-unknown`, and an owner an hour behind renewed its lease into
//! the past. Redis decides on its own clock (`TIME`), so they agree.
//!
//! Needs the shared Redis (`IDEM_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/`); without it the tests skip with a note, and
//! fail under `CI=true`.

use axum::body::Body;
use axum::routing::post;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use idem_core::Timestamp;
use idem_store::{RedisOptions, RedisStore, Store};
use idem_testkit::{poll_until, redis_ping, redis_url, unavailable, unique_name, REDIS_START};
use idem_tower::{Clock, IdempotencyLayer, SystemClock};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tower::ServiceExt;

const HOUR_MS: i64 = 3_600_000;

/// The system clock, off by a fixed amount.
struct Skewed(i64);

impl Clock for Skewed {
    fn now(&self) -> Timestamp {
        Timestamp(SystemClock.now().as_millis() + self.0)
    }
}

/// Gateways on one Redis prefix, and the upstream they share: `/slow`
/// executes only when the test opens the gate.
struct Fleet {
    executions: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    prefix: String,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet {
            executions: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(Semaphore::new(0)),
            prefix: unique_name("idem_skew_test"),
        }
    }

    /// A gateway whose clock is `skew_ms` off, with a 1 s lease.
    async fn gateway(&self, skew_ms: i64) -> Router {
        let url = format!("{}?prefix={}", redis_url(), self.prefix);
        let store: Arc<dyn Store> = Arc::new(
            RedisStore::open(&url, RedisOptions::default())
                .await
                .expect("Redis opens"),
        );
        let layer = IdempotencyLayer::builder(store)
            .lease(Duration::from_secs(1))
            .clock(Arc::new(Skewed(skew_ms)))
            .build();
        let (executions, gate) = (self.executions.clone(), self.gate.clone());
        Router::new()
            .route(
                "/slow",
                post(move || async move {
                    executions.fetch_add(1, Ordering::SeqCst);
                    gate.acquire().await.unwrap().forget();
                    (StatusCode::CREATED, "done")
                }),
            )
            .layer(layer)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        idem_testkit::delete_redis_prefix(vec![redis_url()], self.prefix.clone());
    }
}

async fn redis_up() -> bool {
    match redis_ping(&redis_url(), Duration::from_secs(3)).await {
        Ok(()) => true,
        Err(why) => {
            unavailable("Redis", &why, REDIS_START);
            false
        }
    }
}

/// POSTs to `/slow` with `key`; the status and the problem type's slug.
async fn post_slow(gateway: &Router, key: &str) -> (StatusCode, String) {
    let request = Request::post("/slow")
        .header("authorization", "Bearer user-1")
        .header("idempotency-key", key)
        .body(Body::empty())
        .unwrap();
    let response = gateway.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    let slug = text
        .split("https://idem.dev/problems/")
        .nth(1)
        .map(|rest| rest.split('"').next().unwrap_or("").to_owned())
        .unwrap_or_default();
    (status, slug)
}

/// For three leases, every answer `watcher` gives for `key` says the
/// request is still in progress.
async fn in_progress_for_three_leases(watcher: &Router, key: &str) {
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let answer = post_slow(watcher, key).await;
        assert_eq!(
            answer,
            (StatusCode::CONFLICT, "request-in-progress".to_owned()),
            "a live claim read as something else"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_an_hour_ahead_sees_a_live_claim_as_in_progress() {
    if !redis_up().await {
        return;
    }
    let fleet = Fleet::new();
    let owner = fleet.gateway(0).await;
    let ahead = fleet.gateway(HOUR_MS).await;
    let first = tokio::spawn({
        let owner = owner.clone();
        async move { post_slow(&owner, "k").await }
    });
    poll_until("the owner to execute", Duration::from_secs(10), || async {
        fleet.executions.load(Ordering::SeqCst) == 1
    })
    .await;
    in_progress_for_three_leases(&ahead, "k").await;
    fleet.gate.add_permits(1);
    assert_eq!(first.await.unwrap().0, StatusCode::CREATED);
    assert_eq!(post_slow(&ahead, "k").await.0, StatusCode::CREATED);
    assert_eq!(fleet.executions.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_an_hour_behind_keeps_its_claim_alive() {
    if !redis_up().await {
        return;
    }
    let fleet = Fleet::new();
    let behind = fleet.gateway(-HOUR_MS).await;
    let watcher = fleet.gateway(0).await;
    let first = tokio::spawn({
        let behind = behind.clone();
        async move { post_slow(&behind, "k").await }
    });
    poll_until("the owner to execute", Duration::from_secs(10), || async {
        fleet.executions.load(Ordering::SeqCst) == 1
    })
    .await;
    // Its renewals (every third of the 1 s lease) keep the claim alive on
    // Redis's clock, though on its own they end an hour ago.
    in_progress_for_three_leases(&watcher, "k").await;
    fleet.gate.add_permits(1);
    assert_eq!(first.await.unwrap().0, StatusCode::CREATED);
    assert_eq!(post_slow(&watcher, "k").await.0, StatusCode::CREATED);
    assert_eq!(fleet.executions.load(Ordering::SeqCst), 1);
}
