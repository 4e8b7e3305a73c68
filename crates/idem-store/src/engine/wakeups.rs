//! Wake-ups across gateways for requests that wait on a key in flight
//! (`in_flight = wait`), shared by the PostgreSQL and Redis engines.
//!
//! One subscriber task per store (LISTEN on PostgreSQL, pub/sub on Redis),
//! started by the first wait, feeds a registry of the records that local
//! requests wait on. A waiter:
//!
//! 1. registers its record here, and waits until the subscriber listens;
//! 2. arms its wake-up, then marks the record as waited on in the store, in
//!    the same atomic step that checks the record is still in flight;
//! 3. sleeps until the subscriber delivers the record's announcement (or
//!    the caller's timeout).
//!
//! The owner's completion, release or mark-unknown announces the record
//! only when it carries that mark, in the same statement or script that
//! writes it. So a store whose routes never wait sends no announcement at
//! all (a PostgreSQL `NOTIFY` serialises the commits that send one), and
//! a waiter can never miss the announcement its own mark asked for: either
//! the owner's write comes after the mark (and announces), or before (and
//! the mark finds the record no longer in flight and returns at once).
//!
//! When the subscriber loses its connection, announcements may be lost
//! until it listens again: it then wakes every waiter, which re-reads the
//! record. Waiters also poll (the layer calls `changed` with short
//! timeouts), so nothing here is needed for correctness, only for speed.
//! The registry holds one entry per record with local waiters, removed
//! with its last waiter: bounded by the requests waiting right now.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;

/// First pause before the subscriber reconnects; doubled on each failure.
pub(crate) const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest pause between reconnection attempts.
pub(crate) const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Pause before a waiter tries again to mark a record (the store failed).
pub(crate) const MARK_RETRY: Duration = Duration::from_millis(100);
/// How often the subscriber checks its idle connection is alive (a
/// partition that drops packets gives no error otherwise).
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(5);

/// The records local requests wait on, keyed by what the store announces
/// (`K`), and the subscriber's state.
pub(crate) struct Wakeups<K> {
    waiting: Mutex<HashMap<K, Entry>>,
    listening: watch::Sender<bool>,
    subscriber: Mutex<Option<AbortHandle>>,
}

struct Entry {
    notify: Arc<Notify>,
    waiters: usize,
}

impl<K: Hash + Eq + Clone> Wakeups<K> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Wakeups {
            waiting: Mutex::new(HashMap::new()),
            listening: watch::channel(false).0,
            subscriber: Mutex::new(None),
        })
    }

    /// Starts the subscriber with `spawn` unless it runs already.
    pub(crate) fn start(
        self: &Arc<Self>,
        spawn: impl FnOnce(Arc<Self>) -> tokio::task::JoinHandle<()>,
    ) {
        let mut subscriber = lock(&self.subscriber);
        if subscriber.is_none() {
            *subscriber = Some(spawn(self.clone()).abort_handle());
        }
    }

    /// Stops the subscriber (the store is closing).
    pub(crate) fn stop(&self) {
        if let Some(task) = lock(&self.subscriber).take() {
            task.abort();
        }
    }

    /// Waits on `key`: registers it, waits until the subscriber listens,
    /// arms the wake-up, then runs `mark` (which marks the record as waited
    /// on and says whether it is still in flight; retried every
    /// [`MARK_RETRY`] while it fails), and sleeps until the record is
    /// announced. Returns at once when `mark` says the record is no longer
    /// in flight. The caller bounds the whole with its timeout.
    pub(crate) async fn wait<F, Fut>(&self, key: K, mut mark: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool, ()>>,
    {
        let registration = self.register(key);
        let mut listening = self.listening.subscribe();
        if listening.wait_for(|l| *l).await.is_err() {
            return;
        }
        let notified = registration.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        loop {
            match mark().await {
                Ok(true) => break,
                Ok(false) => return,
                Err(()) => tokio::time::sleep(MARK_RETRY).await,
            }
        }
        notified.await;
    }

    fn register(&self, key: K) -> Registration<'_, K> {
        let mut waiting = lock(&self.waiting);
        let entry = waiting.entry(key.clone()).or_insert_with(|| Entry {
            notify: Arc::new(Notify::new()),
            waiters: 0,
        });
        entry.waiters += 1;
        Registration {
            wakeups: self,
            notify: entry.notify.clone(),
            key,
        }
    }

    /// Wakes the waiters on `key` (its announcement arrived).
    pub(crate) fn wake<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(entry) = lock(&self.waiting).get(key) {
            entry.notify.notify_waiters();
        }
    }

    /// Wakes every waiter (announcements may have been lost).
    pub(crate) fn wake_all(&self) {
        for entry in lock(&self.waiting).values() {
            entry.notify.notify_waiters();
        }
    }

    /// Whether the subscriber listens. Becoming true wakes every waiter:
    /// announcements sent while it was away are lost.
    pub(crate) fn set_listening(&self, listening: bool) {
        let was = self.listening.send_replace(listening);
        if listening && !was {
            self.wake_all();
        }
    }

    /// Records with local waiters (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.waiting).len()
    }
}

