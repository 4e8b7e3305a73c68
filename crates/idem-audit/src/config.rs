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

use crate::plan::{AuditOptions, CountField, Endpoint, FieldPath};
use crate::scenario::ScenarioId;
use bytes::Bytes;
use idem_math::{Rate, Volume};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// A configuration file that cannot be used: the message names the file
/// and the field, e.g. `audit.toml: endpoint[1].abandon_after: "10x" is
/// not a duration (write e.g. 100ms, 2s)`.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    file: String,
    message: String,
}

impl ConfigError {
    fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.display().to_string(),
            message: message.into(),
        }
    }
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
            .map_err(|e| ConfigError::new(path, format!("cannot read it: {e}")))?;
        let config = Self::parse(&text).map_err(|m| ConfigError::new(path, m))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config
            .into_options(base)
            .map_err(|m| ConfigError::new(path, m))
    }

    /// Parses TOML text; the error names the field path.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        let deserializer = toml::de::Deserializer::parse(text)
            .map_err(|e| format!("TOML syntax error: {}", e.message().trim_end()))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().message().trim_end().to_owned();
            if path == "." || path.is_empty() {
                message
            } else {
                format!("{path}: {message}")
            }
        })
    }

    /// The run the file describes; files named in it are relative to `base`.
    pub fn into_options(self, base: &Path) -> Result<AuditOptions, String> {
        if self.endpoints.is_empty() {
            return Err("no [[endpoint]]: list at least one endpoint to audit".to_owned());
        }
        let mut endpoints = Vec::new();
        for (i, raw) in self.endpoints.into_iter().enumerate() {
            let at = |field: &str| format!("endpoint[{i}].{field}");
            let url = raw
                .url
                .as_deref()
                .ok_or_else(|| format!("{}: required", at("url")))?;
            let mut e = Endpoint::new(parse_url(url).map_err(|m| format!("{}: {m}", at("url")))?);
            e.name = raw.name;
            for (j, u) in raw.more_urls.iter().enumerate() {
                e.more_urls
                    .push(parse_url(u).map_err(|m| format!("{}[{j}]: {m}", at("more_urls")))?);
            }
            if let Some(m) = &raw.method {
                e.method = parse_method(m).map_err(|m| format!("{}: {m}", at("method")))?;
            }
            e.body = match (&raw.body, &raw.body_file) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "{}: give body or body_file, not both",
                        at("body_file")
                    ))
                }
                (Some(b), None) => {
                    file_or_text(b, base).map_err(|m| format!("{}: {m}", at("body")))?
                }
                (None, Some(file)) => {
                    let path = base.join(file);
                    Bytes::from(std::fs::read(&path).map_err(|err| {
                        format!("{}: cannot read {}: {err}", at("body_file"), path.display())
                    })?)
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
                    into.push(parse_header(h).map_err(|m| format!("{}[{j}]: {m}", at(field)))?);
                }
            }
            if let Some(h) = raw.key_header {
                e.key_header = h;
            }
            if let Some(f) = &raw.id_field {
                e.id_field = Some(
                    f.parse::<FieldPath>()
                        .map_err(|m| format!("{}: {m}", at("id_field")))?,
                );
            }
            for (j, f) in raw.ignore_fields.iter().enumerate() {
                e.ignore_fields.push(
                    f.parse::<FieldPath>()
                        .map_err(|m| format!("{}[{j}]: {m}", at("ignore_fields")))?,
                );
            }
            if let Some(u) = &raw.count_url {
                e.count_url = Some(parse_url(u).map_err(|m| format!("{}: {m}", at("count_url")))?);
            }
            if let Some(f) = &raw.count_field {
                e.count_field = f
                    .parse::<CountField>()
                    .map_err(|m| format!("{}: {m}", at("count_field")))?;
            }
            e.check_cmd = raw.check_cmd;
            if let Some(b) = &raw.changed_body {
                e.changed_body = Some(
                    file_or_text(b, base).map_err(|m| format!("{}: {m}", at("changed_body")))?,
                );
            }
            if let Some(b) = &raw.error_body {
                e.error_body =
                    Some(file_or_text(b, base).map_err(|m| format!("{}: {m}", at("error_body")))?);
            }
            if raw.count_field.is_some() && raw.count_url.is_none() {
                return Err(format!(
                    "{}: needs count_url (the count is read from there)",
                    at("count_field")
                ));
            }
            if let Some(list) = &raw.scenarios {
                e.scenarios = parse_scenarios(&list.join(","))
                    .map_err(|m| format!("{}: {m}", at("scenarios")))?;
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
                    *into = parse_duration(v).map_err(|m| format!("{}: {m}", at(field)))?;
                }
            }
            if let Some(v) = &raw.retention {
                e.retention =
                    Some(parse_duration(v).map_err(|m| format!("{}: {m}", at("retention")))?);
            }
            if let Some(b) = raw.require_key {
                e.require_key = b;
            }
            e.validate().map_err(|m| format!("endpoint[{i}].{m}"))?;
            endpoints.push(e);
        }
        let mut options = AuditOptions::new(endpoints);
        if let Some(v) = &self.volume {
            options.volume = Some(v.parse::<Volume>().map_err(|m| format!("volume: {m}"))?);
        }
        if let Some(r) = &self.ambiguous_rate {
            options.ambiguous_rate = r
                .parse::<Rate>()
                .map_err(|m| format!("ambiguous_rate: {m}"))?;
        }
        if let Some(f) = &self.fail_on {
            options.fail_on = parse_fail_on(f).map_err(|m| format!("fail_on: {m}"))?;
        }
        Ok(options)
    }
}

