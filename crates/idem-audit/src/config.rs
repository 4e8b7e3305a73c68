//! `--config FILE`: several endpoints in one run, each with the settings
//! its command-line flags would give, and the value parsers the flags and
//! the file share (so a value means the same in both places).
//!
//! ```toml
//! volume = "10M/day"
//! headers = ["Authorization: Bearer sk_test_a"]      # on every endpoint
//! alt_headers = ["Authorization: Bearer sk_test_b"]
//!
//! [[endpoint]]
//! name = "create payment"
//! url = "http://127.0.0.1:8080/payments"
//! body = '{"amount": 1000, "currency": "eur"}'
//! id_field = "id"
//! count_url = "http://127.0.0.1:8080/payments/count"
//!
//! [[endpoint]]
//! url = "http://127.0.0.1:8080/refunds"
//! body_file = "refund.json"
//! scenarios = ["sequential-replay", "concurrent-burst"]
//! burst = 50
//! ```

use crate::endpoint::{AuditOptions, Endpoint, InvalidEndpoint};
use crate::field::{CountField, CountFieldError, FieldPath, FieldPathError};
use crate::outcome::{ScenarioId, Severity, UnknownScenario, UnknownSeverity};
use bytes::Bytes;
use idem_math::{Rate, RateError, Volume, VolumeError};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// A configuration that cannot be used: the message names the file (when
/// it was read from one) and the field, e.g. `audit.toml:
/// endpoint[1].abandon_after: `10x` is not a duration (…); write e.g.
/// 100ms, 2s or 24h`.
#[derive(Debug)]
pub struct ConfigError {
    file: Option<String>,
    /// The field path at fault (`endpoint[1].abandon_after`), if one is.
    field: Option<String>,
    problem: Problem,
}

/// What is wrong, the field aside.
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    #[error("TOML syntax error: {0}")]
    Syntax(String),
    /// Unknown or ill-typed, as the deserializer says.
    #[error("{0}")]
    Schema(String),
    #[error("no [[endpoint]]: list at least one endpoint to audit")]
    NoEndpoint,
    #[error("required")]
    Required,
    #[error("give body or body_file, not both")]
    BodyAndBodyFile,
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("needs count_url (the count is read from there)")]
    NeedsCountUrl,
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error(transparent)]
    FieldPath(#[from] FieldPathError),
    #[error(transparent)]
    CountField(#[from] CountFieldError),
    #[error("{}", .0.message())]
    Endpoint(InvalidEndpoint),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Rate(#[from] RateError),
}

impl ConfigError {
    fn new(problem: impl Into<Problem>) -> Self {
        ConfigError {
            file: None,
            field: None,
            problem: problem.into(),
        }
    }

    fn at(field: impl Into<String>, problem: impl Into<Problem>) -> Self {
        ConfigError {
            field: Some(field.into()),
            ..ConfigError::new(problem)
        }
    }

    fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.display().to_string());
        self
    }

    /// The file, if the configuration was read from one.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The field path at fault (`endpoint[1].abandon_after`), if the
    /// problem is one field's.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        self.problem.fmt(f)
    }
}

impl std::error::Error for ConfigError {}

