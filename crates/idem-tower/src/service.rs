use crate::config::AmbiguousPath;
use crate::execute::Owner;
use crate::future::DetachOnDrop;
use crate::layer::Shared;
use crate::metrics::{self, Outcome};
use crate::respond::{self, KeyEcho};
use crate::{BoxError, RequestBody, ResponseBody, ResponseFuture};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use idem_core::decision::ExistingOutcome;
use idem_core::path::NormalisedPath;
use idem_core::scope::{CredentialError, Resolved};
use idem_core::{
    Fingerprint, FingerprintInput, IdempotencyKey, InFlightMode, Policy, ProblemType, RecordId,
};
use idem_store::{Claim, ClaimOutcome};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;
use tower_service::Service;

/// The service [`IdempotencyLayer`](crate::IdempotencyLayer) wraps around an
/// inner service.
#[derive(Clone)]
pub struct Idempotency<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S, B, RB> Service<Request<B>> for Idempotency<S>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Take the service that was driven to readiness; leave a clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let config = &shared.config;
        let path = NormalisedPath::new(request.uri().path());
        let route = match config.route_for_path(request.method(), &path) {
            Ok(route) => route.map(|r| r.policy),
            Err(AmbiguousPath) => {
                metrics::count(Outcome::Rejected);
                let problem = idem_core::Problem::new(
                    ProblemType::AmbiguousPath,
                    format!(
                        "The path {:?} reads differently to different servers (`;` parameters, an escaped `/` or `\\`), and one reading falls under another idempotency rule than the other. Nothing was forwarded; send the path in its plain form.",
                        request.uri().path()
                    ),
                );
                return ResponseFuture::new(std::future::ready(Ok(respond::problem(
                    problem, None,
                ))));
            }
        };
        // What the upstream receives is what the route was matched on.
        // (`OPTIONS *` and other non-path targets are left as they are.)
        if !path.is_unchanged() && request.uri().path().starts_with('/') {
            let normal = path.as_str().to_owned();
            if let Err(problem) = set_path(&mut request, &normal) {
                return ResponseFuture::new(std::future::ready(Ok(respond::problem(
                    problem, None,
                ))));
            }
        }
        let Some(policy) = route else {
            return ResponseFuture::new(pass_through(inner, request));
        };
        let mut values = request.headers().get_all(&config.key_header).iter();
        let first = values.next().cloned();
        let key = IdempotencyKey::from_header_values(
            first
                .iter()
                .map(|v| v.as_bytes())
                .chain(values.map(|v| v.as_bytes())),
        );
        match (key, first) {
            (Err(e), _) => {
                metrics::count(Outcome::Rejected);
                let problem = idem_core::Problem::new(ProblemType::InvalidKey, e.to_string());
                ResponseFuture::new(std::future::ready(Ok(respond::problem(problem, None))))
            }
            (Ok(None), _) if policy.require_key => {
                metrics::count(Outcome::Rejected);
                let problem = idem_core::Problem::new(
                    ProblemType::MissingKey,
                    format!(
                        "{} {} requires an {} header.",
                        request.method(),
                        request.uri().path(),
                        config.key_header
                    ),
                );
                ResponseFuture::new(std::future::ready(Ok(respond::problem(problem, None))))
            }
            (Ok(Some(key)), Some(raw)) => {
                let echo = KeyEcho {
                    header: config.key_header.clone(),
                    value: raw,
                };
                match config.scope.resolve(request.headers(), shared.clock.now()) {
                    Ok(Resolved::Scope(scope)) => ResponseFuture::new(keyed(
                        shared.clone(),
                        inner,
                        request,
                        RecordId { scope, key },
                        policy,
                        echo,
                    )),
                    Ok(Resolved::PassThrough) => {
                        metrics::count(Outcome::Anonymous);
                        ResponseFuture::new(async move {
                            let mut response = pass_through(inner, request).await?;
                            echo.apply(&mut response);
                            Ok(response)
                        })
                    }
                    Err(e) => {
                        metrics::count(Outcome::Rejected);
                        let kind = match e {
                            CredentialError::Missing(_) => ProblemType::CredentialRequired,
                            CredentialError::Invalid(_) => ProblemType::InvalidCredential,
                        };
                        let problem = respond::kind(kind, e.to_string(), &key);
                        ResponseFuture::new(std::future::ready(Ok(respond::problem(
                            problem,
                            Some(&echo),
                        ))))
                    }
                }
            }
            (Ok(_), _) => ResponseFuture::new(pass_through(inner, request)),
        }
    }
}

