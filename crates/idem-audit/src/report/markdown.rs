//! The Markdown report, for pull requests: a table of every scenario, the
//! evidence for each failure and indeterminate result, then the bound.

use super::evidence;
use super::summary::{self, Matrix};
use crate::outcome::{AuditReport, ScenarioResult, Severity, Verdict};
use std::fmt::Write as _;

/// The Markdown report (GitHub-flavoured: tables, fenced code).
pub(crate) fn render(report: &AuditReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# idem audit: {}", marker(report.verdict));
    out.push('\n');
    let _ = writeln!(
        out,
        "idem {} · started {} · took {} · exit code {}",
        inline(&report.tool_version),
        inline(&report.started_at),
        evidence::millis(report.duration_ms),
        report.exit_code(),
    );
    out.push('\n');
    let warnings = match report.warnings() {
        0 => String::new(),
        n => format!(", {n} warn (below --fail-on {})", report.fail_on),
    };
    let _ = writeln!(
        out,
        "{} scenarios: {} pass, {} fail{warnings}, {} indeterminate, {} skipped",
        report.scenarios.len(),
        report.count(Verdict::Pass),
        report.failures(),
        report.count(Verdict::Indeterminate),
        report.count(Verdict::Skipped),
    );
    let open: Vec<&ScenarioResult> = report
        .scenarios
        .iter()
        .filter(|r| r.verdict == Verdict::Indeterminate)
        .collect();
    if !open.is_empty() {
        out.push_str("\nWhat would turn each indeterminate result into a verdict:\n\n");
        for result in open {
            let what = match &result.oracle_hint {
                Some(hint) => format!("add {}", inline(hint)),
                None => "not another oracle: see its details".to_owned(),
            };
            let _ = writeln!(
                out,
                "- {} on {}: {what}",
                code(result.id.as_str()),
                inline(&result.endpoint)
            );
        }
    }

    if summary::worth_drawing(report) {
        matrix(&mut out, report);
    }

    if !report.endpoints.is_empty() {
        out.push('\n');
        for endpoint in &report.endpoints {
            let target = format!("{} {}", endpoint.method, endpoint.url);
            let name = if endpoint.name == target {
                code(&target)
            } else {
                format!("{}: {}", inline(&endpoint.name), code(&target))
            };
            let oracles = if endpoint.oracles.is_empty() {
                "none".to_owned()
            } else {
                endpoint
                    .oracles
                    .iter()
                    .map(|o| code(o))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(out, "- {name} (oracles: {oracles})");
            if endpoint.is_unprotected() {
                let _ = writeln!(out, "  - **{}**", inline(summary::UNPROTECTED));
            }
            if let Some(origin) = &endpoint.origin {
                let _ = writeln!(out, "  - from {}", inline(origin));
            }
        }
    }

    if !report.scenarios.is_empty() {
        out.push('\n');
        out.push_str("| Endpoint | Scenario | Verdict | Severity | Summary |\n");
        out.push_str("|---|---|---|---|---|\n");
        for result in &report.scenarios {
            let severity = if result.verdict == Verdict::Fail {
                result.severity.as_str()
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                inline(&result.endpoint),
                code(result.id.as_str()),
                result_marker(result, report.fail_on),
                severity,
                inline(&result.summary),
            );
        }
    }

    let details: Vec<&ScenarioResult> = report
        .scenarios
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Fail | Verdict::Indeterminate))
        .collect();
    if !details.is_empty() {
        out.push_str("\n## Details\n");
        for result in details {
            detail(&mut out, result, report.fail_on);
        }
    }

    out.push_str("\n## Bound\n\n");
    let _ = writeln!(out, "{}", inline(&report.bound.statement));
    if let Some(volume) = &report.volume {
        out.push('\n');
        let _ = writeln!(out, "{}", inline(&volume.statement));
    }
    out
}

