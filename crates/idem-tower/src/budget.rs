//! One budget for the bytes the layer holds in memory: buffered request
//! bodies (to fingerprint them and send them upstream), their canonical
//! JSON while it is computed, and response bodies read to be stored or
//! replayed.
//!
//! A new request reserves before anything is claimed, so when the budget is
//! spent it is refused with 503 `overloaded` and nothing happens. Bytes of a
//! request that was already forwarded (its response, being read to be
//! stored) are counted but never refused: dropping an executed outcome to
//! save memory would let its retry execute a second time. They can push the
//! count past the limit, which then refuses new requests until they are sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The shared count of buffered bytes against a limit.
#[derive(Debug)]
pub(crate) struct BufferBudget {
    limit: usize,
    used: AtomicUsize,
}

impl BufferBudget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(BufferBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// An empty reservation that can grow.
    pub(crate) fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: 0,
        }
    }

    /// Bytes counted now (for metrics and tests).
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_add(&self, n: usize) -> bool {
        let updated = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            });
        if updated.is_ok() {
            metrics::gauge!(crate::metrics::BUFFERED).increment(n as f64);
        }
        updated.is_ok()
    }

    fn force_add(&self, n: usize) {
        // Saturating: a count cannot wrap into "plenty free".
        let before = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_add(n))
            });
        let before = before.unwrap_or_default();
        let added = before.saturating_add(n) - before;
        metrics::gauge!(crate::metrics::BUFFERED).increment(added as f64);
    }

    fn sub(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
        let before = before.unwrap_or_default();
        let taken = before - before.saturating_sub(n);
        metrics::gauge!(crate::metrics::BUFFERED).decrement(taken as f64);
    }
}

/// Bytes held against the budget; given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<BufferBudget>,
    held: usize,
}

impl Reservation {
    /// Holds `n` more bytes if the budget has room.
    #[must_use]
    pub(crate) fn try_grow(&mut self, n: usize) -> bool {
        let ok = self.budget.try_add(n);
        if ok {
            self.held = self.held.saturating_add(n);
        }
        ok
    }

    /// Holds at least `total` bytes in all, if the budget has room.
    #[must_use]
    pub(crate) fn try_hold(&mut self, total: usize) -> bool {
        total <= self.held || self.try_grow(total - self.held)
    }

    /// Holds `n` more bytes whatever the budget says (an executed
    /// request's response must not be dropped).
    pub(crate) fn force_grow(&mut self, n: usize) {
        self.budget.force_add(n);
        self.held = self.held.saturating_add(n);
    }

    /// Gives back all but `keep` bytes.
    pub(crate) fn shrink_to(&mut self, keep: usize) {
        if keep < self.held {
            self.budget.sub(self.held - keep);
            self.held = keep;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.sub(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_refuse_past_the_limit_and_give_back_on_drop() {
        let budget = BufferBudget::new(100);
        let mut a = budget.reservation();
        assert!(a.try_grow(60));
        let mut b = budget.reservation();
        assert!(!b.try_grow(41), "60 + 41 is over 100");
        assert!(b.try_grow(40));
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.try_hold(90), "grows by 50 to hold 90 in all");
        assert!(b.try_hold(10), "already holds more");
        assert_eq!(budget.used(), 90);
        b.shrink_to(5);
        assert_eq!(budget.used(), 5);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn forced_bytes_count_and_block_new_reservations() {
        let budget = BufferBudget::new(10);
        let mut executed = budget.reservation();
        executed.force_grow(usize::MAX);
        let mut new = budget.reservation();
        assert!(!new.try_grow(1));
        drop(executed);
        assert!(new.try_grow(10));
    }

    #[test]
    fn racing_reservations_never_exceed_the_limit() {
        let budget = BufferBudget::new(1000);
        let held: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let budget = budget.clone();
                    s.spawn(move || {
                        let mut r = budget.reservation();
                        let mut got = 0;
                        for _ in 0..100 {
                            if r.try_grow(7) {
                                got += 7;
                            }
                        }
                        (r, got)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: usize = held.iter().map(|(_, got)| got).sum();
        assert!(total <= 1000);
        assert_eq!(total, budget.used());
        assert!(total > 1000 - 7, "room is used up: {total}");
        drop(held);
        assert_eq!(budget.used(), 0);
    }
}
