//! The payments handler every mode shares, and the in-app idempotency the
//! flawed modes put around it.

use crate::Flaw;
use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use idem_core::fingerprint::canonical_json;
use idem_core::headers::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use idem_core::problem::PROBLEM_CONTENT_TYPE;
use idem_core::{IdempotencyKey, KeyError, Problem, ProblemType};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

/// The error type bodies are boxed into.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Amounts above this are declined (402) instead of paid.
const DECLINE_ABOVE: u64 = 1_000_000;
/// Largest request body read; a payment is a few dozen bytes.
const MAX_BODY: usize = 64 * 1024;
/// Prefix of the problem types the API itself (not idempotency) answers.
const PROBLEM_BASE: &str = "https://example.com/problems/";
const JSON: &str = "application/json";

/// What the in-app idempotency does; each flawed mode gets one thing wrong
/// and everything else right, so the auditor sees exactly one bug class.
#[derive(Debug, Clone, Copy)]
struct InApp {
    /// Records are keyed by (tenant, key); otherwise by the key alone.
    scoped: bool,
    /// A used key with a different body is refused (422 `key-reused`).
    fingerprinted: bool,
    /// The key is held in flight while the work runs (409 to duplicates).
    locked: bool,
    /// The outcome is stored even when the client left before it was ready.
    store_when_client_gone: bool,
}

impl InApp {
    const CORRECT: InApp = InApp {
        scoped: true,
        fingerprinted: true,
        locked: true,
        store_when_client_gone: true,
    };

    /// `None` for the modes that do no idempotency in the app: none at all,
    /// or idem's layer in front of it.
    fn for_flaw(flaw: Flaw) -> Option<InApp> {
        match flaw {
            Flaw::None | Flaw::NoIdempotency => None,
            Flaw::CheckThenAct => Some(InApp {
                locked: false,
                ..InApp::CORRECT
            }),
            Flaw::UnscopedKeys => Some(InApp {
                scoped: false,
                ..InApp::CORRECT
            }),
            Flaw::PayloadIgnored => Some(InApp {
                fingerprinted: false,
                ..InApp::CORRECT
            }),
            Flaw::StoreIfDelivered => Some(InApp {
                store_when_client_gone: false,
                ..InApp::CORRECT
            }),
        }
    }
}

/// Where a stored response is filed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RecordId {
    /// `None` when the mode does not scope keys.
    tenant: Option<String>,
    key: String,
}

#[derive(Debug)]
enum Entry {
    InFlight {
        fingerprint: Bytes,
    },
    Completed {
        fingerprint: Bytes,
        outcome: Outcome,
    },
}

impl Entry {
    fn fingerprint(&self) -> &Bytes {
        match self {
            Entry::InFlight { fingerprint } | Entry::Completed { fingerprint, .. } => fingerprint,
        }
    }
}

/// An executed attempt's response, as stored and replayed.
#[derive(Debug, Clone)]
struct Outcome {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
}

impl Outcome {
    fn json(status: StatusCode, body: &impl Serialize) -> Outcome {
        Outcome {
            status,
            content_type: JSON,
            // Serialising a struct of strings and integers cannot fail.
            body: serde_json::to_vec(body).unwrap_or_default().into(),
        }
    }

    fn into_response(self, echo: Option<&HeaderValue>, replayed: bool) -> Response<Full<Bytes>> {
        let mut response = respond(self.status, self.content_type, self.body);
        if replayed {
            response.headers_mut().insert(
                HeaderName::from_static(IDEMPOTENT_REPLAYED),
                HeaderValue::from_static("true"),
            );
        }
        echo_key(&mut response, echo);
        response
    }
}

/// Everything the API remembers. One mutex, so that the side effect and
/// what the idempotency wrapper records about it change together.
#[derive(Debug, Default)]
struct State {
    payments: u64,
    declines: u64,
    payments_by_tenant: HashMap<String, u64>,
    records: HashMap<RecordId, Entry>,
}

/// A validated `POST /payments` body.
#[derive(Debug)]
struct Payment {
    amount: u64,
    currency: String,
}

#[derive(Serialize)]
struct Succeeded<'a> {
    id: String,
    amount: u64,
    currency: &'a str,
    status: &'static str,
}

#[derive(Serialize)]
struct Declined {
    error: &'static str,
    decline_id: String,
}

#[derive(Serialize)]
struct Count {
    count: u64,
}

