//! The `Idempotency-Key` header: the IETF Structured Field string form
//! (`"abc"`) and the bare form Stripe clients send (`abc`).

use std::fmt;

/// Longest key accepted, in characters after unquoting.
pub const MAX_KEY_LEN: usize = 255;

/// A validated idempotency key: 1 to 255 visible ASCII characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Box<str>);

/// Why a key was refused. Each maps to the `invalid-key` problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The header was present but empty (or `""`).
    #[error("the key is empty; send 1 to 255 visible ASCII characters")]
    Empty,
    /// Over [`MAX_KEY_LEN`] characters.
    #[error("the key is {len} characters long; the limit is 255")]
    TooLong {
        /// Length after unquoting.
        len: usize,
    },
    /// A byte outside 0x21-0x7E.
    #[error("the key has byte 0x{byte:02x} at position {position}; only visible ASCII (0x21-0x7E) is allowed")]
    InvalidChar {
        /// Zero-based position in the unquoted key.
        position: usize,
        /// The offending byte.
        byte: u8,
    },
    /// A quoted key that is not a valid Structured Field string.
    #[error("the key starts with a quote but is not a valid structured-field string")]
    MalformedQuoted,
    /// More than one `Idempotency-Key` header.
    #[error("the request carries {count} Idempotency-Key headers; send exactly one")]
    Repeated {
        /// How many headers were sent.
        count: usize,
    },
}

impl IdempotencyKey {
    /// Parses one header value in either form. Surrounding spaces and tabs
    /// are ignored, as HTTP field values allow.
    ///
    /// ```
    /// use idem_core::key::{IdempotencyKey, KeyError};
    /// assert_eq!(IdempotencyKey::parse(b"abc").unwrap().as_str(), "abc");
    /// assert_eq!(IdempotencyKey::parse(br#""a\"b""#).unwrap().as_str(), "a\"b");
    /// assert_eq!(IdempotencyKey::parse(b""), Err(KeyError::Empty));
    /// ```
    pub fn parse(raw: &[u8]) -> Result<Self, KeyError> {
        let value = trim_ows(raw);
        let unquoted: std::borrow::Cow<'_, [u8]> = if value.first() == Some(&b'"') {
            unquote_sf_string(value)?.into()
        } else {
            value.into()
        };
        if unquoted.is_empty() {
            return Err(KeyError::Empty);
        }
        if unquoted.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong {
                len: unquoted.len(),
            });
        }
        if let Some(position) = unquoted.iter().position(|b| !(0x21..=0x7e).contains(b)) {
            return Err(KeyError::InvalidChar {
                position,
                byte: unquoted[position],
            });
        }
        // Every byte is visible ASCII, so this cannot fail.
        let s = std::str::from_utf8(&unquoted).map_err(|_| KeyError::MalformedQuoted)?;
        Ok(IdempotencyKey(s.into()))
    }

    /// Parses all values of the header in a request: none is `Ok(None)`,
    /// two or more is [`KeyError::Repeated`].
    pub fn from_header_values<'a, I>(values: I) -> Result<Option<Self>, KeyError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut iter = values.into_iter();
        let Some(first) = iter.next() else {
            return Ok(None);
        };
        let extra = iter.count();
        if extra > 0 {
            return Err(KeyError::Repeated { count: extra + 1 });
        }
        Self::parse(first).map(Some)
    }

    /// The key as sent, unquoted.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// RFC 8941 section 4.2.5: a string is `"`, then printable ASCII with `\"`
/// and `\\` as the only escapes, then `"`, and nothing after it.
fn unquote_sf_string(v: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 1;
    while i < v.len() {
        match v[i] {
            b'\\' => {
                match v.get(i + 1) {
                    Some(&c @ (b'"' | b'\\')) => out.push(c),
                    _ => return Err(KeyError::MalformedQuoted),
                }
                i += 2;
            }
            b'"' => {
                return if i + 1 == v.len() {
                    Ok(out)
                } else {
                    Err(KeyError::MalformedQuoted)
                };
            }
            c if (0x20..=0x7e).contains(&c) => {
                out.push(c);
                i += 1;
            }
            _ => return Err(KeyError::MalformedQuoted),
        }
    }
    Err(KeyError::MalformedQuoted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bare_and_quoted_forms_name_the_same_key() {
        assert_eq!(
            IdempotencyKey::parse(b"order-1").unwrap(),
            IdempotencyKey::parse(b"\"order-1\"").unwrap()
        );
    }

    #[test]
    fn rejects_what_the_contract_rejects() {
        assert_eq!(IdempotencyKey::parse(b"\"\""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse(b"   "), Err(KeyError::Empty));
        assert!(matches!(
            IdempotencyKey::parse(&[b'a'; 256]),
            Err(KeyError::TooLong { len: 256 })
        ));
        assert!(IdempotencyKey::parse(&[b'a'; 255]).is_ok());
        assert_eq!(
            IdempotencyKey::parse(b"a b"),
            Err(KeyError::InvalidChar {
                position: 1,
                byte: b' '
            })
        );
        assert_eq!(
            IdempotencyKey::parse(b"\"a b\""),
            Err(KeyError::InvalidChar {
                position: 1,
                byte: b' '
            })
        );
        assert_eq!(
            IdempotencyKey::parse("caf\u{e9}".as_bytes()),
            Err(KeyError::InvalidChar {
                position: 3,
                byte: 0xc3
            })
        );
        assert_eq!(
            IdempotencyKey::parse(b"\"abc"),
            Err(KeyError::MalformedQuoted)
        );
        assert_eq!(
            IdempotencyKey::parse(b"\"abc\"x"),
            Err(KeyError::MalformedQuoted)
        );
        assert_eq!(
            IdempotencyKey::parse(b"\"a\\nb\""),
            Err(KeyError::MalformedQuoted)
        );
    }

    #[test]
    fn two_headers_are_refused() {
        let values: [&[u8]; 2] = [b"a", b"a"];
        assert_eq!(
            IdempotencyKey::from_header_values(values),
            Err(KeyError::Repeated { count: 2 })
        );
        let none: [&[u8]; 0] = [];
        assert_eq!(IdempotencyKey::from_header_values(none), Ok(None));
    }

    fn quote(s: &str) -> String {
        let mut q = String::from("\"");
        for c in s.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        q
    }

    proptest! {
        #[test]
        fn any_visible_ascii_key_round_trips_in_both_forms(s in "[!-~]{1,255}") {
            let bare_ok = !s.starts_with('"');
            if bare_ok {
                let k = IdempotencyKey::parse(s.as_bytes()).unwrap();
                prop_assert_eq!(k.as_str(), s.as_str());
            }
            let quoted = quote(&s);
            let k = IdempotencyKey::parse(quoted.as_bytes()).unwrap();
            prop_assert_eq!(k.as_str(), s.as_str());
        }

        #[test]
        fn parsing_never_panics_and_accepts_only_visible_ascii(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(k) = IdempotencyKey::parse(&raw) {
                prop_assert!(!k.as_str().is_empty() && k.as_str().len() <= MAX_KEY_LEN);
                prop_assert!(k.as_str().bytes().all(|b| (0x21..=0x7e).contains(&b)));
            }
        }

        #[test]
        fn keys_over_the_limit_are_refused(s in "[!#-~][!-~]{255,400}") {
            let refused = matches!(IdempotencyKey::parse(s.as_bytes()), Err(KeyError::TooLong { .. }));
            prop_assert!(refused);
        }
    }
}
