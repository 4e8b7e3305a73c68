use http::{HeaderName, Method};
use idem_core::headers::ReplayHeaderFilter;
use idem_core::{Policy, ReleaseStatuses, Retention, ScopeSource};
use std::time::Duration;

/// A set of methods under a path prefix, and the policy that applies there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Covered methods (never GET, HEAD, OPTIONS or TRACE).
    pub methods: Vec<Method>,
    /// Path prefix, matched on segment boundaries: `/charges` covers
    /// `/charges` and `/charges/1`, not `/chargesheet`.
    pub path_prefix: String,
    /// What applies on this route.
    pub policy: Policy,
}

impl Route {
    /// POST and PATCH under `prefix` with the default policy.
    pub fn new(prefix: impl Into<String>) -> Self {
        Route {
            methods: vec![Method::POST, Method::PATCH],
            path_prefix: prefix.into(),
            policy: Policy::default(),
        }
    }

    /// Whether a request is on this route.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.methods.contains(method) && prefix_matches(&self.path_prefix, path)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Everything the layer needs to know, with the contract's defaults.
#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    /// The header that carries the key. Default `Idempotency-Key`.
    pub key_header: HeaderName,
    /// Covered routes, first match wins. Default: POST and PATCH everywhere,
    /// key optional.
    pub routes: Vec<Route>,
    /// Where the tenant scope comes from. Default: SHA-256 of `Authorization`.
    pub scope: ScopeSource,
    /// Retention, tombstone retention, lease.
    pub retention: Retention,
    /// How long the inner service may run before its outcome is declared
    /// unknown. Default 60 s.
    pub upstream_timeout: Duration,
    /// Largest request body fingerprinted; larger is 413. Default 10 MiB.
    pub max_request_body: usize,
    /// Largest response body stored for replay; larger is streamed to the
    /// first caller and stored without a body. Default 10 MiB.
    pub max_response_body: usize,
    /// Response headers not stored for replay.
    pub replay_headers: ReplayHeaderFilter,
    /// Statuses that release the claim instead of being stored.
    pub release_statuses: ReleaseStatuses,
    /// Extra request headers that are part of the fingerprint.
    pub fingerprint_headers: Vec<HeaderName>,
    /// Forward unprotected (and count it) when the store fails, instead of
    /// 503. Default false: fail closed.
    pub fail_open: bool,
    /// The `Retry-After` sent with 409 `request-in-progress`. Default 1 s.
    pub retry_after: Duration,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            key_header: HeaderName::from_static(idem_core::headers::IDEMPOTENCY_KEY),
            routes: vec![Route::new("/")],
            scope: ScopeSource::default(),
            retention: Retention::default(),
            upstream_timeout: Duration::from_secs(60),
            max_request_body: 10 * 1024 * 1024,
            max_response_body: 10 * 1024 * 1024,
            replay_headers: ReplayHeaderFilter::default(),
            release_statuses: ReleaseStatuses::default(),
            fingerprint_headers: Vec::new(),
            fail_open: false,
            retry_after: Duration::from_secs(1),
        }
    }
}

impl IdempotencyConfig {
    /// The route covering a request, if any.
    pub fn route_for(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(method, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert!(prefix_matches("/charges", "/charges"));
        assert!(prefix_matches("/charges", "/charges/1"));
        assert!(!prefix_matches("/charges", "/chargesheet"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/v1/", "/v1/x"));
        assert!(!prefix_matches("/v1", "/v2"));
    }

    #[test]
    fn default_covers_post_and_patch_only() {
        let c = IdempotencyConfig::default();
        assert!(c.route_for(&Method::POST, "/x").is_some());
        assert!(c.route_for(&Method::PATCH, "/x").is_some());
        assert!(c.route_for(&Method::GET, "/x").is_none());
        assert!(c.route_for(&Method::PUT, "/x").is_none());
    }
}
