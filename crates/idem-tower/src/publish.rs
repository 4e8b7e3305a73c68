//! The idempotency policy as a JSON document for API consumers (the
//! gateway serves it at `/.well-known/idempotency`). Its schema is in
//! docs/contract.md, section 9; every value comes from the configuration
//! and from `idem_core`, so the document cannot disagree with what the
//! layer does.

use crate::IdempotencyConfig;
use idem_core::key::MAX_KEY_LEN;
use idem_core::{InFlightMode, ProblemProfile, ProblemType};
use serde_json::{json, Value};
use std::time::Duration;

/// The version of the document's schema.
pub(crate) const DOCUMENT_VERSION: u64 = 1;

/// A duration in seconds: an integer when it is whole, else a fraction.
fn seconds(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        json!(d.as_secs())
    } else {
        json!(d.as_secs_f64())
    }
}

pub(crate) fn document(config: &IdempotencyConfig) -> Value {
    let format = &config.problems;
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|route| {
            let effective = config.effective(route);
            let in_flight = match effective.policy.in_flight {
                InFlightMode::Reject => json!({
                    "mode": "reject",
                    "retry_after_seconds": seconds(config.retry_after),
                }),
                InFlightMode::Wait(bound) => json!({
                    "mode": "wait",
                    "wait_seconds": seconds(bound),
                }),
            };
            json!({
                "path_prefix": route.path_prefix,
                "methods": route.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "key_required": effective.policy.require_key,
                "retention_seconds": seconds(effective.retention.retention),
                "tombstone_retention_seconds": seconds(effective.retention.tombstone_retention),
                "in_flight": in_flight,
                "upstream_dedupes": effective.policy.upstream_dedupes,
                "release_statuses": effective.release_statuses.as_slice(),
                "fingerprint": {
                    "headers": effective.fingerprint_headers.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
                    "ignore": effective.fingerprint_ignore.pointers().iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                },
            })
        })
        .collect();
    let problems: Vec<Value> = ProblemType::ALL
        .iter()
        .map(|&kind| {
            let mut entry = json!({
                "slug": kind.slug(),
                "type": format.type_uri(kind),
                "title": kind.title(),
                "status": format.status(kind),
                "retryable": kind.retryable(),
            });
            if format.profile == ProblemProfile::Stripe {
                let stripe = kind.stripe();
                entry["stripe"] = json!({ "type": stripe.error_type, "code": stripe.code });
            }
            entry
        })
        .collect();
    json!({
        "version": DOCUMENT_VERSION,
        "key": {
            "header": config.key_header.as_str(),
            "min_length": 1,
            "max_length": MAX_KEY_LEN,
            "characters": "visible ASCII (0x21-0x7E)",
            "forms": ["quoted", "bare"],
        },
        "routes": routes,
        "problem_profile": format.profile.name(),
        "problem_type_base": format.type_base,
        "docs_url": format.docs_url,
        "problems": problems,
    })
}
