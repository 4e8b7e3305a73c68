//! Evidence as plain lines, shared by the text, Markdown and JUnit reports
//! so that an exchange reads the same wherever it is shown.

use crate::outcome::{Answer, Evidence, Exchange, OracleReading, Seen};
use idem_core::headers::IDEMPOTENT_REPLAYED;

/// Exchanges shown per scenario; the JSON report has them all.
pub(crate) const MAX_EXCHANGES: usize = 6;
/// Characters of a response body shown on an exchange's line.
pub(crate) const BODY_PREVIEW_CHARS: usize = 200;
/// Characters of an idempotency key shown before it is cut (overlong keys
/// are a scenario of their own).
const KEY_PREVIEW_CHARS: usize = 64;

/// One line of rendered evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// Nesting: 0 for notes, oracle readings and headings, 1 under a
    /// heading, 2 for an answer under its request.
    pub depth: usize,
    /// What kind of line it is, so the text report can style it.
    pub kind: LineKind,
    /// The line, without indentation or a trailing newline; free of control
    /// characters.
    pub text: String,
}

/// What a [`Line`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineKind {
    /// An observation in words.
    Note,
    /// What an oracle saw.
    Oracle,
    /// `exchanges:` or `reproduce:`.
    Heading,
    /// `label: METHOD URL  Idempotency-Key: k`.
    Request,
    /// `→ 201 Created {"id":1}`, under its request.
    Answer,
    /// `… N more in the JSON report`.
    More,
    /// A shell line reproducing the scenario.
    Curl,
}

/// The evidence as lines: notes, oracle readings, then the exchanges (at
/// most [`MAX_EXCHANGES`]) and the curl lines, each under a heading. An
/// exchange takes two lines, the answer under its request, so that answers
/// line up for comparison and lines stay short.
pub(crate) fn lines(evidence: &Evidence) -> Vec<Line> {
    let mut out = Vec::new();
    let mut push = |depth, kind, text: String| out.push(Line { depth, kind, text });
    for note in &evidence.notes {
        for line in note.lines() {
            push(0, LineKind::Note, sanitize(line));
        }
    }
    for reading in &evidence.oracle {
        push(0, LineKind::Oracle, oracle_line(reading));
    }
    if !evidence.exchanges.is_empty() {
        push(0, LineKind::Heading, "exchanges:".to_owned());
        for line in exchange_lines(evidence) {
            push(line.depth + 1, line.kind, line.text);
        }
    }
    if !evidence.curl.is_empty() {
        push(0, LineKind::Heading, "reproduce:".to_owned());
        for curl in &evidence.curl {
            for line in curl.lines() {
                push(1, LineKind::Curl, sanitize_curl(line));
            }
        }
    }
    out
}

/// The exchanges shown (at most [`MAX_EXCHANGES`]): each request at depth
/// 0 with its answer under it at depth 1, then `… N more` if some were
/// left out.
pub(crate) fn exchange_lines(evidence: &Evidence) -> Vec<Line> {
    let mut out = Vec::new();
    for exchange in evidence.exchanges.iter().take(MAX_EXCHANGES) {
        out.push(Line {
            depth: 0,
            kind: LineKind::Request,
            text: format!("{}: {}", one_line(&exchange.label), request_line(exchange)),
        });
        out.push(Line {
            depth: 1,
            kind: LineKind::Answer,
            text: format!("→ {}", answer_line(&exchange.answer)),
        });
    }
    let hidden = evidence.exchanges.len().saturating_sub(MAX_EXCHANGES);
    if hidden > 0 {
        out.push(Line {
            depth: 0,
            kind: LineKind::More,
            text: format!("… {hidden} more in the JSON report"),
        });
    }
    out
}

/// The lines as plain text, indented two spaces per depth, one per line.
pub(crate) fn plain_text(lines: &[Line]) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str(&"  ".repeat(line.depth));
        out.push_str(&line.text);
        out.push('\n');
    }
    out
}

/// `count-url: 3 → 5 (2 effects)`.
pub(crate) fn oracle_line(reading: &OracleReading) -> String {
    let mut line = format!("{}: {}", one_line(&reading.oracle), one_line(&reading.saw));
    if let Some(effects) = reading.effects {
        let noun = if effects == 1 { "effect" } else { "effects" };
        line.push_str(&format!(" ({effects} {noun})"));
    }
    line
}

/// `METHOD URL`, plus the idempotency key if one was sent.
pub(crate) fn request_line(exchange: &Exchange) -> String {
    let request = &exchange.request;
    let mut line = format!("{} {}", one_line(&request.method), one_line(&request.url));
    if let Some(key) = &request.key {
        line.push_str(&format!("  key: {}", key_preview(key)));
    }
    line
}

/// What came back, without the arrow.
pub(crate) fn answer_line(answer: &Answer) -> String {
    match answer {
        Answer::Response(seen) => seen_line(seen),
        Answer::Discarded(seen) => format!(
            "discarded by the fault point (client saw a reset); the server sent {}",
            seen_line(seen)
        ),
        Answer::HungUp { after_ms } => format!("hung up after {}", millis(*after_ms)),
        Answer::Error { message } => format!("error: {}", one_line(message)),
    }
}

