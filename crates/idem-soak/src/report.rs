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

    #[test]
    fn short_numbers() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.009_936_6), "0.009937");
        assert_eq!(short(1.2), "1.2");
        assert_eq!(short(20.0), "20");
        assert_eq!(short(3.3e-6), "3.300e-6");
    }
}
