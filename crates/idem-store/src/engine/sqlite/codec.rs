//! How a [`Record`] maps to a row: the column list, the header encoding and
//! the checks that turn a damaged row into an error instead of a wrong
//! answer.

pub(super) use crate::engine::codec::attempt_to_sql;
use crate::engine::codec::{self, attempt_from_sql};
use bytes::Bytes;
use idem_core::{
    Fingerprint, IdempotencyKey, Record, RecordId, RecordState, StoredResponse, Timestamp,
};
use rusqlite::Row;
use std::fmt;

/// The columns [`read_record`] expects, in order (a macro so queries can
/// be `concat!`ed at compile time).
macro_rules! record_columns {
    () => {
        "state, token, fp_version, fp_digest, lease_until, expires_at, \
         tombstone_until, claimed_at, has_response, status, headers, body, attempt, holder"
    };
}

/// [`record_columns!`] with the body reduced to whether there is one, for
/// [`Body::PresenceOnly`].
macro_rules! sweep_columns {
    () => {
        "state, token, fp_version, fp_digest, lease_until, expires_at, \
         tombstone_until, claimed_at, has_response, status, headers, body IS NOT NULL, attempt, holder"
    };
}

/// What the writer's claim reads: [`sweep_columns!`], with the headers only
/// when there is no body, and then (columns 14 and 15) the payload as it is
/// stored when it is small (16 KiB at most, headers and body). A claim
/// decides on the small columns; a small payload is decoded only for a
/// replay and comes back with the decision, so most replays cost the
/// writer one row read. A larger payload is read afterwards by a reader
/// (see `sqlite.rs`), so it never passes through the writer thread.
/// `length()` of a blob reads the row's header, not the blob. Headers
/// beside no body (a not-replayable response) are small and kept, so that
/// record comes back whole.
macro_rules! claim_columns {
    () => {
        "state, token, fp_version, fp_digest, lease_until, expires_at, \
         tombstone_until, claimed_at, has_response, status, \
         CASE WHEN body IS NULL THEN headers END, body IS NOT NULL, attempt, holder, \
         CASE WHEN length(body) + ifnull(length(headers), 0) <= 16384 THEN body END, \
         CASE WHEN length(body) + ifnull(length(headers), 0) <= 16384 THEN headers END"
    };
}

/// A row this build cannot turn back into a record.
#[derive(Debug)]
pub(super) struct Corrupt(pub(super) String);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "damaged record in the database: {}", self.0)
    }
}

impl std::error::Error for Corrupt {}

/// The shared header encoding ([`codec::encode_headers`]); an empty list
/// is `None` (stored as NULL), which keeps tombstones out of the sweep's
/// "has a payload" index.
pub(super) fn encode_headers(headers: &[(String, Bytes)]) -> Result<Option<Vec<u8>>, Corrupt> {
    let encoded = codec::encode_headers(headers).map_err(Corrupt)?;
    Ok((!encoded.is_empty()).then_some(encoded))
}

/// The inverse of [`encode_headers`]. Values share `encoded`'s allocation.
pub(super) fn decode_headers(encoded: Option<Vec<u8>>) -> Result<Vec<(String, Bytes)>, Corrupt> {
    encoded.map_or(Ok(Vec::new()), |e| {
        codec::decode_headers(e).map_err(Corrupt)
    })
}

/// A key from its stored form ([`codec::key_from_stored`]).
pub(super) fn key_from_stored(stored: &str) -> Result<IdempotencyKey, Corrupt> {
    codec::key_from_stored(stored).map_err(Corrupt)
}

/// A token as SQLite stores it (a signed 64-bit integer).
pub(super) fn token_to_sql(token: u64) -> Result<i64, Corrupt> {
    i64::try_from(token).map_err(|_| {
        Corrupt(format!(
            "fencing token {token} does not fit a SQLite integer"
        ))
    })
}

/// How much of a record to read: everything, or everything but the body
/// (the sweep and the claim only need to know whether there is one).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    Load,
    /// The body column was selected as `body IS NOT NULL` (by
    /// [`sweep_columns!`] or [`claim_columns!`]); a present body is
    /// represented by an empty placeholder that must never be written back
    /// nor replayed.
    PresenceOnly,
}

