//! `payload-mismatch`: the same key with a changed body must be refused
//! with a 4xx; a new execution, or a silent replay of the first answer, is
//! a failure. Before that, the same payload re-serialised (reordered keys,
//! other whitespace) must be recognised as the same request and replayed:
//! a fingerprint over raw bytes breaks every client that re-serialises on
//! retry.

use super::context::Key;
use super::{baseline_failed, moved, Ctx, Finding, ScenarioId};
use crate::oracle::Tenant;
use crate::outcome::{Evidence, Severity, Verdict};
use bytes::Bytes;
use serde_json::Value;

const ID: ScenarioId = ScenarioId::PayloadMismatch;

pub(super) async fn run(ctx: &Ctx<'_>) -> Finding {
    let e = ctx.endpoint;
    let (changed, how) =
        match &e.changed_body {
            Some(body) => (body.clone(), "the body given by --changed-body".to_owned()),
            None => match change(&e.body) {
                Some(changed) => changed,
                None => return Finding::skipped(
                    ID,
                    "the body is not a JSON document with a value to change; give --changed-body",
                ),
            },
        };
    let mut evidence = Evidence::default();
    evidence
        .notes
        .push(format!("the changed request sends {how}"));
    let key = Key::fresh();
    let first_request = ctx.request(&key, Tenant::Primary, &e.body);
    let reserialised = reserialise(&e.body);
    let reserialised_request = reserialised
        .as_ref()
        .map(|body| ctx.request(&key, Tenant::Primary, body));
    let changed_request = ctx.request(&key, Tenant::Primary, &changed);
    evidence.curl.push(ctx.curl(&first_request));
    if let Some(request) = &reserialised_request {
        evidence.curl.push(ctx.curl(request));
    }
    evidence.curl.push(ctx.curl(&changed_request));
    let before = ctx
        .quiet_count(
            Tenant::Primary,
            "before the first request",
            None,
            &mut evidence,
        )
        .await;
    let first = ctx
        .send_until_final("first", &first_request, &mut evidence)
        .await;
    let first = match first {
        Ok(r) if r.is_success() => r,
        other => return baseline_failed(ID, &other, evidence),
    };
    // The same payload, re-serialised: must replay, not be refused.
    let mut reserialised_refused = None;
    let mut mid = before.clone();
    if let Some(request) = &reserialised_request {
        let answer = ctx
            .send_until_final("same payload, re-serialised", request, &mut evidence)
            .await;
        mid = ctx
            .quiet_count(
                Tenant::Primary,
                "after the re-serialised request",
                None,
                &mut evidence,
            )
            .await;
        let counted = moved(
            ctx,
            before.as_ref(),
            mid.as_ref(),
            "over the first request and the re-serialised one",
            &mut evidence,
        );
        let again = answer.as_ref().ok();
        let answered = match again {
            Some(r) => format!("answered {}", r.status),
            None => "no answer".to_owned(),
        };
        let new_id = again.is_some_and(|r| {
            r.is_success() && ctx.id_of(r).is_some() && ctx.id_of(r) != ctx.id_of(&first)
        });
        if new_id {
            return Finding::new(
                ID,
                Verdict::Fail,
                format!(
                    "the same payload, re-serialised, was executed a second time under the same key: its answer carries another id ({} after {})",
                    ctx.id_of(again.unwrap_or(&first)).unwrap_or_default(),
                    ctx.id_of(&first).unwrap_or_default()
                ),
                evidence,
            )
            .with_severity(Severity::High);
        }
        if let Some(n) = counted.filter(|n| *n > 1) {
            return Finding::new(
                ID,
                Verdict::Fail,
                format!(
                    "the same payload, re-serialised ({answered}), was executed a second time under the same key: the count moved by {n} over the first request and the re-serialised one"
                ),
                evidence,
            )
            .with_severity(Severity::High);
        }
        if let Some(r) = again.filter(|r| !ctx.same_outcome(&first, r)) {
            if r.is_success() {
                return Finding::new(
                    ID,
                    Verdict::Fail,
                    format!(
                        "the same payload, re-serialised, got a different {} under the same key: executed again, or the replay is not the stored answer",
                        r.status
                    ),
                    evidence,
                )
                .with_severity(Severity::High);
            }
            reserialised_refused = Some((r.status, ctx.same_body_other_status(&first, r)));
        }
    }
    let second = ctx
        .send_until_final("changed payload", &changed_request, &mut evidence)
        .await;
    let after = ctx
        .quiet_count(
            Tenant::Primary,
            "after the changed request",
            None,
            &mut evidence,
        )
        .await;
    let counted = moved(
        ctx,
        mid.as_ref(),
        after.as_ref(),
        "over the changed request",
        &mut evidence,
    );
    let second = match second {
        Ok(r) => r,
        Err(err) => return Finding::no_answer(ID, "the changed request", &err, evidence),
    };
    let new_id = second.is_success()
        && e.id_field.is_some()
        && ctx.id_of(&second).is_some()
        && ctx.id_of(&second) != ctx.id_of(&first);
    if let Some(n) = counted.filter(|n| *n > 0) {
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "the changed payload was executed under the used key (answered {}; the count moved by {n} over it)",
                second.status
            ),
            evidence,
        )
        .with_severity(Severity::High);
    }
    if new_id {
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "the changed payload was executed under the used key (answered {} with another id, {})",
                second.status,
                ctx.id_of(&second).unwrap_or_default()
            ),
            evidence,
        )
        .with_severity(Severity::High);
    }
    if second.is_success() {
        return if ctx.same_outcome(&first, &second) {
            Finding::new(
                ID,
                Verdict::Fail,
                format!(
                    "the changed payload silently got the first answer replayed ({}): the client believes its changed request succeeded",
                    second.status
                ),
                evidence,
            )
        } else {
            Finding::new(
                ID,
                Verdict::Fail,
                format!(
                    "the changed payload got a new {} under the used key: executed as a second operation",
                    second.status
                ),
                evidence,
            )
            .with_severity(Severity::High)
        };
    }
    if !(400..500).contains(&second.status) {
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "the changed payload got {} instead of a 4xx refusal",
                second.status
            ),
            evidence,
        );
    }
    if let Some((status, stored_body)) = reserialised_refused {
        let what = if stored_body {
            format!("got the stored answer under {status}")
        } else {
            format!("was refused too ({status})")
        };
        return Finding::new(
            ID,
            Verdict::Fail,
            format!(
                "the changed payload was refused ({}), but the same payload re-serialised {what}: clients that re-serialise JSON on retry are told they changed it, though nothing executes twice",
                second.status
            ),
            evidence,
        )
        .with_severity(Severity::Low);
    }
    let slug = second
        .problem_slug()
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    let mut summary = format!(
        "the changed payload was refused with {}{slug}",
        second.status
    );
    if reserialised.is_some() {
        summary.push_str("; the same payload re-serialised was replayed");
    }
    Finding::new(ID, Verdict::Pass, summary, evidence)
}

