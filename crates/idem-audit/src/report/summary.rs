//! The summary every format puts first: endpoints × scenarios, one mark
//! per cell. The JSON report carries it as `summary`; the text, Markdown
//! and JUnit reports draw it when the run covered more than one endpoint
//! (or an unprotected one); the HTML report always does.

use crate::outcome::{AuditReport, EndpointSummary, ScenarioId, ScenarioResult, Severity, Verdict};
use serde::Serialize;

/// What one cell shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mark {
    Pass,
    Fail,
    /// A failure below `--fail-on`.
    Warn,
    Indeterminate,
    Skipped,
}

impl Mark {
    pub(crate) fn of(result: &ScenarioResult, fail_on: Severity) -> Mark {
        match result.verdict {
            Verdict::Fail if result.is_warning(fail_on) => Mark::Warn,
            Verdict::Fail => Mark::Fail,
            Verdict::Pass => Mark::Pass,
            Verdict::Indeterminate => Mark::Indeterminate,
            Verdict::Skipped => Mark::Skipped,
        }
    }

    /// The word in a cell: `PASS`, `FAIL`, `WARN`, `INDET`, `SKIP`.
    pub(crate) fn short(self) -> &'static str {
        match self {
            Mark::Pass => "PASS",
            Mark::Fail => "FAIL",
            Mark::Warn => "WARN",
            Mark::Indeterminate => "INDET",
            Mark::Skipped => "SKIP",
        }
    }

    /// The lowercase name (`json`, HTML classes).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mark::Pass => "pass",
            Mark::Fail => "fail",
            Mark::Warn => "warn",
            Mark::Indeterminate => "indeterminate",
            Mark::Skipped => "skipped",
        }
    }
}

/// The whole table.
#[derive(Debug, Serialize)]
pub(crate) struct Matrix<'a> {
    /// The scenarios that ran on any endpoint, in run order.
    pub(crate) scenarios: Vec<ScenarioId>,
    pub(crate) rows: Vec<Row<'a>>,
}

/// One endpoint's row.
#[derive(Debug, Serialize)]
pub(crate) struct Row<'a> {
    pub(crate) endpoint: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) unprotected: bool,
    /// One per column: the mark and where the result is in
    /// `report.scenarios`; `null` where the scenario did not run.
    pub(crate) cells: Vec<Option<Cell>>,
}

/// One cell.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Cell {
    pub(crate) mark: Mark,
    pub(crate) severity: Severity,
    /// Index into `report.scenarios`.
    #[serde(skip)]
    pub(crate) index: usize,
}

impl<'a> Matrix<'a> {
    pub(crate) fn of(report: &'a AuditReport) -> Matrix<'a> {
        let scenarios: Vec<ScenarioId> = ScenarioId::ALL
            .into_iter()
            .filter(|id| report.scenarios.iter().any(|r| r.id == *id))
            .collect();
        let mut names: Vec<(&str, bool)> = report
            .endpoints
            .iter()
            .map(|e| (e.name.as_str(), e.is_unprotected()))
            .collect();
        for r in &report.scenarios {
            if !names.iter().any(|(n, _)| *n == r.endpoint) {
                names.push((&r.endpoint, false));
            }
        }
        let rows = names
            .into_iter()
            .map(|(endpoint, unprotected)| Row {
                endpoint,
                unprotected,
                cells: scenarios
                    .iter()
                    .map(|id| {
                        report
                            .scenarios
                            .iter()
                            .position(|r| r.endpoint == endpoint && r.id == *id)
                            .map(|index| Cell {
                                mark: Mark::of(&report.scenarios[index], report.fail_on),
                                severity: report.scenarios[index].severity,
                                index,
                            })
                    })
                    .collect(),
            })
            .collect();
        Matrix { scenarios, rows }
    }
}

/// Whether the text-ish formats draw the table: more than one endpoint,
/// or one whose description does not declare the key header.
pub(crate) fn worth_drawing(report: &AuditReport) -> bool {
    report.endpoints.len() > 1 || report.endpoints.iter().any(EndpointSummary::is_unprotected)
}

/// A column heading short enough for a terminal: `replay`, `burst`, ….
pub(crate) fn short(id: ScenarioId) -> &'static str {
    match id {
        ScenarioId::SequentialReplay => "replay",
        ScenarioId::ConcurrentBurst => "burst",
        ScenarioId::LostResponse => "lost",
        ScenarioId::AbandonedRequest => "abandon",
        ScenarioId::PayloadMismatch => "payload",
        ScenarioId::CrossTenant => "tenant",
        ScenarioId::MissingKey => "no-key",
        ScenarioId::InvalidKey => "bad-key",
        ScenarioId::ErrorReplay => "error",
        ScenarioId::Retention => "retain",
        ScenarioId::ReplayMarker => "marker",
    }
}

/// What an unprotected endpoint is, in words every format uses.
pub(crate) const UNPROTECTED: &str =
    "unprotected: its API description does not declare the key header, so nothing promises that retries are deduplicated";

/// The table as plain text lines (no colour): `paint` dresses each mark.
pub(crate) fn text_lines(
    report: &AuditReport,
    paint: &dyn Fn(Mark, &str) -> String,
) -> Vec<String> {
    let matrix = Matrix::of(report);
    let label = |row: &Row<'_>| {
        let name = super::evidence::one_line(row.endpoint);
        let name = if name.chars().count() > 48 {
            let cut: String = name.chars().take(47).collect();
            format!("{cut}…")
        } else {
            name
        };
        if row.unprotected {
            format!("{name} *")
        } else {
            name
        }
    };
    let name_width = matrix
        .rows
        .iter()
        .map(|r| label(r).chars().count())
        .max()
        .unwrap_or(0)
        .max("endpoint".len());
    let widths: Vec<usize> = matrix
        .scenarios
        .iter()
        .map(|id| short(*id).len().max(5))
        .collect();
    let mut lines = vec![format!(
        "summary: {} endpoint(s) × {} scenario(s)",
        matrix.rows.len(),
        matrix.scenarios.len()
    )];
    let mut head = format!("  {:<name_width$}", "endpoint");
    for (id, w) in matrix.scenarios.iter().zip(&widths) {
        head.push_str(&format!("  {:<w$}", short(*id)));
    }
    lines.push(head.trim_end().to_owned());
    for row in &matrix.rows {
        let name = label(row);
        let pad = name_width - name.chars().count();
        let mut line = format!("  {name}{}", " ".repeat(pad));
        for (cell, w) in row.cells.iter().zip(&widths) {
            let word = cell.map_or("-", |c| c.mark.short());
            let shown = match cell {
                Some(c) => paint(c.mark, word),
                None => word.to_owned(),
            };
            line.push_str(&format!("  {shown}{}", " ".repeat(w - word.len())));
        }
        lines.push(line.trim_end().to_owned());
    }
    if matrix.rows.iter().any(|r| r.unprotected) {
        lines.push(format!("  * {UNPROTECTED}"));
    }
    lines
}
