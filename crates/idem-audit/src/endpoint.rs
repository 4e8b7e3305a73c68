//! What to attack and how: one [`Endpoint`] per API operation, and the
//! [`AuditOptions`] of a whole run.

use crate::field::{CountField, FieldPath};
use crate::outcome::{ScenarioId, Severity};
use crate::tls::TlsSettings;
use bytes::Bytes;
use http::Method;
use idem_math::{Rate, Volume};
use std::time::Duration;
use url::Url;

/// The largest burst: each request holds a connection (a file descriptor
/// on both sides) until the release.
pub(crate) const MAX_BURST: u32 = 1000;

/// One operation to attack, with everything its scenarios need.
///
/// ```
/// use idem_audit::Endpoint;
/// let url = "http://127.0.0.1:8080/payments".parse().unwrap();
/// let endpoint = Endpoint::new(url).with_body(r#"{"amount":1000}"#);
/// assert_eq!(endpoint.method, http::Method::POST);
/// assert_eq!(endpoint.burst, 20);
/// ```
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// A name for reports (default `METHOD URL`, see [`Endpoint::label`]).
    pub name: Option<String>,
    /// Where requests go.
    pub url: Url,
    /// Other instances serving the same operation (each instance's URL for
    /// it, e.g. every gateway behind a load balancer). Requests rotate
    /// across `url` and these, one instance per request: a burst's copies
    /// and a key's retries land on different instances, as they do behind
    /// a load balancer, so a lock or store that is only per instance shows.
    pub more_urls: Vec<Url>,
    /// Their method (default POST).
    pub method: Method,
    /// Their body (default none). Sent as `application/json` unless the
    /// headers name a content type.
    pub body: Bytes,
    /// Sent on every request (the first tenant's credentials).
    pub headers: Vec<(String, String)>,
    /// Replace the same-named `headers` for a second tenant
    /// (`cross-tenant` needs them).
    pub alt_headers: Vec<(String, String)>,
    /// The header that carries the key (default `Idempotency-Key`).
    pub key_header: String,
    /// A JSON path into 2xx bodies whose value differs per execution
    /// (e.g. `id`): distinct values mean distinct executions.
    pub id_field: Option<FieldPath>,
    /// JSON paths left out when answers are compared: fields that differ
    /// per response even for a faithful replay (a trace id, a server time).
    pub ignore_fields: Vec<FieldPath>,
    /// Where a side-effect count can be read (GET), before and after.
    pub count_url: Option<Url>,
    /// Where the count is in that JSON.
    pub count_field: CountField,
    /// A shell command that prints a side-effect count.
    pub check_cmd: Option<String>,
    /// The body `payload-mismatch` sends (default: `body` with one value
    /// changed).
    pub changed_body: Option<Bytes>,
    /// A body that makes the API fail (`error-replay` needs it).
    pub error_body: Option<Bytes>,
    /// The scenarios to run, in order.
    pub scenarios: Vec<ScenarioId>,
    /// Requests per burst round.
    pub burst: u32,
    /// Burst rounds.
    pub rounds: u32,
    /// When `abandoned-request` hangs up.
    pub abandon_after: Duration,
    /// The API's retention window (`retention` needs it).
    pub retention: Option<Duration>,
    /// Whether a keyless request that executes is a failure.
    pub require_key: bool,
    /// How long one answer may take.
    pub timeout: Duration,
    /// How long a retry loop may keep retrying 409s.
    pub retry_deadline: Duration,
    /// How long the counting oracle must stay unchanged before a reading
    /// counts as quiet: before a scenario starts and before its last
    /// reading, so that an effect still on its way (an abandoned attempt
    /// that goes on executing) lands in the scenario that caused it. The
    /// auditor stretches it to the slowest answer seen so far; zero turns
    /// the wait off.
    pub settle: Duration,
    /// The longest one wait for a quiet oracle may take.
    pub settle_deadline: Duration,
    /// Whether the API's description declares the key header on this
    /// operation (`--openapi`): `Some(false)` is reported as unprotected;
    /// `None` when no description was read.
    pub key_declared: Option<bool>,
    /// Where the endpoint came from, for reports (`OpenAPI operation
    /// createPayment; body from requestBody.content.application/json.example`).
    pub origin: Option<String>,
}

