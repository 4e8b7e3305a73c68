//! `lost-response`: the first attempt goes through the auditor's fault
//! point, which lets the server finish, reads the whole answer and throws
//! it away (the client sees a reset); the client retries with the same
//! key. One effect, and the retry gets the original outcome.

use super::context::Key;
use super::evidence::{answer_of, seen};
use super::tally::Tally;
use super::{baseline_failed, delta, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Answer, Evidence, Severity, Verdict};

const ID: ScenarioId = ScenarioId::LostResponse;

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let mut evidence = Evidence::default();
    let key = Key::fresh();
    let request = ctx.request(&key, Tenant::Primary, &ctx.endpoint.body);
    evidence.curl.push(format!(
        "{}  # the answer to this one is lost; then run it again",
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
    let request = ctx.routed(&request);
    let (lost, elapsed) = ctx.send_and_discard(&request).await;
    let original = match lost {
        Ok(response) if response.is_success() => {
            evidence.exchanges.push(ctx.exchange(
                "first (answer lost)",
                &request,
                Answer::Discarded(seen(&response)),
                elapsed,
            ));
            response
        }
        other => {
            evidence.exchanges.push(ctx.exchange(
                "first (answer lost)",
                &request,
                answer_of(&other),
                elapsed,
            ));
            return baseline_failed(ID, &other, evidence);
        }
    };
    let retry = ctx.send_until_final("retry", &request, &mut evidence).await;
    let after = ctx
        .quiet_count(Tenant::Primary, "after the retry", None, &mut evidence)
        .await;
    let mut tally = Tally::one();
    tally.counted = delta(before, after, &mut evidence);
    tally.add(ctx, &original);
    match &retry {
        Ok(r) => tally.add(ctx, r),
        Err(_) => tally.unseen += 1,
    }
    let (verdict, summary) = tally.judge(ctx, &mut evidence);
    let hint = tally.oracle_hint(ctx);
    if verdict == Verdict::Fail {
        return with_trial(Finding::new(ID, verdict, summary, evidence));
    }
    match &retry {
        Ok(r) if ctx.same_outcome(&original, r) => with_trial(Finding::new(
            ID,
            verdict,
            match verdict {
                Verdict::Pass => format!("{summary}; the retry got the lost answer ({})", r.status),
                _ => summary,
            },
            evidence,
        )
        .with_hint(hint)),
        Ok(r) if ctx.same_body_other_status(&original, r) => with_trial(
            Finding::new(
                ID,
                Verdict::Fail,
                format!(
                    "the retry got the lost answer's body, but with {} instead of {}: the outcome reaches the client, though one that reads the status takes it for an error",
                    r.status, original.status
                ),
                evidence,
            )
            .with_severity(Severity::Low)
            .not_a_duplicate(),
        ),
        Ok(r) => with_trial(
            Finding::new(
                ID,
                Verdict::Fail,
                format!(
                    "the retry got {} instead of the lost answer ({}): the client never learns the outcome",
                    r.status, original.status
                ),
                evidence,
            )
            .with_severity(Severity::Medium)
            .not_a_duplicate(),
        ),
        Err(e) => with_trial(Finding::no_answer(ID, "the retry", e, evidence)),
    }
}

fn with_trial(finding: Finding) -> Finding {
    Finding {
        raced: true,
        ..finding
    }
}
