//! Encryption at rest of stored responses: [`SealedStore`] wraps any engine
//! and seals every response before the engine sees it (the format is
//! documented on [`SealedStore`]).

use crate::{Claim, ClaimOutcome, Completion, ListQuery, Store, StoreError, SweepReport, Write};
use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_NO_PAD};
use base64::{DecodeError, Engine as _};
use bytes::Bytes;
use chacha20poly1305::aead::Generate;
use chacha20poly1305::{AeadInOut, Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use idem_core::decision::ExistingOutcome;
use idem_core::operator::{Operated, OperatorAction, OperatorRefusal};
use idem_core::{EffectiveState, Record, RecordId, RecordState, StoredResponse, Timestamp};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use zeroize::{Zeroize, Zeroizing};

/// The name of the one header a sealed response carries (its value holds
/// the sealed header list). See [`is_sealed`].
pub const SEALED_HEADER: &str = idem_core::headers::SEALED;

/// The format this build writes and reads.
const VERSION_PREFIX: &[u8] = b"v1.";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const KEY_ID_LEN: usize = 8;
const KEY_ID_CONTEXT: &[u8] = b"idem-key-id-v1\0";
const AAD_CONTEXT: &[u8] = b"idem-sealed-v1\0";

/// Whether `response` is sealed (carries the [`SEALED_HEADER`]).
///
/// A layer running without [`SealedStore`] over a store that has sealed
/// records uses this to refuse to replay ciphertext.
///
/// ```
/// use idem_core::{IdempotencyKey, RecordId, Scope, StoredResponse};
/// use idem_store::{is_sealed, KeyRing};
/// let plain = StoredResponse { status: 201, headers: vec![], body: Some("ok".into()) };
/// assert!(!is_sealed(&plain));
/// let id = RecordId { scope: Scope::from_stored("global"), key: IdempotencyKey::parse(b"k1").unwrap() };
/// let sealed = KeyRing::new([7; 32]).seal(&id, &plain).unwrap();
/// assert!(is_sealed(&sealed));
/// ```
pub fn is_sealed(response: &StoredResponse) -> bool {
    response
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case(SEALED_HEADER))
}

/// A key's public name: the first 8 hex digits of
/// SHA-256(`"idem-key-id-v1\0"` || key), in lower case (ASCII).
#[derive(Clone, Copy, PartialEq, Eq)]
struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    fn of(key: &[u8; KEY_LEN]) -> KeyId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::new()
            .chain_update(KEY_ID_CONTEXT)
            .chain_update(key)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        for (pair, byte) in id.chunks_exact_mut(2).zip(digest.iter()) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0x0f)];
        }
        KeyId(id)
    }

    /// A key id as written in a sealed value: 8 lower-case hex digits.
    fn parse(text: &[u8]) -> Option<KeyId> {
        let id: [u8; KEY_ID_LEN] = text.try_into().ok()?;
        id.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(KeyId(id))
    }

    fn as_str(&self) -> &str {
        // Always ASCII hex, by construction and by `parse`.
        std::str::from_utf8(&self.0).unwrap_or("????????")
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One key of a ring: its id and the cipher holding it (the cipher wipes
/// the key when dropped).
#[derive(Clone)]
struct RingKey {
    id: KeyId,
    cipher: XChaCha20Poly1305,
}

impl RingKey {
    fn new(key: &[u8; KEY_LEN]) -> RingKey {
        let mut array = Key::default();
        array.copy_from_slice(key);
        let cipher = XChaCha20Poly1305::new(&array);
        array.as_mut_slice().zeroize();
        RingKey {
            id: KeyId::of(key),
            cipher,
        }
    }
}

/// Where a key sits in a [`KeyRing`]'s configuration, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPosition {
    /// The current key (the one that seals).
    Current,
    /// An older key, by its index in the older list (0 is the first; the
    /// message counts from 1).
    Older(usize),
}

impl fmt::Display for KeyPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPosition::Current => f.write_str("the current key"),
            KeyPosition::Older(index) => write!(
                f,
                "older key #{} (counting from 1 in the older list)",
                index.saturating_add(1)
            ),
        }
    }
}

/// A key ring could not be built from its configuration. Messages name the
/// key and the problem, never any key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// The text is empty (or only whitespace).
    #[error(
        "{position} is empty: give 32 random bytes in base64 (e.g. `openssl rand -base64 32`)"
    )]
    Empty {
        /// Which key.
        position: KeyPosition,
    },
    /// The text is not base64 in the standard alphabet.
    #[error("{position} is not base64 (standard alphabet, padding optional): {reason}")]
    NotBase64 {
        /// Which key.
        position: KeyPosition,
        /// What is wrong with the text.
        reason: String,
    },
    /// The text decodes to something other than 32 bytes.
    #[error(
        "{position} is {len} bytes once decoded, not 32: keys are 32 random bytes in base64 \
         (e.g. `openssl rand -base64 32`)"
    )]
    WrongLength {
        /// Which key.
        position: KeyPosition,
        /// How many bytes it decodes to.
        len: usize,
    },
    /// The same key (the same key id) is given twice.
    #[error("{position} has key id {key_id}, as {first} does: the same key is given twice")]
    Duplicate {
        /// The later of the two.
        position: KeyPosition,
        /// The earlier of the two.
        first: KeyPosition,
        /// Their key id.
        key_id: String,
    },
}

