//! Rendering an [`AuditReport`]: text, JSON, JUnit XML, Markdown, HTML.
//!
//! All five render the same values, and each starts with the summary of
//! endpoints × scenarios (the text-ish ones when the run covered more than
//! one endpoint). The text report is what a developer
//! reads in a terminal; JSON is the complete record (every exchange, the
//! schema in docs/audit.md); JUnit XML is for CI test tabs; Markdown is for
//! pull requests. The text-ish formats show at most a few exchanges per
//! scenario and point to the JSON report for the rest.

mod evidence;
mod html;
mod json;
mod junit;
mod markdown;
mod summary;
mod text;

pub(crate) use evidence::millis;

use crate::outcome::AuditReport;
use std::fmt;
use std::str::FromStr;

/// A report format, as given to `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReportFormat {
    /// The terminal report: verdict lines, evidence under each failure.
    #[default]
    Text,
    /// The whole report as JSON (docs/audit.md documents the schema).
    Json,
    /// JUnit XML: one test suite per endpoint, one test case per scenario.
    Junit,
    /// GitHub-flavoured Markdown for pull requests.
    Markdown,
    /// One self-contained HTML page (inline CSS, no script, nothing
    /// fetched): the summary table in verdict colours, each finding's
    /// evidence expandable.
    Html,
}

impl ReportFormat {
    /// Every format, in the order help texts list them.
    pub const ALL: [ReportFormat; 5] = [
        ReportFormat::Text,
        ReportFormat::Json,
        ReportFormat::Junit,
        ReportFormat::Markdown,
        ReportFormat::Html,
    ];

    /// The name `--format` takes, e.g. `junit`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Text => "text",
            ReportFormat::Json => "json",
            ReportFormat::Junit => "junit",
            ReportFormat::Markdown => "markdown",
            ReportFormat::Html => "html",
        }
    }
}

impl fmt::Display for ReportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--format` value that names no format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown report format `{given}`; expected one of: text, json, junit, markdown, html")]
pub struct UnknownFormat {
    /// What was given.
    pub given: String,
}

impl FromStr for ReportFormat {
    type Err = UnknownFormat;

    /// Parses a format name, ignoring case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        ReportFormat::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownFormat {
                given: s.to_owned(),
            })
    }
}

/// How to dress the text report. Only [`ReportFormat::Text`] uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// ANSI colours (for a terminal). Without it the report contains no
    /// escape sequence at all.
    pub color: bool,
}

/// The report in `format`, ending with a newline.
pub fn render(report: &AuditReport, format: ReportFormat, style: Style) -> String {
    match format {
        ReportFormat::Text => text::render(report, style),
        ReportFormat::Json => json::render(report),
        ReportFormat::Junit => junit::render(report),
        ReportFormat::Markdown => markdown::render(report),
        ReportFormat::Html => html::render(report),
    }
}

#[cfg(test)]
pub(crate) mod fixture;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_case_insensitively_and_display_as_parsed() {
        for format in ReportFormat::ALL {
            assert_eq!(format.to_string().parse::<ReportFormat>(), Ok(format));
            let upper = format.as_str().to_ascii_uppercase();
            assert_eq!(upper.parse::<ReportFormat>(), Ok(format));
        }
        assert_eq!(
            " Markdown ".parse::<ReportFormat>(),
            Ok(ReportFormat::Markdown)
        );
        assert_eq!(ReportFormat::default(), ReportFormat::Text);
    }

    #[test]
    fn an_unknown_format_names_the_valid_ones() {
        let err = "xml".parse::<ReportFormat>().unwrap_err();
        assert_eq!(err.given, "xml");
        let message = err.to_string();
        for format in ReportFormat::ALL {
            assert!(message.contains(format.as_str()), "{message}");
        }
    }

    #[test]
    fn every_format_ends_with_a_newline() {
        let report = fixture::report();
        for format in ReportFormat::ALL {
            for color in [false, true] {
                let out = render(&report, format, Style { color });
                assert!(out.ends_with('\n'), "{format}: {out:?}");
                assert!(!out.ends_with("\n\n"), "{format} ends with a blank line");
            }
        }
    }

    #[test]
    fn only_the_text_format_is_coloured() {
        let report = fixture::report();
        for format in [
            ReportFormat::Json,
            ReportFormat::Junit,
            ReportFormat::Markdown,
            ReportFormat::Html,
        ] {
            let out = render(&report, format, Style { color: true });
            assert!(!out.contains('\x1b'), "{format} has escapes");
        }
    }
}
