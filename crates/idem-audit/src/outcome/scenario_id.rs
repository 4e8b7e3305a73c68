//! The scenarios' stable ids: what scripts pass to `--scenarios` and find
//! in every report.

use super::severity::Severity;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One attack on an endpoint. The kebab-case names are stable: reports,
/// `--scenarios` and CI configurations rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioId {
    /// The same key and body three times in sequence.
    SequentialReplay,
    /// N same-key requests released within microseconds, R rounds.
    ConcurrentBurst,
    /// The first answer is read and thrown away; the client retries.
    LostResponse,
    /// The client hangs up before any answer and retries at once.
    AbandonedRequest,
    /// The same key with a changed body.
    PayloadMismatch,
    /// The same key under another tenant's credentials.
    CrossTenant,
    /// What a request without a key gets.
    MissingKey,
    /// Overlong, empty and non-ASCII keys.
    InvalidKey,
    /// Whether an error outcome is stable on retry.
    ErrorReplay,
    /// What a retry after the retention window gets.
    Retention,
    /// Whether replays say they are replays (`Idempotent-Replayed`).
    ReplayMarker,
}

impl ScenarioId {
    /// Every scenario, in the order a run performs them.
    pub const ALL: [ScenarioId; 11] = [
        ScenarioId::SequentialReplay,
        ScenarioId::ConcurrentBurst,
        ScenarioId::LostResponse,
        ScenarioId::AbandonedRequest,
        ScenarioId::PayloadMismatch,
        ScenarioId::CrossTenant,
        ScenarioId::MissingKey,
        ScenarioId::InvalidKey,
        ScenarioId::ErrorReplay,
        ScenarioId::Retention,
        ScenarioId::ReplayMarker,
    ];

    /// The stable id, e.g. `concurrent-burst`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioId::SequentialReplay => "sequential-replay",
            ScenarioId::ConcurrentBurst => "concurrent-burst",
            ScenarioId::LostResponse => "lost-response",
            ScenarioId::AbandonedRequest => "abandoned-request",
            ScenarioId::PayloadMismatch => "payload-mismatch",
            ScenarioId::CrossTenant => "cross-tenant",
            ScenarioId::MissingKey => "missing-key",
            ScenarioId::InvalidKey => "invalid-key",
            ScenarioId::ErrorReplay => "error-replay",
            ScenarioId::Retention => "retention",
            ScenarioId::ReplayMarker => "replay-marker",
        }
    }

    /// One line on what the scenario checks, for reports.
    pub fn title(self) -> &'static str {
        match self {
            ScenarioId::SequentialReplay => "same key and body, three times in sequence",
            ScenarioId::ConcurrentBurst => "same key, many requests released together",
            ScenarioId::LostResponse => "response lost after the server acted, then a retry",
            ScenarioId::AbandonedRequest => "client hangs up before the answer, then retries",
            ScenarioId::PayloadMismatch => "same key, changed body",
            ScenarioId::CrossTenant => "same key, another tenant",
            ScenarioId::MissingKey => "request without a key",
            ScenarioId::InvalidKey => "overlong, empty and non-ASCII keys",
            ScenarioId::ErrorReplay => "an error outcome, retried",
            ScenarioId::Retention => "a retry after the retention window",
            ScenarioId::ReplayMarker => "replays marked Idempotent-Replayed",
        }
    }

    /// How bad a failure of this scenario is, unless the failure itself
    /// says otherwise (a cross-tenant leak is critical, a cross-tenant
    /// conflict is not).
    pub fn severity(self) -> Severity {
        match self {
            ScenarioId::SequentialReplay
            | ScenarioId::ConcurrentBurst
            | ScenarioId::LostResponse
            | ScenarioId::AbandonedRequest => Severity::High,
            ScenarioId::CrossTenant => Severity::Critical,
            ScenarioId::PayloadMismatch | ScenarioId::InvalidKey | ScenarioId::ErrorReplay => {
                Severity::Medium
            }
            ScenarioId::Retention => Severity::Medium,
            ScenarioId::MissingKey => Severity::Low,
            ScenarioId::ReplayMarker => Severity::Info,
        }
    }

    /// Whether a run without `--scenarios` performs it. `retention` waits
    /// out a window, so it is opt-in (it also needs `--retention`).
    pub fn runs_by_default(self) -> bool {
        self != ScenarioId::Retention
    }
}

impl fmt::Display for ScenarioId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--scenarios` entry that names no scenario.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario `{given}`; known: {}", known_ids())]
pub struct UnknownScenario {
    /// What was given.
    pub given: String,
}

fn known_ids() -> String {
    ScenarioId::ALL
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for ScenarioId {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        ScenarioId::ALL
            .into_iter()
            .find(|id| id.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownScenario {
                given: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_json() {
        for id in ScenarioId::ALL {
            assert_eq!(id.as_str().parse::<ScenarioId>(), Ok(id));
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, format!("\"{}\"", id.as_str()));
        }
        let err = "replays".parse::<ScenarioId>().unwrap_err();
        assert!(err.to_string().contains("concurrent-burst"), "{err}");
    }
}
