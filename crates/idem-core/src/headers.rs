//! Header names and the replay deny-list (contract section 4).

/// The request header that carries the key (default name).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set to `true` on every replayed response.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Under the `stripe` problem profile: `true` or `false`, the problem's
/// [`retryable`](crate::ProblemType::retryable). Stripe's SDKs obey it over
/// their own rule (which retries every 409 and 5xx).
pub const STRIPE_SHOULD_RETRY: &str = "stripe-should-retry";
/// The header a sealed (encrypted) stored response carries in place of its
/// own headers. Never stored from an upstream's answer, so an upstream
/// cannot make a record look sealed.
pub const SEALED: &str = "idem-sealed";

/// Hop-by-hop headers (RFC 9110 section 7.6.1): never forwarded, never stored.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Which upstream response headers are stored for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayHeaderFilter {
    deny: Vec<String>,
    deny_prefixes: Vec<String>,
}

impl Default for ReplayHeaderFilter {
    fn default() -> Self {
        ReplayHeaderFilter {
            deny: [
                "date",
                "set-cookie",
                "content-length",
                IDEMPOTENT_REPLAYED,
                SEALED,
                "ratelimit",
                "ratelimit-policy",
                "retry-after",
            ]
            .iter()
            .chain(HOP_BY_HOP)
            .map(|s| s.to_string())
            .collect(),
            deny_prefixes: ["x-ratelimit-", "x-rate-limit-", "ratelimit-"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl ReplayHeaderFilter {
    /// The default list plus extra names; a name ending in `*` denies a prefix.
    pub fn with_extra<'a>(extra: impl IntoIterator<Item = &'a str>) -> Self {
        let mut f = Self::default();
        for name in extra {
            let name = name.to_ascii_lowercase();
            match name.strip_suffix('*') {
                Some(prefix) => f.deny_prefixes.push(prefix.to_owned()),
                None => f.deny.push(name),
            }
        }
        f
    }

    /// Whether a response header (lower-case name) is kept for replay.
    ///
    /// ```
    /// use idem_core::headers::ReplayHeaderFilter;
    /// let f = ReplayHeaderFilter::default();
    /// assert!(f.keeps("content-type"));
    /// assert!(!f.keeps("set-cookie"));
    /// assert!(!f.keeps("x-ratelimit-remaining"));
    /// ```
    pub fn keeps(&self, name: &str) -> bool {
        !self.deny.iter().any(|d| d == name)
            && !self
                .deny_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
    }
}

/// Whether a header is hop-by-hop and must not cross a proxy.
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}
