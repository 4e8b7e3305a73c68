//! The keys API on the admin listener (`/v1/keys`): an operator inspects a
//! key, lists the keys waiting for a decision, and releases, resolves or
//! purges one. Every mutation is fenced by the token the operator read
//! (`?token=N`), decided by the store in one atomic step
//! ([`idem_core::operator::decide_operator`]), logged and counted.

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use idem_core::headers::ReplayHeaderFilter;
use idem_core::operator::{state_name, OperatorAction, OperatorRefusal};
use idem_core::problem::PROBLEM_CONTENT_TYPE;
use idem_core::{IdempotencyKey, Record, RecordId, Retention, Scope, ScopeRule, StoredResponse};
use idem_store::{ListCursor, ListQuery, Store, Unsettled};
use idem_tower::{Clock, SystemClock};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Most records one listing page holds.
pub const MAX_PAGE: usize = 500;
/// Largest resolve request body read.
pub(crate) const MAX_RESOLVE_BODY: usize = 16 << 20;

/// What the keys API needs from the gateway: its store, how it derives a
/// scope from a credential, and what it stores for a resolved key.
#[derive(Clone)]
pub struct KeysApi {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) scope: ScopeRule,
    pub(crate) retention: Retention,
    pub(crate) replay_headers: ReplayHeaderFilter,
}

impl std::fmt::Debug for KeysApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeysApi")
            .field("store", &self.store.engine())
            .field("scope", &self.scope)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// A JSON answer: status and body (problem details for errors).
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

fn ok(status: StatusCode, body: Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: body.to_string(),
    }
}

/// An RFC 9457 problem of the admin API.
pub(crate) fn problem(status: StatusCode, kind: &str, detail: impl Into<String>) -> Answer {
    Answer {
        status,
        content_type: PROBLEM_CONTENT_TYPE,
        body: json!({
            "type": format!("{}{kind}", idem_core::problem::PROBLEM_TYPE_BASE),
            "title": kind.replace('-', " "),
            "status": status.as_u16(),
            "detail": detail.into(),
        })
        .to_string(),
    }
}

fn bad_request(detail: impl Into<String>) -> Answer {
    problem(StatusCode::BAD_REQUEST, "bad-admin-request", detail)
}

/// The query parameters the endpoints take.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    scope: Option<String>,
    credential: Option<String>,
    token: Option<u64>,
    body: Option<bool>,
    tombstone: Option<bool>,
    state: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A resolve request's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    status: u16,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
    body: Option<String>,
    body_base64: Option<String>,
}

