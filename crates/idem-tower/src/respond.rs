//! Responses the layer itself produces: problems and replays.

use crate::ResponseBody;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, LINK, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use idem_core::headers::{IDEMPOTENT_REPLAYED, STRIPE_SHOULD_RETRY};
use idem_core::{Problem, ProblemFormat, ProblemProfile, ProblemType, StoredResponse};
use std::time::Duration;

/// The echo of the request's key, added to every response to a keyed
/// request.
#[derive(Clone)]
pub(crate) struct KeyEcho {
    pub(crate) header: HeaderName,
    pub(crate) value: HeaderValue,
}

impl KeyEcho {
    pub(crate) fn apply<B>(&self, response: &mut Response<B>) {
        response
            .headers_mut()
            .insert(self.header.clone(), self.value.clone());
    }
}

/// A problem response in `format`: its status, content type and body,
/// `Link` to the operator's docs when set, `Stripe-Should-Retry` under the
/// Stripe profile, and the key's echo.
pub(crate) fn problem<B>(
    format: &ProblemFormat,
    problem: Problem,
    echo: Option<&KeyEcho>,
) -> Response<ResponseBody<B>> {
    let rendered = format.render(&problem);
    let body = Bytes::from(rendered.body);
    let len = body.len();
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() =
        StatusCode::from_u16(rendered.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(rendered.content_type),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    // Checked when configured; an unusable one is left out, never a panic.
    if let Some(link) = format.link().and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(LINK, link);
    }
    if format.profile == ProblemProfile::Stripe {
        let retry = if problem.kind.retryable() {
            "true"
        } else {
            "false"
        };
        headers.insert(
            HeaderName::from_static(STRIPE_SHOULD_RETRY),
            HeaderValue::from_static(retry),
        );
    }
    if let Some(echo) = echo {
        echo.apply(&mut response);
    }
    response
}

/// [`problem`] with `Retry-After` (whole seconds, rounded up): only for
/// retryable problems, terminal ones never carry it.
pub(crate) fn problem_with_retry<B>(
    format: &ProblemFormat,
    p: Problem,
    echo: Option<&KeyEcho>,
    retry_after: Duration,
) -> Response<ResponseBody<B>> {
    debug_assert!(p.kind.retryable(), "Retry-After on a terminal problem");
    let mut response = problem(format, p, echo);
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// A stored response, replayed: status, headers and body as stored,
/// `Content-Length` recomputed, `Idempotent-Replayed: true`.
pub(crate) fn replay<B>(stored: &StoredResponse, echo: &KeyEcho) -> Response<ResponseBody<B>> {
    let body = stored.body.clone().unwrap_or_default();
    let mut response = Response::new(ResponseBody::full(body.clone()));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in &stored.headers {
        // Stored by this layer from valid headers; skip rather than fail if
        // an old record holds something odd.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(value.clone()),
        ) {
            headers.append(n, v);
        }
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(
        HeaderName::from_static(IDEMPOTENT_REPLAYED),
        HeaderValue::from_static("true"),
    );
    echo.apply(&mut response);
    response
}

/// Shorthand for a problem of `kind` with a key.
pub(crate) fn kind(
    kind: ProblemType,
    detail: impl Into<String>,
    key: &idem_core::IdempotencyKey,
) -> Problem {
    Problem::new(kind, detail).with_key(Some(key))
}
