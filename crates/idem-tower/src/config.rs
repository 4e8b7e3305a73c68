use http::{HeaderName, Method};
use idem_core::headers::ReplayHeaderFilter;
use idem_core::path::NormalisedPath;
use idem_core::{FingerprintIgnore, Policy, ProblemFormat, ReleaseStatuses, Retention, ScopeRule};
use std::sync::Arc;
use std::time::Duration;

/// A set of methods under a path prefix, and the policy that applies there.
///
/// ```
/// use idem_tower::{Policy, Route};
/// let charges = Route::new("/charges").with_policy(Policy { require_key: true, ..Policy::default() });
/// assert!(charges.matches(&http::Method::POST, "/charges/1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

    /// This route with `policy` in force.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
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
///
/// Start from [`IdempotencyConfig::default`] and set fields, or let
/// [`IdempotencyLayer::builder`](crate::IdempotencyLayer::builder) do it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IdempotencyConfig {
    /// The header that carries the key. Default `Idempotency-Key`.
    pub key_header: HeaderName,
    /// Covered routes, first match wins. Default: POST and PATCH everywhere,
    /// key optional.
    pub routes: Vec<Route>,
    /// How a request's tenant scope is derived. Default: a hash of
    /// `Authorization`, and a keyed request without one is refused (401).
    pub scope: ScopeRule,
    /// Retention, tombstone retention, lease. A route's
    /// [`Policy::retention`] and [`Policy::tombstone_retention`] override
    /// the first two for that route; the lease is the layer's.
    pub retention: Retention,
    /// How long the inner service may run before its outcome is declared
    /// unknown. Default 60 s.
    pub upstream_timeout: Duration,
    /// Largest request body fingerprinted; larger is 413. Default 10 MiB.
    pub max_request_body: usize,
    /// Largest response body stored for replay; larger is streamed to the
    /// first caller and stored without a body. Default 10 MiB.
    pub max_response_body: usize,
    /// One budget for the request and response bytes the layer holds in
    /// memory across all requests. A keyed request that would go past it
    /// gets 503 `overloaded` with `Retry-After`, before any claim. Default
    /// 256 MiB.
    pub max_buffered_bytes: usize,
    /// How long a keyed request's body may take to arrive, in all. Past it
    /// the request gets 408 `body-timeout`; nothing was claimed. Default
    /// 30 s.
    pub request_body_timeout: Duration,
    /// Response headers not stored for replay.
    pub replay_headers: ReplayHeaderFilter,
    /// Statuses that release the claim instead of being stored, on routes
    /// that do not set their own ([`Policy::release_statuses`]).
    pub release_statuses: ReleaseStatuses,
    /// Extra request headers that are part of the fingerprint, on routes
    /// that do not set their own ([`Policy::fingerprint_headers`]).
    pub fingerprint_headers: Vec<HeaderName>,
    /// JSON members left out of the fingerprint of JSON bodies, on routes
    /// that do not set their own ([`Policy::fingerprint_ignore`]). Default
    /// none.
    pub fingerprint_ignore: FingerprintIgnore,
    /// How problem responses are written: profile (RFC 9457 or Stripe's),
    /// the base of `type` URIs, and a `Link` to the operator's docs.
    /// Default: RFC 9457 under `https://idem.dev/problems/`, no `Link`.
    pub problems: ProblemFormat,
    /// Forward unprotected (and count it) when the store fails, instead of
    /// 503. Default false: fail closed.
    pub fail_open: bool,
    /// The `Retry-After` sent with 409 `request-in-progress`. Default 1 s.
    pub retry_after: Duration,
    /// This instance's name, stored with every claim it makes as the
    /// record's lease holder ([`idem_core::Record::holder`]), so an
    /// operator looking at a stuck key learns which instance had it.
    /// Default [`default_instance_name`].
    pub instance: Arc<str>,
}

