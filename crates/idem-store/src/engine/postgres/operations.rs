//! The store's operations: a claim, the owner's conditional writes, the
//! sweep, an operator's action and the listing, each on one pooled
//! connection.

use super::listener::{announcement, announcement_hash};
use super::rows::{self, read_record, Body, Corrupt, RowError, RowValues};
use super::{PostgresStore, ENGINE};
use crate::engine::{apply_claim, offset, sweep_action, to_tombstone, SweepAction};
use crate::{
    Claim, ClaimOutcome, Completion, ListQuery, Store, StoreClock, StoreError, SweepReport, Write,
};
use deadpool_postgres::Object;
use idem_core::operator::{decide_operator, Operated, OperatorAction, OperatorRefusal};
use idem_core::{Record, RecordId, Scope, Timestamp};
use std::time::Duration;

/// How often a claim retries when the row it saw vanished (swept) before it
/// could read or lock it. Each retry is caused by a concurrent delete, so
/// more than a couple in a row is not expected.
const CLAIM_ATTEMPTS: usize = 8;

/// Most records one sweep transaction touches.
const SWEEP_CHUNK: usize = 500;

/// Bound on a caller's clock reading used as the store's clock
/// ([`StoreClock::Caller`]): about 36 million years either way, so that
/// adding horizons' distances (at most [`super::MAX_OFFSET`]) and moving
/// them again on renewal stays far inside a bigint.
const CALLER_CLOCK_MAX: i64 = 1 << 60;

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        let clock = self.clock_param(claim.now);
        // `_slot`, when the batch handed it over, is held until the
        // statement is done: claims queued meanwhile then leave together.
        let (claim, _slot, bound) = match &self.batches {
            Some(batches) => match batches.claim(claim, clock).await? {
                Ok(outcome) => return Ok(outcome),
                Err(alone) => (alone.request, alone.slot, alone.bound),
            },
            None => (claim, None, self.options.operation_timeout),
        };
        self.connections
            .run("claim", bound, |client| {
                Box::pin(async move { claim_on(client, &claim, clock).await })
            })
            .await
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Write, StoreError> {
        let extra = Extra::Lease {
            lease: offset(now, lease_until),
            clock: self.clock_param(now),
        };
        let bound = self.options.operation_timeout;
        self.owner_write("renew", rows::RENEW, id, token, extra, bound)
            .await
    }

    async fn complete(
        &self,
        id: &RecordId,
        token: u64,
        completion: Completion,
    ) -> Result<Write, StoreError> {
        let clock = self.clock_param(completion.now);
        let (completion, _slot, bound) = match &self.batches {
            Some(batches) => {
                let token = rows::token_to_sql(token)
                    .map_err(|e| StoreError::new(ENGINE, "complete", e))?;
                let announcement = announcement(&self.namespace, id);
                match batches
                    .complete(id.clone(), token, completion, clock, announcement)
                    .await?
                {
                    Ok(write) => return Ok(write),
                    Err(alone) => (alone.request, alone.slot, alone.bound),
                }
            }
            None => (completion, None, self.options.operation_timeout),
        };
        self.owner_write(
            "complete",
            rows::COMPLETE,
            id,
            token,
            Extra::Completion(Box::new(completion), clock),
            bound,
        )
        .await
    }

    async fn mark_unknown(
        &self,
        id: &RecordId,
        token: u64,
        _now: Timestamp,
    ) -> Result<Write, StoreError> {
        self.owner_write(
            "mark_unknown",
            rows::MARK_UNKNOWN,
            id,
            token,
            Extra::Announce,
            self.options.operation_timeout,
        )
        .await
    }

    async fn release(&self, id: &RecordId, token: u64) -> Result<Write, StoreError> {
        let bound = self.options.operation_timeout;
        self.owner_write("release", rows::RELEASE, id, token, Extra::Announce, bound)
            .await
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let id = id.clone();
        self.connections
            .run("get", self.options.operation_timeout, move |client| {
                Box::pin(async move {
                    let stmt = client.prepare_cached(rows::SELECT).await?;
                    let row = client
                        .query_opt(&stmt, &[&id.scope.as_str(), &id.key.as_str()])
                        .await?;
                    row.map(|row| read_record(&row, 0, id, Body::Load))
                        .transpose()
                })
            })
            .await
    }

    /// With [`StoreClock::Server`] `now` is ignored: the sweep runs at the
    /// database server's clock.
    async fn sweep(&self, now: Timestamp, limit: usize) -> Result<SweepReport, StoreError> {
        let clock = self.clock_param(now);
        self.connections
            .run(
                "sweep",
                self.options.operation_timeout * 10,
                move |client| Box::pin(sweep_on(client, clock, limit)),
            )
            .await
    }

    /// With [`StoreClock::Server`] `now` is ignored: the action is decided
    /// at the database server's clock, read under the row lock.
    async fn operate(
        &self,
        id: &RecordId,
        token: u64,
        action: OperatorAction,
        now: Timestamp,
    ) -> Result<Result<Operated, OperatorRefusal>, StoreError> {
        let clock = self.clock_param(now);
        let announcement = announcement(&self.namespace, id);
        let id = id.clone();
        self.connections
            .run("operate", self.options.operation_timeout, move |client| {
                Box::pin(async move {
                    operate_on(client, &id, token, &action, clock, &announcement).await
                })
            })
            .await
    }

    /// With [`StoreClock::Server`] `query.now` is ignored: states are read
    /// at the database server's clock.
    async fn list(&self, query: ListQuery) -> Result<Vec<Record>, StoreError> {
        let clock = self.clock_param(query.now);
        self.connections
            .run("list", self.options.operation_timeout * 10, move |client| {
                Box::pin(async move { list_on(client, &query, clock).await })
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.connections
            .run("ping", self.options.operation_timeout, |client| {
                Box::pin(async move {
                    client.simple_query("SELECT 1").await?;
                    Ok(())
                })
            })
            .await
    }

    /// Waits for the owner's announcement (LISTEN/NOTIFY, see
    /// docs/stores.md), or `timeout`. The first call starts the LISTEN
    /// connection.
    async fn changed(&self, id: &RecordId, timeout: Duration) {
        let wait = async {
            self.start_listener();
            let hash = announcement_hash(&self.namespace, id);
            self.wakeups.wait(hash, || self.mark_waited(id)).await;
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    fn engine(&self) -> &'static str {
        ENGINE
    }
}

impl PostgresStore {
    /// One fenced owner write, within `bound` (the operation timeout, or
    /// less for a completion that already waited in a batch's queue).
    async fn owner_write(
        &self,
        op: &'static str,
        sql: &'static str,
        id: &RecordId,
        token: u64,
        extra: Extra,
        bound: Duration,
    ) -> Result<Write, StoreError> {
        let token = rows::token_to_sql(token).map_err(|e| StoreError::new(ENGINE, op, e))?;
        let (scope, key) = (id.scope.as_str().to_owned(), id.key.as_str().to_owned());
        let announcement = announcement(&self.namespace, id);
        self.connections
            .run(op, bound, move |client| {
                Box::pin(async move {
                    let stmt = client.prepare_cached(sql).await?;
                    // Renewals return rows updated; the other writes (which
                    // announce) one row: (rows updated, notifications sent).
                    let updated = match &extra {
                        Extra::Lease { lease, clock } => {
                            client
                                .execute(&stmt, &[&scope, &key, &token, lease, clock])
                                .await?
                        }
                        Extra::Announce => {
                            let row = client
                                .query_one(&stmt, &[&scope, &key, &token, &announcement])
                                .await?;
                            u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0)
                        }
                        Extra::Completion(c, clock) => {
                            let (names, values) = rows::header_arrays(&c.response.headers);
                            let status = i32::from(c.response.status);
                            let body = c.response.body.as_deref();
                            // Distances from the caller's reading, added to
                            // the store's clock.
                            let (expires_at, tombstone_until) = (
                                offset(c.now, c.expires_at),
                                offset(c.now, c.tombstone_until),
                            );
                            let row = client
                                .query_one(
                                    &stmt,
                                    &[
                                        &scope,
                                        &key,
                                        &token,
                                        &status,
                                        &names,
                                        &values,
                                        &body,
                                        &expires_at,
                                        &tombstone_until,
                                        &announcement,
                                        clock,
                                    ],
                                )
                                .await?;
                            u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0)
                        }
                    };
                    Ok(if updated == 1 {
                        Write::Written
                    } else {
                        Write::Fenced
                    })
                })
            })
            .await
    }

    /// The `store_now!` parameter of a statement: NULL (the server's
    /// clock), or with [`StoreClock::Caller`] the caller's reading `now`
    /// (bounded, so a horizon's distance added to it cannot overflow).
    fn clock_param(&self, now: Timestamp) -> Option<i64> {
        match self.options.clock {
            StoreClock::Server => None,
            StoreClock::Caller => Some(now.as_millis().clamp(-CALLER_CLOCK_MAX, CALLER_CLOCK_MAX)),
        }
    }
}

