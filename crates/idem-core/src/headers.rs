//! Header names and the replay deny-list (contract section 4), and what
//! a `Retry-After` value asks for.

use std::time::{Duration, SystemTime};

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

/// Removes the hop-by-hop headers ([`HOP_BY_HOP`]) and those the
/// `Connection` header names, except the `protected` ones (headers a proxy
/// sets itself and a client must not get removed by naming them).
///
/// ```
/// use http::{HeaderMap, HeaderName, HeaderValue};
/// let mut headers = HeaderMap::new();
/// headers.insert("connection", HeaderValue::from_static("close, x-secret, x-forwarded-for"));
/// headers.insert("x-secret", HeaderValue::from_static("1"));
/// headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
/// headers.insert("content-type", HeaderValue::from_static("text/plain"));
/// idem_core::headers::strip_hop_by_hop(&mut headers, &[HeaderName::from_static("x-forwarded-for")]);
/// let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
/// assert_eq!(left, ["x-forwarded-for", "content-type"]);
/// ```
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap, protected: &[http::HeaderName]) {
    // Most messages carry none: one pass over the few names present costs
    // less than a lookup (a parse and a hash) per listed name, twice per
    // proxied request. `Connection` is itself hop-by-hop, so a message
    // without any also names nothing to remove.
    if !headers.keys().any(|name| is_hop_by_hop(name.as_str())) {
        return;
    }
    let named: Vec<http::HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !protected.contains(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// The wait a `Retry-After` value asks for (RFC 9110 section 10.2.3):
/// whole seconds, or an HTTP-date measured from `now` (a date already past
/// means no wait). `None` for anything else.
///
/// ```
/// use idem_core::headers::retry_after;
/// use std::time::{Duration, SystemTime};
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
/// assert_eq!(retry_after(" 3 ", now), Some(Duration::from_secs(3)));
/// assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(10)));
/// assert_eq!(retry_after("soon", now), None);
/// ```
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hop_by_hop_header_is_stripped_alone_and_nothing_else_is() {
        let end_to_end = |headers: &mut http::HeaderMap| {
            headers.insert("content-type", http::HeaderValue::from_static("text/plain"));
            headers.insert("x-custom", http::HeaderValue::from_static("1"));
        };
        for name in HOP_BY_HOP {
            let mut headers = http::HeaderMap::new();
            end_to_end(&mut headers);
            headers.insert(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static("x-custom"),
            );
            strip_hop_by_hop(&mut headers, &[]);
            let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
            let expected: &[&str] = if *name == "connection" {
                &["content-type"] // and the header it names
            } else {
                &["content-type", "x-custom"]
            };
            assert_eq!(left, expected, "{name}");
        }
        let mut untouched = http::HeaderMap::new();
        end_to_end(&mut untouched);
        let before = untouched.clone();
        strip_hop_by_hop(&mut untouched, &[]);
        assert_eq!(untouched, before);
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-1", now), None);
        assert_eq!(retry_after("", now), None);
    }
}
