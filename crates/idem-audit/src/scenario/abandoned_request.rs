//! `abandoned-request`: the client sends, hangs up after `--abandon-after`
//! before any answer, then retries at once with the same key and keeps
//! retrying (honouring 409 and Retry-After, up to a deadline) until it has
//! a final answer. One effect.
//!
//! If the API answers before the hang-up, nothing was abandoned: the
//! attempt is repeated with a fresh key, hanging up at half the observed
//! answer time, up to three attempts.

use super::context::{seen, Tally};
use super::{delta, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Answer, Evidence, Severity, Verdict};
use std::time::Duration;

const ID: ScenarioId = ScenarioId::AbandonedRequest;
const ATTEMPTS: usize = 3;

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let mut evidence = Evidence::default();
    let mut after_time = ctx.endpoint.abandon_after;
    for attempt in 1..=ATTEMPTS {
        let key = ctx.fresh_key();
        let request = ctx.request(&key, Tenant::Primary, &ctx.endpoint.body);
        let before = ctx.count(Tenant::Primary, &mut evidence).await;
        let request = ctx.routed(&request);
        let (first, elapsed) = ctx.client.send_and_abandon(&request, after_time).await;
        match first {
            Ok(Some(answered)) if !answered.is_success() => {
                evidence.exchanges.push(ctx.exchange(
                    "first",
                    &request,
                    Answer::Response(seen(&answered)),
                    elapsed,
                ));
                return super::baseline_failed(ID, &Ok(answered), evidence);
            }
            Ok(Some(answered)) => {
                evidence.exchanges.push(ctx.exchange(
                    format!("attempt {attempt}: first (answered before the hang-up)"),
                    &request,
                    Answer::Response(seen(&answered)),
                    elapsed,
                ));
                evidence.notes.push(format!(
                    "attempt {attempt}: the API answered in {} ms, before the hang-up at {} ms",
                    elapsed.as_millis(),
                    after_time.as_millis()
                ));
                after_time = (elapsed / 2).max(Duration::from_millis(1));
                continue;
            }
            Err(e) => {
                evidence.exchanges.push(ctx.exchange(
                    "first",
                    &request,
                    Answer::Error {
                        message: e.to_string(),
                    },
                    elapsed,
                ));
                return Finding::new(
                    ID,
                    Verdict::Indeterminate,
                    format!("the first request failed before the hang-up ({e})"),
                    evidence,
                );
            }
            Ok(None) => {
                evidence.exchanges.push(ctx.exchange(
                    "first (client hung up)",
                    &request,
                    Answer::HungUp {
                        after_ms: elapsed.as_secs_f64() * 1000.0,
                    },
                    elapsed,
                ));
            }
        }
        evidence.curl.push(format!(
            "timeout {:.3} {}; {}",
            after_time.as_secs_f64(),
            ctx.curl(&request),
            ctx.curl(&request)
        ));
        let retry = ctx.send_until_final("retry", &request, &mut evidence).await;
        let after = ctx.count(Tenant::Primary, &mut evidence).await;
        let mut tally = Tally::one();
        tally.counted = delta(before, after, &mut evidence);
        tally.unseen = 1;
        match &retry {
            Ok(r) => tally.add(ctx, r),
            Err(_) => tally.unseen += 1,
        }
        let (verdict, summary) = tally.judge(ctx, &mut evidence);
        let finding = match (&retry, verdict) {
            (_, Verdict::Fail) => Finding::new(ID, verdict, summary, evidence),
            (Ok(r), _) if r.is_success() => Finding::new(
                ID,
                verdict,
                match verdict {
                    Verdict::Pass => format!(
                        "{summary}; the retry got the outcome ({}) after the hang-up at {} ms",
                        r.status,
                        after_time.as_millis()
                    ),
                    _ => summary,
                },
                evidence,
            ),
            (Ok(r), _) if super::context::retry_wait(r).is_some() => Finding::new(
                ID,
                Verdict::Indeterminate,
                format!(
                    "the retry was still told to wait ({}) at the retry deadline",
                    r.status
                ),
                evidence,
            ),
            (Ok(r), _) => Finding::new(
                ID,
                Verdict::Fail,
                format!(
                    "after the hang-up the retry never got the outcome: it ended with {}{}",
                    r.status,
                    r.problem_slug()
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default()
                ),
                evidence,
            )
            .with_severity(Severity::Medium)
            .not_a_duplicate(),
            (Err(e), _) => Finding::no_answer(ID, "the retry", e, evidence),
        };
        return Finding {
            raced: true,
            ..finding
        };
    }
    Finding {
        trials: 0,
        ..Finding::new(
            ID,
            Verdict::Skipped,
            format!(
                "the API answered every attempt before the hang-up (last at {} ms), so no request was abandoned; lower --abandon-after",
                after_time.as_millis()
            ),
            evidence,
        )
    }
}
