//! Scopes keep one tenant's keys and stored responses away from every
//! other tenant's: a record is identified by (scope, key).
//!
//! The operator says what identifies a tenant ([`ScopeSource`]) and what a
//! keyed request without that credential gets ([`Anonymous`]); the default
//! refuses it, because a request that carries no tenant would otherwise
//! share one scope with strangers. [`ScopeRule::resolve`] turns a request's
//! headers into its scope.

use crate::Timestamp;
use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

mod jwt;

pub use jwt::{JwtError, JwtKeys, JwtVerifier};

/// Where a request's scope comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum ScopeSource {
    /// A hash of one or more headers (default `Authorization`), so no
    /// credential is ever stored in clear. The auth scheme of
    /// `Authorization` is case-insensitive and runs of whitespace collapse;
    /// nothing else is guessed. With several headers the scope covers the
    /// (name, value) pairs present.
    HeaderHash {
        /// Header names, lower case.
        headers: Vec<String>,
    },
    /// A hash of one named cookie's value; other cookies never change it.
    CookieHash {
        /// The cookie's name (case-sensitive, as cookies are).
        cookie: String,
    },
    /// A claim of a verified JWT (`Authorization: Bearer ...`), so a
    /// refreshed token keeps its tenant's scope.
    Jwt(Arc<JwtVerifier>),
    /// Headers set by a trusted auth proxy in front (e.g. `X-Tenant-Id`),
    /// used as they are.
    TrustedHeader {
        /// Header names, lower case.
        headers: Vec<String>,
    },
    /// One global scope: only for single-tenant APIs.
    Global,
}

impl fmt::Debug for ScopeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeSource::HeaderHash { headers } => f
                .debug_struct("HeaderHash")
                .field("headers", headers)
                .finish(),
            ScopeSource::CookieHash { cookie } => f
                .debug_struct("CookieHash")
                .field("cookie", cookie)
                .finish(),
            ScopeSource::Jwt(v) => f.debug_tuple("Jwt").field(v).finish(),
            ScopeSource::TrustedHeader { headers } => f
                .debug_struct("TrustedHeader")
                .field("headers", headers)
                .finish(),
            ScopeSource::Global => f.write_str("Global"),
        }
    }
}

impl Default for ScopeSource {
    fn default() -> Self {
        ScopeSource::HeaderHash {
            headers: vec!["authorization".to_owned()],
        }
    }
}

/// What a keyed request that carries no credential gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Anonymous {
    /// 401 `credential-required`; nothing is forwarded. The default.
    #[default]
    Reject,
    /// Forwarded unprotected (no claim, no replay), and counted.
    PassThrough,
    /// All anonymous requests share one scope: single-tenant APIs only,
    /// since on an API that authenticates by anything else every caller
    /// would see every other caller's stored responses.
    Shared,
}

/// A secret that turns stored scopes into HMACs, so that a copy of the
/// store cannot be used to test guessed credentials offline.
#[derive(Clone, PartialEq, Eq)]
pub struct ScopeSecret(Arc<[u8]>);

impl ScopeSecret {
    /// The shortest secret accepted, in bytes.
    pub const MIN_LEN: usize = 16;

    /// A secret from raw bytes; `None` when shorter than [`Self::MIN_LEN`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= Self::MIN_LEN).then(|| ScopeSecret(bytes.into()))
    }
}

impl fmt::Debug for ScopeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScopeSecret(..)")
    }
}

/// How the gateway or layer derives a request's scope: the source, what an
/// anonymous keyed request gets, and an optional secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeRule {
    /// What identifies a tenant.
    pub source: ScopeSource,
    /// What a keyed request without a credential gets.
    pub anonymous: Anonymous,
    /// With a secret, stored scopes are HMAC-SHA256, not bare hashes.
    pub secret: Option<ScopeSecret>,
}

/// A request's scope, as [`ScopeRule::resolve`] decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Claim and replay under this scope.
    Scope(Scope),
    /// No credential, and the rule says to forward such requests
    /// unprotected.
    PassThrough,
}

/// Why a keyed request gets no scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No credential, and the rule refuses anonymous keyed requests.
    #[error("{0}")]
    Missing(String),
    /// A credential was sent but failed verification.
    #[error("{0}")]
    Invalid(String),
}

