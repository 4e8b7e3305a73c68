//! The in-memory engine: for tests and single-process use. Nothing survives
//! the process.

use super::*;
use crate::{Store, StoreError, SweepReport};
use foldhash::quality::RandomState;
use idem_core::RecordId;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

const SHARDS: usize = 64;

/// One lock's worth of records. A slot is `None` once its record is gone.
type Shard = Mutex<HashMap<RecordId, Option<Record>, RandomState>>;

/// Records in sharded maps; each operation holds one shard's lock for the
/// length of a map lookup, never across an await.
pub struct MemoryStore {
    // foldhash, seeded per process: far cheaper than SipHash on the hot
    // path, and keys are still not predictable to a client.
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(RandomState::default())))
                .collect(),
            hasher: RandomState::default(),
        }
    }

    fn with_slot<T>(&self, id: &RecordId, f: impl FnOnce(&mut Option<Record>) -> T) -> T {
        let shard = &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS];
        // A poisoned shard only means another thread panicked mid-update of
        // plain data; the map itself is still consistent.
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        // Existing keys are updated in place (no rehash, no key clone).
        if let Some(slot) = map.get_mut(id) {
            return f(slot);
        }
        let mut slot = None;
        let out = f(&mut slot);
        if slot.is_some() {
            map.insert(id.clone(), slot);
        }
        out
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        Ok(self.with_slot(&claim.id, |slot| apply_claim(slot, &claim)))
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
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
        Ok(self.with_slot(id, |slot| slot.clone()))
    }

    async fn sweep(&self, now: Timestamp, limit: usize) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        for shard in self.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, slot| {
                let Some(r) = slot else {
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
            if report.deleted + report.tombstoned >= limit {
                break;
            }
        }
        Ok(report)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn engine(&self) -> &'static str {
        "memory"
    }
}
