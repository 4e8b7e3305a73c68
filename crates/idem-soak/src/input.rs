//! Parsing and checking what `idem soak` is told. Each parser's message
//! says what is wrong with the value and what a good one looks like; clap
//! (or [`SoakOptions::validate`](crate::SoakOptions::validate)) adds the
//! flag's name.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use idem_core::headers::IDEMPOTENCY_KEY;
use reqwest::Url;
use std::path::PathBuf;
use std::str::FromStr;

/// A value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not an absolute URL.
    #[error("`{0}` is not an absolute URL ({1}); write it like http://127.0.0.1:8080/charges")]
    Url(String, String),
    /// A scheme other than http.
    #[error("`{0}`: only http:// URLs are supported (this build has no TLS); point it at a plain-HTTP address such as idem chaos or idem gateway on 127.0.0.1")]
    Scheme(String),
    /// Not an HTTP method.
    #[error("`{0}` is not an HTTP method; write e.g. POST, PATCH or PUT")]
    Method(String),
    /// The literal body is not JSON.
    #[error("`{0}` is not JSON ({1}); give a JSON document, or @FILE to read one from a file")]
    Body(String, String),
    /// The body file cannot be read.
    #[error("cannot read `{0}`: {1}")]
    BodyFile(String, String),
    /// The body file is not JSON.
    #[error("`{0}` does not hold JSON ({1})")]
    BodyFileJson(String, String),
    /// Not `Name: value`.
    #[error(
        "`{0}` is not a header; write it as 'Name: value', e.g. 'Authorization: Bearer sk_test'"
    )]
    Header(String),
    /// A header name with characters HTTP does not allow.
    #[error("`{0}`: `{1}` is not a valid header name")]
    HeaderName(String, String),
    /// A header value with characters HTTP does not allow.
    #[error("`{0}`: the value is not a valid header value (control characters?)")]
    HeaderValue(String),
    /// `Idempotency-Key` set by hand.
    #[error(
        "`{0}`: idem soak gives every logical operation its own Idempotency-Key; do not set one"
    )]
    KeyHeader(String),
    /// Not a whole number of at least 1.
    #[error("`{0}` is not a whole number of at least 1")]
    Count(String),
    /// A flag combination that cannot work (the message names the flags).
    #[error("{0}")]
    Usage(String),
}

/// Parses `--url` and `--count-url`: an absolute `http://` URL.
///
/// ```
/// assert!(idem_soak::parse_url("http://127.0.0.1:8081/charges").is_ok());
/// assert!(idem_soak::parse_url("127.0.0.1:8081").is_err());
/// ```
pub fn parse_url(s: &str) -> Result<Url, InputError> {
    let url = Url::parse(s).map_err(|e| InputError::Url(s.to_owned(), e.to_string()))?;
    match url.scheme() {
        "http" if url.host().is_some() => Ok(url),
        "http" => Err(InputError::Url(s.to_owned(), "no host".to_owned())),
        _ => Err(InputError::Scheme(s.to_owned())),
    }
}

/// Parses `--method` (case-insensitive for the standard methods).
///
/// ```
/// assert_eq!(idem_soak::parse_method("patch").unwrap(), http::Method::PATCH);
/// ```
pub fn parse_method(s: &str) -> Result<Method, InputError> {
    idem_core::method::parse(s).ok_or_else(|| InputError::Method(s.to_owned()))
}

/// Parses `--body`: a JSON document, or `@FILE` to read one.
///
/// ```
/// assert_eq!(idem_soak::parse_body(r#"{"amount":100}"#).unwrap(), r#"{"amount":100}"#);
/// assert!(idem_soak::parse_body("amount=100").is_err());
/// ```
pub fn parse_body(s: &str) -> Result<Bytes, InputError> {
    if let Some(path) = s.strip_prefix('@') {
        let bytes = std::fs::read(PathBuf::from(path))
            .map_err(|e| InputError::BodyFile(path.to_owned(), e.to_string()))?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
            .map_err(|e| InputError::BodyFileJson(path.to_owned(), e.to_string()))?;
        return Ok(Bytes::from(bytes));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(s)
        .map_err(|e| InputError::Body(s.to_owned(), e.to_string()))?;
    Ok(Bytes::copy_from_slice(s.as_bytes()))
}

/// Parses one `--header 'Name: value'`.
///
/// ```
/// let (name, value) = idem_soak::parse_header("Authorization: Bearer sk_test").unwrap();
/// assert_eq!((name.as_str(), value.to_str().unwrap()), ("authorization", "Bearer sk_test"));
/// assert!(idem_soak::parse_header("Idempotency-Key: k").is_err());
/// ```
pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), InputError> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| InputError::Header(s.to_owned()))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(InputError::Header(s.to_owned()));
    }
    let name = HeaderName::from_str(name)
        .map_err(|_| InputError::HeaderName(s.to_owned(), name.to_owned()))?;
    if name == IDEMPOTENCY_KEY {
        return Err(InputError::KeyHeader(s.to_owned()));
    }
    let value =
        HeaderValue::from_str(value.trim()).map_err(|_| InputError::HeaderValue(s.to_owned()))?;
    Ok((name, value))
}

/// Parses `--requests` and `--concurrency`: a whole number of at least 1.
///
/// ```
/// assert_eq!(idem_soak::parse_count("300").unwrap(), 300);
/// assert!(idem_soak::parse_count("0").is_err());
/// ```
pub fn parse_count(s: &str) -> Result<u64, InputError> {
    match s.trim().replace('_', "").parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(InputError::Count(s.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(parse_url("http://127.0.0.1:1/x?y=1").is_ok());
        let e = parse_url("https://api.example/charges").unwrap_err();
        assert!(e.to_string().contains("only http://"), "{e}");
        let e = parse_url("localhost:8080").unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        assert!(parse_url("/charges").is_err());
    }

    #[test]
    fn headers() {
        assert!(parse_header("X-Tenant:a").is_ok());
        assert!(matches!(
            parse_header("no colon"),
            Err(InputError::Header(_))
        ));
        assert!(matches!(parse_header(": v"), Err(InputError::Header(_))));
        assert!(matches!(
            parse_header("bad name: v"),
            Err(InputError::HeaderName(..))
        ));
        assert!(matches!(
            parse_header("x: a\u{7}b"),
            Err(InputError::HeaderValue(_))
        ));
        assert!(matches!(
            parse_header("IDEMPOTENCY-KEY: k"),
            Err(InputError::KeyHeader(_))
        ));
    }

    #[test]
    fn bodies() {
        let dir = std::env::temp_dir().join(format!("idem-soak-body-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, br#"{"amount":1}"#).unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, b"amount=1").unwrap();
        assert_eq!(
            parse_body(&format!("@{}", good.display())).unwrap(),
            r#"{"amount":1}"#
        );
        assert!(matches!(
            parse_body(&format!("@{}", bad.display())),
            Err(InputError::BodyFileJson(..))
        ));
        assert!(matches!(
            parse_body("@/nonexistent/x.json"),
            Err(InputError::BodyFile(..))
        ));
        assert!(matches!(parse_body("{"), Err(InputError::Body(..))));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn counts_and_methods() {
        assert_eq!(parse_count("1_000").unwrap(), 1000);
        assert!(parse_count("-3").is_err());
        assert!(parse_count("ten").is_err());
        assert_eq!(parse_method("post").unwrap(), Method::POST);
        assert!(parse_method("NOT A METHOD").is_err());
    }
}
