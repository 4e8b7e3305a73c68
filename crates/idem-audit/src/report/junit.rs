//! The JUnit XML report, for CI test tabs.
//!
//! * One `<testsuite>` per endpoint (named after it), one `<testcase>` per
//!   scenario: `name` is the scenario id, `classname` the endpoint's name,
//!   `time` the scenario's wall time.
//! * **fail** → `<failure message="<summary>" type="<severity>">` with the
//!   evidence (notes, oracle readings, exchanges, curl lines) as its text.
//! * **indeterminate** → `<failure message="indeterminate: <summary>"
//!   type="indeterminate">`, evidence as for a failure. An indeterminate
//!   result means a duplicate could not be ruled out, and the run exits
//!   with 3: CI must not show it as passed, and `<skipped>` renders as a
//!   neutral grey in most test tabs (GitHub, GitLab, Jenkins) and does not
//!   fail a build that gates on the report. `<error>` would also count as
//!   not passed, but consumers treat it inconsistently (some as a broken
//!   harness, some not at all), whereas `<failure>` is understood by every
//!   one; the `type` and the message prefix tell it apart from a violation.
//!   A suite's `failures` attribute therefore counts violations and
//!   indeterminate results together.
//! * **skipped** → `<skipped message="<summary>">`.
//! * **pass** → a bare test case; its summary goes to its `system-out`.
//! * **warning** (a failure below `--fail-on`) → a passing test case, so
//!   it does not fail the build, with `warning (SEVERITY, below --fail-on
//!   …): <summary>` and the evidence in its `system-out`.
//!
//! Each suite carries the tool version, start time and the bound as
//! properties, and the bound and volume statements in its `system-out`.

use super::evidence;
use super::summary;
use crate::outcome::{AuditReport, ScenarioResult, Severity, Verdict};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use std::time::Duration;

/// The JUnit XML report.
pub(crate) fn render(report: &AuditReport) -> String {
    let mut junit = Report::new("idem audit");
    junit.set_time(seconds(report.duration_ms));

    let mut names: Vec<&str> = report.endpoints.iter().map(|e| e.name.as_str()).collect();
    for result in &report.scenarios {
        if !names.contains(&result.endpoint.as_str()) {
            names.push(&result.endpoint);
        }
    }

    if summary::worth_drawing(report) {
        // A suite with no test case: the summary table, first, where CI
        // tools show a suite's output.
        let mut suite = TestSuite::new("idem audit summary");
        let plain = |_: summary::Mark, word: &str| word.to_owned();
        suite.set_system_out(summary::text_lines(report, &plain).join("\n"));
        junit.add_test_suite(suite);
    }

    for name in names {
        let results: Vec<&ScenarioResult> = report
            .scenarios
            .iter()
            .filter(|r| r.endpoint == name)
            .collect();
        let mut suite = TestSuite::new(name);
        suite.set_time(seconds(results.iter().map(|r| r.duration_ms).sum()));
        if !report.started_at.is_empty() {
            suite
                .extra
                .insert("timestamp".into(), report.started_at.as_str().into());
        }
        suite.add_properties([
            Property::new("idem.version", &report.tool_version),
            Property::new("idem.started_at", &report.started_at),
            Property::new("idem.verdict", report.verdict.as_str()),
            Property::new("idem.bound", &report.bound.statement),
        ]);
        let endpoint = report.endpoints.iter().find(|e| e.name == name);
        let mut system_out = String::new();
        if let Some(endpoint) = endpoint {
            if let Some(declared) = endpoint.key_declared {
                suite.add_property(Property::new(
                    "idem.key_declared",
                    if declared { "true" } else { "false" },
                ));
            }
            if endpoint.is_unprotected() {
                system_out.push_str(summary::UNPROTECTED);
                system_out.push('\n');
            }
            if let Some(origin) = &endpoint.origin {
                system_out.push_str(&format!("from {origin}\n"));
            }
        }
        system_out.push_str(&report.bound.statement);
        if let Some(volume) = &report.volume {
            system_out.push('\n');
            system_out.push_str(&volume.statement);
        }
        suite.set_system_out(system_out);
        suite.add_test_cases(results.into_iter().map(|r| test_case(r, report.fail_on)));
        junit.add_test_suite(suite);
    }

    // Serialising to memory does no I/O; should the writer still refuse,
    // say so in the output rather than panic on a server's bytes.
    junit.to_string().unwrap_or_else(|e| {
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- idem audit could not write the JUnit report: {e} -->\n")
    })
}

