//! `error-replay`: with `--error-body`, a request the API fails. Once the
//! API has started executing, its error is an outcome like any other: a
//! retry with the same key must get the same status and body, not a second
//! attempt (a 500 may have had partial effects). Answers that say nothing
//! was done (408, 425, 429, 502, 503, 504) may be retried afresh. With a
//! counting oracle, a failing request that executes again on retry is
//! caught even when its error body is the same.

use super::context::Key;
use super::{moved, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, Severity, Verdict};

const ID: ScenarioId = ScenarioId::ErrorReplay;
/// Statuses that say "nothing was done, try again" (contract section 3).
const RETRYABLE: [u16; 6] = [408, 425, 429, 502, 503, 504];
/// What a request for this scenario must be, said where it is missing or
/// did not fail.
const WHAT_TO_GIVE: &str = "give --error-body a body the API accepts and starts to execute but then fails on (a card its test mode declines, an amount over an account limit, a transfer from an empty balance); if no body makes this operation fail, audit a call that does fail as an endpoint of its own in a --config file (its url, body and error_body, with scenarios = [\"error-replay\"]), e.g. a refund of a payment that was already refunded";

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let Some(body) = &ctx.endpoint.error_body else {
        return Finding::skipped(ID, format!("needs a request the API fails: {WHAT_TO_GIVE}"));
    };
    let mut evidence = Evidence::default();
    let key = Key::fresh();
    let request = ctx.request(&key, Tenant::Primary, body);
    evidence.curl.push(format!(
        "for i in 1 2; do {}; echo; done",
        ctx.curl(&request)
    ));
    let before = ctx
        .quiet_count(
            Tenant::Primary,
            "before the first request",
            None,
            &mut evidence,
        )
        .await;
    let first = ctx.send_until_final("first", &request, &mut evidence).await;
    let first = match first {
        Ok(r) if !r.is_success() => r,
        Ok(r) => {
            return Finding::new(
                ID,
                Verdict::Indeterminate,
                format!(
                    "--error-body did not make the API fail: it answered {}, so there was no error to replay; {WHAT_TO_GIVE}",
                    r.status
                ),
                evidence,
            )
        }
        Err(err) => return Finding::no_answer(ID, "the request", &err, evidence),
    };
    let retry = ctx.send_until_final("retry", &request, &mut evidence).await;
    let after = ctx
        .quiet_count(Tenant::Primary, "after the retry", None, &mut evidence)
        .await;
    let counted = moved(
        ctx,
        before.as_ref(),
        after.as_ref(),
        "over the failing request and its retry",
        &mut evidence,
    );
    let retry = match retry {
        Ok(r) => r,
        Err(err) => return Finding::no_answer(ID, "the retry", &err, evidence),
    };
    let same = ctx.same_outcome(&first, &retry);
    let answers = if same {
        format!("{} both times, the same body", first.status)
    } else if first.status == retry.status {
        format!("{} both times, different bodies", first.status)
    } else {
        format!("{} then {}", first.status, retry.status)
    };
    // The count decides first: an answer cannot show a second execution
    // that returned the same error.
    if let Some(n) = counted.filter(|n| *n > 1) {
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "the failing request executed again on retry: the count moved by {n} ({answers})"
            ),
            evidence,
        )
        .with_severity(Severity::High);
    }
    let counted_note = match counted {
        Some(n) => format!(" (the count moved by {n})"),
        None => String::new(),
    };
    if same {
        return Finding::new(
            ID,
            Verdict::Pass,
            format!(
                "the error outcome ({}) is the same on retry{counted_note}",
                first.status
            ),
            evidence,
        );
    }
    if RETRYABLE.contains(&first.status) {
        return Finding::new(
            ID,
            Verdict::Pass,
            format!(
                "the error ({}) says nothing was done, so the retry may execute afresh (it got {}){counted_note}",
                first.status, retry.status
            ),
            evidence,
        );
    }
    if ctx.same_body_other_status(&first, &retry) {
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "the retry got the stored error's body, but with {} instead of {}{counted_note}: the outcome reaches the client, though one that reads the status sees another error",
                retry.status, first.status
            ),
            evidence,
        )
        .with_severity(Severity::Low);
    }
    let counted = match counted {
        Some(n) => format!("; the count moved by {n}"),
        None => String::new(),
    };
    Finding::new(
        ID,
        Verdict::Fail,
        format!(
            "the error outcome changed on retry ({answers}{counted}): the failed operation was attempted again"
        ),
        evidence,
    )
}
