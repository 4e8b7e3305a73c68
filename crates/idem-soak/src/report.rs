//! What a soak found, and the bound it supports.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The result of one soak: how many logical operations ran, how many side
/// effects the count endpoint saw, and what that says about the duplicate
/// rate.
///
/// Its JSON form (`idem soak --format json`) has these fields, in this
/// order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoakReport {
    /// The method of every operation.
    pub method: String,
    /// Where the operations went.
    pub url: String,
    /// Operations run (each under its own idempotency key).
    pub logical_operations: u64,
    /// Side effects: the count after minus the count before.
    pub effects: u64,
    /// `max(0, effects - logical_operations)`.
    pub duplicates: u64,
    /// `duplicates / logical_operations`.
    pub duplicate_rate: f64,
    /// The one-sided 95% upper bound on the rate given what was seen
    /// (Clopper–Pearson; with zero duplicates, 1 - 0.05^(1/N)).
    pub upper_bound_95: f64,
    /// Operations that ended with a 2xx response.
    pub succeeded: u64,
    /// Of those, how many were replays (`Idempotent-Replayed: true`).
    pub replayed: u64,
    /// Operations that ended in `outcome-unknown`.
    pub outcome_unknown: u64,
    /// Operations that ended otherwise (a non-2xx status, no response).
    pub failed: u64,
    /// Why they failed, counted by reason (`status 503`, `no response
    /// (the deadline passed)`, ...).
    pub failures: BTreeMap<String, u64>,
    /// HTTP attempts in all, retries included.
    pub attempts: u64,
    /// The count before the first operation.
    pub count_before: u64,
    /// The count after the last one.
    pub count_after: u64,
    /// Operations in flight at once.
    pub concurrency: u64,
    /// Wall time of the operations.
    pub elapsed_seconds: f64,
}

/// The one-sided 95% upper bound on a rate after `events` in `trials`
/// independent trials (Clopper–Pearson): the rate p at which seeing at most
/// `events` has probability 5%.
///
/// With no event this is idem-math's
/// [`upper_bound_95`](idem_math::formula::upper_bound_95), 1 - 0.05^(1/N);
/// otherwise it is found by bisection on the binomial distribution
/// function. `events >= trials` (possible when one operation has several
/// duplicates) gives 1.
///
/// ```
/// use idem_soak::upper_bound_95;
/// assert_eq!(upper_bound_95(0, 300), idem_math::formula::upper_bound_95(300));
/// assert!((upper_bound_95(1, 10) - 0.3942).abs() < 1e-4);
/// ```
pub fn upper_bound_95(events: u64, trials: u64) -> f64 {
    if trials == 0 || events >= trials {
        return 1.0;
    }
    if events == 0 {
        return idem_math::formula::upper_bound_95(trials);
    }
    let alpha = 1.0 - idem_math::formula::CONFIDENCE;
    // P(X <= events) falls as p grows: find where it crosses alpha.
    let (mut low, mut high) = (events as f64 / trials as f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if mid <= low || mid >= high {
            break;
        }
        if binomial_cdf(events, trials, mid) > alpha {
            low = mid;
        } else {
            high = mid;
        }
    }
    high
}

/// P(X <= k) for X ~ Binomial(n, p), 0 < p < 1, summed in log space so that
/// large n does not underflow.
fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    let (ln_p, ln_q) = (p.ln(), (-p).ln_1p());
    let mut ln_term = n as f64 * ln_q; // i = 0: (1-p)^n
    let mut ln_sum = ln_term;
    for i in 0..k {
        ln_term += ((n - i) as f64).ln() - ((i + 1) as f64).ln() + ln_p - ln_q;
        let (hi, lo) = if ln_term > ln_sum {
            (ln_term, ln_sum)
        } else {
            (ln_sum, ln_term)
        };
        ln_sum = hi + (lo - hi).exp().ln_1p();
    }
    ln_sum.exp().min(1.0)
}

/// A number with about four significant digits, without trailing noise.
fn short(x: f64) -> String {
    if x == 0.0 {
        return "0".to_owned();
    }
    if x.abs() < 1e-4 {
        return format!("{x:.3e}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

impl SoakReport {
    /// The report as pretty JSON.
    pub fn to_json_pretty(&self) -> String {
        // A struct of numbers, strings and a string map always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.logical_operations;
        writeln!(
            f,
            "idem soak: {n} logical operations, {} {} (concurrency {}), in {:.1} s",
            self.method, self.url, self.concurrency, self.elapsed_seconds
        )?;
        writeln!(
            f,
            "  effects           {} (count {} -> {})",
            self.effects, self.count_before, self.count_after
        )?;
        writeln!(
            f,
            "  duplicates        {} (rate {}, {}%)",
            self.duplicates,
            short(self.duplicate_rate),
            short(self.duplicate_rate * 100.0)
        )?;
        let how = if self.duplicates == 0 {
            format!("zero duplicates in {n}: 1 - 0.05^(1/{n})")
        } else {
            format!("{} duplicates in {n}, Clopper-Pearson", self.duplicates)
        };
        writeln!(
            f,
            "  upper bound 95%   {} ({how})",
            short(self.upper_bound_95)
        )?;
        writeln!(
            f,
            "  succeeded         {} ({} of them replays)",
            self.succeeded, self.replayed
        )?;
        writeln!(f, "  outcome unknown   {}", self.outcome_unknown)?;
        writeln!(f, "  failed            {}", self.failed)?;
        for (reason, count) in &self.failures {
            writeln!(f, "    {count:>6}  {reason}")?;
        }
        let per = if n == 0 {
            0.0
        } else {
            self.attempts as f64 / n as f64
        };
        writeln!(
            f,
            "  attempts          {} ({} per operation)",
            self.attempts,
            short(per)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    #[test]
    fn zero_events_is_idem_maths_formula() {
        for n in [1, 10, 300, 3000, 1_000_000] {
            assert_eq!(upper_bound_95(0, n), idem_math::formula::upper_bound_95(n));
            // ... which is where the bisection lands too.
            assert!(close(binomial_cdf(0, n, upper_bound_95(0, n)), 0.05, 1e-9));
        }
    }

    #[test]
    fn clopper_pearson_against_tables() {
        // One-sided 95% upper limits (= two-sided 90%): 1/10 -> 0.3942,
        // 5/10 -> 0.7779, 0/1 -> 0.95.
        assert!(close(upper_bound_95(1, 10), 0.394_163, 1e-5));
        assert!(close(upper_bound_95(5, 10), 0.777_559, 1e-5));
        assert!(close(upper_bound_95(0, 1), 0.95, 1e-12));
        // Large N: the bound sits a little above k/N.
        let b = upper_bound_95(60, 300);
        assert!(b > 0.2 && b < 0.25, "{b}");
        assert!(close(binomial_cdf(60, 300, b), 0.05, 1e-9));
        assert_eq!(upper_bound_95(300, 300), 1.0);
        assert_eq!(upper_bound_95(400, 300), 1.0);
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.009_936_6), "0.009937");
        assert_eq!(short(1.2), "1.2");
        assert_eq!(short(20.0), "20");
        assert_eq!(short(3.3e-6), "3.300e-6");
    }
}