/// Which part of a response a ciphertext holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedPart {
    /// The header list (the [`SEALED_HEADER`]'s value).
    Headers,
    /// The body.
    Body,
}

impl SealedPart {
    fn label(self) -> u8 {
        match self {
            SealedPart::Headers => b'h',
            SealedPart::Body => b'b',
        }
    }
}

impl fmt::Display for SealedPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SealedPart::Headers => "headers",
            SealedPart::Body => "body",
        })
    }
}

/// A response could not be sealed (nothing was stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The operating system's random number generator failed.
    #[error(
        "could not seal the response: the operating system's random number generator failed: {0}"
    )]
    Random(String),
    /// A header name or value is over the 4 GiB its `u32` length allows.
    #[error("could not seal the response: a header part of {len} bytes is over 4 GiB")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The cipher refused the plaintext (over its length limit).
    #[error("could not seal the response: the cipher refused the {part} ({len} bytes)")]
    Cipher {
        /// Which part.
        part: SealedPart,
        /// The plaintext's length.
        len: usize,
    },
}

/// A sealed response could not be opened. Messages carry the key id and the
/// reason, never any plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The response carries no [`SEALED_HEADER`] (from
    /// [`KeyRing::open`]), or carries none where
    /// [`SealedStore::require_sealed`] demands one.
    #[error("the response is not sealed (it has no `idem-sealed` header)")]
    NotSealed,
    /// Sealed in a format this build does not read.
    #[error(
        "the response is sealed in format {version}, which this build cannot read (it reads v1)"
    )]
    UnsupportedVersion {
        /// The format's name as stored, e.g. `v2`.
        version: String,
    },
    /// Sealed under a key the ring does not hold.
    #[error(
        "the response is sealed under key id {key_id}, which the key ring does not hold \
         (current key {current}); add that key as an older key to read it"
    )]
    UnknownKey {
        /// The key id in the sealed value.
        key_id: String,
        /// The ring's current key id.
        current: String,
    },
    /// Authentication failed: the ciphertext was altered or truncated, the
    /// status was changed, or the ciphertext was moved from another record
    /// or field.
    #[error(
        "the sealed {part} failed authentication under key {key_id}: altered, truncated, \
         or moved from another record or field"
    )]
    Forged {
        /// Which part.
        part: SealedPart,
        /// The key id it was opened with.
        key_id: String,
    },
    /// The sealed value's structure is wrong.
    #[error("the sealed response is malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
        /// The key id, when it could be read.
        key_id: Option<String>,
    },
}

impl OpenError {
    /// The key id the response names, when it could be read.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            OpenError::UnknownKey { key_id, .. } | OpenError::Forged { key_id, .. } => Some(key_id),
            OpenError::Malformed { key_id, .. } => key_id.as_deref(),
            OpenError::NotSealed | OpenError::UnsupportedVersion { .. } => None,
        }
    }
}

/// The keys of a [`SealedStore`]: one current key, which seals, and older
/// keys, which only open (during a rotation).
///
/// Each key has a key id: the first 8 hex digits of
/// SHA-256(`"idem-key-id-v1\0"` || key). Sealed values name the id of the
/// key that sealed them, so a ring opens whatever any of its keys sealed.
/// To rotate: make the new key current and the old one older; once every
/// record sealed under the old key has expired (retention plus tombstone
/// retention), drop it.
///
/// `Debug` prints key ids only.
///
/// ```
/// use idem_store::{KeyRing, KeyRingError, KeyPosition};
/// let a = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// let b = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8"; // padding optional
/// let ring = KeyRing::from_base64(b, &[a]).unwrap();
/// assert_eq!(ring.older_key_ids().count(), 1);
/// assert!(!format!("{ring:?}").contains(b));
/// let err = KeyRing::from_base64(b, &["c2hvcnQ="]).unwrap_err();
/// assert_eq!(err, KeyRingError::WrongLength { position: KeyPosition::Older(0), len: 5 });
/// ```
#[derive(Clone)]
pub struct KeyRing {
    current: RingKey,
    older: Vec<RingKey>,
}

impl KeyRing {
    /// A ring of one key, which seals and opens.
    pub fn new(current: [u8; KEY_LEN]) -> KeyRing {
        let mut current = current;
        let ring = KeyRing {
            current: RingKey::new(&current),
            older: Vec::new(),
        };
        current.zeroize();
        ring
    }

