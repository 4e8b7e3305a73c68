//! `error-replay`: with `--error-body`, a request the API fails. Once the
//! API has started executing, its error is an outcome like any other: a
//! retry with the same key must get the same status and body, not a second
//! attempt (a 500 may have had partial effects). Answers that say nothing
//! was done (408, 425, 429, 502, 503, 504) may be retried afresh.

use super::{Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, Verdict};

const ID: ScenarioId = ScenarioId::ErrorReplay;
/// Statuses that say "nothing was done, try again" (contract section 3).
const RETRYABLE: [u16; 6] = [408, 425, 429, 502, 503, 504];

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let Some(body) = &ctx.endpoint.error_body else {
        return Finding::skipped(
            ID,
            "needs a body the API fails on: give --error-body, e.g. --error-body '{\"amount\": 99999999}'",
        );
    };
    let mut evidence = Evidence::default();
    let key = ctx.fresh_key();
    let request = ctx.request(&key, Tenant::Primary, body);
    evidence.curl.push(format!(
        "for i in 1 2; do {}; echo; done",
        ctx.curl(&request)
    ));
    let first = ctx.send_until_final("first", &request, &mut evidence).await;
    let first = match first {
        Ok(r) if !r.is_success() => r,
        Ok(r) => {
            return Finding::new(
                ID,
                Verdict::Indeterminate,
                format!(
                    "--error-body did not make the API fail (answered {})",
                    r.status
                ),
                evidence,
            )
        }
        Err(err) => return Finding::no_answer(ID, "the request", &err, evidence),
    };
    let retry = ctx.send_until_final("retry", &request, &mut evidence).await;
    let retry = match retry {
        Ok(r) => r,
        Err(err) => return Finding::no_answer(ID, "the retry", &err, evidence),
    };
    if ctx.same_outcome(&first, &retry) {
        return Finding::new(
            ID,
            Verdict::Pass,
            format!("the error outcome ({}) is the same on retry", first.status),
            evidence,
        );
    }
    if RETRYABLE.contains(&first.status) {
        return Finding::new(
            ID,
            Verdict::Pass,
            format!(
                "the error ({}) says nothing was done, so the retry may execute afresh (it got {})",
                first.status, retry.status
            ),
            evidence,
        );
    }
    let what = if first.status == retry.status {
        format!("{} both times, different bodies", first.status)
    } else {
        format!("{} then {}", first.status, retry.status)
    };
    Finding::new(
        ID,
        Verdict::Fail,
        format!(
            "the error outcome changed on retry ({what}): the failed operation was attempted again"
        ),
        evidence,
    )
}