/// The name an instance gives its claims unless configured: `hostname:pid`
/// (the host name as the system reports it, `localhost` if it has none
/// that is UTF-8).
///
/// ```
/// let name = idem_tower::default_instance_name();
/// assert!(name.ends_with(&format!(":{}", std::process::id())));
/// ```
pub fn default_instance_name() -> String {
    let host = gethostname::gethostname();
    let host = host
        .to_str()
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost");
    format!("{host}:{}", std::process::id())
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            key_header: HeaderName::from_static(idem_core::headers::IDEMPOTENCY_KEY),
            routes: vec![Route::new("/")],
            scope: ScopeRule::default(),
            retention: Retention::default(),
            upstream_timeout: Duration::from_secs(60),
            max_request_body: 10 * 1024 * 1024,
            max_response_body: 10 * 1024 * 1024,
            max_buffered_bytes: 256 * 1024 * 1024,
            request_body_timeout: Duration::from_secs(30),
            replay_headers: ReplayHeaderFilter::default(),
            release_statuses: ReleaseStatuses::default(),
            fingerprint_headers: Vec::new(),
            fingerprint_ignore: FingerprintIgnore::default(),
            problems: ProblemFormat::default(),
            fail_open: false,
            retry_after: Duration::from_secs(1),
            instance: default_instance_name().into(),
        }
    }
}

impl IdempotencyConfig {
    /// The route covering a request, if any. `path` is matched as given:
    /// see [`IdempotencyConfig::route_for_path`] for raw request paths.
    pub fn route_for(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(method, path))
    }

    /// The route covering a request whose raw path is `path`, matched on
    /// its normal form (dot segments, repeated slashes and escaped
    /// unreserved characters cannot slip past a route). `Err` when readings
    /// of the path that some frameworks make (`;` parameters, an escaped
    /// `/`) would fall under another route: such a path is refused, not
    /// guessed.
    pub fn route_for_path<'p>(
        &self,
        method: &Method,
        path: &NormalisedPath<'p>,
    ) -> Result<Option<&Route>, AmbiguousPath> {
        Ok(self
            .route_position(method, path)?
            .and_then(|i| self.routes.get(i)))
    }

    /// [`IdempotencyConfig::route_for_path`], as an index into `routes`.
    pub(crate) fn route_position(
        &self,
        method: &Method,
        path: &NormalisedPath<'_>,
    ) -> Result<Option<usize>, AmbiguousPath> {
        let position = |p: &str| self.routes.iter().position(|r| r.matches(method, p));
        let strict = position(path.as_str());
        if let Some(lenient) = path.lenient() {
            if position(lenient) != strict {
                return Err(AmbiguousPath);
            }
        }
        Ok(strict)
    }

    /// What applies on `route`: its own settings, and the layer's where it
    /// sets none.
    ///
    /// ```
    /// use idem_tower::{IdempotencyConfig, Route};
    /// use std::time::Duration;
    /// let mut short = Route::new("/quotes");
    /// short.policy.retention = Some(Duration::from_secs(60));
    /// let mut config = IdempotencyConfig::default();
    /// config.routes = vec![short, Route::new("/")];
    /// assert_eq!(config.effective(&config.routes[0]).retention.retention, Duration::from_secs(60));
    /// assert_eq!(config.effective(&config.routes[1]).retention, config.retention);
    /// ```
    pub fn effective(&self, route: &Route) -> EffectivePolicy {
        let p = &route.policy;
        EffectivePolicy {
            policy: p.clone(),
            retention: p.retention_over(&self.retention),
            release_statuses: p
                .release_statuses
                .clone()
                .unwrap_or_else(|| self.release_statuses.clone()),
            fingerprint_headers: p
                .fingerprint_headers
                .clone()
                .unwrap_or_else(|| self.fingerprint_headers.clone()),
            fingerprint_ignore: p
                .fingerprint_ignore
                .clone()
                .unwrap_or_else(|| self.fingerprint_ignore.clone()),
        }
    }

    /// Every header some route's fingerprint reads (for a proxy that must
    /// not let `Connection` remove them).
    pub fn all_fingerprint_headers(&self) -> Vec<HeaderName> {
        let mut all = self.fingerprint_headers.clone();
        for route in &self.routes {
            for h in route.policy.fingerprint_headers.iter().flatten() {
                if !all.contains(h) {
                    all.push(h.clone());
                }
            }
        }
        all
    }
}

