//! Curl lines that send exactly the bytes the auditor sent: the same
//! request line, the same headers with the same values (an empty value
//! as `-H 'Name;'`, since curl drops `-H 'Name: '`), the auditor's own
//! `User-Agent` and `Connection: close`, none of curl's extra headers
//! (`Accept`, `Expect`, a form `Content-Type`), HTTP/1.1, and the body
//! byte for byte. A body curl cannot take from the command line as it is
//! (control characters, a newline a terminal would indent, bytes that are
//! not UTF-8) is fed on stdin by `printf`, whose octal escapes are POSIX.
//! The lines are POSIX shell, free of control characters, so every report
//! format carries them unchanged. Only redacted secrets (`<redacted>`,
//! unless `--show-secrets`) need filling in.

use super::context::Ctx;
use crate::http::{Request, USER_AGENT};
use http::Method;
use std::fmt::Write as _;

/// Above this, some curl versions add `Expect: 100-continue` on their own.
const EXPECT_THRESHOLD: usize = 1024;

impl Ctx<'_> {
    /// A curl line that sends the same request.
    pub(crate) fn curl(&self, request: &Request) -> String {
        self.curl_with(request, "", false)
    }

    /// The same, with `prefix` before `curl` (`timeout 0.100 `) and, with
    /// `show_headers`, the answer's headers printed (`-i`).
    pub(crate) fn curl_with(&self, request: &Request, prefix: &str, show_headers: bool) -> String {
        let has = |name: &str| {
            request
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        let mut feed = String::new();
        let mut line = format!("{prefix}curl -sS");
        if show_headers {
            line.push('i');
        }
        line.push_str(" --http1.1 -g");
        if request.method == Method::HEAD {
            line.push_str(" -I");
        } else {
            let _ = write!(line, " -X {}", request.method);
        }
        if !has("accept") {
            line.push_str(" -H 'Accept:'");
        }
        if request.body.len() > EXPECT_THRESHOLD && !has("expect") {
            line.push_str(" -H 'Expect:'");
        }
        for (name, value) in &request.headers {
            let value = self.recorder.value(name, value);
            let header = if value.is_empty() {
                format!("{name};")
            } else {
                format!("{name}: {value}")
            };
            let _ = write!(line, " -H {}", shell_quote(&header));
        }
        if request.adds_user_agent() {
            let _ = write!(line, " -H 'user-agent: {USER_AGENT}'");
        }
        line.push_str(" -H 'connection: close'");
        if !request.body.is_empty() {
            match std::str::from_utf8(&request.body) {
                Ok(text) if !text.chars().any(char::is_control) => {
                    let _ = write!(line, " --data-raw {}", shell_quote(text));
                }
                _ => {
                    feed = format!("printf {} | ", shell_quote(&printf_format(&request.body)));
                    line.push_str(" --data-binary @-");
                }
            }
        } else if request.needs_length() {
            // `Content-Length: 0`, without the form type curl would add.
            line.push_str(" --data-raw ''");
            if !has("content-type") {
                line.push_str(" -H 'Content-Type:'");
            }
        }
        let _ = write!(line, " {}", shell_quote(request.url.as_str()));
        feed + &line
    }
}

/// Single-quotes for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A `printf` format that writes `body` exactly: `\` and `%` escaped,
/// control characters (and bytes that are not UTF-8) as octal escapes.
fn printf_format(body: &[u8]) -> String {
    fn octal(out: &mut String, byte: u8) {
        let _ = write!(out, "\\{byte:03o}");
    }
    let mut out = String::with_capacity(body.len() + 16);
    match std::str::from_utf8(body) {
        Ok(text) => {
            for c in text.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '%' => out.push_str("%%"),
                    c if c.is_control() => {
                        let mut buf = [0u8; 4];
                        for byte in c.encode_utf8(&mut buf).bytes() {
                            octal(&mut out, byte);
                        }
                    }
                    c => out.push(c),
                }
            }
        }
        Err(_) => {
            for &byte in body {
                match byte {
                    b'\\' => out.push_str("\\\\"),
                    b'%' => out.push_str("%%"),
                    0x20..=0x7e => out.push(char::from(byte)),
                    _ => octal(&mut out, byte),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printf_escapes_what_the_shell_or_printf_would_change() {
        assert_eq!(printf_format(b"a\tb\nc"), "a\\011b\\012c");
        assert_eq!(printf_format(b"100% \\o/"), "100%% \\\\o/");
        assert_eq!(printf_format("café ☃".as_bytes()), "café ☃");
        assert_eq!(printf_format(b"\xff\x00a"), "\\377\\000a");
    }
}
