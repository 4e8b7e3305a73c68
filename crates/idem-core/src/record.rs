//! Records and their states (contract section 3).

use crate::{Fingerprint, IdempotencyKey, Scope, Timestamp};
use bytes::Bytes;
use std::sync::Arc;

/// A record's identity: (scope, key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    /// The tenant.
    pub scope: Scope,
    /// The client's key.
    pub key: IdempotencyKey,
}

/// The state a store persists. What a reader sees also depends on the time:
/// see [`Record::effective`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// Claimed; the owner is executing and renews `lease_until`.
    InFlight,
    /// The response is stored.
    Completed,
    /// Sent, but no response was obtained.
    OutcomeUnknown,
    /// The owner gave the claim back: nothing was executed. Kept (instead of
    /// deleted) so the next claim's fencing token is larger than this one's.
    Released,
}

impl RecordState {
    /// The stable number engines persist.
    pub fn code(self) -> i64 {
        match self {
            RecordState::InFlight => 1,
            RecordState::Completed => 2,
            RecordState::OutcomeUnknown => 3,
            RecordState::Released => 4,
        }
    }

    /// The inverse of [`RecordState::code`].
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => RecordState::InFlight,
            2 => RecordState::Completed,
            3 => RecordState::OutcomeUnknown,
            4 => RecordState::Released,
            _ => return None,
        })
    }
}

/// A stored upstream response, with the replay deny-list already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers in order, names lower case.
    pub headers: Vec<(String, Bytes)>,
    /// The body, or `None` when it was over the storage limit and cannot be
    /// replayed.
    pub body: Option<Bytes>,
}

/// One (scope, key) record as a store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Identity.
    pub id: RecordId,
    /// The fingerprint of the request that claimed it.
    pub fingerprint: Fingerprint,
    /// Persisted state.
    pub state: RecordState,
    /// Fencing token of the current (or last) claim.
    pub token: u64,
    /// While in flight: when the lease runs out unless renewed.
    pub lease_until: Timestamp,
    /// When the stored response stops being replayed (then a tombstone).
    pub expires_at: Timestamp,
    /// When the tombstone goes too (then the key is free again).
    pub tombstone_until: Timestamp,
    /// Set once completed.
    pub response: Option<StoredResponse>,
    /// When the current claim was made.
    pub claimed_at: Timestamp,
    /// The attempt nonce of the current (or last) claim: a claim retried
    /// with the same nonce (its reply was lost after the store committed
    /// it) recognises the record as its own (see
    /// [`decide_claim`](crate::decide_claim)). 0 means unknown, e.g. a record
    /// written before attempts were stored; it never matches.
    pub attempt: u64,
    /// The instance that made the current (or last) claim, as it names
    /// itself (a gateway's `instance`, by default `hostname:pid`): who holds
    /// the lease, for an operator asking where a stuck request went. `None`
    /// for a claim that gave no name, or a record written before holders
    /// were stored.
    pub holder: Option<Arc<str>>,
}

/// What a record means at a given instant: the persisted state with the
/// clock applied (expiry on read, lease expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectiveState {
    /// Never seen, released, or past the tombstone: free to claim.
    Absent,
    /// Claimed and the lease still holds.
    InFlight,
    /// The stored response is replayable.
    Completed,
    /// Sent without an outcome, or the owner's lease ran out.
    OutcomeUnknown,
    /// Past retention, inside tombstone retention.
    Tombstone,
}

impl Record {
    /// The state a request arriving at `now` must be answered from.
    pub fn effective(&self, now: Timestamp) -> EffectiveState {
        if self.state == RecordState::Released {
            return EffectiveState::Absent;
        }
        // A claim whose owner still renews its lease is in flight however
        // long it runs: retention only starts counting once it has an
        // outcome, so a slow execution can never be claimed a second time.
        if self.is_live_claim(now) {
            return EffectiveState::InFlight;
        }
        if now >= self.tombstone_until {
            return EffectiveState::Absent;
        }
        if now >= self.expires_at {
            return EffectiveState::Tombstone;
        }
        match self.state {
            RecordState::InFlight | RecordState::OutcomeUnknown => EffectiveState::OutcomeUnknown,
            RecordState::Completed => EffectiveState::Completed,
            RecordState::Released => EffectiveState::Absent,
        }
    }

    /// In flight with a lease that has not run out.
    pub fn is_live_claim(&self, now: Timestamp) -> bool {
        self.state == RecordState::InFlight && now < self.lease_until
    }
}