impl Endpoint {
    /// POST to `url` with the defaults: bursts of 20, 5 rounds, hang-up
    /// after 100 ms, every default scenario.
    pub fn new(url: Url) -> Self {
        Endpoint {
            name: None,
            url,
            more_urls: Vec::new(),
            method: Method::POST,
            body: Bytes::new(),
            headers: Vec::new(),
            alt_headers: Vec::new(),
            key_header: "Idempotency-Key".to_owned(),
            id_field: None,
            ignore_fields: Vec::new(),
            count_url: None,
            count_field: CountField::Default,
            check_cmd: None,
            changed_body: None,
            error_body: None,
            scenarios: ScenarioId::ALL
                .into_iter()
                .filter(|s| s.runs_by_default())
                .collect(),
            burst: 20,
            rounds: 5,
            abandon_after: Duration::from_millis(100),
            retention: None,
            require_key: false,
            timeout: Duration::from_secs(30),
            retry_deadline: Duration::from_secs(30),
            settle: Duration::from_millis(200),
            settle_deadline: Duration::from_secs(10),
            key_declared: None,
            origin: None,
        }
    }

    /// Every instance's URL, `url` first.
    pub fn urls(&self) -> impl Iterator<Item = &Url> {
        std::iter::once(&self.url).chain(&self.more_urls)
    }

    /// The name reports use: the configured one, else `METHOD URL`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("{} {}", self.method, self.url),
        }
    }

    /// The same with a body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The same with a header on every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same with a second tenant's header.
    pub fn with_alt_header(mut self, name: &str, value: &str) -> Self {
        self.alt_headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Whether any oracle can count side effects (rather than compare
    /// bodies).
    pub fn counts_effects(&self) -> bool {
        self.count_url.is_some() || self.check_cmd.is_some()
    }

    /// The oracles in use, for reports.
    pub fn oracle_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.count_url.is_some() {
            names.push("count-url".to_owned());
        }
        if self.check_cmd.is_some() {
            names.push("check-cmd".to_owned());
        }
        if self.id_field.is_some() {
            names.push("id-field".to_owned());
        }
        if names.is_empty() {
            names.push("body".to_owned());
        }
        names
    }

    /// Checks what single flags cannot: the values fit together, and at
    /// least one selected scenario has what it needs to run.
    pub fn validate(&self) -> Result<(), InvalidEndpoint> {
        let invalid =
            |field: &'static str, message: String| Err(InvalidEndpoint { field, message });
        if self.burst < 2 {
            return invalid(
                "burst",
                "must be at least 2: a burst of one request races nothing".into(),
            );
        }
        if self.burst > MAX_BURST {
            return invalid(
                "burst",
                format!("must be at most {MAX_BURST}: every request of a burst holds its own connection open until the release"),
            );
        }
        if self.rounds == 0 {
            return invalid("rounds", "must be at least 1".into());
        }
        if self.abandon_after.is_zero() {
            return invalid("abandon_after", "must be above 0".into());
        }
        if self.settle_deadline < self.settle {
            return invalid(
                "settle_deadline",
                "must be at least @settle@: a wait for a quiet oracle could never end quiet".into(),
            );
        }
        if self.scenarios.is_empty() {
            return invalid("scenarios", "no scenario selected".into());
        }
        let urls = self.urls().map(|u| ("url", u));
        for (field, url) in urls.chain(self.count_url.iter().map(|u| ("count_url", u))) {
            if !matches!(url.scheme(), "http" | "https") {
                return invalid(
                    field,
                    format!("`{url}`: only http:// and https:// URLs can be audited"),
                );
            }
        }
        for (field, headers) in [("header", &self.headers), ("alt_header", &self.alt_headers)] {
            if headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(&self.key_header))
            {
                return invalid(
                    field,
                    format!(
                        "`{}` is the key header; the auditor chooses every key itself",
                        self.key_header
                    ),
                );
            }
        }
        let missing: Vec<String> = self
            .scenarios
            .iter()
            .filter_map(|id| {
                self.missing_for(*id)
                    .map(|need| format!("{id} needs {need}"))
            })
            .collect();
        if missing.len() == self.scenarios.len() {
            return invalid(
                "scenarios",
                format!("nothing would run: {}", missing.join("; ")),
            );
        }
        Ok(())
    }

    /// What a scenario lacks to run, if anything (it is then skipped).
    pub(crate) fn missing_for(&self, id: ScenarioId) -> Option<&'static str> {
        match id {
            ScenarioId::CrossTenant if self.alt_headers.is_empty() => Some("@alt_header@"),
            ScenarioId::ErrorReplay if self.error_body.is_none() => Some("@error_body@"),
            ScenarioId::Retention if self.retention.is_none() => Some("@retention@"),
            ScenarioId::PayloadMismatch
                if self.changed_body.is_none()
                    && serde_json::from_slice::<serde::de::IgnoredAny>(&self.body).is_err() =>
            {
                Some("@changed_body@ (the body is not JSON, so it cannot be changed automatically)")
            }
            _ => None,
        }
    }
}

