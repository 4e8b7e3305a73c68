//! Request paths in the one form routes are matched on.
//!
//! Frameworks disagree on what `/v1//charges`, `/v1/./charges`,
//! `/v1/%63harges` or `/v1/charges;x` mean; if the gateway matched routes on
//! the raw path, each of these spellings would slip past a route that the
//! upstream framework then applies. [`NormalisedPath`] gives the strict
//! normal form, which the gateway both matches on and forwards, and a
//! lenient reading of that form ([`NormalisedPath::lenient`]), which is what
//! some frameworks would still make of it: when the two lead to different
//! routes the path is ambiguous and is refused.
//!
//! The strict normal form of a path:
//!
//! 1. An empty path is `/`; a path that does not begin with `/` is read
//!    from the root (RFC 3986 section 5.2.2 merges it with the base `/`).
//! 2. A percent-escape of an unreserved byte (ALPHA, DIGIT, `-`, `.`, `_`,
//!    `~`) is decoded; every other valid escape is kept, with upper-case
//!    hex; an invalid escape (`%zz`, a trailing `%`) is kept as is, except
//!    that a `%` which decoding would otherwise turn into the start of a
//!    valid escape (`%4%31`) is written `%25`, so the path still means
//!    what it meant.
//! 3. Runs of `/` collapse to one.
//! 4. Dot segments are removed as in RFC 3986 section 5.2.4 (after step 2,
//!    so `%2e%2e` is `..`); `..` above the root stays at the root. A
//!    trailing slash is kept, and `/a/.` and `/a/b/..` are both `/a/`.
//!
//! The lenient reading of the strict form also cuts `;` parameters off each
//! segment (`/v1/charges;x/1` is `/v1/charges/1`), reads `%2F`, `%5C` and a
//! raw `\` as `/`, and applies steps 3 and 4 again. Separators are read
//! before parameters are cut, as a framework that decodes the whole path
//! before routing does: `/a;x%2Fb` reads as `/a/b`.
//!
//! Only the path goes in (`uri.path()`): no query, no fragment.

use std::borrow::Cow;

/// A request path in the form routes are matched on.
///
/// ```
/// use idem_core::path::NormalisedPath;
///
/// let p = NormalisedPath::new("/v1//x/.././%63harges");
/// assert_eq!(p.as_str(), "/v1/charges");
/// assert!(!p.is_unchanged());
/// assert_eq!(p.lenient(), None);
///
/// // Already normal: borrowed, nothing allocated.
/// let p = NormalisedPath::new("/v1/charges/1");
/// assert!(p.is_unchanged());
///
/// // Normal, but some frameworks read it as another path.
/// let p = NormalisedPath::new("/v1/charges;x");
/// assert_eq!(p.as_str(), "/v1/charges;x");
/// assert_eq!(p.lenient(), Some("/v1/charges"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalisedPath<'a> {
    strict: Cow<'a, str>,
    lenient: Option<Box<str>>,
}

impl<'a> NormalisedPath<'a> {
    /// Normalises `raw`, a request's path without its query.
    ///
    /// Never fails and never panics; allocates nothing when `raw` is already
    /// normal and has no lenient reading.
    ///
    /// ```
    /// use idem_core::path::NormalisedPath;
    /// assert_eq!(NormalisedPath::new("").as_str(), "/");
    /// assert_eq!(NormalisedPath::new("/v1/%2e%2e/charges").as_str(), "/charges");
    /// assert_eq!(NormalisedPath::new("/a%2fb").as_str(), "/a%2Fb");
    /// assert_eq!(NormalisedPath::new("/a/b/").as_str(), "/a/b/");
    /// ```
    pub fn new(raw: &'a str) -> Self {
        let strict = if is_normal(raw) {
            Cow::Borrowed(raw)
        } else {
            Cow::Owned(remove_dot_segments(&decode_unreserved(raw), false))
        };
        let lenient = lenient_reading(&strict).map(String::into_boxed_str);
        NormalisedPath { strict, lenient }
    }

    /// The normalised path: what routes are matched on and what is
    /// forwarded.
    pub fn as_str(&self) -> &str {
        &self.strict
    }