/// The values an owner's write sets besides the state.
enum Extra {
    /// A renewal's new lease, as a distance from the caller's reading, and
    /// the clock parameter.
    Lease { lease: i64, clock: Option<i64> },
    /// Release or mark-unknown: nothing but the announcement.
    Announce,
    /// A completion's response and horizons, and the clock parameter.
    Completion(Box<Completion>, Option<i64>),
}

/// Claims `claim.id` (see the module documentation). `clock` is the
/// `store_now!` parameter: NULL for the server's clock.
async fn claim_on(
    client: &mut Object,
    claim: &Claim,
    clock: Option<i64>,
) -> Result<ClaimOutcome, RowError> {
    let (scope, key) = (claim.id.scope.as_str(), claim.id.key.as_str());
    let (version, digest) = (
        i32::from(claim.fingerprint.version),
        &claim.fingerprint.digest[..],
    );
    let (lease, expires, tombstone) = (
        offset(claim.now, claim.lease_until),
        offset(claim.now, claim.expires_at),
        offset(claim.now, claim.tombstone_until),
    );
    let attempt = rows::attempt_to_sql(claim.attempt);
    let holder = claim.holder.as_deref();
    let insert = client.prepare_cached(rows::INSERT_IF_ABSENT).await?;
    let select = client.prepare_cached(rows::SELECT_AT).await?;
    for _ in 0..CLAIM_ATTEMPTS {
        let inserted = client
            .query_opt(
                &insert,
                &[
                    &scope, &key, &version, &digest, &lease, &expires, &tombstone, &attempt,
                    &clock, &holder,
                ],
            )
            .await?;
        if let Some(row) = inserted {
            let token: i64 = row.try_get(0)?;
            let token = u64::try_from(token)
                .map_err(|_| Corrupt(format!("negative fencing token {token}")))?;
            return Ok(ClaimOutcome::Claimed { token });
        }
        // The key is taken. Most often the rule answers from the record as
        // it is (in progress, replay, mismatch...): that answer is the
        // latest committed state, read without a lock, at the store's time
        // read in the same statement.
        let Some(row) = client.query_opt(&select, &[&scope, &key, &clock]).await? else {
            continue; // swept in between: try the insert again
        };
        let mut slot = Some(read_record(&row, 0, claim.id.clone(), Body::Load)?);
        let at_store = at_store_time(claim, row.try_get(rows::COLUMNS)?);
        if let existing @ ClaimOutcome::Existing { .. } = apply_claim(&mut slot, &at_store) {
            return Ok(existing);
        }
        // The rule would claim it again: decide under the row lock, so two
        // gateways cannot both take it over.
        let tx = client.transaction().await?;
        let lock = tx.prepare_cached(rows::SELECT_FOR_UPDATE_AT).await?;
        let Some(row) = tx.query_opt(&lock, &[&scope, &key, &clock]).await? else {
            tx.rollback().await?;
            continue;
        };
        let mut slot = Some(read_record(&row, 0, claim.id.clone(), Body::Load)?);
        let at_store = at_store_time(claim, row.try_get(rows::COLUMNS)?);
        let outcome = apply_claim(&mut slot, &at_store);
        if let ClaimOutcome::Claimed { .. } = outcome {
            let record = slot.as_ref().expect("a claim leaves a record");
            let overwrite = tx.prepare_cached(rows::OVERWRITE).await?;
            tx.execute(&overwrite, &RowValues::of(record)?.params())
                .await?;
        }
        tx.commit().await?;
        return Ok(outcome);
    }
    Err(RowError::Corrupt(Corrupt(format!(
        "the record vanished {CLAIM_ATTEMPTS} times in a row while claiming it"
    ))))
}

