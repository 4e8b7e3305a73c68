//! The auditor as a library in a service's own tests: `Audit` serves an
//! in-process axum app on 127.0.0.1 for the run and returns the report.
//! With the idem-tower layer the app passes; without it, the duplicate a
//! replay causes is found.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use idem_audit::{Audit, ScenarioId, Target, Verdict};
use idem_tower::{IdempotencyConfig, IdempotencyLayer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A charges API: each POST is one side effect, with a fresh id; the
/// count of effects is at `/charges/count`.
fn charges_app() -> Router {
    let charges = Arc::new(AtomicU64::new(0));
    Router::new()
        .route(
            "/charges",
            post(
                |State(n): State<Arc<AtomicU64>>, Json(body): Json<serde_json::Value>| async move {
                    let id = n.fetch_add(1, Ordering::SeqCst) + 1;
                    (
                        http::StatusCode::CREATED,
                        Json(
                            serde_json::json!({"id": format!("ch_{id}"), "amount": body["amount"]}),
                        ),
                    )
                },
            ),
        )
        .route(
            "/charges/count",
            get(|State(n): State<Arc<AtomicU64>>| async move {
                Json(serde_json::json!({"count": n.load(Ordering::SeqCst)}))
            }),
        )
        .with_state(charges)
}

fn audit(app: Router) -> Audit<'static> {
    Audit::new(Target::app(app))
        .path("/charges")
        .body(r#"{"amount":100,"currency":"eur"}"#)
        .header("Authorization", "Bearer sk_test_a")
        .alt_header("Authorization", "Bearer sk_test_b")
        .id_field("id")
        .count_path("/charges/count")
        .rounds(3)
}

#[tokio::test]
async fn an_app_behind_the_idem_tower_layer_passes_the_audit() {
    let store = Arc::new(idem_store::MemoryStore::new());
    let app = charges_app().layer(IdempotencyLayer::new(IdempotencyConfig::default(), store));
    let report = audit(app).run().await.expect("the audit runs");
    let text = idem_audit::report::render(&report, Default::default(), Default::default());
    assert!(report.passed(), "{text}");
    assert_eq!(report.exit_code(), 0, "{text}");
    let burst = report.result(ScenarioId::ConcurrentBurst).unwrap();
    assert_eq!((burst.verdict, burst.trials), (Verdict::Pass, 3), "{text}");
    assert_eq!(
        report.result(ScenarioId::CrossTenant).unwrap().verdict,
        Verdict::Pass,
        "{text}"
    );
    // The endpoint is named after the served address, 127.0.0.1.
    assert!(
        report.endpoints[0].url.starts_with("http://127.0.0.1:"),
        "{text}"
    );
}

#[tokio::test]
async fn the_same_app_without_the_layer_is_caught_executing_a_replay_again() {
    let report = audit(charges_app())
        .scenarios([ScenarioId::SequentialReplay, ScenarioId::ConcurrentBurst])
        .run()
        .await
        .expect("the audit runs");
    let text = idem_audit::report::render(&report, Default::default(), Default::default());
    assert!(!report.passed(), "{text}");
    assert_eq!(report.exit_code(), 1, "{text}");
    let replay = report.result(ScenarioId::SequentialReplay).unwrap();
    assert_eq!(replay.verdict, Verdict::Fail, "{text}");
    assert!(
        replay.summary.contains("executed 3 times"),
        "{}",
        replay.summary
    );
    let burst = report.result(ScenarioId::ConcurrentBurst).unwrap();
    assert_eq!(
        (burst.verdict, burst.failed_trials),
        (Verdict::Fail, 3),
        "{text}"
    );
}

#[tokio::test]
async fn a_bad_setting_is_an_error_before_anything_is_served() {
    let err = audit(charges_app())
        .id_field("a..b")
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("id_field"), "{err}");
    let err = audit(charges_app()).burst(1).run().await.unwrap_err();
    assert!(
        err.to_string().contains("burst: must be at least 2"),
        "{err}"
    );
}
