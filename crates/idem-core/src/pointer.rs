//! JSON Pointers (RFC 6901) that name members of a JSON body to leave out
//! of its fingerprint, for bodies that carry a per-attempt field (a request
//! id, a client timestamp) that a retry changes.
//!
//! ```
//! use idem_core::pointer::{FingerprintIgnore, JsonPointer};
//! let ignore = FingerprintIgnore::new([JsonPointer::parse("/metadata/request_id").unwrap()]);
//! let a = idem_core::fingerprint::canonical_json_ignoring(
//!     br#"{"amount":100,"metadata":{"request_id":"r-1","order":7}}"#, &ignore);
//! let b = idem_core::fingerprint::canonical_json_ignoring(
//!     br#"{"metadata":{"order":7,"request_id":"r-2"},"amount":100}"#, &ignore);
//! assert_eq!(a, b);
//! assert_eq!(a.unwrap(), br#"{"amount":100,"metadata":{"order":7}}"#);
//! ```

use std::fmt;

/// One parsed JSON Pointer, e.g. `/metadata/request_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JsonPointer {
    text: String,
    tokens: Vec<String>,
}

/// Why a string is not a JSON Pointer idem can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// `""` points at the whole document: ignoring it would make every JSON
    /// body the same request.
    #[error(r#"the empty pointer "" names the whole body, so every JSON body would fingerprint alike; name a member, e.g. "/metadata/request_id""#)]
    WholeDocument,
    /// A pointer starts with `/` (the URI fragment form `#/...` is not
    /// accepted either).
    #[error(r#"{0:?} is not a JSON pointer: it must start with "/" (RFC 6901), e.g. "/metadata/request_id""#)]
    NoLeadingSlash(String),
    /// `~` is only allowed as `~0` (a `~`) or `~1` (a `/`).
    #[error(
        r#"{0:?} is not a JSON pointer: "~" must be followed by 0 or 1 ("~0" is "~", "~1" is "/")"#
    )]
    BadEscape(String),
}

impl JsonPointer {
    /// Parses RFC 6901's string form. The empty pointer (the whole
    /// document) is refused.
    ///
    /// ```
    /// use idem_core::pointer::JsonPointer;
    /// let p = JsonPointer::parse("/a~1b/~0c/0").unwrap();
    /// assert_eq!(p.tokens(), ["a/b", "~c", "0"]);
    /// assert!(JsonPointer::parse("metadata").is_err());
    /// assert!(JsonPointer::parse("/bad~2").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<JsonPointer, PointerError> {
        if text.is_empty() {
            return Err(PointerError::WholeDocument);
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash(text.to_owned()));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => return Err(PointerError::BadEscape(text.to_owned())),
                    }
                } else {
                    token.push(c);
                }
            }
            tokens.push(token);
        }
        Ok(JsonPointer {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Its reference tokens, unescaped.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for JsonPointer {
    type Err = PointerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JsonPointer::parse(s)
    }
}

/// The members of a JSON body left out of its fingerprint.
///
/// Every pointer is evaluated against the document as sent (an array index
/// names the element at that position before anything is removed), and
/// what it names is removed from the canonical form (RFC 8785) before it is
/// hashed, so the member's value, its presence and its position do not
/// change the fingerprint; everything else still does. A pointer that
/// names nothing in a body changes nothing. Bodies that are not JSON are
/// hashed as bytes, ignore list or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FingerprintIgnore {
    pointers: Vec<JsonPointer>,
    root: Node,
}

/// One level of the pointers, as a tree of reference tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Node {
    /// A pointer ends here: the value is left out.
    pub(crate) ignored: bool,
    children: Vec<Child>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Child {
    token: String,
    /// The token read as an array index (RFC 6901: `0` or digits without a
    /// leading zero).
    index: Option<usize>,
    node: Node,
}

impl FingerprintIgnore {
    /// The set of `pointers` (duplicates are dropped).
    pub fn new(pointers: impl IntoIterator<Item = JsonPointer>) -> Self {
        let mut list: Vec<JsonPointer> = Vec::new();
        for p in pointers {
            if !list.contains(&p) {
                list.push(p);
            }
        }
        let mut root = Node::default();
        for p in &list {
            let mut node = &mut root;
            for token in p.tokens() {
                let at = match node.children.iter().position(|c| &c.token == token) {
                    Some(at) => at,
                    None => {
                        node.children.push(Child {
                            token: token.clone(),
                            index: array_index(token),
                            node: Node::default(),
                        });
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at].node;
            }
            node.ignored = true;
        }
        FingerprintIgnore {
            pointers: list,
            root,
        }
    }

    /// Whether nothing is ignored.
    pub fn is_empty(&self) -> bool {
        self.pointers.is_empty()
    }

    /// The pointers, in the order given.
    pub fn pointers(&self) -> &[JsonPointer] {
        &self.pointers
    }

    /// The tree the canonicaliser walks; `None` when nothing is ignored.
    pub(crate) fn root(&self) -> Option<&Node> {
        (!self.is_empty()).then_some(&self.root)
    }
}

impl Node {
    /// The node for an object member named `key`.
    pub(crate) fn member(&self, key: &str) -> Option<&Node> {
        self.children
            .iter()
            .find(|c| c.token == key)
            .map(|c| &c.node)
    }

    /// The node for the array element at `index`.
    pub(crate) fn element(&self, index: usize) -> Option<&Node> {
        self.children
            .iter()
            .find(|c| c.index == Some(index))
            .map(|c| &c.node)
    }
}

fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_parse_per_rfc_6901() {
        assert_eq!(JsonPointer::parse("/").unwrap().tokens(), [""]);
        assert_eq!(
            JsonPointer::parse("/a//b").unwrap().tokens(),
            ["a", "", "b"]
        );
        assert_eq!(JsonPointer::parse("/m~0n").unwrap().tokens(), ["m~n"]);
        assert_eq!(JsonPointer::parse("/a~1b").unwrap().as_str(), "/a~1b");
        assert_eq!(JsonPointer::parse(""), Err(PointerError::WholeDocument));
        assert!(matches!(
            JsonPointer::parse("#/a"),
            Err(PointerError::NoLeadingSlash(_))
        ));
        for bad in ["/a~", "/a~2", "/~x"] {
            assert!(
                matches!(JsonPointer::parse(bad), Err(PointerError::BadEscape(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn array_indexes_have_no_leading_zeros() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("12"), Some(12));
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("-"), None);
        assert_eq!(array_index(""), None);
    }
}