/// The tenant part of a record's identity, as stored.
///
/// Stored forms carry a prefix per source (`h:` hashed headers, `c:` a
/// hashed cookie, `j:` a JWT claim, `t:` trusted headers, `m:` any of them
/// keyed with a secret), so no value of one source can produce another's
/// scope, nor the shared `anon` and `global` scopes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Box<str>);

impl Scope {
    /// A scope from its stored form (store engines use this when reading).
    pub fn from_stored(s: impl Into<Box<str>>) -> Scope {
        Scope(s.into())
    }

    /// The scope every anonymous request shares under [`Anonymous::Shared`].
    pub fn anonymous() -> Scope {
        Scope("anon".into())
    }

    /// The one scope of [`ScopeSource::Global`].
    pub fn global() -> Scope {
        Scope("global".into())
    }

    /// The stored form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl ScopeRule {
    /// A rule with this source, the default [`Anonymous::Reject`] and no
    /// secret.
    pub fn new(source: ScopeSource) -> Self {
        ScopeRule {
            source,
            anonymous: Anonymous::Reject,
            secret: None,
        }
    }

    /// The headers whose values the scope depends on: the proxy must never
    /// drop them (e.g. because `Connection` names them), or the upstream
    /// would see another tenant than the one the key was claimed under.
    pub fn headers(&self) -> Vec<http::HeaderName> {
        let names: Vec<&str> = match &self.source {
            ScopeSource::HeaderHash { headers } | ScopeSource::TrustedHeader { headers } => {
                headers.iter().map(String::as_str).collect()
            }
            ScopeSource::CookieHash { .. } => vec![COOKIE.as_str()],
            ScopeSource::Jwt(_) => vec![AUTHORIZATION.as_str()],
            ScopeSource::Global => Vec::new(),
        };
        names
            .into_iter()
            .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
            .collect()
    }

    /// The scope of a keyed request with these headers, at `now` (for JWT
    /// expiry).
    ///
    /// ```
    /// use http::HeaderMap;
    /// use idem_core::scope::{Resolved, ScopeRule, CredentialError};
    /// use idem_core::Timestamp;
    ///
    /// let rule = ScopeRule::default(); // hash of Authorization; anonymous refused
    /// let mut a = HeaderMap::new();
    /// a.insert("authorization", "Bearer tok_1".parse().unwrap());
    /// let mut b = HeaderMap::new();
    /// b.insert("authorization", "bearer   tok_1".parse().unwrap());
    /// let now = Timestamp(0);
    /// // The same credential, written differently, is the same tenant.
    /// assert_eq!(rule.resolve(&a, now), rule.resolve(&b, now));
    /// let Ok(Resolved::Scope(scope)) = rule.resolve(&a, now) else { panic!() };
    /// assert!(!scope.as_str().contains("tok_1"));
    /// // No credential: refused, never a shared scope.
    /// assert!(matches!(rule.resolve(&HeaderMap::new(), now), Err(CredentialError::Missing(_))));
    /// ```
    pub fn resolve(
        &self,
        headers: &HeaderMap,
        now: Timestamp,
    ) -> Result<Resolved, CredentialError> {
        let credential = match &self.source {
            ScopeSource::Global => return Ok(Resolved::Scope(Scope::global())),
            ScopeSource::HeaderHash { headers: names } => {
                header_material(headers, names, true).map(|m| ('h', m))
            }
            ScopeSource::TrustedHeader { headers: names } => {
                header_material(headers, names, false).map(|m| ('t', m))
            }
            ScopeSource::CookieHash { cookie } => cookie_value(headers, cookie)?.map(|v| {
                let mut m = b"cookie\0".to_vec();
                m.extend_from_slice(cookie.as_bytes());
                m.push(0);
                m.extend_from_slice(v.as_bytes());
                ('c', m)
            }),
            ScopeSource::Jwt(verifier) => match bearer_token(headers)? {
                None => None,
                Some(token) => Some(('j', verifier.tenant(token, now)?)),
            },
        };
        match credential {
            Some((kind, material)) => Ok(Resolved::Scope(self.scope_of(kind, &material))),
            None => match self.anonymous {
                Anonymous::Reject => Err(CredentialError::Missing(self.missing_message())),
                Anonymous::PassThrough => Ok(Resolved::PassThrough),
                Anonymous::Shared => Ok(Resolved::Scope(Scope::anonymous())),
            },
        }
    }