/// `claim` as made at the store's clock reading `now`: each horizon keeps
/// its distance from the caller's reading (bounded as the `INSERT` bounds
/// it).
pub(super) fn at_store_time(claim: &Claim, now: i64) -> Claim {
    let now = Timestamp(now);
    Claim {
        now,
        lease_until: now.shifted(offset(claim.now, claim.lease_until)),
        expires_at: now.shifted(offset(claim.now, claim.expires_at)),
        tombstone_until: now.shifted(offset(claim.now, claim.tombstone_until)),
        ..claim.clone()
    }
}

/// Sweeps at most `limit` records in transactions of [`SWEEP_CHUNK`], at
/// the store's clock (read once; `clock` is the `store_now!` parameter).
async fn sweep_on(
    client: &mut Object,
    clock: Option<i64>,
    limit: usize,
) -> Result<SweepReport, RowError> {
    let stmt = client.prepare_cached(rows::NOW).await?;
    let now = Timestamp(client.query_one(&stmt, &[&clock]).await?.try_get(0)?);
    let mut report = SweepReport::default();
    let mut remaining = limit;
    while remaining > 0 {
        let budget = remaining.min(SWEEP_CHUNK);
        let tx = client.transaction().await?;
        let mut found = 0;
        let mut chunk = SweepReport::default();
        // Each query's records are acted on before the next query runs, so
        // a record two queries match is found (and counted) once.
        for sql in rows::SWEEP_QUERIES {
            let want = budget - found;
            if want == 0 {
                break;
            }
            let stmt = tx.prepare_cached(sql).await?;
            let want_sql = i64::try_from(want).unwrap_or(i64::MAX);
            let candidates = tx.query(&stmt, &[&now.as_millis(), &want_sql]).await?;
            found += candidates.len();
            let (mut delete, mut tombstone) = (Keys::default(), Keys::default());
            for row in &candidates {
                let scope: String = row.try_get(0)?;
                let key: String = row.try_get(1)?;
                let id = RecordId {
                    scope: Scope::from_stored(scope.as_str()),
                    key: rows::key_from_stored(&key)?,
                };
                let mut record: Record = read_record(row, 2, id, Body::PresenceOnly)?;
                match sweep_action(&record, now) {
                    SweepAction::Keep => {}
                    SweepAction::Delete => delete.push(scope, key),
                    SweepAction::Tombstone => {
                        to_tombstone(&mut record);
                        // TOMBSTONE_MANY writes what to_tombstone leaves.
                        debug_assert!(record
                            .response
                            .as_ref()
                            .is_none_or(|r| r.body.is_none() && r.headers.is_empty()));
                        tombstone.push(scope, key);
                    }
                }
            }
            if !delete.is_empty() {
                let stmt = tx.prepare_cached(rows::DELETE_MANY).await?;
                chunk.deleted += tx.execute(&stmt, &[&delete.scopes, &delete.keys]).await? as usize;
            }
            if !tombstone.is_empty() {
                let stmt = tx.prepare_cached(rows::TOMBSTONE_MANY).await?;
                chunk.tombstoned += tx
                    .execute(&stmt, &[&tombstone.scopes, &tombstone.keys])
                    .await? as usize;
            }
        }
        tx.commit().await?;
        let touched = chunk.deleted + chunk.tombstoned;
        report.deleted += chunk.deleted;
        report.tombstoned += chunk.tombstoned;
        remaining -= touched.min(remaining);
        if found < budget || touched == 0 {
            break;
        }
    }
    Ok(report)
}

