//! The engines. Each applies the shared transition rules below inside its
//! own atomic step.

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
mod codec;
pub(crate) mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
pub(crate) mod sqlite_synchronous;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod wakeups;

use crate::{Claim, ClaimOutcome, Completion, Write};
use idem_core::{
    decide_claim, decision::owner_may_write, ClaimDecision, Record, RecordState, Timestamp,
};

/// Applies a claim to the record slot of its key. The caller holds whatever
/// makes this atomic (a lock, a transaction).
pub(crate) fn apply_claim(slot: &mut Option<Record>, claim: &Claim) -> ClaimOutcome {
    match decide_claim(
        slot.as_ref(),
        &claim.fingerprint,
        claim.attempt,
        claim.now,
        claim.reclaim_unknown,
    ) {
        ClaimDecision::Claim { token } => {
            match slot {
                // The same token is the same claim (a new claim always gets
                // a larger one): a retry of a claim whose reply was lost.
                Some(r) if r.token == token && r.state == RecordState::InFlight => {
                    refresh_own_claim(r, claim)
                }
                _ => *slot = Some(claim.to_record(token)),
            }
            ClaimOutcome::Claimed { token }
        }
        ClaimDecision::Existing(outcome) => ClaimOutcome::Existing {
            outcome,
            // decide_claim only answers Existing for a present record.
            record: Box::new(slot.clone().expect("existing outcome implies a record")),
        },
    }
}

/// A claim retried under its own attempt keeps its record (token, claim
/// time, a waiter's mark) and gets the retry's horizons where they are
/// later: its owner is alive now, so the lease holds from the retry on, and
/// nothing ever moves back.
pub(crate) fn refresh_own_claim(r: &mut Record, claim: &Claim) {
    r.lease_until = r.lease_until.max(claim.lease_until);
    r.expires_at = r.expires_at.max(claim.expires_at);
    r.tombstone_until = r.tombstone_until.max(claim.tombstone_until);
}

/// Largest distance (ms, either way) of a horizon from its operation's
/// clock reading that the networked engines add to their server's clock:
/// about 35,000 years, so the sum never overflows a bigint or leaves the
/// integers a Lua number holds exactly.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) const MAX_OFFSET: i64 = 1 << 50;

/// `horizon` as a distance from the clock reading `now`, clamped to
/// [`MAX_OFFSET`]: what an engine on the store's clock adds to its own
/// reading.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) fn offset(now: Timestamp, horizon: Timestamp) -> i64 {
    horizon.millis_since(now).clamp(-MAX_OFFSET, MAX_OFFSET)
}

pub(crate) fn apply_renew(slot: &mut Option<Record>, token: u64, lease_until: Timestamp) -> Write {
    match slot {
        Some(r) if owner_may_write(Some(r), token) => {
            // Retention counts from the last sign of life, not from the
            // claim: the horizons move with the lease, so a long execution
            // whose owner then dies still reads as outcome-unknown (never as
            // a free key) for the full retention.
            let moved = lease_until
                .as_millis()
                .saturating_sub(r.lease_until.as_millis());
            if moved > 0 {
                r.lease_until = lease_until;
                r.expires_at = Timestamp(r.expires_at.as_millis().saturating_add(moved));
                r.tombstone_until = Timestamp(r.tombstone_until.as_millis().saturating_add(moved));
            }
            Write::Written
        }
        _ => Write::Fenced,
    }
}

pub(crate) fn apply_complete(slot: &mut Option<Record>, token: u64, c: Completion) -> Write {
    match slot {
        Some(r) if owner_may_write(Some(r), token) => {
            r.state = RecordState::Completed;
            r.response = Some(c.response);
            r.expires_at = c.expires_at;
            r.tombstone_until = c.tombstone_until;
            Write::Written
        }
        _ => Write::Fenced,
    }
}

pub(crate) fn apply_unknown(slot: &mut Option<Record>, token: u64) -> Write {
    match slot {
        Some(r) if owner_may_write(Some(r), token) => {
            r.state = RecordState::OutcomeUnknown;
            Write::Written
        }
        _ => Write::Fenced,
    }
}

pub(crate) fn apply_release(slot: &mut Option<Record>, token: u64) -> Write {
    match slot {
        Some(r) if owner_may_write(Some(r), token) => {
            r.state = RecordState::Released;
            Write::Written
        }
        _ => Write::Fenced,
    }
}

/// What a sweep does to one record at `now`.
pub(crate) enum SweepAction {
    Keep,
    Tombstone,
    Delete,
}

pub(crate) fn sweep_action(r: &Record, now: Timestamp) -> SweepAction {
    if r.is_live_claim(now) {
        return SweepAction::Keep;
    }
    if now >= r.tombstone_until || r.state == RecordState::Released && now >= r.lease_until {
        SweepAction::Delete
    } else if now >= r.expires_at
        && r.response
            .as_ref()
            .is_some_and(|resp| resp.body.is_some() || !resp.headers.is_empty())
    {
        SweepAction::Tombstone
    } else {
        SweepAction::Keep
    }
}

/// Drops what a tombstone does not need: it keeps fingerprint, status, time.
pub(crate) fn to_tombstone(r: &mut Record) {
    if let Some(resp) = &mut r.response {
        resp.body = None;
        resp.headers.clear();
    }
}

/// `url` without its `NAME=VALUE` query parameter, and the value: idem's
/// own parameters (`schema`, `prefix`) ride on the store URL but must not
/// reach the driver.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) fn take_query_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut value = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|param| match param.split_once('=') {
            Some((key, v)) if key == name => {
                value = Some(v.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, value)
}
