//! `concurrent-burst`: N same-key requests whose last bytes are released
//! together (every connection open and every request written but its last
//! byte first), for R rounds. Exactly one effect per round.

use super::context::Key;
use super::evidence::answer_of;
use super::tally::Tally;
use super::{delta, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, Verdict};
use std::collections::BTreeMap;

const ID: ScenarioId = ScenarioId::ConcurrentBurst;

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let e = ctx.endpoint;
    let mut evidence = Evidence::default();
    let (mut failed, mut indeterminate, mut worst) = (0u64, 0u64, 0u64);
    let mut shown_round = false;
    let mut first_indeterminate = None;
    let mut hint = None;
    for round in 1..=e.rounds {
        let key = Key::fresh();
        let request = ctx.request(&key, Tenant::Primary, &e.body);
        if round == 1 {
            // A loop, not xargs -I{}: a body holding `{}` must stay as it is.
            evidence.curl.push(format!(
                "for i in $(seq {}); do {} & done; wait",
                e.burst,
                ctx.curl(&request)
            ));
        }
        let mut round_evidence = Evidence::default();
        let before = ctx
            .quiet_count(
                Tenant::Primary,
                &format!("before round {round}"),
                None,
                &mut round_evidence,
            )
            .await;
        // Each copy on the next instance, when there are several.
        let requests: Vec<_> = (0..e.burst).map(|_| ctx.routed(&request)).collect();
        let (answers, release) = ctx.burst(&requests).await;
        for (i, (answer, elapsed)) in answers.iter().enumerate() {
            round_evidence.exchanges.push(ctx.exchange(
                format!("round {round} request {}", i + 1),
                &requests[i],
                answer_of(answer),
                *elapsed,
            ));
        }
        // One more request once the burst is answered: the key's final
        // outcome, which every success in the burst must agree with.
        let settled = ctx
            .send_until_final(
                &format!("round {round} settle"),
                &request,
                &mut round_evidence,
            )
            .await;
        let after = ctx
            .quiet_count(
                Tenant::Primary,
                &format!("after round {round}"),
                None,
                &mut round_evidence,
            )
            .await;
        let mut tally = Tally::one();
        let counts = match (&before, &after) {
            (Some(b), Some(a)) => format!("; count {b} → {a}"),
            _ => String::new(),
        };
        tally.counted = delta(before, after, &mut round_evidence);
        for (answer, _) in &answers {
            match answer {
                Ok(r) => tally.add(ctx, r),
                Err(_) => tally.unseen += 1,
            }
        }
        if let Ok(r) = &settled {
            tally.add(ctx, r);
        }
        let (verdict, summary) = tally.judge(ctx, &mut round_evidence);
        if verdict == Verdict::Indeterminate && hint.is_none() {
            hint = tally.oracle_hint(ctx);
        }
        let statuses = status_counts(
            answers
                .iter()
                .map(|(a, _)| a.as_ref().ok().map(|r| r.status)),
        );
        evidence.notes.push(format!(
            "round {round}: {statuses}; last bytes released within {} µs{counts}; {}: {summary}",
            release.as_micros(),
            verdict
        ));
        let executions = tally.counted.unwrap_or(0).max(tally.ids.len() as u64);
        worst = worst.max(executions);
        match verdict {
            Verdict::Fail => {
                failed += 1;
                if !shown_round {
                    shown_round = true;
                    append(&mut evidence, round_evidence);
                }
            }
            Verdict::Indeterminate => {
                indeterminate += 1;
                first_indeterminate.get_or_insert(round_evidence);
            }
            _ => {}
        }
    }
    let rounds = u64::from(e.rounds);
    let (verdict, summary) = if failed > 0 {
        let worst = if worst > 1 {
            format!(" (up to {worst} executions of one key)")
        } else {
            String::new()
        };
        (
            Verdict::Fail,
            format!(
                "{failed} of {rounds} rounds of {} concurrent same-key requests executed more than once{worst}",
                e.burst
            ),
        )
    } else if indeterminate > 0 {
        if let Some(round_evidence) = first_indeterminate {
            append(&mut evidence, round_evidence);
        }
        (
            Verdict::Indeterminate,
            format!(
                "{indeterminate} of {rounds} rounds could not rule a duplicate out (see the notes)"
            ),
        )
    } else {
        (
            Verdict::Pass,
            format!(
                "{rounds} rounds of {} concurrent same-key requests: each executed exactly once",
                e.burst
            ),
        )
    };
    Finding {
        // Indeterminate rounds proved nothing either way.
        trials: rounds - indeterminate,
        failed_trials: failed,
        raced: true,
        ..Finding::new(ID, verdict, summary, evidence).with_hint(hint)
    }
}

fn append(evidence: &mut Evidence, more: Evidence) {
    evidence.exchanges.extend(more.exchanges);
    evidence.oracle.extend(more.oracle);
    evidence.notes.extend(more.notes);
}

/// `201×1, 409×19`, with `no answer×k` for failed exchanges.
fn status_counts(statuses: impl Iterator<Item = Option<u16>>) -> String {
    let mut counts: BTreeMap<Option<u16>, usize> = BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(s, n)| match s {
            Some(s) => format!("{s}×{n}"),
            None => format!("no answer×{n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