/// `201 Created {"id":1}`, with the replay marker if the response had one.
fn seen_line(seen: &Seen) -> String {
    let mut line = status_text(seen.status);
    if let Some(marker) = seen.header(IDEMPOTENT_REPLAYED) {
        line.push_str(&format!(" [{IDEMPOTENT_REPLAYED}: {}]", one_line(marker)));
    }
    if seen.body.is_empty() {
        if seen.status != 204 && seen.status != 304 {
            line.push_str(" (empty body)");
        }
    } else {
        line.push(' ');
        line.push_str(&body_preview(seen));
    }
    line
}

/// `201 Created`, or just `299` for a status without a standard reason.
pub(crate) fn status_text(status: u16) -> String {
    match http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// The body on one line, cut at [`BODY_PREVIEW_CHARS`], `…` if cut here or
/// when it was read.
pub(crate) fn body_preview(seen: &Seen) -> String {
    let flat = one_line(&seen.body);
    let (mut preview, cut) = truncate_chars(&flat, BODY_PREVIEW_CHARS);
    if cut || seen.body_truncated {
        preview.push('…');
    }
    preview
}

/// An idempotency key as shown: `(empty)`, or cut with its length when long.
fn key_preview(key: &str) -> String {
    if key.is_empty() {
        return "(empty)".to_owned();
    }
    let flat = one_line(key);
    let (mut preview, cut) = truncate_chars(&flat, KEY_PREVIEW_CHARS);
    if cut {
        preview.push_str(&format!("… ({} chars)", key.chars().count()));
    }
    preview
}

/// Milliseconds, readable: `0.4 ms`, `12 ms`, `1.25 s`.
pub(crate) fn millis(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        "? ms".to_owned()
    } else if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let secs = (ms / 1000.0).round() as u64;
        format!("{}m {:02}s", secs / 60, secs % 60)
    }
}

/// The first `max` characters, and whether anything was cut.
fn truncate_chars(s: &str, max: usize) -> (String, bool) {
    match s.char_indices().nth(max) {
        Some((at, _)) => (s[..at].to_owned(), true),
        None => (s.to_owned(), false),
    }
}

/// Whitespace runs (newlines included) become one space; control
/// characters are escaped.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_space = false;
    for c in s.trim().chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            in_space = false;
            push_visible(&mut out, c);
        }
    }
    out
}

/// Control characters (an ANSI escape in a response body, say) escaped so
/// that server data cannot drive the terminal; tabs become spaces.
pub(crate) fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\t' => out.push_str("    "),
            c => push_visible(&mut out, c),
        }
    }
    out
}

/// A curl line as reports show it: control characters escaped, but tabs
/// kept (one inside a quoted header value is part of what it sends; the
/// auditor writes every other control character as a `printf` escape).
pub(crate) fn sanitize_curl(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\t' => out.push(c),
            c => push_visible(&mut out, c),
        }
    }
    out
}

fn push_visible(out: &mut String, c: char) {
    if c.is_control() {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::SentRequest;

    fn seen(status: u16, body: &str) -> Seen {
        Seen {
            status,
            headers: vec![],
            body: body.to_owned(),
            body_truncated: false,
        }
    }

    #[test]
    fn a_body_is_shown_on_one_line_and_cut_at_the_preview_length() {
        let long = format!("{{\n  \"a\": \"{}\"\n}}", "x".repeat(500));
        let line = answer_line(&Answer::Response(seen(201, &long)));
        assert!(line.starts_with("201 Created {"), "{line}");
        assert!(!line.contains('\n'));
        assert!(line.ends_with('…'));
        assert_eq!(
            line.chars().count(),
            "201 Created ".len() + BODY_PREVIEW_CHARS + 1
        );
    }

    #[test]
    fn a_body_cut_when_read_is_marked_even_if_short() {
        let mut s = seen(200, "{\"partial\":");
        s.body_truncated = true;
        assert_eq!(body_preview(&s), "{\"partial\":…");
    }

    #[test]
    fn server_control_characters_cannot_reach_the_terminal() {
        let line = answer_line(&Answer::Response(seen(200, "a\x1b[31mred\x07")));
        assert!(!line.contains('\x1b') && !line.contains('\x07'), "{line}");
        assert!(line.contains("\\u{1b}[31mred"), "{line}");
    }

    #[test]
    fn the_key_and_the_replay_marker_are_shown() {
        let exchange = Exchange {
            label: "retry 1".to_owned(),
            request: SentRequest {
                method: "POST".to_owned(),
                url: "http://h/pay".to_owned(),
                headers: vec![
                    ("Authorization".to_owned(), "<redacted>".to_owned()),
                    ("Idempotency-Key".to_owned(), "k-1".to_owned()),
                ],
                body: None,
                key: Some("k-1".to_owned()),
            },
            answer: Answer::Response(Seen {
                headers: vec![("Idempotent-Replayed".to_owned(), "true".to_owned())],
                ..seen(201, "{}")
            }),
            elapsed_ms: 3.0,
        };
        assert_eq!(request_line(&exchange), "POST http://h/pay  key: k-1");
        assert_eq!(
            answer_line(&exchange.answer),
            "201 Created [idempotent-replayed: true] {}"
        );
    }

    #[test]
    fn overlong_and_empty_keys_stay_readable() {
        let long = "k".repeat(300);
        assert_eq!(
            key_preview(&long),
            format!("{}… (300 chars)", "k".repeat(64))
        );
        assert_eq!(key_preview(""), "(empty)");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(millis(0.42), "0.4 ms");
        assert_eq!(millis(250.0), "250 ms");
        assert_eq!(millis(1234.0), "1.23 s");
        assert_eq!(millis(125_000.0), "2m 05s");
    }
}
