//! `sequential-replay`: the same key and body three times in sequence. One
//! side effect; the same status and body each time.

use super::context::Key;
use super::tally::Tally;
use super::{baseline_failed, delta, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, Severity, Verdict};

const ID: ScenarioId = ScenarioId::SequentialReplay;
const SENDS: usize = 3;

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let mut evidence = Evidence::default();
    let key = Key::fresh();
    let request = ctx.request(&key, Tenant::Primary, &ctx.endpoint.body);
    evidence.curl.push(format!(
        "for i in 1 2 3; do {}; echo; done",
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
    let mut answers = Vec::with_capacity(SENDS);
    for n in 1..=SENDS {
        let answer = ctx
            .send_until_final(&format!("request {n}"), &request, &mut evidence)
            .await;
        if n == 1 && !answer.as_ref().is_ok_and(|r| r.is_success()) {
            return baseline_failed(ID, &answer, evidence);
        }
        answers.push(answer);
    }
    let after = ctx
        .quiet_count(
            Tenant::Primary,
            "after the third request",
            None,
            &mut evidence,
        )
        .await;
    let mut tally = Tally::one();
    tally.counted = delta(before, after, &mut evidence);
    for answer in answers.iter().flatten() {
        tally.add(ctx, answer);
    }
    tally.unseen = answers.iter().filter(|a| a.is_err()).count();
    let (verdict, summary) = tally.judge(ctx, &mut evidence);
    let hint = tally.oracle_hint(ctx);
    if verdict == Verdict::Fail {
        return Finding::new(ID, verdict, summary, evidence);
    }
    let Ok(first) = &answers[0] else {
        unreachable!("the first answer was checked above")
    };
    // Replays that differ: with the stored body under another status the
    // outcome still reaches the client (a warning); anything else loses it.
    let mut differing = Vec::new();
    let mut outcome_lost = false;
    for (i, answer) in answers.iter().enumerate().skip(1) {
        match answer {
            Ok(r) if ctx.same_outcome(first, r) => {}
            Ok(r) if ctx.same_body_other_status(first, r) => differing.push(format!(
                "request {} got {} with the same body",
                i + 1,
                r.status
            )),
            Ok(r) => {
                outcome_lost = true;
                differing.push(format!("request {} got {}", i + 1, r.status));
            }
            Err(e) => {
                outcome_lost = true;
                differing.push(format!("request {} got no answer ({e})", i + 1));
            }
        }
    }
    if !differing.is_empty() {
        let (severity, why) = if outcome_lost {
            (Severity::Medium, "the client does not get the outcome")
        } else {
            (
                Severity::Low,
                "the body is the stored outcome, but a client that reads the status takes the replay for an error",
            )
        };
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "the replays differ from the first answer ({}): {}; {why}",
                first.status,
                differing.join(", ")
            ),
            evidence,
        )
        .with_severity(severity);
    }
    let summary = match verdict {
        Verdict::Pass => format!("{summary}; all three answers are the same {}", first.status),
        _ => summary,
    };
    Finding::new(ID, verdict, summary, evidence).with_hint(hint)
}