/// A waiter's place in the registry; leaving removes the entry with its
/// last waiter.
struct Registration<'a, K: Hash + Eq> {
    wakeups: &'a Wakeups<K>,
    notify: Arc<Notify>,
    key: K,
}

impl<K: Hash + Eq> Drop for Registration<'_, K> {
    fn drop(&mut self) {
        let mut waiting = lock(&self.wakeups.waiting);
        if let Some(entry) = waiting.get_mut(&self.key) {
            entry.waiters -= 1;
            if entry.waiters == 0 {
                waiting.remove(&self.key);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pauses before each reconnection attempt: [`RECONNECT_MIN`], doubled
/// on each failure up to [`RECONNECT_MAX`]. A subscriber starts afresh
/// after a connection that worked.
pub(crate) struct ReconnectPauses(backon::ExponentialBackoff);

impl ReconnectPauses {
    pub(crate) fn new() -> Self {
        use backon::BackoffBuilder as _;
        ReconnectPauses(
            backon::ExponentialBuilder::new()
                .with_min_delay(RECONNECT_MIN)
                .with_max_delay(RECONNECT_MAX)
                .without_max_times()
                .build(),
        )
    }

    /// The next pause.
    pub(crate) fn next_pause(&mut self) -> Duration {
        self.0.next().unwrap_or(RECONNECT_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_is_woken_by_its_key_only_once_listening_and_leaves_no_entry() {
        let w: Arc<Wakeups<u64>> = Wakeups::new();
        let waiter = tokio::spawn({
            let w = w.clone();
            async move { w.wait(7, || std::future::ready(Ok(true))).await }
        });
        // Not listening yet: the waiter waits for the subscriber.
        while w.len() == 0 {
            tokio::task::yield_now().await;
        }
        w.set_listening(true);
        // Another key does not wake it; its own does (retry: it may not
        // have armed its wake-up yet when the first wake is sent).
        w.wake(&8);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !waiter.is_finished() {
            assert!(tokio::time::Instant::now() < deadline, "never woken");
            w.wake(&7);
            tokio::task::yield_now().await;
        }
        waiter.await.unwrap();
        assert_eq!(w.len(), 0);
    }

    #[tokio::test]
    async fn a_record_no_longer_in_flight_returns_at_once() {
        let w: Arc<Wakeups<String>> = Wakeups::new();
        w.set_listening(true);
        tokio::time::timeout(
            Duration::from_secs(5),
            w.wait("k".to_owned(), || std::future::ready(Ok(false))),
        )
        .await
        .expect("returns without a wake-up");
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut pauses = ReconnectPauses::new();
        let mut expected = RECONNECT_MIN;
        for _ in 0..8 {
            // backon multiplies by an f32 factor: within a microsecond.
            let pause = pauses.next_pause();
            assert!(
                pause.abs_diff(expected) < Duration::from_micros(1),
                "{pause:?}, expected {expected:?}"
            );
            expected = (expected * 2).min(RECONNECT_MAX);
        }
        assert_eq!(expected, RECONNECT_MAX);
    }
}
