use idem_core::Timestamp;

/// Where the layer reads the time; injected so tests can be exact.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The instant `d` from now, or (for a duration no clock can add, e.g. a
/// configured "500000000000y") 30 years from now: a deadline must never
/// panic a request.
pub(crate) fn deadline_after(d: std::time::Duration) -> tokio::time::Instant {
    const FAR: std::time::Duration = std::time::Duration::from_secs(30 * 365 * 24 * 3600);
    let now = tokio::time::Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_deadline_past_any_clock_does_not_panic() {
        let far = super::deadline_after(std::time::Duration::MAX);
        assert!(far > tokio::time::Instant::now());
    }
}