impl KeysApi {
    /// Answers a `/v1/keys…` request (already authenticated).
    pub(crate) async fn handle(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        body: Bytes,
    ) -> Answer {
        let params: Params = match serde_urlencoded::from_str(query) {
            Ok(p) => p,
            Err(e) => return bad_request(format!("query: {e}")),
        };
        let rest = path.strip_prefix("/v1/keys").unwrap_or_default();
        let (key, action) = match rest.trim_start_matches('/').split_once('/') {
            Some((key, action)) => (key, Some(action)),
            None => (rest.trim_start_matches('/'), None),
        };
        match (method, key.is_empty(), action) {
            (&Method::GET, true, None) => self.list(&params).await,
            (&Method::GET, false, None) => self.show(key, &params).await,
            (&Method::POST, false, Some("release")) => {
                self.operate(key, &params, OperatorAction::Release).await
            }
            (&Method::POST, false, Some("resolve")) => match self.resolution(&body) {
                Ok(action) => self.operate(key, &params, action).await,
                Err(answer) => answer,
            },
            (&Method::DELETE, false, None) => {
                let keep_tombstone = params.tombstone.unwrap_or(true);
                self.operate(key, &params, OperatorAction::Purge { keep_tombstone })
                    .await
            }
            _ => problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such admin endpoint: GET /v1/keys, GET|DELETE /v1/keys/{key}, POST /v1/keys/{key}/release|resolve",
            ),
        }
    }

    fn record_id(&self, key: &str, params: &Params) -> Result<RecordId, Answer> {
        let key =
            idem_core::path::percent_decode(key).ok_or_else(|| bad_request("key: bad %-escape"))?;
        let key =
            IdempotencyKey::parse(key.as_bytes()).map_err(|e| bad_request(format!("key: {e}")))?;
        let scope = match (&params.scope, &params.credential) {
            (Some(scope), None) => Scope::from_stored(scope.as_str()),
            (None, Some(credential)) => self.scope_of(credential)?,
            (Some(_), Some(_)) => {
                return Err(bad_request("give either scope or credential, not both"))
            }
            (None, None) => {
                return Err(bad_request(
                    "scope or credential: required (the stored scope id, or the credential the client sent)",
                ))
            }
        };
        Ok(RecordId { scope, key })
    }

    /// The scope the gateway derives for a request carrying `credential`:
    /// the credential is put where the scope rule reads it, and the rule
    /// itself decides.
    fn scope_of(&self, credential: &str) -> Result<Scope, Answer> {
        use idem_core::scope::{Resolved, ScopeSource};
        let mut headers = http::HeaderMap::new();
        let (name, value) = match &self.scope.source {
            ScopeSource::HeaderHash { headers: names }
            | ScopeSource::TrustedHeader { headers: names } => {
                let Some(first) = names.first() else {
                    return Err(bad_request("credential: the scope rule reads no header"));
                };
                if names.len() > 1 {
                    return Err(bad_request(
                        "credential: the scope comes from several headers; give scope= instead",
                    ));
                }
                (first.clone(), credential.to_owned())
            }
            ScopeSource::CookieHash { cookie } => {
                ("cookie".to_owned(), format!("{cookie}={credential}"))
            }
            ScopeSource::Jwt(_) => ("authorization".to_owned(), format!("Bearer {credential}")),
            ScopeSource::Global => return Ok(Scope::global()),
        };
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad_request("credential: the scope header's name is not valid"))?;
        let value = http::HeaderValue::from_str(&value)
            .map_err(|_| bad_request("credential: not a valid header value"))?;
        headers.insert(name, value);
        match self.scope.resolve(&headers, SystemClock.now()) {
            Ok(Resolved::Scope(scope)) => Ok(scope),
            Ok(Resolved::PassThrough) => Err(bad_request("credential: not recognised")),
            Err(e) => Err(bad_request(format!("credential: {e}"))),
        }
    }

    async fn show(&self, key: &str, params: &Params) -> Answer {
        let id = match self.record_id(key, params) {
            Ok(id) => id,
            Err(answer) => return answer,
        };
        match self.store.get(&id).await {
            Ok(Some(record)) => ok(
                StatusCode::OK,
                view(
                    &record,
                    record.effective(SystemClock.now()),
                    params.body.unwrap_or(false),
                ),
            ),
            Ok(None) => problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "no record under this key",
            ),
            Err(e) => store_unavailable(&e),
        }
    }

    async fn list(&self, params: &Params) -> Answer {
        let state = match params.state.as_deref() {
            Some("outcome-unknown") | None => Unsettled::OutcomeUnknown,
            Some("in-flight") => Unsettled::InFlight,
            Some(other) => {
                return bad_request(format!(
                    "state: `{other}` is not one of outcome-unknown, in-flight"
                ))
            }
        };
        let limit = params.limit.unwrap_or(50).clamp(1, MAX_PAGE);
        let after = match params.cursor.as_deref().map(decode_cursor) {
            None => None,
            Some(Some(cursor)) => Some(cursor),
            Some(None) => return bad_request("cursor: not a cursor this API returned"),
        };
        let query = ListQuery {
            state,
            after,
            limit,
            now: SystemClock.now(),
        };
        match self.store.list(query).await {
            Ok(records) => {
                let next = (records.len() == limit)
                    .then(|| records.last().map(|r| encode_cursor(&ListCursor::after(r))))
                    .flatten();
                ok(
                    StatusCode::OK,
                    json!({
                        "keys": records
                            .iter()
                            .map(|r| view(r, state.state(), false))
                            .collect::<Vec<_>>(),
                        "next_cursor": next,
                    }),
                )
            }
            Err(e) => store_unavailable(&e),
        }
    }

    fn resolution(&self, body: &[u8]) -> Result<OperatorAction, Answer> {
        let parsed: ResolveBody = serde_json::from_slice(body).map_err(|e| {
            bad_request(format!(
                "body: {e} (expected {{\"status\": 201, \"headers\": {{...}}, \"body\": \"...\"}})"
            ))
        })?;
        if !(100..=599).contains(&parsed.status) {
            return Err(bad_request("status: must be 100..=599"));
        }
        let payload = match (parsed.body, parsed.body_base64) {
            (Some(text), None) => Bytes::from(text),
            (None, Some(b64)) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| bad_request(format!("body_base64: {e}")))?,
            ),
            (None, None) => Bytes::new(),
            (Some(_), Some(_)) => return Err(bad_request("give body or body_base64, not both")),
        };
        let mut headers = Vec::new();
        for (name, value) in parsed.headers {
            let name = name.to_ascii_lowercase();
            let Some(value) = value.as_str() else {
                return Err(bad_request(format!("headers.{name}: must be a string")));
            };
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err(bad_request(format!("headers.{name}: not a valid header")));
            }
            // What a replay would never carry is not stored either.
            if self.replay_headers.keeps(&name) {
                headers.push((name, Bytes::copy_from_slice(value.as_bytes())));
            }
        }
        Ok(OperatorAction::Resolve {
            response: StoredResponse {
                status: parsed.status,
                headers,
                body: Some(payload),
            },
            retention: self.retention.retention,
            tombstone_retention: self.retention.tombstone_retention,
        })
    }

    async fn operate(&self, key: &str, params: &Params, action: OperatorAction) -> Answer {
        let id = match self.record_id(key, params) {
            Ok(id) => id,
            Err(answer) => return answer,
        };
        let Some(token) = params.token else {
            return bad_request(
                "token: required (the record's \"token\" as read, so a record that changed since is not touched)",
            );
        };
        let name = action.name();
        let outcome = self
            .store
            .operate(&id, token, action, SystemClock.now())
            .await;
        let (result, answer) = match outcome {
            Ok(Ok(operated)) => (
                "applied",
                ok(
                    StatusCode::OK,
                    view(&operated.record, operated.state, false),
                ),
            ),
            Ok(Err(refusal)) => {
                let answer = match refusal {
                    OperatorRefusal::NotFound => {
                        problem(StatusCode::NOT_FOUND, "not-found", refusal.to_string())
                    }
                    OperatorRefusal::Changed { .. } => {
                        problem(StatusCode::CONFLICT, "record-changed", refusal.to_string())
                    }
                    OperatorRefusal::WrongState { .. } => {
                        problem(StatusCode::CONFLICT, "wrong-state", refusal.to_string())
                    }
                };
                ("refused", answer)
            }
            Err(e) => ("store-unavailable", store_unavailable(&e)),
        };
        tracing::info!(
            target: "idem::admin",
            action = name,
            result,
            scope = id.scope.as_str(),
            key = id.key.as_str(),
            token,
            "operator action"
        );
        metrics::counter!("idem_admin_actions_total", "action" => name, "result" => result)
            .increment(1);
        answer
    }
}

