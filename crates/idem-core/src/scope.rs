//! Scopes keep one tenant's keys and stored responses away from every
//! other tenant's: a record is identified by (scope, key).

use sha2::{Digest, Sha256};
use std::fmt;

/// Where a request's scope comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeSource {
    /// SHA-256 of a named header's value (default `Authorization`), so no
    /// credential is ever stored in clear.
    HeaderHash {
        /// Header name, lower case.
        header: String,
    },
    /// A header set by a trusted auth proxy in front (e.g. `X-Tenant-Id`),
    /// used as is.
    TrustedHeader {
        /// Header name, lower case.
        header: String,
    },
    /// One global scope: only for single-tenant APIs.
    Global,
}

impl Default for ScopeSource {
    fn default() -> Self {
        ScopeSource::HeaderHash {
            header: "authorization".to_owned(),
        }
    }
}

/// The tenant part of a record's identity, as stored.
///
/// Requests without the scope header share the `anon` scope, which no
/// header value can produce, so an anonymous caller never sees a tenant's
/// records and the reverse.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Box<str>);

impl Scope {
    /// The scope for a request, given the values of the source header.
    ///
    /// ```
    /// use idem_core::scope::{Scope, ScopeSource};
    /// let src = ScopeSource::default();
    /// let a = Scope::resolve(&src, Some(b"Bearer alice"));
    /// let b = Scope::resolve(&src, Some(b"Bearer bob"));
    /// assert_ne!(a, b);
    /// assert!(!a.as_str().contains("alice"));
    /// ```
    pub fn resolve(source: &ScopeSource, header_value: Option<&[u8]>) -> Scope {
        match (source, header_value) {
            (ScopeSource::Global, _) => Scope("global".into()),
            (_, None) => Scope("anon".into()),
            (ScopeSource::HeaderHash { .. }, Some(v)) => {
                let mut h = Sha256::new();
                h.update(b"idem-scope-v1\0");
                h.update(v);
                Scope(format!("h:{}", hex::encode(h.finalize())).into())
            }
            (ScopeSource::TrustedHeader { .. }, Some(v)) => {
                Scope(format!("t:{}", String::from_utf8_lossy(v)).into())
            }
        }
    }

    /// A scope from its stored form (store engines use this when reading).
    pub fn from_stored(s: impl Into<Box<str>>) -> Scope {
        Scope(s.into())
    }

    /// The stored form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The header this source reads, if any.
    pub fn source_header(source: &ScopeSource) -> Option<&str> {
        match source {
            ScopeSource::HeaderHash { header } | ScopeSource::TrustedHeader { header } => {
                Some(header)
            }
            ScopeSource::Global => None,
        }
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_get_distinct_scopes_and_no_credential_is_kept() {
        let src = ScopeSource::default();
        let a = Scope::resolve(&src, Some(b"Bearer sk_live_a"));
        assert_ne!(a, Scope::resolve(&src, Some(b"Bearer sk_live_b")));
        assert_ne!(a, Scope::resolve(&src, None));
        assert!(!a.as_str().contains("sk_live"));
        assert_eq!(a, Scope::resolve(&src, Some(b"Bearer sk_live_a")));
    }

    #[test]
    fn trusted_header_cannot_forge_the_anonymous_or_hashed_scope() {
        let t = ScopeSource::TrustedHeader {
            header: "x-tenant-id".into(),
        };
        assert_ne!(Scope::resolve(&t, Some(b"anon")), Scope::resolve(&t, None));
        assert_eq!(Scope::resolve(&t, Some(b"acme")).as_str(), "t:acme");
    }
}
