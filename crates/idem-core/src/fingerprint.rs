//! The request fingerprint: a versioned SHA-256 over method, path, sorted
//! query, `Content-Type`, configured extra headers and the body, with JSON
//! bodies canonicalised (RFC 8785) so a client that re-serialises its
//! payload on retry is not told it changed it.

use sha2::{Digest, Sha256};
use std::fmt;

/// The version of the algorithm below; stored with every record so a
/// future change can tell old fingerprints from new ones.
pub const FINGERPRINT_VERSION: u16 = 1;

/// A request's fingerprint and the algorithm version that produced it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Algorithm version.
    pub version: u16,
    /// SHA-256 digest.
    pub digest: [u8; 32],
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}:{}", self.version, hex::encode(&self.digest[..8]))
    }
}

/// What goes into a fingerprint.
#[derive(Debug, Clone, Copy)]
pub struct FingerprintInput<'a> {
    /// The request method, e.g. `POST`.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The `Content-Type` header's value.
    pub content_type: Option<&'a [u8]>,
    /// Configured extra headers: (lower-case name, value if present).
    pub extra_headers: &'a [(&'a str, Option<&'a [u8]>)],
    /// The whole request body.
    pub body: &'a [u8],
}

impl Fingerprint {
    /// Computes the current-version fingerprint.
    ///
    /// ```
    /// use idem_core::fingerprint::{Fingerprint, FingerprintInput};
    /// let input = |body: &'static [u8]| FingerprintInput {
    ///     method: "POST", path: "/charges", query: None,
    ///     content_type: Some(b"application/json"), extra_headers: &[], body,
    /// };
    /// assert_eq!(
    ///     Fingerprint::compute(&input(br#"{"amount": 100, "currency": "eur"}"#)),
    ///     Fingerprint::compute(&input(br#"{"currency":"eur","amount":1.0e2}"#)),
    /// );
    /// ```
    pub fn compute(input: &FingerprintInput<'_>) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(b"idem-fingerprint-v1");
        field(&mut h, input.method.as_bytes());
        field(&mut h, input.path.as_bytes());
        let mut params: Vec<&str> = input
            .query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .collect();
        params.sort_unstable();
        h.update((params.len() as u64).to_be_bytes());
        for p in params {
            field(&mut h, p.as_bytes());
        }
        optional(&mut h, input.content_type);
        h.update((input.extra_headers.len() as u64).to_be_bytes());
        for (name, value) in input.extra_headers {
            field(&mut h, name.as_bytes());
            optional(&mut h, *value);
        }
        match canonical_json_body(input.content_type, input.body) {
            Some(canonical) => {
                h.update(b"J");
                field(&mut h, &canonical);
            }
            None => {
                h.update(b"B");
                field(&mut h, input.body);
            }
        }
        Fingerprint {
            version: FINGERPRINT_VERSION,
            digest: h.finalize().into(),
        }
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn optional(h: &mut Sha256, v: Option<&[u8]>) {
    match v {
        Some(v) => {
            h.update([1]);
            field(h, v);
        }
        None => h.update([0]),
    }
}

/// True for `application/json` and any `+json` media type.
pub fn is_json_media_type(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    let essence = String::from_utf8_lossy(essence).trim().to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The RFC 8785 form of a JSON body, or `None` if the body is not declared
/// as JSON or does not parse (then its bytes are hashed as they are).
pub fn canonical_json_body(content_type: Option<&[u8]>, body: &[u8]) -> Option<Vec<u8>> {
    if !content_type.is_some_and(is_json_media_type) {
        return None;
    }
    canonical_json(body)
}

/// The RFC 8785 canonical form of a JSON document, or `None` if it does not
/// parse.
///
/// ```
/// use idem_core::fingerprint::canonical_json;
/// let c = canonical_json(br#"[56, {"d": true, "10": null, "1": [ ]}, 4.50, 1E30, 2e-3]"#).unwrap();
/// assert_eq!(c, br#"[56,{"1":[],"10":null,"d":true},4.5,1e+30,0.002]"#);
/// ```
pub fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut out = Vec::with_capacity(body.len());
    write_canonical(&value, &mut out);
    Some(out)
}

// Written here rather than taken from a JCS crate: the one we measured
// re-parsed every object key to sort it, which cost more than the SHA-256
// and the rest of the fingerprint together.
fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // RFC 8785 numbers are IEEE 754 doubles printed as ECMAScript
            // does (integers beyond 2^53 lose precision, as the RFC says).
            let f = n.as_f64().unwrap_or(0.0);
            if f == 0.0 {
                out.push(b'0');
            } else {
                out.extend_from_slice(ryu_js::Buffer::new().format_finite(f).as_bytes());
            }
        }
        // serde_json escapes exactly what RFC 8785 asks: `"`, `\\` and
        // control characters (short forms or lower-case \u00xx).
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            // Keys sort by their UTF-16 code units.
            sorted.sort_unstable_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn fp(
        method: &str,
        path: &str,
        query: Option<&str>,
        ct: Option<&[u8]>,
        body: &[u8],
    ) -> Fingerprint {
        Fingerprint::compute(&FingerprintInput {
            method,
            path,
            query,
            content_type: ct,
            extra_headers: &[],
            body,
        })
    }

    const JSON: Option<&[u8]> = Some(b"application/json; charset=utf-8");

