//! RFC 9457 problem details: the one home of every slug, status and title
//! the gateway and layer produce.

use serde::Serialize;

/// Prefix of every problem `type` URI; the slug follows it.
pub const PROBLEM_TYPE_BASE: &str = "https://idem.dev/problems/";

/// `Content-Type` of every problem response.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Every kind of problem idem itself answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemType {
    /// 400: the route requires a key and none was sent.
    MissingKey,
    /// 400: key empty, too long, not visible ASCII, or repeated.
    InvalidKey,
    /// 422: same key, different fingerprint.
    KeyReused,
    /// 422: the key only survives as a tombstone.
    KeyExpired,
    /// 409: same key still executing.
    RequestInProgress,
    /// 409: the earlier attempt's outcome cannot be known.
    OutcomeUnknown,
    /// 409: the stored outcome has no body to replay.
    ResponseNotReplayable,
    /// 413: request body over the fingerprint limit.
    BodyTooLarge,
    /// 503: the store cannot be reached.
    StoreUnavailable,
    /// 502: the upstream could not be reached; nothing was sent, the key
    /// was released and a retry executes afresh. (Gateway only; not a
    /// contract slug.)
    UpstreamUnavailable,
    /// 400: the request body broke off while being read; nothing was
    /// executed. (Not a contract slug.)
    BodyUnreadable,
    /// 504: the upstream did not answer in time, or the connection broke
    /// after the request was sent; the key is now `outcome-unknown`.
    /// (Gateway only; not a contract slug.)
    UpstreamTimeout,
    /// 401: a keyed request carried no credential, and the operator's scope
    /// rule refuses anonymous keyed requests (the default): without a
    /// tenant it would share a scope with strangers. Nothing was forwarded.
    CredentialRequired,
    /// 401: the credential the scope is derived from failed verification
    /// (a JWT's signature, expiry, issuer or audience; a cookie named
    /// twice). Nothing was forwarded or stored.
    InvalidCredential,
    /// 400: the path reads differently to different frameworks (`;`
    /// parameters, an encoded `/`) in a way that changes which route
    /// applies; refused rather than guessed. Nothing was forwarded.
    AmbiguousPath,
    /// 503: the store holds its budget of records and refuses new keys;
    /// nothing was forwarded. Known keys still answer.
    StoreFull,
    /// 503: the bytes the gateway holds in memory for requests and
    /// responses are at their budget (`max_buffered_bytes`); this request
    /// was refused before any claim, so nothing was forwarded or stored.
    Overloaded,
    /// 408: the request body did not arrive within the body read timeout;
    /// nothing was claimed or forwarded.
    BodyTimeout,
}

impl ProblemType {
    /// All of them, for docs and tests.
    pub const ALL: [ProblemType; 18] = [
        ProblemType::MissingKey,
        ProblemType::InvalidKey,
        ProblemType::KeyReused,
        ProblemType::KeyExpired,
        ProblemType::RequestInProgress,
        ProblemType::OutcomeUnknown,
        ProblemType::ResponseNotReplayable,
        ProblemType::BodyTooLarge,
        ProblemType::StoreUnavailable,
        ProblemType::UpstreamUnavailable,
        ProblemType::UpstreamTimeout,
        ProblemType::BodyUnreadable,
        ProblemType::CredentialRequired,
        ProblemType::InvalidCredential,
        ProblemType::AmbiguousPath,
        ProblemType::StoreFull,
        ProblemType::Overloaded,
        ProblemType::BodyTimeout,
    ];