/// Applies an operator's action under the row lock, at the store's clock
/// (`clock` is the `store_now!` parameter), and writes the decided record
/// back whole (see the module documentation).
async fn operate_on(
    client: &mut Object,
    id: &RecordId,
    token: u64,
    action: &OperatorAction,
    clock: Option<i64>,
    announcement: &str,
) -> Result<Result<Operated, OperatorRefusal>, RowError> {
    let (scope, key) = (id.scope.as_str(), id.key.as_str());
    let tx = client.transaction().await?;
    let lock = tx.prepare_cached(rows::SELECT_FOR_UPDATE_AT).await?;
    let Some(row) = tx.query_opt(&lock, &[&scope, &key, &clock]).await? else {
        tx.rollback().await?;
        return Ok(Err(OperatorRefusal::NotFound));
    };
    let record = read_record(&row, 0, id.clone(), Body::Load)?;
    let now = Timestamp(row.try_get(rows::COLUMNS)?);
    let next = match decide_operator(Some(&record), token, action, now) {
        Ok(next) => next,
        Err(refusal) => {
            tx.rollback().await?;
            return Ok(Err(refusal));
        }
    };
    let write = tx.prepare_cached(rows::OPERATOR_WRITE).await?;
    let values = RowValues::of(&next.record)?;
    let mut params = values.params().to_vec();
    params.push(&announcement);
    let row = tx.query_one(&write, &params).await?;
    if row.try_get::<_, i64>(0)? != 1 {
        // The row is locked, so it cannot have gone: treat it as damage
        // rather than claim a write that did not happen.
        return Err(RowError::Corrupt(Corrupt(
            "the locked record was not updated".into(),
        )));
    }
    tx.commit().await?;
    Ok(Ok(next))
}