    #[test]
    fn method_path_query_and_content_type_all_count() {
        let base = fp("POST", "/a", Some("x=1"), JSON, b"{}");
        assert_ne!(base, fp("PATCH", "/a", Some("x=1"), JSON, b"{}"));
        assert_ne!(base, fp("POST", "/b", Some("x=1"), JSON, b"{}"));
        assert_ne!(base, fp("POST", "/a", Some("x=2"), JSON, b"{}"));
        assert_ne!(
            base,
            fp("POST", "/a", Some("x=1"), Some(b"text/plain"), b"{}")
        );
        assert_eq!(
            fp("POST", "/a", Some("b=2&a=1"), None, b""),
            fp("POST", "/a", Some("a=1&b=2"), None, b"")
        );
    }

    #[test]
    fn non_json_bodies_are_hashed_as_bytes() {
        assert_ne!(
            fp("POST", "/a", None, Some(b"text/plain"), b"{\"a\":1}"),
            fp("POST", "/a", None, Some(b"text/plain"), b"{ \"a\": 1 }")
        );
        // Malformed JSON falls back to bytes instead of failing.
        assert_ne!(
            fp("POST", "/a", None, JSON, b"{"),
            fp("POST", "/a", None, JSON, b"{ ")
        );
    }

    #[test]
    fn rfc_8785_examples_canonicalise_as_published() {
        let c = |s: &str| String::from_utf8(canonical_json(s.as_bytes()).unwrap()).unwrap();
        assert_eq!(c("333333333.33333329"), "333333333.3333333");
        assert_eq!(c("1E30"), "1e+30");
        assert_eq!(c("4.50"), "4.5");
        assert_eq!(c("2e-3"), "0.002");
        assert_eq!(c("0.000000000000000000000000001"), "1e-27");
        assert_eq!(c("-0"), "0");
        assert_eq!(
            c(r#""\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/""#),
            "\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\""
        );
        // UTF-16 order: U+1F600 (a surrogate pair, 0xD83D...) sorts before U+FB33.
        assert_eq!(
            c("{\"\u{fb33}\":1,\"\u{1f600}\":2}"),
            "{\"\u{1f600}\":2,\"\u{fb33}\":1}"
        );
    }

    #[test]
    fn numbers_are_normalised() {
        assert_eq!(
            fp("POST", "/a", None, JSON, br#"{"n":1.50}"#),
            fp("POST", "/a", None, JSON, br#"{"n":15e-1}"#)
        );
        assert_ne!(
            fp("POST", "/a", None, JSON, br#"{"n":1.5}"#),
            fp("POST", "/a", None, JSON, br#"{"n":1.6}"#)
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            "[a-z0-9 ]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// Serialises with object members in reverse order and extra whitespace.
    fn reshuffled(v: &Value) -> String {
        match v {
            Value::Object(m) => {
                let parts: Vec<String> = m
                    .iter()
                    .rev()
                    .map(|(k, v)| {
                        format!(
                            "\n  {} :\t{}",
                            serde_json::to_string(k).unwrap(),
                            reshuffled(v)
                        )
                    })
                    .collect();
                format!("{{ {} }}", parts.join(" , "))
            }
            Value::Array(a) => format!(
                "[ {} ]",
                a.iter().map(reshuffled).collect::<Vec<_>>().join(" ,")
            ),
            other => other.to_string(),
        }
    }

    /// Changes one leaf somewhere in the value; `None` if it has no leaf.
    fn mutate(v: &Value) -> Option<Value> {
        match v {
            Value::Null => Some(Value::Bool(false)),
            Value::Bool(b) => Some(Value::Bool(!b)),
            Value::Number(n) => Some(Value::from(n.as_i64().unwrap_or(0).wrapping_add(1))),
            Value::String(s) => Some(Value::String(format!("{s}x"))),
            Value::Array(a) => {
                let mut a = a.clone();
                match a.iter().position(|x| mutate(x).is_some()) {
                    Some(i) => a[i] = mutate(&a[i])?,
                    None => a.push(Value::Null),
                }
                Some(Value::Array(a))
            }
            Value::Object(m) => {
                let mut m = m.clone();
                let key = m.keys().next().cloned();
                match key {
                    Some(k) => {
                        let new = mutate(&m[&k])?;
                        m.insert(k, new);
                    }
                    None => {
                        m.insert("new".into(), Value::Null);
                    }
                }
                Some(Value::Object(m))
            }
        }
    }

    proptest! {
        #[test]
        fn reordering_keys_or_whitespace_never_changes_the_fingerprint(v in json_value()) {
            let compact = serde_json::to_string(&v).unwrap();
            let noisy = reshuffled(&v);
            prop_assert_eq!(
                fp("POST", "/x", None, JSON, compact.as_bytes()),
                fp("POST", "/x", None, JSON, noisy.as_bytes())
            );
        }

        #[test]
        fn changing_any_value_always_changes_the_fingerprint(v in json_value()) {
            if let Some(changed) = mutate(&v) {
                prop_assume!(changed != v);
                prop_assert_ne!(
                    fp("POST", "/x", None, JSON, serde_json::to_string(&v).unwrap().as_bytes()),
                    fp("POST", "/x", None, JSON, serde_json::to_string(&changed).unwrap().as_bytes())
                );
            }
        }

        #[test]
        fn fingerprinting_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = fp("POST", "/x", None, JSON, &body);
        }
    }
}