    /// The stable slug the `type` URI ends in.
    pub fn slug(self) -> &'static str {
        match self {
            ProblemType::MissingKey => "missing-key",
            ProblemType::InvalidKey => "invalid-key",
            ProblemType::KeyReused => "key-reused",
            ProblemType::KeyExpired => "key-expired",
            ProblemType::RequestInProgress => "request-in-progress",
            ProblemType::OutcomeUnknown => "outcome-unknown",
            ProblemType::ResponseNotReplayable => "response-not-replayable",
            ProblemType::BodyTooLarge => "body-too-large",
            ProblemType::StoreUnavailable => "store-unavailable",
            ProblemType::UpstreamUnavailable => "upstream-unavailable",
            ProblemType::UpstreamTimeout => "upstream-timeout",
            ProblemType::BodyUnreadable => "body-unreadable",
            ProblemType::CredentialRequired => "credential-required",
            ProblemType::InvalidCredential => "invalid-credential",
            ProblemType::AmbiguousPath => "ambiguous-path",
            ProblemType::StoreFull => "store-full",
            ProblemType::Overloaded => "overloaded",
            ProblemType::BodyTimeout => "body-timeout",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ProblemType::MissingKey
            | ProblemType::InvalidKey
            | ProblemType::BodyUnreadable
            | ProblemType::AmbiguousPath => 400,
            ProblemType::CredentialRequired | ProblemType::InvalidCredential => 401,
            ProblemType::KeyReused | ProblemType::KeyExpired => 422,
            ProblemType::RequestInProgress
            | ProblemType::OutcomeUnknown
            | ProblemType::ResponseNotReplayable => 409,
            ProblemType::BodyTooLarge => 413,
            ProblemType::StoreUnavailable | ProblemType::StoreFull | ProblemType::Overloaded => 503,
            ProblemType::BodyTimeout => 408,
            ProblemType::UpstreamUnavailable => 502,
            ProblemType::UpstreamTimeout => 504,
        }
    }

    /// A short, constant summary.
    pub fn title(self) -> &'static str {
        match self {
            ProblemType::MissingKey => "This route requires an Idempotency-Key header",
            ProblemType::InvalidKey => "The Idempotency-Key header is not valid",
            ProblemType::KeyReused => "This idempotency key was used with a different request",
            ProblemType::KeyExpired => "This idempotency key has expired",
            ProblemType::RequestInProgress => {
                "A request with this idempotency key is still in progress"
            }
            ProblemType::OutcomeUnknown => {
                "The outcome of the earlier request with this key is unknown"
            }
            ProblemType::ResponseNotReplayable => {
                "The stored response for this key cannot be replayed"
            }
            ProblemType::BodyTooLarge => "The request body is too large",
            ProblemType::StoreUnavailable => "The idempotency store is unavailable",
            ProblemType::UpstreamUnavailable => "The upstream could not be reached",
            ProblemType::UpstreamTimeout => "The upstream did not answer",
            ProblemType::BodyUnreadable => "The request body could not be read",
            ProblemType::CredentialRequired => {
                "A keyed request must carry the credential that identifies its tenant"
            }
            ProblemType::InvalidCredential => "The request's credential could not be verified",
            ProblemType::AmbiguousPath => "The request path is ambiguous",
            ProblemType::StoreFull => "The idempotency store is full",
            ProblemType::Overloaded => "The gateway holds too many buffered bytes",
            ProblemType::BodyTimeout => "The request body did not arrive in time",
        }
    }

    /// The full `type` URI under the default base, [`PROBLEM_TYPE_BASE`]
    /// (see [`ProblemFormat::type_uri`] for an operator's own base).
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_TYPE_BASE}{}", self.slug())
    }

    /// Whether the same request, sent again with the same key, can get
    /// another answer: `true` for "not now" (the key is in flight, the
    /// store or upstream is unreachable, the gateway is loaded, the body did
    /// not arrive), `false` for answers that only a change of request or a
    /// human can change (a bad or reused key, an expired key, an outcome
    /// nobody can know, a stored outcome that cannot be replayed). Sent as
    /// `"retryable"` in every problem body and, under the `stripe` profile,
    /// as `Stripe-Should-Retry`. Retryable problems that ask for a wait
    /// carry `Retry-After`; terminal ones never do.
    pub fn retryable(self) -> bool {
        match self {
            ProblemType::RequestInProgress
            | ProblemType::StoreUnavailable
            | ProblemType::StoreFull
            | ProblemType::Overloaded
            | ProblemType::UpstreamUnavailable
            | ProblemType::UpstreamTimeout
            | ProblemType::BodyUnreadable
            | ProblemType::BodyTimeout => true,
            ProblemType::MissingKey
            | ProblemType::InvalidKey
            | ProblemType::KeyReused
            | ProblemType::KeyExpired
            | ProblemType::OutcomeUnknown
            | ProblemType::ResponseNotReplayable
            | ProblemType::BodyTooLarge
            | ProblemType::CredentialRequired
            | ProblemType::InvalidCredential
            | ProblemType::AmbiguousPath => false,
        }
    }

    /// How the `stripe` profile answers this problem: Stripe's status and
    /// error `type`, so Stripe's SDKs raise their own errors (stripe-python
    /// raises `IdempotencyError` for a 400 or 404 of type
    /// `idempotency_error`, `AuthenticationError` for a 401, and retries a
    /// 409 or a 5xx unless `Stripe-Should-Retry: false`).
    pub fn stripe(self) -> StripeError {
        let (status, error_type, code) = match self {
            ProblemType::KeyReused => (400, "idempotency_error", "idempotency_key_reused"),
            ProblemType::KeyExpired => (400, "idempotency_error", "idempotency_key_expired"),
            ProblemType::RequestInProgress => (409, "idempotency_error", "idempotency_key_in_use"),
            ProblemType::OutcomeUnknown => {
                (409, "idempotency_error", "idempotency_outcome_unknown")
            }
            ProblemType::ResponseNotReplayable => (
                409,
                "idempotency_error",
                "idempotency_response_not_replayable",
            ),
            ProblemType::MissingKey => (400, "invalid_request_error", "idempotency_key_missing"),
            ProblemType::InvalidKey => (400, "invalid_request_error", "idempotency_key_invalid"),
            ProblemType::BodyTooLarge => (413, "invalid_request_error", "body_too_large"),
            ProblemType::BodyUnreadable => (400, "invalid_request_error", "body_unreadable"),
            ProblemType::BodyTimeout => (408, "invalid_request_error", "body_timeout"),
            ProblemType::AmbiguousPath => (400, "invalid_request_error", "ambiguous_path"),
            ProblemType::CredentialRequired => {
                (401, "invalid_request_error", "credential_required")
            }
            ProblemType::InvalidCredential => (401, "invalid_request_error", "invalid_credential"),
            ProblemType::StoreUnavailable => (503, "api_error", "store_unavailable"),
            ProblemType::StoreFull => (503, "api_error", "store_full"),
            ProblemType::Overloaded => (503, "api_error", "overloaded"),
            ProblemType::UpstreamUnavailable => (502, "api_error", "upstream_unavailable"),
            ProblemType::UpstreamTimeout => (504, "api_error", "upstream_timeout"),
        };
        StripeError {
            status,
            error_type,
            code,
        }
    }

    /// Looks a problem up by its slug (for clients and the audit).
    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.slug() == slug)
    }
}

