//! `idem audit --openapi` and `--format html` through the real binary:
//! a document's operations audited against a real sample API on
//! 127.0.0.1, and the errors a broken document or a missing parameter
//! value give (exit 2, naming the field or operation).

use idem_sample_api::{Flaw, SampleApiOptions};
use std::process::{Command, Output};

async fn idem(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_idem"))
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .expect("idem runs")
    })
    .await
    .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

const PAYMENTS: &str = r#"{
  "openapi": "3.1.0",
  "info": {"title": "payments", "version": "1"},
  "paths": {"/payments": {"post": {
    "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
    "requestBody": {"content": {"application/json": {"example": {"amount": 2500, "currency": "eur"}}}}
  }}}
}"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_openapi_document_is_audited_and_written_as_an_html_page() {
    let api = idem_sample_api::start(SampleApiOptions::new(Flaw::None))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("payments.json");
    std::fs::write(&doc, PAYMENTS).unwrap();
    let html = dir.path().join("report.html");
    let base = api.url();
    let out = idem(args(&[
        "audit",
        "--openapi",
        &doc.display().to_string(),
        "--base-url",
        &base,
        "--header",
        "Authorization: Bearer sk_a",
        "--count-url",
        &format!("{base}/payments/count"),
        "--scenarios",
        "sequential-replay,lost-response",
        "--format",
        "HTML",
        "--output",
        &html.display().to_string(),
    ]))
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("POST /payments: POST http://"), "{stdout}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains("<td class=\"cell pass\" data-scenario=\"sequential-replay\">"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_documents_and_missing_values_exit_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    };
    let broken = write(
        "broken.yaml",
        "openapi: 3.0.0\npaths:\n  /x:\n    post:\n      parameters: [{name: a}]\n",
    );
    let out = idem(args(&[
        "audit",
        "--openapi",
        &broken,
        "--base-url",
        "http://127.0.0.1:9/",
    ]))
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("broken.yaml: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let refund = write(
        "refund.yaml",
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /payments/{id}/refunds:\n    post:\n      operationId: refund\n      parameters: [{name: id, in: path, required: true, schema: {type: string}}]\n",
    );
    let out = idem(args(&[
        "audit",
        "--openapi",
        &refund,
        "--base-url",
        "http://127.0.0.1:9/",
    ]))
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refund.yaml: POST /payments/{id}/refunds (operationId refund): path parameter `id` has no example; give --param id=VALUE"),
        "{stderr}"
    );

    let out = idem(args(&[
        "audit",
        "--openapi",
        &refund,
        "--url",
        "http://127.0.0.1:9/x",
    ]))
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--url cannot be combined with --openapi"),
        "{stderr}"
    );

    let out = idem(args(&[
        "audit",
        "--url",
        "http://127.0.0.1:9/x",
        "--param",
        "a=1",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2), "--param needs --openapi");
}