    /// A ring that seals with `current` and also opens what `older` keys
    /// sealed. Refuses a key given twice.
    pub fn with_older(
        current: [u8; KEY_LEN],
        older: &[[u8; KEY_LEN]],
    ) -> Result<KeyRing, KeyRingError> {
        let mut ring = KeyRing::new(current);
        for (index, key) in older.iter().enumerate() {
            ring.push_older(RingKey::new(key), index)?;
        }
        Ok(ring)
    }

    /// A ring from base64 keys (standard alphabet, padding optional;
    /// surrounding whitespace, such as a file's final newline, is ignored):
    /// `current` seals, `older` only open.
    pub fn from_base64(current: &str, older: &[&str]) -> Result<KeyRing, KeyRingError> {
        let mut ring = KeyRing {
            current: RingKey::new(&*decode_key(current, KeyPosition::Current)?),
            older: Vec::with_capacity(older.len()),
        };
        for (index, text) in older.iter().enumerate() {
            let key = decode_key(text, KeyPosition::Older(index))?;
            ring.push_older(RingKey::new(&key), index)?;
        }
        Ok(ring)
    }

    fn push_older(&mut self, key: RingKey, index: usize) -> Result<(), KeyRingError> {
        let first = if key.id == self.current.id {
            Some(KeyPosition::Current)
        } else {
            self.older
                .iter()
                .position(|k| k.id == key.id)
                .map(KeyPosition::Older)
        };
        if let Some(first) = first {
            return Err(KeyRingError::Duplicate {
                position: KeyPosition::Older(index),
                first,
                key_id: key.id.as_str().to_owned(),
            });
        }
        self.older.push(key);
        Ok(())
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        self.current.id.as_str()
    }

    /// The ids of the keys that only open, in configuration order.
    pub fn older_key_ids(&self) -> impl Iterator<Item = &str> {
        self.older.iter().map(|k| k.id.as_str())
    }