/// A route's policy with the layer's values filled in where the route sets
/// none: what the layer applies to a request on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EffectivePolicy {
    /// The route's own policy (key requirement, in-flight behaviour,
    /// upstream dedupe, and its overrides as written).
    pub policy: Policy,
    /// Retention and tombstone retention of this route, the layer's lease.
    pub retention: Retention,
    /// Statuses that release the claim on this route.
    pub release_statuses: ReleaseStatuses,
    /// Extra request headers in this route's fingerprint.
    pub fingerprint_headers: Vec<HeaderName>,
    /// JSON members left out of this route's fingerprint.
    pub fingerprint_ignore: FingerprintIgnore,
}

/// A path that frameworks read differently, in a way that changes which
/// route applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousPath;

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

    fn routes() -> IdempotencyConfig {
        let mut strict = Route::new("/v1/charges");
        strict.policy.require_key = true;
        IdempotencyConfig {
            routes: vec![strict, Route::new("/v1/"), Route::new("/")],
            ..IdempotencyConfig::default()
        }
    }

    fn index(c: &IdempotencyConfig, route: Option<&Route>) -> Option<usize> {
        route.map(|r| c.routes.iter().position(|x| x == r).unwrap())
    }

    #[test]
    fn every_disguise_of_a_covered_path_reaches_its_route_or_is_refused() {
        let c = routes();
        let route = |p: &str| c.route_for_path(&Method::POST, &NormalisedPath::new(p));
        for p in [
            "/v1//charges",
            "/v1/./charges",
            "/v1/%63harges",
            "/v1/x/../charges",
            "//v1/charges/1",
        ] {
            assert_eq!(index(&c, route(p).unwrap()), Some(0), "{p}");
        }
        for p in [
            "/v1/charges;x",
            "/v1/charges%2F1",
            "/v1%2fcharges",
            "/v1\\charges",
        ] {
            assert_eq!(route(p), Err(AmbiguousPath), "{p}");
        }
        // `;` that changes nothing about the route is not ambiguous.
        assert_eq!(index(&c, route("/v1/refunds;v=2").unwrap()), Some(1));
    }

    proptest::proptest! {
        /// Two paths that normalise alike are routed alike: dot segments,
        /// doubled slashes and escaped letters never change the route.
        #[test]
        fn paths_that_normalise_alike_are_routed_alike(
            segments in proptest::collection::vec("(v1|charges|refunds|x|[a-z0-9]{1,4})", 0..5),
            disguise in proptest::collection::vec(0u8..4, 0..5),
        ) {
            let c = routes();
            let plain = format!("/{}", segments.join("/"));
            let mut disguised = String::new();
            for (i, seg) in segments.iter().enumerate() {
                match disguise.get(i).copied().unwrap_or(0) {
                    1 => disguised.push_str("//"),
                    2 => disguised.push_str("/./"),
                    3 => disguised.push_str("/zz/../"),
                    _ => disguised.push('/'),
                }
                let escaped: String = seg.chars().enumerate().map(|(j, ch)| {
                    if j == 0 { format!("%{:02X}", ch as u32) } else { ch.to_string() }
                }).collect();
                disguised.push_str(&escaped);
            }
            let disguised = disguised.replace("///", "/");
            let a = NormalisedPath::new(&plain);
            let b = NormalisedPath::new(&disguised);
            proptest::prop_assert_eq!(a.as_str(), b.as_str(), "{} vs {}", plain, disguised);
            proptest::prop_assert_eq!(
                c.route_for_path(&Method::POST, &a),
                c.route_for_path(&Method::POST, &b)
            );
        }
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