    /// Whether the raw path was already normal (then [`as_str`] borrows it).
    ///
    /// [`as_str`]: NormalisedPath::as_str
    ///
    /// ```
    /// use idem_core::path::NormalisedPath;
    /// assert!(NormalisedPath::new("/v1/charges%2F1").is_unchanged());
    /// assert!(NormalisedPath::new("/v1/charges/").is_unchanged());
    /// assert!(!NormalisedPath::new("/v1//charges").is_unchanged());
    /// ```
    pub fn is_unchanged(&self) -> bool {
        matches!(self.strict, Cow::Borrowed(_))
    }

    /// What some frameworks would read the normalised path as, when that
    /// differs from [`as_str`]; `None` when every reading agrees.
    ///
    /// [`as_str`]: NormalisedPath::as_str
    ///
    /// ```
    /// use idem_core::path::NormalisedPath;
    /// let p = NormalisedPath::new("/v1/public/..;/charges%2F1");
    /// assert_eq!(p.as_str(), "/v1/public/..;/charges%2F1");
    /// assert_eq!(p.lenient(), Some("/v1/charges/1"));
    /// assert_eq!(NormalisedPath::new("/v1\\charges").lenient(), Some("/v1/charges"));
    /// assert_eq!(NormalisedPath::new("/v1/charges").lenient(), None);
    /// ```
    pub fn lenient(&self) -> Option<&str> {
        self.lenient.as_deref()
    }
}

impl AsRef<str> for NormalisedPath<'_> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte escaped at `b[i..i + 3]`, if `b[i]` starts a valid escape.
fn escape_at(b: &[u8], i: usize) -> Option<u8> {
    match b.get(i..i + 3) {
        Some([b'%', hi, lo]) => Some((hex_value(*hi)? << 4) | hex_value(*lo)?),
        _ => None,
    }
}