/// Replaces the request's path, keeping its query.
fn set_path<B>(request: &mut Request<B>, path: &str) -> Result<(), idem_core::Problem> {
    let pq = match request.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| {
        idem_core::Problem::new(
            ProblemType::AmbiguousPath,
            "The request path cannot be put in normal form. Nothing was forwarded.",
        )
    })?);
    *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| {
        idem_core::Problem::new(
            ProblemType::AmbiguousPath,
            "The request path cannot be put in normal form. Nothing was forwarded.",
        )
    })?;
    Ok(())
}

/// Unprotected: streamed both ways, nothing buffered.
async fn pass_through<S, B, RB>(
    mut inner: S,
    request: Request<B>,
) -> Result<Response<ResponseBody<RB>>, S::Error>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>>,
{
    let response = inner.call(request.map(RequestBody::stream)).await?;
    Ok(response.map(ResponseBody::stream))
}

async fn keyed<S, B, RB>(
    shared: Arc<Shared>,
    inner: S,
    request: Request<B>,
    id: RecordId,
    policy: Policy,
    echo: KeyEcho,
) -> Result<Response<ResponseBody<RB>>, S::Error>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
    RB::Error: Into<BoxError>,
{
    let config = &shared.config;
    let (parts, body) = request.into_parts();
    let too_large = || {
        metrics::count(Outcome::Rejected);
        Ok(respond::problem(
            respond::kind(
                ProblemType::BodyTooLarge,
                format!(
                    "The request body is over the {} byte limit.",
                    config.max_request_body
                ),
                &id.key,
            ),
            Some(&echo),
        ))
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_request_body as u64) {
        return too_large();
    }
    let body = match Limited::new(body, config.max_request_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => {
            metrics::count(Outcome::Rejected);
            return Ok(respond::problem(
                respond::kind(
                    ProblemType::BodyUnreadable,
                    format!("The request body could not be read: {e}. Nothing was executed."),
                    &id.key,
                ),
                Some(&echo),
            ));
        }
    };

    let fingerprint = fingerprint(config, &parts, &body);
    // From the claim on, the work no longer belongs to the client's
    // connection: a client that hangs up (even while its claim is being
    // written) must not leave a claim that nobody executes or releases.
    DetachOnDrop::new(
        claim_and_answer(
            shared.clone(),
            inner,
            parts,
            body,
            id,
            fingerprint,
            policy,
            echo,
        ),
        shared.executions.clone(),
    )
    .await
}

