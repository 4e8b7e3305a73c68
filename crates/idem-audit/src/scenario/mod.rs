//! The scenarios, one file each. Every scenario uses fresh keys, sends
//! through `Ctx`, and returns a `Finding`: its verdict with the
//! evidence behind it.

mod abandoned_request;
mod concurrent_burst;
mod context;
mod cross_tenant;
mod curl;
mod error_replay;
mod evidence;
mod invalid_key;
mod lost_response;
mod missing_key;
mod payload_mismatch;
mod quiet;
mod replay_marker;
mod retention;
mod sequential_replay;
mod tally;

pub(crate) use context::Ctx;

use crate::outcome::{Evidence, OracleReading, ScenarioId, ScenarioResult, Severity, Verdict};
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
    /// For an indeterminate finding: the oracle that would decide it.
    pub hint: Option<String>,
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
            hint: None,
        }
    }

    /// The same with the oracle that would decide it, if it is
    /// indeterminate.
    fn with_hint(mut self, hint: Option<String>) -> Self {
        if self.verdict == Verdict::Indeterminate {
            self.hint = hint;
        }
        self
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

/// Runs one scenario against the context's endpoint, then waits for the
/// API to be quiet, so that the next scenario starts from a quiet API and
/// an effect that landed after this scenario's last reading is reported
/// here, where it was caused.
pub(crate) async fn run_scenario(id: ScenarioId, ctx: &Ctx<'_>) -> ScenarioResult {
    let started = Instant::now();
    ctx.begin_scenario();
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
    let finding = match ctx.after_scenario().await {
        Some((moved, last, now)) => late_effects(ctx, finding, moved, &last, &now),
        None => finding,
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
        oracle_hint: finding.hint,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    }
}

/// The count moved after the scenario's last reading: effects of its
/// requests that came late (or other traffic). They are shown in its
/// evidence; a pass that did not see them is no longer a pass.
fn late_effects(
    ctx: &Ctx<'_>,
    mut finding: Finding,
    moved: u64,
    last: &crate::oracle::Counts,
    now: &crate::oracle::Counts,
) -> Finding {
    finding.evidence.oracle.push(OracleReading {
        oracle: ctx.oracles.counting_name().to_owned(),
        saw: format!(
            "{now} once the API was quiet after the scenario: moved by {moved} after its last reading ({last})"
        ),
        effects: Some(moved),
    });
    let why = format!(
        "the count moved by {moved} after this scenario's last reading (a reading waits until the count is unchanged for {}): a late execution of its requests, or other traffic on the count",
        crate::report::millis(ctx.settle_period().as_secs_f64() * 1000.0)
    );
    finding.evidence.notes.push(why.clone());
    if finding.verdict == Verdict::Pass {
        finding.summary = format!("{why}; before that: {}", finding.summary);
        finding.verdict = Verdict::Indeterminate;
        finding.trials = 0;
        finding.failed_trials = 0;
        finding.hint = Some(
            "a longer --settle (the count must stay unchanged that long before a reading), and a count nothing else changes".to_owned(),
        );
    }
    finding
}

/// The move between two quiet readings, recorded in the evidence as what
/// the oracle saw `over` (`over the changed request`).
pub(crate) fn moved(
    ctx: &Ctx<'_>,
    before: Option<&crate::oracle::Counts>,
    after: Option<&crate::oracle::Counts>,
    over: &str,
    evidence: &mut Evidence,
) -> Option<u64> {
    let n = delta(before.cloned(), after.cloned(), evidence)?;
    evidence.oracle.push(OracleReading {
        oracle: ctx.oracles.counting_name().to_owned(),
        saw: format!("the count moved by {n} {over}"),
        effects: Some(n),
    });
    Some(n)
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
