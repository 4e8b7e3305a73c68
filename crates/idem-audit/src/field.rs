//! Paths into JSON bodies: [`FieldPath`] names a value in an answer
//! (`--id-field`, `--ignore-field`), [`CountField`] the count in the
//! count endpoint's answer (`--count-field`; idem-core's, shared with
//! `idem soak`). Both are read with [`serde_json::Value::pointer`].

pub use idem_core::count::{CountError, CountField, CountFieldError};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// The RFC 6901 pointer to what the `segments` name, one member name or
/// array index each.
fn pointer<S: AsRef<str>>(segments: &[S]) -> String {
    let mut pointer = String::new();
    for segment in segments {
        pointer.push('/');
        pointer.push_str(&segment.as_ref().replace('~', "~0").replace('/', "~1"));
    }
    pointer
}

/// A JSON path into a body: field names separated by dots, an optional
/// leading `$.`, and array indices as numbers or `[n]`
/// (`data.items[0].id`, `data.items.0.id`).
///
/// ```
/// use idem_audit::FieldPath;
/// let path: FieldPath = "$.data.items[1].id".parse().unwrap();
/// let body = serde_json::json!({"data": {"items": [{"id": "a"}, {"id": "b"}]}});
/// assert_eq!(path.find(&body), Some(&serde_json::json!("b")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
    /// `segments` as a JSON pointer.
    pointer: String,
}

impl FieldPath {
    fn new(text: String, segments: Vec<String>) -> Self {
        FieldPath {
            pointer: pointer(&segments),
            text,
            segments,
        }
    }

    /// The value at the path, if present.
    pub fn find<'a>(&self, body: &'a Value) -> Option<&'a Value> {
        body.pointer(&self.pointer)
    }

    /// Drops the value at the path, if present (an array element becomes
    /// `null`, so the others keep their places).
    pub fn remove(&self, body: &mut Value) {
        let Some((last, parents)) = self.segments.split_last() else {
            return;
        };
        match body.pointer_mut(&pointer(parents)) {
            Some(Value::Object(map)) => {
                map.remove(last);
            }
            Some(Value::Array(items)) => {
                if let Some(item) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    *item = Value::Null;
                }
            }
            _ => {}
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A field path that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a field path; write field names separated by dots, e.g. id or data.payment.id (array elements as items[0] or items.0)")]
pub struct FieldPathError(String);

impl FromStr for FieldPath {
    type Err = FieldPathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let rest = text
            .strip_prefix("$.")
            .or_else(|| text.strip_prefix('$'))
            .unwrap_or(text);
        let normalised = rest.replace('[', ".").replace(']', "");
        let segments: Vec<String> = normalised.split('.').map(str::to_owned).collect();
        if rest.is_empty() || segments.iter().any(String::is_empty) {
            return Err(FieldPathError(s.to_owned()));
        }
        Ok(FieldPath::new(text.to_owned(), segments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_paths() {
        let body = json!({"id": "pay_1", "a": [{"b": 2}]});
        for (path, want) in [
            ("id", json!("pay_1")),
            ("$.a[0].b", json!(2)),
            ("a.0.b", json!(2)),
        ] {
            let p: FieldPath = path.parse().unwrap();
            assert_eq!(p.find(&body), Some(&want), "{path}");
        }
        assert_eq!("missing".parse::<FieldPath>().unwrap().find(&body), None);
        let mut trimmed = body.clone();
        "a[0].b".parse::<FieldPath>().unwrap().remove(&mut trimmed);
        "id".parse::<FieldPath>().unwrap().remove(&mut trimmed);
        "no.such".parse::<FieldPath>().unwrap().remove(&mut trimmed);
        assert_eq!(trimmed, json!({"a": [{}]}));
        for bad in ["", "$.", "a..b", "a.", "$"] {
            assert!(bad.parse::<FieldPath>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn members_with_pointer_characters_are_found() {
        let body = json!({"a/b": {"~c": 1}});
        assert_eq!(
            "a/b.~c".parse::<FieldPath>().unwrap().find(&body),
            Some(&json!(1))
        );
    }
}
