//! `cross-tenant`: the same key and body under the `--alt-header`
//! credentials must execute independently. Getting the first tenant's
//! stored answer is a data leak (critical); being refused as a conflict
//! means one tenant's key blocks another's.

use super::context::Key;
use super::{baseline_failed, delta, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, OracleReading, Severity, Verdict};
use idem_core::headers::IDEMPOTENT_REPLAYED;

const ID: ScenarioId = ScenarioId::CrossTenant;

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let e = ctx.endpoint;
    if e.alt_headers.is_empty() {
        return Finding::skipped(
            ID,
            "needs a second tenant: give --alt-header with another tenant's credentials, e.g. --alt-header 'Authorization: Bearer sk_other'",
        );
    }
    let mut evidence = Evidence::default();
    let key = Key::fresh();
    let first_request = ctx.request(&key, Tenant::Primary, &e.body);
    let other_request = ctx.request(&key, Tenant::Alternate, &e.body);
    evidence.curl.push(ctx.curl(&first_request));
    evidence.curl.push(ctx.curl(&other_request));
    let first = ctx
        .send_until_final("tenant 1", &first_request, &mut evidence)
        .await;
    let first = match first {
        Ok(r) if r.is_success() => r,
        other => return baseline_failed(ID, &other, evidence),
    };
    // Counts are read for both tenants around the second tenant's request:
    // a per-tenant count moves for tenant 2 only, a global one for both.
    let mid = (
        ctx.quiet_count(
            Tenant::Primary,
            "after tenant 1's request",
            None,
            &mut evidence,
        )
        .await,
        ctx.quiet_count(
            Tenant::Alternate,
            "after tenant 1's request",
            None,
            &mut evidence,
        )
        .await,
    );
    let other = ctx
        .send_until_final("tenant 2", &other_request, &mut evidence)
        .await;
    let after = (
        ctx.quiet_count(
            Tenant::Primary,
            "after tenant 2's request",
            None,
            &mut evidence,
        )
        .await,
        ctx.quiet_count(
            Tenant::Alternate,
            "after tenant 2's request",
            None,
            &mut evidence,
        )
        .await,
    );
    let effects = match (
        delta(mid.0, after.0, &mut evidence),
        delta(mid.1, after.1, &mut evidence),
    ) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    if let Some(n) = effects {
        evidence.oracle.push(OracleReading {
            oracle: ctx.oracles.counting_name().to_owned(),
            saw: format!("tenant 2's request moved the count by {n}"),
            effects: Some(n),
        });
    }
    let other = match other {
        Ok(r) => r,
        Err(err) => return Finding::no_answer(ID, "tenant 2's request", &err, evidence),
    };
    if other.is_success() {
        let marked_replay = other
            .header(IDEMPOTENT_REPLAYED)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let same_id = e.id_field.is_some()
            && ctx.id_of(&other).is_some()
            && ctx.id_of(&other) == ctx.id_of(&first);
        let same = ctx.same_outcome(&first, &other);
        let leak = LeakEvidence {
            same_id,
            same_answer: same,
            marked_replay,
            executed: effects,
        };
        return match leak.judge(e.id_field.is_some()) {
            Some(true) => Finding::new(
                ID,
                Verdict::Fail,
                format!(
                    "tenant 2 got tenant 1's stored answer for the same key ({}): one tenant's data leaks to another",
                    leak.describe()
                ),
                evidence,
            )
            .with_severity(Severity::Critical),
            Some(false) if effects.is_some_and(|n| n > 1) => Finding::new(
                ID,
                Verdict::Fail,
                format!("tenant 2's one request executed {} times", effects.unwrap_or(0)),
                evidence,
            )
            .with_severity(Severity::High),
            Some(false) => Finding::new(
                ID,
                Verdict::Pass,
                format!(
                    "tenant 2 executed independently ({}) with tenant 1's key",
                    other.status
                ),
                evidence,
            ),
            None => Finding::new(
                ID,
                Verdict::Indeterminate,
                match effects {
                    Some(_) => format!("tenant 2 got another answer than tenant 1 ({}), but the count did not move: whether that is its own execution cannot be told", other.status),
                    None => "tenant 2 got the same answer as tenant 1; without --id-field or a count it cannot be told whether that is its own execution or tenant 1's stored answer".to_owned(),
                },
                evidence,
            )
            .with_hint(Some(match effects {
                Some(_) => "--id-field PATH (tenant 2's own execution carries a new id): the count did not move, yet the answers differ".to_owned(),
                None => "--id-field PATH (tenant 2's own execution carries a new id) or --count-url URL or --check-cmd CMD (it moves the count)".to_owned(),
            })),
        };
    }
    if matches!(other.status, 401 | 403) {
        return Finding::new(
            ID,
            Verdict::Indeterminate,
            format!(
                "tenant 2's credentials were refused ({}); check --alt-header",
                other.status
            ),
            evidence,
        );
    }
    if matches!(other.status, 409 | 422) {
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "tenant 2 was refused with {}{} for a key only tenant 1 used: one tenant's keys block another's (keys are not scoped per tenant)",
                other.status,
                other.problem_slug().map(|s| format!(" {s}")).unwrap_or_default()
            ),
            evidence,
        )
        .with_severity(Severity::Medium);
    }
    Finding::new(
        ID,
        Verdict::Fail,
        format!(
            "tenant 2 got {} for a request tenant 1 made successfully",
            other.status
        ),
        evidence,
    )
    .with_severity(Severity::Medium)
}

/// What points at tenant 2 having been served tenant 1's record.
struct LeakEvidence {
    same_id: bool,
    same_answer: bool,
    marked_replay: bool,
    executed: Option<u64>,
}

impl LeakEvidence {
    /// `Some(true)`: a leak; `Some(false)`: an independent execution;
    /// `None`: cannot tell.
    fn judge(&self, has_id_field: bool) -> Option<bool> {
        if self.same_id || self.marked_replay {
            return Some(true);
        }
        match self.executed {
            Some(0) if self.same_answer => Some(true),
            Some(0) => None,
            Some(_) => Some(false),
            None if has_id_field => Some(false),
            None if self.same_answer => None,
            None => Some(false),
        }
    }

    fn describe(&self) -> String {
        let mut why = Vec::new();
        if self.same_id {
            why.push("the same id");
        }
        if self.same_answer {
            why.push("the same status and body");
        }
        if self.marked_replay {
            why.push("marked Idempotent-Replayed");
        }
        if self.executed == Some(0) {
            why.push("and nothing executed");
        }
        why.join(", ")
    }
}
