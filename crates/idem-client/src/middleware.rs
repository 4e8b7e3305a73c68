//! The middleware: one key per logical operation, retried until it is
//! answered, refused for good, or out of attempts or time.

use crate::error::{Error, GaveUp};
use crate::policy::{is_idempotent, RetryPolicy};
use crate::response::{self, Operation, Recognised};
use http::{Extensions, HeaderName, HeaderValue, StatusCode};
use idem_core::headers::IDEMPOTENCY_KEY;
use idem_core::{IdempotencyKey, ProblemType};
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Retries a request as one logical operation under one `Idempotency-Key`.
///
/// Each call through the client (each `send()`) is one logical operation:
///
/// - **The key.** A request that already has an `Idempotency-Key` header
///   keeps it. Otherwise the key comes from an [`IdempotencyKey`] in the
///   request's extensions (`RequestBuilder::with_extension`), or, for the
///   policy's key methods (POST and PATCH by default), a new UUID v4 is
///   generated and also stored in the extensions. Every attempt carries the
///   same key.
/// - **What is retried**: connection errors, timeouts, a connection that
///   broke before the response head, 408, 409 `request-in-progress`, 425,
///   429 and every 5xx, after the backoff or `Retry-After` (whichever is
///   longer), while attempts and the deadline last. Only requests with a
///   key or an idempotent method are retried, and only if their body can be
///   cloned (not a stream).
/// - **What is not**: any other 4xx (422 `key-reused` and `key-expired`
///   included), any problem whose body says `"retryable": false` (the
///   terminal 409s `outcome-unknown` and `response-not-replayable`
///   included, whatever their status), and any replayed response
///   (`Idempotent-Replayed: true`: the stored outcome will not change).
///   They are returned as they are.
/// - **What is an error** ([`Error`], inside
///   [`reqwest_middleware::Error::Middleware`]): 409 `outcome-unknown`, or a
///   504 `upstream-timeout` on the last attempt
///   ([`Error::OutcomeUnknown`]); no response at all when retrying stops
///   ([`Error::NoResponse`]). When retrying stops on a retryable *status*
///   (say a 503 on the last attempt), that response is returned.
///
/// Every response returned carries an [`Operation`] (key, attempts, replay
/// flag, problem) in its extensions; see [`ResponseExt`](crate::ResponseExt).
///
/// ```no_run
/// use idem_client::{IdempotentRetry, ResponseExt, RetryPolicy};
///
/// # async fn f() -> Result<(), idem_client::Error> {
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(IdempotentRetry::new(RetryPolicy::default()))
///     .build();
/// let response = client
///     .post("http://127.0.0.1:8080/charges")
///     .header("content-type", "application/json")
///     .body(r#"{"amount":100,"currency":"eur"}"#)
///     .send()
///     .await?;
/// let op = response.operation().unwrap();
/// println!("{} after {} attempt(s), replayed: {}", response.status(), op.attempts, op.replayed);
/// # Ok(()) }
/// ```
///
/// Put it first (outermost) in the middleware chain, and do not combine it
/// with another retrying middleware.
#[derive(Debug)]
pub struct IdempotentRetry {
    policy: RetryPolicy,
    rng: Mutex<StdRng>,
}

impl IdempotentRetry {
    /// A middleware that retries by `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        let rng = match policy.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        IdempotentRetry {
            policy,
            rng: Mutex::new(rng),
        }
    }

    /// The policy it retries by.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        self.policy.delay(retry, retry_after, &mut *rng)
    }
}

/// `reqwest::Client` wrapped with [`IdempotentRetry`] and nothing else.
///
/// ```
/// let client = idem_client::client(reqwest::Client::new(), idem_client::RetryPolicy::default());
/// let request = client.post("http://127.0.0.1:8080/charges");
/// # drop(request);
/// ```
pub fn client(
    inner: reqwest::Client,
    policy: RetryPolicy,
) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(inner)
        .with(IdempotentRetry::new(policy))
        .build()
}

