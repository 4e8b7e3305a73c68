//! Quiet readings of the counting oracle. A count read while an effect is
//! still on its way (an abandoned attempt that goes on executing, work a
//! wrapper answered 502 for) lands in whatever reading comes next, often
//! the next scenario's. So every reading a verdict rests on waits until
//! the count has stopped moving: unchanged for a settle period, measured
//! from no earlier than the auditor's last request, bounded by a deadline.
//! The settle period is `--settle`, stretched to the slowest answer seen so
//! far (an effect can land that long after its request).

use super::context::Ctx;
use crate::oracle::{Counts, OracleError, Tenant};
use crate::outcome::{Evidence, OracleReading};
use std::time::Duration;
use tokio::time::Instant;

/// How often a quiet wait reads the count, at most and at least.
const POLL_MIN: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(250);

/// Besides stillness, a quiet wait can wait for the count to have moved:
/// by `at_least` since `since` (an attempt whose answer nobody read may
/// still be executing, and a correct API shows its one effect eventually).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect<'a> {
    pub since: &'a Counts,
    pub at_least: u64,
}

/// How a wait for a quiet count ended.
enum Quiet {
    /// No counting oracle.
    NoOracle,
    /// The count could not be read.
    Unreadable(OracleError),
    /// Unchanged for `stable_for`, at least the settle period. `short`:
    /// the expected move had not come by the deadline (how far it got).
    Settled {
        counts: Counts,
        stable_for: Duration,
        short: Option<u64>,
    },
    /// Still changing at the deadline.
    Moving { counts: Counts },
}

impl Ctx<'_> {
    /// The settle period now: `--settle`, stretched to the slowest answer
    /// seen so far, at most half the settle deadline; zero if `--settle`
    /// is zero.
    pub(crate) fn settle_period(&self) -> Duration {
        let e = self.endpoint;
        if e.settle.is_zero() {
            return Duration::ZERO;
        }
        let slowest = self.activity().slowest;
        e.settle.max(slowest.min(e.settle_deadline / 2))
    }

    /// A new scenario starts: its readings are its own.
    pub(crate) fn begin_scenario(&self) {
        self.activity().in_scenario.clear();
    }

    /// Reads the count for a tenant once it is quiet (see the module
    /// docs), and records the reading in the evidence as `label` ("before
    /// the first request"). `None` without a counting oracle, or when the
    /// count could not be read or never stopped moving (noted; the other
    /// oracles then decide).
    pub(crate) async fn quiet_count(
        &self,
        tenant: Tenant,
        label: &str,
        expect: Option<Expect<'_>>,
        evidence: &mut Evidence,
    ) -> Option<Counts> {
        let who = match tenant {
            Tenant::Primary => "",
            Tenant::Alternate => " for tenant 2",
        };
        match self.wait_quiet(tenant, expect).await {
            Quiet::NoOracle => None,
            Quiet::Unreadable(e) => {
                evidence
                    .notes
                    .push(format!("the count{who} {label} could not be read: {e}"));
                None
            }
            Quiet::Settled {
                counts,
                stable_for,
                short,
            } => {
                evidence.oracle.push(OracleReading {
                    oracle: self.oracles.counting_name().to_owned(),
                    saw: format!("{counts}{who} {label} (unchanged for {})", ms(stable_for)),
                    effects: None,
                });
                if let (Some(moved), Some(expect)) = (short, expect) {
                    evidence.notes.push(format!(
                        "{label}: waited up to --settle-deadline {} for the count to move by {} since {}; it moved by {moved}",
                        ms(self.endpoint.settle_deadline),
                        expect.at_least,
                        expect.since
                    ));
                }
                Some(counts)
            }
            Quiet::Moving { counts } => {
                evidence.oracle.push(OracleReading {
                    oracle: self.oracles.counting_name().to_owned(),
                    saw: format!("{counts}{who} {label}, still changing"),
                    effects: None,
                });
                evidence.notes.push(format!(
                    "the count{who} {label} was still changing at --settle-deadline {}: something else writes to it, so that reading is left out",
                    ms(self.endpoint.settle_deadline)
                ));
                None
            }
        }
    }

    /// Once a scenario is over: waits until the primary tenant's count is
    /// quiet, so the next scenario starts from a quiet API, and returns how
    /// far it moved since the scenario's own last reading (`None` if the
    /// scenario read no count, or nothing moved), with both readings.
    pub(crate) async fn after_scenario(&self) -> Option<(u64, Counts, Counts)> {
        let last = self.activity().in_scenario.get(&Tenant::Primary).cloned();
        let now = match self.wait_quiet(Tenant::Primary, None).await {
            Quiet::Settled { counts, .. } | Quiet::Moving { counts } => counts,
            Quiet::NoOracle | Quiet::Unreadable(_) => return None,
        };
        let last = last?;
        match now.since(&last) {
            Ok(moved) if moved > 0 => Some((moved, last, now)),
            _ => None,
        }
    }

    async fn wait_quiet(&self, tenant: Tenant, expect: Option<Expect<'_>>) -> Quiet {
        let settle = self.settle_period();
        let deadline = Instant::now() + self.endpoint.settle_deadline;
        let poll = (settle / 4).clamp(POLL_MIN, POLL_MAX);
        loop {
            let counts = match self.oracles.count(tenant).await {
                Ok(Some(counts)) => counts,
                Ok(None) => return Quiet::NoOracle,
                Err(e) => return Quiet::Unreadable(e),
            };
            let now = Instant::now();
            let stable_for = {
                let mut activity = self.activity();
                let first_seen = match activity.seen.get(&tenant) {
                    Some((seen, at)) if *seen == counts => *at,
                    _ => now,
                };
                activity.seen.insert(tenant, (counts.clone(), first_seen));
                activity.in_scenario.insert(tenant, counts.clone());
                let from = activity.last_sent.map_or(first_seen, |t| t.max(first_seen));
                now.saturating_duration_since(from)
            };
            let moved = expect.map(|x| counts.since(x.since).unwrap_or(u64::MAX));
            let reached = match (expect, moved) {
                (Some(x), Some(moved)) => moved >= x.at_least,
                _ => true,
            };
            let still = stable_for >= settle;
            if still && reached {
                return Quiet::Settled {
                    counts,
                    stable_for,
                    short: None,
                };
            }
            if now >= deadline {
                return if still {
                    Quiet::Settled {
                        counts,
                        stable_for,
                        short: moved,
                    }
                } else {
                    Quiet::Moving { counts }
                };
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
        }
    }
}

/// `312 ms`, `1.25 s`.
fn ms(d: Duration) -> String {
    crate::report::millis(d.as_secs_f64() * 1000.0)
}
