//! The HTML report: one self-contained page. Inline CSS, no script, no
//! font, image or stylesheet from anywhere (a Content-Security-Policy of
//! `default-src 'none'` says so to the browser too), so it opens the same
//! from a CI artifact, a mail attachment or a machine without network.
//!
//! It starts with the verdict and the summary table (endpoints ×
//! scenarios, each cell in its verdict's colour and linked to the
//! result), then the bound and the volume figures, then every endpoint
//! with each result as a `<details>` that expands to its evidence: notes,
//! oracle readings, every exchange (headers and bodies), curl lines.
//!
//! Everything from the target API (bodies, headers, even its endpoint
//! names and URLs, which come from a description it may have written) is
//! hostile: it is escaped as text, never markup.

use super::evidence;
use super::summary::{self, Mark, Matrix};
use crate::outcome::{
    Answer, AuditReport, EndpointSummary, Exchange, ScenarioResult, Seen, Severity, Verdict,
};
use std::fmt::Write as _;

const STYLE: &str = r#"
:root { --pass:#1a7f37; --pass-bg:#dafbe1; --fail:#cf222e; --fail-bg:#ffebe9;
  --warn:#9a6700; --warn-bg:#fff8c5; --indet:#bc4c00; --indet-bg:#fff1e5;
  --skip:#57606a; --skip-bg:#eaeef2; --line:#d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
  max-width: 1200px; padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.5rem 0 .3rem; }
code, pre { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: .6rem;
  overflow-x: auto; white-space: pre-wrap; word-break: break-all; margin: .3rem 0; }
