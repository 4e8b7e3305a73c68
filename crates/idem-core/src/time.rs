//! Time as a value: the core never reads a clock, it is handed one reading.

use std::time::Duration;

/// Milliseconds since the Unix epoch. Stores persist this number as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The reading of the system clock. Only callers at the edge (layer,
    /// gateway, store engines' background sweepers) call this.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant moved forward by `d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds from `origin` to `self`: negative when `self` is
    /// earlier. Saturating, so any two readings give an answer.
    ///
    /// ```
    /// use idem_core::Timestamp;
    /// assert_eq!(Timestamp(5).millis_since(Timestamp(8)), -3);
    /// assert_eq!(Timestamp(i64::MAX).millis_since(Timestamp(-1)), i64::MAX);
    /// ```
    pub fn millis_since(self, origin: Timestamp) -> i64 {
        self.0.saturating_sub(origin.0)
    }

    /// This instant moved by `ms` milliseconds (back when negative),
    /// saturating.
    pub fn shifted(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Time from `self` until `later`, zero if `later` is not later.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }
}
