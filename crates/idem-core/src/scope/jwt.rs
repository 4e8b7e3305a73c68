//! The tenant of a bearer JWT: a claim of a token whose signature, expiry,
//! issuer and audience were verified (by `jsonwebtoken`; nothing here
//! checks a signature by hand).

use super::CredentialError;
use crate::Timestamp;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashSet;
use std::fmt;

/// How far an `exp` or `nbf` may be off, for clock skew between the token
/// issuer and the gateway.
const LEEWAY_SECS: i64 = 60;

/// The keys tokens are verified with.
#[derive(Clone)]
pub enum JwtKeys {
    /// A JWKS document (RS*, PS*, ES256, ES384, EdDSA public keys).
    Jwks(JwkSet),
    /// An HS256 shared secret (at least 32 bytes, RFC 7518 section 3.2).
    Hs256(Vec<u8>),
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKeys::Jwks(set) => write!(f, "Jwks({} keys)", set.keys.len()),
            JwtKeys::Hs256(_) => f.write_str("Hs256(..)"),
        }
    }
}

/// A verification key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The JWKS document does not parse.
    #[error("not a JWKS document: {0}")]
    Jwks(String),
    /// The JWKS has no key.
    #[error("the JWKS has no keys")]
    NoKeys,
    /// A key of the JWKS cannot verify tokens.
    #[error("key {index} (kid {kid:?}): {reason}")]
    UnsupportedKey {
        /// Its position in `keys`.
        index: usize,
        /// Its `kid`, if any.
        kid: Option<String>,
        /// Why.
        reason: String,
    },
    /// The HS256 secret is too short.
    #[error("an HS256 secret must be at least 32 bytes (got {0})")]
    SecretTooShort(usize),
    /// The claim path is empty or has an empty part.
    #[error("{0:?} is not a claim path (expected e.g. \"sub\" or \"org.id\")")]
    ClaimPath(String),
}

