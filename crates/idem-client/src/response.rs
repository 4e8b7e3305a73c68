//! What a response says: replayed or not, which problem, when to come back.

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::HeaderMap;
use idem_core::headers::IDEMPOTENT_REPLAYED;
use idem_core::problem::PROBLEM_CONTENT_TYPE;
use idem_core::ProblemType;
use std::time::{Duration, SystemTime};

/// Problem bodies larger than this are not read to classify them.
const MAX_PROBLEM_BODY: u64 = 64 * 1024;

/// What the middleware did for the logical operation a response ends.
/// Attached to every response it returns; read it with
/// [`ResponseExt::operation`].
///
/// ```no_run
/// # async fn f(client: reqwest_middleware::ClientWithMiddleware) -> Result<(), idem_client::Error> {
/// use idem_client::ResponseExt;
/// let response = client.post("http://127.0.0.1:8080/charges").body("{}").send().await?;
/// let op = response.operation().expect("sent through IdempotentRetry");
/// println!("key {:?}: {} attempt(s), replayed: {}", op.key, op.attempts, op.replayed);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Operation {
    /// The `Idempotency-Key` every attempt carried (`None` for a request
    /// sent without one, e.g. a GET).
    pub key: Option<String>,
    /// Attempts made, this response's included.
    pub attempts: u32,
    /// Whether this response is a replay of a stored outcome
    /// (`Idempotent-Replayed: true`).
    pub replayed: bool,
    /// The idem problem this response is, if it is one (e.g.
    /// [`ProblemType::KeyReused`] on a 422).
    pub problem: Option<ProblemType>,
}

/// Reads what [`IdempotentRetry`](crate::IdempotentRetry) attached to a
/// response.
pub trait ResponseExt {
    /// The operation's key, attempts, replay flag and problem.
    fn operation(&self) -> Option<&Operation>;

    /// Whether the response carries `Idempotent-Replayed: true` (read from
    /// the header, so it works on any response).
    fn is_replayed(&self) -> bool;
}

impl ResponseExt for reqwest::Response {
    fn operation(&self) -> Option<&Operation> {
        self.extensions().get::<Operation>()
    }

    fn is_replayed(&self) -> bool {
        is_replayed(self.headers())
    }
}

pub(crate) fn is_replayed(headers: &HeaderMap) -> bool {
    headers
        .get(IDEMPOTENT_REPLAYED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The wait a response asks for: its `Retry-After`
/// ([`idem_core::headers::retry_after`]).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    idem_core::headers::retry_after(value, now)
}

/// A problem the middleware recognised in a response body.
#[derive(Debug, Clone)]
pub(crate) struct Recognised {
    pub(crate) kind: ProblemType,
    pub(crate) detail: Option<String>,
    /// The body's `"retryable"`, when it has one: `false` is a terminal
    /// answer that no retry with the same key changes.
    pub(crate) retryable: Option<bool>,
}

/// Whether a response is a small `application/problem+json` worth reading.
fn worth_reading(response: &reqwest::Response) -> bool {
    let problem = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(PROBLEM_CONTENT_TYPE));
    problem
        && response
            .content_length()
            .is_some_and(|n| n <= MAX_PROBLEM_BODY)
}

/// Parses an RFC 9457 body whose `type` ends in one of idem's slugs.
pub(crate) fn recognise(body: &[u8]) -> Option<Recognised> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let slug = value.get("type")?.as_str()?.rsplit('/').next()?;
    let kind = ProblemType::from_slug(slug)?;
    let detail = value
        .get("detail")
        .and_then(|d| d.as_str())
        .map(str::to_owned);
    let retryable = value.get("retryable").and_then(serde_json::Value::as_bool);
    Some(Recognised {
        kind,
        detail,
        retryable,
    })
}

/// Reads a small problem body to classify it, and puts the bytes back so
/// the caller still gets the whole response (status, headers, URL,
/// extensions and body).
pub(crate) async fn read_problem(
    mut response: reqwest::Response,
) -> Result<(reqwest::Response, Option<Recognised>), reqwest::Error> {
    if !worth_reading(&response) {
        return Ok((response, None));
    }
    use reqwest::ResponseBuilderExt;
    let status = response.status();
    let version = response.version();
    let url = response.url().clone();
    let headers = response.headers().clone();
    let extensions = std::mem::take(response.extensions_mut());
    let body = response.bytes().await?;
    let recognised = recognise(&body);
    let mut rebuilt = http::Response::new(body);
    *rebuilt.status_mut() = status;
    *rebuilt.version_mut() = version;
    *rebuilt.headers_mut() = headers;
    rebuilt.extensions_mut().extend(extensions);
    // reqwest keeps the URL in a private extension that only its builder
    // extension can set.
    if let Ok(carrier) = http::Response::builder().url(url).body(()) {
        rebuilt
            .extensions_mut()
            .extend(carrier.into_parts().0.extensions);
    }
    Ok((reqwest::Response::from(rebuilt), recognised))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn retry_after_is_read_from_the_header() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn recognises_idem_problems_by_slug() {
        let body = idem_core::Problem::new(ProblemType::OutcomeUnknown, "lost").to_json();
        let r = recognise(&body).unwrap();
        assert_eq!(r.kind, ProblemType::OutcomeUnknown);
        assert_eq!(r.detail.as_deref(), Some("lost"));
        assert_eq!(r.retryable, Some(false));
        // Another base URI with the same slug is the same problem.
        let r = recognise(br#"{"type":"https://api.example/errors/request-in-progress"}"#);
        assert_eq!(r.unwrap().kind, ProblemType::RequestInProgress);
        assert!(recognise(br#"{"type":"about:blank"}"#).is_none());
        assert!(recognise(b"not json").is_none());
    }

    #[test]
    fn replayed_header() {
        let mut h = HeaderMap::new();
        assert!(!is_replayed(&h));
        h.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        assert!(is_replayed(&h));
        h.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("false"));
        assert!(!is_replayed(&h));
    }
}
