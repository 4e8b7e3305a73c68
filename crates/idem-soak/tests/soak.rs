//! The soak runner against real servers on 127.0.0.1: a counting upstream
//! with a count endpoint, `idem chaos` losing a fifth of the responses, and
//! `idem gateway` in between or not.

use idem_chaos::{ChaosOptions, Faults, Methods, RunningChaos};
use idem_client::RetryPolicy;
use idem_gateway::{GatewayOptions, RunningGateway};
use idem_soak::{parse_body, parse_url, run, CountField, Progress, SoakError, SoakOptions};
use idem_store::MemoryStore;
use idem_testkit::counting_upstream;
use idem_tower::IdempotencyConfig;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

async fn gateway(upstream: SocketAddr) -> RunningGateway {
    idem_gateway::start(GatewayOptions {
        idempotency: IdempotencyConfig::default(),
        shutdown_grace: Duration::from_secs(5),
        sweep_interval: Duration::from_millis(50),
        sweep_batch: 100,
        ..GatewayOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            format!("http://{upstream}").parse().unwrap(),
            Arc::new(MemoryStore::new()),
        )
    })
    .await
    .expect("gateway starts")
}

async fn chaos(upstream: SocketAddr, drop_response: f64) -> RunningChaos {
    idem_chaos::start(ChaosOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: format!("http://{upstream}").parse().unwrap(),
        upstream_ca: None,
        faults: Faults {
            drop_response,
            ..Faults::default()
        },
        methods: Methods::default(),
        seed: Some(2024),
        log: None,
    })
    .await
    .expect("chaos starts")
}

const OPERATIONS: u64 = 200;

fn options(target: SocketAddr, count: &str) -> SoakOptions {
    let mut options = SoakOptions::new(
        parse_url(&format!("http://{target}/charges")).unwrap(),
        parse_url(count).unwrap(),
        OPERATIONS,
    );
    options.body = Some(parse_body(r#"{"amount":100,"currency":"eur"}"#).unwrap());
    options.concurrency = 8;
    options.headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Bearer soak-test"),
    );
    // Fast retries; enough attempts that a fifth lost each time is
    // survivable (0.2^10 per operation).
    options.policy = RetryPolicy::default()
        .backoff(Duration::from_millis(2), Duration::from_millis(20))
        .max_attempts(10)
        .seed(5);
    options
}

#[tokio::test]
async fn without_the_gateway_lost_responses_become_duplicates() {
    let (upstream, count) = counting_upstream().await;
    // Effects from before the soak must not count.
    count.store(1000, Ordering::SeqCst);
    let chaos = chaos(upstream, 0.2).await;
    let options = options(chaos.addr(), &format!("http://{upstream}/count"));
    let report = run(&options, &|_| {}).await.unwrap();
    let summary = chaos.shutdown().await;

    assert_eq!(report.logical_operations, OPERATIONS);
    assert_eq!(report.count_before, 1000);
    assert_eq!(report.effects, count.load(Ordering::SeqCst) - 1000);
    assert_eq!(report.effects, report.count_after - report.count_before);
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(report.succeeded, OPERATIONS);
    // Every lost response was executed, then retried and executed again.
    assert!(report.duplicates > 0, "{report}");
    assert_eq!(
        report.duplicates, summary.drop_response,
        "{report}\n{summary}"
    );
    assert_eq!(report.duplicates, report.effects - OPERATIONS);
    assert_eq!(report.attempts, OPERATIONS + summary.drop_response);
    let rate = report.duplicates as f64 / OPERATIONS as f64;
    assert_eq!(report.duplicate_rate, rate);
    assert!(report.upper_bound_95 > rate && report.upper_bound_95 < 1.0);
    assert_eq!(report.replayed, 0, "nothing replays without the gateway");
}

#[tokio::test]
async fn behind_the_gateway_there_are_none_and_the_bound_is_reported() {
    let (upstream, count) = counting_upstream().await;
    let gateway = gateway(upstream).await;
    let chaos = chaos(gateway.addr(), 0.2).await;
    let mut options = options(chaos.addr(), &format!("http://{upstream}/stats"));
    options.count_field = "stats.charges".parse::<CountField>().unwrap();
    let calls = Mutex::new(Vec::<Progress>::new());
    let report = run(&options, &|p| calls.lock().unwrap().push(*p))
        .await
        .unwrap();
    let summary = chaos.shutdown().await;
    gateway.shutdown().await;

    assert!(summary.drop_response > 0, "{summary}");
    assert_eq!(report.effects, OPERATIONS, "{report}");
    assert_eq!(count.load(Ordering::SeqCst), OPERATIONS);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.duplicate_rate, 0.0);
    assert_eq!(
        report.upper_bound_95,
        idem_math::formula::upper_bound_95(OPERATIONS)
    );
    assert_eq!(report.succeeded, OPERATIONS);
    assert_eq!((report.failed, report.outcome_unknown), (0, 0));
    assert!(
        report.replayed > 0,
        "lost responses come back as replays: {report}"
    );
    let calls = calls.into_inner().unwrap();
    assert_eq!(calls.len() as u64, OPERATIONS);
    assert!(calls.windows(2).all(|w| w[0].done + 1 == w[1].done));
    assert_eq!(calls.last().unwrap().succeeded, OPERATIONS);

    let json: serde_json::Value = serde_json::from_str(&report.to_json_pretty()).unwrap();
    for field in [
        "logical_operations",
        "effects",
        "duplicates",
        "duplicate_rate",
        "upper_bound_95",
        "outcome_unknown",
        "failed",
    ] {
        assert!(json[field].is_number(), "{field} in {json}");
    }
    let text = report.to_string();
    assert!(text.contains("1 - 0.05^(1/200)"), "{text}");
}

#[tokio::test]
async fn count_endpoint_problems_name_the_flag() {
    let (upstream, _count) = counting_upstream().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);

    let mut o = options(upstream, &format!("http://{closed}/count"));
    o.requests = 1;
    let e = run(&o, &|_| {}).await.unwrap_err();
    assert!(matches!(e, SoakError::Count { .. }), "{e}");
    assert!(e.to_string().starts_with("--count-url "), "{e}");

    let mut o = options(upstream, &format!("http://{upstream}/stats"));
    o.requests = 1;
    let e = run(&o, &|_| {}).await.unwrap_err();
    assert!(e.to_string().contains("--count-field"), "{e}");

    o.count_field = "stats.refunds".parse().unwrap();
    let e = run(&o, &|_| {}).await.unwrap_err();
    assert!(e.to_string().contains("no `refunds`"), "{e}");

    let mut o = options(upstream, &format!("http://{upstream}/text"));
    o.requests = 1;
    let e = run(&o, &|_| {}).await.unwrap_err();
    assert!(e.to_string().contains("not JSON"), "{e}");

    let mut o = options(upstream, &format!("http://{upstream}/missing"));
    o.requests = 1;
    let e = run(&o, &|_| {}).await.unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
}
