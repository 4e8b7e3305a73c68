//! The scenarios, one file each. Every scenario uses fresh keys, sends
//! through `Ctx`, and returns a `Finding`: its verdict with the
//! evidence behind it.

mod abandoned_request;
mod concurrent_burst;
mod context;
mod cross_tenant;
mod error_replay;
mod id;
mod invalid_key;
mod lost_response;
mod missing_key;
mod payload_mismatch;
mod replay_marker;
mod retention;
mod sequential_replay;

pub(crate) use context::Ctx;
pub use id::{ScenarioId, UnknownScenario};

use crate::outcome::{Evidence, ScenarioResult, Severity, Verdict};
use tokio::time::Instant;

/// What a scenario found.
#[derive(Debug)]
pub(crate) struct Finding {
    pub verdict: Verdict,
    pub severity: Severity,
    pub summary: String,
    pub trials: u64,
    pub failed_trials: u64,
    pub raced: bool,
    pub evidence: Evidence,
}

impl Finding {
    /// A one-trial finding with the scenario's default severity. Only a
    /// pass or a fail is a trial: an indeterminate one proved nothing.
    fn new(
        id: ScenarioId,
        verdict: Verdict,
        summary: impl Into<String>,
        evidence: Evidence,
    ) -> Self {
        Finding {
            verdict,
            severity: id.severity(),
            summary: summary.into(),
            trials: u64::from(matches!(verdict, Verdict::Pass | Verdict::Fail)),
            failed_trials: u64::from(verdict == Verdict::Fail),
            raced: false,
            evidence,
        }
    }

    /// A failure that is not a duplicate execution (the key was honoured,
    /// something else was wrong): the trial counts as clean for the bound.
    fn not_a_duplicate(mut self) -> Self {
        self.failed_trials = 0;
        self
    }

    /// A scenario that could not run, and why.
    fn skipped(id: ScenarioId, why: impl Into<String>) -> Self {
        Finding {
            trials: 0,
            ..Finding::new(id, Verdict::Skipped, why, Evidence::default())
        }
    }

    /// A request that got no answer: nothing can be concluded.
    fn no_answer(
        id: ScenarioId,
        which: &str,
        error: &crate::http::HttpError,
        evidence: Evidence,
    ) -> Self {
        Finding::new(
            id,
            Verdict::Indeterminate,
            format!("{which} got no answer ({error})"),
            evidence,
        )
    }

    /// The same with another severity (for failures worse or milder than
    /// the scenario's default).
    fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}

/// Runs one scenario against the context's endpoint.
pub(crate) async fn run_scenario(id: ScenarioId, ctx: &Ctx<'_>) -> ScenarioResult {
    let started = Instant::now();
    let finding = match id {
        ScenarioId::SequentialReplay => sequential_replay::run(ctx).await,
        ScenarioId::ConcurrentBurst => concurrent_burst::run(ctx).await,
        ScenarioId::LostResponse => lost_response::run(ctx).await,
        ScenarioId::AbandonedRequest => abandoned_request::run(ctx).await,
        ScenarioId::PayloadMismatch => payload_mismatch::run(ctx).await,
        ScenarioId::CrossTenant => cross_tenant::run(ctx).await,
        ScenarioId::MissingKey => missing_key::run(ctx).await,
        ScenarioId::InvalidKey => invalid_key::run(ctx).await,
        ScenarioId::ErrorReplay => error_replay::run(ctx).await,
        ScenarioId::Retention => retention::run(ctx).await,
        ScenarioId::ReplayMarker => replay_marker::run(ctx).await,
    };
    ScenarioResult {
        id,
        endpoint: ctx.endpoint.label(),
        verdict: finding.verdict,
        severity: finding.severity,
        summary: finding.summary,
        trials: finding.trials,
        failed_trials: finding.failed_trials,
        raced: finding.raced,
        evidence: finding.evidence,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    }
}

/// The change of a count, if both readings exist and it did not go down.
pub(crate) fn delta(
    before: Option<crate::oracle::Counts>,
    after: Option<crate::oracle::Counts>,
    evidence: &mut Evidence,
) -> Option<u64> {
    let (before, after) = (before?, after?);
    match after.since(&before) {
        Ok(effects) => Some(effects),
        Err(change) => {
            evidence.notes.push(format!(
                "the count went down ({change}); something else is changing it, so it is ignored"
            ));
            None
        }
    }
}

/// The verdict when the baseline request (the one that should execute)
/// did not succeed: nothing to deduplicate, so nothing can be concluded.
pub(crate) fn baseline_failed(
    id: ScenarioId,
    answer: &Result<crate::http::Response, crate::http::HttpError>,
    evidence: Evidence,
) -> Finding {
    let why = match answer {
        Ok(r) => format!(
            "the first request was answered {} instead of a 2xx, so there was nothing to deduplicate; check --body and --header",
            r.status
        ),
        Err(e) => format!("the first request got no answer ({e})"),
    };
    Finding::new(id, Verdict::Indeterminate, why, evidence)
}
