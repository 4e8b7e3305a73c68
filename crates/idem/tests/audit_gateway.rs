//! idem's own gateway under its own auditor: a real `idem gateway` process
//! on each durable store engine (SQLite, PostgreSQL, Redis), in front of an
//! API with no idempotency at all, attacked by a real `idem audit` process.
//! Every scenario must pass on every engine: the engines differ in how
//! they claim and wake, and the auditor's bursts, lost answers and
//! hang-ups are exactly what those paths must survive.

mod shared_store;

use idem_sample_api::{Flaw, RunningSampleApi, SampleApiOptions};
use shared_store::{pg_up, redis_up, redis_url, Gateway, PgSchema, RedisPrefix};
use std::process::Command;
use std::time::Duration;

async fn api() -> RunningSampleApi {
    let mut options = SampleApiOptions::new(Flaw::NoIdempotency);
    options.latency = Duration::from_millis(100);
    idem_sample_api::start(options)
        .await
        .expect("sample API starts")
}

/// Audits the gateway at `gateway` (in front of `api`) with every default
/// scenario and every oracle, and asserts a clean report.
async fn audit_is_clean(gateway: &Gateway, api: &RunningSampleApi, engine: &str) {
    let base = format!("http://{}", gateway.addr);
    let args: Vec<String> = [
        "audit",
        "--url",
        &format!("{base}/payments"),
        "--body",
        r#"{"amount":2500,"currency":"eur"}"#,
        "--header",
        "Authorization: Bearer sk_a",
        "--alt-header",
        "Authorization: Bearer sk_b",
        "--id-field",
        "id",
        // Counted at the API itself, behind the gateway.
        "--count-url",
        &format!("{}/payments/count", api.url()),
        "--error-body",
        r#"{"amount":5000000,"currency":"eur"}"#,
        "--burst",
        "10",
        "--rounds",
        "3",
        "--abandon-after",
        "30ms",
        "--format",
        "json",
    ]
    .map(String::from)
    .to_vec();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_idem"))
            .args(&args)
            .output()
            .expect("idem runs")
    })
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{engine}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let not_passed: Vec<String> = report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] != "pass")
        .map(|s| format!("{} {}: {}", s["id"], s["verdict"], s["summary"]))
        .collect();
    assert!(not_passed.is_empty(), "{engine}: {}", not_passed.join("\n"));
    assert_eq!(out.status.code(), Some(0), "{engine}");
}

fn config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    // The defaults: scope by Authorization, keys optional, 409 in flight.
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "shutdown_grace = \"1s\"\n").unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_on_sqlite_passes_every_scenario() {
    let api = api().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("idem.db").display());
    let gateway = Gateway::start(api.addr(), &store, &config(&dir));
    audit_is_clean(&gateway, &api, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_on_postgres_passes_every_scenario() {
    if !pg_up().await {
        return;
    }
    let api = api().await;
    let dir = tempfile::tempdir().unwrap();
    let schema = PgSchema::new();
    let gateway = Gateway::start(api.addr(), &schema.store_url(), &config(&dir));
    audit_is_clean(&gateway, &api, "postgres").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_on_redis_passes_every_scenario() {
    if !redis_up().await {
        return;
    }
    let api = api().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = RedisPrefix::new(&redis_url());
    let gateway = Gateway::start(api.addr(), &prefix.store_url(), &config(&dir));
    audit_is_clean(&gateway, &api, "redis").await;
}
