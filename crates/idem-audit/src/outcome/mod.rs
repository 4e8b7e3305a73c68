//! What an audit found: verdicts, severities and the evidence behind each.
//! These types are the JSON report's schema (docs/audit.md documents it);
//! the text, JUnit and Markdown reports render the same values. They read
//! back too, so a saved JSON report can be rendered again:
//!
//! ```
//! # fn example(json: &str) -> Result<(), serde_json::Error> {
//! let report: idem_audit::AuditReport = serde_json::from_str(json)?;
//! let format = "markdown".parse().unwrap_or_default();
//! print!("{}", idem_audit::report::render(&report, format, Default::default()));
//! # Ok(()) }
//! ```

mod scenario_id;
mod severity;

pub use scenario_id::{ScenarioId, UnknownScenario};
pub use severity::{Severity, UnknownSeverity};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A scenario's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The API kept the contract, and the oracle could tell.
    Pass,
    /// A scenario was not run (its flag is missing, or it was not selected).
    Skipped,
    /// A duplicate (or other violation) could not be ruled out: the oracle
    /// could not see enough. Never reported as a pass.
    Indeterminate,
    /// A violation, with evidence.
    Fail,
}

impl Verdict {
    /// The lowercase name used in every report.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Skipped => "skipped",
            Verdict::Indeterminate => "indeterminate",
            Verdict::Fail => "fail",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request as the auditor sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRequest {
    /// The method.
    pub method: String,
    /// The full URL.
    pub url: String,
    /// Headers in the order sent; secrets are redacted unless
    /// `--show-secrets` was given.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The idempotency key sent (lossy UTF-8; `""` for an empty one), if a
    /// key header was sent; whatever the key header is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What came back for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Answer {
    /// A complete response the client saw.
    Response(Seen),
    /// A complete response the auditor's fault point read and threw away:
    /// the server finished, the client saw a reset.
    Discarded(Seen),
    /// The client hung up before any answer.
    HungUp {
        /// When, after the request was fully sent.
        after_ms: f64,
    },
    /// No response: the connection failed or the answer was malformed.
    Error {
        /// What went wrong.
        message: String,
    },
}

impl Answer {
    /// The response, whether the client saw it or the fault point ate it.
    pub fn seen(&self) -> Option<&Seen> {
        match self {
            Answer::Response(s) | Answer::Discarded(s) => Some(s),
            _ => None,
        }
    }

    /// The response, only if the client saw it.
    pub fn delivered(&self) -> Option<&Seen> {
        match self {
            Answer::Response(s) => Some(s),
            _ => None,
        }
    }

    /// The status, if a response was read.
    pub fn status(&self) -> Option<u16> {
        self.seen().map(|s| s.status)
    }
}

/// A response as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8), cut at 4 KiB.
    pub body: String,
    /// Whether `body` was cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_truncated: bool,
}

impl Seen {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One request and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// What this request was in the scenario: `first`, `retry 2`,
    /// `round 3 request 7`, ...
    pub label: String,
    /// What was sent.
    pub request: SentRequest,
    /// What came back.
    pub answer: Answer,
    /// From the last byte sent to the answer (or hang-up), in milliseconds.
    pub elapsed_ms: f64,
}

/// What one oracle saw around a scenario (or one round of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OracleReading {
    /// `count-url`, `check-cmd`, `count-url+check-cmd`, `id-field` or `body`.
    pub oracle: String,
    /// What it saw, in words.
    pub saw: String,
    /// The side effects it counted, where it can count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effects: Option<u64>,
}

/// Everything behind a verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The requests and answers that matter for the verdict (for bursts,
    /// every request of the first failed round, or of the first
    /// indeterminate one; every round's statuses are in the notes).
    pub exchanges: Vec<Exchange>,
    /// What the oracles saw.
    pub oracle: Vec<OracleReading>,
    /// Observations in words.
    pub notes: Vec<String>,
    /// Shell lines that reproduce the scenario with curl.
    pub curl: Vec<String>,
}

/// One scenario's result on one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// The scenario's stable id.
    pub id: ScenarioId,
    /// The endpoint's name (its `METHOD URL` unless the config names it).
    pub endpoint: String,
    /// The verdict.
    pub verdict: Verdict,
    /// How bad a failure is (for other verdicts: how bad it would be).
    pub severity: Severity,
    /// One sentence: what happened.
    pub summary: String,
    /// Independent trials the verdict rests on (a burst round is one).
    pub trials: u64,
    /// Trials that showed a violation.
    pub failed_trials: u64,
    /// Whether the scenario races requests against each other, so that a
    /// clean run bounds a rate (rule of three).
    pub raced: bool,
    /// What was sent, what came back, what the oracle saw.
    pub evidence: Evidence,
    /// For an indeterminate result that another oracle would decide: the
    /// flags to add, and why (`--count-url URL or --check-cmd CMD: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle_hint: Option<String>,
    /// Wall time of the scenario.
    pub duration_ms: f64,
}

impl ScenarioResult {
    /// Whether this is a failure below `fail_on`: reported, but it does
    /// not fail the run.
    pub fn is_warning(&self, fail_on: Severity) -> bool {
        self.verdict == Verdict::Fail && self.severity < fail_on
    }

    /// Whether this is a failure at or above `fail_on`: it fails the run.
    pub fn fails_run(&self, fail_on: Severity) -> bool {
        self.verdict == Verdict::Fail && self.severity >= fail_on
    }
}

