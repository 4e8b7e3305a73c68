//! Helpers shared by the tests of the engines that need a server
//! (PostgreSQL, Redis): skipping (or failing, in CI) when the server is not
//! there, a store wrapper that cleans its namespace up, and a TCP proxy that
//! can cut the connection to the server without touching the server.
#![allow(dead_code)] // each test binary uses its own part

use idem_core::{Record, RecordId, Timestamp};
use idem_store::{Claim, ClaimOutcome, Completion, Store, StoreError, SweepReport, Write};

// Each test binary uses its own part of these.
#[allow(unused_imports)]
pub use idem_testkit::{block_on_thread, chain, poll_until, unavailable, unique_name, Proxy};

/// A store that runs `cleanup` after it is dropped (and closed).
pub struct Cleaned<S: Store> {
    store: Option<S>,
    cleanup: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<S: Store> Cleaned<S> {
    pub fn new(store: S, cleanup: impl FnOnce() + Send + Sync + 'static) -> Self {
        Cleaned {
            store: Some(store),
            cleanup: Some(Box::new(cleanup)),
        }
    }

    fn inner(&self) -> &S {
        self.store.as_ref().expect("present until dropped")
    }
}

impl<S: Store> Drop for Cleaned<S> {
    fn drop(&mut self) {
        drop(self.store.take());
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for Cleaned<S> {
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        self.inner().claim(claim).await
    }
    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
        lease_until: Timestamp,
    ) -> Result<Write, StoreError> {
        self.inner().renew(id, token, lease_until).await
    }
    async fn complete(
        &self,
        id: &RecordId,
        token: u64,
        c: Completion,
    ) -> Result<Write, StoreError> {
        self.inner().complete(id, token, c).await
    }
    async fn mark_unknown(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
    ) -> Result<Write, StoreError> {
        self.inner().mark_unknown(id, token, now).await
    }
    async fn release(&self, id: &RecordId, token: u64) -> Result<Write, StoreError> {
        self.inner().release(id, token).await
    }
    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.inner().get(id).await
    }
    async fn sweep(&self, now: Timestamp, limit: usize) -> Result<SweepReport, StoreError> {
        self.inner().sweep(now, limit).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner().ping().await
    }
    async fn changed(&self, id: &RecordId, timeout: std::time::Duration) {
        self.inner().changed(id, timeout).await
    }
    fn engine(&self) -> &'static str {
        self.inner().engine()
    }
}
