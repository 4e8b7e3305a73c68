//! The auditor against one real test server per idempotency bug a team
//! ships, and a correct one: each bug is caught, in the scenario that
//! exposes it, every run; the correct server is never flagged.
//!
//! The servers are `idem-sample-api` on 127.0.0.1 (a payments API whose
//! work runs on even when the client hangs up), reached over real TCP, and
//! the shapes of real middlewares in [`shapes`] (409 without Retry-After
//! while the first attempt runs, a wrapper's 502, raw-bytes fingerprints,
//! replays under 409), each correct and broken.

mod shapes;

use idem_audit::{
    audit, AuditOptions, AuditReport, Endpoint, NoProgress, ScenarioId, Severity, Verdict,
};
use idem_sample_api::{Flaw, RunningSampleApi, SampleApiOptions};
use shapes::{Fingerprint, InProgress, Replay, Shape, ShapedApi};
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
    endpoint_at(&api.url())
}

/// The same for the API at `base`.
fn endpoint_at(base: &str) -> Endpoint {
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

fn result(report: &AuditReport, id: ScenarioId) -> &idem_audit::ScenarioResult {
    report
        .scenarios
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("{id} was not run"))
}

/// Asserts that the run exits 0 with exactly `warnings` reported as
/// failures of low severity (warnings under the default `--fail-on
/// medium`) and every other scenario passing.
fn expect_warnings(report: &AuditReport, warnings: &[ScenarioId]) {
    let wrong: Vec<String> = report
        .scenarios
        .iter()
        .filter(|s| {
            let warned = s.verdict == Fail && s.severity == Severity::Low;
            if warnings.contains(&s.id) {
                !warned
            } else {
                s.verdict != Pass
            }
        })
        .map(|s| {
            let want = if warnings.contains(&s.id) {
                "a low warning"
            } else {
                "pass"
            };
            format!(
                "{}: expected {want}, got {} ({})",
                s.id, s.verdict, s.severity
            )
        })
        .collect();
    assert!(
        wrong.is_empty() && report.exit_code() == 0 && report.warnings() == warnings.len(),
        "{}\nexit code {}\n\n{}",
        wrong.join("\n"),
        report.exit_code(),
        idem_audit::report::render(report, Default::default(), Default::default())
    );
}

#[tokio::test]
async fn a_retry_refused_with_a_plain_409_while_the_first_attempt_runs_is_only_a_warning() {
    let api = ShapedApi::start(Shape::refusing_in_flight(InProgress::PlainConflict)).await;
    for _ in 0..2 {
        let report = run(endpoint_at(&api.url())).await;
        expect_warnings(&report, &[AbandonedRequest]);
        let s = result(&report, AbandonedRequest);
        assert!(
            s.summary.contains("409 with no Retry-After")
                && s.summary.contains("got the outcome (201)"),
            "{}",
            s.summary
        );
    }
}

#[tokio::test]
async fn a_wrappers_502_while_the_work_goes_on_is_only_a_warning() {
    let api = ShapedApi::start(Shape::refusing_in_flight(InProgress::BadGateway)).await;
    for _ in 0..2 {
        let report = run(endpoint_at(&api.url())).await;
        expect_warnings(&report, &[AbandonedRequest]);
        assert!(
            result(&report, AbandonedRequest)
                .summary
                .contains("got 502"),
            "{}",
            result(&report, AbandonedRequest).summary
        );
    }
}

#[tokio::test]
async fn a_raw_bytes_fingerprint_is_a_warning_that_fails_only_with_fail_on_low() {
    let api = ShapedApi::start(Shape {
        fingerprint: Fingerprint::RawBytes,
        ..Shape::contract()
    })
    .await;
    for _ in 0..2 {
        let report = run(endpoint_at(&api.url())).await;
        expect_warnings(&report, &[PayloadMismatch]);
        let s = result(&report, PayloadMismatch);
        assert!(
            s.summary.contains("re-serialised was refused too (422)"),
            "{}",
            s.summary
        );
    }
    let mut options = AuditOptions::new(vec![endpoint_at(&api.url())]);
    options.fail_on = Severity::Low;
    let report = audit(&options, &NoProgress).await.unwrap();
    assert_eq!((report.verdict, report.exit_code()), (Fail, 1));
}

#[tokio::test]
async fn the_stored_body_replayed_under_409_is_a_warning_wherever_a_replay_is_read() {
    let api = ShapedApi::start(Shape {
        in_progress: InProgress::PlainConflict,
        replay: Replay::Conflict409,
        ..Shape::contract()
    })
    .await;
    for _ in 0..2 {
        let report = run(endpoint_at(&api.url())).await;
        expect_warnings(
            &report,
            &[
                SequentialReplay,
                LostResponse,
                AbandonedRequest,
                PayloadMismatch,
                ErrorReplay,
            ],
        );
    }
}

#[tokio::test]
async fn a_key_released_when_the_client_leaves_is_caught_behind_a_plain_409_or_a_502() {
    for in_progress in [InProgress::PlainConflict, InProgress::BadGateway] {
        let api = ShapedApi::start(Shape {
            store_when_client_gone: false,
            ..Shape::refusing_in_flight(in_progress)
        })
        .await;
        for _ in 0..2 {
            let report = run(endpoint_at(&api.url())).await;
            expect(&report, &all_pass_but(&[AbandonedRequest]));
            let s = result(&report, AbandonedRequest);
            assert_eq!(s.severity, Severity::High, "{in_progress:?}: {}", s.summary);
            assert!(s.summary.contains("executed twice"), "{}", s.summary);
            assert_eq!(report.exit_code(), 1);
        }
    }
}