/// A problem as the `stripe` profile writes it: `{"error": {"type": ...,
/// "code": ..., "message": ..., "doc_url": ...}}` with this status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeError {
    /// The HTTP status (Stripe's: 400 for a reused or expired key).
    pub status: u16,
    /// The error object's `type`: `idempotency_error`,
    /// `invalid_request_error` or `api_error`.
    pub error_type: &'static str,
    /// The error object's `code` (`idempotency_key_in_use` is Stripe's own
    /// for a key in flight; the others are idem's slugs in Stripe's style).
    pub code: &'static str,
}

/// Which shape problem responses take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ProblemProfile {
    /// RFC 9457 problem details (`application/problem+json`), the IETF
    /// draft's statuses. The default.
    #[default]
    Rfc9457,
    /// Stripe's error objects (`application/json`) and statuses, with
    /// `Stripe-Should-Retry`, so Stripe's SDKs raise their native errors.
    Stripe,
}

impl ProblemProfile {
    /// The name the configuration uses: `rfc9457` or `stripe`.
    pub fn name(self) -> &'static str {
        match self {
            ProblemProfile::Rfc9457 => "rfc9457",
            ProblemProfile::Stripe => "stripe",
        }
    }
}

/// How problems are written: the profile, the base their `type` URIs
/// start with, and a documentation URL announced in `Link`.
///
/// ```
/// use idem_core::problem::{Problem, ProblemFormat, ProblemProfile, ProblemType};
/// let format = ProblemFormat::default()
///     .with_type_base("https://api.example.com/errors/")
///     .with_docs_url(Some("https://api.example.com/docs/idempotency".into()));
/// let out = format.render(&Problem::new(ProblemType::KeyReused, "changed body"));
/// let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
/// assert_eq!(v["type"], "https://api.example.com/errors/key-reused");
/// assert_eq!(v["retryable"], false);
/// assert_eq!(format.link().as_deref(), Some(r#"<https://api.example.com/docs/idempotency>; rel="describedby""#));
///
/// let stripe = format.with_profile(ProblemProfile::Stripe)
///     .render(&Problem::new(ProblemType::KeyReused, "changed body"));
/// assert_eq!(stripe.status, 400);
/// let v: serde_json::Value = serde_json::from_slice(&stripe.body).unwrap();
/// assert_eq!(v["error"]["type"], "idempotency_error");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProblemFormat {
    /// The shape. Default [`ProblemProfile::Rfc9457`].
    pub profile: ProblemProfile,
    /// What every `type` URI starts with; the slug follows it as is.
    /// Default [`PROBLEM_TYPE_BASE`].
    pub type_base: String,
    /// Sent as `Link: <docs_url>; rel="describedby"` on every problem
    /// response. Default none.
    pub docs_url: Option<String>,
}

impl Default for ProblemFormat {
    fn default() -> Self {
        ProblemFormat {
            profile: ProblemProfile::default(),
            type_base: PROBLEM_TYPE_BASE.to_owned(),
            docs_url: None,
        }
    }
}

