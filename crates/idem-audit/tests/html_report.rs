//! The HTML report in a real headless Chromium (chromedriver over
//! WebDriver): what a person opening the file sees. The report comes
//! from a real audit of an API on 127.0.0.1 that executes every replay
//! again and puts a `<script>` in its bodies.

use axum::routing::post;
use axum::Router;
use idem_audit::report::{render, ReportFormat};
use idem_audit::{Audit, ScenarioId, Target};
use idem_testkit::browser::{Browser, Locator};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The hostile part of every answer.
const INJECTED: &str = "<script>window.__pwned = 1; document.title = 'pwned';</script>";

/// An API without idempotency whose answers carry a script.
fn hostile_app() -> Router {
    let n = Arc::new(AtomicU64::new(0));
    Router::new().route(
        "/payments",
        post(move || {
            let id = n.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                (
                    http::StatusCode::CREATED,
                    [("content-type", "application/json")],
                    format!("{{\"id\":\"pay_{id}\",\"note\":\"{INJECTED}\"}}"),
                )
            }
        }),
    )
}

#[tokio::test]
async fn the_html_report_renders_verdicts_expands_evidence_and_never_runs_the_apis_script() {
    let report = Audit::new(Target::app(hostile_app()))
        .path("/payments")
        .body(r#"{"amount":100}"#)
        .id_field("id")
        .scenarios([
            ScenarioId::SequentialReplay,
            ScenarioId::LostResponse,
            ScenarioId::MissingKey,
        ])
        .run()
        .await
        .expect("the audit runs");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.html");
    std::fs::write(
        &file,
        render(&report, ReportFormat::Html, Default::default()),
    )
    .unwrap();

    let browser = Browser::start().await;
    let c = browser.client();
    c.goto(&format!("file://{}", file.display())).await.unwrap();

    // The API's script did not run: no global, the title is the report's.
    let pwned = c
        .execute("return typeof window.__pwned;", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, serde_json::json!("undefined"));
    assert_eq!(c.title().await.unwrap(), "idem audit: FAIL");
    let verdict = c.find(Locator::Css("#verdict")).await.unwrap();
    assert_eq!(verdict.text().await.unwrap(), "FAIL");

    // The summary cell of the failing scenario carries the fail class and
    // is drawn in the fail colour; the passing one in the pass colour.
    let cell = c
        .find(Locator::Css(
            "#summary td[data-scenario='sequential-replay']",
        ))
        .await
        .unwrap();
    assert_eq!(
        cell.attr("class").await.unwrap().as_deref(),
        Some("cell fail")
    );
    assert!(cell.text().await.unwrap().starts_with("FAIL"));
    let colour = |selector: &'static str| async move {
        c.execute(
            &format!(
                "return getComputedStyle(document.querySelector(\"{selector}\")).backgroundColor;"
            ),
            vec![],
        )
        .await
        .unwrap()
    };
    assert_eq!(
        colour("#summary td[data-scenario='sequential-replay']").await,
        serde_json::json!("rgb(255, 235, 233)")
    );
    assert_eq!(
        colour("#summary td[data-scenario='missing-key']").await,
        serde_json::json!("rgb(218, 251, 225)")
    );

    // The bound figures are on the page.
    let bound = c.find(Locator::Css("#bound")).await.unwrap();
    assert!(bound.text().await.unwrap().contains("raced trials"));

    // The failure's evidence is collapsed until its summary is clicked.
    let details = c
        .find(Locator::Css("details[data-scenario='sequential-replay']"))
        .await
        .unwrap();
    let answer = details.find(Locator::Css("pre.answer")).await.unwrap();
    assert!(
        !answer.is_displayed().await.unwrap(),
        "evidence starts collapsed"
    );
    details
        .find(Locator::Css("summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(answer.is_displayed().await.unwrap(), "a click expands it");
    let shown = answer.text().await.unwrap();
    assert!(shown.contains("201 Created"), "{shown}");
    // The script is there as text, exactly as the API sent it.
    assert!(shown.contains(INJECTED), "{shown}");
    let scripts = c
        .execute("return document.querySelectorAll('script').length;", vec![])
        .await
        .unwrap();
    assert_eq!(scripts, serde_json::json!(0));
    browser.close().await;
}