struct VerifyKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies bearer JWTs and reads the claim that names the tenant.
pub struct JwtVerifier {
    keys: Vec<VerifyKey>,
    claim: Vec<String>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|k| (k.kid.as_deref(), k.algorithm))
                    .collect::<Vec<_>>(),
            )
            .field("claim", &self.claim.join("."))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl PartialEq for JwtVerifier {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for JwtVerifier {}

impl JwtVerifier {
    /// A verifier of tokens signed by `keys`, whose tenant is `claim` (a
    /// dot path such as `org.id`), checking `iss` and `aud` when given.
    pub fn new(
        keys: JwtKeys,
        claim: &str,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<Self, JwtError> {
        // One backend is compiled in; installing it makes that explicit even
        // if another crate in the program enables the other one.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
        let path: Vec<String> = claim.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(JwtError::ClaimPath(claim.to_owned()));
        }
        let keys = match keys {
            JwtKeys::Hs256(secret) => {
                if secret.len() < 32 {
                    return Err(JwtError::SecretTooShort(secret.len()));
                }
                vec![VerifyKey {
                    kid: None,
                    algorithm: Algorithm::HS256,
                    key: DecodingKey::from_secret(&secret),
                }]
            }
            JwtKeys::Jwks(set) => {
                if set.keys.is_empty() {
                    return Err(JwtError::NoKeys);
                }
                set.keys
                    .iter()
                    .enumerate()
                    .map(|(index, jwk)| verify_key(jwk, index))
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(JwtVerifier {
            keys,
            claim: path,
            issuer,
            audience,
        })
    }

    /// Parses a JWKS document.
    pub fn parse_jwks(text: &str) -> Result<JwkSet, JwtError> {
        serde_json::from_str(text).map_err(|e| JwtError::Jwks(e.to_string()))
    }

    /// The bytes the scope is derived from: the claim path and its value,
    /// once the token is verified at `now`.
    pub(super) fn tenant(&self, token: &str, now: Timestamp) -> Result<Vec<u8>, CredentialError> {
        let invalid = |why: String| {
            CredentialError::Invalid(format!(
                "The bearer token was refused: {why}. Nothing was forwarded."
            ))
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| invalid(format!("it is not a JWT ({e})")))?;
        // The key decides the algorithm, never the token: a token that names
        // another algorithm than its key's is refused (no algorithm confusion).
        let mut candidates = self.keys.iter().filter(|k| match (&header.kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => self.keys.len() == 1,
            (None, _) => true,
        });
        let mut last_error = format!("no key with kid {:?}", header.kid.as_deref().unwrap_or(""));
        let claims = loop {
            let Some(key) = candidates.next() else {
                return Err(invalid(last_error));
            };
            if key.algorithm != header.alg {
                last_error = format!(
                    "it is signed with {:?}, but its key is for {:?}",
                    header.alg, key.algorithm
                );
                continue;
            }
            let mut validation = Validation::new(key.algorithm);
            // Time and audience are checked below against the injected
            // clock; the signature is checked here.
            validation.required_spec_claims = HashSet::new();
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.validate_aud = false;
            match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
                Ok(data) => break data.claims,
                Err(e) => last_error = format!("its signature does not verify ({e})"),
            }
        };
        let now_secs = now.as_millis().div_euclid(1000);
        match claims.get("exp").and_then(serde_json::Value::as_i64) {
            None => return Err(invalid("it has no numeric `exp`".into())),
            Some(exp) if now_secs > exp.saturating_add(LEEWAY_SECS) => {
                return Err(invalid("it has expired".into()))
            }
            Some(_) => {}
        }
        if let Some(nbf) = claims.get("nbf").and_then(serde_json::Value::as_i64) {
            if now_secs.saturating_add(LEEWAY_SECS) < nbf {
                return Err(invalid("it is not valid yet (`nbf`)".into()));
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(serde_json::Value::as_str) != Some(issuer) {
                return Err(invalid(format!("its issuer is not {issuer:?}")));
            }
        }
        if let Some(audience) = &self.audience {
            let ok = match claims.get("aud") {
                Some(serde_json::Value::String(a)) => a == audience,
                Some(serde_json::Value::Array(list)) => {
                    list.iter().any(|a| a.as_str() == Some(audience))
                }
                _ => false,
            };
            if !ok {
                return Err(invalid(format!(
                    "its audience does not include {audience:?}"
                )));
            }
        }
        let mut value = &claims;
        for part in &self.claim {
            value = value
                .get(part)
                .ok_or_else(|| invalid(format!("it has no `{}` claim", self.claim.join("."))))?;
        }
        let text = match value {
            serde_json::Value::String(s) if !s.is_empty() => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => {
                return Err(invalid(format!(
                    "its `{}` claim is not a non-empty string or a number",
                    self.claim.join(".")
                )))
            }
        };
        let mut material = self.claim.join(".").into_bytes();
        material.push(0);
        material.extend_from_slice(text.as_bytes());
        Ok(material)
    }
}

fn verify_key(jwk: &Jwk, index: usize) -> Result<VerifyKey, JwtError> {
    let unsupported = |reason: String| JwtError::UnsupportedKey {
        index,
        kid: jwk.common.key_id.clone(),
        reason,
    };
    let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(alg), _) => match alg {
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::EdDSA => Algorithm::EdDSA,
            other => {
                return Err(unsupported(format!(
                    "algorithm {other:?} is not supported for verification (use RS256, ES256, EdDSA, ...; an HS256 secret goes in hs256_secret_env)"
                )))
            }
        },
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(p)) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            ref other => return Err(unsupported(format!("curve {other:?} is not supported"))),
        },
        (None, AlgorithmParameters::OctetKeyPair(p)) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        (None, _) => {
            return Err(unsupported(
                "no `alg`, and its key type does not name one".into(),
            ))
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| unsupported(e.to_string()))?;
    Ok(VerifyKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"an hs256 secret of at least thirty-two bytes";

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn verifier(issuer: Option<&str>, audience: Option<&str>) -> JwtVerifier {
        JwtVerifier::new(
            JwtKeys::Hs256(SECRET.to_vec()),
            "org.id",
            issuer.map(str::to_owned),
            audience.map(str::to_owned),
        )
        .unwrap()
    }

    const NOW: Timestamp = Timestamp(1_700_000_000_000);

    #[test]
    fn a_refreshed_token_keeps_its_tenant() {
        let v = verifier(None, None);
        let a = v
            .tenant(
                &token(json!({"org": {"id": "acme"}, "exp": 1_700_000_600, "jti": 1})),
                NOW,
            )
            .unwrap();
        let b = v
            .tenant(
                &token(json!({"org": {"id": "acme"}, "exp": 1_700_003_600, "jti": 2})),
                NOW,
            )
            .unwrap();
        assert_eq!(a, b);
        let other = v
            .tenant(
                &token(json!({"org": {"id": "other"}, "exp": 1_700_000_600})),
                NOW,
            )
            .unwrap();
        assert_ne!(a, other);
    }

    #[test]
    fn expired_wrong_issuer_audience_or_signature_is_refused() {
        let v = verifier(Some("https://auth.example"), Some("payments"));
        let good = json!({"org": {"id": "acme"}, "exp": 1_700_000_600, "iss": "https://auth.example", "aud": ["x", "payments"]});
        assert!(v.tenant(&token(good.clone()), NOW).is_ok());
        let mut expired = good.clone();
        expired["exp"] = json!(1_700_000_000 - 61);
        assert!(v.tenant(&token(expired), NOW).is_err());
        let mut within_leeway = good.clone();
        within_leeway["exp"] = json!(1_700_000_000 - 30);
        assert!(v.tenant(&token(within_leeway), NOW).is_ok());
        let mut iss = good.clone();
        iss["iss"] = json!("https://evil.example");
        assert!(v.tenant(&token(iss), NOW).is_err());
        let mut aud = good.clone();
        aud["aud"] = json!("other");
        assert!(v.tenant(&token(aud), NOW).is_err());
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"not the secret, but just as long!!!!"),
        )
        .unwrap();
        assert!(v.tenant(&forged, NOW).is_err());
        let mut no_exp = good;
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(v.tenant(&token(no_exp), NOW).is_err());
        assert!(v.tenant("not a jwt", NOW).is_err());
    }

    #[test]
    fn an_unsigned_token_is_refused() {
        // {"alg":"none"} with the claims of a valid token.
        let v = verifier(None, None);
        let none = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIn0", "eyJvcmciOnsiaWQiOiJhY21lIn0sImV4cCI6MTcwMDAwMDYwMH0"
        );
        assert!(v.tenant(&none, NOW).is_err());
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert_eq!(
            JwtVerifier::new(JwtKeys::Hs256(b"short".to_vec()), "sub", None, None).unwrap_err(),
            JwtError::SecretTooShort(5)
        );
        assert!(matches!(
            JwtVerifier::new(JwtKeys::Hs256(SECRET.to_vec()), "org..id", None, None),
            Err(JwtError::ClaimPath(_))
        ));
        assert!(JwtVerifier::parse_jwks("{").is_err());
        let unknown_alg = JwtVerifier::parse_jwks(
            r#"{"keys":[{"kty":"EC","alg":"XYZ","crv":"P-256","x":"a","y":"b"}]}"#,
        );
        assert!(
            unknown_alg.is_err()
                || matches!(
                    JwtVerifier::new(JwtKeys::Jwks(unknown_alg.unwrap()), "sub", None, None),
                    Err(JwtError::UnsupportedKey { index: 0, .. })
                )
        );
        let empty = JwtVerifier::parse_jwks(r#"{"keys":[]}"#).unwrap();
        assert_eq!(
            JwtVerifier::new(JwtKeys::Jwks(empty), "sub", None, None).unwrap_err(),
            JwtError::NoKeys
        );
    }
}
