//! A hand-built report for the renderers' tests: one endpoint with a pass,
//! a failure (exchanges of every answer kind, a body full of characters
//! each format must escape), an indeterminate result and a skipped one.

use crate::outcome::{
    Answer, AuditReport, Bound, EndpointSummary, Evidence, Exchange, OracleReading, ScenarioId,
    ScenarioResult, Seen, SentRequest, Severity, Verdict, VolumeOutlook,
};

pub(crate) const ENDPOINT: &str = "POST http://127.0.0.1:8080/payments";
pub(crate) const URL: &str = "http://127.0.0.1:8080/payments";
/// The failure's summary.
pub(crate) const FAIL_SUMMARY: &str =
    "the retry after a lost response charged again: 2 payments for one key";
/// The failure's first curl line.
pub(crate) const FAIL_CURL: &str = "curl -sS -X POST 'http://127.0.0.1:8080/payments' \
     -H 'Idempotency-Key: 7d1c' -H 'Content-Type: application/json' \
     --data '{\"amount\":100}'";
/// A body with every character some format must escape.
pub(crate) const NASTY_BODY: &str = "{\"error\":\"a|b <c> & d\",\n\"trace\":\"x\"}";
/// The pass's summary; its evidence must not be shown in the text report.
pub(crate) const PASS_SUMMARY: &str = "3 identical answers, 1 effect";
pub(crate) const PASS_NOTE: &str = "pass-note-never-shown-in-text";
pub(crate) const INDETERMINATE_SUMMARY: &str =
    "no duplicate seen, but only bodies could be compared";
pub(crate) const SKIPPED_SUMMARY: &str = "needs --retention";
/// What would decide the indeterminate result.
pub(crate) const INDETERMINATE_HINT: &str = "--count-url URL or --check-cmd CMD";
/// The warning's summary (see [`with_warning`]).
pub(crate) const WARNING_SUMMARY: &str =
    "the same payload re-serialised was refused too (422): a warning";

fn request(key: &str) -> SentRequest {
    SentRequest {
        method: "POST".to_owned(),
        url: URL.to_owned(),
        headers: vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Idempotency-Key".to_owned(), key.to_owned()),
        ],
        body: Some("{\"amount\":100}".to_owned()),
        key: Some(key.to_owned()),
    }
}

fn seen(status: u16, body: &str) -> Seen {
    Seen {
        status,
        headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
        body: body.to_owned(),
        body_truncated: false,
    }
}

fn exchange(label: &str, key: &str, answer: Answer) -> Exchange {
    Exchange {
        label: label.to_owned(),
        request: request(key),
        answer,
        elapsed_ms: 4.2,
    }
}

fn result(id: ScenarioId, verdict: Verdict, summary: &str, evidence: Evidence) -> ScenarioResult {
    ScenarioResult {
        id,
        endpoint: ENDPOINT.to_owned(),
        verdict,
        severity: id.severity(),
        summary: summary.to_owned(),
        trials: 1,
        failed_trials: u64::from(verdict == Verdict::Fail),
        raced: false,
        evidence,
        oracle_hint: None,
        duration_ms: 1250.0,
    }
}

/// The failure's exchanges: one of each answer kind, then enough extra
/// retries to go past the shown limit.
pub(crate) fn fail_exchanges() -> Vec<Exchange> {
    let mut exchanges = vec![
        exchange(
            "first",
            "7d1c",
            Answer::Discarded(seen(201, "{\"id\":41,\"amount\":100}")),
        ),
        exchange(
            "retry 1",
            "7d1c",
            Answer::Response(seen(201, "{\"id\":42,\"amount\":100}")),
        ),
        exchange("retry 2", "7d1c", Answer::HungUp { after_ms: 12.0 }),
        exchange(
            "retry 3",
            "7d1c",
            Answer::Error {
                message: "connection reset by peer".to_owned(),
            },
        ),
        exchange("retry 4", "7d1c", Answer::Response(seen(500, NASTY_BODY))),
    ];
    for n in 5..=8 {
        exchanges.push(exchange(
            &format!("retry {n}"),
            "7d1c",
            Answer::Response(seen(409, "")),
        ));
    }
    exchanges
}