fn test_case(result: &ScenarioResult, fail_on: Severity) -> TestCase {
    let summary = evidence::one_line(&result.summary);
    let warning = result.is_warning(fail_on);
    let status = match result.verdict {
        Verdict::Pass => TestCaseStatus::success(),
        Verdict::Fail if warning => TestCaseStatus::success(),
        Verdict::Skipped => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(summary.as_str());
            status
        }
        Verdict::Fail => failure(summary.clone(), result.severity.as_str(), result),
        Verdict::Indeterminate => {
            failure(format!("indeterminate: {summary}"), "indeterminate", result)
        }
    };
    let mut case = TestCase::new(result.id.as_str(), status);
    case.set_classname(result.endpoint.as_str());
    case.set_time(seconds(result.duration_ms));
    if result.verdict == Verdict::Pass {
        case.set_system_out(summary);
    } else if warning {
        let mut text = format!(
            "warning ({}, below --fail-on {fail_on}): {summary}\n",
            result.severity
        );
        let lines = evidence::lines(&result.evidence);
        if !lines.is_empty() {
            text.push('\n');
            text.push_str(&evidence::plain_text(&lines));
        }
        case.set_system_out(text);
    }
    case
}

fn failure(message: String, ty: &str, result: &ScenarioResult) -> TestCaseStatus {
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
    status.set_message(message);
    status.set_type(ty);
    let mut text = match &result.oracle_hint {
        Some(hint) => format!("would decide it: {}\n", evidence::one_line(hint)),
        None => String::new(),
    };
    text.push_str(&evidence::plain_text(&evidence::lines(&result.evidence)));
    if !text.is_empty() {
        status.set_description(text);
    }
    status
}

