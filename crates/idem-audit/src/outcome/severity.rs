//! How bad a failure is: what `--fail-on` compares against.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How bad a failure is (or would be).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Observations that are not violations.
    Info,
    /// Weak protection that is not yet a duplicate.
    Low,
    /// A contract violation without a duplicate effect.
    Medium,
    /// A duplicate side effect: the double charge.
    High,
    /// One tenant's data reaches another.
    Critical,
}

impl Severity {
    /// The lowercase name used in every report.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--fail-on` value that is not a severity a failure can have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not a severity to fail on; expected low, medium, high or critical")]
pub struct UnknownSeverity {
    /// What was given.
    pub given: String,
}

impl std::str::FromStr for Severity {
    type Err = UnknownSeverity;

    /// Parses `low`, `medium`, `high` or `critical` (any case): the
    /// severities `--fail-on` takes. `info` is refused: an informational
    /// result never fails.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| UnknownSeverity {
            given: s.to_owned(),
        })
    }
}