/// A flag's value (or the same setting in a configuration file) that
/// cannot be used; the message says what a good one looks like.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not an absolute URL.
    #[error(
        "`{given}` is not an absolute URL ({reason}); write it like http://127.0.0.1:8080/payments"
    )]
    Url {
        /// What was given.
        given: String,
        /// Why it does not parse.
        reason: url::ParseError,
    },
    /// A URL without a host.
    #[error("`{0}` has no host")]
    NoHost(String),
    /// A scheme other than http and https.
    #[error("`{given}`: `{scheme}` is not http or https")]
    Scheme {
        /// What was given.
        given: String,
        /// Its scheme.
        scheme: String,
    },
    /// Not an HTTP method.
    #[error("`{0}` is not an HTTP method; write e.g. POST, PATCH or PUT")]
    Method(String),
    /// An `@FILE` body that cannot be read.
    #[error("cannot read `{path}`: {reason}")]
    BodyFile {
        /// The file.
        path: String,
        /// Why.
        reason: std::io::Error,
    },
    /// Not `Name: value`.
    #[error(
        "`{0}` is not a header; write it as 'Name: value', e.g. 'Authorization: Bearer sk_test'"
    )]
    Header(String),
    /// A header name HTTP does not allow.
    #[error("`{0}` is not a valid header name")]
    HeaderName(String),
    /// A header value HTTP does not allow (the header's name).
    #[error("the value of `{0}` has characters a header cannot carry")]
    HeaderValue(String),
    /// A scenario id that names no scenario.
    #[error(transparent)]
    Scenario(#[from] UnknownScenario),
    /// A scenario list without a scenario.
    #[error("no scenario named; e.g. sequential-replay,concurrent-burst (or all)")]
    NoScenario,
    /// Not a severity to fail on.
    #[error(transparent)]
    FailOn(#[from] UnknownSeverity),
    /// Not a duration.
    #[error("`{given}` is not a duration ({reason}); write e.g. 100ms, 2s or 24h")]
    Duration {
        /// What was given.
        given: String,
        /// Why it does not parse.
        reason: humantime::DurationError,
    },
}

/// The file's top level.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--volume` for the whole run.
    pub volume: Option<String>,
    /// `--ambiguous-rate` for the whole run.
    pub ambiguous_rate: Option<String>,
    /// `--fail-on` for the whole run: `low`, `medium`, `high` or `critical`.
    pub fail_on: Option<String>,
    /// Headers sent to every endpoint, before the endpoint's own.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Second-tenant headers for every endpoint.
    #[serde(default)]
    pub alt_headers: Vec<String>,
    /// The endpoints, in run order.
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<FileEndpoint>,
}

/// One `[[endpoint]]`: every field is the flag of the same name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FileEndpoint {
    pub name: Option<String>,
    pub url: Option<String>,
    /// Other instances' URLs for the operation; requests rotate across all.
    #[serde(default)]
    pub more_urls: Vec<String>,
    pub method: Option<String>,
    pub body: Option<String>,
    /// The body read from a file (relative to the configuration file).
    pub body_file: Option<PathBuf>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub alt_headers: Vec<String>,
    pub key_header: Option<String>,
    pub id_field: Option<String>,
    /// `--ignore-field`, repeated.
    #[serde(default)]
    pub ignore_fields: Vec<String>,
    pub count_url: Option<String>,
    pub count_field: Option<String>,
    pub check_cmd: Option<String>,
    pub changed_body: Option<String>,
    pub error_body: Option<String>,
    pub scenarios: Option<Vec<String>>,
    pub burst: Option<u32>,
    pub rounds: Option<u32>,
    pub abandon_after: Option<String>,
    pub retention: Option<String>,
    pub require_key: Option<bool>,
    pub timeout: Option<String>,
    pub retry_deadline: Option<String>,
    pub settle: Option<String>,
    pub settle_deadline: Option<String>,
}