/// A problem response's status, content type and body, as a
/// [`ProblemFormat`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedProblem {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl ProblemFormat {
    /// This format with another profile.
    pub fn with_profile(mut self, profile: ProblemProfile) -> Self {
        self.profile = profile;
        self
    }

    /// This format with another `type` base (the slug is appended to it).
    pub fn with_type_base(mut self, base: impl Into<String>) -> Self {
        self.type_base = base.into();
        self
    }

    /// This format announcing `docs_url` in `Link` (or nothing).
    pub fn with_docs_url(mut self, docs_url: Option<String>) -> Self {
        self.docs_url = docs_url;
        self
    }

    /// The `type` URI of `kind`.
    pub fn type_uri(&self, kind: ProblemType) -> String {
        format!("{}{}", self.type_base, kind.slug())
    }

    /// The status a problem of `kind` is answered with under this profile.
    pub fn status(&self, kind: ProblemType) -> u16 {
        match self.profile {
            ProblemProfile::Rfc9457 => kind.status(),
            ProblemProfile::Stripe => kind.stripe().status,
        }
    }

    /// The `Link` header value, if a documentation URL is set.
    pub fn link(&self) -> Option<String> {
        self.docs_url
            .as_ref()
            .map(|url| format!("<{url}>; rel=\"describedby\""))
    }

    /// The problem's status, content type and body.
    pub fn render(&self, problem: &Problem) -> RenderedProblem {
        let kind = problem.kind;
        let type_uri = self.type_uri(kind);
        // Serialising structs of strings, integers and booleans cannot fail.
        match self.profile {
            ProblemProfile::Rfc9457 => RenderedProblem {
                status: kind.status(),
                content_type: PROBLEM_CONTENT_TYPE,
                body: serde_json::to_vec(&Wire {
                    type_: type_uri,
                    title: kind.title(),
                    status: kind.status(),
                    detail: &problem.detail,
                    retryable: kind.retryable(),
                    idempotency_key: problem.idempotency_key.as_deref(),
                    original_status: problem.original_status,
                })
                .unwrap_or_default(),
            },
            ProblemProfile::Stripe => {
                let stripe = kind.stripe();
                RenderedProblem {
                    status: stripe.status,
                    content_type: "application/json",
                    body: serde_json::to_vec(&StripeWire {
                        error: StripeObject {
                            type_: stripe.error_type,
                            code: stripe.code,
                            message: &problem.detail,
                            doc_url: type_uri,
                            idempotency_key: problem.idempotency_key.as_deref(),
                            original_status: problem.original_status,
                        },
                    })
                    .unwrap_or_default(),
                }
            }
        }
    }
}

#[derive(Serialize)]
struct StripeWire<'a> {
    error: StripeObject<'a>,
}

#[derive(Serialize)]
struct StripeObject<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    code: &'static str,
    message: &'a str,
    doc_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_status: Option<u16>,
}

/// One problem response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The kind.
    pub kind: ProblemType,
    /// What happened in this case, for a human.
    pub detail: String,
    /// The key the request carried, if any (already validated).
    pub idempotency_key: Option<String>,
    /// For `response-not-replayable`: the original status.
    pub original_status: Option<u16>,
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    retryable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_status: Option<u16>,
}

impl Problem {
    /// A problem of `kind` with a detail message.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            idempotency_key: None,
            original_status: None,
        }
    }

    /// Names the request's key in the body.
    pub fn with_key(mut self, key: Option<&crate::IdempotencyKey>) -> Self {
        self.idempotency_key = key.map(|k| k.as_str().to_owned());
        self
    }

    /// The `application/problem+json` body in the default format (see
    /// [`ProblemFormat::render`] for the others).
    ///
    /// ```
    /// use idem_core::problem::{Problem, ProblemType};
    /// let body = Problem::new(ProblemType::KeyReused, "changed body").to_json();
    /// let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    /// assert_eq!(v["status"], 422);
    /// assert_eq!(v["retryable"], false);
    /// assert!(v["type"].as_str().unwrap().ends_with("/key-reused"));
    /// ```
    pub fn to_json(&self) -> Vec<u8> {
        ProblemFormat::default().render(self).body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_conflicts_are_not_retryable_and_the_in_progress_one_is() {
        assert!(ProblemType::RequestInProgress.retryable());
        assert!(!ProblemType::OutcomeUnknown.retryable());
        assert!(!ProblemType::ResponseNotReplayable.retryable());
        for kind in ProblemType::ALL {
            let v: serde_json::Value =
                serde_json::from_slice(&Problem::new(kind, "x").to_json()).unwrap();
            assert_eq!(v["retryable"], kind.retryable(), "{kind:?}");
        }
    }

    #[test]
    fn the_stripe_profile_keeps_idems_statuses_except_for_key_reuse_and_expiry() {
        for kind in ProblemType::ALL {
            let expected = match kind {
                ProblemType::KeyReused | ProblemType::KeyExpired => 400,
                other => other.status(),
            };
            assert_eq!(kind.stripe().status, expected, "{kind:?}");
        }
    }
}
