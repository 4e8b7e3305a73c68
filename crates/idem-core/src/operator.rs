//! An operator's decisions on a key (the admin API): release a key whose
//! request did not execute, resolve one whose request did, purge a record.
//! Every engine applies [`decide_operator`] inside its own atomic step, so
//! the rules are the same on every store.

use crate::{EffectiveState, Record, RecordState, StoredResponse, Timestamp};
use std::time::Duration;

/// What an operator does to a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorAction {
    /// The request did NOT execute: free the key, so the next retry
    /// executes. Only for a record that reads `outcome-unknown` (marked so,
    /// or in flight with a lease that ran out).
    Release,
    /// The request DID execute with this outcome: store it, so retries
    /// replay it. Only for a record that reads `outcome-unknown`.
    Resolve {
        /// What retries replay (deny-listed headers already removed).
        response: StoredResponse,
        /// Replay for this long from the decision.
        retention: Duration,
        /// Then a tombstone for this long.
        tombstone_retention: Duration,
    },
    /// Erase the stored response and headers (e.g. an erasure request).
    /// With `keep_tombstone`, retries read `key-expired` until the
    /// record's tombstone horizon; without it the key is free at once.
    /// Refused for a live claim (its owner is still executing).
    Purge {
        /// Keep the tombstone.
        keep_tombstone: bool,
    },
}

impl OperatorAction {
    /// The action's name, for logs, metrics and problem details.
    pub fn name(&self) -> &'static str {
        match self {
            OperatorAction::Release => "release",
            OperatorAction::Resolve { .. } => "resolve",
            OperatorAction::Purge { .. } => "purge",
        }
    }
}

/// Why an operator action was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OperatorRefusal {
    /// No record under the key (never claimed, released, or past its
    /// tombstone).
    #[error("no record under this key")]
    NotFound,
    /// The token given is not the record's: it changed since the operator
    /// read it (a new claim, another operator's action), or the token was
    /// made up.
    #[error("the record changed since it was read: its token is now {current}")]
    Changed {
        /// The record's token now.
        current: u64,
    },
    /// The action does not apply to the record's state (e.g. releasing a
    /// completed record, or purging one whose owner is still executing).
    #[error("the record is {}; {action} needs {needs}", state_name(*.state))]
    WrongState {
        /// What the record reads as now.
        state: EffectiveState,
        /// The action refused.
        action: &'static str,
        /// What the action needs.
        needs: &'static str,
    },
}

/// The contract's name of an effective state (`in-flight`,
/// `outcome-unknown`, ...), as the admin API shows it.
pub fn state_name(state: EffectiveState) -> &'static str {
    match state {
        EffectiveState::Absent => "absent",
        EffectiveState::InFlight => "in-flight",
        EffectiveState::Completed => "completed",
        EffectiveState::OutcomeUnknown => "outcome-unknown",
        EffectiveState::Tombstone => "tombstone",
    }
}

/// An applied operator action: the record to write, and what it reads as
/// at the clock the action was decided at.
///
/// The state comes with the record because the caller's clock may differ
/// from the store's: a purge that keeps the tombstone ends retention at
/// the store's `now`, so read a moment earlier, at a gateway clock a
/// little behind, the record would still look completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operated {
    /// The record as written.
    pub record: Record,
    /// What it reads as at the decision's clock.
    pub state: EffectiveState,
}

