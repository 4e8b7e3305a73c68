//! `abandoned-request`: the client sends, hangs up after `--abandon-after`
//! before any answer, then retries at once with the same key and keeps
//! retrying (honouring 409 and Retry-After, up to a deadline) until it has
//! a final answer. One effect.
//!
//! If the API answers before the hang-up, nothing was abandoned: the
//! attempt is repeated with a fresh key, hanging up at half the observed
//! answer time, up to three attempts.
//!
//! The abandoned attempt can outlive the retry (the retry got an
//! immediate final 409, or a 502 from a wrapper): the last reading then
//! waits for its effect and for a quiet count, and a retry once the API is
//! quiet says whether the outcome can be had at all.

use super::context::retry_wait;
use super::context::Key;
use super::evidence::seen;
use super::quiet::Expect;
use super::tally::Tally;
use super::{delta, Ctx, Finding, ScenarioId};
use crate::http::{HttpError, Response};
use crate::oracle::Tenant;
use crate::outcome::{Answer, Evidence, Severity, Verdict};
use backon::BackoffBuilder as _;
use std::time::Duration;
use tokio::time::Instant;

const ID: ScenarioId = ScenarioId::AbandonedRequest;
const ATTEMPTS: usize = 3;
/// Between later retries refused the same way, doubling up to the most.
const LATER_PAUSE: Duration = Duration::from_millis(100);
const MAX_LATER_PAUSE: Duration = Duration::from_secs(2);

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let mut evidence = Evidence::default();
    let mut after_time = ctx.endpoint.abandon_after;
    for attempt in 1..=ATTEMPTS {
        let key = Key::fresh();
        let request = ctx.request(&key, Tenant::Primary, &ctx.endpoint.body);
        let label = if attempt == 1 {
            "before the first request".to_owned()
        } else {
            format!("before attempt {attempt}")
        };
        let before = ctx
            .quiet_count(Tenant::Primary, &label, None, &mut evidence)
            .await;
        let request = ctx.routed(&request);
        let (first, elapsed) = ctx.send_and_abandon(&request, after_time).await;
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
            "{}; {}",
            ctx.curl_with(
                &request,
                &format!("timeout {:.3} ", after_time.as_secs_f64()),
                false
            ),
            ctx.curl(&request)
        ));
        let retry = ctx.send_until_final("retry", &request, &mut evidence).await;
        // The abandoned attempt may still be executing: a correct API
        // shows its one effect eventually.
        let expect = before.as_ref().map(|since| Expect { since, at_least: 1 });
        let mut later = None;
        if let Ok(r) = &retry {
            if !r.is_success() && retry_wait(r).is_none() {
                // Told no, at once: ask again once the first attempt is
                // over. A count shows when; without one, the same refusal
                // again may mean it still runs, so ask until it changes
                // (up to the settle deadline).
                let counted = ctx
                    .quiet_count(Tenant::Primary, "after the retry", expect, &mut evidence)
                    .await
                    .is_some();
                let deadline = Instant::now() + ctx.endpoint.settle_deadline;
                let pauses = backon::ExponentialBuilder::new()
                    .with_min_delay(LATER_PAUSE)
                    .with_max_delay(MAX_LATER_PAUSE)
                    .without_max_times()
                    .build();
                for (n, pause) in (1..).zip(pauses) {
                    let label = match n {
                        1 => "later retry, once the API was quiet".to_owned(),
                        n => format!("later retry {n}"),
                    };
                    let answer = ctx.send_until_final(&label, &request, &mut evidence).await;
                    let refused_again = answer.as_ref().is_ok_and(|l| l.status == r.status);
                    later = Some(answer);
                    if counted || !refused_again || Instant::now() + pause > deadline {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
        let after = ctx
            .quiet_count(
                Tenant::Primary,
                "after the last retry",
                expect,
                &mut evidence,
            )
            .await;
        let mut tally = Tally::one();
        tally.counted = delta(before, after, &mut evidence);
        tally.unseen = 1;
        for answer in std::iter::once(&retry).chain(later.as_ref()) {
            match answer {
                Ok(r) => tally.add(ctx, r),
                Err(_) => tally.unseen += 1,
            }
        }
        let (verdict, summary) = tally.judge(ctx, &mut evidence);
        let hint = tally.oracle_hint(ctx);
        let finding = judge(
            ctx,
            &retry,
            later.as_ref(),
            verdict,
            summary,
            after_time,
            evidence,
        );
        return Finding {
            raced: true,
            ..finding.with_hint(hint)
        };
    }
    // Each answered attempt executed: read the count once they are over,
    // so their effects are not taken for late ones.
    ctx.quiet_count(
        Tenant::Primary,
        "after the last attempt",
        None,
        &mut evidence,
    )
    .await;
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

/// The verdict once the retries are in: `verdict` and `summary` are the
/// oracles' on "one execution".
fn judge(
    ctx: &Ctx<'_>,
    retry: &Result<Response, HttpError>,
    later: Option<&Result<Response, HttpError>>,
    verdict: Verdict,
    summary: String,
    after_time: Duration,
    evidence: Evidence,
) -> Finding {
    let status = |r: &Response| {
        let slug = r
            .problem_slug()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        format!("{}{slug}", r.status)
    };
    let r = match retry {
        _ if verdict == Verdict::Fail => return Finding::new(ID, verdict, summary, evidence),
        Err(e) => return Finding::no_answer(ID, "the retry", e, evidence),
        Ok(r) => r,
    };
    if r.is_success() {
        let summary = match verdict {
            Verdict::Pass => format!(
                "{summary}; the retry got the outcome ({}) after the hang-up at {} ms",
                r.status,
                after_time.as_millis()
            ),
            _ => summary,
        };
        return Finding::new(ID, verdict, summary, evidence);
    }
    if retry_wait(r).is_some() {
        return Finding::new(
            ID,
            Verdict::Indeterminate,
            format!(
                "the retry was still told to wait ({}) at the retry deadline",
                r.status
            ),
            evidence,
        );
    }
    let later = match later {
        Some(Ok(l)) => l,
        Some(Err(e)) => return Finding::no_answer(ID, "the later retry", e, evidence),
        None => unreachable!("a final refusal is always asked again"),
    };
    // The outcome: a 2xx, or the stored answer under another status (its
    // id in the body).
    let got_outcome = later.is_success() || ctx.id_of(later).is_some();
    if got_outcome {
        let told = format!(
            "the retry while the first attempt still ran got {} with no Retry-After and no request-in-progress type, so a client cannot tell it to wait; a retry once the API was quiet got the outcome ({})",
            status(r),
            later.status
        );
        return match verdict {
            Verdict::Pass => {
                Finding::new(ID, Verdict::Fail, format!("{told}; {summary}"), evidence)
                    .with_severity(Severity::Low)
                    .not_a_duplicate()
            }
            _ => Finding::new(ID, verdict, format!("{summary} ({told})"), evidence),
        };
    }
    if retry_wait(later).is_some() {
        return Finding::new(
            ID,
            Verdict::Indeterminate,
            format!(
                "the later retry was still told to wait ({}) at the retry deadline",
                later.status
            ),
            evidence,
        );
    }
    Finding::new(
        ID,
        Verdict::Fail,
        format!(
            "after the hang-up the client never gets the outcome: the retry ended with {}, and a retry once the API was quiet with {}",
            status(r),
            status(later)
        ),
        evidence,
    )
    .with_severity(Severity::Medium)
    .not_a_duplicate()
}
