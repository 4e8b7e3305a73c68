//! `invalid-key`: an overlong (256 characters, one over the contract's
//! 255), an empty and a non-ASCII key must each get a 4xx and not execute.

use super::context::Key;
use super::{moved, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, Severity, Verdict};
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
    // Whether a count showed that none of them executed.
    let mut counted_nothing = true;
    for (kind, key) in cases {
        let request = ctx.request(&Key::Raw(key), Tenant::Primary, &e.body);
        evidence.curl.push(ctx.curl(&request));
        let before = ctx
            .quiet_count(
                Tenant::Primary,
                &format!("before the {kind} key"),
                None,
                &mut evidence,
            )
            .await;
        let answer = ctx
            .send(format!("{kind} key"), &request, &mut evidence)
            .await;
        let after = ctx
            .quiet_count(
                Tenant::Primary,
                &format!("after the {kind} key"),
                None,
                &mut evidence,
            )
            .await;
        let counted = moved(
            ctx,
            before.as_ref(),
            after.as_ref(),
            &format!("over the {kind} key"),
            &mut evidence,
        );
        let executed = counted.unwrap_or(0) > 0;
        counted_nothing &= counted == Some(0);
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
        // Counted not to have executed, a wrong status costs nothing more.
        let (severity, counted) = if counted_nothing {
            (Severity::Low, "; the count shows none executed")
        } else {
            (Severity::Medium, "")
        };
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "answered an invalid key with a server error instead of a 4xx: {}{counted}",
                crashed.join(", ")
            ),
            evidence,
        )
        .with_severity(severity);
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
