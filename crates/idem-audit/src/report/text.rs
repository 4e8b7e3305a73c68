//! The terminal report: one line per scenario, evidence under each failure
//! and indeterminate result, totals, the bound and the verdict last (the
//! part still on screen when the run ends).

use super::evidence::{self, LineKind};
use super::summary;
use super::Style;
use crate::outcome::{AuditReport, EndpointSummary, ScenarioResult, Severity, Verdict};
use std::fmt::Write as _;

/// Indentation of scenario lines under their endpoint.
const SCENARIO_INDENT: &str = "  ";
/// Indentation of evidence under its scenario line.
const EVIDENCE_INDENT: &str = "      ";

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[1;33m";
const AMBER: &str = "\x1b[33m";

/// Colours, or none.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn with(self, code: &str, text: &str) -> String {
        if self.0 && !text.is_empty() {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn verdict(self, verdict: Verdict, text: &str) -> String {
        self.with(verdict_colour(verdict), text)
    }
}

fn verdict_colour(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => GREEN,
        Verdict::Fail => RED,
        Verdict::Indeterminate => YELLOW,
        Verdict::Skipped => DIM,
    }
}

fn mark_colour(mark: summary::Mark) -> &'static str {
    match mark {
        summary::Mark::Pass => GREEN,
        summary::Mark::Fail => RED,
        summary::Mark::Warn => AMBER,
        summary::Mark::Indeterminate => YELLOW,
        summary::Mark::Skipped => DIM,
    }
}

/// A result's badge: its verdict, or `WARN` for a failure below
/// `--fail-on`.
fn result_badge(result: &ScenarioResult, fail_on: Severity) -> &'static str {
    if result.is_warning(fail_on) {
        "WARN"
    } else {
        badge(result.verdict)
    }
}

fn badge(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Indeterminate => "INDETERMINATE",
        Verdict::Skipped => "SKIPPED",
    }
}

/// The text report.
pub(crate) fn render(report: &AuditReport, style: Style) -> String {
    let paint = Paint(style.color);
    let mut out = String::new();

    let _ = writeln!(
        out,
        "{} {} · started {} · took {}",
        paint.with(BOLD, "idem audit"),
        evidence::one_line(&report.tool_version),
        evidence::one_line(&report.started_at),
        evidence::millis(report.duration_ms),
    );

    oracle_hints(&mut out, report);

    if summary::worth_drawing(report) {
        blank_line(&mut out);
        let dress = |mark: summary::Mark, word: &str| paint.with(mark_colour(mark), word);
        for line in summary::text_lines(report, &dress) {
            let _ = writeln!(out, "{line}");
        }
    }

    // Columns line up across the whole report.
    let badge_width = report
        .scenarios
        .iter()
        .map(|r| result_badge(r, report.fail_on).len())
        .max()
        .unwrap_or(0);
    let id_width = report
        .scenarios
        .iter()
        .map(|r| r.id.as_str().len())
        .max()
        .unwrap_or(0);

    for (endpoint, results) in by_endpoint(report) {
        blank_line(&mut out);
        let _ = writeln!(out, "{}", endpoint_heading(&endpoint, paint));
        if results.is_empty() {
            let _ = writeln!(
                out,
                "{SCENARIO_INDENT}{}",
                paint.with(DIM, "no scenario ran")
            );
        }
        for result in results {
            scenario(
                &mut out,
                result,
                report.fail_on,
                (badge_width, id_width),
                paint,
            );
        }
    }

    blank_line(&mut out);
    let _ = writeln!(out, "{}", totals(report, paint));
    let _ = writeln!(out, "{}", evidence::one_line(&report.bound.statement));
    if let Some(volume) = &report.volume {
        let _ = writeln!(out, "{}", evidence::one_line(&volume.statement));
    }
    let _ = writeln!(out, "{}", final_line(report, paint));
    out
}

/// The endpoints in report order, each with its results in run order;
/// results naming an endpoint the report does not list come last, grouped
/// by name.
fn by_endpoint(report: &AuditReport) -> Vec<(EndpointSummary, Vec<&ScenarioResult>)> {
    let mut groups: Vec<(EndpointSummary, Vec<&ScenarioResult>)> = report
        .endpoints
        .iter()
        .map(|e| (e.clone(), Vec::new()))
        .collect();
    for result in &report.scenarios {
        match groups.iter_mut().find(|(e, _)| e.name == result.endpoint) {
            Some((_, results)) => results.push(result),
            None => groups.push((
                EndpointSummary {
                    name: result.endpoint.clone(),
                    method: String::new(),
                    url: String::new(),
                    more_urls: Vec::new(),
                    oracles: Vec::new(),
                    key_declared: None,
                    origin: None,
                },
                vec![result],
            )),
        }
    }
    groups
}