/// Pages through the unsettled rows after the cursor and keeps those that
/// hold `query.state` at the store's clock (`clock` is the `store_now!`
/// parameter), until `query.limit` records or the end.
async fn list_on(
    client: &mut Object,
    query: &ListQuery,
    clock: Option<i64>,
) -> Result<Vec<Record>, RowError> {
    let mut found = Vec::new();
    if query.limit == 0 {
        return Ok(found);
    }
    let stmt = client.prepare_cached(rows::NOW).await?;
    let now = Timestamp(client.query_one(&stmt, &[&clock]).await?.try_get(0)?);
    let page = client.prepare_cached(rows::LIST_PAGE).await?;
    let mut after: Option<(i64, String, String)> = query.after.as_ref().map(|c| {
        (
            c.claimed_at.as_millis(),
            c.id.scope.as_str().to_owned(),
            c.id.key.as_str().to_owned(),
        )
    });
    // Pages a little larger than what is still wanted: rows of the other
    // unsettled state are skipped in Rust.
    let size = i64::try_from(query.limit.clamp(16, 1_000)).unwrap_or(1_000);
    loop {
        let (at, scope, key) = match &after {
            Some((at, scope, key)) => (Some(*at), Some(scope.as_str()), Some(key.as_str())),
            None => (None, None, None),
        };
        let rows = client.query(&page, &[&at, &scope, &key, &size]).await?;
        let full = rows.len() as i64 == size;
        for row in &rows {
            let scope: String = row.try_get(0)?;
            let key: String = row.try_get(1)?;
            let id = RecordId {
                scope: Scope::from_stored(scope.as_str()),
                key: rows::key_from_stored(&key)?,
            };
            let record = read_record(row, 2, id, Body::Load)?;
            after = Some((record.claimed_at.as_millis(), scope, key));
            if query.state.holds(&record, now) {
                found.push(record);
                if found.len() >= query.limit {
                    return Ok(found);
                }
            }
        }
        if !full {
            return Ok(found);
        }
    }
}

/// (scope, key) pairs as two arrays, for `unnest`.
#[derive(Default)]
struct Keys {
    scopes: Vec<String>,
    keys: Vec<String>,
}

impl Keys {
    fn push(&mut self, scope: String, key: String) {
        self.scopes.push(scope);
        self.keys.push(key);
    }

    fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }
}