impl FileConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<AuditOptions, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(Problem::Read(e)).in_file(path))?;
        let config = Self::parse(&text).map_err(|e| e.in_file(path))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.into_options(base).map_err(|e| e.in_file(path))
    }

    /// Parses TOML text; the error names the field path.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        let deserializer = toml::de::Deserializer::parse(text)
            .map_err(|e| ConfigError::new(Problem::Syntax(e.message().trim_end().to_owned())))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let problem = Problem::Schema(e.inner().message().trim_end().to_owned());
            if path == "." || path.is_empty() {
                ConfigError::new(problem)
            } else {
                ConfigError::at(path, problem)
            }
        })
    }

    /// The run the file describes; files named in it are relative to `base`.
    pub fn into_options(self, base: &Path) -> Result<AuditOptions, ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::new(Problem::NoEndpoint));
        }
        let mut endpoints = Vec::new();
        for (i, raw) in self.endpoints.into_iter().enumerate() {
            let at = |field: &str| format!("endpoint[{i}].{field}");
            let url = raw
                .url
                .as_deref()
                .ok_or_else(|| ConfigError::at(at("url"), Problem::Required))?;
            let mut e = Endpoint::new(parse_url(url).map_err(err_at(at("url")))?);
            e.name = raw.name;
            for (j, u) in raw.more_urls.iter().enumerate() {
                e.more_urls
                    .push(parse_url(u).map_err(err_at(at(&format!("more_urls[{j}]"))))?);
            }
            if let Some(m) = &raw.method {
                e.method = parse_method(m).map_err(err_at(at("method")))?;
            }
            e.body = match (&raw.body, &raw.body_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::at(at("body_file"), Problem::BodyAndBodyFile))
                }
                (Some(b), None) => file_or_text(b, base).map_err(err_at(at("body")))?,
                (None, Some(file)) => {
                    let path = base.join(file);
                    match std::fs::read(&path) {
                        Ok(bytes) => Bytes::from(bytes),
                        Err(reason) => {
                            return Err(ConfigError::at(
                                at("body_file"),
                                Problem::Unreadable { path, reason },
                            ))
                        }
                    }
                }
                (None, None) => Bytes::new(),
            };
            for (field, list, into) in [
                ("headers", [&self.headers, &raw.headers], &mut e.headers),
                (
                    "alt_headers",
                    [&self.alt_headers, &raw.alt_headers],
                    &mut e.alt_headers,
                ),
            ] {
                for (j, h) in list.into_iter().flatten().enumerate() {
                    into.push(parse_header(h).map_err(err_at(at(&format!("{field}[{j}]"))))?);
                }
            }
            if let Some(h) = raw.key_header {
                e.key_header = h;
            }
            if let Some(f) = &raw.id_field {
                e.id_field = Some(f.parse::<FieldPath>().map_err(err_at(at("id_field")))?);
            }
            for (j, f) in raw.ignore_fields.iter().enumerate() {
                e.ignore_fields.push(
                    f.parse::<FieldPath>()
                        .map_err(err_at(at(&format!("ignore_fields[{j}]"))))?,
                );
            }
            if let Some(u) = &raw.count_url {
                e.count_url = Some(parse_url(u).map_err(err_at(at("count_url")))?);
            }
            if let Some(f) = &raw.count_field {
                e.count_field = f.parse::<CountField>().map_err(err_at(at("count_field")))?;
            }
            e.check_cmd = raw.check_cmd;
            if let Some(b) = &raw.changed_body {
                e.changed_body = Some(file_or_text(b, base).map_err(err_at(at("changed_body")))?);
            }
            if let Some(b) = &raw.error_body {
                e.error_body = Some(file_or_text(b, base).map_err(err_at(at("error_body")))?);
            }
            if raw.count_field.is_some() && raw.count_url.is_none() {
                return Err(ConfigError::at(at("count_field"), Problem::NeedsCountUrl));
            }
            if let Some(list) = &raw.scenarios {
                e.scenarios = parse_scenarios(&list.join(",")).map_err(err_at(at("scenarios")))?;
            }
            if let Some(n) = raw.burst {
                e.burst = n;
            }
            if let Some(n) = raw.rounds {
                e.rounds = n;
            }
            for (field, value, into) in [
                ("abandon_after", &raw.abandon_after, &mut e.abandon_after),
                ("timeout", &raw.timeout, &mut e.timeout),
                ("retry_deadline", &raw.retry_deadline, &mut e.retry_deadline),
                ("settle", &raw.settle, &mut e.settle),
                (
                    "settle_deadline",
                    &raw.settle_deadline,
                    &mut e.settle_deadline,
                ),
            ] {
                if let Some(v) = value {
                    *into = parse_duration(v).map_err(err_at(at(field)))?;
                }
            }
            if let Some(v) = &raw.retention {
                e.retention = Some(parse_duration(v).map_err(err_at(at("retention")))?);
            }
            if let Some(b) = raw.require_key {
                e.require_key = b;
            }
            e.validate()
                .map_err(|m| ConfigError::at(at(m.field), Problem::Endpoint(m)))?;
            endpoints.push(e);
        }
        let mut options = AuditOptions::new(endpoints);
        if let Some(v) = &self.volume {
            options.volume = Some(
                v.parse::<Volume>()
                    .map_err(|m| ConfigError::at("volume", m))?,
            );
        }
        if let Some(r) = &self.ambiguous_rate {
            options.ambiguous_rate = r
                .parse::<Rate>()
                .map_err(|m| ConfigError::at("ambiguous_rate", m))?;
        }
        if let Some(f) = &self.fail_on {
            options.fail_on = parse_fail_on(f).map_err(|m| ConfigError::at("fail_on", m))?;
        }
        Ok(options)
    }
}