/// Why an attempt did not settle the operation.
enum Last {
    /// A response with a retryable status.
    Response(Response, Option<Recognised>),
    /// A transport error worth retrying.
    Error(reqwest_middleware::Error),
    /// Cut short by our own timer (attempt timeout or deadline).
    TimedOut,
}

/// What one attempt came to.
enum Step {
    /// A response to hand back.
    Done(Response, Option<Recognised>),
    /// 409 `outcome-unknown`.
    OutcomeUnknown(Option<String>),
    /// An error no retry can fix.
    Fatal(reqwest_middleware::Error),
    /// Worth another attempt, after at least this long.
    Retry(Last, Option<Duration>),
}

/// Connection refused, reset or timed out, or the request broke off: the
/// transport failures a retry can fix. Builder, redirect and other
/// middleware errors are not.
fn retryable_error(error: &reqwest_middleware::Error) -> bool {
    match error {
        reqwest_middleware::Error::Reqwest(e) => {
            !e.is_builder()
                && !e.is_redirect()
                && !e.is_status()
                && (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body())
        }
        reqwest_middleware::Error::Middleware(_) => false,
    }
}

/// Statuses that mean "nothing was done (or it is still being done): come
/// back later". 409 is decided by its problem type, not here.
fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error()
}

async fn attempt<'a>(next: Next<'a>, request: Request, extensions: &'a mut Extensions) -> Step {
    let response = match next.run(request, extensions).await {
        Ok(response) => response,
        Err(e) if retryable_error(&e) => return Step::Retry(Last::Error(e), None),
        Err(e) => return Step::Fatal(e),
    };
    let status = response.status();
    let replayed = response::is_replayed(response.headers());
    let wait = response::retry_after(response.headers(), SystemTime::now());
    let (response, problem) = match response::read_problem(response).await {
        Ok(read) => read,
        // The body broke off: as good as no response.
        Err(e) => return Step::Retry(Last::Error(e.into()), None),
    };
    match problem.as_ref().map(|p| p.kind) {
        Some(ProblemType::OutcomeUnknown) => {
            return Step::OutcomeUnknown(problem.and_then(|p| p.detail))
        }
        // A terminal answer (`outcome-unknown` above, `response-not-replayable`,
        // `key-reused`, ...): the server says no retry with this key changes it.
        _ if problem.as_ref().and_then(|p| p.retryable) == Some(false) => {
            return Step::Done(response, problem)
        }
        Some(ProblemType::RequestInProgress) => {
            return Step::Retry(Last::Response(response, problem), wait)
        }
        _ => {}
    }
    if replayed || status == StatusCode::CONFLICT || !retryable_status(status) {
        return Step::Done(response, problem);
    }
    Step::Retry(Last::Response(response, problem), wait)
}

/// Finds or assigns the operation's key; `None` for a request that gets none.
fn assign_key(
    request: &mut Request,
    extensions: &mut Extensions,
    policy: &RetryPolicy,
) -> Option<String> {
    let header = HeaderName::from_static(IDEMPOTENCY_KEY);
    if let Some(value) = request.headers().get(&header) {
        // Reported unquoted, as the server sees it; sent as the caller wrote it.
        return Some(match IdempotencyKey::parse(value.as_bytes()) {
            Ok(key) => key.as_str().to_owned(),
            Err(_) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        });
    }
    let key = match extensions.get::<IdempotencyKey>() {
        Some(key) => key.clone(),
        None if policy.keys(request.method()) => {
            let generated = uuid::Uuid::new_v4().to_string();
            let key = IdempotencyKey::parse(generated.as_bytes())
                .expect("a hyphenated UUID is a valid key");
            // Kept in the extensions too: an outer layer that re-sends the
            // same request with the same extensions gets the same key.
            extensions.insert(key.clone());
            key
        }
        None => return None,
    };
    let value = HeaderValue::from_str(key.as_str()).expect("a valid key is visible ASCII");
    request.headers_mut().insert(header, value);
    Some(key.as_str().to_owned())
}