/// What clean (or not) raced trials say about the duplicate rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    /// Raced trials run (burst rounds, lost and abandoned requests).
    pub trials: u64,
    /// Of which showed a duplicate.
    pub failed_trials: u64,
    /// failed / trials, when any trial ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_rate: Option<f64>,
    /// With no failure: the exact one-sided 95% upper bound on the rate,
    /// 1 - 0.05^(1/N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_bound_95: Option<f64>,
    /// With no failure: the rule of three, 3/N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_of_three: Option<f64>,
    /// The sentence every report prints.
    pub statement: String,
}

/// What the observed (or bounded) rate means at `--volume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeOutlook {
    /// The volume, normalised: `10000000/day` for `10M/day`.
    pub volume: String,
    /// Requests a day.
    pub requests_per_day: f64,
    /// The assumed share of requests whose outcome is ambiguous to the
    /// client and get retried (`--ambiguous-rate`, default 0.1%).
    pub ambiguous_rate: f64,
    /// Of those retries, the share that executes twice (observed, or the
    /// 95% bound of a clean run).
    pub retry_duplicates: f64,
    /// Whether `retry_duplicates` is a bound rather than an observation.
    pub is_bound: bool,
    /// Expected duplicates a day: volume × ambiguous rate × retry duplicates.
    pub duplicates_per_day: f64,
    /// The sentence every report prints.
    pub statement: String,
}

/// The endpoint an audit attacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSummary {
    /// Its name.
    pub name: String,
    /// Its method.
    pub method: String,
    /// Its URL.
    pub url: String,
    /// Other instances' URLs for it, if requests rotated across several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_urls: Vec<String>,
    /// The oracles that counted effects, e.g. `["count-url", "id-field"]`;
    /// `["body"]` when only bodies could be compared.
    pub oracles: Vec<String>,
    /// With `--openapi`: whether the operation declares the key header.
    /// `false` is reported as *unprotected*. Absent when no description
    /// was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_declared: Option<bool>,
    /// Where the endpoint came from (`OpenAPI operation createPayment;
    /// body generated from requestBody.content.application/json.schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl EndpointSummary {
    /// Whether its API description does not declare the key header: its
    /// retries are not promised any protection.
    pub fn is_unprotected(&self) -> bool {
        self.key_declared == Some(false)
    }
}

/// A whole audit: the JSON report is this value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// `fail` if any scenario failed with a severity at or above
    /// `fail_on`, else `indeterminate` if any was, else `pass`.
    pub verdict: Verdict,
    /// The least severity that fails the run (`--fail-on`, default
    /// medium); failures below it are warnings.
    #[serde(default = "default_fail_on")]
    pub fail_on: Severity,
    /// idem's version.
    pub tool_version: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// Wall time of the run.
    pub duration_ms: f64,
    /// The endpoints attacked.
    pub endpoints: Vec<EndpointSummary>,
    /// One result per scenario per endpoint, in run order.
    pub scenarios: Vec<ScenarioResult>,
    /// What the raced trials bound.
    pub bound: Bound,
    /// With `--volume`: what that means per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOutlook>,
}

/// `--fail-on`'s default: a finding that can cost nothing worse than a
/// weak protection (low) is a warning.
pub(crate) fn default_fail_on() -> Severity {
    Severity::Medium
}

impl AuditReport {
    /// The verdict over results: any failure at or above `fail_on`, else
    /// any indeterminate, else pass, except that a run where every
    /// scenario was skipped checked nothing and says so (`skipped`), rather
    /// than pass. Failures below `fail_on` are warnings: they do not change
    /// the verdict.
    pub fn overall(results: &[ScenarioResult], fail_on: Severity) -> Verdict {
        if results.iter().any(|r| r.fails_run(fail_on)) {
            Verdict::Fail
        } else if results.iter().any(|r| r.verdict == Verdict::Indeterminate) {
            Verdict::Indeterminate
        } else if results.iter().all(|r| r.verdict == Verdict::Skipped) {
            Verdict::Skipped
        } else {
            Verdict::Pass
        }
    }

    /// The process exit code the report stands for: 0 pass (warnings
    /// allowed), 1 any failure at or above `fail_on`, 3 nothing failed but something could not be established (only
    /// indeterminate results, or every scenario skipped). 2 is for usage
    /// errors and an unreachable target, which never produce a report.
    pub fn exit_code(&self) -> u8 {
        match self.verdict {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Indeterminate | Verdict::Skipped => 3,
        }
    }

    /// Whether the run passed: no failure at or above `fail_on`, nothing
    /// indeterminate, and something ran (exit code 0).
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    /// The first result of this scenario (on the first endpoint that ran
    /// it).
    pub fn result(&self, id: ScenarioId) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|r| r.id == id)
    }

    /// The results with this verdict (failures below `fail_on` included).
    pub fn count(&self, verdict: Verdict) -> usize {
        self.scenarios
            .iter()
            .filter(|r| r.verdict == verdict)
            .count()
    }

    /// Failures at or above `fail_on`: the ones that fail the run.
    pub fn failures(&self) -> usize {
        self.scenarios
            .iter()
            .filter(|r| r.fails_run(self.fail_on))
            .count()
    }

    /// Failures below `fail_on`: reported, but the run does not fail.
    pub fn warnings(&self) -> usize {
        self.scenarios
            .iter()
            .filter(|r| r.is_warning(self.fail_on))
            .count()
    }
}