.meta { color: #59636e; }
table.summary { border-collapse: collapse; margin: .5rem 0; }
table.summary th, table.summary td { border: 1px solid var(--line); padding: .3rem .5rem;
  text-align: left; vertical-align: top; }
table.summary thead th { background: #f6f8fa; font-weight: 600; font-size: 12px; }
table.summary td a { color: inherit; text-decoration: none; display: block; }
td.none { color: var(--skip); text-align: center; }
.pass { color: var(--pass); background: var(--pass-bg); }
.fail { color: var(--fail); background: var(--fail-bg); }
.warn { color: var(--warn); background: var(--warn-bg); }
.indeterminate { color: var(--indet); background: var(--indet-bg); }
.skipped { color: var(--skip); background: var(--skip-bg); }
.mark { font-weight: 700; border-radius: 4px; padding: 0 .35rem; font-size: 12px; }
td.cell { font-weight: 700; }
td.cell small { font-weight: 400; }
.unprotected { color: var(--warn); background: var(--warn-bg); border-radius: 4px;
  padding: 0 .35rem; font-size: 12px; font-weight: 600; }
details.result { border: 1px solid var(--line); border-radius: 6px; margin: .4rem 0;
  background: #fff; }
details.result > summary { cursor: pointer; padding: .4rem .6rem; list-style-position: inside; }
details.result[open] > summary { border-bottom: 1px solid var(--line); }
.evidence { padding: .3rem .8rem .6rem; }
.evidence h4 { margin: .6rem 0 .2rem; font-size: 13px; }
.exchange { margin: .5rem 0; }
.figures p { margin: .3rem 0; }
"#;

/// The HTML report.
pub(crate) fn render(report: &AuditReport) -> String {
    let mut out = String::new();
    let verdict = report.verdict.as_str().to_ascii_uppercase();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <title>idem audit: {verdict}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    );
    let _ = writeln!(
        out,
        "<h1>idem audit: <span id=\"verdict\" class=\"mark {}\">{verdict}</span></h1>",
        verdict_class(report.verdict)
    );
    let _ = writeln!(
        out,
        "<p class=\"meta\">idem {} · started {} · took {} · exit code {}</p>",
        esc(&report.tool_version),
        esc(&report.started_at),
        esc(&evidence::millis(report.duration_ms)),
        report.exit_code()
    );
    let warnings = match report.warnings() {
        0 => String::new(),
        n => format!(", {n} warn (below --fail-on {})", report.fail_on),
    };
    let _ = writeln!(
        out,
        "<p id=\"totals\">{} scenarios: {} pass, {} fail{}, {} indeterminate, {} skipped</p>",
        report.scenarios.len(),
        report.count(Verdict::Pass),
        report.failures(),
        esc(&warnings),
        report.count(Verdict::Indeterminate),
        report.count(Verdict::Skipped),
    );
    hints(&mut out, report);
    summary_table(&mut out, report);
    figures(&mut out, report);

    out.push_str("<h2>Endpoints</h2>\n");
    let matrix = Matrix::of(report);
    for row in &matrix.rows {
        let endpoint = report.endpoints.iter().find(|e| e.name == row.endpoint);
        endpoint_section(&mut out, report, row.endpoint, endpoint);
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// What would decide each indeterminate result.
fn hints(out: &mut String, report: &AuditReport) {
    let open: Vec<&ScenarioResult> = report
        .scenarios
        .iter()
        .filter(|r| r.verdict == Verdict::Indeterminate)
        .collect();
    if open.is_empty() {
        return;
    }
    out.push_str(
        "<p>What would turn each indeterminate result into a verdict:</p>\n<ul id=\"hints\">\n",
    );
    for r in open {
        let what = match &r.oracle_hint {
            Some(hint) => format!("add <code>{}</code>", esc(hint)),
            None => "not another oracle: see its evidence".to_owned(),
        };
        let _ = writeln!(
            out,
            "<li><code>{}</code> on {}: {what}</li>",
            esc(r.id.as_str()),
            esc(&r.endpoint)
        );
    }
    out.push_str("</ul>\n");
}

fn summary_table(out: &mut String, report: &AuditReport) {
    let matrix = Matrix::of(report);
    out.push_str(
        "<h2>Summary</h2>\n<table class=\"summary\" id=\"summary\">\n<thead><tr><th>Endpoint</th>",
    );
    for id in &matrix.scenarios {
        let _ = write!(
            out,
            "<th title=\"{}\">{}</th>",
            esc(id.title()),
            esc(id.as_str())
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &matrix.rows {
        let badge = if row.unprotected {
            " <span class=\"unprotected\" title=\"the key header is not declared\">unprotected</span>"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tr data-endpoint=\"{}\"><th scope=\"row\">{}{badge}</th>",
            esc(row.endpoint),
            esc(row.endpoint)
        );
        for (id, cell) in matrix.scenarios.iter().zip(&row.cells) {
            match cell {
                Some(c) => {
                    let severity = if matches!(c.mark, Mark::Fail | Mark::Warn) {
                        format!(" <small>{}</small>", c.severity)
                    } else {
                        String::new()
                    };
                    let _ = write!(
                        out,
                        "<td class=\"cell {}\" data-scenario=\"{}\"><a href=\"#r{}\">{}{severity}</a></td>",
                        c.mark.as_str(),
                        esc(id.as_str()),
                        c.index,
                        c.mark.short()
                    );
                }
                None => {
                    let _ = write!(
                        out,
                        "<td class=\"none\" data-scenario=\"{}\">–</td>",
                        esc(id.as_str())
                    );
                }
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    if matrix.rows.iter().any(|r| r.unprotected) {
        let _ = writeln!(
            out,
            "<p><span class=\"unprotected\">unprotected</span> {}</p>",
            esc(summary::UNPROTECTED)
        );
    }
}

/// The bound and the volume figures.
fn figures(out: &mut String, report: &AuditReport) {
    let b = &report.bound;
    out.push_str("<h2>What the run bounds</h2>\n<div class=\"figures\">\n");
    let _ = writeln!(out, "<p id=\"bound\">{}</p>", esc(&b.statement));
    let mut facts = vec![format!(
        "{} raced trials, {} failed",
        b.trials, b.failed_trials
    )];
    if let Some(rate) = b.observed_rate {
        facts.push(format!("observed rate {}", percent(rate)));
    }
    if let Some(ub) = b.upper_bound_95 {
        facts.push(format!("95% upper bound {}", percent(ub)));
    }
    if let Some(r3) = b.rule_of_three {
        facts.push(format!("rule of three {}", percent(r3)));
    }
    let _ = writeln!(out, "<p class=\"meta\">{}</p>", esc(&facts.join(" · ")));
    if let Some(v) = &report.volume {
        let _ = writeln!(out, "<p id=\"volume\">{}</p>", esc(&v.statement));
        let _ = writeln!(
            out,
            "<p class=\"meta\">volume {} ({:.0} requests a day) · ambiguous rate {} · retried deliveries that duplicate {}{} · about {:.0} duplicates a day</p>",
            esc(&v.volume),
            v.requests_per_day,
            percent(v.ambiguous_rate),
            percent(v.retry_duplicates),
            if v.is_bound { " (a bound)" } else { "" },
            v.duplicates_per_day
        );
    }
    out.push_str("</div>\n");
}

fn percent(x: f64) -> String {
    if !x.is_finite() {
        return "?".to_owned();
    }
    let p = x * 100.0;
    if p != 0.0 && p.abs() < 0.1 {
        format!("{p:.3}%")
    } else {
        format!("{p:.1}%")
    }
}

fn endpoint_section(
    out: &mut String,
    report: &AuditReport,
    name: &str,
    endpoint: Option<&EndpointSummary>,
) {
    out.push_str("<section class=\"endpoint\">\n");
    let _ = writeln!(out, "<h3>{}</h3>", esc(name));
    if let Some(e) = endpoint {
        let mut line = format!("<code>{} {}</code>", esc(&e.method), esc(&e.url));
        if !e.oracles.is_empty() {
            let _ = write!(line, " · oracles: {}", esc(&e.oracles.join(", ")));
        }
        if !e.more_urls.is_empty() {
            let _ = write!(line, " · also {}", esc(&e.more_urls.join(", ")));
        }
        let _ = writeln!(out, "<p class=\"meta\">{line}</p>");
        if e.is_unprotected() {
            let _ = writeln!(
                out,
                "<p><span class=\"unprotected\">unprotected</span> {}</p>",
                esc(summary::UNPROTECTED)
            );
        }
        if let Some(origin) = &e.origin {
            let _ = writeln!(out, "<p class=\"meta\">from {}</p>", esc(origin));
        }
    }
    for (index, result) in report
        .scenarios
        .iter()
        .enumerate()
        .filter(|(_, r)| r.endpoint == name)
    {
        result_details(out, index, result, report.fail_on);
    }
    out.push_str("</section>\n");
}

fn result_details(out: &mut String, index: usize, r: &ScenarioResult, fail_on: Severity) {
    let mark = Mark::of(r, fail_on);
    let severity = if matches!(mark, Mark::Fail | Mark::Warn) {
        format!(" [{}]", r.severity)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "<details class=\"result {}\" id=\"r{index}\" data-scenario=\"{}\">\n<summary><span class=\"mark {}\">{}</span> <code>{}</code>{} {}</summary>\n<div class=\"evidence\">",
        mark.as_str(),
        esc(r.id.as_str()),
        mark.as_str(),
        mark.short(),
        esc(r.id.as_str()),
        esc(&severity),
        esc(&r.summary)
    );
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} · {} trial(s), {} failed · {}</p>",
        esc(r.id.title()),
        r.trials,
        r.failed_trials,
        esc(&evidence::millis(r.duration_ms))
    );
    if let Some(hint) = &r.oracle_hint {
        let _ = writeln!(out, "<p>Would decide it: <code>{}</code></p>", esc(hint));
    }
    let ev = &r.evidence;
    if !ev.notes.is_empty() {
        out.push_str("<h4>Notes</h4>\n<ul>\n");
        for note in &ev.notes {
            let _ = writeln!(out, "<li>{}</li>", esc(note));
        }
        out.push_str("</ul>\n");
    }
    if !ev.oracle.is_empty() {
        out.push_str("<h4>Oracle</h4>\n<ul>\n");
        for reading in &ev.oracle {
            let _ = writeln!(out, "<li>{}</li>", esc(&evidence::oracle_line(reading)));
        }
        out.push_str("</ul>\n");
    }
    if !ev.exchanges.is_empty() {
        let _ = writeln!(out, "<h4>Exchanges ({})</h4>", ev.exchanges.len());
        for exchange in &ev.exchanges {
            exchange_html(out, exchange);
        }
    }
    if !ev.curl.is_empty() {
        out.push_str("<h4>Reproduce</h4>\n");
        let lines: Vec<String> = ev.curl.iter().map(|c| evidence::sanitize_curl(c)).collect();
        let _ = writeln!(out, "<pre class=\"curl\">{}</pre>", esc(&lines.join("\n")));
    }
    out.push_str("</div>\n</details>\n");
}

fn exchange_html(out: &mut String, x: &Exchange) {
    let mut request = format!("{} {}\n", x.request.method, x.request.url);
    for (name, value) in &x.request.headers {
        let _ = writeln!(request, "{name}: {value}");
    }
    if let Some(body) = &x.request.body {
        let _ = write!(request, "\n{body}");
    }
    let answer = match &x.answer {
        Answer::Response(seen) => seen_text(seen),
        Answer::Discarded(seen) => format!(
            "(discarded by the fault point: the client saw a reset)\n{}",
            seen_text(seen)
        ),
        Answer::HungUp { after_ms } => {
            format!("(the client hung up after {})", evidence::millis(*after_ms))
        }
        Answer::Error { message } => format!("(no response: {message})"),
    };
    let _ = writeln!(
        out,
        "<div class=\"exchange\"><strong>{}</strong> <span class=\"meta\">{}</span>\n<pre class=\"request\">{}</pre>\n<pre class=\"answer\">{}</pre></div>",
        esc(&x.label),
        esc(&evidence::millis(x.elapsed_ms)),
        esc(&evidence::sanitize(request.trim_end())),
        esc(&evidence::sanitize(answer.trim_end()))
    );
}

fn seen_text(seen: &Seen) -> String {
    let mut text = format!("{}\n", evidence::status_text(seen.status));
    for (name, value) in &seen.headers {
        let _ = writeln!(text, "{name}: {value}");
    }
    if !seen.body.is_empty() {
        let _ = write!(text, "\n{}", seen.body);
        if seen.body_truncated {
            text.push_str("… (cut at 4 KiB)");
        }
    }
    text
}

fn verdict_class(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Indeterminate => "indeterminate",
        Verdict::Skipped => "skipped",
    }
}

/// Text as HTML text or attribute value: the five metacharacters escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;

    #[test]
    fn the_page_is_self_contained() {
        let out = render(&fixture::two_endpoints());
        for banned in [
            "<script",
            "<link",
            "src=",
            "@import",
            "url(",
            "http-equiv=\"refresh\"",
        ] {
            assert!(!out.contains(banned), "{banned} in the page");
        }
        assert!(out.contains("default-src 'none'"), "{out}");
    }

    #[test]
    fn hostile_text_is_escaped() {
        let mut report = fixture::report();
        report.scenarios[1].summary = "<script>alert(1)</script> & \"q\"".to_owned();
        report.endpoints[0].origin = Some("<img src=x onerror=alert(1)>".to_owned());
        let out = render(&report);
        assert!(!out.contains("<script>alert"), "{out}");
        assert!(!out.contains("<img"), "{out}");
        assert!(out.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;"));
        // The fixture's body with < > & | is escaped inside its <pre>.
        assert!(out.contains("a|b &lt;c&gt; &amp; d"), "{out}");
    }

    #[test]
    fn the_summary_marks_every_cell_and_links_to_its_result() {
        let report = fixture::two_endpoints();
        let out = render(&report);
        let fail = report
            .scenarios
            .iter()
            .position(|r| r.verdict == Verdict::Fail)
            .unwrap();
        assert!(
            out.contains(&format!(
                "<td class=\"cell fail\" data-scenario=\"lost-response\"><a href=\"#r{fail}\">FAIL <small>high</small></a></td>"
            )),
            "{out}"
        );
        assert!(out.contains(&format!("id=\"r{fail}\"")));
        assert!(out.contains("<span class=\"unprotected\""), "{out}");
        assert!(out.find("id=\"summary\"") < out.find("<h2>Endpoints</h2>"));
    }
}
