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

use crate::shared::Shared;
use crate::unsettled::Unsettled;
use idem_core::{Fingerprint, RecordId};
use idem_store::{Claim, ClaimOutcome, StoreError, Write};
use std::sync::Arc;
use std::time::Duration;

/// The same claim again, with fresh times.
fn repeat(shared: &Shared, id: &RecordId, unsettled: &Unsettled) -> Claim {
    Claim::new(
        id.clone(),
        unsettled.fingerprint,
        shared.clock.now(),
        &unsettled.retention,
        unsettled.reclaim_unknown,
    )
    .with_attempt(unsettled.attempt)
    .with_holder(Some(shared.config.instance.clone()))
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
) -> Result<ClaimOutcome, StoreError> {
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
            StoreError::new(
                shared.store.engine(),
                "claim",
                format!("no answer while settling an unconfirmed claim for {INLINE_SETTLING:?}"),
            )
        })
}

/// Hands an unconfirmed claim to a background task that releases it once
/// the store answers (unless a retry adopts it first).
pub(crate) fn in_background(shared: Arc<Shared>, id: RecordId, unsettled: Unsettled) {
    if !shared.settlements.add(&id, unsettled) {
        return; // the key's settler is running and takes this one too
    }
    // Detached, not an execution: shutdown does not wait for a store that
    // may stay down (the claim then reads outcome-unknown after its lease).
    tokio::spawn(async move {
        let give_up = shared.clock.now().plus(unsettled.retention.retention);
        let mut pauses =
            crate::clock::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            tokio::time::sleep(pauses.next_pause()).await;
            let Some(slot) = shared.settlements.slot(&id) else {
                break;
            };
            {
                let _turn = slot.turn.lock().await;
                let pending: Vec<Unsettled> = slot.attempts().clone();
                for unsettled in pending {
                    match settle(&shared, &id, &unsettled).await {
                        Ok(()) => slot.settled(unsettled.attempt),
                        Err(e) if shared.clock.now() >= give_up => {
                            tracing::error!(key = %id.key, error = &e as &dyn std::error::Error, "gave up settling an unconfirmed claim: the store stayed unavailable for the whole retention");
                            slot.settled(unsettled.attempt);
                        }
                        Err(e) => {
                            tracing::debug!(key = %id.key, error = &e as &dyn std::error::Error, "store still unavailable; claim not settled yet");
                            break;
                        }
                    }
                }
            }
            if shared.settlements.remove_if_settled(&id) {
                break;
            }
        }
    });
}

/// Learns whether the claim committed, and if it did, gives the key back:
/// nothing was forwarded under it.
async fn settle(shared: &Shared, id: &RecordId, unsettled: &Unsettled) -> Result<(), StoreError> {
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

/// What a request found of this process's unconfirmed claims on its key.
pub(crate) enum Adoption {
    /// One had committed for this very request: it executes under `token`.
    Adopted { token: u64 },
    /// None holds the key (any found are settled): claim as usual.
    NotOurs,
    /// The store is still silent: the request is refused as the first was,
    /// and the settler goes on.
    StoreDown(StoreError),
}

/// Settles this process's unconfirmed claims on `id` for a request with
/// `fingerprint` that just arrived for the same key, waiting for a
/// settling attempt in progress first.
pub(crate) async fn adopt(shared: &Shared, id: &RecordId, fingerprint: &Fingerprint) -> Adoption {
    let Some(slot) = shared.settlements.slot(id) else {
        return Adoption::NotOurs;
    };
    let _turn = slot.turn.lock().await;
    let pending: Vec<Unsettled> = slot.attempts().clone();
    for unsettled in pending {
        let outcome = match shared.store.claim(repeat(shared, id, &unsettled)).await {
            Ok(outcome) => outcome,
            Err(e) => return Adoption::StoreDown(e),
        };
        match outcome {
            ClaimOutcome::Claimed { token } if unsettled.fingerprint == *fingerprint => {
                slot.settled(unsettled.attempt);
                return Adoption::Adopted { token };
            }
            ClaimOutcome::Claimed { token } => {
                // A different request reuses the key: free it first, then
                // the new request claims (and executes) as usual.
                match shared.store.release(id, token).await {
                    Ok(_) => slot.settled(unsettled.attempt),
                    Err(e) => return Adoption::StoreDown(e),
                }
            }
            ClaimOutcome::Existing { .. } => slot.settled(unsettled.attempt),
        }
    }
    Adoption::NotOurs
}
