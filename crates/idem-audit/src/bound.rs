//! What the raced trials say about a duplicate rate: an observed rate when
//! some failed, the rule-of-three bound when none did, and what either
//! means at `--volume` (docs/duplicate-math.md derives the formulas).

use crate::outcome::{Bound, ScenarioResult, Verdict, VolumeOutlook};
use idem_math::format::{count, percent};
use idem_math::formula;
use idem_math::{Rate, Volume};

/// The bound over every raced scenario that ran.
pub(crate) fn bound(results: &[ScenarioResult]) -> Bound {
    let raced: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| r.raced && r.verdict != Verdict::Skipped)
        .collect();
    let trials: u64 = raced.iter().map(|r| r.trials).sum();
    let failed: u64 = raced.iter().map(|r| r.failed_trials).sum();
    let inconclusive = raced.iter().any(|r| r.verdict == Verdict::Indeterminate);
    if trials == 0 {
        return Bound {
            trials,
            failed_trials: failed,
            observed_rate: None,
            upper_bound_95: None,
            rule_of_three: None,
            statement: "No raced scenario ran, so this run bounds no duplicate rate.".to_owned(),
        };
    }
    let observed = failed as f64 / trials as f64;
    if failed > 0 {
        return Bound {
            trials,
            failed_trials: failed,
            observed_rate: Some(observed),
            upper_bound_95: None,
            rule_of_three: None,
            statement: format!(
                "{failed} of {trials} raced trials (burst rounds, lost and abandoned requests) executed more than once: about {} of retried deliveries duplicate.",
                percent(observed)
            ),
        };
    }
    let exact = formula::upper_bound_95(trials);
    let three = formula::rule_of_three(trials);
    let caveat = if inconclusive {
        " Trials the oracle could not judge (indeterminate) are left out of N."
    } else {
        ""
    };
    Bound {
        trials,
        failed_trials: 0,
        observed_rate: Some(0.0),
        upper_bound_95: Some(exact),
        rule_of_three: Some(three),
        statement: format!(
            "0 duplicates in {trials} raced trials bounds the duplicate rate of retried deliveries below {} with 95% confidence (rule of three: 3/{trials} = {}). It does not prove zero: more rounds (--rounds) tighten it.{caveat}",
            percent(exact),
            percent(three)
        ),
    }
}

/// What the bound (or observation) means at a volume, assuming a share of
/// requests is ambiguous to its client and retried.
pub(crate) fn outlook(bound: &Bound, volume: Volume, ambiguous: Rate) -> Option<VolumeOutlook> {
    let (rate, is_bound) = match (bound.failed_trials, bound.upper_bound_95) {
        (0, Some(upper)) => (upper, true),
        (0, None) => return None,
        _ => (bound.observed_rate?, false),
    };
    let per_day = volume.per_day();
    let duplicates = formula::expected(
        per_day,
        formula::rate_from_parts(ambiguous.fraction(), rate),
    );
    let statement = if is_bound {
        format!(
            "At {} requests a day, if {} of them are ambiguous to their client and retried (--ambiguous-rate), this clean run still allows up to {} duplicates a day.",
            count(per_day),
            percent(ambiguous.fraction()),
            count(duplicates)
        )
    } else {
        format!(
            "At {} requests a day, if {} of them are ambiguous to their client and retried (--ambiguous-rate), the observed rate means about {} duplicates a day ({} a year).",
            count(per_day),
            percent(ambiguous.fraction()),
            count(duplicates),
            count(duplicates * 365.0)
        )
    };
    Some(VolumeOutlook {
        volume: volume.to_string(),
        requests_per_day: per_day,
        ambiguous_rate: ambiguous.fraction(),
        retry_duplicates: rate,
        is_bound,
        duplicates_per_day: duplicates,
        statement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::ScenarioId;
    use crate::outcome::{Evidence, Severity};

    fn result(trials: u64, failed: u64, verdict: Verdict) -> ScenarioResult {
        ScenarioResult {
            id: ScenarioId::ConcurrentBurst,
            endpoint: "POST http://x/".into(),
            verdict,
            severity: Severity::High,
            summary: String::new(),
            trials,
            failed_trials: failed,
            raced: true,
            evidence: Evidence::default(),
            oracle_hint: None,
            duration_ms: 0.0,
        }
    }

    #[test]
    fn a_clean_run_states_the_exact_bound_and_the_rule_of_three() {
        let b = bound(&[result(5, 0, Verdict::Pass), result(1, 0, Verdict::Pass)]);
        assert_eq!(b.trials, 6);
        let exact = 1.0 - 0.05f64.powf(1.0 / 6.0);
        assert!((b.upper_bound_95.unwrap() - exact).abs() < 1e-12);
        assert_eq!(b.rule_of_three, Some(0.5));
        assert!(b.statement.contains("6 raced trials"), "{}", b.statement);
        assert!(b.statement.contains("39.3"), "{}", b.statement);
    }

    #[test]
    fn failures_give_an_observed_rate_and_a_daily_count() {
        let b = bound(&[result(5, 3, Verdict::Fail), result(1, 1, Verdict::Fail)]);
        assert_eq!(b.observed_rate, Some(4.0 / 6.0));
        let volume: Volume = "10M/day".parse().unwrap();
        let o = outlook(&b, volume, Rate::new(0.001).unwrap()).unwrap();
        // 10M × 0.1% × 4/6 ≈ 6,667 a day.
        assert!((o.duplicates_per_day - 6666.67).abs() < 0.01);
        assert!(o.statement.contains("6,667"), "{}", o.statement);
        assert!(!o.is_bound);
    }

    #[test]
    fn skipped_raced_scenarios_bound_nothing() {
        let b = bound(&[result(0, 0, Verdict::Skipped)]);
        assert_eq!(b.upper_bound_95, None);
        assert!(b.statement.contains("bounds no"));
    }
}
