//! `retention` (opt-in): after `--retention`, the API's window, what does a
//! retry get? Being told plainly (422 `key-expired`) or a replay is fine;
//! a second execution is a failure.

use super::context::Key;
use super::tally::Tally;
use super::{baseline_failed, delta, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, Verdict};
use std::time::Duration;

const ID: ScenarioId = ScenarioId::Retention;

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let Some(window) = ctx.endpoint.retention else {
        return Finding::skipped(
            ID,
            "needs the API's retention window: give --retention DURATION (e.g. 24h; the run waits that long)",
        );
    };
    let mut evidence = Evidence::default();
    let key = Key::fresh();
    let request = ctx.request(&key, Tenant::Primary, &ctx.endpoint.body);
    // Past the window by a margin, so clock granularity cannot matter.
    let wait = window + (window / 10).max(Duration::from_secs(1));
    evidence.curl.push(format!(
        "{0}; sleep {1}; {0}",
        ctx.curl(&request),
        wait.as_secs_f64().ceil()
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
        Ok(r) if r.is_success() => r,
        other => return baseline_failed(ID, &other, evidence),
    };
    evidence.notes.push(format!(
        "waited {} after the first answer",
        humantime::format_duration(wait)
    ));
    tokio::time::sleep(wait).await;
    let late = ctx
        .send_until_final("late retry", &request, &mut evidence)
        .await;
    let after = ctx
        .quiet_count(Tenant::Primary, "after the late retry", None, &mut evidence)
        .await;
    let late = match late {
        Ok(r) => r,
        Err(err) => return Finding::no_answer(ID, "the late retry", &err, evidence),
    };
    if !late.is_success() {
        let slug = late
            .problem_slug()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        let counted = super::moved(
            ctx,
            before.as_ref(),
            after.as_ref(),
            "over the first request and the late retry",
            &mut evidence,
        );
        if let Some(n) = counted.filter(|n| *n > 1) {
            return Finding::new(
                ID,
                Verdict::Fail,
                format!(
                    "the late retry was refused ({}{slug}) but executed anyway (the count moved by {n})",
                    late.status
                ),
                evidence,
            )
            .with_severity(crate::outcome::Severity::High);
        }
        return Finding::new(
            ID,
            Verdict::Pass,
            format!(
                "a retry after the window is refused plainly ({}{slug})",
                late.status
            ),
            evidence,
        );
    }
    let mut tally = Tally::one();
    tally.counted = delta(before, after, &mut evidence);
    tally.add(ctx, &first);
    tally.add(ctx, &late);
    let (verdict, summary) = tally.judge(ctx, &mut evidence);
    let hint = tally.oracle_hint(ctx);
    let summary = match verdict {
        Verdict::Fail => {
            return Finding::new(
                ID,
                verdict,
                format!("a retry after the retention window executed again: {summary}"),
                evidence,
            )
            .with_severity(crate::outcome::Severity::High)
        }
        Verdict::Pass if ctx.same_outcome(&first, &late) => {
            "a retry after the window still gets the replay (the API keeps keys longer than --retention)".to_owned()
        }
        _ => summary,
    };
    Finding::new(ID, verdict, summary, evidence).with_hint(hint)
}