/// The body with one value changed: the first number (+1), string
/// (suffixed) or boolean (flipped) met depth-first, object members in
/// their sorted order; with none, a new member.
fn change(body: &Bytes) -> Option<(Bytes, String)> {
    let mut json: Value = serde_json::from_slice(body).ok()?;
    let how = change_value(&mut json, "").or_else(|| match &mut json {
        Value::Object(map) => {
            map.insert("idem_audit_changed".to_owned(), Value::Bool(true));
            Some("a new member `idem_audit_changed`".to_owned())
        }
        _ => None,
    })?;
    Some((Bytes::from(serde_json::to_vec(&json).ok()?), how))
}

fn change_value(value: &mut Value, at: &str) -> Option<String> {
    match value {
        Value::Number(n) => {
            let changed = if let Some(i) = n.as_i64() {
                Value::from(i.checked_add(1)?)
            } else {
                Value::from(n.as_f64()? + 1.0)
            };
            let how = format!("`{}` changed from {n} to {changed}", name(at));
            *value = changed;
            Some(how)
        }
        Value::String(s) => {
            let how = format!(
                "`{}` changed from {s:?} to {:?}",
                name(at),
                format!("{s}-changed")
            );
            s.push_str("-changed");
            Some(how)
        }
        Value::Bool(b) => {
            *b = !*b;
            Some(format!("`{}` flipped to {b}", name(at)))
        }
        Value::Object(map) => map
            .iter_mut()
            .find_map(|(k, v)| change_value(v, &join(at, k))),
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .find_map(|(i, v)| change_value(v, &join(at, &i.to_string()))),
        Value::Null => None,
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

fn name(at: &str) -> &str {
    if at.is_empty() {
        "the body"
    } else {
        at
    }
}

/// The same JSON with its object members in reverse order and spaced out,
/// if that gives other bytes.
fn reserialise(body: &Bytes) -> Option<Bytes> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let mut out = String::new();
    write_reversed(&json, &mut out);
    (out.as_bytes() != &body[..]).then(|| Bytes::from(out))
}

fn write_reversed(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push_str("{ ");
            for (i, (k, v)) in map.iter().rev().enumerate() {
                if i > 0 {
                    out.push_str(" , ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(" : ");
                write_reversed(v, out);
            }
            out.push_str(" }");
        }
        Value::Array(items) => {
            out.push_str("[ ");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(" , ");
                }
                write_reversed(v, out);
            }
            out.push_str(" ]");
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_the_first_number_then_strings_then_adds_a_member() {
        let (body, how) =
            change(&Bytes::from_static(br#"{"currency":"eur","amount":1000}"#)).unwrap();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["amount"], 1001);
        assert_eq!(json["currency"], "eur");
        assert!(how.contains("amount"), "{how}");
        let (body, _) = change(&Bytes::from_static(br#"{"note":"x"}"#)).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["note"],
            "x-changed"
        );
        let (body, _) = change(&Bytes::from_static(br#"{"a":null}"#)).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["idem_audit_changed"],
            true
        );
        assert!(change(&Bytes::from_static(b"amount=1")).is_none());
        assert!(change(&Bytes::new()).is_none());
    }

    #[test]
    fn reserialising_keeps_the_value_and_changes_the_bytes() {
        let body = Bytes::from_static(br#"{"amount":1000,"meta":{"a":1,"b":[1,2]}}"#);
        let again = reserialise(&body).unwrap();
        assert_ne!(again, body);
        assert_eq!(
            serde_json::from_slice::<Value>(&again).unwrap(),
            serde_json::from_slice::<Value>(&body).unwrap()
        );
    }
}