/// `POST http://host/pay  (oracles: count-url, id-field)`, prefixed with the
/// endpoint's name when the configuration gave it one.
fn endpoint_heading(endpoint: &EndpointSummary, paint: Paint) -> String {
    let target = format!("{} {}", endpoint.method, endpoint.url);
    let mut heading = if endpoint.method.is_empty() || endpoint.name == target {
        paint.with(BOLD, &evidence::one_line(&endpoint.name))
    } else {
        format!(
            "{}: {}",
            paint.with(BOLD, &evidence::one_line(&endpoint.name)),
            evidence::one_line(&target)
        )
    };
    let oracles = match endpoint.oracles.as_slice() {
        [] if endpoint.method.is_empty() => None,
        [] => Some("no oracle".to_owned()),
        [only] if only == "body" => Some("oracle: body only; effects not counted".to_owned()),
        many => Some(format!("oracles: {}", evidence::one_line(&many.join(", ")))),
    };
    if let Some(oracles) = oracles {
        heading.push_str(&format!("  ({oracles})"));
    }
    if endpoint.is_unprotected() {
        heading.push_str(&format!(
            "\n    {}",
            paint.with(AMBER, summary::UNPROTECTED)
        ));
    }
    if let Some(origin) = &endpoint.origin {
        heading.push_str(&format!("\n    from {}", evidence::one_line(origin)));
    }
    if !endpoint.more_urls.is_empty() {
        heading.push_str(&format!(
            "\n    rotating across {} instances, also {}",
            1 + endpoint.more_urls.len(),
            evidence::one_line(&endpoint.more_urls.join(", "))
        ));
    }
    heading
}

fn scenario(
    out: &mut String,
    result: &ScenarioResult,
    fail_on: Severity,
    (badge_width, id_width): (usize, usize),
    paint: Paint,
) {
    let word = result_badge(result, fail_on);
    // Padding goes outside the colour, so colour does not change widths.
    let pad = " ".repeat(badge_width.saturating_sub(word.len()));
    let id = format!("{:<id_width$}", result.id.as_str());
    let mut summary = evidence::one_line(&result.summary);
    if result.verdict == Verdict::Fail {
        let severity = format!("[{}]", result.severity);
        summary = format!("{} {summary}", paint.with(BOLD, &severity));
    }
    let line = if result.verdict == Verdict::Skipped {
        let rest = format!("{id}  {summary}");
        format!("{}{pad}  {}", paint.with(DIM, word), paint.with(DIM, &rest))
    } else if result.is_warning(fail_on) {
        format!("{}{pad}  {id}  {summary}", paint.with(AMBER, word))
    } else {
        format!(
            "{}{pad}  {id}  {summary}",
            paint.verdict(result.verdict, word)
        )
    };
    let _ = writeln!(out, "{SCENARIO_INDENT}{}", line.trim_end());

    if !matches!(result.verdict, Verdict::Fail | Verdict::Indeterminate) {
        return;
    }
    if let Some(hint) = result.oracle_hint.as_deref() {
        let _ = writeln!(
            out,
            "{EVIDENCE_INDENT}{}",
            paint.with(
                DIM,
                &format!("would decide it: {}", evidence::one_line(hint))
            )
        );
    }
    let lines = evidence::lines(&result.evidence);
    for line in &lines {
        let text = match line.kind {
            LineKind::Heading | LineKind::More => paint.with(DIM, &line.text),
            _ => line.text.clone(),
        };
        let _ = writeln!(out, "{EVIDENCE_INDENT}{}{text}", "  ".repeat(line.depth));
    }
    // A gap after evidence, so the next verdict line stands out.
    if !lines.is_empty() {
        blank_line(out);
    }
}

