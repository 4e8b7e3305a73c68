//! The in-memory engine: for tests and single-process use. Nothing survives
//! the process.
//!
//! Times are the callers' readings, as passed: one process has one clock,
//! and the layer hands the store a monotonic one.

use super::*;
use crate::{ListQuery, Store, StoreError, StoreFull, SweepReport};
use foldhash::quality::RandomState;
use hashbrown::hash_table::{Entry, HashTable};
use idem_core::operator::{decide_operator, Operated, OperatorAction, OperatorRefusal};
use idem_core::RecordId;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 64;

/// Records a [`MemoryStore::new`] holds at most.
pub const DEFAULT_MAX_RECORDS: usize = 1_000_000;

/// One lock's worth of records, found by the hash of their own id: a map
/// keyed by a copy of it would store every scope and key twice (two more
/// allocations and their bytes per record, for the whole retention).
type Shard = Mutex<HashTable<Slot>>;

/// A record and its id's hash (kept, so the table grows without hashing
/// every id again). The record is `Some` between operations; the `Option`
/// lets the engines' shared `apply_*` rules update it in place.
struct Slot {
    hash: u64,
    record: Option<Record>,
}

/// Records in sharded maps; each operation holds one shard's lock for the
/// length of a table lookup, never across an await.
pub struct MemoryStore {
    // foldhash, seeded per process: far cheaper than SipHash on the hot
    // path, and keys are still not predictable to a client.
    shards: Box<[Shard]>,
    hasher: RandomState,
    /// Entries in all shards, and their budget.
    records: AtomicUsize,
    max_records: usize,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("records", &self.records)
            .field("max_records", &self.max_records)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store that holds at most [`DEFAULT_MAX_RECORDS`] records.
    pub fn new() -> Self {
        Self::with_max_records(DEFAULT_MAX_RECORDS)
    }

    /// An empty store that holds at most `max_records` records; a claim
    /// for a new key past it fails with [`StoreFull`] (see
    /// [`StoreError::is_full`]).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use idem_store::{Claim, MemoryStore, Store};
    /// use idem_core::*;
    /// let store = MemoryStore::with_max_records(1);
    /// let claim = |k: &[u8]| Claim::new(
    ///     RecordId { scope: Scope::global(), key: IdempotencyKey::parse(k).unwrap() },
    ///     Fingerprint::compute(&FingerprintInput { method: "POST", path: "/", query: None,
    ///         content_type: None, extra_headers: &[], body: b"" }),
    ///     Timestamp(0), &Retention::default(), false);
    /// assert!(store.claim(claim(b"a")).await.is_ok());
    /// assert!(store.claim(claim(b"b")).await.unwrap_err().is_full());
    /// assert!(store.claim(claim(b"a")).await.is_ok(), "known keys still answer");
    /// # });
    /// ```
    pub fn with_max_records(max_records: usize) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            hasher: RandomState::default(),
            records: AtomicUsize::new(0),
            max_records,
        }
    }

    fn with_slot<T>(&self, id: &RecordId, f: impl FnOnce(&mut Option<Record>) -> T) -> T {
        match self.with_slot_within_budget(id, f) {
            Ok(out) => out,
            Err((out, _)) => out,
        }
    }

    /// Like `with_slot`, but a new record past the budget is not kept:
    /// `Err` carries what `f` returned, which the caller discards.
    fn with_slot_within_budget<T>(
        &self,
        id: &RecordId,
        f: impl FnOnce(&mut Option<Record>) -> T,
    ) -> Result<T, (T, StoreFull)> {
        let hash = self.hasher.hash_one(id);
        let mut table = self.lock(hash);
        match table.entry(hash, |s| is(s, id), |s| s.hash) {
            Entry::Occupied(mut entry) => {
                let out = f(&mut entry.get_mut().record);
                if entry.get().record.is_none() {
                    entry.remove();
                    self.records.fetch_sub(1, Ordering::AcqRel);
                }
                Ok(out)
            }
            Entry::Vacant(vacant) => {
                let mut record = None;
                let out = f(&mut record);
                if record.is_none() {
                    return Ok(out);
                }
                let reserved =
                    self.records
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n < self.max_records).then_some(n + 1)
                        });
                if reserved.is_err() {
                    return Err((
                        out,
                        StoreFull {
                            max: self.max_records,
                        },
                    ));
                }
                vacant.insert(Slot { hash, record });
                Ok(out)
            }
        }
    }

    /// The shard a hash falls in, locked.
    fn lock(&self, hash: u64) -> MutexGuard<'_, HashTable<Slot>> {
        lock(&self.shards[(hash as usize) % SHARDS])
    }
}