fn store_unavailable(e: &idem_store::StoreError) -> Answer {
    tracing::warn!(target: "idem::admin", error = e as &dyn std::error::Error, "admin store operation failed");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        "the store did not answer; nothing was changed",
    )
}

/// The record as the API shows it, in `state`: where the store decided
/// it (a listing, an operator's action) the state at the store's clock,
/// which on PostgreSQL and Redis may differ from this gateway's (a purge
/// ends retention at the store's `now`: at a gateway clock a millisecond
/// behind it would still read completed); otherwise (a `GET`) the state
/// at this gateway's clock.
pub(crate) fn view(record: &Record, state: idem_core::EffectiveState, with_body: bool) -> Value {
    let time = |t: idem_core::Timestamp| {
        let millis = u64::try_from(t.as_millis()).unwrap_or(0);
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
        humantime::format_rfc3339_millis(at).to_string()
    };
    let mut v = json!({
        "scope": record.id.scope.as_str(),
        "key": record.id.key.as_str(),
        "state": state_name(state),
        "token": record.token,
        "fingerprint": format!("v{}:{}", record.fingerprint.version, hex::encode(record.fingerprint.digest)),
        "claimed_at": time(record.claimed_at),
        "lease_until": time(record.lease_until),
        "holder": record.holder.as_deref(),
        "expires_at": time(record.expires_at),
        "tombstone_until": time(record.tombstone_until),
        "attempt": record.attempt,
    });
    if let Some(response) = &record.response {
        let headers: serde_json::Map<String, Value> = response
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    Value::String(String::from_utf8_lossy(v).into_owned()),
                )
            })
            .collect();
        let mut r = json!({
            "status": response.status,
            "headers": headers,
            "replayable": response.body.is_some(),
        });
        if with_body {
            if let Some(body) = &response.body {
                match std::str::from_utf8(body) {
                    Ok(text) => r["body"] = Value::String(text.to_owned()),
                    Err(_) => {
                        r["body_base64"] =
                            Value::String(base64::engine::general_purpose::STANDARD.encode(body))
                    }
                }
            }
        }
        v["response"] = r;
    }
    v
}

/// `claimed_at.scope.key`, scope and key as unpadded base64url.
fn encode_cursor(c: &ListCursor) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        c.claimed_at.as_millis(),
        b64.encode(c.id.scope.as_str()),
        b64.encode(c.id.key.as_str())
    )
}

fn decode_cursor(s: &str) -> Option<ListCursor> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = s.split('.');
    let claimed_at = idem_core::Timestamp(parts.next()?.parse().ok()?);
    let scope = String::from_utf8(b64.decode(parts.next()?).ok()?).ok()?;
    let key = b64.decode(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(ListCursor {
        claimed_at,
        id: RecordId {
            scope: Scope::from_stored(scope),
            key: IdempotencyKey::parse(&key).ok()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let c = ListCursor {
            claimed_at: idem_core::Timestamp(1_700_000_000_123),
            id: RecordId {
                scope: Scope::from_stored("h:ab.cd"),
                key: IdempotencyKey::parse(b"order.42/x").unwrap(),
            },
        };
        assert_eq!(decode_cursor(&encode_cursor(&c)), Some(c));
        for bad in ["", "x.y.z", "1.!!.AA", "1.YQ.YQ.YQ"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