    fn scope_of(&self, kind: char, material: &[u8]) -> Scope {
        if let Some(secret) = &self.secret {
            // Unwrap-free: HMAC takes keys of any length.
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&secret.0) else {
                unreachable!("HMAC accepts keys of every length")
            };
            mac.update(b"idem-scope-v2\0");
            mac.update(&[kind as u8, 0]);
            mac.update(material);
            return digest_scope('m', mac.finalize().into_bytes().into());
        }
        match kind {
            // Trusted values are tenant ids, kept readable as before.
            't' => Scope(format!("t:{}", String::from_utf8_lossy(material)).into()),
            _ => {
                let mut h = Sha256::new();
                // `h:` keeps the digest of earlier versions for one header,
                // so records written before an upgrade keep their scope.
                h.update(match kind {
                    'h' => &b"idem-scope-v1\0"[..],
                    'c' => b"idem-scope-cookie-v1\0",
                    _ => b"idem-scope-jwt-v1\0",
                });
                h.update(material);
                digest_scope(kind, h.finalize().into())
            }
        }
    }

    fn missing_message(&self) -> String {
        let what = match &self.source {
            ScopeSource::HeaderHash { headers } | ScopeSource::TrustedHeader { headers } => {
                format!("a {} header", headers.join(" or "))
            }
            ScopeSource::CookieHash { cookie } => format!("the {cookie:?} cookie"),
            ScopeSource::Jwt(_) => "an Authorization: Bearer token".to_owned(),
            ScopeSource::Global => "a credential".to_owned(),
        };
        format!(
            "A request with an idempotency key must carry {what}, which identifies its tenant. Nothing was forwarded."
        )
    }
}

/// `<kind>:<hex of the SHA-256 digest>`, built in one allocation of its
/// exact size (this runs on every keyed request).
fn digest_scope(kind: char, digest: [u8; 32]) -> Scope {
    let mut hex = [0u8; 64];
    if hex::encode_to_slice(digest, &mut hex).is_err() {
        unreachable!("64 hex digits for 32 bytes");
    }
    let Ok(hex) = std::str::from_utf8(&hex) else {
        unreachable!("hex digits are ASCII")
    };
    let mut scope = String::with_capacity(kind.len_utf8() + 1 + hex.len());
    scope.push(kind);
    scope.push(':');
    // One copy, not a push per digit.
    scope.push_str(hex);
    Scope(scope.into_boxed_str())
}

/// The bytes a header source hashes, `None` when none of the headers is
/// present (or all are blank).
fn header_material(headers: &HeaderMap, names: &[String], normalise: bool) -> Option<Vec<u8>> {
    // One configured header: the value alone (the form of earlier
    // versions, so stored scopes survive an upgrade), with no list of
    // present headers to build on every keyed request.
    if let [name] = names {
        return joined_values(headers, name, normalise);
    }
    let mut m = Vec::new();
    for name in names {
        if let Some(v) = joined_values(headers, name, normalise) {
            m.extend_from_slice(name.as_bytes());
            m.push(0);
            m.extend_from_slice(&(v.len() as u64).to_be_bytes());
            m.extend_from_slice(&v);
        }
    }
    (!m.is_empty()).then_some(m)
}

/// Every non-blank value of the header `name`, in order, joined by `\n`;
/// `None` when there is none.
fn joined_values(headers: &HeaderMap, name: &str, normalise: bool) -> Option<Vec<u8>> {
    let mut joined: Option<Vec<u8>> = None;
    for value in headers.get_all(name) {
        let value = if normalise {
            normalise_credential(name, value.as_bytes())
        } else {
            value.as_bytes().to_vec()
        };
        if value.is_empty() {
            continue;
        }
        match &mut joined {
            Some(j) => {
                j.push(b'\n');
                j.extend_from_slice(&value);
            }
            None => joined = Some(value),
        }
    }
    joined
}

