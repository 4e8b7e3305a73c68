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

    /// The full `type` URI.
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_TYPE_BASE}{}", self.slug())
    }

    /// Looks a problem up by its slug (for clients and the audit).
    pub fn from_slug(slug: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.slug() == slug)
    }
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

    /// The `application/problem+json` body.
    ///
    /// ```
    /// use idem_core::problem::{Problem, ProblemType};
    /// let body = Problem::new(ProblemType::KeyReused, "changed body").to_json();
    /// let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    /// assert_eq!(v["status"], 422);
    /// assert!(v["type"].as_str().unwrap().ends_with("/key-reused"));
    /// ```
    pub fn to_json(&self) -> Vec<u8> {
        let wire = Wire {
            type_: self.kind.type_uri(),
            title: self.kind.title(),
            status: self.kind.status(),
            detail: &self.detail,
            idempotency_key: self.idempotency_key.as_deref(),
            original_status: self.original_status,
        };
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}