/// The summary table: endpoints × scenarios, one mark per cell.
fn matrix(out: &mut String, report: &AuditReport) {
    let matrix = Matrix::of(report);
    out.push_str("\n## Summary\n\n| Endpoint |");
    for id in &matrix.scenarios {
        let _ = write!(out, " {} |", code(id.as_str()));
    }
    out.push_str("\n|---|");
    for _ in &matrix.scenarios {
        out.push_str("---|");
    }
    out.push('\n');
    for row in &matrix.rows {
        let unprotected = if row.unprotected {
            " (unprotected)"
        } else {
            ""
        };
        let _ = write!(out, "| {}{unprotected} |", inline(row.endpoint));
        for cell in &row.cells {
            match cell {
                Some(c) => {
                    let _ = write!(out, " **{}** |", c.mark.short());
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    if matrix.rows.iter().any(|r| r.unprotected) {
        let _ = writeln!(out, "\n(unprotected) {}", inline(summary::UNPROTECTED));
    }
}

fn detail(out: &mut String, result: &ScenarioResult, fail_on: Severity) {
    let severity = if result.verdict == Verdict::Fail {
        format!(" ({})", result.severity)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "\n### {} {} on {}{severity}\n",
        result_marker(result, fail_on),
        code(result.id.as_str()),
        inline(&result.endpoint),
    );
    let _ = writeln!(
        out,
        "*{}*: {}",
        inline(result.id.title()),
        inline(&result.summary)
    );

    if let Some(hint) = &result.oracle_hint {
        let _ = writeln!(out, "\nWould decide it: {}", inline(hint));
    }

    let ev = &result.evidence;
    if !ev.notes.is_empty() || !ev.oracle.is_empty() {
        out.push('\n');
        for note in &ev.notes {
            let _ = writeln!(out, "- {}", inline(note));
        }
        for reading in &ev.oracle {
            let _ = writeln!(out, "- oracle {}", inline(&evidence::oracle_line(reading)));
        }
    }

    if !ev.exchanges.is_empty() {
        let lines = evidence::plain_text(&evidence::exchange_lines(ev));
        out.push_str("\nExchanges:\n\n");
        fenced(out, "text", lines.trim_end());
    }

    if !ev.curl.is_empty() {
        let curl: Vec<String> = ev.curl.iter().map(|c| evidence::sanitize_curl(c)).collect();
        out.push_str("\nReproduce:\n\n");
        fenced(out, "sh", &curl.join("\n"));
    }
}

/// A result's marker: its verdict, or `**WARN**` for a failure below
/// `--fail-on`.
fn result_marker(result: &ScenarioResult, fail_on: Severity) -> String {
    if result.is_warning(fail_on) {
        "**WARN**".to_owned()
    } else {
        marker(result.verdict)
    }
}

/// `**FAIL**`: bold, no emoji, greppable.
fn marker(verdict: Verdict) -> String {
    format!("**{}**", verdict.as_str().to_ascii_uppercase())
}

/// A fenced block whose fence is longer than any backtick run inside, so a
/// body containing ``` cannot close it early.
fn fenced(out: &mut String, lang: &str, content: &str) {
    let longest = content.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    let _ = writeln!(out, "{fence}{lang}\n{content}\n{fence}");
}

/// Text for a table cell or a paragraph: one line, Markdown and HTML
/// metacharacters escaped (a `|` would otherwise split the cell, a `<`
/// open a tag).
fn inline(s: &str) -> String {
    let flat = evidence::one_line(s);
    let mut out = String::with_capacity(flat.len());
    for c in flat.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '&' | '~' | '#'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An inline code span that survives backticks inside and `|` in a table.
fn code(s: &str) -> String {
    let flat = evidence::one_line(s).replace('|', "\\|");
    let longest = flat.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let ticks = "`".repeat(longest + 1);
    if flat.starts_with('`') || flat.ends_with('`') {
        format!("{ticks} {flat} {ticks}")
    } else {
        format!("{ticks}{flat}{ticks}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    fn md() -> String {
        render(&fixture::report())
    }

    /// The cells of a table row, split on unescaped `|`.
    fn cells(row: &str) -> Vec<String> {
        let mut cells = vec![String::new()];
        let mut escaped = false;
        for c in row.trim().trim_matches('|').chars() {
            if c == '|' && !escaped {
                cells.push(String::new());
            } else {
                cells.last_mut().unwrap().push(c);
            }
            escaped = c == '\\' && !escaped;
        }
        cells.into_iter().map(|c| c.trim().to_owned()).collect()
    }

    #[test]
    fn the_title_and_table_show_every_scenario() {
        let out = md();
        assert!(out.starts_with("# idem audit: **FAIL**\n"), "{out}");
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 1 + 4, "{out}");
        assert_eq!(
            cells(rows[0]),
            ["Endpoint", "Scenario", "Verdict", "Severity", "Summary"]
        );
        let fail = cells(rows[2]);
        assert_eq!(fail[1], "`lost-response`");
        assert_eq!(fail[2], "**FAIL**");
        assert_eq!(fail[3], "high");
        assert_eq!(cells(rows[1])[3], "", "a pass has no severity");
        assert_eq!(cells(rows[3])[2], "**INDETERMINATE**");
        assert_eq!(cells(rows[4])[2], "**SKIPPED**");
    }

    #[test]
    fn a_pipe_in_a_cell_does_not_split_it() {
        let mut report = fixture::report();
        report.scenarios[1].summary = "409 | 201 <b>&</b>\nthen 201".to_owned();
        let out = render(&report);
        let row = out
            .lines()
            .find(|l| l.starts_with("| ") && l.contains("lost-response"))
            .unwrap();
        let cells = cells(row);
        assert_eq!(cells.len(), 5, "{row}");
        assert_eq!(cells[4], r"409 \| 201 \<b\>\&\</b\> then 201");
    }

    #[test]
    fn details_hold_evidence_in_code_blocks_and_curl_in_sh() {
        let out = md();
        assert!(out.contains("## Details"), "{out}");
        assert!(
            out.contains(
                "### **FAIL** `lost-response` on POST http://127.0.0.1:8080/payments (high)"
            ),
            "{out}"
        );
        assert!(
            out.contains("### **INDETERMINATE** `concurrent-burst`"),
            "{out}"
        );
        assert!(!out.contains("### **PASS**"), "{out}");
        assert!(!out.contains(fixture::PASS_NOTE), "{out}");
        assert!(
            out.contains("- oracle count-url: 3 → 5 (2 effects)"),
            "{out}"
        );
        // The body is verbatim inside the code block: no Markdown escaping.
        assert!(
            out.contains(
                "→ 500 Internal Server Error {\"error\":\"a|b <c> & d\", \"trace\":\"x\"}"
            ),
            "{out}"
        );
        assert!(
            out.contains(&format!("```sh\n{}\n", fixture::FAIL_CURL)),
            "{out}"
        );
        assert!(out.contains("more in the JSON report"), "{out}");
    }

    #[test]
    fn the_bound_and_volume_close_the_report() {
        let report = fixture::report();
        let out = md();
        let bound = out.find("## Bound").unwrap();
        assert!(out[bound..].contains(&inline(&report.bound.statement)));
        assert!(out[bound..].contains(&inline(&report.volume.as_ref().unwrap().statement)));
    }

    #[test]
    fn a_body_with_a_fence_cannot_close_the_code_block() {
        let mut out = String::new();
        fenced(&mut out, "text", "a ``` b");
        assert_eq!(out, "````text\na ``` b\n````\n");
    }

    #[test]
    fn a_warning_is_marked_apart_and_keeps_its_details() {
        let out = render(&fixture::with_warning());
        let row = out
            .lines()
            .find(|l| l.starts_with("| ") && l.contains("payload-mismatch"))
            .unwrap();
        let cells = cells(row);
        assert_eq!((cells[2].as_str(), cells[3].as_str()), ("**WARN**", "low"));
        assert!(out.contains("### **WARN** `payload-mismatch`"), "{out}");
        assert!(
            out.contains("1 fail, 1 warn (below --fail-on medium)"),
            "{out}"
        );
        // Still a failing run because of the medium-or-worse failure.
        assert!(out.starts_with("# idem audit: **FAIL**"), "{out}");
    }

    #[test]
    fn indeterminate_results_say_what_would_decide_them() {
        let out = md();
        assert!(
            out.contains(&format!(
                "- `concurrent-burst` on {}: add {}",
                inline(fixture::ENDPOINT),
                inline(fixture::INDETERMINATE_HINT)
            )),
            "{out}"
        );
    }
}