impl State {
    /// The side effect: a numbered payment, or a numbered decline. Numbers
    /// are global, so two executions of one request are told apart.
    fn execute(&mut self, tenant: &str, payment: &Payment) -> Outcome {
        if payment.amount > DECLINE_ABOVE {
            self.declines += 1;
            return Outcome::json(
                StatusCode::PAYMENT_REQUIRED,
                &Declined {
                    error: "card_declined",
                    decline_id: format!("dec_{}", self.declines),
                },
            );
        }
        self.payments += 1;
        *self
            .payments_by_tenant
            .entry(tenant.to_owned())
            .or_default() += 1;
        Outcome::json(
            StatusCode::CREATED,
            &Succeeded {
                id: format!("pay_{}", self.payments),
                amount: payment.amount,
                currency: &payment.currency,
                status: "succeeded",
            },
        )
    }
}

/// What the idempotency wrapper does once the work is done. It runs on the
/// work's task, under the state lock, so a counter that shows the effect
/// also shows its record (tests and the auditor's count oracle rely on it).
enum AfterWork {
    Nothing,
    Record {
        id: RecordId,
        fingerprint: Bytes,
        store_when_client_gone: bool,
        /// Alive while the handler is: hyper drops the handler when its
        /// client hangs up.
        client: Weak<()>,
    },
}

impl AfterWork {
    fn apply(self, state: &mut State, outcome: &Outcome) {
        let AfterWork::Record {
            id,
            fingerprint,
            store_when_client_gone,
            client,
        } = self
        else {
            return;
        };
        if store_when_client_gone || client.strong_count() > 0 {
            let outcome = outcome.clone();
            state.records.insert(
                id,
                Entry::Completed {
                    fingerprint,
                    outcome,
                },
            );
        } else {
            // The flaw: nobody to deliver to, so nothing is kept, and the
            // key is free for the retry to execute again.
            state.records.remove(&id);
        }
    }
}

/// How a keyed request is answered, decided atomically under the lock.
enum Decision {
    Execute,
    Replay(Outcome),
    InProgress,
    Mismatch,
}

/// The API: its state and how long a payment takes.
#[derive(Debug)]
pub(crate) struct App {
    in_app: Option<InApp>,
    latency: Duration,
    state: Mutex<State>,
}

impl App {
    pub(crate) fn new(flaw: Flaw, latency: Duration) -> App {
        App {
            in_app: InApp::for_flaw(flaw),
            latency,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if it did, the counters
        // are still the best answer there is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn payments(&self) -> u64 {
        self.state().payments
    }

    pub(crate) fn declines(&self) -> u64 {
        self.state().declines
    }

    /// Routes one request.
    pub(crate) async fn handle<B>(self: Arc<Self>, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        match path.as_str() {
            "/payments" if method == Method::POST => self.create_payment(request).await,
            "/payments" => method_not_allowed("POST"),
            "/payments/count" if method == Method::GET || method == Method::HEAD => {
                self.count(request.headers())
            }
            "/payments/count" => method_not_allowed("GET, HEAD"),
            _ => problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                format!("There is nothing at {path}; try POST /payments or GET /payments/count."),
            ),
        }
    }

    /// `GET /payments/count`: the caller's payments, or everyone's without
    /// `Authorization`.
    fn count(&self, headers: &HeaderMap) -> Response<Full<Bytes>> {
        let tenant = match tenant(headers) {
            Ok(tenant) => tenant,
            Err(detail) => return unauthorized(detail),
        };
        let state = self.state();
        let count = match tenant {
            Some(tenant) => state.payments_by_tenant.get(&tenant).copied().unwrap_or(0),
            None => state.payments,
        };
        drop(state);
        Outcome::json(StatusCode::OK, &Count { count }).into_response(None, false)
    }

