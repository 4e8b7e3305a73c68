//! What every scenario needs: fresh keys, requests for either tenant, sent
//! and recorded as evidence, retries that honour 409, and the oracles.

use super::evidence::{answer_of, Recorder};
use crate::endpoint::Endpoint;
use crate::http::{Client, HttpError, Request, Response};
use crate::oracle::{Counts, Oracles, Tenant};
use crate::outcome::{Answer, Evidence, Exchange};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The longest a retry loop waits between attempts, whatever Retry-After says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// A scenario's view of its endpoint.
pub(crate) struct Ctx<'a> {
    pub endpoint: &'a Endpoint,
    pub client: Client,
    pub oracles: Oracles<'a>,
    /// How requests and answers are kept as evidence.
    pub recorder: Recorder<'a>,
    /// Which instance the next request goes to (with `more_urls`).
    next_instance: AtomicUsize,
    /// What the quiet waits need: when the API last heard from the
    /// auditor, its slowest answer, the last counts read.
    activity: Mutex<Activity>,
}

/// What the quiet waits (`quiet.rs`) remember of an endpoint.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// When the last request to the endpoint ended (answer, hang-up or
    /// error).
    pub last_sent: Option<Instant>,
    /// The slowest answer so far (a hang-up counts for its time).
    pub slowest: Duration,
    /// Per tenant: the last counts read, and when that value was first
    /// seen (counts only go up, so an equal later reading means no change
    /// in between).
    pub seen: HashMap<Tenant, (Counts, Instant)>,
    /// Per tenant: the last counts read during the current scenario.
    pub in_scenario: HashMap<Tenant, Counts>,
}

/// What a key is sent as.
#[derive(Debug, Clone)]
pub(crate) enum Key {
    /// A fresh, valid key.
    Valid(String),
    /// Raw header bytes, valid or not.
    Raw(Vec<u8>),
    /// No key header at all.
    Absent,
}

impl Key {
    /// A key no earlier run or scenario used.
    pub(crate) fn fresh() -> Self {
        Key::Valid(format!("idem-audit-{}", uuid::Uuid::new_v4()))
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(endpoint: &'a Endpoint, client: Client, show_secrets: bool) -> Self {
        Ctx {
            endpoint,
            oracles: Oracles::new(endpoint, client.clone()),
            client,
            recorder: Recorder::new(show_secrets, &endpoint.key_header),
            next_instance: AtomicUsize::new(0),
            activity: Mutex::default(),
        }
    }

    /// The quiet waits' state. Never held across an await.
    pub(super) fn activity(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that a request to the endpoint just ended after `elapsed`
    /// (answered, hung up or failed): quiet waits start no earlier, and a
    /// slow answer stretches the settle period.
    fn sent(&self, elapsed: Duration, answered: bool) {
        let mut activity = self.activity();
        activity.last_sent = Some(Instant::now());
        if answered {
            activity.slowest = activity.slowest.max(elapsed);
        }
    }

    /// The request as the next instance serves it: with several instances
    /// (`more_urls`), each call moves on to the next one, as a load
    /// balancer would; with one, the request itself.
    pub(crate) fn routed(&self, request: &Request) -> Request {
        let mut routed = request.clone();
        if !self.endpoint.more_urls.is_empty() {
            let count = 1 + self.endpoint.more_urls.len();
            let i = self.next_instance.fetch_add(1, Ordering::Relaxed) % count;
            if let Some(url) = self.endpoint.urls().nth(i) {
                routed.url = url.clone();
            }
        }
        routed
    }

    /// A request with the endpoint's method and URL, the tenant's headers,
    /// the key and the body.
    pub(crate) fn request(&self, key: &Key, tenant: Tenant, body: &Bytes) -> Request {
        let e = self.endpoint;
        let mut headers = crate::oracle::tenant_headers(e, tenant);
        if !body.is_empty()
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("content-type".to_owned(), b"application/json".to_vec()));
        }
        match key {
            Key::Valid(k) => headers.push((e.key_header.clone(), k.clone().into_bytes())),
            Key::Raw(bytes) => headers.push((e.key_header.clone(), bytes.clone())),
            Key::Absent => {}
        }
        Request {
            method: e.method.clone(),
            url: e.url.clone(),
            headers,
            body: body.clone(),
        }
    }

