//! Payments APIs shaped like the idempotency middlewares real services
//! run at their documented defaults, where they differ from idem's
//! contract without being wrong about duplicates: a retry that gets a
//! plain 409 (no `Retry-After`, no problem type) while the first attempt
//! still runs; a wrapper (an API gateway in front of a function) that
//! turns that refusal into a 502 while the work goes on; a fingerprint
//! over the raw body bytes; a replay that carries the stored body under
//! status 409. Each shape also comes broken, to show the auditor still
//! catches the duplicate it allows.
//!
//! Built on idem-testkit's [`Upstream`] (a real HTTP/1.1 server on
//! 127.0.0.1). The API: `POST /payments` with `Authorization` (the tenant)
//! and `{"amount": N, ...}` takes [`Shape::latency`], then answers 201
//! `{"id":"pay_<n>",...}`; amounts above 1,000,000 are declined with 402
//! `{"error":"card_declined"}`, the same body every time. Every execution,
//! a decline included (an attempted charge), counts: `GET /payments/count`
//! answers `{"count": N}` for the caller's tenant. The work runs to the end
//! when its client hangs up.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::Method;
use idem_testkit::{reply, Body, Gate, Reply, Seen, Upstream};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What a request gets while another with its key is still executing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InProgress {
    /// 409 `request-in-progress` with `Retry-After: 1` (the contract).
    Contract,
    /// 409 `{"error":"request in progress"}`, nothing more.
    PlainConflict,
    /// 502 from a wrapper that turns the middleware's in-progress error
    /// into a gateway error, while the first attempt's work goes on.
    BadGateway,
}

/// What a request's fingerprint covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fingerprint {
    /// The JSON value (RFC 8785): re-serialising is the same request.
    Canonical,
    /// The body's bytes: re-serialised JSON is "another payload" (422).
    RawBytes,
}

/// How a completed request is replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// The stored status and body.
    Stored,
    /// The stored body under status 409.
    Conflict409,
}

/// One middleware's behaviour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub in_progress: InProgress,
    pub fingerprint: Fingerprint,
    pub replay: Replay,
    /// Whether an outcome is stored when its client left before it was
    /// ready; if not, the key is released and a retry executes again.
    pub store_when_client_gone: bool,
    /// Whether errors (declines) are stored and replayed; if not, the key
    /// is released and a retry executes again.
    pub store_errors: bool,
    /// How long a payment takes.
    pub latency: Duration,
}

impl Shape {
    /// A correct middleware with the contract's answers.
    pub(crate) fn contract() -> Shape {
        Shape {
            in_progress: InProgress::Contract,
            fingerprint: Fingerprint::Canonical,
            replay: Replay::Stored,
            store_when_client_gone: true,
            store_errors: true,
            latency: Duration::from_millis(300),
        }
    }

    /// The same, refusing a retry in flight with `in_progress`.
    pub(crate) fn refusing_in_flight(in_progress: InProgress) -> Shape {
        Shape {
            in_progress,
            ..Shape::contract()
        }
    }
}

#[derive(Debug, Clone)]
enum Entry {
    InFlight {
        fingerprint: Bytes,
    },
    Done {
        fingerprint: Bytes,
        status: u16,
        body: Bytes,
    },
}

#[derive(Debug, Default)]
struct State {
    records: HashMap<(String, String), Entry>,
    executions: HashMap<String, u64>,
    next_id: u64,
}

/// A running API of one shape.
pub(crate) struct ShapedApi {
    pub upstream: Upstream,
    state: Arc<Mutex<State>>,
}

impl ShapedApi {
    /// Starts it on a free 127.0.0.1 port.
    pub(crate) async fn start(shape: Shape) -> ShapedApi {
        let state = Arc::new(Mutex::new(State::default()));
        let serving = state.clone();
        let upstream = Upstream::answering(move |seen: Seen, _gate: Gate| {
            let state = serving.clone();
            async move { handle(shape, state, seen).await }
        })
        .await;
        ShapedApi { upstream, state }
    }

    /// Its base URL.
    pub(crate) fn url(&self) -> String {
        self.upstream.url("")
    }

    /// Executions so far, all tenants.
    pub(crate) fn executions(&self) -> u64 {
        self.state.lock().unwrap().executions.values().sum()
    }
}

