//! The knobs of the contract, with the contract's defaults.

use crate::pointer::FingerprintIgnore;
use std::time::Duration;

/// What a request gets while the same key is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlightMode {
    /// 409 `request-in-progress` with `Retry-After`.
    Reject,
    /// Wait up to the bound for the outcome, then replay it (409 if the
    /// bound passes first).
    Wait(Duration),
}

/// How long records live (contract section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long a completed response is replayed. Default 24 h.
    pub retention: Duration,
    /// How long the tombstone outlives it. Default 7 d.
    pub tombstone_retention: Duration,
    /// The lease of a claim; renewed by its owner. Default 30 s.
    pub lease: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            retention: Duration::from_secs(24 * 3600),
            tombstone_retention: Duration::from_secs(7 * 24 * 3600),
            lease: Duration::from_secs(30),
        }
    }
}

/// Statuses that mean "nothing was done, try again": the claim is released
/// instead of storing the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseStatuses(Vec<u16>);

impl Default for ReleaseStatuses {
    fn default() -> Self {
        ReleaseStatuses(vec![408, 425, 429, 502, 503, 504])
    }
}

impl ReleaseStatuses {
    /// A custom list.
    pub fn new(statuses: impl IntoIterator<Item = u16>) -> Self {
        let mut v: Vec<u16> = statuses.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        ReleaseStatuses(v)
    }

    /// Whether a response with this status releases the claim.
    pub fn releases(&self, status: u16) -> bool {
        self.0.binary_search(&status).is_ok()
    }

    /// The statuses, sorted.
    pub fn as_slice(&self) -> &[u16] {
        &self.0
    }
}

/// The path the gateway publishes its idempotency policy at by default
/// (RFC 8615 well-known URI).
pub const POLICY_PATH: &str = "/.well-known/idempotency";

/// The per-route part of the contract the layer applies.
///
/// The `Option` fields override the layer's top-level value for this route
/// when set; `None` falls back to it. The lease stays one value for the
/// whole layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Without a key: 400 `missing-key` (true) or forward unprotected.
    pub require_key: bool,
    /// What a duplicate gets while the first is executing.
    pub in_flight: InFlightMode,
    /// The upstream honours the key itself, so an `outcome-unknown` record
    /// may be forwarded again with the same key.
    pub upstream_dedupes: bool,
    /// How long a completed response is replayed on this route.
    pub retention: Option<Duration>,
    /// How long its tombstone outlives it on this route.
    pub tombstone_retention: Option<Duration>,
    /// Statuses that release the claim on this route (replacing the
    /// layer's list, not added to it).
    pub release_statuses: Option<ReleaseStatuses>,
    /// Extra request headers in this route's fingerprint (replacing the
    /// layer's list).
    pub fingerprint_headers: Option<Vec<http::HeaderName>>,
    /// JSON members left out of this route's fingerprint (replacing the
    /// layer's list).
    pub fingerprint_ignore: Option<FingerprintIgnore>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            require_key: false,
            in_flight: InFlightMode::Reject,
            upstream_dedupes: false,
            retention: None,
            tombstone_retention: None,
            release_statuses: None,
            fingerprint_headers: None,
            fingerprint_ignore: None,
        }
    }
}

impl Policy {
    /// `defaults` with this route's retention windows in place of theirs
    /// (the lease is always the default's).
    ///
    /// ```
    /// use idem_core::{Policy, Retention};
    /// use std::time::Duration;
    /// let policy = Policy { retention: Some(Duration::from_secs(60)), ..Policy::default() };
    /// let r = policy.retention_over(&Retention::default());
    /// assert_eq!(r.retention, Duration::from_secs(60));
    /// assert_eq!(r.tombstone_retention, Retention::default().tombstone_retention);
    /// ```
    pub fn retention_over(&self, defaults: &Retention) -> Retention {
        Retention {
            retention: self.retention.unwrap_or(defaults.retention),
            tombstone_retention: self
                .tombstone_retention
                .unwrap_or(defaults.tombstone_retention),
            lease: defaults.lease,
        }
    }
}