/// The same credential written differently is the same credential: runs
/// of whitespace collapse, the ends are trimmed, and the auth scheme of
/// `Authorization` / `Proxy-Authorization` is case-insensitive (RFC 9110
/// section 11.1). The credential itself is left as it is.
fn normalise_credential(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for word in value
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(word);
    }
    let has_scheme = name.eq_ignore_ascii_case("authorization")
        || name.eq_ignore_ascii_case("proxy-authorization");
    if has_scheme {
        // One spelling per scheme: the capitalised one (`Bearer`, `Basic`)
        // that clients almost always send, so the scopes stored before
        // normalisation existed stay the same for them.
        if let Some(end) = out.iter().position(|&b| b == b' ') {
            out[..end].make_ascii_lowercase();
            out[0].make_ascii_uppercase();
        }
    }
    out
}

/// The value of the cookie `name`, from every `Cookie` header. A cookie
/// sent twice with different values is refused: frameworks disagree on
/// which one wins, so the scope could differ from the upstream's tenant.
fn cookie_value<'h>(
    headers: &'h HeaderMap,
    name: &str,
) -> Result<Option<&'h str>, CredentialError> {
    let mut found: Option<&str> = None;
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            let Some((n, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if n.trim() != name {
                continue;
            }
            let v = v.trim().trim_matches('"');
            if v.is_empty() {
                continue;
            }
            match found {
                Some(earlier) if earlier != v => {
                    return Err(CredentialError::Invalid(format!(
                        "The {name:?} cookie is sent more than once with different values. Nothing was forwarded."
                    )))
                }
                _ => found = Some(v),
            }
        }
    }
    Ok(found)
}