fn json(status: u16, body: impl Into<Bytes>) -> Reply {
    let mut response = reply(status, body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Some(response)
}

fn with_header(reply: Reply, name: http::HeaderName, value: &'static str) -> Reply {
    reply.map(|mut r: http::Response<Body>| {
        r.headers_mut()
            .insert(name, HeaderValue::from_static(value));
        r
    })
}

async fn handle(shape: Shape, state: Arc<Mutex<State>>, seen: Seen) -> Reply {
    let tenant = seen
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = seen.path.split('?').next().unwrap_or("").to_owned();
    match (seen.method.clone(), path.as_str()) {
        (Method::GET, "/payments/count") => {
            let state = state.lock().unwrap();
            let count = match &tenant {
                Some(t) => state.executions.get(t).copied().unwrap_or(0),
                None => state.executions.values().sum(),
            };
            json(200, format!(r#"{{"count":{count}}}"#))
        }
        (Method::POST, "/payments") => {
            let Some(tenant) = tenant else {
                return json(401, r#"{"error":"unauthorized"}"#);
            };
            let amount = serde_json::from_slice::<serde_json::Value>(&seen.body)
                .ok()
                .and_then(|v| v.get("amount").and_then(serde_json::Value::as_u64))
                .filter(|a| *a > 0);
            let Some(amount) = amount else {
                return json(400, r#"{"error":"invalid_payment"}"#);
            };
            let key = match seen.headers.get("idempotency-key") {
                None => None,
                Some(raw) => match idem_core::IdempotencyKey::parse(raw.as_bytes()) {
                    Ok(key) => Some(key.as_str().to_owned()),
                    Err(_) => return json(400, r#"{"error":"invalid_idempotency_key"}"#),
                },
            };
            let fingerprint = match shape.fingerprint {
                Fingerprint::Canonical => Bytes::from(
                    idem_core::fingerprint::canonical_json(&seen.body)
                        .unwrap_or_else(|| seen.body.to_vec()),
                ),
                Fingerprint::RawBytes => seen.body.clone(),
            };
            let Some(key) = key else {
                let (status, body) = execute(&state, &tenant, amount, shape.latency, None).await;
                return json(status, body);
            };
            let id = (tenant.clone(), key);
            {
                let mut s = state.lock().unwrap();
                match s.records.get(&id) {
                    Some(
                        Entry::InFlight { fingerprint: f } | Entry::Done { fingerprint: f, .. },
                    ) if *f != fingerprint => {
                        return json(422, r#"{"error":"idempotency_key_reused"}"#);
                    }
                    Some(Entry::InFlight { .. }) => {
                        return match shape.in_progress {
                            InProgress::Contract => with_header(
                                json(
                                    409,
                                    r#"{"type":"https://idem.dev/problems/request-in-progress","title":"In progress","status":409}"#,
                                ),
                                RETRY_AFTER,
                                "1",
                            ),
                            InProgress::PlainConflict => {
                                json(409, r#"{"error":"request in progress"}"#)
                            }
                            InProgress::BadGateway => {
                                json(502, r#"{"message":"Internal server error"}"#)
                            }
                        };
                    }
                    Some(Entry::Done { status, body, .. }) => {
                        let status = match shape.replay {
                            Replay::Stored => *status,
                            Replay::Conflict409 => 409,
                        };
                        return json(status, body.clone());
                    }
                    None => {
                        s.records.insert(
                            id.clone(),
                            Entry::InFlight {
                                fingerprint: fingerprint.clone(),
                            },
                        );
                    }
                }
            }
            // Held by this handler until it answers: gone if hyper drops it
            // because the client hung up.
            let client = Arc::new(());
            let record = Record {
                id,
                fingerprint,
                shape,
                client: Arc::downgrade(&client),
            };
            let (status, body) =
                execute(&state, &tenant, amount, shape.latency, Some(record)).await;
            drop(client);
            json(status, body)
        }
        _ => json(404, r#"{"error":"not_found"}"#),
    }
}

/// What to do with the record once the work is done.
struct Record {
    id: (String, String),
    fingerprint: Bytes,
    shape: Shape,
    client: Weak<()>,
}

/// Runs the payment on a task of its own (it completes even if the
/// client hangs up) and waits for it.
async fn execute(
    state: &Arc<Mutex<State>>,
    tenant: &str,
    amount: u64,
    latency: Duration,
    record: Option<Record>,
) -> (u16, Bytes) {
    let state = state.clone();
    let tenant = tenant.to_owned();
    let work = tokio::spawn(async move {
        tokio::time::sleep(latency).await;
        let mut s = state.lock().unwrap();
        *s.executions.entry(tenant).or_default() += 1;
        s.next_id += 1;
        let (status, body) = if amount > 1_000_000 {
            (402, Bytes::from_static(br#"{"error":"card_declined"}"#))
        } else {
            let body = format!(
                r#"{{"id":"pay_{}","amount":{amount},"status":"succeeded"}}"#,
                s.next_id
            );
            (201, Bytes::from(body))
        };
        if let Some(r) = record {
            let client_gone = r.client.upgrade().is_none();
            let keep = (!client_gone || r.shape.store_when_client_gone)
                && (status < 400 || r.shape.store_errors);
            if keep {
                s.records.insert(
                    r.id,
                    Entry::Done {
                        fingerprint: r.fingerprint,
                        status,
                        body: body.clone(),
                    },
                );
            } else {
                s.records.remove(&r.id);
            }
        }
        (status, body)
    });
    work.await
        .unwrap_or((500, Bytes::from_static(br#"{"error":"internal"}"#)))
}
