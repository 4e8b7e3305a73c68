//! The JSON report: the [`AuditReport`] itself, every exchange included.

use super::summary::Matrix;
use crate::outcome::AuditReport;

/// The report as pretty-printed JSON and a trailing newline.
pub(crate) fn render(report: &AuditReport) -> String {
    /// The summary table first, then the report's own fields (reading a
    /// report back ignores `summary`: it is derived).
    #[derive(serde::Serialize)]
    struct WithSummary<'a> {
        summary: Matrix<'a>,
        #[serde(flatten)]
        report: &'a AuditReport,
    }
    let with_summary = WithSummary {
        summary: Matrix::of(report),
        report,
    };
    // The report holds only strings, numbers, sequences and string-keyed
    // structs, and writing to a String does no I/O: this cannot fail.
    let mut out =
        serde_json::to_string_pretty(&with_summary).expect("an AuditReport serialises to JSON");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture;
    use serde_json::Value;

    #[test]
    fn the_json_report_parses_back_with_the_documented_fields() {
        let report = fixture::report();
        let out = render(&report);
        assert!(out.ends_with("}\n"));
        let json: Value = serde_json::from_str(&out).unwrap();

        assert_eq!(json["verdict"], "fail");
        assert_eq!(json["tool_version"], "0.1.0");
        let scenarios = json["scenarios"].as_array().unwrap();
        assert_eq!(scenarios.len(), report.scenarios.len());
        for (value, result) in scenarios.iter().zip(&report.scenarios) {
            assert_eq!(value["id"], result.id.as_str());
            assert_eq!(value["verdict"], result.verdict.as_str());
            assert_eq!(value["severity"], result.severity.as_str());
            assert_eq!(value["endpoint"], fixture::ENDPOINT);
            assert!(value["evidence"].is_object());
        }

        let fail = &scenarios[1];
        assert_eq!(fail["severity"], fixture::fail_severity().as_str());
        assert_eq!(fail["summary"], fixture::FAIL_SUMMARY);
        // Every exchange, not just the ones the other formats show.
        let exchanges = fail["evidence"]["exchanges"].as_array().unwrap();
        assert_eq!(exchanges.len(), fixture::fail_exchanges().len());
        assert_eq!(exchanges[0]["answer"]["kind"], "discarded");
        assert_eq!(exchanges[2]["answer"]["kind"], "hung-up");
        assert_eq!(exchanges[4]["answer"]["body"], fixture::NASTY_BODY);
        assert_eq!(fail["evidence"]["curl"][0], fixture::FAIL_CURL);
        assert_eq!(json["bound"]["trials"], 40);
        assert_eq!(json["volume"]["volume"], "10M/day");
    }

    #[test]
    fn a_saved_report_reads_back_unchanged() {
        let report = fixture::report();
        let again: AuditReport = serde_json::from_str(&render(&report)).unwrap();
        assert_eq!(again, report);
    }
}