    fn find(&self, id: KeyId) -> Option<&RingKey> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id == id)
    }

    /// `response` sealed under the current key for the record `id` (see
    /// [`SealedStore`] for the format). [`SealedStore`] calls this
    /// on every completion.
    pub fn seal(
        &self,
        id: &RecordId,
        response: &StoredResponse,
    ) -> Result<StoredResponse, SealError> {
        let key = &self.current;
        let status = response.status;

        let plain_len = response
            .headers
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum::<usize>();
        let headers_nonce = new_nonce()?;
        let mut headers = Vec::with_capacity(NONCE_LEN + plain_len + TAG_LEN);
        headers.extend_from_slice(&headers_nonce);
        for (name, value) in &response.headers {
            for part in [name.as_bytes(), value.as_ref()] {
                let len = u32::try_from(part.len())
                    .map_err(|_| SealError::TooLarge { len: part.len() })?;
                headers.extend_from_slice(&len.to_be_bytes());
                headers.extend_from_slice(part);
            }
        }
        let headers_aad = aad(SealedPart::Headers, id, status, &[]);
        seal_in_place(key, SealedPart::Headers, &headers_aad, &mut headers)?;
        let mut value = String::with_capacity(
            VERSION_PREFIX.len() + KEY_ID_LEN + 1 + headers.len().div_ceil(3) * 4,
        );
        value.push_str("v1.");
        value.push_str(key.id.as_str());
        value.push('.');
        URL_SAFE_NO_PAD.encode_string(&headers, &mut value);

        let body = match &response.body {
            None => None,
            Some(plain) => {
                let mut body = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
                body.extend_from_slice(&new_nonce()?);
                body.extend_from_slice(plain);
                let body_aad = aad(SealedPart::Body, id, status, &headers_nonce);
                seal_in_place(key, SealedPart::Body, &body_aad, &mut body)?;
                Some(Bytes::from(body))
            }
        };
        Ok(StoredResponse {
            status,
            headers: vec![(SEALED_HEADER.to_owned(), Bytes::from(value.into_bytes()))],
            body,
        })
    }

    /// The plaintext of a response [`seal`](Self::seal)ed for the record
    /// `id` under any key of this ring.
    pub fn open(
        &self,
        id: &RecordId,
        response: &StoredResponse,
    ) -> Result<StoredResponse, OpenError> {
        let status = response.status;
        let mut sealed = response
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(SEALED_HEADER));
        let value = match (sealed.next(), response.headers.len()) {
            (None, _) => return Err(OpenError::NotSealed),
            (Some((_, value)), 1) => value,
            (Some(_), _) => {
                return Err(malformed(
                    "a sealed response must carry the idem-sealed header alone",
                    None,
                ))
            }
        };

        let Some(rest) = value.strip_prefix(VERSION_PREFIX) else {
            return Err(match version_token(value) {
                Some(version) => OpenError::UnsupportedVersion { version },
                None => malformed("the idem-sealed value does not start with a version", None),
            });
        };
        let key_id = rest
            .get(..KEY_ID_LEN)
            .and_then(KeyId::parse)
            .filter(|_| rest.get(KEY_ID_LEN) == Some(&b'.'))
            .ok_or_else(|| {
                malformed(
                    "the idem-sealed value has no key id (8 lower-case hex digits)",
                    None,
                )
            })?;
        let key = self.find(key_id).ok_or_else(|| OpenError::UnknownKey {
            key_id: key_id.as_str().to_owned(),
            current: self.current.id.as_str().to_owned(),
        })?;
        let encoded = rest.get(KEY_ID_LEN + 1..).unwrap_or_default();
        let sealed_headers = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| {
            malformed(
                "the sealed headers are not base64url without padding",
                Some(key_id),
            )
        })?;
        let headers_aad = aad(SealedPart::Headers, id, status, &[]);
        let plain = open_part(key, SealedPart::Headers, &headers_aad, &sealed_headers)?;
        let headers = decode_headers(Bytes::from(plain), key_id)?;

        let body = match &response.body {
            None => None,
            Some(sealed) => {
                // The headers opened, so they start with their nonce.
                let headers_nonce = sealed_headers.get(..NONCE_LEN).unwrap_or_default();
                let body_aad = aad(SealedPart::Body, id, status, headers_nonce);
                Some(Bytes::from(open_part(
                    key,
                    SealedPart::Body,
                    &body_aad,
                    sealed,
                )?))
            }
        };
        Ok(StoredResponse {
            status,
            headers,
            body,
        })
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current.id)
            .field(
                "older",
                &self.older.iter().map(|k| k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn decode_key(text: &str, position: KeyPosition) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyRingError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyRingError::Empty { position });
    }
    let bytes = Zeroizing::new(STANDARD_PAD_INDIFFERENT.decode(text).map_err(|e| {
        KeyRingError::NotBase64 {
            position,
            reason: describe_base64_error(text, &e),
        }
    })?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(KeyRingError::WrongLength {
            position,
            len: bytes.len(),
        });
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// What is wrong with a key's base64, without quoting the key (only a
/// character outside the alphabet, which is not key material, is shown).
fn describe_base64_error(text: &str, error: &DecodeError) -> String {
    if text.contains(['-', '_']) {
        return "it contains '-' or '_', which belong to the URL-safe alphabet; \
                give the key in the standard alphabet ('+' and '/')"
            .to_owned();
    }
    match *error {
        DecodeError::InvalidByte(offset, byte) => format!(
            "character {} ('{}') is not in the base64 alphabet",
            offset.saturating_add(1),
            char::from(byte).escape_default()
        ),
        DecodeError::InvalidLength(_) => format!(
            "{} characters cannot be base64 (the text was cut or has extra characters)",
            text.chars().count()
        ),
        DecodeError::InvalidLastSymbol { .. } => {
            "its last character does not end a base64 encoding (the text was cut or altered)"
                .to_owned()
        }
        DecodeError::InvalidPadding => "its '=' padding is wrong".to_owned(),
    }
}

/// `v2` from `v2.…`: the version token of a value in a format this build
/// does not know, if it looks like one.
fn version_token(value: &[u8]) -> Option<String> {
    let token = value.split(|&b| b == b'.').next()?;
    let digits = token.strip_prefix(b"v")?;
    (!digits.is_empty() && digits.len() <= 8 && digits.iter().all(u8::is_ascii_digit))
        .then(|| String::from_utf8_lossy(token).into_owned())
}

fn malformed(reason: &'static str, key_id: Option<KeyId>) -> OpenError {
    OpenError::Malformed {
        reason,
        key_id: key_id.map(|id| id.as_str().to_owned()),
    }
}

fn new_nonce() -> Result<XNonce, SealError> {
    XNonce::try_generate().map_err(|e| SealError::Random(e.to_string()))
}

/// The associated data binding a ciphertext to its record, field and
/// status, and (the body) to the headers it was sealed with: `link` is
/// empty for the headers and the headers' nonce for the body.
fn aad(part: SealedPart, id: &RecordId, status: u16, link: &[u8]) -> Vec<u8> {
    let scope = id.scope.as_str().as_bytes();
    let key = id.key.as_str().as_bytes();
    let mut aad = Vec::with_capacity(
        AAD_CONTEXT.len() + 1 + 8 + scope.len() + 8 + key.len() + 2 + 8 + link.len(),
    );
    aad.extend_from_slice(AAD_CONTEXT);
    aad.push(part.label());
    for field in [scope, key] {
        aad.extend_from_slice(&(field.len() as u64).to_be_bytes());
        aad.extend_from_slice(field);
    }
    aad.extend_from_slice(&status.to_be_bytes());
    aad.extend_from_slice(&(link.len() as u64).to_be_bytes());
    aad.extend_from_slice(link);
    aad
}

/// Encrypts `buf` (a nonce, then the plaintext) in place and appends the
/// tag: `buf` becomes nonce || ciphertext || tag.
fn seal_in_place(
    key: &RingKey,
    part: SealedPart,
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), SealError> {
    let len = buf.len().saturating_sub(NONCE_LEN);
    let cipher_error = || SealError::Cipher { part, len };
    let (nonce, plain) = buf
        .split_at_mut_checked(NONCE_LEN)
        .ok_or_else(cipher_error)?;
    let nonce = XNonce::try_from(&*nonce).map_err(|_| cipher_error())?;
    let tag = key
        .cipher
        .encrypt_inout_detached(&nonce, aad, plain.into())
        .map_err(|_| cipher_error())?;
    buf.extend_from_slice(&tag);
    Ok(())
}

/// The plaintext of nonce || ciphertext || tag.
fn open_part(
    key: &RingKey,
    part: SealedPart,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, OpenError> {
    let too_short = || {
        malformed(
            match part {
                SealedPart::Headers => "the sealed headers are too short",
                SealedPart::Body => "the sealed body is too short",
            },
            Some(key.id),
        )
    };
    let (nonce, rest) = sealed.split_at_checked(NONCE_LEN).ok_or_else(too_short)?;
    let tag_at = rest.len().checked_sub(TAG_LEN).ok_or_else(too_short)?;
    let (ciphertext, tag) = rest.split_at_checked(tag_at).ok_or_else(too_short)?;
    let nonce = XNonce::try_from(nonce).map_err(|_| too_short())?;
    let tag = Tag::try_from(tag).map_err(|_| too_short())?;
    let mut plain = ciphertext.to_vec();
    key.cipher
        .decrypt_inout_detached(&nonce, aad, plain.as_mut_slice().into(), &tag)
        .map_err(|_| OpenError::Forged {
            part,
            key_id: key.id.as_str().to_owned(),
        })?;
    Ok(plain)
}

/// The inverse of the header encoding in [`KeyRing::seal`]. Values share
/// `plain`'s allocation.
fn decode_headers(plain: Bytes, key_id: KeyId) -> Result<Vec<(String, Bytes)>, OpenError> {
    fn take(plain: &Bytes, at: &mut usize, key_id: KeyId) -> Result<Bytes, OpenError> {
        let cut = || malformed("the sealed header list is cut short", Some(key_id));
        let start = at.checked_add(4).ok_or_else(cut)?;
        let len: [u8; 4] = plain
            .get(*at..start)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(cut)?;
        let len = usize::try_from(u32::from_be_bytes(len)).map_err(|_| cut())?;
        let end = start.checked_add(len).ok_or_else(cut)?;
        if end > plain.len() {
            return Err(cut());
        }
        *at = end;
        Ok(plain.slice(start..end))
    }
    let mut headers = Vec::new();
    let mut at = 0;
    while at < plain.len() {
        let name = take(&plain, &mut at, key_id)?;
        let value = take(&plain, &mut at, key_id)?;
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| malformed("a sealed header name is not UTF-8", Some(key_id)))?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// A [`Store`] that encrypts every stored response at rest: it seals the
/// response of each completion with its [`KeyRing`] before the inner engine
/// sees it, and opens the response of every record it reads. Works over any
/// engine (memory, SQLite, PostgreSQL, Redis), without a schema change.
///
/// # What is sealed, and how
///
/// The AEAD is XChaCha20-Poly1305 with a random 24-byte nonce per
/// ciphertext, from the operating system's RNG. A sealed
/// [`StoredResponse`] keeps its `status` in clear (engines and the sweeper
/// read it); everything else is ciphertext:
///
/// - `headers` become one header, [`SEALED_HEADER`], whose value is
///   `v1.<key id>.<base64url, no padding, of nonce || ciphertext || tag>`;
///   the plaintext is the header list encoded as, per header, a big-endian
///   `u32` name length, the name, a `u32` value length, the value;
/// - `body`, when `Some`, becomes the raw bytes nonce || ciphertext || tag;
///   `None` stays `None`, so engines still tell a not-replayable record
///   from a replayable one.
///
/// Each ciphertext's associated data binds it to its record and field:
/// `"idem-sealed-v1\0"`, a label byte (`h` for headers, `b` for the body),
/// the scope and the key (each as a big-endian `u64` length and the bytes),
/// the status as a big-endian `u16`, then a link (a `u64` length and the
/// bytes): empty for the headers, the headers' nonce for the body. A
/// ciphertext copied to another record or the other field, a changed
/// status, or a body paired with the headers of another seal fails to open.
///
/// Not sealed: what engines index and decide on, i.e. the scope, the key,
/// the request fingerprint (a hash), the state, the token, the timestamps
/// and the status. Nor are a body's length (to within the 40 bytes of nonce
/// and tag) and the header list's length hidden.
///
/// # What a reader gets
///
/// A response that fails to open (a key id the [`KeyRing`] does not hold, a
/// failed authentication, a malformed value) is never replayed as garbage
/// and never executed again: the record reads as
/// [`RecordState::OutcomeUnknown`] without a response, and a claim that
/// would have replayed it (or answered "not replayable") answers
/// [`ExistingOutcome::Unknown`] instead. Each such failure is logged at
/// error level with the record's scope, key and key id and the reason (never
/// any plaintext).
///
/// Turning encryption on does not rewrite old records: a response stored
/// without the [`SEALED_HEADER`] (written before the wrapper was in place)
/// is returned as it was stored, unless
/// [`require_sealed`](Self::require_sealed) is set.
///
/// Bodies of 64 KiB or more are sealed and opened on tokio's blocking pool
/// (when called inside a tokio runtime), so a large response does not hold
/// up the other tasks of a worker thread.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use bytes::Bytes;
/// use idem_core::decision::ExistingOutcome;
/// use idem_core::*;
/// use idem_store::{is_sealed, Claim, ClaimOutcome, Completion, KeyRing, MemoryStore, SealedStore, Store};
/// use std::sync::Arc;
///
/// let engine: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let keys = KeyRing::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", &[]).unwrap();
/// let store = SealedStore::new(engine.clone(), keys);
///
/// let id = RecordId { scope: Scope::from_stored("global"), key: IdempotencyKey::parse(b"k1").unwrap() };
/// let fp = Fingerprint::compute(&FingerprintInput {
///     method: "POST", path: "/", query: None, content_type: None, extra_headers: &[], body: b"",
/// });
/// let (now, retention) = (Timestamp(1_000), Retention::default());
/// let claim = Claim::new(id.clone(), fp, now, &retention, false);
/// let ClaimOutcome::Claimed { token } = store.claim(claim.clone()).await.unwrap() else { panic!() };
/// let response = StoredResponse {
///     status: 201,
///     headers: vec![("set-cookie".into(), Bytes::from("session=secret"))],
///     body: Some(Bytes::from("card 4242")),
/// };
/// let _ = store.complete(&id, token, Completion::new(response.clone(), now, &retention)).await.unwrap();
///
/// // The engine holds ciphertext only...
/// let stored = engine.get(&id).await.unwrap().unwrap().response.unwrap();
/// assert!(is_sealed(&stored));
/// assert_ne!(stored.body, response.body);
/// // ...and the wrapper replays the plaintext.
/// let ClaimOutcome::Existing { outcome, record } = store.claim(claim).await.unwrap() else { panic!() };
/// assert_eq!(outcome, ExistingOutcome::Replay);
/// assert_eq!(record.response, Some(response));
/// # });
/// ```
pub struct SealedStore {
    inner: Arc<dyn Store>,
    keys: Arc<KeyRing>,
    require_sealed: bool,
}

/// Bodies from this size on are sealed and opened on tokio's blocking pool
/// (when there is a runtime) rather than on the task's worker thread: at
/// about 1 GB/s a 10 MiB body would hold a worker for some 10 ms, while the
/// hop to the pool costs a few microseconds.
const OFFLOAD_AT: usize = 64 * 1024;

impl SealedStore {
    /// `inner`, with responses sealed under `keys`.
    pub fn new(inner: Arc<dyn Store>, keys: KeyRing) -> SealedStore {
        SealedStore {
            inner,
            keys: Arc::new(keys),
            require_sealed: false,
        }
    }

    /// With `true`, a stored response without the [`SEALED_HEADER`] that
    /// still has headers or a body (one written before encryption was
    /// turned on, or stripped of its seal) reads as outcome-unknown, like
    /// one that fails to open. Off by default; turn it on once every record
    /// from before encryption has expired. Tombstones (no headers, no body)
    /// are accepted either way.
    pub fn require_sealed(mut self, require: bool) -> SealedStore {
        self.require_sealed = require;
        self
    }

    /// The wrapped engine (it sees sealed responses only).
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// The keys.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Runs `work` with the keys: inline for small bodies, on the blocking
    /// pool for large ones.
    async fn with_keys<T, F>(
        &self,
        op: &'static str,
        body_len: usize,
        work: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&KeyRing) -> T + Send + 'static,
    {
        if body_len >= OFFLOAD_AT {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let keys = self.keys.clone();
                return runtime
                    .spawn_blocking(move || work(&keys))
                    .await
                    .map_err(|e| StoreError::new(self.inner.engine(), op, e));
            }
        }
        Ok(work(&self.keys))
    }

    /// Opens `record`'s response, or, when it cannot be opened, logs why
    /// and turns the record into outcome-unknown without a response.
    /// Returns the record and whether it could be opened.
    async fn open_or_unknown(
        &self,
        op: &'static str,
        id: &RecordId,
        mut record: Record,
    ) -> Result<(Record, bool), StoreError> {
        let Some(response) = record.response.take() else {
            return Ok((record, true));
        };
        let opened = if is_sealed(&response) {
            let body_len = response.body.as_ref().map_or(0, Bytes::len);
            let id = id.clone();
            self.with_keys(op, body_len, move |keys| keys.open(&id, &response))
                .await?
        } else if self.require_sealed && (!response.headers.is_empty() || response.body.is_some()) {
            Err(OpenError::NotSealed)
        } else {
            Ok(response)
        };
        match opened {
            Ok(response) => {
                record.response = Some(response);
                Ok((record, true))
            }
            Err(error) => {
                tracing::error!(
                    engine = self.inner.engine(),
                    operation = op,
                    scope = id.scope.as_str(),
                    key = %id.key,
                    key_id = error.key_id().unwrap_or("-"),
                    reason = %error,
                    "a stored response could not be opened; it is answered as outcome-unknown, \
                     never replayed nor executed again"
                );
                record.state = RecordState::OutcomeUnknown;
                Ok((record, false))
            }
        }
    }
}

impl fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedStore")
            .field("engine", &self.inner.engine())
            .field("keys", &self.keys)
            .field("require_sealed", &self.require_sealed)
            .finish()
    }
}