    /// `POST /payments`.
    async fn create_payment<B>(self: Arc<Self>, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let tenant = match tenant(&parts.headers) {
            Ok(Some(tenant)) => tenant,
            Ok(None) => return unauthorized("Send Authorization: Bearer <token>."),
            Err(detail) => return unauthorized(detail),
        };
        // Only the in-app modes look at the key; without them it is either
        // ignored (the flaw) or already handled by idem's layer in front.
        let key = match self.in_app {
            Some(_) => match parse_key(&parts.headers) {
                Ok(key) => key,
                Err(e) => {
                    return idem_problem(Problem::new(ProblemType::InvalidKey, e.to_string()), None)
                }
            },
            None => None,
        };
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "The request body is too large",
                    format!("A payment body is at most {MAX_BODY} bytes."),
                )
            }
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "body-unreadable",
                    "The request body could not be read",
                    format!("Reading the body failed: {e}."),
                )
            }
        };
        // Validation errors are not executions: nothing is charged, stored
        // or locked.
        let payment = match Payment::parse(&body) {
            Ok(payment) => payment,
            Err(detail) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-payment",
                    "The payment is not valid",
                    detail,
                )
            }
        };
        let (Some(in_app), Some((key, echo))) = (self.in_app, key) else {
            return self
                .execute(tenant, payment, AfterWork::Nothing)
                .await
                .into_response(None, false);
        };

        let id = RecordId {
            tenant: in_app.scoped.then(|| tenant.clone()),
            key: key.as_str().to_owned(),
        };
        // Canonical JSON, so re-serialising the same payment is not a change.
        let fingerprint = if in_app.fingerprinted {
            Bytes::from(canonical_json(&body).unwrap_or_else(|| body.to_vec()))
        } else {
            Bytes::new()
        };
        match self.decide(&id, &fingerprint, in_app.locked) {
            Decision::Replay(outcome) => {
                tracing::debug!(key = %key, "replaying the stored response");
                outcome.into_response(Some(&echo), true)
            }
            Decision::Mismatch => idem_problem(
                Problem::new(
                    ProblemType::KeyReused,
                    "This key was first used with a different payment. Use a new key for a new payment.",
                )
                .with_key(Some(&key)),
                Some(&echo),
            ),
            Decision::InProgress => {
                let mut response = idem_problem(
                    Problem::new(
                        ProblemType::RequestInProgress,
                        "A payment with this key is still being processed. Retry later with the same key.",
                    )
                    .with_key(Some(&key)),
                    Some(&echo),
                );
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                response
            }
            Decision::Execute => {
                // Held until the response is handed to hyper; the work sees
                // it gone if the client hung up first.
                let client = Arc::new(());
                let after = AfterWork::Record {
                    id,
                    fingerprint,
                    store_when_client_gone: in_app.store_when_client_gone,
                    client: Arc::downgrade(&client),
                };
                let outcome = self.execute(tenant, payment, after).await;
                drop(client);
                outcome.into_response(Some(&echo), false)
            }
        }
    }

    fn decide(&self, id: &RecordId, fingerprint: &Bytes, locked: bool) -> Decision {
        let mut state = self.state();
        match state.records.get(id) {
            Some(entry) if entry.fingerprint() != fingerprint => Decision::Mismatch,
            Some(Entry::InFlight { .. }) => Decision::InProgress,
            Some(Entry::Completed { outcome, .. }) => Decision::Replay(outcome.clone()),
            None => {
                if locked {
                    let fingerprint = fingerprint.clone();
                    state
                        .records
                        .insert(id.clone(), Entry::InFlight { fingerprint });
                }
                Decision::Execute
            }
        }
    }

    /// Runs the payment on a task of its own and waits for it.
    ///
    /// Like a real payment provider call, the work completes whether or not
    /// the client is still waiting: hyper drops this handler's future when
    /// the client hangs up, but not the spawned task.
    async fn execute(
        self: &Arc<Self>,
        tenant: String,
        payment: Payment,
        after: AfterWork,
    ) -> Outcome {
        let app = Arc::clone(self);
        let work = tokio::spawn(async move {
            tokio::time::sleep(app.latency).await;
            let mut state = app.state();
            let outcome = state.execute(&tenant, &payment);
            after.apply(&mut state, &outcome);
            outcome
        });
        match work.await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(error = %e, "the payment task failed");
                Outcome::json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({ "error": "internal_error" }),
                )
            }
        }
    }
}