/// The error of the setting at `field`.
fn err_at<E: Into<Problem>>(field: String) -> impl FnOnce(E) -> ConfigError {
    move |problem| ConfigError::at(field, problem)
}

/// A body setting in the file: the text itself, or `@FILE` relative to the
/// configuration file.
fn file_or_text(value: &str, base: &Path) -> Result<Bytes, Problem> {
    match value.strip_prefix('@') {
        Some(file) => {
            let path = base.join(file);
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Bytes::from(bytes)),
                Err(reason) => Err(Problem::Unreadable { path, reason }),
            }
        }
        None => Ok(Bytes::copy_from_slice(value.as_bytes())),
    }
}

/// Parses `--url` and `--count-url`: an absolute `http://` or `https://` URL.
pub fn parse_url(s: &str) -> Result<Url, ValueError> {
    let url = Url::parse(s.trim()).map_err(|reason| ValueError::Url {
        given: s.to_owned(),
        reason,
    })?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(ValueError::NoHost(s.to_owned())),
        other => Err(ValueError::Scheme {
            given: s.to_owned(),
            scheme: other.to_owned(),
        }),
    }
}

/// Parses `--method`: a method token, the standard methods in any case
/// (`patch` is PATCH).
pub fn parse_method(s: &str) -> Result<http::Method, ValueError> {
    idem_core::method::parse(s).ok_or_else(|| ValueError::Method(s.to_owned()))
}

/// Parses `--body`, `--changed-body` and `--error-body`: the text itself,
/// or `@FILE` to read it from a file. Any bytes are allowed (JSON is only
/// needed for the changes `payload-mismatch` makes on its own).
pub fn parse_body(s: &str) -> Result<Bytes, ValueError> {
    match s.strip_prefix('@') {
        Some(path) => std::fs::read(path)
            .map(Bytes::from)
            .map_err(|reason| ValueError::BodyFile {
                path: path.to_owned(),
                reason,
            }),
        None => Ok(Bytes::copy_from_slice(s.as_bytes())),
    }
}

/// Parses `--header` and `--alt-header`: `Name: value`.
pub fn parse_header(s: &str) -> Result<(String, String), ValueError> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| ValueError::Header(s.to_owned()))?;
    let name = name.trim();
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ValueError::HeaderName(name.to_owned()))?;
    let value = value.trim();
    http::HeaderValue::from_str(value).map_err(|_| ValueError::HeaderValue(name.to_owned()))?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Parses `--scenarios`: ids separated by commas; `all` selects every one,
/// including the opt-in `retention`.
pub fn parse_scenarios(s: &str) -> Result<Vec<ScenarioId>, ValueError> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(ScenarioId::ALL.to_vec());
    }
    let mut ids = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let id: ScenarioId = part.parse()?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(ValueError::NoScenario);
    }
    // Run order is fixed, whatever order they were named in.
    ids.sort_by_key(|id| ScenarioId::ALL.iter().position(|a| a == id));
    Ok(ids)
}

/// Parses `--fail-on`: `low`, `medium`, `high` or `critical`.
pub fn parse_fail_on(s: &str) -> Result<Severity, ValueError> {
    Ok(s.parse::<Severity>()?)
}

