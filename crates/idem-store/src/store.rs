use crate::StoreError;
use idem_core::operator::{Operated, OperatorAction, OperatorRefusal};
use idem_core::{
    decision::ExistingOutcome, Fingerprint, Record, RecordId, Retention, StoredResponse, Timestamp,
};
use std::sync::Arc;

/// A claim attempt: everything the atomic claim step needs. Times are
/// computed by the caller from its clock and [`Retention`]. The memory and
/// SQLite engines decide on them as given; PostgreSQL and Redis (with
/// [`StoreClock::Server`], their default) read their own clock in the same
/// atomic step and move every horizon by as much as that clock differs from
/// `now`, so the horizons are "store time plus the durations the caller
/// meant".
#[derive(Debug, Clone)]
pub struct Claim {
    /// (scope, key).
    pub id: RecordId,
    /// The request's fingerprint.
    pub fingerprint: Fingerprint,
    /// The caller's clock reading.
    pub now: Timestamp,
    /// The lease of the new claim.
    pub lease_until: Timestamp,
    /// Provisional retention of the claim itself (reset on completion).
    pub expires_at: Timestamp,
    /// Provisional tombstone horizon (reset on completion).
    pub tombstone_until: Timestamp,
    /// The route's `upstream_dedupes`: an `outcome-unknown` record may be
    /// claimed again.
    pub reclaim_unknown: bool,
    /// This claim's nonce, stored with the record it wins. Sending the same
    /// claim again (its reply was lost after the store committed it) finds
    /// the record in flight under the same attempt and answers
    /// [`ClaimOutcome::Claimed`] with the same token, instead of "in
    /// progress" (see [`idem_core::decide_claim`]). Nonzero: 0 is the
    /// attempt of records written before attempts were stored, and never
    /// matches.
    pub attempt: u64,
    /// The name of the instance making the claim, stored as the record's
    /// [`holder`](Record::holder). `None` stores no name.
    pub holder: Option<Arc<str>>,
}

impl Claim {
    /// A claim at `now` with the lease and retention of `retention`, and a
    /// fresh random (nonzero) [`attempt`](Claim::attempt). Keep the value
    /// (or its attempt, see [`Claim::with_attempt`]) to retry the claim when
    /// the store's answer is lost.
    pub fn new(
        id: RecordId,
        fingerprint: Fingerprint,
        now: Timestamp,
        retention: &Retention,
        reclaim_unknown: bool,
    ) -> Self {
        let expires_at = now.plus(retention.retention);
        Claim {
            id,
            fingerprint,
            now,
            lease_until: now.plus(retention.lease),
            expires_at,
            tombstone_until: expires_at.plus(retention.tombstone_retention),
            reclaim_unknown,
            attempt: rand::random_range(1..=u64::MAX),
            holder: None,
        }
    }

    /// This claim under another attempt nonce: for a caller that retries a
    /// claim with fresh times (a new `Claim::new` at a later `now`) and must
    /// still be recognised as the claim it sent before. An attempt of 0
    /// never matches a stored record (the claim then behaves like one whose
    /// earlier tries are unknown).
    ///
    /// ```
    /// use idem_core::*;
    /// use idem_store::Claim;
    /// let id = RecordId { scope: Scope::global(), key: IdempotencyKey::parse(b"k").unwrap() };
    /// let fp = Fingerprint::compute(&FingerprintInput {
    ///     method: "POST", path: "/", query: None, content_type: None, extra_headers: &[], body: b"",
    /// });
    /// let first = Claim::new(id.clone(), fp, Timestamp(1_000), &Retention::default(), false);
    /// let retry = Claim::new(id, fp, Timestamp(4_000), &Retention::default(), false)
    ///     .with_attempt(first.attempt);
    /// assert_eq!(retry.attempt, first.attempt);
    /// ```
    #[must_use]
    pub fn with_attempt(mut self, attempt: u64) -> Self {
        self.attempt = attempt;
        self
    }

