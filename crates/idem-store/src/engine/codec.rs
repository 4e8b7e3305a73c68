//! What the persistent engines store the same way: the header encoding
//! (SQLite's column, Redis's hash field), the stored form of a key, the
//! attempt nonce as a signed integer, and the stable hash that names Redis
//! shards and PostgreSQL announcements.
//!
//! Every format here is on disk or in Redis already: changing one makes
//! existing records unreadable. Errors are the damage found, in words; each
//! engine wraps them in its own error type.

#[cfg(any(feature = "sqlite", feature = "redis"))]
use bytes::Bytes;
use idem_core::IdempotencyKey;
#[cfg(any(feature = "postgres", feature = "redis"))]
use std::hash::Hasher;

/// The first byte of an encoded header list: the format's version.
#[cfg(any(feature = "sqlite", feature = "redis"))]
const HEADERS_V1: u8 = 1;

/// Encodes headers as: a version byte, then per header a big-endian `u32`
/// name length, the name, a `u32` value length, the value. Values are
/// arbitrary bytes. An empty list is the empty vector: the engines store it
/// as no value at all (SQLite's NULL, which keeps tombstones out of the
/// sweep's "has a payload" index; no Redis field).
#[cfg(any(feature = "sqlite", feature = "redis"))]
pub(crate) fn encode_headers(headers: &[(String, Bytes)]) -> Result<Vec<u8>, String> {
    if headers.is_empty() {
        return Ok(Vec::new());
    }
    let size = 1 + headers
        .iter()
        .map(|(n, v)| 8 + n.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(HEADERS_V1);
    for (name, value) in headers {
        for part in [name.as_bytes(), &value[..]] {
            let len = u32::try_from(part.len())
                .map_err(|_| format!("a header part of {} bytes is over 4 GiB", part.len()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    Ok(out)
}

/// The inverse of [`encode_headers`] for a stored (so non-empty) encoding;
/// values share `encoded`'s allocation.
#[cfg(any(feature = "sqlite", feature = "redis"))]
pub(crate) fn decode_headers(encoded: Vec<u8>) -> Result<Vec<(String, Bytes)>, String> {
    let buf = Bytes::from(encoded);
    match buf.first() {
        Some(&HEADERS_V1) => {}
        Some(v) => return Err(format!("unknown header encoding version {v}")),
        None => return Err("empty header encoding".into()),
    }
    if buf.len() == 1 {
        // No headers is no value, never an empty list: SQLite's sweep
        // index relies on it.
        return Err("an encoded header list without headers".into());
    }
    let mut at = 1;
    let take = |at: &mut usize| -> Result<Bytes, String> {
        let len_end = at
            .checked_add(4)
            .filter(|&e| e <= buf.len())
            .ok_or("truncated header length")?;
        let len = u32::from_be_bytes(buf[*at..len_end].try_into().expect("4 bytes")) as usize;
        let end = len_end
            .checked_add(len)
            .filter(|&e| e <= buf.len())
            .ok_or("truncated header bytes")?;
        *at = end;
        Ok(buf.slice(len_end..end))
    };
    let mut headers = Vec::new();
    while at < buf.len() {
        let name = take(&mut at)?;
        let value = take(&mut at)?;
        let name = std::str::from_utf8(&name)
            .map_err(|_| "a header name is not UTF-8")?
            .to_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// A key from its stored form. Keys are stored unquoted, and a key may
/// itself start with `"`, so it is re-quoted as a structured-field string
/// before going through the one parser.
pub(crate) fn key_from_stored(stored: &str) -> Result<IdempotencyKey, String> {
    let mut quoted = String::with_capacity(stored.len() + 2);
    quoted.push('"');
    for c in stored.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    IdempotencyKey::parse(quoted.as_bytes()).map_err(|e| format!("stored key {stored:?}: {e}"))
}

/// An attempt nonce as the SQL engines store it: the same 64 bits, as a
/// signed integer.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn attempt_to_sql(attempt: u64) -> i64 {
    i64::from_be_bytes(attempt.to_be_bytes())
}

/// The inverse of [`attempt_to_sql`].
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn attempt_from_sql(stored: i64) -> u64 {
    u64::from_be_bytes(stored.to_be_bytes())
}

/// A 64-bit FNV-1a hash, the same in every process and build: it names
/// stored things (Redis shards, PostgreSQL announcements), so it must never
/// change.
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) struct StableHash(fnv::FnvHasher);

#[cfg(any(feature = "postgres", feature = "redis"))]
impl StableHash {
    pub(crate) fn new() -> Self {
        StableHash(fnv::FnvHasher::default())
    }

    /// Adds `bytes` after their length (a little-endian `u64`), so that
    /// where one part ends and the next begins is part of the hash.
    pub(crate) fn part(mut self, bytes: &[u8]) -> Self {
        // Explicit bytes: `Hasher::write_u64` would hash native-endian ones.
        self.0.write(&(bytes.len() as u64).to_le_bytes());
        self.0.write(bytes);
        self
    }

    /// Adds `bytes` as they are (the last part of a hash needs no length).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn tail(mut self, bytes: &[u8]) -> Self {
        self.0.write(bytes);
        self
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written FNV-1a the engines used before the `fnv` crate:
    /// stored names were made with it.
    #[cfg(any(feature = "postgres", feature = "redis"))]
    fn fnv1a_as_before(bytes: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    #[cfg(any(feature = "postgres", feature = "redis"))]
    #[test]
    fn the_stable_hash_is_the_one_stored_names_were_made_with() {
        let len = |s: &str| (s.len() as u64).to_le_bytes();
        for (a, b, c) in [("", "", ""), ("app", "global", "k1"), ("x", "s:é", "\"q\"")] {
            let mut before = Vec::new();
            for part in [a, b, c] {
                before.extend_from_slice(&len(part));
                before.extend_from_slice(part.as_bytes());
            }
            let parts = StableHash::new()
                .part(a.as_bytes())
                .part(b.as_bytes())
                .part(c.as_bytes());
            assert_eq!(parts.finish(), fnv1a_as_before(&before));
            let tail = StableHash::new().part(b.as_bytes()).tail(c.as_bytes());
            let mut before = len(b).to_vec();
            before.extend_from_slice(b.as_bytes());
            before.extend_from_slice(c.as_bytes());
            assert_eq!(tail.finish(), fnv1a_as_before(&before));
        }
        // Fixed values: a change here renames every stored thing.
        assert_eq!(
            StableHash::new().part(b"global").tail(b"k1").finish(),
            0x5554_f881_56ee_89e8
        );
        assert_eq!(
            StableHash::new()
                .part(b"")
                .part(b"global")
                .part(b"k1")
                .finish(),
            0x2e9a_541e_9139_9bb6
        );
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[test]
    fn attempts_keep_all_64_bits() {
        for a in [0, 1, u64::MAX, 1 << 63, 12_345] {
            assert_eq!(attempt_from_sql(attempt_to_sql(a)), a);
        }
    }
}