/// Parses a duration: `100ms`, `2s`, `24h`.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(s.trim()).map_err(|reason| ValueError::Duration {
        given: s.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_two_endpoints_and_shared_headers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("refund.json"), r#"{"amount": 5}"#).unwrap();
        let config = FileConfig::parse(
            r#"
            volume = "10M/day"
            fail_on = "high"
            headers = ["Authorization: Bearer a"]
            [[endpoint]]
            name = "pay"
            url = "http://127.0.0.1:1/payments"
            more_urls = ["http://127.0.0.1:2/payments"]
            body = '{"amount": 1}'
            id_field = "id"
            abandon_after = "50ms"
            settle = "1s"
            settle_deadline = "20s"
            [[endpoint]]
            url = "http://127.0.0.1:1/refunds"
            body_file = "refund.json"
            error_body = "@refund.json"
            headers = ["X-Extra: 1"]
            scenarios = ["concurrent-burst", "sequential-replay"]
            "#,
        )
        .unwrap();
        let options = config.into_options(dir.path()).unwrap();
        assert_eq!(options.endpoints.len(), 2);
        let [pay, refund] = &options.endpoints[..] else {
            unreachable!()
        };
        assert_eq!(pay.label(), "pay");
        assert_eq!(pay.urls().count(), 2);
        assert_eq!(pay.abandon_after, Duration::from_millis(50));
        assert_eq!(pay.settle, Duration::from_secs(1));
        assert_eq!(pay.settle_deadline, Duration::from_secs(20));
        assert_eq!(refund.headers.len(), 2);
        assert_eq!(&refund.body[..], br#"{"amount": 5}"#);
        assert_eq!(refund.error_body.as_deref(), Some(&br#"{"amount": 5}"#[..]));
        assert_eq!(
            refund.scenarios,
            [ScenarioId::SequentialReplay, ScenarioId::ConcurrentBurst]
        );
        assert!(options.volume.is_some());
        assert_eq!(options.fail_on, Severity::High);
    }

    #[test]
    fn errors_name_the_field() {
        let err = FileConfig::parse("[[endpoint]]\nurl = \"http://x/\"\nburts = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("endpoint[0]") && err.contains("burts"),
            "{err}"
        );
        let bad = |body: &str| {
            FileConfig::parse(body)
                .unwrap()
                .into_options(Path::new("."))
                .unwrap_err()
                .to_string()
        };
        let err = bad("[[endpoint]]\nurl = \"http://x/\"\nabandon_after = \"10x\"\n");
        assert!(err.starts_with("endpoint[0].abandon_after:"), "{err}");
        let err = bad("[[endpoint]]\nurl = \"http://x/\"\n[[endpoint]]\nurl = \"ftp://y/\"\n");
        assert!(
            err.starts_with("endpoint[1].url:") && err.contains("ftp"),
            "{err}"
        );
        let err = bad("[[endpoint]]\nurl = \"http://x/\"\nheaders = [\"nocolon\"]\n");
        assert!(err.starts_with("endpoint[0].headers[0]:"), "{err}");
        let err = bad("[[endpoint]]\nurl = \"http://x/\"\nscenarios = [\"replays\"]\n");
        assert!(err.starts_with("endpoint[0].scenarios:"), "{err}");
        let err = bad("");
        assert!(err.contains("no [[endpoint]]"), "{err}");
        let err = bad("[[endpoint]]\nurl = \"http://x/\"\ncount_field = \"n\"\n");
        assert!(
            err.starts_with("endpoint[0].count_field: needs count_url"),
            "{err}"
        );
        let err = bad("[[endpoint]]\nurl = \"http://x/\"\nburst = 1\n");
        assert!(
            err.starts_with("endpoint[0].burst: must be at least 2"),
            "{err}"
        );
        let err = bad("fail_on = \"info\"\n[[endpoint]]\nurl = \"http://x/\"\n");
        assert!(
            err.starts_with("fail_on: `info` is not a severity"),
            "{err}"
        );
        let err = bad("[[endpoint]]\nurl = \"http://x/\"\nsettle = \"20s\"\n");
        assert!(
            err.starts_with("endpoint[0].settle_deadline: must be at least settle"),
            "{err}"
        );
        let err = bad("[[endpoint]]\nname = \"x\"\n");
        assert!(err.starts_with("endpoint[0].url: required"), "{err}");
    }

    #[test]
    fn scenario_lists() {
        assert_eq!(parse_scenarios("all").unwrap().len(), ScenarioId::ALL.len());
        assert_eq!(
            parse_scenarios("concurrent-burst, sequential-replay,concurrent-burst").unwrap(),
            [ScenarioId::SequentialReplay, ScenarioId::ConcurrentBurst]
        );
        assert!(parse_scenarios(",").is_err());
        assert!(parse_scenarios("x")
            .unwrap_err()
            .to_string()
            .contains("unknown scenario `x`"));
    }
}
