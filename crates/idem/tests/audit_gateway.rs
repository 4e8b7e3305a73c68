//! idem's own gateway under its own auditor: a real `idem gateway` process
//! on each durable store engine (SQLite, PostgreSQL, Redis), in front of an
//! API with no idempotency at all, attacked by a real `idem audit` process.
//! Every scenario must pass on every engine: the engines differ in how
//! they claim and wake, and the auditor's bursts, lost answers and
//! hang-ups are exactly what those paths must survive.

mod shared_store;
mod support;

use idem_sample_api::{Flaw, RunningSampleApi, SampleApiOptions};
use shared_store::{pg_up, redis_up, redis_url, PgSchema, RedisPrefix};
use std::process::Command;
use std::time::Duration;
use support::Idem;

async fn api() -> RunningSampleApi {
    let mut options = SampleApiOptions::new(Flaw::NoIdempotency);
    options.latency = Duration::from_millis(100);
    idem_sample_api::start(options)
        .await
        .expect("sample API starts")
}

/// Audits the gateway at `gateway` (in front of `api`) with every default
/// scenario and every oracle, and asserts a clean report.
async fn audit_is_clean(gateway: &Idem, api: &RunningSampleApi, engine: &str) {
    let (report, code) = audit(&[gateway], api, engine).await;
    let not_passed = not_passed(&report);
    assert!(not_passed.is_empty(), "{engine}: {}", not_passed.join("\n"));
    assert_eq!(code, Some(0), "{engine}");
}

/// The scenarios of a JSON report that did not pass, as `id verdict: summary`.
fn not_passed(report: &serde_json::Value) -> Vec<String> {
    report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] != "pass")
        .map(|s| format!("{} {}: {}", s["id"], s["verdict"], s["summary"]))
        .collect()
}

/// Runs `idem audit` (every default scenario, every oracle) with requests
/// rotating across `gateways`, counting effects at the API itself behind
/// them; returns the JSON report and the exit code.
async fn audit(
    gateways: &[&Idem],
    api: &RunningSampleApi,
    engine: &str,
) -> (serde_json::Value, Option<i32>) {
    let mut args = vec!["audit".to_owned()];
    for gateway in gateways {
        args.extend([
            "--url".to_owned(),
            format!("http://{}/payments", gateway.addr),
        ]);
    }
    args.extend(
        [
            "--body",
            r#"{"amount":2500,"currency":"eur"}"#,
            "--header",
            "Authorization: Bearer sk_a",
            "--alt-header",
            "Authorization: Bearer sk_b",
            "--id-field",
            "id",
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
        .map(String::from),
    );
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
    (report, out.status.code())
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
    let gateway = Idem::gateway(api.addr(), &store, &config(&dir));
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
    let gateway = Idem::gateway(api.addr(), &schema.store_url(), &config(&dir));
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
    let gateway = Idem::gateway(api.addr(), &prefix.store_url(), &config(&dir));
    audit_is_clean(&gateway, &api, "redis").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_with_their_own_stores_duplicate_across_instances() {
    // Each instance keeps its own records: a key's retry that the load
    // balancer sends to the other instance executes again. The auditor,
    // rotating across both, must catch it.
    let api = api().await;
    let dir = tempfile::tempdir().unwrap();
    let store = |name: &str| format!("sqlite:{}", dir.path().join(name).display());
    let a = Idem::gateway(api.addr(), &store("a.db"), &config(&dir));
    let b = Idem::gateway(api.addr(), &store("b.db"), &config(&dir));
    let (report, code) = audit(&[&a, &b], &api, "two sqlite files").await;
    let failed = not_passed(&report);
    for id in ["sequential-replay", "concurrent-burst"] {
        assert!(
            failed
                .iter()
                .any(|f| f.starts_with(&format!("\"{id}\" \"fail\""))),
            "{id} not caught across instances: {failed:?}"
        );
    }
    assert_eq!(code, Some(1));
    let more = report["endpoints"][0]["more_urls"].as_array().map(Vec::len);
    assert_eq!(more, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_sharing_postgres_pass_every_scenario_across_instances() {
    if !pg_up().await {
        return;
    }
    let api = api().await;
    let dir = tempfile::tempdir().unwrap();
    let schema = PgSchema::new();
    let a = Idem::gateway(api.addr(), &schema.store_url(), &config(&dir));
    let b = Idem::gateway(api.addr(), &schema.store_url(), &config(&dir));
    let (report, code) = audit(&[&a, &b], &api, "postgres, two gateways").await;
    assert!(not_passed(&report).is_empty(), "{:?}", not_passed(&report));
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_sharing_redis_pass_every_scenario_across_instances() {
    if !redis_up().await {
        return;
    }
    let api = api().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = RedisPrefix::new(&redis_url());
    let a = Idem::gateway(api.addr(), &prefix.store_url(), &config(&dir));
    let b = Idem::gateway(api.addr(), &prefix.store_url(), &config(&dir));
    let (report, code) = audit(&[&a, &b], &api, "redis, two gateways").await;
    assert!(not_passed(&report).is_empty(), "{:?}", not_passed(&report));
    assert_eq!(code, Some(0));
}
