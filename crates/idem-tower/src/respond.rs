//! Responses the layer itself produces: problems and replays.

use crate::ResponseBody;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use idem_core::headers::IDEMPOTENT_REPLAYED;
use idem_core::problem::PROBLEM_CONTENT_TYPE;
use idem_core::{Problem, ProblemType, StoredResponse};
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

pub(crate) fn problem<B>(problem: Problem, echo: Option<&KeyEcho>) -> Response<ResponseBody<B>> {
    let body = Bytes::from(problem.to_json());
    let mut response = Response::new(ResponseBody::full(body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(problem.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Some(echo) = echo {
        echo.apply(&mut response);
    }
    response
}

pub(crate) fn problem_with_retry<B>(
    p: Problem,
    echo: Option<&KeyEcho>,
    retry_after: Duration,
) -> Response<ResponseBody<B>> {
    let mut response = problem(p, echo);
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