/// `text` (a path segment, a query parameter) with every `%XX` escape
/// decoded; `None` when an escape is malformed or the result is not UTF-8.
/// Nothing else is changed (`+` stays `+`).
///
/// ```
/// use idem_core::path::percent_decode;
/// assert_eq!(percent_decode("sk_test%2Fa%20b").as_deref(), Some("sk_test/a b"));
/// assert_eq!(percent_decode("100%"), None);
/// assert_eq!(percent_decode("%+1"), None);
/// assert_eq!(percent_decode("%ff"), None); // not UTF-8
/// ```
pub fn percent_decode(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(escape_at(b, i)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `s` is its own strict normal form, in one pass and without
/// allocating. Must agree exactly with `remove_dot_segments(decode(s))`.
fn is_normal(s: &str) -> bool {
    let b = s.as_bytes();
    let Some(rest) = s.strip_prefix('/') else {
        return false;
    };
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if (seg.is_empty() && !last) || seg == "." || seg == ".." {
            return false;
        }
    }
    b.iter().enumerate().all(|(i, &c)| {
        c != b'%'
            || match escape_at(b, i) {
                None => true,
                Some(byte) => {
                    !is_unreserved(byte)
                        && !b[i + 1].is_ascii_lowercase()
                        && !b[i + 2].is_ascii_lowercase()
                }
            }
    })
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Step 2: decodes escapes of unreserved bytes, upper-cases the others.
fn decode_unreserved(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((i, c)) = chars.next() {
        match escape_at(b, i) {
            Some(byte) if is_unreserved(byte) => push_guarded(&mut out, char::from(byte)),
            Some(byte) => {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
                out.push(char::from(HEX_UPPER[usize::from(byte & 0xf)]));
            }
            None => {
                push_guarded(&mut out, c);
                continue;
            }
        }
        // Skip the two hex digits (ASCII, so one char each).
        chars.next();
        chars.next();
    }
    out
}

/// Pushes `c`, first writing as `%25` a literal `%` that `c` would make the
/// start of a valid escape (`%4` then a decoded `1` must not read `%41`).
///
/// A `%` followed by a single character at the end of `out` is always a
/// literal one: kept escapes are pushed whole, never through here.
fn push_guarded(out: &mut String, c: char) {
    if c.is_ascii_hexdigit() {
        let b = out.as_bytes();
        let n = b.len();
        if n >= 2 && b[n - 2] == b'%' && b[n - 1].is_ascii_hexdigit() {
            out.insert_str(n - 1, "25");
        }
    }
    out.push(c);
}

/// Steps 1, 3 and 4 (and, when `cut_params`, the lenient cutting of `;`
/// parameters), on a path whose escapes are already dealt with.
fn remove_dot_segments(path: &str, cut_params: bool) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    // Whether the output ends in '/': after an empty or a dot segment.
    let mut trailing = false;
    for seg in path.split('/') {
        let seg = match seg.find(';') {
            Some(i) if cut_params => &seg[..i],
            _ => seg,
        };
        match seg {
            "" | "." => trailing = true,
            ".." => {
                out.truncate(out.rfind('/').unwrap_or(0));
                trailing = true;
            }
            _ => {
                out.push('/');
                out.push_str(seg);
                trailing = false;
            }
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

/// The lenient reading of a strict normal form, when it differs from it.
fn lenient_reading(strict: &str) -> Option<String> {
    let b = strict.as_bytes();
    // Allocates only once a separator is met.
    let mut separated = String::new();
    let mut copied = 0;
    let mut changed = false;
    let mut i = 0;
    while i < b.len() {
        let sep_len = match b[i] {
            b'\\' => 1,
            b'%' => match escape_at(b, i) {
                Some(b'/' | b'\\') => 3,
                Some(_) => {
                    i += 3;
                    continue;
                }
                None => 0,
            },
            b';' => {
                changed = true;
                0
            }
            _ => 0,
        };
        if sep_len == 0 {
            i += 1;
            continue;
        }
        separated.push_str(&strict[copied..i]);
        separated.push('/');
        i += sep_len;
        copied = i;
        changed = true;
    }
    if !changed {
        return None;
    }
    separated.push_str(&strict[copied..]);
    let lenient = remove_dot_segments(&separated, true);
    (lenient != strict).then_some(lenient)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strict(raw: &str) -> String {
        NormalisedPath::new(raw).as_str().to_owned()
    }

    fn lenient(raw: &str) -> Option<String> {
        NormalisedPath::new(raw).lenient().map(str::to_owned)
    }

    #[test]
    fn the_reported_bypasses_all_normalise_to_the_route() {
        for raw in [
            "/v1//charges",
            "/v1/./charges",
            "/v1/%63harges",
            "/v1/x/../charges",
            "/v1/%2e%2e/v1/charges",
            "/v1/%2E/charges",
            "//v1///charges",
            "/v1/ch%61rg%65s",
        ] {
            assert_eq!(strict(raw), "/v1/charges", "{raw}");
            assert_eq!(lenient(raw), None, "{raw}");
        }
    }

    #[test]
    fn dot_dot_escapes_are_dot_segments() {
        assert_eq!(strict("/v1/%2e%2e/charges"), "/charges");
        assert_eq!(strict("/v1/.%2E/charges"), "/charges");
        assert_eq!(strict("/v1/%2e./charges"), "/charges");
        // Not a dot segment: three dots, or a dot with something else.
        assert_eq!(strict("/v1/.../charges"), "/v1/.../charges");
        assert_eq!(strict("/v1/.a/charges"), "/v1/.a/charges");
    }

    #[test]
    fn dot_dot_above_the_root_stays_at_the_root() {
        assert_eq!(strict("/.."), "/");
        assert_eq!(strict("/../../v1/charges"), "/v1/charges");
        assert_eq!(strict("/v1/../../charges"), "/charges");
    }

    #[test]
    fn parameters_are_kept_strictly_and_cut_leniently() {
        assert_eq!(strict("/v1/charges;x"), "/v1/charges;x");
        assert!(NormalisedPath::new("/v1/charges;x").is_unchanged());
        assert_eq!(lenient("/v1/charges;x"), Some("/v1/charges".into()));
        assert_eq!(lenient("/v1/charges;x/1"), Some("/v1/charges/1".into()));
        assert_eq!(lenient("/v1;a=b/charges;c"), Some("/v1/charges".into()));
        // The Tomcat classic: `..;` is a dot segment once cut.
        assert_eq!(strict("/public/..;/v1/charges"), "/public/..;/v1/charges");
        assert_eq!(
            lenient("/public/..;/v1/charges"),
            Some("/v1/charges".into())
        );
        // A whole segment of parameters disappears.
        assert_eq!(lenient("/v1/;x/charges"), Some("/v1/charges".into()));
        // Any `;` is cut, so it always has a lenient reading.
        assert_eq!(lenient("/v1/charges/;"), Some("/v1/charges/".into()));
        assert_eq!(lenient("/;"), Some("/".into()));
        // Dot segments removed strictly take their parameters with them.
        assert_eq!(strict("/v1/x;y/../charges"), "/v1/charges");
        assert_eq!(lenient("/v1/x;y/../charges"), None);
    }

    #[test]
    fn encoded_slashes_and_backslashes_are_kept_strictly_and_split_leniently() {
        assert_eq!(strict("/v1/charges%2F1"), "/v1/charges%2F1");
        assert_eq!(lenient("/v1/charges%2F1"), Some("/v1/charges/1".into()));
        assert_eq!(strict("/v1/charges%2f1"), "/v1/charges%2F1");
        assert_eq!(lenient("/v1/charges%2f1"), Some("/v1/charges/1".into()));
        assert_eq!(strict("/v1\\charges"), "/v1\\charges");
        assert_eq!(lenient("/v1\\charges"), Some("/v1/charges".into()));
        assert_eq!(strict("/v1%5ccharges"), "/v1%5Ccharges");
        assert_eq!(lenient("/v1%5ccharges"), Some("/v1/charges".into()));
        // Separators are read first, then parameters cut, then dots removed.
        assert_eq!(lenient("/v1;x%2Fcharges"), Some("/v1/charges".into()));
        assert_eq!(lenient("/v1/x%2F..%2Fcharges"), Some("/v1/charges".into()));
        assert_eq!(lenient("/v1%2F%2Fcharges"), Some("/v1/charges".into()));
        assert_eq!(lenient("/v1/charges%2F"), Some("/v1/charges/".into()));
        // An escaped '%' followed by "2F" is not an encoded slash.
        assert_eq!(strict("/v1/a%252Fb"), "/v1/a%252Fb");
        assert_eq!(lenient("/v1/a%252Fb"), None);
    }

    #[test]
    fn slashes_collapse_and_the_empty_path_is_the_root() {
        assert_eq!(strict(""), "/");
        assert_eq!(strict("/"), "/");
        assert_eq!(strict("//"), "/");
        assert_eq!(strict("///a////b"), "/a/b");
        assert!(NormalisedPath::new("/").is_unchanged());
        assert!(!NormalisedPath::new("").is_unchanged());
        assert!(!NormalisedPath::new("//").is_unchanged());
    }

    #[test]
    fn trailing_slashes_are_kept() {
        assert_eq!(strict("/a/b/"), "/a/b/");
        assert!(NormalisedPath::new("/a/b/").is_unchanged());
        assert_eq!(strict("/a/b//"), "/a/b/");
        assert_eq!(strict("/a/."), "/a/");
        assert_eq!(strict("/a/b/.."), "/a/");
        assert_eq!(strict("/a/b/%2E%2E"), "/a/");
        assert_eq!(strict("/a/./"), "/a/");
        assert_eq!(strict("/."), "/");
        assert_eq!(strict("/a/b"), "/a/b");
    }

    #[test]
    fn hex_case_is_upper_and_unreserved_escapes_decode() {
        assert_eq!(strict("/a%2fb%3ac%3Ad"), "/a%2Fb%3Ac%3Ad");
        assert_eq!(strict("/%7e%7E%2d%5f%41%7a%30"), "/~~-_Az0");
        assert_eq!(strict("/caf%c3%a9"), "/caf%C3%A9");
        assert!(NormalisedPath::new("/caf%C3%A9").is_unchanged());
        assert!(!NormalisedPath::new("/caf%c3%A9").is_unchanged());
        assert!(!NormalisedPath::new("/%41").is_unchanged());
        // '%' itself stays escaped, and is not decoded twice.
        assert_eq!(strict("/%2541"), "/%2541");
        assert_eq!(strict("/%25%34%31"), "/%2541");
    }

    #[test]
    fn invalid_escapes_are_kept() {
        for raw in ["/%zz", "/a%", "/a%4", "/%%", "/%g1", "/%\u{e9}9", "/%4/1"] {
            assert_eq!(strict(raw), raw, "{raw}");
            assert!(NormalisedPath::new(raw).is_unchanged(), "{raw}");
        }
        assert_eq!(strict("/%zz/../a"), "/a");
    }

    #[test]
    fn decoding_never_completes_an_escape_with_a_literal_percent() {
        // Read once, "%4%31" means the three characters "%41"; written as
        // "%41" it would mean "A".
        assert_eq!(strict("/%4%31"), "/%2541");
        assert_eq!(strict("/%%34%31"), "/%2541");
        assert_eq!(strict("/%%341"), "/%2541");
        assert_eq!(strict("/%%34"), "/%4");
        assert_eq!(strict("/%%34%2F"), "/%4%2F");
        assert_eq!(strict("/%a%62"), "/%25ab");
    }

    #[test]
    fn paths_not_from_the_root_are_read_from_it() {
        assert_eq!(strict("a/b"), "/a/b");
        assert_eq!(strict("../a"), "/a");
        assert_eq!(strict("*"), "/*");
        assert_eq!(strict("."), "/");
    }

    #[test]
    fn non_ascii_passes_through() {
        assert_eq!(strict("/caf\u{e9}/./x"), "/caf\u{e9}/x");
        assert!(NormalisedPath::new("/\u{1f600}").is_unchanged());
    }

    /// Pieces that combine into the awkward cases.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "/", "/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", ";", ";x",
            "%3b", "%", "%4", "%3", "%31", "%34", "%41", "%61", "%25", "%zz", "%e9", "a", "b", "1",
            "4", "F", "f", "-", "~", "\u{e9}", " ", "?", "#",
        ])
    }

    fn awkward_path() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..16).prop_map(|p| p.concat())
    }

    fn any_path() -> impl Strategy<Value = String> {
        prop_oneof![awkward_path(), any::<String>(), "[/.%;a-fA-F0-9\\\\]{0,24}"]
    }

    fn check_normal_form(n: &str) -> Result<(), TestCaseError> {
        prop_assert!(n.starts_with('/'), "{n:?}");
        prop_assert!(!n.contains("//"), "{n:?}");
        prop_assert!(!n.contains("/./"), "{n:?}");
        prop_assert!(!n.contains("/../"), "{n:?}");
        prop_assert!(!n.ends_with("/."), "{n:?}");
        prop_assert!(!n.ends_with("/.."), "{n:?}");
        let b = n.as_bytes();
        for i in 0..b.len() {
            if let Some(byte) = escape_at(b, i) {
                prop_assert!(!is_unreserved(byte), "{n:?}");
                prop_assert!(!b[i + 1..i + 3].iter().any(u8::is_ascii_lowercase), "{n:?}");
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(raw in any_path()) {
            let once = NormalisedPath::new(&raw);
            let twice = NormalisedPath::new(once.as_str());
            prop_assert_eq!(twice.as_str(), once.as_str());
            prop_assert!(twice.is_unchanged());
            prop_assert_eq!(twice.lenient(), once.lenient());
        }

        #[test]
        fn the_normal_form_has_no_ambiguous_spelling(raw in any_path()) {
            check_normal_form(NormalisedPath::new(&raw).as_str())?;
        }

        #[test]
        fn unchanged_means_equal(raw in any_path()) {
            let n = NormalisedPath::new(&raw);
            prop_assert_eq!(n.is_unchanged(), n.as_str() == raw);
        }

        #[test]
        fn a_lenient_form_is_normal_and_has_no_other_reading(raw in any_path()) {
            let n = NormalisedPath::new(&raw);
            if let Some(l) = n.lenient() {
                prop_assert_ne!(l, n.as_str());
                check_normal_form(l)?;
                prop_assert!(!l.contains(';') && !l.contains('\\'), "{l:?}");
                let again = NormalisedPath::new(l);
                prop_assert!(again.is_unchanged());
                prop_assert_eq!(again.lenient(), None);
            }
        }

        #[test]
        fn never_panics_on_arbitrary_strings(raw in any::<String>()) {
            let n = NormalisedPath::new(&raw);
            let _ = (n.as_str(), n.is_unchanged(), n.lenient());
        }

        #[test]
        fn a_normal_path_without_separators_is_borrowed_and_unambiguous(
            segs in prop::collection::vec("[a-z0-9_~-]{1,6}(%2[0-9A-C]|%3[A-F])?", 0..6),
            trailing in any::<bool>(),
        ) {
            let mut raw = String::new();
            for s in &segs {
                raw.push('/');
                raw.push_str(s);
            }
            if trailing || raw.is_empty() {
                raw.push('/');
            }
            let n = NormalisedPath::new(&raw);
            prop_assert!(n.is_unchanged());
            prop_assert_eq!(n.lenient(), None);
        }
    }
}