impl Payment {
    /// `{"amount": <integer > 0>, "currency": "<string>", ...}`; `currency`
    /// defaults to `usd`, other fields are ignored.
    fn parse(body: &[u8]) -> Result<Payment, String> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| format!("The body is not valid JSON ({e})."))?;
        let Some(object) = value.as_object() else {
            return Err(
                r#"The body must be a JSON object such as {"amount": 1000, "currency": "usd"}."#
                    .to_owned(),
            );
        };
        let amount = match object.get("amount") {
            None => return Err(r#""amount" is required."#.to_owned()),
            Some(v) => match (v.as_u64(), v.as_i64()) {
                (Some(0), _) | (None, Some(_)) => {
                    return Err(r#""amount" must be greater than zero."#.to_owned())
                }
                (Some(amount), _) => amount,
                (None, None) => {
                    return Err(
                        r#""amount" must be an integer number of minor units (e.g. cents)."#
                            .to_owned(),
                    )
                }
            },
        };
        let currency = match object.get("currency") {
            None => "usd".to_owned(),
            Some(serde_json::Value::String(c)) if !c.trim().is_empty() => c.clone(),
            Some(_) => {
                return Err(r#""currency" must be a non-empty string such as "usd"."#.to_owned())
            }
        };
        Ok(Payment { amount, currency })
    }
}

/// The tenant is the whole `Authorization` value: `Ok(None)` without one.
fn tenant(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    match value.to_str().map(str::trim) {
        Ok(v) if !v.is_empty() => Ok(Some(v.to_owned())),
        _ => Err("The Authorization header is empty or not visible ASCII."),
    }
}

/// The key and its raw header value (echoed back), if one was sent.
fn parse_key(headers: &HeaderMap) -> Result<Option<(IdempotencyKey, HeaderValue)>, KeyError> {
    let values = headers.get_all(IDEMPOTENCY_KEY);
    let key = IdempotencyKey::from_header_values(values.iter().map(HeaderValue::as_bytes))?;
    Ok(key.zip(values.iter().next().cloned()))
}

fn echo_key<B>(response: &mut Response<B>, echo: Option<&HeaderValue>) {
    if let Some(value) = echo {
        response
            .headers_mut()
            .insert(HeaderName::from_static(IDEMPOTENCY_KEY), value.clone());
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A problem the idempotency wrapper answers, typed as idem's own.
fn idem_problem(problem: Problem, echo: Option<&HeaderValue>) -> Response<Full<Bytes>> {
    let status =
        StatusCode::from_u16(problem.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = respond(status, PROBLEM_CONTENT_TYPE, problem.to_json().into());
    echo_key(&mut response, echo);
    response
}

#[derive(Serialize)]
struct AppProblem<'a> {
    #[serde(rename = "type")]
    type_: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

/// A problem the API itself answers (RFC 9457).
fn problem(
    status: StatusCode,
    slug: &str,
    title: &str,
    detail: impl AsRef<str>,
) -> Response<Full<Bytes>> {
    let body = AppProblem {
        type_: format!("{PROBLEM_BASE}{slug}"),
        title,
        status: status.as_u16(),
        detail: detail.as_ref(),
    };
    // Serialising a struct of strings and an integer cannot fail.
    let body = serde_json::to_vec(&body).unwrap_or_default();
    respond(status, PROBLEM_CONTENT_TYPE, body.into())
}

fn unauthorized(detail: &str) -> Response<Full<Bytes>> {
    problem(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Authentication required",
        detail,
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("This resource accepts {allow}."),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payments_are_validated() {
        let ok = Payment::parse(br#"{"amount": 1200, "currency": "eur", "note": "x"}"#).unwrap();
        assert_eq!((ok.amount, ok.currency.as_str()), (1200, "eur"));
        assert_eq!(Payment::parse(br#"{"amount": 5}"#).unwrap().currency, "usd");
        for bad in [
            &b"not json"[..],
            br#"[1]"#,
            br#"{}"#,
            br#"{"amount": 0}"#,
            br#"{"amount": -3}"#,
            br#"{"amount": 1.5}"#,
            br#"{"amount": "10"}"#,
            br#"{"amount": 10, "currency": 3}"#,
            br#"{"amount": 10, "currency": " "}"#,
        ] {
            assert!(
                Payment::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn each_flawed_mode_gets_exactly_one_thing_wrong() {
        let wrong = |m: InApp| {
            [
                !m.scoped,
                !m.fingerprinted,
                !m.locked,
                !m.store_when_client_gone,
            ]
            .iter()
            .filter(|w| **w)
            .count()
        };
        for flaw in [
            Flaw::CheckThenAct,
            Flaw::UnscopedKeys,
            Flaw::PayloadIgnored,
            Flaw::StoreIfDelivered,
        ] {
            let m = InApp::for_flaw(flaw).expect("an in-app mode");
            assert_eq!(wrong(m), 1, "{flaw}");
        }
        assert!(InApp::for_flaw(Flaw::None).is_none());
        assert!(InApp::for_flaw(Flaw::NoIdempotency).is_none());
    }
}