/// The token of `Authorization: Bearer <token>`; `None` without an
/// `Authorization` header.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, CredentialError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |why: &str| CredentialError::Invalid(format!("{why}. Nothing was forwarded."));
    if values.next().is_some() {
        return Err(invalid("More than one Authorization header"));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid("The Authorization header is not visible ASCII"))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(invalid(
            "The Authorization header is not a Bearer token (expected `Authorization: Bearer <JWT>`)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn scope(rule: &ScopeRule, pairs: &[(&str, &str)]) -> Result<Resolved, CredentialError> {
        rule.resolve(&headers(pairs), Timestamp(0))
    }

    #[test]
    fn tenants_get_distinct_scopes_and_no_credential_is_kept() {
        let rule = ScopeRule::default();
        let a = scope(&rule, &[("authorization", "Bearer sk_live_a")]).unwrap();
        let b = scope(&rule, &[("authorization", "Bearer sk_live_b")]).unwrap();
        assert_ne!(a, b);
        let Resolved::Scope(a) = a else { panic!() };
        assert!(!a.as_str().contains("sk_live"));
    }

    #[test]
    fn scheme_case_and_whitespace_do_not_change_the_tenant() {
        let rule = ScopeRule::default();
        let a = scope(&rule, &[("authorization", "Bearer tok_1")]).unwrap();
        for variant in ["bearer tok_1", "BEARER  tok_1", "  Bearer\ttok_1 "] {
            assert_eq!(
                scope(&rule, &[("authorization", variant)]).unwrap(),
                a,
                "{variant}"
            );
        }
        // The credential itself stays case-sensitive.
        assert_ne!(
            scope(&rule, &[("authorization", "Bearer TOK_1")]).unwrap(),
            a
        );
    }

    #[test]
    fn one_header_keeps_the_scope_of_earlier_versions() {
        // SHA-256("idem-scope-v1\0" || value), as stored before 0.2.
        let mut h = Sha256::new();
        h.update(b"idem-scope-v1\0Bearer x");
        let old = format!("h:{}", hex::encode(h.finalize()));
        let Resolved::Scope(s) =
            scope(&ScopeRule::default(), &[("authorization", "Bearer x")]).unwrap()
        else {
            panic!()
        };
        assert_eq!(s.as_str(), old);
    }

    #[test]
    fn anonymous_is_refused_by_default_and_shared_only_when_asked() {
        let mut rule = ScopeRule::default();
        assert!(matches!(
            scope(&rule, &[]),
            Err(CredentialError::Missing(_))
        ));
        assert!(matches!(
            scope(&rule, &[("authorization", "  ")]),
            Err(CredentialError::Missing(_))
        ));
        rule.anonymous = Anonymous::PassThrough;
        assert_eq!(scope(&rule, &[]).unwrap(), Resolved::PassThrough);
        rule.anonymous = Anonymous::Shared;
        assert_eq!(
            scope(&rule, &[]).unwrap(),
            Resolved::Scope(Scope::anonymous())
        );
    }

    /// A client that sends its credential header twice (someone else's
    /// value beside its own) lands in neither tenant's scope; a blank
    /// copy changes nothing.
    #[test]
    fn every_value_of_a_repeated_credential_header_counts() {
        for rule in [
            ScopeRule::default(),
            ScopeRule::new(ScopeSource::HeaderHash {
                headers: vec!["authorization".into(), "x-api-key".into()],
            }),
        ] {
            let a = scope(&rule, &[("authorization", "Bearer a")]).unwrap();
            let b = scope(&rule, &[("authorization", "Bearer b")]).unwrap();
            let both = scope(
                &rule,
                &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
            )
            .unwrap();
            assert_ne!(both, a);
            assert_ne!(both, b);
            let with_blank = scope(
                &rule,
                &[("authorization", "Bearer a"), ("authorization", "  ")],
            )
            .unwrap();
            assert_eq!(with_blank, a);
        }
    }

    #[test]
    fn several_headers_cover_the_pairs_present() {
        let rule = ScopeRule::new(ScopeSource::HeaderHash {
            headers: vec!["authorization".into(), "x-api-key".into()],
        });
        let key = scope(&rule, &[("x-api-key", "k1")]).unwrap();
        let auth = scope(&rule, &[("authorization", "k1")]).unwrap();
        assert_ne!(
            key, auth,
            "the same value in another header is another tenant"
        );
        assert_ne!(key, scope(&rule, &[("x-api-key", "k2")]).unwrap());
        assert!(scope(&rule, &[("cookie", "a=b")]).is_err());
    }

    #[test]
    fn cookie_scope_reads_one_cookie_only() {
        let rule = ScopeRule::new(ScopeSource::CookieHash {
            cookie: "session".into(),
        });
        let alice = scope(&rule, &[("cookie", "session=alice")]).unwrap();
        assert_eq!(
            scope(&rule, &[("cookie", "theme=dark; session=alice")]).unwrap(),
            alice
        );
        assert_eq!(
            scope(&rule, &[("cookie", "a=1"), ("cookie", "session=alice")]).unwrap(),
            alice
        );
        assert_ne!(scope(&rule, &[("cookie", "session=bob")]).unwrap(), alice);
        assert!(matches!(
            scope(&rule, &[("cookie", "sessionx=alice")]),
            Err(CredentialError::Missing(_))
        ));
        assert!(matches!(
            scope(&rule, &[("cookie", "session=alice; session=bob")]),
            Err(CredentialError::Invalid(_))
        ));
    }

    #[test]
    fn a_secret_makes_scopes_unrecomputable_and_distinct() {
        let plain = ScopeRule::default();
        let keyed = ScopeRule {
            secret: ScopeSecret::new(b"0123456789abcdef0123"),
            ..ScopeRule::default()
        };
        let h = [("authorization", "Bearer k")];
        let (Resolved::Scope(p), Resolved::Scope(k)) =
            (scope(&plain, &h).unwrap(), scope(&keyed, &h).unwrap())
        else {
            panic!()
        };
        assert_ne!(p, k);
        // The stored form: `m:` and the MAC in 64 lowercase hex digits.
        let mac = k.as_str().strip_prefix("m:").unwrap();
        assert_eq!(mac.len(), 64, "{k:?}");
        assert!(mac
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let other = ScopeRule {
            secret: ScopeSecret::new(b"another secret of 16+ bytes"),
            ..ScopeRule::default()
        };
        assert_ne!(scope(&other, &h).unwrap(), Resolved::Scope(k));
        assert!(ScopeSecret::new(b"short").is_none());
    }

    #[test]
    fn trusted_header_cannot_forge_the_anonymous_or_hashed_scope() {
        let mut rule = ScopeRule::new(ScopeSource::TrustedHeader {
            headers: vec!["x-tenant-id".into()],
        });
        rule.anonymous = Anonymous::Shared;
        assert_ne!(
            scope(&rule, &[("x-tenant-id", "anon")]).unwrap(),
            scope(&rule, &[]).unwrap()
        );
        let Resolved::Scope(s) = scope(&rule, &[("x-tenant-id", "acme")]).unwrap() else {
            panic!()
        };
        assert_eq!(s.as_str(), "t:acme");
    }
}