/// At the top, when something is indeterminate: for each such result,
/// the oracle (and its flag) that would turn it into a verdict.
fn oracle_hints(out: &mut String, report: &AuditReport) {
    let open: Vec<&ScenarioResult> = report
        .scenarios
        .iter()
        .filter(|r| r.verdict == Verdict::Indeterminate)
        .collect();
    if open.is_empty() {
        return;
    }
    let several = report.endpoints.len() > 1;
    blank_line(out);
    let noun = match open.len() {
        1 => "1 result is".to_owned(),
        n => format!("{n} results are"),
    };
    let _ = writeln!(
        out,
        "{noun} indeterminate; what would turn each into a verdict:"
    );
    let width = open.iter().map(|r| r.id.as_str().len()).max().unwrap_or(0);
    for result in open {
        let what = match &result.oracle_hint {
            Some(hint) => format!("add {}", evidence::one_line(hint)),
            None => "not another oracle: see its summary below".to_owned(),
        };
        let on = if several {
            format!(" on {}", evidence::one_line(&result.endpoint))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{SCENARIO_INDENT}{:<width$}{on}  {what}",
            result.id.as_str()
        );
    }
}

/// `4 scenarios: 1 pass, 1 fail, 1 indeterminate, 1 skipped`, with the
/// warnings (failures below `--fail-on`) counted apart when there are any.
fn totals(report: &AuditReport, paint: Paint) -> String {
    let total = report.scenarios.len();
    let noun = if total == 1 { "scenario" } else { "scenarios" };
    let warnings = report.warnings();
    let mut counts: Vec<String> = Vec::new();
    for verdict in [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::Indeterminate,
        Verdict::Skipped,
    ] {
        let n = match verdict {
            Verdict::Fail => report.failures(),
            _ => report.count(verdict),
        };
        let text = format!("{n} {verdict}");
        counts.push(if n == 0 {
            text
        } else {
            paint.verdict(verdict, &text)
        });
        if verdict == Verdict::Fail && warnings > 0 {
            let text = format!(
                "{warnings} {} (below --fail-on {})",
                if warnings == 1 { "warning" } else { "warnings" },
                report.fail_on
            );
            counts.push(paint.with(AMBER, &text));
        }
    }
    format!("{total} {noun}: {}", counts.join(", "))
}

/// `verdict FAIL: 1 failed (exit code 1)`.
fn final_line(report: &AuditReport, paint: Paint) -> String {
    let failed = report.failures();
    let indeterminate = report.count(Verdict::Indeterminate);
    let scenarios = |n: usize| if n == 1 { "scenario" } else { "scenarios" };
    let why = match report.verdict {
        Verdict::Fail if indeterminate > 0 => {
            format!("{failed} failed, {indeterminate} indeterminate")
        }
        Verdict::Fail => format!("{failed} failed"),
        Verdict::Indeterminate => format!(
            "{indeterminate} {} could not rule out a duplicate",
            scenarios(indeterminate)
        ),
        Verdict::Pass | Verdict::Skipped if report.count(Verdict::Pass) == 0 => {
            "nothing was checked: no scenario ran".to_owned()
        }
        Verdict::Pass | Verdict::Skipped if report.warnings() > 0 => format!(
            "no violation at or above --fail-on {}, {} below it",
            report.fail_on,
            match report.warnings() {
                1 => "1 warning".to_owned(),
                n => format!("{n} warnings"),
            }
        ),
        Verdict::Pass | Verdict::Skipped => "no violation found".to_owned(),
    };
    format!(
        "verdict {}: {why} (exit code {})",
        paint.verdict(report.verdict, badge(report.verdict)),
        report.exit_code()
    )
}

