//! `replay-marker` (informational): whether a replay says it is one with
//! `Idempotent-Replayed: true`, and whether answers echo the key. Never a
//! failure; a client that cannot tell a replay from a fresh execution just
//! knows less.

use super::context::Key;
use super::{baseline_failed, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, Verdict};
use idem_core::headers::IDEMPOTENT_REPLAYED;

const ID: ScenarioId = ScenarioId::ReplayMarker;

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let mut evidence = Evidence::default();
    let key = Key::fresh();
    let request = ctx.request(&key, Tenant::Primary, &ctx.endpoint.body);
    evidence.curl.push(format!(
        "for i in 1 2; do {}; echo; done",
        ctx.curl_with(&request, "", true)
    ));
    let first = ctx.send_until_final("first", &request, &mut evidence).await;
    let first = match first {
        Ok(r) if r.is_success() => r,
        other => return baseline_failed(ID, &other, evidence),
    };
    let replay = match ctx
        .send_until_final("replay", &request, &mut evidence)
        .await
    {
        Ok(r) if ctx.same_outcome(&first, &r) => r,
        Ok(r) => {
            return Finding::new(
                ID,
                Verdict::Pass,
                format!(
                    "not checked: the second request got {}, not a replay",
                    r.status
                ),
                evidence,
            )
        }
        Err(err) => return Finding::no_answer(ID, "the replay", &err, evidence),
    };
    let marked = replay.header(IDEMPOTENT_REPLAYED).map(str::trim);
    let first_marked = first.header(IDEMPOTENT_REPLAYED).is_some();
    let echoes = replay.header(&ctx.endpoint.key_header).is_some();
    let mut summary = match marked {
        Some(v) if v.eq_ignore_ascii_case("true") && !first_marked => {
            "replays carry Idempotent-Replayed: true and first answers do not".to_owned()
        }
        Some(v) if v.eq_ignore_ascii_case("true") => {
            "replays carry Idempotent-Replayed: true, but so does the first answer".to_owned()
        }
        Some(v) => format!("replays carry Idempotent-Replayed: {v}"),
        None => "replays are not marked Idempotent-Replayed: a client cannot tell a replay from a fresh execution".to_owned(),
    };
    if !echoes {
        summary.push_str(&format!(
            "; answers do not echo {}",
            ctx.endpoint.key_header
        ));
    }
    Finding::new(ID, Verdict::Pass, summary, evidence)
}