    /// Whether two bodies say the same: equal bytes, or equal JSON values
    /// once the `--ignore-field` paths are dropped from both (a replay that
    /// re-serialises its stored object is still the same answer; a
    /// per-request field such as a trace id is not the answer's content).
    pub(crate) fn same_body(&self, a: &Bytes, b: &Bytes) -> bool {
        if a == b {
            return true;
        }
        let parse = |body: &Bytes| {
            let mut json = serde_json::from_slice::<serde_json::Value>(body).ok()?;
            for path in &self.endpoint.ignore_fields {
                path.remove(&mut json);
            }
            Some(json)
        };
        match (parse(a), parse(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }

    /// Whether two answers are the same outcome: status and body.
    pub(crate) fn same_outcome(&self, a: &Response, b: &Response) -> bool {
        a.status == b.status && self.same_body(&a.body, &b.body)
    }

    /// Whether `replay` carries `stored`'s body under another status (a
    /// library that replays with 409, say): the outcome reaches the client,
    /// only the status is wrong.
    pub(crate) fn same_body_other_status(&self, stored: &Response, replay: &Response) -> bool {
        stored.status != replay.status && self.same_body(&stored.body, &replay.body)
    }

    /// An exchange for the evidence ([`Recorder::exchange`]).
    pub(crate) fn exchange(
        &self,
        label: impl Into<String>,
        request: &Request,
        answer: Answer,
        elapsed: Duration,
    ) -> Exchange {
        self.recorder.exchange(label, request, answer, elapsed)
    }

    /// Sends once; records the exchange.
    pub(crate) async fn send(
        &self,
        label: impl Into<String>,
        request: &Request,
        evidence: &mut Evidence,
    ) -> Result<Response, HttpError> {
        let request = self.routed(request);
        let (answer, elapsed) = self.client.send(&request).await;
        self.sent(elapsed, answer.is_ok());
        evidence
            .exchanges
            .push(self.exchange(label, &request, answer_of(&answer), elapsed));
        answer
    }

    /// The lost-response fault point ([`Client::send_and_discard`]), on a
    /// request already routed.
    pub(crate) async fn send_and_discard(
        &self,
        request: &Request,
    ) -> (Result<Response, HttpError>, Duration) {
        let (answer, elapsed) = self.client.send_and_discard(request).await;
        self.sent(elapsed, answer.is_ok());
        (answer, elapsed)
    }

    /// The abandoned-request fault point ([`Client::send_and_abandon`]),
    /// on a request already routed. A hang-up counts as an answer that
    /// slow: the work took at least that long.
    pub(crate) async fn send_and_abandon(
        &self,
        request: &Request,
        after: Duration,
    ) -> (Result<Option<Response>, HttpError>, Duration) {
        let (answer, elapsed) = self.client.send_and_abandon(request, after).await;
        self.sent(elapsed, answer.is_ok());
        (answer, elapsed)
    }

    /// A burst released together ([`Client::burst`]).
    pub(crate) async fn burst(
        &self,
        requests: &[Request],
    ) -> (Vec<(Result<Response, HttpError>, Duration)>, Duration) {
        let (answers, release) = self.client.burst(requests).await;
        let slowest = answers
            .iter()
            .filter(|(a, _)| a.is_ok())
            .map(|(_, elapsed)| *elapsed)
            .max();
        self.sent(slowest.unwrap_or_default(), slowest.is_some());
        (answers, release)
    }

    /// Sends until the answer is final: 409 `request-in-progress` (or a
    /// 409/425/429/503 with `Retry-After`) is retried after the wait it
    /// asks for, up to the retry deadline. Every attempt is recorded.
    /// Returns the final answer, or the last one if the deadline passed.
    pub(crate) async fn send_until_final(
        &self,
        label: &str,
        request: &Request,
        evidence: &mut Evidence,
    ) -> Result<Response, HttpError> {
        let deadline = Instant::now() + self.endpoint.retry_deadline;
        let mut attempt = 1;
        loop {
            let answer = self
                .send(format!("{label} (attempt {attempt})"), request, evidence)
                .await;
            let wait = match &answer {
                Ok(response) => retry_wait(response),
                Err(_) => None,
            };
            let Some(wait) = wait else {
                return answer;
            };
            if Instant::now() + wait > deadline {
                evidence.notes.push(format!(
                    "{label}: still told to retry after {:?}; gave up at the retry deadline",
                    self.endpoint.retry_deadline
                ));
                return answer;
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The id-field's value in a 2xx answer, as text.
    pub(crate) fn id_of(&self, response: &Response) -> Option<String> {
        let path = self.endpoint.id_field.as_ref()?;
        let json = response.json()?;
        let value = path.find(&json)?;
        Some(match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// How long to wait before retrying this answer, if it asks for a retry.
pub(crate) fn retry_wait(response: &Response) -> Option<Duration> {
    let retry_after = response
        .header("retry-after")
        .and_then(|value| idem_core::headers::retry_after(value, SystemTime::now()));
    let in_progress = response.status == 409
        && response
            .problem_slug()
            .is_some_and(|slug| slug == "request-in-progress");
    let asks =
        in_progress || (matches!(response.status, 409 | 425 | 429 | 503) && retry_after.is_some());
    asks.then(|| {
        retry_after
            .unwrap_or(Duration::from_millis(200))
            .clamp(Duration::from_millis(50), MAX_RETRY_WAIT)
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Tls;

    #[test]
    fn ignored_fields_do_not_make_a_replay_differ() {
        let mut endpoint = Endpoint::new("http://127.0.0.1:1/x".parse().unwrap());
        endpoint.ignore_fields = vec!["meta.request_id".parse().unwrap()];
        let client = Client {
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            tls: Tls::new(&Default::default()).unwrap(),
        };
        let ctx = Ctx::new(&endpoint, client, false);
        let body = |s: &'static str| Bytes::from_static(s.as_bytes());
        let first = body(r#"{"id":"pay_1","meta":{"request_id":"r1"}}"#);
        // Another request id, other member order and spacing: the same answer.
        let replay = body(r#"{ "meta": {"request_id": "r2"}, "id": "pay_1" }"#);
        assert!(ctx.same_body(&first, &replay));
        // Another id is another answer, whatever is ignored.
        let other = body(r#"{"id":"pay_2","meta":{"request_id":"r1"}}"#);
        assert!(!ctx.same_body(&first, &other));
        // Bodies that are not JSON compare as bytes.
        assert!(!ctx.same_body(&body("ok 1"), &body("ok 2")));
        assert!(ctx.same_body(&body("ok"), &body("ok")));
    }
}
