//! How often, how long and how far apart to retry.

use http::Method;
use rand::Rng;
use std::time::Duration;

/// How the middleware retries one logical operation.
///
/// The defaults suit an interactive API call: at most 5 attempts within 30
/// seconds, backoff from 100 ms doubling up to 10 s with full jitter, keys
/// on POST and PATCH (the methods `idem gateway` covers by default).
///
/// ```
/// use idem_client::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(8)
///     .deadline(Duration::from_secs(60))
///     .attempt_timeout(Duration::from_secs(10))
///     .backoff(Duration::from_millis(200), Duration::from_secs(5))
///     .seed(42); // repeatable jitter, for tests
/// assert_eq!(policy.backoff_ceiling(3), Duration::from_millis(800));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) deadline: Duration,
    pub(crate) attempt_timeout: Option<Duration>,
    base_delay: Duration,
    max_delay: Duration,
    key_methods: Vec<Method>,
    pub(crate) seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            deadline: Duration::from_secs(30),
            attempt_timeout: None,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            key_methods: vec![Method::POST, Method::PATCH],
            seed: None,
        }
    }
}

impl RetryPolicy {
    /// The defaults (see [`RetryPolicy`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts per logical operation, the first one included (at least 1;
    /// 1 turns retrying off).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The total time one logical operation may take, every attempt and
    /// every wait between them included. An attempt still running when it
    /// passes is abandoned, and no retry starts that could not begin
    /// before it.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The longest one attempt may wait for its response head; one that
    /// takes longer is abandoned and retried (with the same key). Off by
    /// default: only the deadline bounds an attempt.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Exponential backoff: before retry `n` (1 for the first retry) the
    /// client waits a uniformly random time between zero and
    /// `min(max, base × 2^(n-1))` ("full jitter"), or the server's
    /// `Retry-After` if that is longer.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base_delay = base;
        self.max_delay = max.max(base);
        self
    }

    /// The methods that get a generated `Idempotency-Key` when the request
    /// has none (default POST and PATCH). A request of another method is
    /// retried only if it is idempotent by definition (GET, HEAD, OPTIONS,
    /// TRACE, PUT, DELETE) or carries a key.
    pub fn key_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.key_methods = methods.into_iter().collect();
        self
    }

    /// Seeds the jitter's random number generator, so that the sequence of
    /// waits repeats (for tests). Keys are never drawn from it: they always
    /// come from the operating system's randomness, so two clients with the
    /// same seed never share a key.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Whether a request of `method` without a key gets a generated one.
    pub(crate) fn keys(&self, method: &Method) -> bool {
        self.key_methods.contains(method)
    }

    /// The upper end of the wait before retry `retry` (1 for the first):
    /// `min(max, base × 2^(retry-1))`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    /// The wait before retry `retry`: full jitter below
    /// [`backoff_ceiling`](Self::backoff_ceiling), at least `retry_after`.
    pub(crate) fn delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let ceiling = self.backoff_ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(rng.random_range(0..=nanos));
        match retry_after {
            Some(server) => server.max(jitter),
            None => jitter,
        }
    }
}

/// Whether a method may be repeated without a key (RFC 9110 section 9.2.2).
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let p = RetryPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(4), Duration::from_millis(800));
        assert_eq!(p.backoff_ceiling(5), Duration::from_secs(1));
        assert_eq!(p.backoff_ceiling(1000), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_below_the_ceiling_and_repeats_with_a_seed() {
        let p = RetryPolicy::default();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..=20)
                .map(|retry| p.delay(retry, None, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert_ne!(a, draw(8));
        for (i, d) in a.iter().enumerate() {
            assert!(
                *d <= p.backoff_ceiling(i as u32 + 1),
                "{d:?} at retry {}",
                i + 1
            );
        }
        // Full jitter spreads over the whole range, not just its top.
        let mut rng = StdRng::seed_from_u64(1);
        let low = (0..200)
            .filter(|_| p.delay(1, None, &mut rng) < Duration::from_millis(50))
            .count();
        assert!((60..=140).contains(&low), "{low} of 200 below half");
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(3);
        let d = p.delay(1, Some(Duration::from_secs(2)), &mut rng);
        assert_eq!(d, Duration::from_secs(2));
        let p = p.backoff(Duration::from_secs(10), Duration::from_secs(10));
        let d = p.delay(1, Some(Duration::ZERO), &mut rng);
        assert!(d <= Duration::from_secs(10));
    }

    #[test]
    fn at_least_one_attempt() {
        assert_eq!(RetryPolicy::default().max_attempts(0).max_attempts, 1);
    }
}
