//! What every scenario needs: fresh keys, requests for either tenant, sent
//! and recorded as evidence, retries that honour 409, and the oracles.

use super::quiet::Activity;
use crate::http::{Client, HttpError, Request, Response};
use crate::oracle::{Oracles, Tenant};
use crate::outcome::{Answer, Evidence, Exchange, OracleReading, Seen, SentRequest, Verdict};
use crate::plan::Endpoint;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Bodies kept in reports are cut here.
const EVIDENCE_BODY: usize = 4096;
/// The longest a retry loop waits between attempts, whatever Retry-After says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// A scenario's view of its endpoint.
pub(crate) struct Ctx<'a> {
    pub endpoint: &'a Endpoint,
    pub client: Client,
    pub oracles: Oracles<'a>,
    show_secrets: bool,
    /// Which instance the next request goes to (with `more_urls`).
    next_instance: AtomicUsize,
    /// What the quiet waits need: when the API last heard from the
    /// auditor, its slowest answer, the last counts read.
    activity: Mutex<Activity>,
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

impl<'a> Ctx<'a> {
    pub fn new(endpoint: &'a Endpoint, client: Client, show_secrets: bool) -> Self {
        Ctx {
            endpoint,
            oracles: Oracles::new(endpoint, client.clone()),
            client,
            show_secrets,
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
    pub fn routed(&self, request: &Request) -> Request {
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

    /// A key no earlier run or scenario used.
    pub fn fresh_key(&self) -> Key {
        Key::Valid(format!("idem-audit-{}", uuid::Uuid::new_v4()))
    }

    /// A request with the endpoint's method and URL, the tenant's headers,
    /// the key and the body.
    pub fn request(&self, key: &Key, tenant: Tenant, body: &Bytes) -> Request {
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

    /// The request as reports show it.
    pub fn shown(&self, request: &Request) -> SentRequest {
        SentRequest {
            method: request.method.to_string(),
            url: request.url.to_string(),
            headers: request
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), self.shown_value(n, v)))
                .collect(),
            body: (!request.body.is_empty())
                .then(|| String::from_utf8_lossy(&request.body).into_owned()),
            key: request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&self.endpoint.key_header))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
        }
    }

    pub(super) fn shown_value(&self, name: &str, value: &[u8]) -> String {
        if !self.show_secrets && is_secret(name) {
            return "<redacted>".to_owned();
        }
        String::from_utf8_lossy(value).into_owned()
    }

    /// A response with its secret headers (`Set-Cookie`, tokens) redacted,
    /// unless `--show-secrets`.
    fn redacted(&self, mut seen: Seen) -> Seen {
        for (name, value) in &mut seen.headers {
            if name.eq_ignore_ascii_case("set-cookie") {
                *value = self.shown_value("cookie", value.as_bytes());
            } else {
                *value = self.shown_value(name, value.as_bytes());
            }
        }
        seen
    }

    /// Whether two bodies say the same: equal bytes, or equal JSON values
    /// once the `--ignore-field` paths are dropped from both (a replay that
    /// re-serialises its stored object is still the same answer; a
    /// per-request field such as a trace id is not the answer's content).
    pub fn same_body(&self, a: &Bytes, b: &Bytes) -> bool {
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
    pub fn same_outcome(&self, a: &Response, b: &Response) -> bool {
        a.status == b.status && self.same_body(&a.body, &b.body)
    }

    /// Whether `replay` carries `stored`'s body under another status (a
    /// library that replays with 409, say): the outcome reaches the client,
    /// only the status is wrong.
    pub fn same_body_other_status(&self, stored: &Response, replay: &Response) -> bool {
        stored.status != replay.status && self.same_body(&stored.body, &replay.body)
    }

    /// An exchange for the evidence.
    pub fn exchange(
        &self,
        label: impl Into<String>,
        request: &Request,
        answer: Answer,
        elapsed: Duration,
    ) -> Exchange {
        let answer = match answer {
            Answer::Response(seen) => Answer::Response(self.redacted(seen)),
            Answer::Discarded(seen) => Answer::Discarded(self.redacted(seen)),
            other => other,
        };
        Exchange {
            label: label.into(),
            request: self.shown(request),
            answer,
            elapsed_ms: elapsed.as_secs_f64() * 1000.0,
        }
    }

    /// Sends once; records the exchange.
    pub async fn send(
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
    pub async fn send_and_discard(
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
    pub async fn send_and_abandon(
        &self,
        request: &Request,
        after: Duration,
    ) -> (Result<Option<Response>, HttpError>, Duration) {
        let (answer, elapsed) = self.client.send_and_abandon(request, after).await;
        self.sent(elapsed, answer.is_ok());
        (answer, elapsed)
    }

    /// A burst released together ([`Client::burst`]).
    pub async fn burst(
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
    pub async fn send_until_final(
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
    pub fn id_of(&self, response: &Response) -> Option<String> {
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
    let retry_after = response.header("retry-after").and_then(parse_retry_after);
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

/// `Retry-After` (RFC 9110 section 10.2.3): seconds, or an HTTP date (a
/// date already past means now).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The evidence form of an answer the client saw.
pub(crate) fn answer_of(answer: &Result<Response, HttpError>) -> Answer {
    match answer {
        Ok(response) => Answer::Response(seen(response)),
        Err(e) => Answer::Error {
            message: e.to_string(),
        },
    }
}

/// A response as reports show it: body as text, cut at 4 KiB.
pub(crate) fn seen(response: &Response) -> Seen {
    let text = String::from_utf8_lossy(&response.body);
    let (body, body_truncated) = if text.len() > EVIDENCE_BODY {
        let mut end = EVIDENCE_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        (text[..end].to_owned(), true)
    } else {
        (text.into_owned(), false)
    };
    Seen {
        status: response.status,
        headers: response.headers.clone(),
        body,
        body_truncated,
    }
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "x-api-key" | "api-key"
    ) || ["token", "secret", "password", "session"]
        .iter()
        .any(|word| name.contains(word))
}

/// How many executions one key caused, from whatever the oracles saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Executions the scenario expects.
    pub expected: u64,
    /// Effects counted by `--count-url` / `--check-cmd`.
    pub counted: Option<u64>,
    /// Distinct id-field values among the 2xx answers read.
    pub ids: BTreeSet<String>,
    /// 2xx answers without the id field.
    pub ids_missing: usize,
    /// Distinct 2xx bodies read.
    pub bodies: Vec<Bytes>,
    /// Attempts whose answer nobody read (hung up, connection failed).
    pub unseen: usize,
}

impl Tally {
    /// A tally expecting one execution.
    pub fn one() -> Self {
        Tally {
            expected: 1,
            ..Tally::default()
        }
    }

    /// Adds an answer (seen by the client or by the fault point).
    pub fn add(&mut self, ctx: &Ctx<'_>, response: &Response) {
        if !response.is_success() {
            return;
        }
        match ctx.id_of(response) {
            Some(id) => {
                self.ids.insert(id);
            }
            None if ctx.endpoint.id_field.is_some() => self.ids_missing += 1,
            None => {}
        }
        if !self.bodies.iter().any(|b| ctx.same_body(b, &response.body)) {
            self.bodies.push(response.body.clone());
        }
    }

    /// The verdict on "one key, `expected` executions", with a sentence and
    /// the oracles' readings.
    pub fn judge(&self, ctx: &Ctx<'_>, evidence: &mut Evidence) -> (Verdict, String) {
        let e = ctx.endpoint;
        if let Some(counted) = self.counted {
            evidence.oracle.push(OracleReading {
                oracle: ctx.oracles.counting_name().to_owned(),
                saw: format!("the count moved by {counted}"),
                effects: Some(counted),
            });
        }
        if e.id_field.is_some() {
            evidence.oracle.push(OracleReading {
                oracle: "id-field".to_owned(),
                saw: format!(
                    "{} distinct value(s) at {} in the 2xx answers: {}",
                    self.ids.len(),
                    e.id_field
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    self.ids.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                effects: Some(self.ids.len() as u64),
            });
        }
        if self.ids.len() as u64 > self.expected {
            return (
                Verdict::Fail,
                format!(
                    "executed {} for one key: the answers carry {} different ids",
                    times(self.ids.len() as u64),
                    self.ids.len()
                ),
            );
        }
        if let Some(counted) = self.counted {
            return match counted.cmp(&self.expected) {
                std::cmp::Ordering::Greater => (
                    Verdict::Fail,
                    format!("executed {} for one key (the count moved by {counted})", times(counted)),
                ),
                std::cmp::Ordering::Equal => (
                    Verdict::Pass,
                    format!("executed exactly {}, as the count shows", times(self.expected)),
                ),
                std::cmp::Ordering::Less => (
                    Verdict::Indeterminate,
                    format!(
                        "the count moved by {counted}, expected {}: is the count reading this operation's effects?",
                        self.expected
                    ),
                ),
            };
        }
        if e.id_field.is_some() {
            if self.ids_missing > 0 {
                evidence.notes.push(format!(
                    "{} 2xx answer(s) had no value at the id field",
                    self.ids_missing
                ));
            }
            if self.unseen > 0 {
                return (
                    Verdict::Indeterminate,
                    format!(
                        "{} attempt(s) got no answer anyone read, so their executions are invisible to --id-field",
                        self.unseen
                    ),
                );
            }
            if self.ids_missing > 0 || self.ids.is_empty() {
                return (
                    Verdict::Indeterminate,
                    "the id field was missing from the answers; nothing to compare".to_owned(),
                );
            }
            return (
                Verdict::Pass,
                format!("every answer carries the same id ({})", first(&self.ids)),
            );
        }
        evidence.oracle.push(OracleReading {
            oracle: "body".to_owned(),
            saw: format!("{} distinct 2xx body(ies)", self.bodies.len()),
            effects: None,
        });
        if self.bodies.len() as u64 > self.expected {
            return (
                Verdict::Fail,
                format!(
                    "{} different successful answers for one key: it executed again, or its replay is not the stored response",
                    self.bodies.len()
                ),
            );
        }
        (
            Verdict::Indeterminate,
            "the answers agree, but without --id-field, --count-url or --check-cmd a second execution with the same answer cannot be ruled out".to_owned(),
        )
    }
}

/// What to add when only a count of side effects can see an execution.
pub(crate) const NEEDS_A_COUNT: &str = "--count-url URL or --check-cmd CMD: an attempt's answer was never read, so only a count of side effects sees whether it executed";
/// What to add when no oracle counted anything.
pub(crate) const NEEDS_AN_ORACLE: &str = "--count-url URL or --check-cmd CMD (a count of side effects), or --id-field PATH (a value new per execution, e.g. --id-field id): identical answers cannot rule out a second execution";

impl Tally {
    /// For an indeterminate [`Tally::judge`]: the oracle that would turn
    /// it into a verdict, with its flag.
    pub fn oracle_hint(&self, ctx: &Ctx<'_>) -> Option<String> {
        let e = ctx.endpoint;
        if self.ids.len() as u64 > self.expected {
            return None;
        }
        if let Some(counted) = self.counted {
            return (counted < self.expected).then(|| {
                "--count-url URL (with --count-field PATH) or --check-cmd CMD that counts this operation's effects: the count moved less than the executions the answers show".to_owned()
            });
        }
        if e.counts_effects() {
            return Some(
                "a count nothing else changes: the count could not be used here (see the notes), so --count-url or --check-cmd did not decide".to_owned(),
            );
        }
        if let Some(path) = &e.id_field {
            if self.unseen > 0 {
                return Some(NEEDS_A_COUNT.to_owned());
            }
            if self.ids_missing > 0 || self.ids.is_empty() {
                return Some(format!(
                    "--id-field PATH naming a value new per execution (the answers have none at {path}), or --count-url URL or --check-cmd CMD"
                ));
            }
            return None;
        }
        if self.bodies.len() as u64 > self.expected {
            return None;
        }
        Some(
            if self.unseen > 0 {
                NEEDS_A_COUNT
            } else {
                NEEDS_AN_ORACLE
            }
            .to_owned(),
        )
    }
}

/// `once`, `twice`, `3 times`.
pub(crate) fn times(n: u64) -> String {
    match n {
        1 => "once".to_owned(),
        2 => "twice".to_owned(),
        n => format!("{n} times"),
    }
}

fn first(ids: &BTreeSet<String>) -> &str {
    ids.iter().next().map(String::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Tls;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        let soon = std::time::SystemTime::now() + Duration::from_secs(120);
        let wait = parse_retry_after(&httpdate::fmt_http_date(soon)).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

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