/// Ends `out` with exactly one blank line (separators never double up).
fn blank_line(out: &mut String) {
    while out.ends_with("\n\n") {
        out.pop();
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    fn plain() -> String {
        render(&fixture::report(), Style { color: false })
    }

    #[test]
    fn without_colour_there_is_no_escape_sequence() {
        let out = plain();
        assert!(!out.contains('\x1b'), "{out}");
    }

    #[test]
    fn with_colour_the_badges_are_coloured() {
        let out = render(&fixture::report(), Style { color: true });
        assert!(out.contains(&format!("{RED}FAIL{RESET}")), "{out}");
        assert!(out.contains(&format!("{GREEN}PASS{RESET}")), "{out}");
        assert!(out.contains(YELLOW), "{out}");
        // Stripped of colour it is the plain report.
        let stripped = strip(&out);
        assert_eq!(stripped, plain());
    }

    fn strip(s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(at) = rest.find('\x1b') {
            out.push_str(&rest[..at]);
            let end = rest[at..].find('m').expect("escape ends with m");
            rest = &rest[at + end + 1..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn the_header_names_the_version_and_the_endpoint() {
        let out = plain();
        let mut lines = out.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("idem audit 0.1.0"), "{header}");
        assert!(
            out.contains(&format!(
                "{}  (oracles: count-url, body)",
                fixture::ENDPOINT
            )),
            "{out}"
        );
    }

    #[test]
    fn a_failure_shows_severity_summary_evidence_and_the_curl_line() {
        let out = plain();
        let line = out.lines().find(|l| l.contains("lost-response")).unwrap();
        assert!(line.trim_start().starts_with("FAIL "), "{line}");
        assert!(
            line.ends_with(&format!("[high] {}", fixture::FAIL_SUMMARY)),
            "{line}"
        );
        assert!(out.contains("count-url: 3 → 5 (2 effects)"), "{out}");
        assert!(out.contains("reproduce:"), "{out}");
        assert!(out.contains(fixture::FAIL_CURL), "{out}");
        assert!(out.contains("the first answer was thrown away"), "{out}");
    }

    #[test]
    fn every_answer_kind_reads_as_what_happened() {
        let out = plain();
        // Each answer sits on the line under its request.
        let first = "first: POST http://127.0.0.1:8080/payments  key: 7d1c";
        let at = out.find(first).expect("the first request is shown");
        let answer = out[at..].lines().nth(1).unwrap().trim_start();
        assert_eq!(
            answer,
            "→ discarded by the fault point (client saw a reset); \
             the server sent 201 Created {\"id\":41,\"amount\":100}"
        );
        assert!(out.contains("→ 201 Created {\"id\":42"), "{out}");
        assert!(out.contains("→ hung up after 12 ms"), "{out}");
        assert!(out.contains("→ error: connection reset by peer"), "{out}");
        // The body's newline does not break the line.
        assert!(
            out.contains(
                "→ 500 Internal Server Error {\"error\":\"a|b <c> & d\", \"trace\":\"x\"}"
            ),
            "{out}"
        );
    }

    #[test]
    fn exchanges_beyond_the_limit_point_to_the_json_report() {
        let out = plain();
        let shown = out
            .lines()
            .filter(|l| l.trim_start().starts_with("→ "))
            .count();
        assert_eq!(shown, evidence::MAX_EXCHANGES);
        let hidden = fixture::fail_exchanges().len() - evidence::MAX_EXCHANGES;
        assert!(
            out.contains(&format!("… {hidden} more in the JSON report")),
            "{out}"
        );
    }

    #[test]
    fn a_pass_is_one_line_without_evidence() {
        let out = plain();
        assert!(out.contains(fixture::PASS_SUMMARY));
        assert!(!out.contains(fixture::PASS_NOTE), "{out}");
        assert!(!out.contains("pass-curl-never-shown"), "{out}");
        let after_pass = out
            .lines()
            .skip_while(|l| !l.contains("sequential-replay"))
            .nth(1)
            .unwrap();
        assert!(after_pass.contains("lost-response"), "{after_pass}");
    }

    #[test]
    fn indeterminate_shows_its_evidence_and_skipped_its_reason() {
        let out = plain();
        assert!(out.contains("INDETERMINATE  concurrent-burst"), "{out}");
        assert!(out.contains("body: 20 identical bodies"), "{out}");
        assert!(out.contains("add --count-url to count effects"), "{out}");
        let skipped = out.lines().find(|l| l.contains("retention")).unwrap();
        assert!(skipped.trim_start().starts_with("SKIPPED"), "{skipped}");
        assert!(skipped.ends_with(fixture::SKIPPED_SUMMARY), "{skipped}");
    }

    #[test]
    fn the_report_ends_with_totals_bound_volume_and_the_exit_code() {
        let report = fixture::report();
        let out = plain();
        let tail: Vec<&str> = out.lines().rev().take(4).collect();
        assert_eq!(
            tail[3],
            "4 scenarios: 1 pass, 1 fail, 1 indeterminate, 1 skipped"
        );
        assert_eq!(tail[2], report.bound.statement);
        assert_eq!(tail[1], report.volume.as_ref().unwrap().statement);
        assert_eq!(
            tail[0],
            "verdict FAIL: 1 failed, 1 indeterminate (exit code 1)"
        );
    }

    #[test]
    fn an_indeterminate_run_says_exit_code_3() {
        let mut report = fixture::report();
        report.scenarios.retain(|r| r.verdict != Verdict::Fail);
        report.verdict = AuditReport::overall(&report.scenarios, report.fail_on);
        let out = render(&report, Style::default());
        let last = out.lines().last().unwrap();
        assert!(
            last.starts_with("verdict INDETERMINATE: 1 scenario could not rule out"),
            "{last}"
        );
        assert!(last.ends_with("(exit code 3)"), "{last}");
    }

    #[test]
    fn server_escape_sequences_never_reach_the_terminal() {
        let mut report = fixture::report();
        report.scenarios[1].evidence.exchanges[1].answer = crate::outcome::Answer::Error {
            message: "\x1b]0;pwned\x07".to_owned(),
        };
        report.scenarios[1].summary = "bad\x1b[2J".to_owned();
        let out = render(&report, Style { color: false });
        assert!(!out.contains('\x1b'), "{out}");
    }

    #[test]
    fn results_are_grouped_under_their_endpoint() {
        let out = render(&fixture::two_endpoints(), Style::default());
        let payments = out
            .find(&format!("{}  (oracles:", fixture::ENDPOINT))
            .unwrap();
        let refunds = out
            .find("refunds: PUT http://127.0.0.1:8080/refunds  (oracle: body only; effects not counted)")
            .unwrap_or_else(|| panic!("{out}"));
        let refund = out.find("refund replayed identically").unwrap();
        let lost = out.find("lost-response").unwrap();
        assert!(
            payments < lost && lost < refunds && refunds < refund,
            "{out}"
        );
        assert!(out.contains("5 scenarios: 2 pass"), "{out}");
    }

    #[test]
    fn indeterminate_results_say_at_the_top_which_oracle_would_decide_them() {
        let out = plain();
        let top: Vec<&str> = out.lines().skip(1).take(3).collect();
        assert_eq!(
            top[1], "1 result is indeterminate; what would turn each into a verdict:",
            "{out}"
        );
        assert_eq!(
            top[2],
            format!("  concurrent-burst  add {}", fixture::INDETERMINATE_HINT),
            "{out}"
        );
        // Before the first endpoint.
        assert!(
            out.find(top[2]).unwrap() < out.find(fixture::ENDPOINT).unwrap(),
            "{out}"
        );
        assert!(
            out.contains(&format!("would decide it: {}", fixture::INDETERMINATE_HINT)),
            "{out}"
        );
    }

    #[test]
    fn a_warning_is_shown_with_its_evidence_but_does_not_fail_the_run() {
        let mut report = fixture::with_warning();
        report
            .scenarios
            .retain(|r| r.verdict != Verdict::Indeterminate);
        report
            .scenarios
            .retain(|r| r.id != crate::outcome::ScenarioId::LostResponse);
        report.verdict = AuditReport::overall(&report.scenarios, report.fail_on);
        assert_eq!(report.verdict, Verdict::Pass);
        assert_eq!(report.exit_code(), 0);
        let out = render(&report, Style::default());
        let line = out
            .lines()
            .find(|l| l.contains("payload-mismatch"))
            .unwrap();
        assert!(line.trim_start().starts_with("WARN "), "{line}");
        assert!(
            line.ends_with(&format!("[low] {}", fixture::WARNING_SUMMARY)),
            "{line}"
        );
        assert!(out.contains("the changed request sends"), "{out}");
        let tail: Vec<&str> = out.lines().rev().take(4).collect();
        assert_eq!(
            tail[3],
            "3 scenarios: 1 pass, 0 fail, 1 warning (below --fail-on medium), 0 indeterminate, 1 skipped"
        );
        assert_eq!(
            tail[0],
            "verdict PASS: no violation at or above --fail-on medium, 1 warning below it (exit code 0)"
        );
        // With --fail-on low the same finding fails the run.
        report.fail_on = Severity::Low;
        report.verdict = AuditReport::overall(&report.scenarios, report.fail_on);
        assert_eq!(report.exit_code(), 1);
        let out = render(&report, Style::default());
        let line = out
            .lines()
            .find(|l| l.contains("payload-mismatch"))
            .unwrap();
        assert!(line.trim_start().starts_with("FAIL "), "{line}");
        assert!(line.contains("[low]"), "{line}");
    }
}