#[tokio::test]
async fn an_error_executed_again_on_retry_is_caught_by_the_count_even_with_the_same_body() {
    let api = ShapedApi::start(Shape {
        store_errors: false,
        ..Shape::contract()
    })
    .await;
    let report = run(endpoint_at(&api.url())).await;
    expect(&report, &all_pass_but(&[ErrorReplay]));
    let s = result(&report, ErrorReplay);
    assert_eq!(s.severity, Severity::High);
    assert!(
        s.summary.contains("the count moved by 2")
            && s.summary.contains("402 both times, the same body"),
        "{}",
        s.summary
    );
}

#[tokio::test]
async fn without_an_error_body_error_replay_says_what_kind_of_request_to_give() {
    let api = ShapedApi::start(Shape::contract()).await;
    let mut e = endpoint_at(&api.url());
    e.error_body = None;
    e.scenarios = vec![ErrorReplay, ReplayMarker];
    let report = run(e).await;
    let s = result(&report, ErrorReplay);
    assert_eq!(s.verdict, Verdict::Skipped);
    assert!(
        s.summary.contains("--config") && s.summary.contains("starts to execute but then fails"),
        "{}",
        s.summary
    );
}

/// The exchange with this label (the last attempt of it), and its answer.
fn exchange<'a>(s: &'a idem_audit::ScenarioResult, label: &str) -> &'a idem_audit::Seen {
    s.evidence
        .exchanges
        .iter()
        .rev()
        .find(|x| x.label.starts_with(label))
        .and_then(|x| x.answer.delivered())
        .unwrap_or_else(|| panic!("no answered `{label}` in {:#?}", s.evidence.exchanges))
}

#[tokio::test]
async fn an_abandoned_attempt_that_outlives_its_retry_is_counted_where_it_ran_not_in_payload_mismatch(
) {
    for in_progress in [InProgress::PlainConflict, InProgress::BadGateway] {
        // Slow work, and a retry refused at once: the abandoned attempt is
        // still running when abandoned-request has its answer.
        let api = ShapedApi::start(Shape {
            latency: Duration::from_millis(800),
            ..Shape::refusing_in_flight(in_progress)
        })
        .await;
        let mut e = endpoint_at(&api.url());
        e.scenarios = vec![AbandonedRequest, PayloadMismatch];
        e.abandon_after = Duration::from_millis(100);
        let report = run(e).await;
        let shown = || idem_audit::report::render(&report, Default::default(), Default::default());
        assert_eq!(report.failures(), 0, "{in_progress:?}\n{}", shown());

        // abandoned-request waited for its own late execution and counted it.
        let abandoned = result(&report, AbandonedRequest);
        assert!(
            abandoned
                .evidence
                .oracle
                .iter()
                .any(|o| o.saw == "the count moved by 1" && o.effects == Some(1)),
            "{}",
            shown()
        );

        // payload-mismatch's verdict is what its own exchanges show: the
        // re-serialised payload replayed the first answer, the changed one
        // was refused, and the counts it rests on are all in its evidence.
        let payload = result(&report, PayloadMismatch);
        assert_eq!(payload.verdict, Pass, "{}", shown());
        let first = exchange(payload, "first");
        let again = exchange(payload, "same payload, re-serialised");
        let changed = exchange(payload, "changed payload");
        assert_eq!(
            (first.status, again.status, changed.status),
            (201, 201, 422)
        );
        assert_eq!(first.body, again.body, "{}", shown());
        let moves: Vec<(&str, Option<u64>)> = payload
            .evidence
            .oracle
            .iter()
            .filter(|o| o.effects.is_some())
            .map(|o| (o.saw.as_str(), o.effects))
            .collect();
        assert_eq!(
            moves,
            [
                (
                    "the count moved by 1 over the first request and the re-serialised one",
                    Some(1)
                ),
                ("the count moved by 0 over the changed request", Some(0)),
            ],
            "{}",
            shown()
        );
        let readings = payload
            .evidence
            .oracle
            .iter()
            .filter(|o| o.effects.is_none())
            .count();
        assert_eq!(
            readings, 3,
            "before, after the re-serialised, after the changed"
        );
        // One execution each: abandoned-request's, payload-mismatch's.
        assert_eq!(api.executions(), 2);
    }
}

#[tokio::test]
async fn with_only_ids_an_abandoned_request_is_indeterminate_and_the_report_names_the_flag() {
    // The retry is refused with a plain 409 while the first attempt runs;
    // without a count the later retries ask until the refusal ends.
    let api = ShapedApi::start(Shape::refusing_in_flight(InProgress::PlainConflict)).await;
    let mut e = endpoint_at(&api.url());
    e.count_url = None;
    e.scenarios = vec![SequentialReplay, AbandonedRequest];
    let report = run(e).await;
    let s = result(&report, AbandonedRequest);
    assert_eq!(s.verdict, Verdict::Indeterminate, "{}", s.summary);
    assert!(s.summary.contains("got the outcome (201)"), "{}", s.summary);
    let hint = s.oracle_hint.as_deref().unwrap_or_default();
    assert!(
        hint.starts_with("--count-url URL or --check-cmd CMD"),
        "{hint}"
    );
    let text = idem_audit::report::render(&report, Default::default(), Default::default());
    let top: Vec<&str> = text.lines().skip(2).take(2).collect();
    assert_eq!(
        top,
        [
            "1 result is indeterminate; what would turn each into a verdict:",
            &format!("  abandoned-request  add {hint}")[..],
        ],
        "{text}"
    );
}
