//! How requests and answers become evidence: bodies as text cut at 4 KiB,
//! secrets (credentials, cookies, tokens) redacted unless
//! `--show-secrets`, and the key picked out of the headers. The curl
//! lines that replay a request are in `curl.rs`.

use crate::http::{HttpError, Request, Response};
use crate::outcome::{Answer, Exchange, Seen, SentRequest};
use std::time::Duration;

/// Bodies kept in reports are cut here.
const EVIDENCE_BODY: usize = 4096;

/// Records an endpoint's requests and answers as reports show them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recorder<'a> {
    /// `--show-secrets`: keep credentials as they were sent.
    show_secrets: bool,
    /// The header that carries the key.
    key_header: &'a str,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(show_secrets: bool, key_header: &'a str) -> Self {
        Recorder {
            show_secrets,
            key_header,
        }
    }

    /// A header's value as reports show it: `<redacted>` for a secret,
    /// unless `--show-secrets`.
    pub(crate) fn value(&self, name: &str, value: &[u8]) -> String {
        if !self.show_secrets && is_secret(name) {
            return "<redacted>".to_owned();
        }
        String::from_utf8_lossy(value).into_owned()
    }

    /// The request as reports show it.
    pub(crate) fn request(&self, request: &Request) -> SentRequest {
        SentRequest {
            method: request.method.to_string(),
            url: request.url.to_string(),
            headers: request
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), self.value(n, v)))
                .collect(),
            body: (!request.body.is_empty())
                .then(|| String::from_utf8_lossy(&request.body).into_owned()),
            key: request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(self.key_header))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
        }
    }

    /// A response with its secret headers (`Set-Cookie`, tokens) redacted,
    /// unless `--show-secrets`.
    fn redacted(&self, mut seen: Seen) -> Seen {
        for (name, value) in &mut seen.headers {
            if name.eq_ignore_ascii_case("set-cookie") {
                *value = self.value("cookie", value.as_bytes());
            } else {
                *value = self.value(name, value.as_bytes());
            }
        }
        seen
    }

    /// An exchange for the evidence.
    pub(crate) fn exchange(
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
            request: self.request(request),
            answer,
            elapsed_ms: elapsed.as_secs_f64() * 1000.0,
        }
    }
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
