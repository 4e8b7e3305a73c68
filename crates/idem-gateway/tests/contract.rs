//! The contract (docs/contract.md), row by row, against a real gateway in
//! front of a real upstream that counts its side effects.

mod support;

use http_body_util::BodyExt;
use idem_core::RecordState;
use idem_tower::{
    IdempotencyConfig, InFlightMode, Policy, Retention, Route, ScopeRule, ScopeSource,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::sync::Barrier;

fn config() -> IdempotencyConfig {
    IdempotencyConfig::default()
}

/// `base` with `change` made.
fn changed(
    mut base: IdempotencyConfig,
    change: impl FnOnce(&mut IdempotencyConfig),
) -> IdempotencyConfig {
    change(&mut base);
    base
}

/// POST and PATCH everywhere with `policy`.
fn with_policy(policy: Policy) -> IdempotencyConfig {
    changed(config(), |c| {
        c.routes = vec![Route::new("/").with_policy(policy)]
    })
}

fn waiting(bound: Duration) -> IdempotencyConfig {
    with_policy(Policy {
        in_flight: InFlightMode::Wait(bound),
        ..Policy::default()
    })
}

fn with_lease(lease: Duration) -> IdempotencyConfig {
    changed(config(), |c| {
        c.retention = Retention {
            lease,
            ..Retention::default()
        }
    })
}

// ---------------------------------------------------------------------------
// 1. Execution, then replay (sections 3 and 4)
// ---------------------------------------------------------------------------

async fn execution_then_replay(engine: Engine) {
    let (up, gw) = setup_on(engine, config()).await;
    let req = Req::post("/charges")
        .key("order-1")
        .json(r#"{"amount":100}"#);

    let first = gw.send(req.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(first.json(), json!({"charge": 1}));
    assert_eq!(first.header("idempotency-key"), Some("order-1"));
    assert_eq!(
        first.header("idempotent-replayed"),
        None,
        "the execution is not a replay"
    );
    assert_eq!(
        first.header("set-cookie"),
        Some("session=secret; HttpOnly"),
        "the first caller gets every header"
    );
    assert_eq!(first.header("x-ratelimit-remaining"), Some("99"));
    assert_eq!(first.header("x-custom"), Some("yes"));
    assert_eq!(first.header("date"), Some(UPSTREAM_DATE));
    assert_eq!(
        first.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );

    let second = gw.send(req).await;
    assert_eq!(up.count("/charges"), 1, "the retry must not execute again");
    assert_eq!(second.status, 201);
    assert_eq!(second.body, first.body, "identical body bytes");
    assert!(
        second.is_replay(),
        "Idempotent-Replayed: true on the replay, got {:?}",
        second.headers
    );
    assert_eq!(second.header("idempotency-key"), Some("order-1"));
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(
        second.header("x-custom"),
        Some("yes"),
        "ordinary headers are replayed"
    );
    assert_eq!(
        second.header("set-cookie"),
        None,
        "Set-Cookie is never replayed"
    );
    assert_eq!(
        second.header("x-ratelimit-remaining"),
        None,
        "rate-limit headers are never replayed"
    );
    assert_ne!(
        second.header("date"),
        Some(UPSTREAM_DATE),
        "Date is not replayed"
    );
    assert_eq!(
        second.header("content-length"),
        Some(second.body.len().to_string().as_str())
    );

    let record = gw
        .store
        .get(&tenant_id("order-1"))
        .await
        .expect("record stored");
    assert_eq!(record.state, RecordState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn execution_then_replay_executes_once_and_replays_the_stored_response() {
    execution_then_replay(Engine::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_execution_then_replay_executes_once_and_replays_the_stored_response() {
    execution_then_replay(Engine::Sqlite).await;
}

// ---------------------------------------------------------------------------
// 2-3. Keys (section 1)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bare_and_quoted_key_forms_are_the_same_key() {
    let (up, gw) = setup(config()).await;
    let first = gw.send(Req::post("/charges").key("abc")).await;
    assert_eq!(first.status, 201);
    let second = gw.send(Req::post("/charges").key(r#""abc""#)).await;
    assert_eq!(second.status, 201);
    assert!(
        second.is_replay(),
        "\"abc\" is the key abc: {:?}",
        second.headers
    );
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.header("idempotency-key"),
        Some(r#""abc""#),
        "the key is echoed as sent"
    );
    assert_eq!(up.count("/charges"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_keys_are_400_invalid_key_and_never_forwarded() {
    let (up, gw) = setup(config()).await;
    let long = "k".repeat(256);
    let bad: Vec<(&str, Req)> = vec![
        ("empty", Req::post("/charges").key("")),
        ("empty quoted", Req::post("/charges").key(r#""""#)),
        ("256 characters", Req::post("/charges").key(&long)),
        ("non-ASCII", Req::post("/charges").key("ключ".as_bytes())),
        ("inner space", Req::post("/charges").key("a b")),
        ("unterminated quote", Req::post("/charges").key(r#""abc"#)),
        ("two headers", Req::post("/charges").key("one").key("two")),
    ];
    for (what, req) in bad {
        let r = gw.send(req).await;
        assert!(
            r.status == 400,
            "{what}: expected 400, got {} {}",
            r.status,
            r.text()
        );
        r.assert_problem(400, "invalid-key");
    }
    assert_eq!(up.total(), 0, "no invalid key reaches the upstream");

    // The boundary: 255 characters is a valid key.
    let ok = gw.send(Req::post("/charges").key("k".repeat(255))).await;
    assert_eq!(ok.status, 201, "{}", ok.text());
    assert_eq!(up.count("/charges"), 1);
}

// ---------------------------------------------------------------------------
// 4. Which requests are covered (section 1)
// ---------------------------------------------------------------------------

fn charges_require_a_key() -> IdempotencyConfig {
    let charges = Route::new("/charges").with_policy(Policy {
        require_key: true,
        ..Policy::default()
    });
    changed(config(), |c| c.routes = vec![charges, Route::new("/")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn route_requiring_a_key_rejects_a_keyless_request_with_400_missing_key() {
    let (up, gw) = setup(charges_require_a_key()).await;
    let r = gw.send(Req::post("/charges").json("{}")).await;
    r.assert_problem(400, "missing-key");
    assert_eq!(up.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyless_post_on_a_route_without_require_key_is_forwarded_unprotected() {
    let (up, gw) = setup(charges_require_a_key()).await;
    for _ in 0..2 {
        let r = gw.send(Req::post("/status/201").json("{}")).await;
        assert_eq!(r.status, 201);
        assert!(!r.is_replay());
        assert_eq!(r.header("idempotency-key"), None);
    }
    assert_eq!(
        up.count("/status/201"),
        2,
        "no key, no protection: both executed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_passes_through_untouched_and_is_never_replayed() {
    let (up, gw) = setup(charges_require_a_key()).await;
    for _ in 0..2 {
        let r = gw.send(Req::get("/charges").key("get-1")).await;
        assert_eq!(r.status, 201);
        assert!(!r.is_replay(), "GET is never replayed");
        assert_eq!(r.header("set-cookie"), Some("session=secret; HttpOnly"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some("99"));
    }
    assert_eq!(
        up.count("/charges"),
        2,
        "GET is not covered: both reach the upstream"
    );
    assert_eq!(up.last_seen("/charges").headers["idempotency-key"], "get-1");
    assert!(
        gw.store.get(&tenant_id("get-1")).await.is_none(),
        "GET never touches the store"
    );
}

// ---------------------------------------------------------------------------
// 5. Fingerprint (section 2)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserialised_json_with_the_same_key_is_replayed_not_rejected() {
    let (up, gw) = setup(config()).await;
    let first = gw
        .send(
            Req::post("/charges")
                .key("json-1")
                .json(r#"{"amount":100,"currency":"usd","meta":{"a":1,"b":2}}"#),
        )
        .await;
    assert_eq!(first.status, 201);
    let second = gw
        .send(Req::post("/charges").key("json-1").json(
            "{ \"meta\" : {\"b\": 2, \"a\": 1},\n  \"currency\": \"usd\",\n  \"amount\": 100 }",
        ))
        .await;
    assert_eq!(second.status, 201, "{}", second.text());
    assert!(second.is_replay(), "re-serialised JSON is the same request");
    assert_eq!(second.body, first.body);
    assert_eq!(up.count("/charges"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_with_a_different_body_path_or_method_is_422_key_reused_and_never_executed() {
    let (up, gw) = setup(config()).await;
    let body = r#"{"amount":100}"#;
    let first = gw
        .send(Req::post("/charges").key("reuse-1").json(body))
        .await;
    assert_eq!(first.status, 201);

    let cases = [
        (
            "different body",
            Req::post("/charges")
                .key("reuse-1")
                .json(r#"{"amount":200}"#),
        ),
        (
            "different path",
            Req::post("/charges/other").key("reuse-1").json(body),
        ),
        (
            "different method",
            Req::patch("/charges").key("reuse-1").json(body),
        ),
        (
            "different query",
            Req::post("/charges?expand=1").key("reuse-1").json(body),
        ),
    ];
    for (what, req) in cases {
        let r = gw.send(req).await;
        assert!(
            r.status == 422,
            "{what}: expected 422, got {} {}",
            r.status,
            r.text()
        );
        let p = r.assert_problem(422, "key-reused");
        assert_eq!(p["idempotency_key"], "reuse-1", "{what}");
        assert_eq!(r.header("idempotency-key"), Some("reuse-1"), "{what}");
        assert!(!r.is_replay(), "{what}");
    }
    assert_eq!(up.total(), 1, "a reused key is never executed");

    // The original request still replays.
    let again = gw
        .send(Req::post("/charges").key("reuse-1").json(body))
        .await;
    assert!(again.is_replay());
    assert_eq!(again.body, first.body);
}

// ---------------------------------------------------------------------------
// 6. Scope (section 2)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_key_under_different_authorization_executes_once_per_tenant() {
    let (up, gw) = setup(config()).await;
    let as_ = |auth: &str| {
        Req::post("/charges")
            .key("shared-key")
            .header("authorization", auth)
    };
    let alice = gw.send(as_("Bearer alice")).await;
    let bob = gw.send(as_("Bearer bob")).await;
    assert_eq!(alice.json(), json!({"charge": 1}));
    assert!(!bob.is_replay(), "bob must never get alice's response");
    assert_eq!(bob.json(), json!({"charge": 2}));
    assert_eq!(up.count("/charges"), 2);

    let alice2 = gw.send(as_("Bearer alice")).await;
    let bob2 = gw.send(as_("Bearer bob")).await;
    assert!(alice2.is_replay() && bob2.is_replay());
    assert_eq!(alice2.json(), json!({"charge": 1}));
    assert_eq!(bob2.json(), json!({"charge": 2}));

    // No Authorization at all is refused, never a shared scope.
    let anon = gw
        .send(Req::post("/charges").key("shared-key").anonymous())
        .await;
    anon.assert_problem(401, "credential-required");
    assert_eq!(up.count("/charges"), 2);

    // No credential is stored in clear.
    let id = scoped_id(
        &ScopeRule::default(),
        &[("authorization", "Bearer alice")],
        "shared-key",
    );
    assert!(gw.store.get(&id).await.is_some());
    assert!(!id.scope.as_str().contains("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trusted_header_scope_separates_tenants() {
    let source = ScopeRule::new(ScopeSource::TrustedHeader {
        headers: vec!["x-tenant-id".into()],
    });
    let (up, gw) = setup(changed(config(), |c| c.scope = source.clone())).await;
    let as_ = |tenant: &str, auth: &str| {
        Req::post("/charges")
            .key("tenant-key")
            .header("x-tenant-id", tenant)
            .header("authorization", auth)
    };
    let acme = gw.send(as_("acme", "Bearer one")).await;
    let globex = gw.send(as_("globex", "Bearer one")).await;
    assert!(
        !globex.is_replay(),
        "another tenant never gets acme's response"
    );
    assert_eq!(up.count("/charges"), 2);
    // The scope is the tenant header, not Authorization.
    let acme2 = gw.send(as_("acme", "Bearer two")).await;
    assert!(acme2.is_replay());
    assert_eq!(acme2.body, acme.body);
    assert_eq!(up.count("/charges"), 2);
    assert!(gw
        .store
        .get(&scoped_id(
            &source,
            &[("x-tenant-id", "acme")],
            "tenant-key"
        ))
        .await
        .is_some());
}

// ---------------------------------------------------------------------------
// 7. In flight (section 3)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_while_executing_gets_409_request_in_progress_then_the_replay() {
    let (up, gw) = setup(config()).await;
    let client = gw.client.clone();
    let first = tokio::spawn(async move { client.send(Req::post("/slow").key("slow-1")).await });
    up.wait_for_count("/slow", 1).await;

    let dup = gw.send(Req::post("/slow").key("slow-1")).await;
    let p = dup.assert_problem(409, "request-in-progress");
    assert_eq!(p["idempotency_key"], "slow-1");
    assert_eq!(dup.header("retry-after"), Some("1"));
    assert_eq!(dup.header("idempotency-key"), Some("slow-1"));

    up.release();
    let first = first.await.unwrap();
    assert_eq!(first.status, 201);
    assert_eq!(first.json(), json!({"slow": 1}));
    let retry = gw.send(Req::post("/slow").key("slow-1")).await;
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(up.count("/slow"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_wait_mode_a_duplicate_waits_for_the_outcome_and_gets_the_replay() {
    let (up, gw) = setup(waiting(Duration::from_secs(10))).await;
    let c1 = gw.client.clone();
    let first = tokio::spawn(async move { c1.send(Req::post("/slow").key("wait-1")).await });
    up.wait_for_count("/slow", 1).await;
    let c2 = gw.client.clone();
    let mut dup = tokio::spawn(async move { c2.send(Req::post("/slow").key("wait-1")).await });
    // While the first is held, the duplicate is held too (no 409).
    assert!(
        tokio::time::timeout(Duration::from_millis(150), &mut dup)
            .await
            .is_err(),
        "the duplicate must wait while the first executes"
    );
    up.release();
    let first = first.await.unwrap();
    let dup = dup.await.unwrap();
    assert_eq!(first.status, 201);
    assert_eq!(dup.status, 201, "{}", dup.text());
    assert!(dup.is_replay());
    assert_eq!(dup.body, first.body);
    assert_eq!(up.count("/slow"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_wait_mode_a_duplicate_past_its_bound_gets_409_request_in_progress() {
    let (up, gw) = setup(waiting(Duration::from_millis(50))).await;
    let c1 = gw.client.clone();
    let first = tokio::spawn(async move { c1.send(Req::post("/slow").key("wait-2")).await });
    up.wait_for_count("/slow", 1).await;
    let dup = gw.send(Req::post("/slow").key("wait-2")).await;
    dup.assert_problem(409, "request-in-progress");
    assert!(dup.header("retry-after").is_some());
    up.release();
    assert_eq!(first.await.unwrap().status, 201);
    assert_eq!(up.count("/slow"), 1);
}

// ---------------------------------------------------------------------------
// 8. Concurrent burst (section 3: the atomic claim)
// ---------------------------------------------------------------------------

const BURST: usize = 64;

async fn burst(engine: Engine) {
    let (up, gw) = setup_on(engine, config()).await;
    let barrier = Arc::new(Barrier::new(BURST));
    let tasks: Vec<_> = (0..BURST)
        .map(|_| {
            let client = gw.client.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .send(Req::post("/charges").key("burst").json(r#"{"a":1}"#))
                    .await
            })
        })
        .collect();
    let mut executions = 0;
    for task in tasks {
        let r = task.await.unwrap();
        if r.status == 201 {
            assert_eq!(r.json(), json!({"charge": 1}));
            if !r.is_replay() {
                executions += 1;
            }
        } else {
            r.assert_problem(409, "request-in-progress");
        }
    }
    assert_eq!(
        up.count("/charges"),
        1,
        "{BURST} concurrent duplicates, one execution"
    );
    assert_eq!(executions, 1, "exactly one response is the execution");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn burst_of_concurrent_duplicates_executes_once() {
    burst(Engine::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_burst_of_concurrent_duplicates_executes_once() {
    burst(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn burst_in_wait_mode_all_get_the_same_body() {
    let (up, gw) = setup(waiting(Duration::from_secs(10))).await;
    let barrier = Arc::new(Barrier::new(BURST));
    let tasks: Vec<_> = (0..BURST)
        .map(|_| {
            let client = gw.client.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                client.send(Req::post("/slow").key("burst-wait")).await
            })
        })
        .collect();
    up.wait_for_count("/slow", 1).await;
    up.release();
    let mut executions = 0;
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json(), json!({"slow": 1}));
        if !r.is_replay() {
            executions += 1;
        }
    }
    assert_eq!(executions, 1);
    assert_eq!(up.count("/slow"), 1);
}

// ---------------------------------------------------------------------------
// 9. The client that gives up (section 5)
// ---------------------------------------------------------------------------

fn raw_slow(key: &str) -> Vec<u8> {
    raw_request(
        "POST",
        "/slow",
        &[
            ("idempotency-key", key),
            ("content-type", "application/json"),
            ("content-length", "2"),
        ],
        b"{}",
    )
}

async fn abandoned(engine: Engine) {
    let (up, gw) = setup_on(engine, config()).await;
    let socket = raw_send(gw.addr, &raw_slow("abandoned-1")).await;
    up.wait_for_count("/slow", 1).await;
    // The client times out and goes away before any response.
    drop(socket);

    // A retry while the upstream still works: 409, not a second execution.
    let retry = gw
        .send(Req::post("/slow").key("abandoned-1").json("{}"))
        .await;
    retry.assert_problem(409, "request-in-progress");

    up.release();
    gw.store
        .wait_for_state(&tenant_id("abandoned-1"), RecordState::Completed)
        .await;
    let retry = gw
        .send(Req::post("/slow").key("abandoned-1").json("{}"))
        .await;
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert!(
        retry.is_replay(),
        "the abandoned request's outcome is replayed"
    );
    assert_eq!(retry.json(), json!({"slow": 1}));
    assert_eq!(
        up.count("/slow"),
        1,
        "the upstream saw the request exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_client_abandoned_replays_stored_outcome() {
    abandoned(Engine::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_retry_after_client_abandoned_replays_stored_outcome() {
    abandoned(Engine::Sqlite).await;
}

/// The client writes its request and hangs up at once, racing the gateway's
/// claim. Whatever the timing, the request is executed at most once and the
/// key never ends up claimed by nobody: the retry either gets the replay or
/// executes it, never `outcome-unknown` for a request the upstream never saw.
async fn abandoned_right_after_sending(engine: Engine) {
    // A short lease so that an orphaned claim shows as outcome-unknown fast.
    let (up, gw) = setup_on(engine, with_lease(Duration::from_millis(300))).await;
    up.release();
    const ROUNDS: usize = 20;
    for i in 0..ROUNDS {
        let key = format!("gone-{i}");
        drop(raw_send(gw.addr, &raw_slow(&key)).await);
        let until = tokio::time::Instant::now() + DEADLINE;
        let outcome = loop {
            let r = gw.send(Req::post("/slow").key(&key).json("{}")).await;
            if r.status == 201 {
                break r;
            }
            if !r.is_problem("request-in-progress") {
                let record = gw.store.get(&tenant_id(&key)).await;
                panic!(
                    "round {i}: the retry got {} {}\nalthough the upstream executed /slow {} time(s) in {} rounds;\nstored record: {record:?}",
                    r.status,
                    r.text(),
                    up.count("/slow"),
                    i + 1
                );
            }
            assert!(
                tokio::time::Instant::now() < until,
                "round {i}: still in progress"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(outcome.json(), json!({"slow": i + 1}), "round {i}");
        assert_eq!(up.count("/slow"), i + 1, "round {i}: executed exactly once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_abandoned_right_after_sending_is_executed_exactly_once() {
    abandoned_right_after_sending(Engine::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_request_abandoned_right_after_sending_is_executed_exactly_once() {
    abandoned_right_after_sending(Engine::Sqlite).await;
}

// ---------------------------------------------------------------------------
// 10. Which outcomes are stored (section 3)
// ---------------------------------------------------------------------------

async fn release_status(engine: Engine) {
    let (up, gw) = setup_on(engine, config()).await;
    let first = gw.send(Req::post("/status/503").key("k503")).await;
    assert_eq!(first.status, 503);
    assert_eq!(
        first.json(),
        json!({"status": 503}),
        "the upstream's own response, not a problem"
    );
    assert_eq!(first.header("idempotency-key"), Some("k503"));
    assert_eq!(
        gw.store.state(&tenant_id("k503")).await,
        Some(RecordState::Released)
    );

    let second = gw.send(Req::post("/status/503").key("k503")).await;
    assert_eq!(second.status, 503);
    assert!(!second.is_replay(), "a released key executes afresh");
    assert_eq!(up.count("/status/503"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_status_503_is_passed_through_and_the_retry_executes_again() {
    release_status(Engine::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_release_status_503_is_passed_through_and_the_retry_executes_again() {
    release_status(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_500_is_stored_and_replayed() {
    let (up, gw) = setup(config()).await;
    let first = gw.send(Req::post("/status/500").key("k500")).await;
    assert_eq!(first.status, 500);
    let second = gw.send(Req::post("/status/500").key("k500")).await;
    assert_eq!(second.status, 500);
    assert!(
        second.is_replay(),
        "a 500 may have had effects: it is replayed"
    );
    assert_eq!(second.body, first.body);
    assert_eq!(up.count("/status/500"), 1);
}

// ---------------------------------------------------------------------------
// 11. Failure before sending (section 3)
// ---------------------------------------------------------------------------

async fn refused(engine: Engine) {
    let dead = closed_port().await;
    let store = TestStore::new(engine);
    let gw = Gateway::start(
        format!("http://{dead}").parse().unwrap(),
        config(),
        store.clone(),
    )
    .await;
    let req = Req::post("/charges").key("presend").json(r#"{"amount":1}"#);
    let r = gw.send(req.clone()).await;
    let p = r.assert_problem(502, "upstream-unavailable");
    assert_eq!(p["idempotency_key"], "presend");
    assert_eq!(r.header("idempotency-key"), Some("presend"));
    assert_eq!(
        store.state(&tenant_id("presend")).await,
        Some(RecordState::Released)
    );

    // Same store, a working upstream: the retry executes.
    let up = Upstream::start().await;
    let gw2 = Gateway::start(up.uri(), config(), store.clone()).await;
    let r = gw2.send(req).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(!r.is_replay());
    assert_eq!(up.count("/charges"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_refusing_connections_gives_502_and_releases_the_key() {
    refused(Engine::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_upstream_refusing_connections_gives_502_and_releases_the_key() {
    refused(Engine::Sqlite).await;
}

// ---------------------------------------------------------------------------
// 12. Outcome unknown (section 3)
// ---------------------------------------------------------------------------

fn short_timeout(policy: Policy) -> IdempotencyConfig {
    changed(with_policy(policy), |c| {
        c.upstream_timeout = Duration::from_millis(300)
    })
}

async fn timeout_unknown(engine: Engine) {
    let (up, gw) = setup_on(engine, short_timeout(Policy::default())).await;
    let r = gw.send(Req::post("/hang").key("hang-1")).await;
    let p = r.assert_problem(504, "upstream-timeout");
    assert_eq!(p["idempotency_key"], "hang-1");
    assert_eq!(
        gw.store.state(&tenant_id("hang-1")).await,
        Some(RecordState::OutcomeUnknown)
    );
    for _ in 0..2 {
        let retry = gw.send(Req::post("/hang").key("hang-1")).await;
        retry.assert_problem(409, "outcome-unknown");
        assert_eq!(retry.header("idempotency-key"), Some("hang-1"));
    }
    assert_eq!(
        up.count("/hang"),
        1,
        "an unknown outcome is never silently re-executed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_timeout_gives_504_then_409_outcome_unknown_never_reexecuted() {
    timeout_unknown(Engine::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_upstream_timeout_gives_504_then_409_outcome_unknown_never_reexecuted() {
    timeout_unknown(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_lost_after_sending_gives_504_then_409_outcome_unknown() {
    let (up, gw) = setup(short_timeout(Policy::default())).await;
    let r = gw.send(Req::post("/reset").key("reset-1").json("{}")).await;
    r.assert_problem(504, "upstream-timeout");
    let retry = gw.send(Req::post("/reset").key("reset-1").json("{}")).await;
    retry.assert_problem(409, "outcome-unknown");
    assert_eq!(up.count("/reset"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_upstream_dedupes_an_unknown_outcome_is_forwarded_again_with_the_same_key() {
    let (up, gw) = setup(short_timeout(Policy {
        upstream_dedupes: true,
        ..Policy::default()
    }))
    .await;
    let r = gw.send(Req::post("/flaky").key("dedupe-1")).await;
    r.assert_problem(504, "upstream-timeout");
    let retry = gw.send(Req::post("/flaky").key("dedupe-1")).await;
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert!(!retry.is_replay());
    assert_eq!(retry.json(), json!({"flaky": 2}));
    assert_eq!(up.count("/flaky"), 2);
    assert!(
        up.seen()
            .iter()
            .filter(|s| s.path == "/flaky")
            .all(|s| s.headers["idempotency-key"] == "dedupe-1"),
        "both attempts carry the key so the upstream can deduplicate"
    );
    let third = gw.send(Req::post("/flaky").key("dedupe-1")).await;
    assert!(third.is_replay());
    assert_eq!(third.body, retry.body);
    assert_eq!(up.count("/flaky"), 2);
}

// ---------------------------------------------------------------------------
// 13-14. Size limits (sections 4 and 8)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn response_over_storage_limit_is_streamed_then_409_response_not_replayable() {
    let (up, gw) = setup(changed(config(), |c| c.max_response_body = 1024)).await;
    let first = gw.send(Req::post("/big/5000").key("big-1")).await;
    assert_eq!(first.status, 201);
    assert_eq!(
        first.body.len(),
        5000,
        "the first caller gets the whole body"
    );
    assert!(first
        .body
        .iter()
        .enumerate()
        .all(|(i, b)| *b == b'a' + (i % 26) as u8));
    assert_eq!(first.header("idempotency-key"), Some("big-1"));

    let retry = gw.send(Req::post("/big/5000").key("big-1")).await;
    let p = retry.assert_problem(409, "response-not-replayable");
    assert_eq!(p["original_status"], 201);
    assert_eq!(up.count("/big/5000"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_body_over_limit_is_413_body_too_large_and_never_forwarded() {
    let (up, gw) = setup(changed(config(), |c| c.max_request_body = 1024)).await;
    let r = gw
        .send(Req::post("/charges").key("huge-1").body(vec![b'x'; 2048]))
        .await;
    let p = r.assert_problem(413, "body-too-large");
    assert_eq!(p["idempotency_key"], "huge-1");

    // Chunked, so the limit is found while reading, not from Content-Length.
    let chunk = "y".repeat(700);
    let body = format!("2bc\r\n{chunk}\r\n2bc\r\n{chunk}\r\n0\r\n\r\n");
    let raw = raw_request(
        "POST",
        "/charges",
        &[
            ("idempotency-key", "huge-2"),
            ("transfer-encoding", "chunked"),
            ("connection", "close"),
        ],
        body.as_bytes(),
    );
    let (status, text) = raw_exchange(gw.addr, &raw).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("body-too-large"), "{text}");
    assert_eq!(up.total(), 0);
    assert!(
        gw.store.get(&tenant_id("huge-1")).await.is_none(),
        "rejections are never stored"
    );
}

// ---------------------------------------------------------------------------
// 15. Retention and tombstones (section 7)
// ---------------------------------------------------------------------------

async fn retention(engine: Engine) {
    let (up, gw) = setup_on(
        engine,
        changed(config(), |c| {
            c.retention = Retention {
                retention: Duration::from_millis(200),
                tombstone_retention: Duration::from_secs(60),
                lease: Duration::from_secs(30),
            }
        }),
    )
    .await;
    let req = Req::post("/charges").key("old-1").json("{}");
    let first = gw.send(req.clone()).await;
    assert_eq!(first.status, 201);

    // Poll until retention passes: replays until then, then the tombstone.
    let until = tokio::time::Instant::now() + DEADLINE;
    let expired = loop {
        let r = gw.send(req.clone()).await;
        if r.status != 201 {
            break r;
        }
        assert!(r.is_replay(), "inside retention the response is replayed");
        assert!(
            tokio::time::Instant::now() < until,
            "the replay never turned into key-expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let p = expired.assert_problem(422, "key-expired");
    assert_eq!(p["idempotency_key"], "old-1");
    // Still a tombstone, still not executed.
    gw.send(req).await.assert_problem(422, "key-expired");
    assert_eq!(up.count("/charges"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_retention_a_retry_gets_422_key_expired_and_is_not_executed() {
    retention(Engine::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_after_retention_a_retry_gets_422_key_expired_and_is_not_executed() {
    retention(Engine::Sqlite).await;
}

// ---------------------------------------------------------------------------
// 16. Store failure (section 8)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_failure_fails_closed_with_503_store_unavailable() {
    let up = Upstream::start().await;
    let gw = Gateway::start(up.uri(), config(), TestStore::from(Arc::new(FailingStore))).await;
    let r = gw.send(Req::post("/charges").key("down-1")).await;
    let p = r.assert_problem(503, "store-unavailable");
    assert_eq!(p["idempotency_key"], "down-1");
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("idempotency-key"), Some("down-1"));
    assert_eq!(up.total(), 0, "fail closed: nothing forwarded");
    let health = gw.admin_get("/health").await;
    assert_eq!(health.status, 503, "{}", health.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_memory_store_refuses_new_keys_and_still_replays_known_ones() {
    // As found: the memory store grew without bound under unique keys.
    let up = Upstream::start().await;
    let store = Arc::new(idem_store::MemoryStore::with_max_records(2));
    let gw = Gateway::start(up.uri(), config(), TestStore::from(store)).await;
    for key in ["full-1", "full-2"] {
        assert_eq!(gw.send(Req::post("/charges").key(key)).await.status, 201);
    }
    let refused = gw.send(Req::post("/charges").key("full-3")).await;
    refused.assert_problem(503, "store-full");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(up.total(), 2, "the refused key was not forwarded");
    // Nothing live or replayable was evicted to make room.
    let replay = gw.send(Req::post("/charges").key("full-1")).await;
    assert!(replay.is_replay());
    assert_eq!(up.total(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweeper_keeps_up_with_a_backlog_far_beyond_one_pass_of_batches() {
    // As found: at most 10 x sweep_batch records were swept per interval,
    // so above ~80 completions/s the backlog grew without end.
    use idem_core::{Fingerprint, FingerprintInput, IdempotencyKey, RecordId, Retention, Scope};
    use idem_store::{Claim, Store};
    let store = Arc::new(idem_store::MemoryStore::new());
    let long_ago =
        idem_core::Timestamp(idem_core::Timestamp::now().as_millis() - 30 * 24 * 3600 * 1000);
    let fp = Fingerprint::compute(&FingerprintInput {
        method: "POST",
        path: "/",
        query: None,
        content_type: None,
        extra_headers: &[],
        body: b"",
    });
    let id = |i: usize| RecordId {
        scope: Scope::global(),
        key: IdempotencyKey::parse(format!("old-{i}").as_bytes()).unwrap(),
    };
    const BACKLOG: usize = 5_000;
    for i in 0..BACKLOG {
        let claim = Claim::new(id(i), fp, long_ago, &Retention::default(), false);
        store.claim(claim).await.unwrap();
    }
    let up = Upstream::start().await;
    let options = idem_gateway::GatewayOptions {
        sweep_interval: Duration::from_secs(3600),
        sweep_batch: 100, // the old pace: 1,000 records per hour
        ..idem_gateway::GatewayOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            up.uri(),
            store.clone() as Arc<dyn Store>,
        )
    };
    let running = idem_gateway::start(options).await.unwrap();
    wait_until(
        DEADLINE,
        "the whole backlog is swept in the first pass",
        || {
            let store = store.clone();
            async move {
                for i in (0..BACKLOG).step_by(100) {
                    if store.get(&id(i)).await.unwrap().is_some() {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_shows_the_store_error_only_to_the_admin_token() {
    let up = Upstream::start().await;
    let options = idem_gateway::GatewayOptions {
        admin: Some("127.0.0.1:0".parse().unwrap()),
        admin_token: idem_gateway::admin::AdminToken::new("s3cret-admin"),
        ..idem_gateway::GatewayOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            up.uri(),
            Arc::new(FailingStore),
        )
    };
    let running = idem_gateway::start(options).await.unwrap();
    let admin = Client::new(running.admin_addr().unwrap());
    let anonymous = admin.send(Req::get("/health").anonymous()).await;
    let wrong = admin
        .send(Req::get("/health").header("authorization", "Bearer guess"))
        .await;
    let admitted = admin
        .send(Req::get("/health").header("authorization", "Bearer s3cret-admin"))
        .await;
    for r in [&anonymous, &wrong, &admitted] {
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json()["status"], "store-unavailable");
    }
    assert!(
        anonymous.json().get("error").is_none(),
        "{}",
        anonymous.text()
    );
    assert!(wrong.json().get("error").is_none(), "{}", wrong.text());
    assert!(
        admitted.json()["error"]
            .as_str()
            .unwrap()
            .contains("injected failure"),
        "{}",
        admitted.text()
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_failure_with_fail_open_forwards_unprotected() {
    let up = Upstream::start().await;
    let gw = Gateway::start(
        up.uri(),
        changed(config(), |c| c.fail_open = true),
        TestStore::from(Arc::new(FailingStore)),
    )
    .await;
    for n in 1..=2 {
        let r = gw.send(Req::post("/charges").key("down-2")).await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert!(!r.is_replay());
        assert_eq!(r.json(), json!({"charge": n}));
        assert_eq!(r.header("idempotency-key"), Some("down-2"));
    }
    assert_eq!(
        up.count("/charges"),
        2,
        "fail open: forwarded without protection"
    );
}

// ---------------------------------------------------------------------------
// 17. Leases (section 6)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_is_renewed_while_the_upstream_executes() {
    let lease = Duration::from_millis(300);
    let (up, gw) = setup(with_lease(lease)).await;
    let client = gw.client.clone();
    let first = tokio::spawn(async move { client.send(Req::post("/slow").key("lease-1")).await });
    up.wait_for_count("/slow", 1).await;
    let held_until = tokio::time::Instant::now() + lease * 4;
    let mut checks = 0;
    while tokio::time::Instant::now() < held_until {
        let dup = gw.send(Req::post("/slow").key("lease-1")).await;
        assert!(
            dup.is_problem("request-in-progress"),
            "after {checks} checks the owner's lease ran out while it was alive: {} {}",
            dup.status,
            dup.text()
        );
        checks += 1;
        tokio::time::sleep(lease / 6).await;
    }
    assert_eq!(
        gw.store.state(&tenant_id("lease-1")).await,
        Some(RecordState::InFlight)
    );
    up.release();
    let first = first.await.unwrap();
    assert_eq!(first.status, 201);
    let retry = gw.send(Req::post("/slow").key("lease-1")).await;
    assert!(retry.is_replay());
    assert_eq!(up.count("/slow"), 1);
}

/// A request that runs longer than `retention` (+ `tombstone_retention`)
/// is still in flight: retention applies to completed records (section 7),
/// and an in-flight key answers 409 `request-in-progress` (section 3). The
/// claim's provisional horizons must not expire a live, renewed claim.
async fn long_execution_outlives_retention(tombstone_retention: Duration) {
    let (up, gw) = setup(changed(config(), |c| {
        c.retention = Retention {
            retention: Duration::from_millis(200),
            tombstone_retention,
            lease: Duration::from_secs(30),
        }
    }))
    .await;
    let client = gw.client.clone();
    let first = tokio::spawn(async move { client.send(Req::post("/slow").key("long-1")).await });
    up.wait_for_count("/slow", 1).await;
    let held_until = tokio::time::Instant::now() + Duration::from_millis(500);
    while tokio::time::Instant::now() < held_until {
        // A duplicate that is forwarded blocks in /slow: bound the wait.
        let dup = tokio::time::timeout(
            Duration::from_millis(500),
            gw.send(Req::post("/slow").key("long-1")),
        )
        .await;
        let Ok(dup) = dup else {
            panic!(
                "the duplicate was forwarded while the first still executes: /slow executed {} times",
                up.count("/slow")
            );
        };
        assert!(
            dup.is_problem("request-in-progress"),
            "a key still executing answered {} {}",
            dup.status,
            dup.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    up.release();
    assert_eq!(first.await.unwrap().status, 201);
    assert_eq!(up.count("/slow"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn execution_longer_than_retention_is_still_request_in_progress_not_key_expired() {
    long_execution_outlives_retention(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn execution_longer_than_retention_and_tombstone_is_never_executed_twice() {
    long_execution_outlives_retention(Duration::ZERO).await;
}

// ---------------------------------------------------------------------------
// 18. Forwarding (section 6)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarding_keeps_the_key_strips_hop_by_hop_and_sets_x_forwarded() {
    let (up, gw) = setup(config()).await;
    let r = gw
        .send(
            Req::post("/charges")
                .key(r#""fwd-1""#)
                .header("connection", "x-foo")
                .header("x-foo", "hop")
                .header("keep-alive", "timeout=5")
                .header("x-other", "kept")
                .json("{}"),
        )
        .await;
    assert_eq!(r.status, 201);
    let seen = up.last_seen("/charges");
    let h = &seen.headers;
    assert_eq!(
        h["idempotency-key"], r#""fwd-1""#,
        "the key is forwarded unchanged"
    );
    assert!(
        h.get("x-foo").is_none(),
        "a header named by Connection is hop-by-hop: {h:?}"
    );
    assert!(h.get("keep-alive").is_none(), "{h:?}");
    assert!(
        h.get_all("connection")
            .iter()
            .all(|v| !v.to_str().unwrap().contains("x-foo")),
        "{h:?}"
    );
    assert_eq!(h["x-other"], "kept");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string().as_str());
    assert_eq!(seen.body, "{}");

    // A client's own forwarding headers are not believed (trust_forwarded
    // is off by default): the gateway writes its own readings.
    gw.send(
        Req::post("/charges")
            .key("fwd-2")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-proto", "https")
            .header("forwarded", "for=10.0.0.1;host=evil.example")
            .header("x-real-ip", "10.0.0.1")
            .header("x-forwarded-port", "8443")
            .header("x-forwarded-prefix", "/admin"),
    )
    .await;
    let h = up.last_seen("/charges").headers;
    for claimed in ["x-forwarded-port", "x-forwarded-prefix"] {
        assert!(
            h.get(claimed).is_none(),
            "{claimed} reached the upstream: {h:?}"
        );
    }
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string().as_str());
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(
        h.get("forwarded").is_none() && h.get("x-real-ip").is_none(),
        "{h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_response_is_streamed_through() {
    let (up, gw) = setup(config()).await;
    let response = gw.client.send_streaming(Req::get("/stream")).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // The first chunk arrives while the upstream still holds the rest.
    let first = tokio::time::timeout(EXCHANGE_TIMEOUT, body.frame())
        .await
        .expect("first chunk before the upstream finishes")
        .expect("a frame")
        .expect("no error");
    assert_eq!(first.into_data().expect("data"), "first\n");
    up.release();
    let rest = tokio::time::timeout(EXCHANGE_TIMEOUT, body.collect())
        .await
        .expect("rest in time")
        .expect("rest")
        .to_bytes();
    assert_eq!(rest, "second\n");
}

// ---------------------------------------------------------------------------
// 19. Admin
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_serves_health_and_request_metrics() {
    let (_up, gw) = setup(config()).await;
    let health = gw.admin_get("/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["store"], "memory");

    for _ in 0..2 {
        gw.send(Req::post("/charges").key("metrics-1")).await;
    }
    let metrics = gw.admin_get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    // The recorder is the process's: under `cargo test` the other tests of
    // this binary count into it too, so only the lines are checked here.
    for outcome in ["executed", "replayed"] {
        let line = format!("idem_requests_total{{outcome=\"{outcome}\"}} ");
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
}

/// The SQLite writer commits operations in batches; /metrics shows their
/// sizes, so an operator can tell group commit at work from one commit per
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_metrics_show_the_sqlite_commit_batch_sizes() {
    let (_up, gw) = setup_on(Engine::Sqlite, config()).await;
    let answer = gw.send(Req::post("/charges").key("batch-metrics-1")).await;
    assert_eq!(answer.status, 201);
    let text = gw.admin_get("/metrics").await.text();
    let line = "idem_store_batch_size_count{engine=\"sqlite\"}";
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .unwrap_or_else(|| panic!("missing {line} in\n{text}"));
    let count: f64 = count.trim().parse().expect("a count");
    assert!(
        count >= 2.0,
        "the claim and the completion were committed: {count}"
    );
    // Its buckets count operations, not seconds: under the latency
    // histograms' buckets (0.0001 s to 1 s) every batch of two or more
    // would fall in `+Inf`, and the distribution would say nothing.
    let bucket =
        |le: &str| format!("idem_store_batch_size_bucket{{engine=\"sqlite\",le=\"{le}\"}} ");
    for le in ["1", "2", "4", "8", "16", "32", "64", "128", "256", "512"] {
        assert!(
            text.contains(&bucket(le)),
            "missing {} in\n{text}",
            bucket(le)
        );
    }
    assert!(
        !text.contains(&bucket("0.5")),
        "a batch size bucket below one operation in\n{text}"
    );
}

// ---------------------------------------------------------------------------
// 20. Graceful shutdown
// ---------------------------------------------------------------------------

async fn graceful_shutdown(engine: Engine) {
    let (up, mut gw) = setup_on(engine, config()).await;
    let client = gw.client.clone();
    let in_flight =
        tokio::spawn(async move { client.send(Req::post("/slow").key("drain-1")).await });
    up.wait_for_count("/slow", 1).await;

    let running = gw.take_running();
    let addr = gw.addr;
    let stopping = tokio::spawn(running.shutdown());
    wait_until(
        DEADLINE,
        "the gateway stops accepting connections",
        || async { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the request in flight"
    );

    up.release();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json(), json!({"slow": 1}));
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("shutdown finishes once the request is done")
        .unwrap();
    assert_eq!(
        gw.store.state(&tenant_id("drain-1")).await,
        Some(RecordState::Completed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_lets_in_flight_requests_finish_and_stores_the_outcome() {
    graceful_shutdown(Engine::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_graceful_shutdown_lets_in_flight_requests_finish_and_stores_the_outcome() {
    graceful_shutdown(Engine::Sqlite).await;
}
