//! The auditor against one real test server per idempotency bug a team
//! ships, and a correct one: each bug is caught, in the scenario that
//! exposes it, every run; the correct server is never flagged.
//!
//! The servers are `idem-sample-api` on 127.0.0.1 (a payments API whose
//! work runs on even when the client hangs up), reached over real TCP.

use idem_audit::{
    audit, AuditOptions, AuditReport, Endpoint, NoProgress, ScenarioId, Severity, Verdict,
};
use idem_sample_api::{Flaw, RunningSampleApi, SampleApiOptions};
use std::time::Duration;

use ScenarioId::*;
use Verdict::{Fail, Pass};

/// Long enough that a hang-up at 150 ms lands mid-flight even on a loaded
/// machine (the server must have started the work by then: a request whose
/// client left before the server first looked at it is never executed,
/// which would hide the bug), and that a burst of 10 overlaps.
const LATENCY: Duration = Duration::from_millis(300);

async fn api(flaw: Flaw) -> RunningSampleApi {
    let mut options = SampleApiOptions::new(flaw);
    options.latency = LATENCY;
    idem_sample_api::start(options)
        .await
        .expect("sample API starts")
}

/// Every oracle the sample API offers: ids, a per-tenant count, a second
/// tenant, a body that gets the card declined.
fn endpoint(api: &RunningSampleApi) -> Endpoint {
    let base = api.url();
    let mut e = Endpoint::new(format!("{base}/payments").parse().unwrap())
        .with_body(r#"{"amount":2500,"currency":"eur"}"#)
        .with_header("Authorization", "Bearer sk_tenant_a")
        .with_alt_header("Authorization", "Bearer sk_tenant_b");
    e.id_field = Some("id".parse().unwrap());
    e.count_url = Some(format!("{base}/payments/count").parse().unwrap());
    e.error_body = Some(r#"{"amount":5000000,"currency":"eur"}"#.into());
    e.burst = 10;
    e.rounds = 3;
    e.abandon_after = Duration::from_millis(150);
    e
}

async fn run(endpoint: Endpoint) -> AuditReport {
    audit(&AuditOptions::new(vec![endpoint]), &NoProgress)
        .await
        .expect("the audit runs")
}

fn verdict(report: &AuditReport, id: ScenarioId) -> Verdict {
    report
        .scenarios
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("{id} was not run"))
        .verdict
}

/// Asserts the verdict of every listed scenario, printing the whole
/// report on a mismatch so the evidence is in the test output.
fn expect(report: &AuditReport, expected: &[(ScenarioId, Verdict)]) {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(id, v)| verdict(report, *id) != *v)
        .map(|(id, v)| format!("{id}: expected {v}, got {}", verdict(report, *id)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{}\n\n{}",
        wrong.join("\n"),
        idem_audit::report::render(report, Default::default(), Default::default())
    );
}

/// What every run expects of scenarios the flaw does not touch.
fn all_pass_but(failing: &[ScenarioId]) -> Vec<(ScenarioId, Verdict)> {
    [
        SequentialReplay,
        ConcurrentBurst,
        LostResponse,
        AbandonedRequest,
        PayloadMismatch,
        CrossTenant,
        MissingKey,
        InvalidKey,
        ErrorReplay,
        ReplayMarker,
    ]
    .into_iter()
    .map(|id| (id, if failing.contains(&id) { Fail } else { Pass }))
    .collect()
}

#[tokio::test]
async fn a_correct_api_is_never_flagged_across_repeated_runs() {
    let api = api(Flaw::None).await;
    for run_number in 1..=3 {
        let report = run(endpoint(&api)).await;
        expect(&report, &all_pass_but(&[]));
        assert_eq!(report.verdict, Pass, "run {run_number}");
        assert_eq!(report.exit_code(), 0);
        // 3 burst rounds + lost + abandoned, all clean: a bound, not a rate.
        assert_eq!(report.bound.trials, 5);
        assert!(report.bound.upper_bound_95.is_some());
    }
}

#[tokio::test]
async fn a_correct_api_with_only_bodies_to_compare_is_indeterminate_never_failed() {
    let api = api(Flaw::None).await;
    let mut e = endpoint(&api);
    e.id_field = None;
    e.count_url = None;
    let report = run(e).await;
    assert_eq!(report.count(Fail), 0, "no false positive without oracles");
    // Without an oracle a second execution with the same answer cannot be
    // ruled out: never a silent pass.
    for id in [SequentialReplay, ConcurrentBurst, AbandonedRequest] {
        assert_eq!(verdict(&report, id), Verdict::Indeterminate, "{id}");
    }
    assert_eq!(report.exit_code(), 3);
}

#[tokio::test]
async fn no_idempotency_is_caught_by_every_duplicate_scenario() {
    let api = api(Flaw::NoIdempotency).await;
    let report = run(endpoint(&api)).await;
    expect(
        &report,
        &all_pass_but(&[
            SequentialReplay,
            ConcurrentBurst,
            LostResponse,
            AbandonedRequest,
            PayloadMismatch,
            InvalidKey,
            ErrorReplay,
        ]),
    );
    let burst = report
        .scenarios
        .iter()
        .find(|s| s.id == ConcurrentBurst)
        .unwrap();
    assert_eq!((burst.trials, burst.failed_trials), (3, 3));
    assert_eq!(burst.severity, Severity::High);
    assert!(!burst.evidence.curl.is_empty() && !burst.evidence.exchanges.is_empty());
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn check_then_act_passes_sequential_replays_and_fails_concurrent_ones() {
    let api = api(Flaw::CheckThenAct).await;
    for _ in 0..2 {
        let report = run(endpoint(&api)).await;
        // The retry after a hang-up arrives while the first attempt still
        // runs: no lock, so it executes too (the same missing lock).
        expect(&report, &all_pass_but(&[ConcurrentBurst, AbandonedRequest]));
        let burst = report
            .scenarios
            .iter()
            .find(|s| s.id == ConcurrentBurst)
            .unwrap();
        assert_eq!(burst.failed_trials, burst.trials, "every round races");
    }
}

#[tokio::test]
async fn keys_not_scoped_by_tenant_leak_one_tenants_response_to_another() {
    let api = api(Flaw::UnscopedKeys).await;
    let report = run(endpoint(&api)).await;
    expect(&report, &all_pass_but(&[CrossTenant]));
    let leak = report
        .scenarios
        .iter()
        .find(|s| s.id == CrossTenant)
        .unwrap();
    assert_eq!(leak.severity, Severity::Critical);
    assert!(leak.summary.contains("leaks"), "{}", leak.summary);
}

#[tokio::test]
async fn payload_changes_not_detected_are_caught() {
    let api = api(Flaw::PayloadIgnored).await;
    let report = run(endpoint(&api)).await;
    expect(&report, &all_pass_but(&[PayloadMismatch]));
    let s = report
        .scenarios
        .iter()
        .find(|s| s.id == PayloadMismatch)
        .unwrap();
    assert!(
        s.summary.contains("silently got the first answer"),
        "{}",
        s.summary
    );
}

#[tokio::test]
async fn a_response_stored_only_if_delivered_is_caught_by_the_abandoned_request() {
    let api = api(Flaw::StoreIfDelivered).await;
    for _ in 0..2 {
        let report = run(endpoint(&api)).await;
        expect(&report, &all_pass_but(&[AbandonedRequest]));
    }
}

#[tokio::test]
async fn an_unreachable_api_is_an_error_before_anything_is_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let e = Endpoint::new(format!("http://{addr}/payments").parse().unwrap());
    let err = audit(&AuditOptions::new(vec![e]), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");
}

#[tokio::test]
async fn a_count_url_that_does_not_count_is_an_error_before_anything_is_sent() {
    let api = api(Flaw::None).await;
    let mut e = endpoint(&api);
    e.count_url = Some(format!("{}/nope", api.url()).parse().unwrap());
    let err = audit(&AuditOptions::new(vec![e]), &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--count-url"), "{err}");
    assert_eq!(api.payments(), 0, "nothing executed");
}
