//! Request methods as the tools' flags name them.

use http::Method;

/// `name` as a request method: the standard methods in any case (`patch`
/// is PATCH), any other token exactly as written (extension methods are
/// case-sensitive). `None` when it is not a method token.
///
/// ```
/// use http::Method;
/// assert_eq!(idem_core::method::parse("patch"), Some(Method::PATCH));
/// assert_eq!(idem_core::method::parse("PURGE").unwrap().as_str(), "PURGE");
/// assert_eq!(idem_core::method::parse("purge").unwrap().as_str(), "purge");
/// assert_eq!(idem_core::method::parse("NO SPACE"), None);
/// ```
pub fn parse(name: &str) -> Option<Method> {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    STANDARD
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(name))
        .or_else(|| Method::from_bytes(name.as_bytes()).ok())
}
