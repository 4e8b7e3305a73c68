//! Wake-ups for requests that wait on a key in flight: in-process when the
//! owner is this process, through [`Store::changed`](idem_store::Store::changed)
//! when it is another instance. Waiters also poll the store, so a missed
//! wake-up costs at most one poll interval.

use idem_core::RecordId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<RecordId, Arc<Notify>>>,
    /// Waiters right now; lets every completion skip the lock when nobody
    /// waits (always, unless a route uses `in_flight = wait`).
    count: AtomicUsize,
}

impl Waiters {
    fn entry(&self, id: &RecordId) -> Arc<Notify> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id.clone()).or_default().clone()
    }

    /// Wakes every waiter on `id` (the owner stored an outcome).
    pub(crate) fn wake(&self, id: &RecordId) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let entry = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(id)
        };
        if let Some(n) = entry {
            n.notify_waiters();
        }
    }

    /// Sleeps until `id` is woken here, the store reports a change (another
    /// instance finished it), or `timeout` passes.
    pub(crate) async fn wait(
        &self,
        store: &dyn idem_store::Store,
        id: &RecordId,
        timeout: Duration,
    ) {
        self.count.fetch_add(1, Ordering::AcqRel);
        let notify = self.entry(id);
        tokio::select! {
            () = notify.notified() => {}
            () = store.changed(id, timeout) => {}
            () = tokio::time::sleep(timeout) => {}
        }
        self.count.fetch_sub(1, Ordering::AcqRel);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Drop the entry once no one else holds it, so the map stays small.
        if map
            .get(id)
            .is_some_and(|n| Arc::ptr_eq(n, &notify) && Arc::strong_count(n) == 2)
        {
            map.remove(id);
        }
    }
}
