//! `--openapi` end to end: a YAML document with two operations, served by
//! a real API on 127.0.0.1 where one is behind the idem-tower layer and
//! declares `Idempotency-Key`, the other is neither. One run covers both;
//! every format starts with the summary table and says which operation is
//! unprotected.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use idem_audit::openapi::{self, OpenApiSettings};
use idem_audit::report::{render, ReportFormat};
use idem_audit::{Audit, AuditOptions, Endpoint, ScenarioId, Verdict};
use idem_tower::{IdempotencyConfig, IdempotencyLayer, Route};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const DOC: &str = r##"
openapi: 3.0.3
info: {title: shop, version: "1"}
paths:
  /payments:
    post:
      operationId: createPayment
      parameters:
        - {name: Idempotency-Key, in: header, schema: {type: string}}
      requestBody:
        content:
          application/json:
            schema:
              type: object
              required: [amount]
              properties: {amount: {type: integer, minimum: 100}}
      responses: {201: {description: created}}
  /payments/{payment}/refunds:
    post:
      operationId: refundPayment
      parameters:
        - {name: payment, in: path, required: true, schema: {type: string}}
      requestBody:
        content:
          application/json:
            example: {amount: 5}
      responses: {201: {description: refunded}}
"##;

/// Payments behind the layer, refunds without it; one count of effects.
async fn serve() -> (String, Arc<AtomicU64>) {
    let effects = Arc::new(AtomicU64::new(0));
    let record = |n: &AtomicU64| {
        let id = n.fetch_add(1, Ordering::SeqCst) + 1;
        (
            http::StatusCode::CREATED,
            Json(serde_json::json!({"id": id})),
        )
    };
    let store = Arc::new(idem_store::MemoryStore::new());
    let mut config = IdempotencyConfig::default();
    config.routes = vec![Route::new("/payments")];
    let payments = Router::new()
        .route(
            "/payments",
            post(move |State(n): State<Arc<AtomicU64>>| async move { record(&n) }),
        )
        .layer(IdempotencyLayer::new(config, store));
    let app = Router::new()
        .route(
            "/payments/{payment}/refunds",
            post(
                move |State(n): State<Arc<AtomicU64>>, Path(payment): Path<String>| async move {
                    assert_eq!(payment, "pay_1", "the --param value is in the path");
                    record(&n)
                },
            ),
        )
        .route(
            "/effects",
            get(|State(n): State<Arc<AtomicU64>>| async move {
                Json(serde_json::json!({"count": n.load(Ordering::SeqCst)}))
            }),
        )
        .merge(payments)
        .with_state(effects.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, effects)
}

#[tokio::test]
async fn every_operation_of_a_document_is_audited_in_one_run_and_the_unprotected_one_is_named() {
    let (base, _effects) = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("shop.yaml");
    std::fs::write(&doc, DOC).unwrap();

    let mut settings = OpenApiSettings::new();
    settings.base_url = Some(base.parse().unwrap());
    settings.params = vec![("payment".to_owned(), "pay_1".to_owned())];
    let mut template =
        Endpoint::new(base.parse().unwrap()).with_header("Authorization", "Bearer sk_test_a");
    template.count_url = Some(format!("{base}/effects").parse().unwrap());
    template.scenarios = vec![ScenarioId::SequentialReplay, ScenarioId::LostResponse];
    let endpoints = openapi::load(&doc, &settings, &template).unwrap();
    assert_eq!(endpoints.len(), 2);

    let report = Audit::from_options(AuditOptions::new(endpoints))
        .run()
        .await
        .unwrap();
    let text = render(&report, ReportFormat::Text, Default::default());

    let names: Vec<&str> = report.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["POST /payments", "POST /payments/{payment}/refunds"]
    );
    assert_eq!(report.endpoints[0].key_declared, Some(true));
    assert!(report.endpoints[1].is_unprotected(), "{text}");
    for r in &report.scenarios {
        let want = if r.endpoint == "POST /payments" {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        assert_eq!(r.verdict, want, "{} on {}: {text}", r.id, r.endpoint);
    }

    // The text report: the summary table comes before the first endpoint's
    // section, one row per operation, the unprotected one starred.
    let summary = text
        .find("summary: 2 endpoint(s) × 2 scenario(s)")
        .expect(&text);
    let first_section = text.find("\nPOST /payments: POST http://").expect(&text);
    assert!(summary < first_section, "{text}");
    let row = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name) && l.contains("PASS") | l.contains("FAIL"))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("POST /payments "), "POST /payments PASS PASS");
    assert_eq!(
        row("POST /payments/{payment}/refunds"),
        "POST /payments/{payment}/refunds * FAIL FAIL"
    );
    assert!(text.contains("* unprotected: its API description does not declare the key header"));

    let markdown = render(&report, ReportFormat::Markdown, Default::default());
    let table = markdown.find("## Summary").expect(&markdown);
    assert!(
        table < markdown.find("| Endpoint | Scenario |").unwrap(),
        "{markdown}"
    );
    assert!(
        markdown
            .contains("| POST /payments/{payment}/refunds (unprotected) | **FAIL** | **FAIL** |"),
        "{markdown}"
    );

    let json_text = render(&report, ReportFormat::Json, Default::default());
    assert!(json_text.starts_with("{\n  \"summary\": {"), "{json_text}");
    let json: serde_json::Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(
        json["summary"]["scenarios"],
        serde_json::json!(["sequential-replay", "lost-response"])
    );
    assert_eq!(json["summary"]["rows"][1]["unprotected"], true);
    assert_eq!(json["summary"]["rows"][1]["cells"][0]["mark"], "fail");
    assert_eq!(json["endpoints"][1]["key_declared"], false);

    let junit = render(&report, ReportFormat::Junit, Default::default());
    let summary_suite = junit
        .find("<testsuite name=\"idem audit summary\"")
        .expect(&junit);
    assert!(summary_suite < junit.find("<testsuite name=\"POST /payments\"").unwrap());
    assert!(
        junit.contains("<property name=\"idem.key_declared\" value=\"false\"/>"),
        "{junit}"
    );

    let html = render(&report, ReportFormat::Html, Default::default());
    assert!(html.find("id=\"summary\"").unwrap() < html.find("<h2>Endpoints</h2>").unwrap());
    assert!(html.contains(">unprotected</span>"));
}