/// A body setting in the file: the text itself, or `@FILE` relative to the
/// configuration file.
fn file_or_text(value: &str, base: &Path) -> Result<Bytes, String> {
    match value.strip_prefix('@') {
        Some(file) => {
            let path = base.join(file);
            std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        None => Ok(Bytes::copy_from_slice(value.as_bytes())),
    }
}

/// Parses `--url` and `--count-url`: an absolute `http://` or `https://` URL.
pub fn parse_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| {
        format!("`{s}` is not an absolute URL ({e}); write it like http://127.0.0.1:8080/payments")
    })?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(format!("`{s}` has no host")),
        other => Err(format!("`{s}`: `{other}` is not http or https")),
    }
}

/// Parses `--method`.
pub fn parse_method(s: &str) -> Result<http::Method, String> {
    idem_soak::parse_method(s).map_err(|e| e.to_string())
}

/// Parses `--body`, `--changed-body` and `--error-body`: the text itself,
/// or `@FILE` to read it from a file. Any bytes are allowed (JSON is only
/// needed for the changes `payload-mismatch` makes on its own).
pub fn parse_body(s: &str) -> Result<Bytes, String> {
    match s.strip_prefix('@') {
        Some(path) => std::fs::read(path)
            .map(Bytes::from)
            .map_err(|e| format!("cannot read `{path}`: {e}")),
        None => Ok(Bytes::copy_from_slice(s.as_bytes())),
    }
}

/// Parses `--header` and `--alt-header`: `Name: value`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once(':').ok_or_else(|| {
        format!("`{s}` is not a header; write it as 'Name: value', e.g. 'Authorization: Bearer sk_test'")
    })?;
    let name = name.trim();
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    let value = value.trim();
    http::HeaderValue::from_str(value)
        .map_err(|_| format!("the value of `{name}` has characters a header cannot carry"))?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Parses `--scenarios`: ids separated by commas; `all` selects every one,
/// including the opt-in `retention`.
pub fn parse_scenarios(s: &str) -> Result<Vec<ScenarioId>, String> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(ScenarioId::ALL.to_vec());
    }
    let mut ids = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let id: ScenarioId = part
            .parse()
            .map_err(|e: crate::scenario::UnknownScenario| e.to_string())?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(
            "no scenario named; e.g. sequential-replay,concurrent-burst (or all)".to_owned(),
        );
    }
    // Run order is fixed, whatever order they were named in.
    ids.sort_by_key(|id| ScenarioId::ALL.iter().position(|a| a == id));
    Ok(ids)
}

/// Parses `--fail-on`: `low`, `medium`, `high` or `critical`.
pub fn parse_fail_on(s: &str) -> Result<crate::Severity, String> {
    s.parse::<crate::Severity>().map_err(|e| e.to_string())
}

/// Parses a duration: `100ms`, `2s`, `24h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 100ms, 2s or 24h"))
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
        assert_eq!(options.fail_on, crate::Severity::High);
    }

    #[test]
    fn errors_name_the_field() {
        let err = FileConfig::parse("[[endpoint]]\nurl = \"http://x/\"\nburts = 3\n").unwrap_err();
        assert!(
            err.contains("endpoint[0]") && err.contains("burts"),
            "{err}"
        );
        let bad = |body: &str| {
            FileConfig::parse(body)
                .unwrap()
                .into_options(Path::new("."))
                .unwrap_err()
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
            .contains("unknown scenario `x`"));
    }
}
