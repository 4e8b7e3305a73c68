use crate::bounds::{ClientBody, Inner};
use crate::budget::Reservation;
use crate::config::AmbiguousPath;
use crate::execute::Owner;
use crate::future::DetachOnDrop;
use crate::metrics::{self, Outcome, StoreOp};
use crate::respond::{self, KeyEcho};
use crate::settle::Adoption;
use crate::shared::Shared;
use crate::{BoxError, EffectivePolicy, RequestBody, ResponseBody, ResponseFuture};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::BodyExt;
use idem_core::decision::ExistingOutcome;
use idem_core::path::NormalisedPath;
use idem_core::scope::{CredentialError, Resolved};
use idem_core::{
    Fingerprint, FingerprintInput, IdempotencyKey, InFlightMode, ProblemType, RecordId,
};
use idem_store::{Claim, ClaimOutcome};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Instant as TokioInstant;
use tower_service::Service;

/// The service [`IdempotencyLayer`](crate::IdempotencyLayer) wraps around an
/// inner service.
///
/// It serves `Request<B>` for any body `B` of [`Bytes`] frames (`Send`,
/// `'static`, errors into [`BoxError`]) when the inner service `S` serves
/// `Request<RequestBody<B>>` with such a body too (`Send`, `Unpin`), its
/// future is `Send + 'static`, and its error is `Into<BoxError> + Send`.
#[derive(Clone)]
pub struct Idempotency<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S> Idempotency<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes this service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .field("layer", &self.shared)
            .finish()
    }
}