/// Whether the slot holds the record stored under `id`.
fn is(slot: &Slot, id: &RecordId) -> bool {
    slot.record.as_ref().is_some_and(|r| r.id == *id)
}

fn lock(shard: &Shard) -> MutexGuard<'_, HashTable<Slot>> {
    // A poisoned shard only means another thread panicked mid-update of
    // plain data; the table itself is still consistent.
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        self.with_slot_within_budget(&claim.id, |slot| apply_claim(slot, &claim))
            .map_err(|(_, full)| StoreError::new("memory", "claim", full))
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
        _now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Write, StoreError> {
        Ok(self.with_slot(id, |slot| apply_renew(slot, token, lease_until)))
    }

    async fn complete(
        &self,
        id: &RecordId,
        token: u64,
        completion: Completion,
    ) -> Result<Write, StoreError> {
        Ok(self.with_slot(id, |slot| apply_complete(slot, token, completion)))
    }

    async fn mark_unknown(
        &self,
        id: &RecordId,
        token: u64,
        _now: Timestamp,
    ) -> Result<Write, StoreError> {
        Ok(self.with_slot(id, |slot| apply_unknown(slot, token)))
    }

    async fn release(&self, id: &RecordId, token: u64) -> Result<Write, StoreError> {
        Ok(self.with_slot(id, |slot| apply_release(slot, token)))
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let hash = self.hasher.hash_one(id);
        Ok(self
            .lock(hash)
            .find(hash, |s| is(s, id))
            .and_then(|s| s.record.clone()))
    }

    async fn sweep(&self, now: Timestamp, limit: usize) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        for shard in self.shards.iter() {
            let mut table = lock(shard);
            let before = table.len();
            table.retain(|slot| {
                let Some(r) = &mut slot.record else {
                    return false;
                };
                if report.deleted + report.tombstoned >= limit {
                    return true;
                }
                match sweep_action(r, now) {
                    SweepAction::Keep => true,
                    SweepAction::Tombstone => {
                        to_tombstone(r);
                        report.tombstoned += 1;
                        true
                    }
                    SweepAction::Delete => {
                        report.deleted += 1;
                        false
                    }
                }
            });
            self.records
                .fetch_sub(before - table.len(), Ordering::AcqRel);
            if report.deleted + report.tombstoned >= limit {
                break;
            }
        }
        Ok(report)
    }

    async fn operate(
        &self,
        id: &RecordId,
        token: u64,
        action: OperatorAction,
        now: Timestamp,
    ) -> Result<Result<Operated, OperatorRefusal>, StoreError> {
        Ok(self.with_slot(id, |slot| {
            let next = decide_operator(slot.as_ref(), token, &action, now)?;
            *slot = Some(next.record.clone());
            Ok(next)
        }))
    }

    /// Scans every shard: fine for the admin API on one process's store.
    async fn list(&self, query: ListQuery) -> Result<Vec<Record>, StoreError> {
        let mut found = Vec::new();
        for shard in self.shards.iter() {
            let table = lock(shard);
            found.extend(
                table
                    .iter()
                    .filter_map(|s| s.record.as_ref())
                    .filter(|r| query.state.holds(r, query.now))
                    .filter(|r| query.after.as_ref().is_none_or(|c| c.precedes(r)))
                    .cloned(),
            );
        }
        found.sort_by(|a, b| (a.claimed_at, &a.id).cmp(&(b.claimed_at, &b.id)));
        found.truncate(query.limit);
        Ok(found)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn engine(&self) -> &'static str {
        "memory"
    }
}