fn done(
    mut response: Response,
    key: Option<String>,
    attempts: u32,
    problem: Option<Recognised>,
) -> Response {
    let operation = Operation {
        key,
        attempts,
        replayed: response::is_replayed(response.headers()),
        problem: problem.map(|p| p.kind),
    };
    response.extensions_mut().insert(operation);
    response
}

fn fail(error: Error) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(error)
}

/// Ends the operation with what its last attempt got.
fn give_up(
    last: Last,
    reason: GaveUp,
    key: Option<String>,
    attempts: u32,
) -> reqwest_middleware::Result<Response> {
    tracing::debug!(key = key.as_deref().unwrap_or("-"), attempts, %reason, "giving up");
    match last {
        Last::Response(_, Some(problem)) if problem.kind == ProblemType::UpstreamTimeout => {
            Err(fail(Error::OutcomeUnknown {
                key,
                attempts,
                detail: problem.detail,
            }))
        }
        Last::Response(response, problem) => Ok(done(response, key, attempts, problem)),
        Last::Error(e) => Err(fail(Error::NoResponse {
            key,
            attempts,
            reason,
            last: Some(e),
        })),
        Last::TimedOut => Err(fail(Error::NoResponse {
            key,
            attempts,
            reason,
            last: None,
        })),
    }
}

fn describe(last: &Last) -> String {
    match last {
        Last::Response(response, Some(problem)) => {
            format!("{} {}", response.status().as_u16(), problem.kind.slug())
        }
        Last::Response(response, None) => response.status().as_u16().to_string(),
        Last::Error(e) => e.to_string(),
        Last::TimedOut => "attempt timed out".to_owned(),
    }
}

#[async_trait::async_trait]
impl Middleware for IdempotentRetry {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let deadline = Instant::now() + self.policy.deadline;
        let key = assign_key(&mut request, extensions, &self.policy);
        let repeatable = key.is_some() || is_idempotent(request.method());
        let mut pending = Some(request);
        let mut attempts = 0u32;
        loop {
            let Some(request) = pending.take() else {
                unreachable!("every loop turn that continues keeps a copy of the request");
            };
            attempts += 1;
            let more_allowed = repeatable && attempts < self.policy.max_attempts;
            pending = if more_allowed {
                request.try_clone()
            } else {
                None
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let budget = self
                .policy
                .attempt_timeout
                .map_or(remaining, |t| t.min(remaining));
            let cut_by_deadline = budget == remaining;
            let step = tokio::time::timeout(budget, attempt(next.clone(), request, extensions))
                .await
                .unwrap_or(Step::Retry(Last::TimedOut, None));
            let (last, wait) = match step {
                Step::Done(response, problem) => return Ok(done(response, key, attempts, problem)),
                Step::OutcomeUnknown(detail) => {
                    return Err(fail(Error::OutcomeUnknown {
                        key,
                        attempts,
                        detail,
                    }))
                }
                Step::Fatal(e) => return Err(e),
                Step::Retry(last, wait) => (last, wait),
            };
            if matches!(last, Last::TimedOut) && cut_by_deadline {
                return give_up(last, GaveUp::Deadline, key, attempts);
            }
            if pending.is_none() {
                let reason = if more_allowed || !repeatable {
                    GaveUp::NotRetryable
                } else {
                    GaveUp::MaxAttempts
                };
                return give_up(last, reason, key, attempts);
            }
            let delay = self.delay(attempts, wait);
            if Instant::now() + delay >= deadline {
                return give_up(last, GaveUp::Deadline, key, attempts);
            }
            tracing::debug!(
                key = key.as_deref().unwrap_or("-"),
                attempt = attempts,
                delay_ms = delay.as_millis() as u64,
                after = %describe(&last),
                "retrying"
            );
            // Dropping the last response (if any) before the wait frees its
            // connection.
            drop(last);
            tokio::time::sleep(delay).await;
        }
    }
}
