//! The registry of this process's claims the store did not confirm, by
//! key; [`settle`](crate::settle) acts on them.

use idem_core::{Fingerprint, RecordId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A claim sent to the store and not confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsettled {
    pub(crate) attempt: u64,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) reclaim_unknown: bool,
    /// The windows of the route the claim is on.
    pub(crate) retention: idem_core::Retention,
}

/// The unconfirmed claims on one key (usually one), and the turn that the
/// settler and retries take to act on them.
#[derive(Default)]
pub(crate) struct Slot {
    attempts: Mutex<Vec<Unsettled>>,
    pub(crate) turn: tokio::sync::Mutex<()>,
}

impl Slot {
    pub(crate) fn attempts(&self) -> MutexGuard<'_, Vec<Unsettled>> {
        lock(&self.attempts)
    }

    /// Forgets `attempt`: it is settled.
    pub(crate) fn settled(&self, attempt: u64) {
        let mut attempts = self.attempts();
        let before = attempts.len();
        attempts.retain(|u| u.attempt != attempt);
        let gone = before - attempts.len();
        metrics::gauge!(crate::metrics::UNSETTLED).decrement(gone as f64);
    }
}

/// The unsettled claims of this process, by key.
#[derive(Default)]
pub(crate) struct Settlements {
    slots: Mutex<HashMap<RecordId, Arc<Slot>>>,
}

impl Settlements {
    pub(crate) fn slot(&self, id: &RecordId) -> Option<Arc<Slot>> {
        lock(&self.slots).get(id).cloned()
    }

    /// Records an unconfirmed claim; `true` if the key had none, so a
    /// settler must be started for it.
    pub(crate) fn add(&self, id: &RecordId, unsettled: Unsettled) -> bool {
        let mut slots = lock(&self.slots);
        let fresh = !slots.contains_key(id);
        slots
            .entry(id.clone())
            .or_default()
            .attempts()
            .push(unsettled);
        metrics::gauge!(crate::metrics::UNSETTLED).increment(1.0);
        fresh
    }

    /// Drops the key's slot if nothing is left to settle; `true` if it did.
    /// Under the map's lock, so an [`add`](Self::add) is never lost.
    pub(crate) fn remove_if_settled(&self, id: &RecordId) -> bool {
        let mut slots = lock(&self.slots);
        match slots.get(id) {
            Some(slot) if !slot.attempts().is_empty() => false,
            _ => {
                slots.remove(id);
                true
            }
        }
    }
}

/// A poisoned lock only means a panic while a vector or map was changed
/// in place; what they hold is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
