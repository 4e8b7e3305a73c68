//! The claim decision: what a store does, atomically, when a request with
//! a key arrives. Every engine applies this one function inside its own
//! atomic step (a transaction, a mutex, a Lua script), so the rules cannot
//! drift between engines.

use crate::{EffectiveState, Fingerprint, Record, Timestamp};

/// What to do with a claim attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Write a fresh `in-flight` record carrying this fencing token; the
    /// caller executes the request.
    Claim {
        /// The new claim's fencing token.
        token: u64,
    },
    /// Leave the record as it is and answer from it.
    Existing(ExistingOutcome),
}

/// How a request is answered from a record it could not claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingOutcome {
    /// Same key, different fingerprint: 422 `key-reused`.
    Mismatch,
    /// Still executing: 409 `request-in-progress` (or wait).
    InProgress {
        /// When the current lease runs out unless renewed.
        lease_until: Timestamp,
    },
    /// Completed with a body: replay it.
    Replay,
    /// Completed, but the body was over the storage limit: 409
    /// `response-not-replayable`.
    NotReplayable {
        /// The original status.
        status: u16,
    },
    /// 409 `outcome-unknown`.
    Unknown,
    /// Only a tombstone is left: 422 `key-expired`.
    Expired,
}

/// The smallest token a brand-new record gets. Tied to the clock so that a
/// key whose record was swept and claimed again never reuses a token a
/// long-stalled owner of the old record may still hold.
pub fn first_token(now: Timestamp) -> u64 {
    u64::try_from(now.as_millis())
        .unwrap_or(0)
        .saturating_mul(1000)
        .max(1)
}

/// Decides a claim attempt against the record currently stored (if any).
///
/// `attempt` is the claim's nonce ([`Record::attempt`]). A claim can commit
/// in the store while its reply is lost (a timeout, a dropped connection);
/// its caller then sends the same claim again. When the stored record is
/// still that claim (persisted state in flight, whatever its lease says;
/// the same nonzero attempt; the same fingerprint), the answer is
/// [`ClaimDecision::Claim`] with the record's own token: the caller owns
/// the key, as it did all along. An engine that gets that answer keeps the
/// record (the same token means the same claim) instead of writing a new
/// one. Attempt 0 never matches.
///
/// `reclaim_unknown` is the route's `upstream_dedupes`: an `outcome-unknown`
/// record may then be claimed again and forwarded with the same key.
///
/// ```
/// use idem_core::{decide_claim, ClaimDecision, Fingerprint, FingerprintInput, Timestamp};
/// let fp = Fingerprint::compute(&FingerprintInput {
///     method: "POST", path: "/", query: None, content_type: None, extra_headers: &[], body: b"",
/// });
/// assert!(matches!(decide_claim(None, &fp, 42, Timestamp(1), false), ClaimDecision::Claim { .. }));
/// ```
pub fn decide_claim(
    existing: Option<&Record>,
    fingerprint: &Fingerprint,
    attempt: u64,
    now: Timestamp,
    reclaim_unknown: bool,
) -> ClaimDecision {
    let Some(record) = existing else {
        return ClaimDecision::Claim {
            token: first_token(now),
        };
    };
    if is_own_claim(record, fingerprint, attempt) {
        return ClaimDecision::Claim {
            token: record.token,
        };
    }
    let next_token = record.token.saturating_add(1).max(first_token(now));
    let state = record.effective(now);
    if state == EffectiveState::Absent {
        return ClaimDecision::Claim { token: next_token };
    }
    if record.fingerprint != *fingerprint {
        return ClaimDecision::Existing(ExistingOutcome::Mismatch);
    }
    ClaimDecision::Existing(match state {
        EffectiveState::Absent => unreachable!("handled above"),
        EffectiveState::InFlight => ExistingOutcome::InProgress {
            lease_until: record.lease_until,
        },
        EffectiveState::Completed => match &record.response {
            Some(r) if r.body.is_some() => ExistingOutcome::Replay,
            Some(r) => ExistingOutcome::NotReplayable { status: r.status },
            // A completed record always has a response; be safe, not sorry.
            None => ExistingOutcome::Unknown,
        },
        EffectiveState::OutcomeUnknown if reclaim_unknown => {
            return ClaimDecision::Claim { token: next_token }
        }
        EffectiveState::OutcomeUnknown => ExistingOutcome::Unknown,
        EffectiveState::Tombstone => ExistingOutcome::Expired,
    })
}

