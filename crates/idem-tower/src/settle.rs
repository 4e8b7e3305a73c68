//! Claims the store did not confirm.
//!
//! A claim whose reply is lost (the store timed out, a proxy dropped the
//! answer) may have committed anyway. Left alone, such a claim holds the
//! key until its lease runs out and then reads `outcome-unknown` for the
//! whole retention, although nothing was forwarded. Each claim carries an
//! attempt nonce ([`Claim::attempt`]); repeating the claim with the same
//! attempt tells whether it committed, because the store recognises its own
//! attempt and answers `Claimed` with the same token.
//!
//! So the layer settles: first inline, a few quick repeats before it
//! answers; if the store is still silent, it answers 503 "not forwarded,
//! retry", remembers the attempt here, and a background task repeats the
//! claim until the store answers and releases what it finds. A retry of the
//! same request reaching this process first adopts the claim instead (same
//! fingerprint) and executes it: the client's retry is what was meant to
//! happen. One of the two takes the entry out of the map before it acts, so
//! the settler never releases a claim a retry is executing.

use crate::layer::Shared;
use idem_core::{Fingerprint, RecordId};
use idem_store::{Claim, ClaimOutcome, Write};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A claim sent to the store and not confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsettled {
    pub(crate) attempt: u64,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) reclaim_unknown: bool,
}

/// The unsettled claims of this process, by key.
#[derive(Default)]
pub(crate) struct Settlements {
    map: Mutex<HashMap<RecordId, Unsettled>>,
}

impl Settlements {
    /// Takes the unsettled claim on `id`, if any: the caller now owns its
    /// settlement.
    pub(crate) fn take(&self, id: &RecordId) -> Option<Unsettled> {
        self.lock().remove(id)
    }

    fn put_back(&self, id: &RecordId, unsettled: Unsettled) {
        self.lock().entry(id.clone()).or_insert(unsettled);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RecordId, Unsettled>> {
        // A poisoned lock only means a panic during an insert or remove;
        // the map is still sound.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The same claim again, with fresh times.
fn repeat(shared: &Shared, id: &RecordId, unsettled: &Unsettled) -> Claim {
    Claim::new(
        id.clone(),
        unsettled.fingerprint,
        shared.clock.now(),
        &shared.config.retention,
        unsettled.reclaim_unknown,
    )
    .with_attempt(unsettled.attempt)
}

/// How long a request waits for its unconfirmed claim to be settled
/// before it is answered: a store that stays silent longer is settled in
/// the background.
const INLINE_SETTLING: Duration = Duration::from_secs(1);

/// Repeats an unconfirmed claim a few times, quickly, before the client is
/// answered. `Ok` once the store answers (the caller uses the answer as the
/// claim's); `Err` if it stays silent for [`INLINE_SETTLING`].
pub(crate) async fn inline(
    shared: &Shared,
    id: &RecordId,
    unsettled: &Unsettled,
) -> Result<ClaimOutcome, idem_store::StoreError> {
    let repeats = async {
        let mut pause = Duration::from_millis(20);
        loop {
            tokio::time::sleep(pause).await;
            if let Ok(outcome) = shared.store.claim(repeat(shared, id, unsettled)).await {
                return outcome;
            }
            pause = (pause * 3).min(Duration::from_millis(300));
        }
    };
    tokio::time::timeout(INLINE_SETTLING, repeats)
        .await
        .map_err(|_| {
            idem_store::StoreError::new(
                shared.store.engine(),
                "claim",
                format!("no answer while settling an unconfirmed claim for {INLINE_SETTLING:?}"),
            )
        })
}

/// Hands an unconfirmed claim to a background task that releases it once
/// the store answers (unless a retry adopts it first).
pub(crate) fn in_background(shared: Arc<Shared>, id: RecordId, unsettled: Unsettled) {
    shared.settlements.put_back(&id, unsettled);
    metrics::gauge!(crate::metrics::UNSETTLED).increment(1.0);
    // Detached, not an execution: shutdown does not wait for a store that
    // may stay down (the claim then reads outcome-unknown after its lease).
    tokio::spawn(async move {
        let give_up = shared.clock.now().plus(shared.config.retention.retention);
        let mut pause = Duration::from_millis(100);
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            // Whoever takes the entry settles it; a retry may have.
            let Some(unsettled) = shared.settlements.take(&id) else {
                break;
            };
            match settle(&shared, &id, &unsettled).await {
                Ok(()) => break,
                Err(e) if shared.clock.now() >= give_up => {
                    tracing::error!(key = %id.key, error = %e, "gave up settling an unconfirmed claim: the store stayed unavailable for the whole retention");
                    break;
                }
                Err(e) => {
                    tracing::debug!(key = %id.key, error = %e, "store still unavailable; claim not settled yet");
                    shared.settlements.put_back(&id, unsettled);
                }
            }
        }
        metrics::gauge!(crate::metrics::UNSETTLED).decrement(1.0);
    });
}

/// Learns whether the claim committed, and if it did, gives the key back:
/// nothing was forwarded under it.
async fn settle(
    shared: &Shared,
    id: &RecordId,
    unsettled: &Unsettled,
) -> Result<(), idem_store::StoreError> {
    match shared.store.claim(repeat(shared, id, unsettled)).await? {
        ClaimOutcome::Claimed { token } => match shared.store.release(id, token).await? {
            Write::Written => {
                tracing::info!(key = %id.key, "unconfirmed claim settled: it had committed, nothing was forwarded, released");
                shared.waiters.wake(id);
                Ok(())
            }
            Write::Fenced => Ok(()),
        },
        // Another request holds or finished the key: not ours to settle.
        ClaimOutcome::Existing { .. } => {
            tracing::info!(key = %id.key, "unconfirmed claim settled: it had not committed");
            Ok(())
        }
    }
}

/// Settles `unsettled` for a request with `fingerprint` that just arrived
/// for the same key. `Some(token)`: the claim had committed with the same
/// request, which now executes under it. `None`: nothing of ours holds the
/// key any more (or the store is still down: the background task goes on).
pub(crate) async fn adopt(
    shared: &Arc<Shared>,
    id: &RecordId,
    unsettled: Unsettled,
    fingerprint: &Fingerprint,
) -> Option<u64> {
    let outcome = match shared.store.claim(repeat(shared, id, &unsettled)).await {
        Ok(outcome) => outcome,
        Err(_) => {
            shared.settlements.put_back(id, unsettled);
            return None;
        }
    };
    match outcome {
        ClaimOutcome::Claimed { token } if unsettled.fingerprint == *fingerprint => Some(token),
        ClaimOutcome::Claimed { token } => {
            // A different request reuses the key: free it first, then the
            // new request claims (and executes) as usual.
            if !matches!(shared.store.release(id, token).await, Ok(Write::Written)) {
                shared.settlements.put_back(id, unsettled);
            }
            None
        }
        ClaimOutcome::Existing { .. } => None,
    }
}