    /// This claim made by the instance named `holder` (see
    /// [`Record::holder`]).
    #[must_use]
    pub fn with_holder(mut self, holder: Option<Arc<str>>) -> Self {
        self.holder = holder;
        self
    }

    /// The in-flight record this claim writes when it wins.
    pub fn to_record(&self, token: u64) -> Record {
        Record {
            id: self.id.clone(),
            fingerprint: self.fingerprint,
            state: idem_core::RecordState::InFlight,
            token,
            lease_until: self.lease_until,
            expires_at: self.expires_at,
            tombstone_until: self.tombstone_until,
            response: None,
            claimed_at: self.now,
            attempt: self.attempt,
            holder: self.holder.clone(),
        }
    }
}

/// The result of a claim attempt.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// The caller owns the key and must execute, then complete, mark
    /// unknown, or release with this token.
    Claimed {
        /// The claim's fencing token.
        token: u64,
    },
    /// The key is taken; answer from the record.
    Existing {
        /// How to answer.
        outcome: ExistingOutcome,
        /// The record as stored (the response for a replay).
        record: Box<Record>,
    },
}

/// Whether an owner's write (completion, release, renewal) was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Write {
    /// Applied.
    Written,
    /// Refused: the token no longer matches a record in flight (a newer
    /// owner holds the key, or it was already finished).
    Fenced,
}

/// A completion: the response to store and its retention.
#[derive(Debug, Clone)]
pub struct Completion {
    /// What to replay (deny-listed headers already removed).
    pub response: StoredResponse,
    /// The caller's clock reading.
    pub now: Timestamp,
    /// Replay until.
    pub expires_at: Timestamp,
    /// Tombstone until.
    pub tombstone_until: Timestamp,
}

impl Completion {
    /// A completion at `now` with `retention`'s horizons.
    pub fn new(response: StoredResponse, now: Timestamp, retention: &Retention) -> Self {
        let expires_at = now.plus(retention.retention);
        Completion {
            response,
            now,
            expires_at,
            tombstone_until: expires_at.plus(retention.tombstone_retention),
        }
    }
}

/// Whose clock a networked engine (PostgreSQL, Redis) decides leases and
/// retention on.
///
/// With [`StoreClock::Server`] (the default) each operation reads the
/// server's clock in the same atomic step (inside the statement or script
/// it already sends: no extra round trip) and moves the caller's horizons
/// by the difference between that reading and the caller's `now`, so
/// gateways whose clocks disagree still agree on every lease and horizon;
/// a sweep uses the server's clock alone. The memory and SQLite engines
/// always use the callers' readings (the layer hands them a monotonic
/// clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoreClock {
    /// The store server's clock.
    #[default]
    Server,
    /// The callers' readings, exactly as passed (what the memory and
    /// SQLite engines do). For tests that move time by passing readings;
    /// in production, gateways whose clocks differ by more than a lease
    /// disagree about it.
    Caller,
}

/// Which waiting records [`Store::list`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsettled {
    /// Records that read `outcome-unknown`: marked so, or in flight with a
    /// lease that ran out (not yet past retention).
    OutcomeUnknown,
    /// Records in flight whose lease still holds.
    InFlight,
}

impl Unsettled {
    /// Whether `record`, read at `now`, is in this state.
    pub fn holds(self, record: &Record, now: Timestamp) -> bool {
        record.effective(now) == self.state()
    }

    /// The effective state this is.
    pub fn state(self) -> idem_core::EffectiveState {
        match self {
            Unsettled::OutcomeUnknown => idem_core::EffectiveState::OutcomeUnknown,
            Unsettled::InFlight => idem_core::EffectiveState::InFlight,
        }
    }
}

/// Where a listing resumes: the last record of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// Its claim time.
    pub claimed_at: Timestamp,
    /// Its identity.
    pub id: RecordId,
}

impl ListCursor {
    /// The cursor after `record`.
    pub fn after(record: &Record) -> Self {
        ListCursor {
            claimed_at: record.claimed_at,
            id: record.id.clone(),
        }
    }