/// Reads a record from a row selected with [`record_columns!`] starting at
/// column `first`.
pub(super) fn read_record(
    row: &Row<'_>,
    first: usize,
    id: RecordId,
    body: Body,
) -> Result<Record, RowError> {
    let c = |i: usize| first + i;
    let code: i64 = row.get(c(0))?;
    let state = RecordState::from_code(code)
        .ok_or_else(|| Corrupt(format!("unknown state code {code}")))?;
    let token: i64 = row.get(c(1))?;
    let token =
        u64::try_from(token).map_err(|_| Corrupt(format!("negative fencing token {token}")))?;
    let version: i64 = row.get(c(2))?;
    let version =
        u16::try_from(version).map_err(|_| Corrupt(format!("fingerprint version {version}")))?;
    let digest: Vec<u8> = row.get(c(3))?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|d: Vec<u8>| Corrupt(format!("fingerprint digest of {} bytes", d.len())))?;
    let response = if row.get::<_, bool>(c(8))? {
        let status: i64 = row.get(c(9))?;
        let status =
            u16::try_from(status).map_err(|_| Corrupt(format!("response status {status}")))?;
        let headers = decode_headers(row.get(c(10))?)?;
        let body = match body {
            Body::Load => row.get::<_, Option<Vec<u8>>>(c(11))?.map(Bytes::from),
            Body::PresenceOnly => row.get::<_, bool>(c(11))?.then(Bytes::new),
        };
        Some(StoredResponse {
            status,
            headers,
            body,
        })
    } else {
        None
    };
    Ok(Record {
        id,
        fingerprint: Fingerprint { version, digest },
        state,
        token,
        lease_until: Timestamp(row.get(c(4))?),
        expires_at: Timestamp(row.get(c(5))?),
        tombstone_until: Timestamp(row.get(c(6))?),
        claimed_at: Timestamp(row.get(c(7))?),
        response,
        attempt: attempt_from_sql(row.get(c(12))?),
        holder: row.get::<_, Option<String>>(c(13))?.map(Into::into),
    })
}

/// Reading or writing a row failed: SQLite failed, or the row is damaged.
#[derive(Debug)]
pub(super) enum RowError {
    Sqlite(rusqlite::Error),
    Corrupt(Corrupt),
}

impl From<rusqlite::Error> for RowError {
    fn from(e: rusqlite::Error) -> Self {
        RowError::Sqlite(e)
    }
}

impl From<Corrupt> for RowError {
    fn from(e: Corrupt) -> Self {
        RowError::Corrupt(e)
    }
}

impl From<RowError> for rusqlite::Error {
    /// Lets a damaged row travel through rusqlite's row-mapping closures.
    fn from(e: RowError) -> Self {
        match e {
            RowError::Sqlite(e) => e,
            RowError::Corrupt(c) => rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Null,
                Box::new(c),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so failures reproduce.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, max: usize) -> Vec<u8> {
            let len = (self.next() as usize) % (max + 1);
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn headers_round_trip_arbitrary_bytes() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..2_000 {
            let count = (rng.next() % 8) as usize;
            let headers: Vec<(String, Bytes)> = (0..count)
                .map(|_| {
                    let name = String::from_utf8_lossy(&rng.bytes(12)).into_owned();
                    (name, Bytes::from(rng.bytes(40)))
                })
                .collect();
            let encoded = encode_headers(&headers).unwrap();
            assert_eq!(encoded.is_none(), headers.is_empty());
            assert_eq!(decode_headers(encoded).unwrap(), headers);
        }
    }

    #[test]
    fn headers_keep_order_duplicates_and_empty_parts() {
        let headers = vec![
            ("x-a".to_owned(), Bytes::from_static(b"\x00\xff\r\n")),
            (String::new(), Bytes::new()),
            ("x-a".to_owned(), Bytes::from_static(b"2")),
        ];
        assert_eq!(
            decode_headers(encode_headers(&headers).unwrap()).unwrap(),
            headers
        );
    }

    #[test]
    fn damaged_header_encodings_are_errors_not_panics() {
        let good = encode_headers(&[("name".into(), Bytes::from_static(b"value"))])
            .unwrap()
            .unwrap();
        for cut in 0..good.len() {
            let r = decode_headers(Some(good[..cut].to_vec()));
            // Cutting exactly after a whole header (only the full length
            // here) would be valid; every shorter prefix is not.
            assert!(r.is_err(), "prefix of {cut} bytes decoded: {r:?}");
        }
        let mut wrong_version = good.clone();
        wrong_version[0] = 9;
        assert!(decode_headers(Some(wrong_version)).is_err());
        let mut huge_len = good.clone();
        huge_len[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_headers(Some(huge_len)).is_err());
        let mut bad_name = good;
        bad_name[5] = 0xff;
        assert!(decode_headers(Some(bad_name)).is_err());
    }

    #[test]
    fn stored_keys_come_back_even_with_quotes_and_backslashes() {
        for raw in [
            &b"plain"[..],
            br#""\"x""#,
            br#"a"b"#,
            br"\",
            br#""\"\"""#,
            br#""\\""#,
            br#"x\"#,
        ] {
            let key = IdempotencyKey::parse(raw).unwrap();
            assert_eq!(key_from_stored(key.as_str()).unwrap(), key, "{raw:?}");
        }
        let longest = "\"".repeat(255);
        assert_eq!(key_from_stored(&longest).unwrap().as_str(), longest);
    }
}