/// The report.
pub(crate) fn report() -> AuditReport {
    let pass = result(
        ScenarioId::SequentialReplay,
        Verdict::Pass,
        PASS_SUMMARY,
        Evidence {
            exchanges: vec![exchange(
                "first",
                "a1",
                Answer::Response(seen(201, "{\"id\":40}")),
            )],
            oracle: vec![],
            notes: vec![PASS_NOTE.to_owned()],
            curl: vec!["curl pass-curl-never-shown".to_owned()],
        },
    );
    let fail = result(
        ScenarioId::LostResponse,
        Verdict::Fail,
        FAIL_SUMMARY,
        Evidence {
            exchanges: fail_exchanges(),
            oracle: vec![OracleReading {
                oracle: "count-url".to_owned(),
                saw: "3 → 5".to_owned(),
                effects: Some(2),
            }],
            notes: vec!["the first answer was thrown away after the server sent it".to_owned()],
            curl: vec![
                FAIL_CURL.to_owned(),
                "curl -sS 'http://127.0.0.1:8080/payments/count'".to_owned(),
            ],
        },
    );
    let mut indeterminate = result(
        ScenarioId::ConcurrentBurst,
        Verdict::Indeterminate,
        INDETERMINATE_SUMMARY,
        Evidence {
            exchanges: vec![],
            oracle: vec![OracleReading {
                oracle: "body".to_owned(),
                saw: "20 identical bodies".to_owned(),
                effects: None,
            }],
            notes: vec!["add --count-url to count effects".to_owned()],
            curl: vec![],
        },
    );
    indeterminate.oracle_hint = Some(INDETERMINATE_HINT.to_owned());
    let skipped = result(
        ScenarioId::Retention,
        Verdict::Skipped,
        SKIPPED_SUMMARY,
        Evidence::default(),
    );
    let scenarios = vec![pass, fail, indeterminate, skipped];
    AuditReport {
        verdict: AuditReport::overall(&scenarios, Severity::Medium),
        fail_on: Severity::Medium,
        tool_version: "0.1.0".to_owned(),
        started_at: "2025-06-01T12:00:00Z".to_owned(),
        duration_ms: 5321.0,
        endpoints: vec![EndpointSummary {
            name: ENDPOINT.to_owned(),
            method: "POST".to_owned(),
            url: URL.to_owned(),
            more_urls: Vec::new(),
            oracles: vec!["count-url".to_owned(), "body".to_owned()],
            key_declared: None,
            origin: None,
        }],
        scenarios,
        bound: Bound {
            trials: 40,
            failed_trials: 1,
            observed_rate: Some(0.025),
            upper_bound_95: None,
            rule_of_three: None,
            statement: "1 of 40 raced trials executed twice (2.5%).".to_owned(),
        },
        volume: Some(VolumeOutlook {
            volume: "10M/day".to_owned(),
            requests_per_day: 1e7,
            ambiguous_rate: 0.001,
            retry_duplicates: 0.025,
            is_bound: false,
            duplicates_per_day: 250.0,
            statement: "At 10M/day with 0.1% ambiguous requests: about 250 duplicates a day."
                .to_owned(),
        }),
    }
}

/// The failure's severity.
pub(crate) fn fail_severity() -> Severity {
    ScenarioId::LostResponse.severity()
}

/// The report with a second, named endpoint whose only scenario passed.
pub(crate) fn two_endpoints() -> AuditReport {
    let mut report = report();
    report.endpoints.push(EndpointSummary {
        name: "refunds".to_owned(),
        method: "PUT".to_owned(),
        url: "http://127.0.0.1:8080/refunds".to_owned(),
        more_urls: Vec::new(),
        oracles: vec!["body".to_owned()],
        key_declared: Some(false),
        origin: Some("OpenAPI operation refund".to_owned()),
    });
    let mut refund = report.scenarios[0].clone();
    refund.endpoint = "refunds".to_owned();
    refund.summary = "refund replayed identically".to_owned();
    // Run order interleaves endpoints; reports group them.
    report.scenarios.insert(1, refund);
    report
}

/// The report with one more failure, of low severity: a warning under the
/// default `--fail-on medium`.
pub(crate) fn with_warning() -> AuditReport {
    let mut report = report();
    let mut warning = result(
        ScenarioId::PayloadMismatch,
        Verdict::Fail,
        WARNING_SUMMARY,
        Evidence {
            notes: vec!["the changed request sends `amount` changed".to_owned()],
            ..Evidence::default()
        },
    );
    warning.severity = Severity::Low;
    warning.failed_trials = 0;
    report.scenarios.insert(2, warning);
    report
}