#[async_trait::async_trait]
impl Store for SealedStore {
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        let id = claim.id.clone();
        match self.inner.claim(claim).await? {
            ClaimOutcome::Existing {
                mut outcome,
                record,
            } => {
                let (record, opened) = self.open_or_unknown("claim", &id, *record).await?;
                if !opened
                    && matches!(
                        outcome,
                        ExistingOutcome::Replay | ExistingOutcome::NotReplayable { .. }
                    )
                {
                    outcome = ExistingOutcome::Unknown;
                }
                Ok(ClaimOutcome::Existing {
                    outcome,
                    record: Box::new(record),
                })
            }
            claimed @ ClaimOutcome::Claimed { .. } => Ok(claimed),
        }
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Write, StoreError> {
        self.inner.renew(id, token, now, lease_until).await
    }

    async fn complete(
        &self,
        id: &RecordId,
        token: u64,
        mut completion: Completion,
    ) -> Result<Write, StoreError> {
        let placeholder = StoredResponse {
            status: completion.response.status,
            headers: Vec::new(),
            body: None,
        };
        let plain = std::mem::replace(&mut completion.response, placeholder);
        let body_len = plain.body.as_ref().map_or(0, Bytes::len);
        let rid = id.clone();
        completion.response = self
            .with_keys("complete", body_len, move |keys| keys.seal(&rid, &plain))
            .await?
            .map_err(|e| StoreError::new(self.inner.engine(), "complete", e))?;
        self.inner.complete(id, token, completion).await
    }