/// Decides an operator's action against the stored record at `now` (the
/// store's clock on engines that have one) and returns the record to
/// write in its place, with what it reads as at `now`.
///
/// `token` is the token the operator read: any other is refused as
/// [`OperatorRefusal::Changed`]. Every applied action gives the record a
/// larger token, so a second action taken on the same reading is refused
/// too, and an owner whose lease ran out can no longer write over the
/// operator's decision (its completion is fenced).
///
/// ```
/// use idem_core::operator::{decide_operator, OperatorAction, OperatorRefusal};
/// use idem_core::*;
/// # let id = RecordId { scope: Scope::global(), key: IdempotencyKey::parse(b"k").unwrap() };
/// # let fp = Fingerprint::compute(&FingerprintInput {
/// #     method: "POST", path: "/", query: None, content_type: None, extra_headers: &[], body: b"",
/// # });
/// let record = Record {
///     id, fingerprint: fp, state: RecordState::OutcomeUnknown, token: 7,
///     lease_until: Timestamp(10), expires_at: Timestamp(1_000), tombstone_until: Timestamp(2_000),
///     response: None, claimed_at: Timestamp(0), attempt: 1, holder: None,
/// };
/// let released = decide_operator(Some(&record), 7, &OperatorAction::Release, Timestamp(20)).unwrap();
/// assert_eq!(released.state, EffectiveState::Absent);
/// assert!(released.record.token > 7);
/// assert_eq!(
///     decide_operator(Some(&record), 6, &OperatorAction::Release, Timestamp(20)),
///     Err(OperatorRefusal::Changed { current: 7 }),
/// );
/// ```
pub fn decide_operator(
    record: Option<&Record>,
    token: u64,
    action: &OperatorAction,
    now: Timestamp,
) -> Result<Operated, OperatorRefusal> {
    let record = record.ok_or(OperatorRefusal::NotFound)?;
    // The token first: a record released by another operator a moment ago
    // is "changed since you read it", not "never there".
    if record.token != token {
        return Err(OperatorRefusal::Changed {
            current: record.token,
        });
    }
    let state = record.effective(now);
    if state == EffectiveState::Absent {
        return Err(OperatorRefusal::NotFound);
    }
    let refuse = |needs| OperatorRefusal::WrongState {
        state,
        action: action.name(),
        needs,
    };
    let mut next = record.clone();
    next.token = record.token.saturating_add(1);
    match action {
        OperatorAction::Release => {
            if state != EffectiveState::OutcomeUnknown {
                return Err(refuse("outcome-unknown"));
            }
            next.state = RecordState::Released;
            next.response = None;
            // A released record is deleted by the next sweep once its lease
            // is over; the operator's decision is final now.
            next.lease_until = next.lease_until.min(now);
        }
        OperatorAction::Resolve {
            response,
            retention,
            tombstone_retention,
        } => {
            if state != EffectiveState::OutcomeUnknown {
                return Err(refuse("outcome-unknown"));
            }
            next.state = RecordState::Completed;
            next.response = Some(response.clone());
            next.expires_at = now.plus(*retention);
            next.tombstone_until = next.expires_at.plus(*tombstone_retention);
        }
        OperatorAction::Purge { keep_tombstone } => {
            if state == EffectiveState::InFlight {
                return Err(refuse("a record whose owner is not executing"));
            }
            next.response = None;
            next.lease_until = next.lease_until.min(now);
            if *keep_tombstone {
                // Past retention, inside the tombstone: retries read
                // key-expired, a different request key-reused. Never in
                // flight again, so no late owner can write back.
                if next.state == RecordState::InFlight {
                    next.state = RecordState::OutcomeUnknown;
                }
                next.expires_at = next.expires_at.min(now);
                if next.tombstone_until <= now {
                    next.tombstone_until = now.plus(Duration::from_millis(1));
                }
            } else {
                next.state = RecordState::Released;
            }
        }
    }
    Ok(Operated {
        state: next.effective(now),
        record: next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn record(state: RecordState, lease_until: i64) -> Record {
        Record {
            id: RecordId {
                scope: Scope::global(),
                key: IdempotencyKey::parse(b"order-42").unwrap(),
            },
            fingerprint: Fingerprint::compute(&FingerprintInput {
                method: "POST",
                path: "/",
                query: None,
                content_type: None,
                extra_headers: &[],
                body: b"",
            }),
            state,
            token: 100,
            lease_until: Timestamp(lease_until),
            expires_at: Timestamp(10_000),
            tombstone_until: Timestamp(20_000),
            response: (state == RecordState::Completed).then(|| StoredResponse {
                status: 201,
                headers: vec![("x-secret".into(), "pan".into())],
                body: Some("card 4242".into()),
            }),
            claimed_at: Timestamp(0),
            attempt: 9,
            holder: None,
        }
    }

    fn resolve() -> OperatorAction {
        OperatorAction::Resolve {
            response: StoredResponse {
                status: 201,
                headers: vec![],
                body: Some("{}".into()),
            },
            retention: Duration::from_secs(1),
            tombstone_retention: Duration::from_secs(2),
        }
    }

    const NOW: Timestamp = Timestamp(500);

    #[test]
    fn release_and_resolve_need_an_unknown_outcome() {
        for (state, lease) in [
            (RecordState::OutcomeUnknown, 0),
            (RecordState::InFlight, 400), // lease ran out
        ] {
            let r = record(state, lease);
            let released = decide_operator(Some(&r), 100, &OperatorAction::Release, NOW).unwrap();
            assert_eq!(released.state, EffectiveState::Absent);
            let resolved = decide_operator(Some(&r), 100, &resolve(), NOW).unwrap();
            assert_eq!(resolved.state, EffectiveState::Completed);
            assert_eq!(resolved.record.expires_at, Timestamp(1_500));
            assert_eq!(resolved.record.tombstone_until, Timestamp(3_500));
            assert!(
                !decision::owner_may_write(Some(&resolved.record), 100),
                "a late owner cannot overwrite the operator"
            );
        }
        for r in [
            record(RecordState::InFlight, 900),
            record(RecordState::Completed, 0),
        ] {
            for action in [OperatorAction::Release, resolve()] {
                assert!(matches!(
                    decide_operator(Some(&r), 100, &action, NOW),
                    Err(OperatorRefusal::WrongState { .. })
                ));
            }
        }
    }

    #[test]
    fn a_stale_or_made_up_token_is_refused_and_every_action_moves_the_token() {
        let r = record(RecordState::OutcomeUnknown, 0);
        for token in [99, 101, 0, u64::MAX] {
            assert_eq!(
                decide_operator(Some(&r), token, &OperatorAction::Release, NOW),
                Err(OperatorRefusal::Changed { current: 100 })
            );
        }
        let resolved = decide_operator(Some(&r), 100, &resolve(), NOW).unwrap();
        assert_eq!(
            decide_operator(
                Some(&resolved.record),
                100,
                &OperatorAction::Purge {
                    keep_tombstone: true
                },
                NOW
            ),
            Err(OperatorRefusal::Changed { current: 101 })
        );
    }

    #[test]
    fn purge_erases_the_response_and_keeps_a_tombstone_unless_told() {
        let r = record(RecordState::Completed, 0);
        let kept = decide_operator(
            Some(&r),
            100,
            &OperatorAction::Purge {
                keep_tombstone: true,
            },
            NOW,
        )
        .unwrap();
        assert_eq!(kept.record.response, None);
        assert_eq!(kept.state, EffectiveState::Tombstone);
        assert_eq!(kept.record.effective(NOW), kept.state);
        assert_eq!(
            kept.record.fingerprint, r.fingerprint,
            "key-reused still detected"
        );
        let gone = decide_operator(
            Some(&r),
            100,
            &OperatorAction::Purge {
                keep_tombstone: false,
            },
            NOW,
        )
        .unwrap();
        assert_eq!(gone.record.response, None);
        assert_eq!(gone.state, EffectiveState::Absent);
        let live = record(RecordState::InFlight, 900);
        assert!(matches!(
            decide_operator(
                Some(&live),
                100,
                &OperatorAction::Purge {
                    keep_tombstone: false
                },
                NOW
            ),
            Err(OperatorRefusal::WrongState { .. })
        ));
        let expired_claim = decide_operator(
            Some(&record(RecordState::InFlight, 400)),
            100,
            &OperatorAction::Purge {
                keep_tombstone: true,
            },
            NOW,
        )
        .unwrap();
        assert_eq!(expired_claim.record.state, RecordState::OutcomeUnknown);
        assert_eq!(expired_claim.state, EffectiveState::Tombstone);
    }

    #[test]
    fn nothing_to_act_on_is_not_found() {
        assert_eq!(
            decide_operator(None, 1, &OperatorAction::Release, NOW),
            Err(OperatorRefusal::NotFound)
        );
        let released = record(RecordState::Released, 0);
        assert_eq!(
            decide_operator(Some(&released), 100, &OperatorAction::Release, NOW),
            Err(OperatorRefusal::NotFound)
        );
    }
}
