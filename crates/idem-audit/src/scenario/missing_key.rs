//! `missing-key`: what a request without a key gets. Reported, not failed,
//! unless `--require-key` says keys must be required.

use super::context::Key;
use super::{moved, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, Severity, Verdict};

const ID: ScenarioId = ScenarioId::MissingKey;

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let e = ctx.endpoint;
    let mut evidence = Evidence::default();
    let request = ctx.request(&Key::Absent, Tenant::Primary, &e.body);
    evidence.curl.push(ctx.curl(&request));
    let before = ctx
        .quiet_count(Tenant::Primary, "before the request", None, &mut evidence)
        .await;
    let answer = ctx.send("without a key", &request, &mut evidence).await;
    let after = ctx
        .quiet_count(Tenant::Primary, "after it", None, &mut evidence)
        .await;
    let executed = moved(
        ctx,
        before.as_ref(),
        after.as_ref(),
        "over it",
        &mut evidence,
    );
    let response = match answer {
        Ok(r) => r,
        Err(err) => return Finding::no_answer(ID, "the request", &err, evidence),
    };
    let slug = response
        .problem_slug()
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    if (400..500).contains(&response.status) && executed.unwrap_or(0) == 0 {
        return Finding::new(
            ID,
            Verdict::Pass,
            format!(
                "a key is required: a request without one is refused with {}{slug}",
                response.status
            ),
            evidence,
        );
    }
    let ran = response.is_success() || executed.unwrap_or(0) > 0;
    if ran && e.require_key {
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "a request without a key was executed ({}); --require-key says keys are required",
                response.status
            ),
            evidence,
        )
        .with_severity(Severity::Low);
    }
    let summary = if ran {
        format!(
            "a request without a key is executed unprotected ({}): its retries can duplicate it; --require-key makes this a failure",
            response.status
        )
    } else {
        format!("a request without a key got {}{slug}", response.status)
    };
    Finding::new(ID, Verdict::Pass, summary, evidence)
}
