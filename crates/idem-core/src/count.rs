//! Where a count endpoint's JSON answer keeps its count (`--count-field`
//! of `idem audit` and `idem soak`), and reading it.
//!
//! ```
//! use idem_core::count::CountField;
//! let body = serde_json::json!({"stats": {"charges": 7}});
//! let field: CountField = "stats.charges".parse().unwrap();
//! assert_eq!(field.extract(&body).unwrap(), 7);
//! assert_eq!(CountField::Default.extract(&serde_json::json!({"count": 3})).unwrap(), 3);
//! assert_eq!(CountField::Default.extract(&serde_json::json!(12)).unwrap(), 12);
//! ```

use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// Where the count is in the count endpoint's JSON.
///
/// [`CountField::Default`] takes a body that is a bare number (`42`) or an
/// object with a `count` member (`{"count":42}`); a dot path such as
/// `stats.charges` walks objects by member name (and arrays by index:
/// `items.0.count`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CountField {
    /// A bare number, or `{"count": N}`.
    #[default]
    Default,
    /// The member at this dot path.
    Path(CountPath),
}

/// A dot path to a count: member names or array indices, read with
/// [`serde_json::Value::pointer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountPath {
    segments: Vec<String>,
    /// `segments` as a JSON pointer.
    pointer: String,
}

impl CountPath {
    /// Its segments, one member name or array index each.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The first segment not found in `body` and the value it was looked up
    /// in; `None` if the whole path is there.
    fn first_missing<'a, 'b>(&'a self, body: &'b Value) -> Option<(&'a str, &'b Value)> {
        let mut at = body;
        for (i, segment) in self.segments.iter().enumerate() {
            match body.pointer(&pointer(&self.segments[..=i])) {
                Some(next) => at = next,
                None => return Some((segment, at)),
            }
        }
        None
    }
}

impl fmt::Display for CountPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("."))
    }
}

/// The RFC 6901 pointer to what the `segments` name.
fn pointer(segments: &[String]) -> String {
    let mut pointer = String::new();
    for segment in segments {
        pointer.push('/');
        pointer.push_str(&segment.replace('~', "~0").replace('/', "~1"));
    }
    pointer
}

/// A `--count-field` that is not a dot path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a field path; write field names separated by dots, e.g. stats.charges (a number picks an array element: items.0.count)")]
pub struct CountFieldError(String);

impl FromStr for CountField {
    type Err = CountFieldError;

    fn from_str(s: &str) -> Result<Self, CountFieldError> {
        let segments: Vec<String> = s.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(CountFieldError(s.to_owned()));
        }
        Ok(CountField::Path(CountPath {
            pointer: pointer(&segments),
            segments,
        }))
    }
}

impl fmt::Display for CountField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CountField::Default => f.write_str("(a bare number or {\"count\":N})"),
            CountField::Path(path) => path.fmt(f),
        }
    }
}

/// Why a count could not be read from a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CountError {
    /// The default shape did not match.
    #[error("the body is neither a number nor an object with a \"count\" member; name the field with --count-field, e.g. --count-field stats.charges")]
    NoDefault,
    /// A path segment is missing.
    #[error("--count-field {path}: no `{segment}` in {found}")]
    Missing {
        /// The whole path.
        path: String,
        /// The segment not found.
        segment: String,
        /// The value it was looked up in (shortened).
        found: String,
    },
    /// The field is not a count.
    #[error("the count {at} is {found}, not a whole number of at least 0")]
    NotACount {
        /// Where (`at --count-field PATH`, `member "count"` or `body`).
        at: String,
        /// The value (shortened).
        found: String,
    },
}

/// A value as an error message shows it: its JSON, cut at 80 bytes.
fn shorten(value: &Value) -> String {
    let mut s = value.to_string();
    if s.len() > 80 {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// `value` as a count: a whole number of at least 0 (`5.0` counts as 5).
fn as_count(value: &Value, at: impl Fn() -> String) -> Result<u64, CountError> {
    if let Some(n) = value.as_u64() {
        return Ok(n);
    }
    match value.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => Ok(f as u64),
        _ => Err(CountError::NotACount {
            at: at(),
            found: shorten(value),
        }),
    }
}

impl CountField {
    /// The count in `body`.
    pub fn extract(&self, body: &Value) -> Result<u64, CountError> {
        match self {
            CountField::Default => match body {
                Value::Number(_) => as_count(body, || "body".to_owned()),
                Value::Object(map) => match map.get("count") {
                    Some(count) => as_count(count, || "member \"count\"".to_owned()),
                    None => Err(CountError::NoDefault),
                },
                _ => Err(CountError::NoDefault),
            },
            CountField::Path(path) => match body.pointer(&path.pointer) {
                Some(count) => as_count(count, || format!("at --count-field {path}")),
                None => {
                    let (segment, found) = path.first_missing(body).unwrap_or(("", body));
                    Err(CountError::Missing {
                        path: path.to_string(),
                        segment: segment.to_owned(),
                        found: shorten(found),
                    })
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dot_path_finds_members_and_array_elements() {
        let field: CountField = "items.1.n".parse().unwrap();
        assert_eq!(field.to_string(), "items.1.n");
        assert_eq!(
            field
                .extract(&json!({"items": [{"n": 1}, {"n": 2}]}))
                .unwrap(),
            2
        );
        let field: CountField = "a/b.~c".parse().unwrap();
        assert_eq!(field.extract(&json!({"a/b": {"~c": 1}})).unwrap(), 1);
    }

    #[test]
    fn empty_segments_are_refused() {
        for bad in ["", "a..b", "a.", ".a"] {
            let e = bad.parse::<CountField>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("`{bad}` is not a field path; write field names separated by dots, e.g. stats.charges (a number picks an array element: items.0.count)")
            );
        }
    }

    #[test]
    fn a_missing_segment_names_where_it_was_looked_up() {
        let field: CountField = "items.1.n".parse().unwrap();
        let e = field.extract(&json!({"items": []})).unwrap_err();
        assert_eq!(e.to_string(), "--count-field items.1.n: no `1` in []");
        let e = field.extract(&json!({"other": 1})).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"--count-field items.1.n: no `items` in {"other":1}"#
        );
    }

    #[test]
    fn the_default_takes_a_number_or_a_count_member() {
        assert_eq!(CountField::Default.extract(&json!(5.0)).unwrap(), 5);
        assert_eq!(
            CountField::Default.extract(&json!({"count": 3})).unwrap(),
            3
        );
        assert!(CountField::Default.extract(&json!(-1)).is_err());
        assert!(CountField::Default.extract(&json!(1.5)).is_err());
        assert_eq!(
            CountField::Default.extract(&json!({"n": 1})),
            Err(CountError::NoDefault)
        );
        assert_eq!(
            CountField::Default.extract(&json!("5")),
            Err(CountError::NoDefault)
        );
        let e = CountField::Default
            .extract(&json!({"count": "x"}))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"the count member "count" is "x", not a whole number of at least 0"#
        );
    }

    #[test]
    fn a_long_value_is_cut_on_a_character_boundary() {
        let long = json!("é".repeat(60));
        let cut = shorten(&long);
        assert!(cut.ends_with("..."), "{cut}");
        assert!(cut.len() <= 80, "{}", cut.len());
    }
}
