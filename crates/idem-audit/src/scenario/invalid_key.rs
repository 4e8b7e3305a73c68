//! `invalid-key`: an overlong (256 characters, one over the contract's
//! 255), an empty and a non-ASCII key must each get a 4xx and not execute.

use super::context::Key;
use super::{delta, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, Verdict};
use idem_core::key::MAX_KEY_LEN;

const ID: ScenarioId = ScenarioId::InvalidKey;

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let e = ctx.endpoint;
    let mut evidence = Evidence::default();
    let cases: [(&str, Vec<u8>); 3] = [
        ("overlong", "k".repeat(MAX_KEY_LEN + 1).into_bytes()),
        ("empty", Vec::new()),
        ("non-ASCII", "clé-ünïcode-☃".as_bytes().to_vec()),
    ];
    let mut accepted = Vec::new();
    let mut crashed = Vec::new();
    let mut unanswered = 0;
    for (kind, key) in cases {
        let request = ctx.request(&Key::Raw(key), Tenant::Primary, &e.body);
        evidence.curl.push(ctx.curl(&request));
        let before = ctx.count(Tenant::Primary, &mut evidence).await;
        let answer = ctx
            .send(format!("{kind} key"), &request, &mut evidence)
            .await;
        let after = ctx.count(Tenant::Primary, &mut evidence).await;
        let executed = delta(before, after, &mut evidence).unwrap_or(0) > 0;
        match answer {
            Ok(r) if r.is_success() || executed => {
                accepted.push(format!("the {kind} key ({})", r.status))
            }
            Ok(r) if (400..500).contains(&r.status) => {}
            Ok(r) => crashed.push(format!("the {kind} key ({})", r.status)),
            Err(_) => unanswered += 1,
        }
    }
    if !accepted.is_empty() {
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "executed with an invalid key instead of refusing it: {}",
                accepted.join(", ")
            ),
            evidence,
        );
    }
    if !crashed.is_empty() {
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "answered an invalid key with a server error instead of a 4xx: {}",
                crashed.join(", ")
            ),
            evidence,
        );
    }
    if unanswered > 0 {
        return Finding::new(
            ID,
            Verdict::Indeterminate,
            format!("{unanswered} invalid-key request(s) got no answer"),
            evidence,
        );
    }
    Finding::new(
        ID,
        Verdict::Pass,
        "overlong, empty and non-ASCII keys are refused with a 4xx",
        evidence,
    )
}