/// Whether `record` is the claim made with `attempt` and `fingerprint`,
/// still in flight: a retry of a claim whose reply was lost.
pub fn is_own_claim(record: &Record, fingerprint: &Fingerprint, attempt: u64) -> bool {
    attempt != 0
        && record.attempt == attempt
        && record.state == crate::RecordState::InFlight
        && record.fingerprint == *fingerprint
}

/// Whether a completion, release or renewal by the holder of `token` may be
/// written: the record must still be the same claim, in flight.
pub fn owner_may_write(record: Option<&Record>, token: u64) -> bool {
    record.is_some_and(|r| r.token == token && r.state == crate::RecordState::InFlight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use std::time::Duration;

    fn fp(body: &[u8]) -> Fingerprint {
        Fingerprint::compute(&FingerprintInput {
            method: "POST",
            path: "/",
            query: None,
            content_type: None,
            extra_headers: &[],
            body,
        })
    }

    fn record(state: RecordState, body: Option<&'static [u8]>) -> Record {
        Record {
            id: RecordId {
                scope: Scope::from_stored("global"),
                key: IdempotencyKey::parse(b"k").unwrap(),
            },
            fingerprint: fp(b"a"),
            state,
            token: 7,
            lease_until: Timestamp(1_000),
            expires_at: Timestamp(10_000),
            tombstone_until: Timestamp(20_000),
            response: (state == RecordState::Completed).then(|| StoredResponse {
                status: 201,
                headers: vec![],
                body: body.map(bytes::Bytes::from_static),
            }),
            claimed_at: Timestamp(0),
            attempt: 5,
            holder: None,
        }
    }

    #[test]
    fn each_state_answers_as_the_contract_table_says() {
        let a = fp(b"a");
        let r = record(RecordState::InFlight, None);
        assert_eq!(
            decide_claim(Some(&r), &a, 99, Timestamp(500), false),
            ClaimDecision::Existing(ExistingOutcome::InProgress {
                lease_until: Timestamp(1_000)
            })
        );
        // The owner stopped renewing: unknown, never re-executed...
        assert_eq!(
            decide_claim(Some(&r), &a, 99, Timestamp(1_000), false),
            ClaimDecision::Existing(ExistingOutcome::Unknown)
        );
        // ...unless the upstream dedupes itself.
        assert!(matches!(
            decide_claim(Some(&r), &a, 99, Timestamp(1_000), true),
            ClaimDecision::Claim { token } if token > 7
        ));
        let c = record(RecordState::Completed, Some(b"ok"));
        assert_eq!(
            decide_claim(Some(&c), &a, 99, Timestamp(5_000), false),
            ClaimDecision::Existing(ExistingOutcome::Replay)
        );
        assert_eq!(
            decide_claim(Some(&c), &fp(b"b"), 99, Timestamp(5_000), false),
            ClaimDecision::Existing(ExistingOutcome::Mismatch)
        );
        assert_eq!(
            decide_claim(Some(&c), &a, 99, Timestamp(10_000), false),
            ClaimDecision::Existing(ExistingOutcome::Expired)
        );
        assert!(matches!(
            decide_claim(Some(&c), &fp(b"b"), 99, Timestamp(20_000), false),
            ClaimDecision::Claim { .. }
        ));
        let big = record(RecordState::Completed, None);
        assert_eq!(
            decide_claim(Some(&big), &a, 99, Timestamp(5_000), false),
            ClaimDecision::Existing(ExistingOutcome::NotReplayable { status: 201 })
        );
        let released = record(RecordState::Released, None);
        assert!(matches!(
            decide_claim(Some(&released), &fp(b"other"), 99, Timestamp(1), false),
            ClaimDecision::Claim { token } if token > 7
        ));
    }

    #[test]
    fn tokens_grow_even_after_a_record_is_swept() {
        let t0 = Timestamp(1_000_000);
        let ClaimDecision::Claim { token: first } = decide_claim(None, &fp(b"a"), 1, t0, false)
        else {
            panic!("absent key must be claimable")
        };
        let later = t0.plus(Duration::from_secs(1));
        let ClaimDecision::Claim { token: second } = decide_claim(None, &fp(b"a"), 1, later, false)
        else {
            panic!("absent key must be claimable")
        };
        assert!(second > first);
    }
    /// The record's attempt is 5 (see `record`).
    const OWN: u64 = 5;

    #[test]
    fn the_same_attempt_in_flight_is_claimed_again_with_the_same_token() {
        let a = fp(b"a");
        let r = record(RecordState::InFlight, None);
        // Lease live.
        assert_eq!(
            decide_claim(Some(&r), &a, OWN, Timestamp(500), false),
            ClaimDecision::Claim { token: 7 }
        );
        // Lease run out: still the caller's own claim, not outcome-unknown.
        assert_eq!(
            decide_claim(Some(&r), &a, OWN, Timestamp(5_000), false),
            ClaimDecision::Claim { token: 7 }
        );
        // Even past retention and tombstone, it is the same claim.
        assert_eq!(
            decide_claim(Some(&r), &a, OWN, Timestamp(30_000), false),
            ClaimDecision::Claim { token: 7 }
        );
        assert!(is_own_claim(&r, &a, OWN));
    }

    #[test]
    fn another_attempt_is_answered_as_before() {
        let a = fp(b"a");
        let r = record(RecordState::InFlight, None);
        assert_eq!(
            decide_claim(Some(&r), &a, OWN + 1, Timestamp(500), false),
            ClaimDecision::Existing(ExistingOutcome::InProgress {
                lease_until: Timestamp(1_000)
            })
        );
        assert_eq!(
            decide_claim(Some(&r), &a, OWN + 1, Timestamp(1_000), false),
            ClaimDecision::Existing(ExistingOutcome::Unknown)
        );
        // The same attempt with another fingerprint is no retry of the claim.
        assert_eq!(
            decide_claim(Some(&r), &fp(b"b"), OWN, Timestamp(500), false),
            ClaimDecision::Existing(ExistingOutcome::Mismatch)
        );
    }

    #[test]
    fn the_same_attempt_after_completion_gets_the_replay() {
        let a = fp(b"a");
        let mut c = record(RecordState::Completed, Some(b"ok"));
        c.attempt = OWN;
        assert_eq!(
            decide_claim(Some(&c), &a, OWN, Timestamp(5_000), false),
            ClaimDecision::Existing(ExistingOutcome::Replay)
        );
        let mut u = record(RecordState::OutcomeUnknown, None);
        u.attempt = OWN;
        assert_eq!(
            decide_claim(Some(&u), &a, OWN, Timestamp(5_000), false),
            ClaimDecision::Existing(ExistingOutcome::Unknown)
        );
    }

    #[test]
    fn the_same_attempt_after_release_is_a_new_claim_with_a_larger_token() {
        let a = fp(b"a");
        let released = record(RecordState::Released, None);
        assert!(matches!(
            decide_claim(Some(&released), &a, OWN, Timestamp(500), false),
            ClaimDecision::Claim { token } if token > 7
        ));
    }

    #[test]
    fn attempt_zero_never_matches() {
        let a = fp(b"a");
        let mut r = record(RecordState::InFlight, None);
        r.attempt = 0;
        assert!(!is_own_claim(&r, &a, 0));
        assert_eq!(
            decide_claim(Some(&r), &a, 0, Timestamp(500), false),
            ClaimDecision::Existing(ExistingOutcome::InProgress {
                lease_until: Timestamp(1_000)
            })
        );
        assert_eq!(
            decide_claim(Some(&r), &a, 0, Timestamp(1_000), false),
            ClaimDecision::Existing(ExistingOutcome::Unknown)
        );
    }
}