    /// Whether `record` comes strictly after this cursor in listing order
    /// (claim time, scope, key).
    pub fn precedes(&self, record: &Record) -> bool {
        (record.claimed_at, &record.id) > (self.claimed_at, &self.id)
    }
}

/// A [`Store::list`] query.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Which records.
    pub state: Unsettled,
    /// Resume after this record (`None`: from the oldest).
    pub after: Option<ListCursor>,
    /// At most this many records.
    pub limit: usize,
    /// The caller's clock reading.
    pub now: Timestamp,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Completed records past retention whose response was dropped.
    pub tombstoned: usize,
    /// Records past their tombstone horizon (or released) that were deleted.
    pub deleted: usize,
}

/// The record store. Each operation is atomic; writes by an owner are
/// fenced by the token its claim returned.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Atomically claims the key or reports the record that holds it
    /// (applying [`idem_core::decide_claim`]).
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError>;

    /// Extends the lease of an in-flight claim to `lease_until`, computed
    /// by the caller from its clock reading `now` (engines on the store's
    /// clock keep the lease's distance from `now`, see [`StoreClock`]). The
    /// lease never moves back; retention and tombstone horizons move with
    /// it.
    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Write, StoreError>;

    /// Stores the response of an in-flight claim.
    async fn complete(
        &self,
        id: &RecordId,
        token: u64,
        completion: Completion,
    ) -> Result<Write, StoreError>;

    /// Records that the request was sent but no outcome was obtained.
    async fn mark_unknown(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
    ) -> Result<Write, StoreError>;

    /// Gives the claim back: nothing was executed, the next request with the
    /// key executes afresh.
    async fn release(&self, id: &RecordId, token: u64) -> Result<Write, StoreError>;

    /// The record as stored, if any (expiry is for the caller to apply with
    /// [`Record::effective`]).
    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError>;

    /// Drops responses past retention and deletes records past their
    /// tombstone, at most `limit` records per call. Engines on the store's
    /// clock ([`StoreClock::Server`]) ignore `now` and use their own.
    async fn sweep(&self, now: Timestamp, limit: usize) -> Result<SweepReport, StoreError>;

    /// Applies an operator's action ([`idem_core::operator`]) to the record
    /// under `id`, fenced by the `token` the operator read: the engine reads
    /// the record, applies [`idem_core::operator::decide_operator`] and
    /// writes its answer in one atomic step, and returns the record as
    /// written (the response included) with the state it reads as at the
    /// clock the action was decided at. `now` is the caller's clock
    /// reading; engines on the store's clock ([`StoreClock::Server`]) decide
    /// at their own, so read the state from the answer, not at `now`.
    async fn operate(
        &self,
        id: &RecordId,
        token: u64,
        action: OperatorAction,
        now: Timestamp,
    ) -> Result<Result<Operated, OperatorRefusal>, StoreError>;

    /// The records that wait for an outcome, oldest claim first: those that
    /// read as `query.state` at the store's clock (the caller's `now` on
    /// engines that use it), ordered by (claim time, scope, key), strictly
    /// after `query.after`, at most `query.limit`. Responses are not
    /// loaded (records in these states have none).
    async fn list(&self, query: ListQuery) -> Result<Vec<Record>, StoreError>;

    /// Checks that the engine answers (for `/health`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Resolves when the record under `id` may have changed (completed,
    /// released, marked unknown), or after `timeout`, whichever is first.
    /// Requests waiting on a key in flight (`in_flight = wait`) call this
    /// between reads, so an engine shared by several gateways can wake them
    /// when another instance finishes the key (LISTEN/NOTIFY, pub/sub).
    ///
    /// The default just sleeps: waiters then poll, which is always correct,
    /// only slower. Spurious wake-ups are fine; callers re-read the record.
    async fn changed(&self, id: &RecordId, timeout: std::time::Duration) {
        let _ = id;
        tokio::time::sleep(timeout).await;
    }

    /// The engine's name, e.g. `sqlite`, for logs and metrics.
    fn engine(&self) -> &'static str;
}
