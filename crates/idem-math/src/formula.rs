//! The formulas, as plain functions of numbers. docs/duplicate-math.md
//! derives each one with a worked example.
//!
//! Duplicates are modelled as independent rare events: with a volume of V
//! requests a day and a duplicate rate r, the number of duplicates in a day
//! is Binomial(V, r), which for rare events is Poisson with mean E = V·r.

/// The confidence level of [`upper_bound_95`]'s bound.
pub const CONFIDENCE: f64 = 0.95;

/// The expected number of duplicates among `volume` requests at `rate`:
/// E = volume × rate.
pub fn expected(volume: f64, rate: f64) -> f64 {
    volume * rate
}

/// The probability of at least one duplicate when E are expected:
/// 1 - e^(-E), computed as `-expm1(-E)` so that tiny E keep their digits
/// (for E = 1e-12, `1 - exp(-E)` loses four of them).
pub fn p_at_least_one(expected: f64) -> f64 {
    -(-expected).exp_m1()
}

/// The probability of no duplicate when E are expected: e^(-E). Exact where
/// [`p_at_least_one`] rounds to 1.
pub fn p_none(expected: f64) -> f64 {
    (-expected).exp()
}

/// The rate of duplicates from its two parts: how often a request's outcome
/// is ambiguous to the client (a timeout, a reset, a lost response) times
/// how often the retry of an ambiguous request executes twice.
pub fn rate_from_parts(ambiguous_rate: f64, retry_duplicates: f64) -> f64 {
    ambiguous_rate * retry_duplicates
}

/// The exact (Clopper–Pearson) one-sided 95% upper bound on a rate after
/// `trials` independent trials with no event: the rate p at which seeing
/// none has probability 5%, (1-p)^N = 0.05, so p = 1 - 0.05^(1/N),
/// computed as `-expm1(ln(0.05)/N)` to keep its digits for large N.
pub fn upper_bound_95(trials: u64) -> f64 {
    let n = trials as f64;
    -((1.0 - CONFIDENCE).ln() / n).exp_m1()
}

/// The exact (Clopper–Pearson) one-sided 95% upper bound on a rate after
/// `events` in `trials` independent trials: the rate p at which seeing at
/// most `events` has probability 5%.
///
/// With no event this is [`upper_bound_95`], 1 - 0.05^(1/N); otherwise it
/// is found by bisection on the binomial distribution function (statrs).
/// `events >= trials` (possible when one operation has several duplicates)
/// gives 1.
///
/// ```
/// use idem_math::formula::{clopper_pearson_95, upper_bound_95};
/// assert_eq!(clopper_pearson_95(0, 300), upper_bound_95(300));
/// assert!((clopper_pearson_95(1, 10) - 0.3942).abs() < 1e-4);
/// ```
pub fn clopper_pearson_95(events: u64, trials: u64) -> f64 {
    if trials == 0 || events >= trials {
        return 1.0;
    }
    if events == 0 {
        return upper_bound_95(trials);
    }
    let alpha = 1.0 - CONFIDENCE;
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

/// P(X <= k) for X ~ Binomial(n, p), 0 <= p <= 1.
fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    use statrs::distribution::{Binomial, DiscreteCDF as _};
    Binomial::new(p, n).map_or(f64::NAN, |b| b.cdf(k))
}

/// The rule of three: 3/N, the usual approximation of [`upper_bound_95`]
/// (from -ln(0.05) ≈ 3). Capped at 1, since it is a rate.
pub fn rule_of_three(trials: u64) -> f64 {
    (3.0 / trials as f64).min(1.0)
}

/// The mean time between duplicates, in seconds, for a volume per second
/// and a rate; `None` when no duplicate is ever expected.
pub fn mean_seconds_between(volume_per_second: f64, rate: f64) -> Option<f64> {
    let per_second = volume_per_second * rate;
    (per_second > 0.0).then(|| 1.0 / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    #[test]
    fn hand_computed() {
        // 10M/day at 0.001%: 100 a day.
        assert!(close(expected(1e7, 1e-5), 100.0, 1e-15));
        assert_eq!(p_at_least_one(100.0), 1.0);
        assert!(close(p_none(100.0), 3.720075976020836e-44, 1e-12));
        // E = 1: 1 - 1/e.
        assert!(close(p_at_least_one(1.0), 0.6321205588285577, 1e-15));
        // Tiny E: P ≈ E - E²/2.
        assert!(close(p_at_least_one(1e-12), 1e-12 - 5e-25, 1e-15));
        // 3000 clean trials: 1 - 0.05^(1/3000) = 0.000998079012...
        assert!(close(
            upper_bound_95(3000),
            0.000_998_079_011_996_587,
            1e-13
        ));
        assert!(close(rule_of_three(3000), 0.001, 1e-15));
        // One trial: (1-p)^1 = 0.05, p = 0.95.
        assert!(close(upper_bound_95(1), 0.95, 1e-15));
        assert_eq!(rule_of_three(2), 1.0);
        assert!(close(rate_from_parts(0.001, 0.01), 1e-5, 1e-15));
        assert_eq!(mean_seconds_between(10.0, 0.0), None);
        assert!(close(
            mean_seconds_between(1e7 / 86_400.0, 1e-5).unwrap(),
            864.0,
            1e-12
        ));
    }

    #[test]
    fn zero_events_is_the_closed_form() {
        for n in [1, 10, 300, 3000, 1_000_000] {
            assert_eq!(clopper_pearson_95(0, n), upper_bound_95(n));
            // ... which is where the bisection lands too.
            assert!(close(
                binomial_cdf(0, n, clopper_pearson_95(0, n)),
                0.05,
                1e-9
            ));
        }
    }

    #[test]
    fn clopper_pearson_against_tables() {
        // One-sided 95% upper limits (= two-sided 90%): 1/10 -> 0.3942,
        // 5/10 -> 0.7779, 0/1 -> 0.95.
        assert!(close(clopper_pearson_95(1, 10), 0.394_163, 1e-5));
        assert!(close(clopper_pearson_95(5, 10), 0.777_559, 1e-5));
        assert!(close(clopper_pearson_95(0, 1), 0.95, 1e-12));
        // Large N: the bound sits a little above k/N.
        let b = clopper_pearson_95(60, 300);
        assert!(b > 0.2 && b < 0.25, "{b}");
        assert!(close(binomial_cdf(60, 300, b), 0.05, 1e-9));
        assert_eq!(clopper_pearson_95(300, 300), 1.0);
        assert_eq!(clopper_pearson_95(400, 300), 1.0);
    }

    #[test]
    fn upper_bound_keeps_its_digits_for_large_n() {
        // For N = 1e15 the bound is ~2.9957e-15; 1 - 0.05^(1/N) computed
        // naively is off by several percent.
        let n = 1_000_000_000_000_000u64;
        assert!(close(upper_bound_95(n), 2.995_732_273_553_986_5e-15, 1e-12));
    }
}