fn seconds(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms.max(0.0) / 1000.0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    fn xml() -> String {
        render(&fixture::report())
    }

    /// The start tag of the first element named `tag` whose attributes
    /// contain `needle`.
    fn start_tag<'a>(xml: &'a str, tag: &str, needle: &str) -> &'a str {
        xml.match_indices(&format!("<{tag} "))
            .map(|(at, _)| &xml[at..at + xml[at..].find('>').unwrap() + 1])
            .find(|t| t.contains(needle))
            .unwrap_or_else(|| panic!("no <{tag}> with {needle} in {xml}"))
    }

    #[test]
    fn one_suite_per_endpoint_one_case_per_scenario() {
        let xml = xml();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        let suite = start_tag(&xml, "testsuite", "name=");
        assert!(
            suite.contains(&format!("name=\"{}\"", fixture::ENDPOINT)),
            "{suite}"
        );
        assert!(suite.contains("tests=\"4\""), "{suite}");
        for id in [
            "sequential-replay",
            "lost-response",
            "concurrent-burst",
            "retention",
        ] {
            let case = start_tag(&xml, "testcase", &format!("name=\"{id}\""));
            assert!(
                case.contains(&format!("classname=\"{}\"", fixture::ENDPOINT)),
                "{case}"
            );
            assert!(case.contains("time=\"1.250\""), "{case}");
        }
    }

    #[test]
    fn a_failure_and_an_indeterminate_result_both_count_as_failures() {
        let xml = xml();
        let suite = start_tag(&xml, "testsuite", "name=");
        assert!(suite.contains("failures=\"2\""), "{suite}");
        assert!(suite.contains("errors=\"0\""), "{suite}");
        assert!(suite.contains("disabled=\"1\""), "{suite}");
        let root = start_tag(&xml, "testsuites", "name=");
        assert!(root.contains("failures=\"2\""), "{root}");

        let failure = start_tag(&xml, "failure", "type=\"high\"");
        assert!(
            failure.contains(&format!("message=\"{}\"", fixture::FAIL_SUMMARY)),
            "{failure}"
        );
        let indeterminate = start_tag(&xml, "failure", "type=\"indeterminate\"");
        assert!(
            indeterminate.contains(&format!(
                "message=\"indeterminate: {}\"",
                fixture::INDETERMINATE_SUMMARY
            )),
            "{indeterminate}"
        );
        let skipped = start_tag(&xml, "skipped", "message=");
        assert!(skipped.contains(fixture::SKIPPED_SUMMARY), "{skipped}");
    }

    /// The XML entities quick-xml writes, read back.
    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    }

    #[test]
    fn the_failure_text_carries_the_evidence_xml_escaped() {
        let xml = xml();
        assert!(!xml.contains("<c>"), "unescaped body in {xml}");
        assert!(xml.contains("a|b &lt;c&gt; &amp; d"), "{xml}");

        let open = start_tag(&xml, "failure", "type=\"high\"");
        let at = xml.find(open).unwrap() + open.len();
        let text = unescape(&xml[at..at + xml[at..].find("</failure>").unwrap()]);
        assert!(
            text.starts_with("the first answer was thrown away"),
            "{text}"
        );
        assert!(text.contains("count-url: 3 → 5 (2 effects)"), "{text}");
        // The body `{"error":"a|b <c> & d",\n"trace":"x"}`, on one line.
        assert!(
            text.contains(
                "→ 500 Internal Server Error {\"error\":\"a|b <c> & d\", \"trace\":\"x\"}"
            ),
            "{text}"
        );
        assert!(text.contains("→ discarded by the fault point"), "{text}");
        assert!(text.contains("→ hung up after 12 ms"), "{text}");
        assert!(text.contains("→ error: connection reset by peer"), "{text}");
        assert!(
            text.contains(&format!("reproduce:\n  {}\n", fixture::FAIL_CURL)),
            "{text}"
        );
    }

    #[test]
    fn each_suite_states_the_bound() {
        let report = fixture::report();
        let xml = xml();
        assert!(xml.contains("<system-out>"), "{xml}");
        assert!(xml.contains(&report.bound.statement), "{xml}");
        assert!(
            xml.contains(&report.volume.as_ref().unwrap().statement),
            "{xml}"
        );
        assert!(
            xml.contains("name=\"idem.version\" value=\"0.1.0\""),
            "{xml}"
        );
    }

    #[test]
    fn each_endpoint_is_its_own_suite() {
        let xml = render(&fixture::two_endpoints());
        let refunds = start_tag(&xml, "testsuite", "name=\"refunds\"");
        assert!(refunds.contains("tests=\"1\""), "{refunds}");
        assert!(refunds.contains("failures=\"0\""), "{refunds}");
        let payments = start_tag(
            &xml,
            "testsuite",
            &format!("name=\"{}\"", fixture::ENDPOINT),
        );
        assert!(payments.contains("tests=\"4\""), "{payments}");
        let root = start_tag(&xml, "testsuites", "name=");
        assert!(root.contains("tests=\"5\""), "{root}");
        let case = start_tag(&xml, "testcase", "classname=\"refunds\"");
        assert!(case.contains("name=\"sequential-replay\""), "{case}");
    }

    #[test]
    fn a_warning_passes_the_build_but_carries_its_evidence() {
        let xml = render(&fixture::with_warning());
        let case = start_tag(&xml, "testcase", "name=\"payload-mismatch\"");
        let at = xml.find(case).unwrap();
        let body = &xml[at..at + xml[at..].find("</testcase>").unwrap()];
        assert!(!body.contains("<failure"), "{body}");
        assert!(
            body.contains("warning (low, below --fail-on medium)"),
            "{body}"
        );
        assert!(body.contains("the changed request sends"), "{body}");
    }
}