impl<S, B> Service<Request<B>> for Idempotency<S>
where
    S: Inner<B> + Clone,
    B: ClientBody,
{
    type Response = Response<ResponseBody<S::Body>>;
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
        let route = match config.route_position(request.method(), &path) {
            Ok(route) => route.and_then(|i| shared.routes.get(i).cloned()),
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
                    &config.problems,
                    problem,
                    None,
                ))));
            }
        };
        // What the upstream receives is what the route was matched on.
        // (`OPTIONS *` and other non-path targets are left as they are.)
        if !path.is_unchanged() && request.uri().path().starts_with('/') {
            let normal = path.as_str().to_owned();
            if let Err(problem) = set_path(&mut request, &normal) {
                return ResponseFuture::new(std::future::ready(Ok(respond::problem(
                    &config.problems,
                    problem,
                    None,
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
                ResponseFuture::new(std::future::ready(Ok(respond::problem(
                    &config.problems,
                    problem,
                    None,
                ))))
            }
            (Ok(None), _) if policy.policy.require_key => {
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
                ResponseFuture::new(std::future::ready(Ok(respond::problem(
                    &config.problems,
                    problem,
                    None,
                ))))
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
                            &config.problems,
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
async fn pass_through<S: Inner<B>, B: ClientBody>(
    inner: S,
    request: Request<B>,
) -> Result<Response<ResponseBody<S::Body>>, S::Error> {
    forward(inner, request.map(RequestBody::stream)).await
}

async fn keyed<S: Inner<B>, B: ClientBody>(
    shared: Arc<Shared>,
    inner: S,
    request: Request<B>,
    id: RecordId,
    policy: Arc<EffectivePolicy>,
    echo: KeyEcho,
) -> Result<Response<ResponseBody<S::Body>>, S::Error> {
    let config = &shared.config;
    let (parts, body) = request.into_parts();
    let too_large = || {
        metrics::count(Outcome::Rejected);
        Ok(respond::problem(
            &config.problems,
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
    let mut held = shared.budget.reservation();
    let overloaded = || {
        Ok(overloaded(
            &shared,
            &id,
            &echo,
            "so this request was refused before anything was claimed or forwarded",
        ))
    };
    // A declared length is reserved at once, so a flood of large uploads is
    // refused before their bytes arrive.
    if let Some(n) = declared {
        if !held.try_hold(n as usize) {
            return overloaded();
        }
    }
    let deadline = crate::clock::deadline_after(config.request_body_timeout);
    let body = match read_request_body(body, config.max_request_body, &mut held, deadline).await {
        Ok(bytes) => bytes,
        Err(BodyReadError::TooLarge) => return too_large(),
        Err(BodyReadError::OverBudget) => return overloaded(),
        Err(BodyReadError::TimedOut) => {
            metrics::count(Outcome::Rejected);
            return Ok(respond::problem(
                &config.problems,
                respond::kind(
                    ProblemType::BodyTimeout,
                    format!(
                        "The request body did not arrive within {:?}. Nothing was claimed or executed; retry with the same key.",
                        config.request_body_timeout
                    ),
                    &id.key,
                ),
                Some(&echo),
            ));
        }
        Err(BodyReadError::Broken(e)) => {
            metrics::count(Outcome::Rejected);
            return Ok(respond::problem(
                &config.problems,
                respond::kind(
                    ProblemType::BodyUnreadable,
                    format!("The request body could not be read: {e}. Nothing was executed."),
                    &id.key,
                ),
                Some(&echo),
            ));
        }
    };
    held.shrink_to(body.len());

    let fingerprint = match fingerprint_off_workers(&policy, &parts, &body, &mut held).await {
        Some(fingerprint) => fingerprint,
        None => return overloaded(),
    };
    // From the claim on, the work no longer belongs to the client's
    // connection: a client that hangs up (even while its claim is being
    // written) must not leave a claim that nobody executes or releases.
    let executions = shared.executions.clone();
    let claim = Claimable {
        shared,
        inner,
        parts,
        body,
        id,
        fingerprint,
        policy,
        echo,
        held,
    };
    DetachOnDrop::new(claim_and_answer(claim), executions).await
}

/// Why a keyed request's body was not read.
enum BodyReadError {
    TooLarge,
    OverBudget,
    TimedOut,
    Broken(BoxError),
}

/// Reads the whole body, at most `max` bytes, each chunk counted against
/// the buffer budget, all of it before `deadline`.
async fn read_request_body<B: ClientBody>(
    body: B,
    max: usize,
    held: &mut Reservation,
    deadline: TokioInstant,
) -> Result<Bytes, BodyReadError> {
    let mut body = std::pin::pin!(body);
    // Most bodies come in one chunk: it is kept as it came, and a list (an
    // allocation) starts only with the second.
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyReadError::TimedOut),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyReadError::Broken(e.into())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not part of the fingerprint
        };
        len = len.saturating_add(data.len());
        if len > max {
            return Err(BodyReadError::TooLarge);
        }
        // Joining the chunks at the end needs the bytes twice, briefly.
        if !held.try_hold(len.saturating_mul(2)) {
            return Err(BodyReadError::OverBudget);
        }
        if first.is_none() {
            first = Some(data);
        } else {
            rest.push(data);
        }
    }
    let Some(first) = first else {
        return Ok(Bytes::new());
    };
    if rest.is_empty() {
        return Ok(first);
    }
    let mut joined = bytes::BytesMut::with_capacity(len);
    for chunk in std::iter::once(first).chain(rest) {
        joined.extend_from_slice(&chunk);
    }
    Ok(joined.freeze())
}

/// Bodies at least this large are fingerprinted on a blocking thread:
/// canonicalising megabytes of JSON would stall every request sharing the
/// async worker.
const FINGERPRINT_OFF_WORKERS: usize = 64 * 1024;

/// The request's fingerprint, computed on a blocking thread for a large
/// JSON body, with the canonical form's memory counted against the budget.
/// `None` when the budget cannot hold it.
async fn fingerprint_off_workers(
    policy: &Arc<EffectivePolicy>,
    parts: &http::request::Parts,
    body: &Bytes,
    held: &mut Reservation,
) -> Option<Fingerprint> {
    let json = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| idem_core::fingerprint::is_json_media_type(v.as_bytes()));
    if !json || body.len() < FINGERPRINT_OFF_WORKERS {
        return Some(fingerprint(policy, parts, body));
    }
    // The canonical form takes at most about three times the body.
    let before = body.len();
    if !held.try_hold(before.saturating_mul(4)) {
        return None;
    }
    let (route, method, uri, headers, bytes) = (
        policy.clone(),
        parts.method.clone(),
        parts.uri.clone(),
        parts.headers.clone(),
        body.clone(),
    );
    let computed = tokio::task::spawn_blocking(move || {
        fingerprint_of(&route, &method, &uri, &headers, &bytes)
    })
    .await;
    held.shrink_to(before);
    match computed {
        Ok(fingerprint) => Some(fingerprint),
        // The blocking pool is shutting down: compute here rather than fail.
        Err(_) => Some(fingerprint(policy, parts, body)),
    }
}

/// A keyed request read and fingerprinted, with what answering it needs:
/// everything [`claim_and_answer`] takes.
struct Claimable<S> {
    shared: Arc<Shared>,
    inner: S,
    parts: http::request::Parts,
    body: Bytes,
    id: RecordId,
    fingerprint: Fingerprint,
    /// What applies on the request's route.
    policy: Arc<EffectivePolicy>,
    echo: KeyEcho,
    /// The request's buffered bytes, counted against the budget.
    held: Reservation,
}

/// Claims the key and answers: executes as the owner, replays, waits, or
/// refuses, as the record says.
async fn claim_and_answer<S: Inner<B>, B: ClientBody>(
    request: Claimable<S>,
) -> Result<Response<ResponseBody<S::Body>>, S::Error> {
    let Claimable {
        shared,
        inner,
        parts,
        body,
        id,
        fingerprint,
        policy,
        echo,
        held,
    } = request;
    let config = &shared.config;
    let deadline = match policy.policy.in_flight {
        InFlightMode::Wait(bound) => Some(crate::clock::deadline_after(bound)),
        InFlightMode::Reject => None,
    };
    // Made on the first wait only: most keyed requests never poll.
    let mut polls = None;
    // One attempt nonce for every claim this request makes: a repeat of a
    // claim whose reply was lost is then recognised as its own.
    let mut attempt = None;
    // An unconfirmed claim of this process on the key (a request before
    // this one got 503 although its claim may have committed): settle it
    // first; if it is this very request, execute under it.
    let mut adoption = Some(crate::settle::adopt(&shared, &id, &fingerprint).await);
    loop {
        let outcome = match adoption.take() {
            Some(Adoption::Adopted { token }) => {
                tracing::info!(key = %id.key, "a retry adopted its earlier, unconfirmed claim");
                Ok(ClaimOutcome::Claimed { token })
            }
            // Not a new claim: one more unconfirmed attempt would only
            // hold the key longer.
            Some(Adoption::StoreDown(e)) => Err(e),
            Some(Adoption::NotOurs) | None => {
                claim_settled(&shared, &id, fingerprint, &policy, &mut attempt).await
            }
        };
        let (outcome, record) = match outcome {
            Ok(ClaimOutcome::Claimed { token }) => {
                let owner = Owner {
                    shared: shared.clone(),
                    policy: policy.clone(),
                    id,
                    token,
                    echo,
                    held,
                };
                return Ok(owner.execute_buffered(inner, parts, body).await);
            }
            Ok(ClaimOutcome::Existing { outcome, record }) => (outcome, record),
            Err(e) if e.is_full() => {
                metrics::count(Outcome::StoreError);
                tracing::warn!(error = &e as &dyn std::error::Error, key = %id.key, "store full; refusing a new key");
                return Ok(respond::problem_with_retry(
                    &config.problems,
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
                tracing::error!(error = &e as &dyn std::error::Error, key = %id.key, "store unavailable; forwarding unprotected (fail_open)");
                let request = http::Request::from_parts(parts, RequestBody::buffered(body));
                let mut response = forward(inner, request).await?;
                echo.apply(&mut response);
                return Ok(response);
            }
            Err(e) => {
                metrics::count(Outcome::StoreError);
                tracing::error!(error = &e as &dyn std::error::Error, key = %id.key, "store unavailable; refusing (fail closed)");
                return Ok(respond::problem_with_retry(
                    &config.problems,
                    respond::kind(
                        ProblemType::StoreUnavailable,
                        "The idempotency store cannot be reached, so the request was not forwarded. Retry with the same key: a claim the store may have taken is given back as soon as it answers.",
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
                    let pause = polls
                        .get_or_insert_with(|| {
                            crate::clock::Backoff::new(
                                Duration::from_millis(10),
                                Duration::from_millis(200),
                            )
                        })
                        .next_pause();
                    shared
                        .waiters
                        .wait(&*shared.store, &id, pause.min(remaining))
                        .await;
                    continue;
                }
                _ => {
                    metrics::count(Outcome::Conflict);
                    respond::problem_with_retry(
                        &config.problems,
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
                        unreachable_unknown(config, &id.key, &echo)
                    }
                    Some(stored) => {
                        // The stored body is in memory until it is sent: a
                        // replay the budget cannot hold is refused (and its
                        // copy dropped at once) rather than held.
                        let mut held = held;
                        held.shrink_to(0);
                        if !held.try_hold(stored.body.as_ref().map_or(0, |b| b.len())) {
                            return Ok(overloaded(
                                &shared,
                                &id,
                                &echo,
                                "so the stored response was not sent; it is kept",
                            ));
                        }
                        let mut replay = respond::replay(stored, &echo);
                        replay.body_mut().hold(held);
                        return Ok(replay);
                    }
                    None => unreachable_unknown(config, &id.key, &echo),
                }
            }
            ExistingOutcome::Mismatch => {
                metrics::count(Outcome::Mismatch);
                respond::problem(
                    &config.problems,
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
                respond::problem(&config.problems, p, Some(&echo))
            }
            ExistingOutcome::Unknown => unreachable_unknown(config, &id.key, &echo),
            ExistingOutcome::Expired => {
                metrics::count(Outcome::Expired);
                respond::problem(
                    &config.problems,
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

/// Claims the key with this request's attempt nonce (drawn on its first
/// claim). A claim whose reply is lost is repeated before the answer and,
/// if the store stays silent, settled in the background.
async fn claim_settled(
    shared: &Arc<Shared>,
    id: &RecordId,
    fingerprint: Fingerprint,
    policy: &EffectivePolicy,
    attempt: &mut Option<u64>,
) -> Result<ClaimOutcome, idem_store::StoreError> {
    let claim = Claim::new(
        id.clone(),
        fingerprint,
        shared.clock.now(),
        &policy.retention,
        policy.policy.upstream_dedupes,
    )
    .with_holder(Some(shared.config.instance.clone()));
    let claim = match *attempt {
        Some(attempt) => claim.with_attempt(attempt),
        None => {
            *attempt = Some(claim.attempt);
            claim
        }
    };
    let unsettled = crate::unsettled::Unsettled {
        attempt: claim.attempt,
        fingerprint,
        reclaim_unknown: policy.policy.upstream_dedupes,
        retention: policy.retention,
    };
    let started = Instant::now();
    let outcome = shared.store.claim(claim).await;
    shared.store_ops.record(StoreOp::Claim, started);
    match outcome {
        // The claim may have committed with its reply lost: ask again (same
        // attempt) before answering.
        Err(e) if !e.is_full() => {
            tracing::warn!(error = &e as &dyn std::error::Error, key = %id.key, "claim not confirmed; settling it");
            let outcome = crate::settle::inline(shared, id, &unsettled).await;
            if outcome.is_err() {
                crate::settle::in_background(shared.clone(), id.clone(), unsettled);
            }
            outcome
        }
        outcome => outcome,
    }
}

/// 503 `overloaded`: the buffer budget is spent. `what` says what that
/// meant for this request.
fn overloaded<RB>(
    shared: &Shared,
    id: &RecordId,
    echo: &KeyEcho,
    what: &str,
) -> Response<ResponseBody<RB>> {
    metrics::count(Outcome::Overloaded);
    tracing::warn!(key = %id.key, buffered = shared.budget.used(), "buffer budget spent; refusing a keyed request");
    respond::problem_with_retry(
        &shared.config.problems,
        respond::kind(
            ProblemType::Overloaded,
            format!(
                "The gateway holds its budget of {} buffered bytes, {what}. Retry later with the same key.",
                shared.config.max_buffered_bytes
            ),
            &id.key,
        ),
        Some(echo),
        shared.config.retry_after,
    )
}

fn unreachable_unknown<RB>(
    config: &crate::IdempotencyConfig,
    key: &IdempotencyKey,
    echo: &KeyEcho,
) -> Response<ResponseBody<RB>> {
    metrics::count(Outcome::Unknown);
    respond::problem(
        &config.problems,
        respond::kind(
            ProblemType::OutcomeUnknown,
            "An earlier request with this key was sent upstream but its outcome is unknown. It will not be executed again; reconcile before retrying with a new key.",
            key,
        ),
        Some(echo),
    )
}

/// Unprotected: the request as it is, the response streamed.
async fn forward<S: Inner<B>, B: ClientBody>(
    mut inner: S,
    request: Request<RequestBody<B>>,
) -> Result<Response<ResponseBody<S::Body>>, S::Error> {
    let response = inner.call(request).await?;
    Ok(response.map(ResponseBody::stream))
}

fn fingerprint(policy: &EffectivePolicy, parts: &http::request::Parts, body: &[u8]) -> Fingerprint {
    fingerprint_of(policy, &parts.method, &parts.uri, &parts.headers, body)
}

fn fingerprint_of(
    policy: &EffectivePolicy,
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Fingerprint {
    let extra: Vec<(&str, Option<&[u8]>)> = policy
        .fingerprint_headers
        .iter()
        .map(|name| (name.as_str(), headers.get(name).map(|v| v.as_bytes())))
        .collect();
    Fingerprint::compute_ignoring(
        &FingerprintInput {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query(),
            content_type: headers.get(CONTENT_TYPE).map(|v| v.as_bytes()),
            extra_headers: &extra,
            body,
        },
        &policy.fingerprint_ignore,
    )
}