/// Claims the key and answers: executes as the owner, replays, waits, or
/// refuses, as the record says.
#[allow(clippy::too_many_arguments)]
async fn claim_and_answer<S, B, RB>(
    shared: Arc<Shared>,
    inner: S,
    parts: http::request::Parts,
    body: Bytes,
    id: RecordId,
    fingerprint: Fingerprint,
    policy: Policy,
    echo: KeyEcho,
) -> Result<Response<ResponseBody<RB>>, S::Error>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
    RB::Error: Into<BoxError>,
{
    let config = &shared.config;
    let deadline = match policy.in_flight {
        InFlightMode::Wait(bound) => Some(crate::clock::deadline_after(bound)),
        InFlightMode::Reject => None,
    };
    let mut poll = Duration::from_millis(10);
    loop {
        let now = shared.clock.now();
        let claim = Claim::new(
            id.clone(),
            fingerprint,
            now,
            &config.retention,
            policy.upstream_dedupes,
        );
        let started = Instant::now();
        let outcome = shared.store.claim(claim).await;
        metrics::store_op(shared.store.engine(), "claim", started);
        let (outcome, record) = match outcome {
            Ok(ClaimOutcome::Claimed { token }) => {
                let request = http::Request::from_parts(parts, RequestBody::buffered(body));
                let owner = Owner {
                    shared: shared.clone(),
                    id,
                    token,
                    echo,
                };
                return Ok(owner.execute(inner, request).await);
            }
            Ok(ClaimOutcome::Existing { outcome, record }) => (outcome, record),
            Err(e) if e.is_full() => {
                metrics::count(Outcome::StoreError);
                tracing::warn!(error = %e, key = %id.key, "store full; refusing a new key");
                return Ok(respond::problem_with_retry(
                    respond::kind(
                        ProblemType::StoreFull,
                        "The idempotency store holds its maximum number of records, so this new key was refused and the request was not forwarded. Retry later with the same key.",
                        &id.key,
                    ),
                    Some(&echo),
                    config.retry_after,
                ));
            }
            Err(e) if config.fail_open => {
                metrics::count(Outcome::FailOpen);
                tracing::error!(error = %e, key = %id.key, "store unavailable; forwarding unprotected (fail_open)");
                let request = http::Request::from_parts(parts, RequestBody::buffered(body));
                let mut response = pass_through_buffered(inner, request).await?;
                echo.apply(&mut response);
                return Ok(response);
            }
            Err(e) => {
                metrics::count(Outcome::StoreError);
                tracing::error!(error = %e, key = %id.key, "store unavailable; refusing (fail closed)");
                return Ok(respond::problem_with_retry(
                    respond::kind(
                        ProblemType::StoreUnavailable,
                        "The idempotency store cannot be reached, so the request was not forwarded. Retry with the same key.",
                        &id.key,
                    ),
                    Some(&echo),
                    config.retry_after,
                ));
            }
        };
        let response = match outcome {
            ExistingOutcome::InProgress { .. } => match deadline {
                Some(deadline) if TokioInstant::now() < deadline => {
                    let remaining = deadline.saturating_duration_since(TokioInstant::now());
                    shared
                        .waiters
                        .wait(&*shared.store, &id, poll.min(remaining))
                        .await;
                    poll = (poll * 2).min(Duration::from_millis(200));
                    continue;
                }
                _ => {
                    metrics::count(Outcome::Conflict);
                    respond::problem_with_retry(
                        respond::kind(
                            ProblemType::RequestInProgress,
                            "A request with this key is still being executed. Retry later with the same key to get its response.",
                            &id.key,
                        ),
                        Some(&echo),
                        config.retry_after,
                    )
                }
            },
            ExistingOutcome::Replay => {
                metrics::count(Outcome::Replayed);
                match &record.response {
                    // Sealed by a gateway with encryption on, read by one
                    // without the key: never replay ciphertext.
                    Some(stored) if idem_store::is_sealed(stored) => {
                        tracing::error!(key = %id.key, "stored response is encrypted and no key is configured; answering outcome-unknown");
                        unreachable_unknown(&id.key, &echo)
                    }
                    Some(stored) => respond::replay(stored, &echo),
                    None => unreachable_unknown(&id.key, &echo),
                }
            }
            ExistingOutcome::Mismatch => {
                metrics::count(Outcome::Mismatch);
                respond::problem(
                    respond::kind(
                        ProblemType::KeyReused,
                        "This key was first used with a different request (method, path, query, content type or body). Use a new key for a new request.",
                        &id.key,
                    ),
                    Some(&echo),
                )
            }
            ExistingOutcome::NotReplayable { status } => {
                metrics::count(Outcome::NotReplayable);
                let mut p = respond::kind(
                    ProblemType::ResponseNotReplayable,
                    format!("The request with this key was executed and answered {status}, but its response was too large to store."),
                    &id.key,
                );
                p.original_status = Some(status);
                respond::problem(p, Some(&echo))
            }
            ExistingOutcome::Unknown => unreachable_unknown(&id.key, &echo),
            ExistingOutcome::Expired => {
                metrics::count(Outcome::Expired);
                respond::problem(
                    respond::kind(
                        ProblemType::KeyExpired,
                        "This key was used too long ago: its response is no longer kept. It was not executed again.",
                        &id.key,
                    ),
                    Some(&echo),
                )
            }
        };
        return Ok(response);
    }
}

fn unreachable_unknown<RB>(key: &IdempotencyKey, echo: &KeyEcho) -> Response<ResponseBody<RB>> {
    metrics::count(Outcome::Unknown);
    respond::problem(
        respond::kind(
            ProblemType::OutcomeUnknown,
            "An earlier request with this key was sent upstream but its outcome is unknown. It will not be executed again; reconcile before retrying with a new key.",
            key,
        ),
        Some(echo),
    )
}

async fn pass_through_buffered<S, B, RB>(
    mut inner: S,
    request: Request<RequestBody<B>>,
) -> Result<Response<ResponseBody<RB>>, S::Error>
where
    S: Service<Request<RequestBody<B>>, Response = Response<RB>>,
{
    let response = inner.call(request).await?;
    Ok(response.map(ResponseBody::stream))
}

fn fingerprint(
    config: &crate::IdempotencyConfig,
    parts: &http::request::Parts,
    body: &[u8],
) -> Fingerprint {
    let extra: Vec<(&str, Option<&[u8]>)> = config
        .fingerprint_headers
        .iter()
        .map(|name| (name.as_str(), parts.headers.get(name).map(|v| v.as_bytes())))
        .collect();
    Fingerprint::compute(&FingerprintInput {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        content_type: parts.headers.get(CONTENT_TYPE).map(|v| v.as_bytes()),
        extra_headers: &extra,
        body,
    })
}
