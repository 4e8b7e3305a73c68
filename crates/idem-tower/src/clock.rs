use idem_core::Timestamp;

/// Where the layer reads the time; injected so tests can be exact.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock as read when the process first asked, advanced
/// from then on by the monotonic clock.
///
/// Leases and retention are durations, so a step of the wall clock (NTP
/// correcting a drifted host, an operator setting the date) must not move
/// them: a jump forward would make live claims look abandoned
/// (`outcome-unknown`) and a sweeper delete live records; a jump back would
/// stop renewals from extending a lease. Every `SystemClock` in the process
/// shares one anchor, so the layer and the sweeper agree. (PostgreSQL and
/// Redis go further and use the store's own clock for every decision, so
/// gateways on different hosts agree too.)
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        static ANCHOR: std::sync::OnceLock<(Timestamp, std::time::Instant)> =
            std::sync::OnceLock::new();
        let (wall, mono) = ANCHOR.get_or_init(|| (Timestamp::now(), std::time::Instant::now()));
        let elapsed = i64::try_from(mono.elapsed().as_millis()).unwrap_or(i64::MAX);
        Timestamp(wall.as_millis().saturating_add(elapsed))
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

/// Pauses that double from `first` up to `max` and stay there: how the
/// layer retries a store that did not answer and polls a key in flight.
pub(crate) struct Backoff {
    pauses: backon::ExponentialBackoff,
    max: std::time::Duration,
}

impl Backoff {
    pub(crate) fn new(first: std::time::Duration, max: std::time::Duration) -> Self {
        use backon::BackoffBuilder as _;
        let pauses = backon::ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(max)
            .without_max_times()
            .build();
        Backoff { pauses, max }
    }

    /// The next pause.
    pub(crate) fn next_pause(&mut self) -> std::time::Duration {
        self.pauses.next().unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_stay_there() {
        let ms = std::time::Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(500));
        for expected in [ms(100), ms(200), ms(400), ms(500), ms(500), ms(500)] {
            // backon multiplies by an f32 factor: within a microsecond.
            let pause = backoff.next_pause();
            assert!(
                pause.abs_diff(expected) < std::time::Duration::from_micros(1),
                "{pause:?}"
            );
        }
    }

    #[test]
    fn the_system_clock_starts_at_the_wall_clock_and_never_goes_back() {
        let first = SystemClock.now();
        let wall = Timestamp::now();
        assert!(wall.as_millis().abs_diff(first.as_millis()) < 5_000);
        let mut last = first;
        for _ in 0..1000 {
            let now = SystemClock.now();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn a_deadline_past_any_clock_does_not_panic() {
        let far = super::deadline_after(std::time::Duration::MAX);
        assert!(far > tokio::time::Instant::now());
    }
}
