//! `sequential-replay`: the same key and body three times in sequence. One
//! side effect; the same status and body each time.

use super::context::Tally;
use super::{baseline_failed, delta, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, Severity, Verdict};

const ID: ScenarioId = ScenarioId::SequentialReplay;
const SENDS: usize = 3;

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let mut evidence = Evidence::default();
    let key = ctx.fresh_key();
    let request = ctx.request(&key, Tenant::Primary, &ctx.endpoint.body);
    evidence.curl.push(format!(
        "for i in 1 2 3; do {}; echo; done",
        ctx.curl(&request)
    ));
    let before = ctx.count(Tenant::Primary, &mut evidence).await;
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
    let after = ctx.count(Tenant::Primary, &mut evidence).await;
    let mut tally = Tally::one();
    tally.counted = delta(before, after, &mut evidence);
    for answer in answers.iter().flatten() {
        tally.add(ctx, answer);
    }
    tally.unseen = answers.iter().filter(|a| a.is_err()).count();
    let (verdict, summary) = tally.judge(ctx, &mut evidence);
    if verdict == Verdict::Fail {
        return Finding::new(ID, verdict, summary, evidence);
    }
    let Ok(first) = &answers[0] else {
        unreachable!("the first answer was checked above")
    };
    let differing: Vec<String> = answers
        .iter()
        .enumerate()
        .skip(1)
        .filter_map(|(i, a)| match a {
            Ok(r) if ctx.same_outcome(first, r) => None,
            Ok(r) => Some(format!("request {} got {}", i + 1, r.status)),
            Err(e) => Some(format!("request {} got no answer ({e})", i + 1)),
        })
        .collect();
    if !differing.is_empty() {
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "the replays differ from the first answer ({}): {}",
                first.status,
                differing.join(", ")
            ),
            evidence,
        )
        .with_severity(Severity::Medium);
    }
    let summary = match verdict {
        Verdict::Pass => format!("{summary}; all three answers are the same {}", first.status),
        _ => summary,
    };
    Finding::new(ID, verdict, summary, evidence)
}