    async fn mark_unknown(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
    ) -> Result<Write, StoreError> {
        self.inner.mark_unknown(id, token, now).await
    }

    async fn release(&self, id: &RecordId, token: u64) -> Result<Write, StoreError> {
        self.inner.release(id, token).await
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let Some(record) = self.inner.get(id).await? else {
            return Ok(None);
        };
        let (record, _) = self.open_or_unknown("get", id, record).await?;
        Ok(Some(record))
    }

    async fn sweep(&self, now: Timestamp, limit: usize) -> Result<SweepReport, StoreError> {
        self.inner.sweep(now, limit).await
    }

    /// A resolution is stored sealed, exactly as a completion is: the
    /// operator's response is what retries replay, so it is as secret as
    /// the upstream's. The record written comes back opened.
    async fn operate(
        &self,
        id: &RecordId,
        token: u64,
        mut action: OperatorAction,
        now: Timestamp,
    ) -> Result<Result<Operated, OperatorRefusal>, StoreError> {
        if let OperatorAction::Resolve { response, .. } = &mut action {
            let placeholder = StoredResponse {
                status: response.status,
                headers: Vec::new(),
                body: None,
            };
            let plain = std::mem::replace(response, placeholder);
            let body_len = plain.body.as_ref().map_or(0, Bytes::len);
            let rid = id.clone();
            *response = self
                .with_keys("operate", body_len, move |keys| keys.seal(&rid, &plain))
                .await?
                .map_err(|e| StoreError::new(self.inner.engine(), "operate", e))?;
        }
        match self.inner.operate(id, token, action, now).await? {
            Ok(Operated { record, mut state }) => {
                let (record, opened) = self.open_or_unknown("operate", id, record).await?;
                // Only a completed record has a response to open; one that
                // cannot be opened is answered as outcome-unknown.
                if !opened && state == EffectiveState::Completed {
                    state = EffectiveState::OutcomeUnknown;
                }
                Ok(Ok(Operated { record, state }))
            }
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    /// Listed records wait for an outcome and carry no response; any that
    /// does is opened like a `get`.
    async fn list(&self, query: ListQuery) -> Result<Vec<Record>, StoreError> {
        let mut opened = Vec::new();
        for record in self.inner.list(query).await? {
            let id = record.id.clone();
            opened.push(self.open_or_unknown("list", &id, record).await?.0);
        }
        Ok(opened)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn changed(&self, id: &RecordId, timeout: std::time::Duration) {
        self.inner.changed(id, timeout).await
    }

    fn engine(&self) -> &'static str {
        self.inner.engine()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idem_core::{IdempotencyKey, Scope};

    fn id(scope: &str, key: &str) -> RecordId {
        RecordId {
            scope: Scope::from_stored(scope),
            key: IdempotencyKey::parse(key.as_bytes()).expect("valid key"),
        }
    }

    fn response() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![
                (
                    "content-type".into(),
                    Bytes::from_static(b"application/json"),
                ),
                ("x-bin".into(), Bytes::from_static(b"\x00\xff")),
                ("x-empty".into(), Bytes::new()),
            ],
            body: Some(Bytes::from_static(b"{\"id\":1}")),
        }
    }

    #[test]
    fn key_id_is_the_documented_hash() {
        let key = [0u8; 32];
        let mut h = Sha256::new();
        h.update(b"idem-key-id-v1\0");
        h.update(key);
        let expected = hex::encode(&h.finalize()[..4]);
        assert_eq!(KeyRing::new(key).current_key_id(), expected);
    }

    #[test]
    fn seal_then_open_round_trips() {
        let ring = KeyRing::new([1; 32]);
        let rid = id("s", "k");
        let resp = response();
        let sealed = ring.seal(&rid, &resp).unwrap();
        assert_eq!(sealed.status, 201);
        assert_eq!(sealed.headers.len(), 1);
        let value = std::str::from_utf8(&sealed.headers[0].1).unwrap();
        assert!(
            value.starts_with(&format!("v1.{}.", ring.current_key_id())),
            "{value}"
        );
        assert_eq!(sealed.body.as_ref().unwrap().len(), 24 + 8 + 16);
        assert_eq!(ring.open(&rid, &sealed).unwrap(), resp);
        // Two seals of the same response differ (fresh nonces).
        assert_ne!(ring.seal(&rid, &resp).unwrap(), sealed);
    }

    #[test]
    fn empty_headers_and_empty_body_round_trip() {
        let ring = KeyRing::new([1; 32]);
        let rid = id("s", "k");
        for body in [None, Some(Bytes::new())] {
            let resp = StoredResponse {
                status: 204,
                headers: vec![],
                body,
            };
            let sealed = ring.seal(&rid, &resp).unwrap();
            assert!(is_sealed(&sealed));
            assert_eq!(ring.open(&rid, &sealed).unwrap(), resp);
        }
    }

    #[test]
    fn garbage_never_panics_and_is_an_error() {
        let ring = KeyRing::new([1; 32]);
        let rid = id("s", "k");
        let kid = ring.current_key_id().to_owned();
        let values: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"v1".to_vec(),
            b"v1.".to_vec(),
            b"v1.zzzzzzzz.AAAA".to_vec(),
            format!("v1.{kid}").into_bytes(),
            format!("v1.{kid}.").into_bytes(),
            format!("v1.{kid}.!!!").into_bytes(),
            format!("v1.{kid}.AAAA").into_bytes(),
            format!("v1.{}.{}", kid, "A".repeat(54)).into_bytes(),
            b"v2.00000000.AAAA".to_vec(),
            vec![0xff; 40],
        ];
        for value in values {
            let resp = StoredResponse {
                status: 200,
                headers: vec![(SEALED_HEADER.into(), Bytes::from(value.clone()))],
                body: Some(Bytes::from_static(b"short")),
            };
            assert!(ring.open(&rid, &resp).is_err(), "{value:?}");
        }
        let v2 = StoredResponse {
            status: 200,
            headers: vec![(SEALED_HEADER.into(), Bytes::from_static(b"v2.x"))],
            body: None,
        };
        assert_eq!(
            ring.open(&rid, &v2),
            Err(OpenError::UnsupportedVersion {
                version: "v2".into()
            })
        );
    }

    #[test]
    fn header_list_decoding_rejects_cut_lists() {
        let kid = KeyId::of(&[0; 32]);
        assert!(decode_headers(Bytes::from_static(b"\x00\x00"), kid).is_err());
        assert!(decode_headers(Bytes::from_static(b"\x00\x00\x00\x05ab"), kid).is_err());
        assert!(decode_headers(Bytes::from_static(b"\xff\xff\xff\xff"), kid).is_err());
        assert!(decode_headers(Bytes::from_static(b"\x00\x00\x00\x01a"), kid).is_err());
        assert!(decode_headers(
            Bytes::from_static(b"\x00\x00\x00\x01\xff\x00\x00\x00\x00"),
            kid
        )
        .is_err());
        assert_eq!(
            decode_headers(
                Bytes::from_static(b"\x00\x00\x00\x01a\x00\x00\x00\x00"),
                kid
            )
            .unwrap(),
            vec![("a".to_owned(), Bytes::new())]
        );
    }
}