/// An endpoint whose settings do not fit together. Settings are named as
/// in the configuration file (`abandon_after`); [`InvalidEndpoint::as_flag`]
/// spells them as command-line flags (`--abandon-after`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEndpoint {
    /// The setting at fault.
    pub field: &'static str,
    /// What is wrong, with other settings marked `@name@`.
    message: String,
}

impl InvalidEndpoint {
    /// A problem with `field`; other settings in `message` are marked
    /// `@name@`.
    pub(crate) fn new(field: &'static str, message: String) -> Self {
        InvalidEndpoint { field, message }
    }

    /// What is wrong, settings named as in the configuration file.
    pub fn message(&self) -> String {
        spell(&self.message, |name| name.to_owned())
    }

    /// The whole error with settings spelled as flags:
    /// `--burst: must be at least 2: …`.
    pub fn as_flag(&self) -> String {
        let flag = |name: &str| format!("--{}", name.replace('_', "-"));
        format!("{}: {}", flag(self.field), spell(&self.message, flag))
    }
}

impl std::fmt::Display for InvalidEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

impl std::error::Error for InvalidEndpoint {}

/// Replaces each `@name@` in `text` by `spelling(name)`.
fn spell(text: &str, spelling: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut parts = text.split('@');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let rest: Vec<&str> = parts.collect();
    for pair in rest.chunks(2) {
        match pair {
            [name, after] => {
                out.push_str(&spelling(name));
                out.push_str(after);
            }
            [tail] => {
                out.push('@');
                out.push_str(tail);
            }
            _ => {}
        }
    }
    out
}

/// A run: the endpoints and what the report extrapolates to.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// The endpoints, attacked one after another.
    pub endpoints: Vec<Endpoint>,
    /// With a volume, reports say what the result means per day.
    pub volume: Option<Volume>,
    /// The assumed share of requests whose outcome is ambiguous to the
    /// client and get retried (default 0.1%).
    pub ambiguous_rate: Rate,
    /// Keep credentials in reports (default: redacted).
    pub show_secrets: bool,
    /// How `https://` targets are verified.
    pub tls: TlsSettings,
    /// The least severity that fails the run (default medium); failures
    /// below it are reported as warnings.
    pub fail_on: Severity,
}

impl AuditOptions {
    /// One endpoint, no volume, 0.1% ambiguous, secrets redacted,
    /// failing on medium and worse.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        AuditOptions {
            endpoints,
            volume: None,
            ambiguous_rate: Rate::new(0.001).unwrap_or_else(|| unreachable!("0.1% is a rate")),
            show_secrets: false,
            tls: TlsSettings::default(),
            fail_on: crate::outcome::default_fail_on(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        let url: Url = "http://127.0.0.1:1/x".parse().unwrap();
        let mut e = Endpoint::new(url.clone());
        e.burst = 1;
        let err = e.validate().unwrap_err();
        assert_eq!(err.field, "burst");
        assert!(
            err.as_flag().starts_with("--burst: must be at least 2"),
            "{}",
            err.as_flag()
        );
        let e = Endpoint::new(url.clone()).with_header("idempotency-key", "k");
        assert_eq!(e.validate().unwrap_err().field, "header");
        let e = Endpoint::new("ftp://api.example/x".parse().unwrap());
        assert!(e
            .validate()
            .unwrap_err()
            .message()
            .contains("only http:// and https://"));
        assert!(Endpoint::new(url.clone()).validate().is_ok());
        // Every selected scenario lacks its setting: refused before anything is sent.
        let mut e = Endpoint::new(url);
        e.scenarios = vec![ScenarioId::CrossTenant, ScenarioId::ErrorReplay];
        let err = e.validate().unwrap_err();
        assert_eq!(err.field, "scenarios");
        assert!(
            err.to_string().contains("cross-tenant needs alt_header"),
            "{err}"
        );
        assert!(
            err.as_flag()
                .contains("cross-tenant needs --alt-header; error-replay needs --error-body"),
            "{}",
            err.as_flag()
        );
    }
}
