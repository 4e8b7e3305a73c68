//! How a [`Record`] maps to a row of `idem_records`, and the SQL that reads
//! and writes one.

pub(super) use crate::engine::codec::attempt_to_sql;
use crate::engine::codec::{self, attempt_from_sql};
use bytes::Bytes;
use idem_core::{
    Fingerprint, IdempotencyKey, Record, RecordId, RecordState, StoredResponse, Timestamp,
};
use std::fmt;
use std::sync::Arc;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The columns [`read_record`] expects, in order.
macro_rules! record_columns {
    () => {
        "state, token, fp_version, fp_digest, lease_until, expires_at, \
         tombstone_until, claimed_at, has_response, status, header_names, header_values, body, \
         attempt, holder"
    };
}

/// How many columns [`record_columns!`] names: in [`SELECT_AT`] and
/// [`SELECT_FOR_UPDATE_AT`] the store's clock is the column after them.
pub(super) const COLUMNS: usize = 15;

/// The store's clock, in milliseconds since the epoch, as one SQL
/// expression: the server's `clock_timestamp()`, unless parameter `$p` is
/// not NULL (the callers' reading, with [`crate::StoreClock::Caller`]).
macro_rules! store_now {
    ($p:literal) => {
        concat!(
            "COALESCE(",
            $p,
            "::bigint, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
        )
    };
}

/// [`store_now!`] as a one-row relation `c(n)`, for the `FROM` of a write:
/// evaluated once per statement.
macro_rules! store_clock {
    ($p:literal) => {
        concat!("(SELECT ", store_now!($p), " AS n) AS c")
    };
}

/// [`record_columns!`] with the body reduced to whether there is one, for
/// [`Body::PresenceOnly`] (a sweep never moves response bodies around).
macro_rules! sweep_columns {
    () => {
        "state, token, fp_version, fp_digest, lease_until, expires_at, \
         tombstone_until, claimed_at, has_response, status, header_names, header_values, \
         body IS NOT NULL, attempt, holder"
    };
}

pub(super) const SELECT: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM idem_records WHERE scope = $1 AND key = $2"
);

/// [`SELECT`] for a claim: the record, then the store's clock read in the
/// same statement (`$3`: see [`store_now!`]).
pub(super) const SELECT_AT: &str = concat!(
    "SELECT ",
    record_columns!(),
    ", ",
    store_now!("$3"),
    " FROM idem_records WHERE scope = $1 AND key = $2"
);

/// [`SELECT_AT`] under the row lock. The clock may be read before a wait
/// for the lock (bounded by `lock_timeout`): the decision's `now` can only
/// be a little early, which errs towards "still live", never late.
pub(super) const SELECT_FOR_UPDATE_AT: &str = concat!(
    "SELECT ",
    record_columns!(),
    ", ",
    store_now!("$3"),
    " FROM idem_records WHERE scope = $1 AND key = $2 FOR UPDATE"
);

/// The claim of an absent key: one statement, no check-then-act. A row
/// that already exists is left alone (and reported by no row returned).
/// It is the record `Claim::to_record(first_token(now))` writes, with `now`
/// the store's clock ([`store_clock!`], `$9`) and the horizons the
/// caller's distances from its own reading (`$5`..`$7`); the token is
/// `first_token` in SQL, returned.
pub(super) const INSERT_IF_ABSENT: &str = concat!(
    "INSERT INTO idem_records (scope, key, state, token, fp_version, fp_digest, lease_until, \
     expires_at, tombstone_until, claimed_at, has_response, attempt, holder) \
     SELECT $1::text, $2::text, 1, GREATEST(LEAST(GREATEST(c.n, 0), 9223372036854775) * 1000, 1), \
     $3::integer, $4::bytea, c.n + $5::bigint, c.n + $6::bigint, c.n + $7::bigint, c.n, false, \
     $8::bigint, $10::text FROM ",
    store_clock!("$9"),
    " ON CONFLICT (scope, key) DO NOTHING RETURNING token"
);

/// Rewrites a locked row with the record [`crate::engine::apply_claim`]
/// produced. A new claim (a larger token) clears the waiters' mark; the
/// same claim again (its own attempt: the same token) keeps it.
pub(super) const OVERWRITE: &str = "UPDATE idem_records SET state = $3, token = $4, \
     fp_version = $5, fp_digest = $6, lease_until = $7, expires_at = $8, tombstone_until = $9, \
     claimed_at = $10, has_response = $11, status = $12, header_names = $13, \
     header_values = $14, body = $15, attempt = $16, holder = $17, waiters = (waiters AND token = $4) \
     WHERE scope = $1 AND key = $2";

/// An operator's write ([`crate::Store::operate`]) of the record
/// [`idem_core::operator::decide_operator`] returned, over the row locked
/// by [`SELECT_FOR_UPDATE_AT`]: every column, as [`OVERWRITE`]. The action
/// finishes the claim as far as waiters are concerned, so they are
/// announced (`$18`) when the row was marked before the write (`old` reads
/// the statement's snapshot, before the update). Returns (rows updated,
/// notifications sent).
pub(super) const OPERATOR_WRITE: &str =
    "WITH old AS (SELECT waiters FROM idem_records WHERE scope = $1 AND key = $2), \
     w AS (UPDATE idem_records SET state = $3, token = $4, \
     fp_version = $5, fp_digest = $6, lease_until = $7, expires_at = $8, tombstone_until = $9, \
     claimed_at = $10, has_response = $11, status = $12, header_names = $13, \
     header_values = $14, body = $15, attempt = $16, holder = $17, waiters = (waiters AND token = $4) \
     WHERE scope = $1 AND key = $2 RETURNING 1), \
     n AS (SELECT pg_notify('idem_changed', $18) FROM old WHERE waiters) \
     SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM n)";

/// One page of records that may wait for an outcome (in flight or marked
/// outcome-unknown: state 1 or 3), strictly after the cursor (`$1`..`$3`,
/// all NULL for the first page), in the listing order (claim time, then
/// scope and key bytewise), at most `$4`; the index of schema version 4
/// serves it. Which of them hold the state asked for is decided in Rust
/// (`Unsettled::holds`) at the store's clock.
pub(super) const LIST_PAGE: &str = concat!(
    "SELECT scope, key, ",
    record_columns!(),
    " FROM idem_records WHERE state IN (1, 3) AND ($1::bigint IS NULL OR \
     (claimed_at, scope COLLATE \"C\", key COLLATE \"C\") > \
     ($1::bigint, $2::text COLLATE \"C\", $3::text COLLATE \"C\")) \
     ORDER BY claimed_at, scope COLLATE \"C\", key COLLATE \"C\" LIMIT $4"
);

/// A batch of claims ([`super::batch`]) in one statement: each row of the
/// arrays `$1`..`$10` (scope, key, fingerprint version and digest, the
/// distances of lease, retention and tombstone from the caller's reading,
/// attempt, holder, clock parameter; one row per record, sorted) is
/// inserted as [`INSERT_IF_ABSENT`] inserts one, in the order sent (so two
/// batches never wait on each other's rows in opposite orders). Returns,
/// per row in order: its position (from 1), the token when it was
/// inserted, else the stored record ([`record_columns!`], all NULL when
/// the statement's snapshot has none: it was inserted concurrently) and
/// the store's clock that row was decided at.
pub(super) const CLAIM_MANY: &str = concat!(
    "WITH b AS MATERIALIZED (SELECT u.*, ",
    store_now!("u.bclk"),
    " AS n FROM unnest($1::text[], $2::text[], $3::integer[], $4::bytea[], $5::bigint[], \
     $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::bigint[]) WITH ORDINALITY \
     AS u(bs, bk, bfpv, bfpd, blease, bexp, btomb, batt, bholder, bclk, bi)), \
     ins AS (INSERT INTO idem_records (scope, key, state, token, fp_version, fp_digest, \
     lease_until, expires_at, tombstone_until, claimed_at, has_response, attempt, holder) \
     SELECT bs, bk, 1, GREATEST(LEAST(GREATEST(n, 0), 9223372036854775) * 1000, 1), bfpv, bfpd, \
     n + blease, n + bexp, n + btomb, n, false, batt, bholder FROM b ORDER BY bi \
     ON CONFLICT (scope, key) DO NOTHING RETURNING scope AS s, key AS k, token AS t) \
     SELECT b.bi, ins.t, r.*, b.n FROM b LEFT JOIN ins ON ins.s = b.bs AND ins.k = b.bk \
     LEFT JOIN LATERAL (SELECT ",
    record_columns!(),
    " FROM idem_records WHERE scope = b.bs AND key = b.bk) r ON ins.t IS NULL ORDER BY b.bi"
);

/// A batch of completions ([`super::batch`]) in one statement: each row of
/// `$1`..`$11` (scope, key, token, status, where its headers start in
/// `$12`/`$13` and how many, body, the distances of retention and
/// tombstone from the caller's reading, announcement, clock parameter; one
/// row per record) is written as [`COMPLETE`] writes one, and announced
/// the same way. Returns the position (from 1) of each row written.
pub(super) const COMPLETE_MANY: &str = concat!(
    "WITH b AS MATERIALIZED (SELECT u.*, ",
    store_now!("u.bclk"),
    " AS n FROM unnest($1::text[], $2::text[], $3::bigint[], $4::integer[], $5::integer[], \
     $6::integer[], $7::bytea[], $8::bigint[], $9::bigint[], $10::text[], $11::bigint[]) \
     WITH ORDINALITY AS u(bs, bk, btok, bstatus, bhfrom, bhlen, bbody, bexp, btomb, bann, bclk, bi)), \
     w AS (UPDATE idem_records AS r SET state = 2, has_response = true, status = b.bstatus, \
     header_names = CASE WHEN b.bhlen = 0 THEN NULL \
     ELSE ($12::bytea[])[b.bhfrom + 1 : b.bhfrom + b.bhlen] END, \
     header_values = CASE WHEN b.bhlen = 0 THEN NULL \
     ELSE ($13::bytea[])[b.bhfrom + 1 : b.bhfrom + b.bhlen] END, \
     body = b.bbody, expires_at = b.n + b.bexp, tombstone_until = b.n + b.btomb FROM b \
     WHERE r.scope = b.bs AND r.key = b.bk AND r.token = b.btok AND r.state = 1 \
     RETURNING b.bi AS i, r.waiters AS waiters, b.bann AS ann), \
     n AS (SELECT pg_notify('idem_changed', ann) FROM w WHERE waiters) \
     SELECT w.i, (SELECT count(*) FROM n) FROM w"
);

/// The store's clock alone (`$1`: see [`store_now!`]), for a sweep.
pub(super) const NOW: &str = concat!("SELECT ", store_now!("$1"));

/// The owner's writes. Each is one conditional UPDATE whose WHERE clause is
/// exactly [`idem_core::decision::owner_may_write`] (same token, still in
/// flight: state code 1), and whose SET is exactly the matching helper of
/// [`crate::engine`] (`apply_renew`, `apply_complete`, `apply_unknown`,
/// `apply_release`). One row updated is `Written`, none is `Fenced`.
///
/// Times are the store's: the new lease is the store's clock ([`store_clock!`],
/// `$5`) plus the caller's distance from its own reading to the lease it
/// asked for (`$4`).
pub(super) const RENEW: &str = concat!(
    "UPDATE idem_records SET lease_until = GREATEST(lease_until, c.n + $4::bigint), \
     expires_at = expires_at + GREATEST(0, c.n + $4::bigint - lease_until), \
     tombstone_until = tombstone_until + GREATEST(0, c.n + $4::bigint - lease_until) FROM ",
    store_clock!("$5"),
    " WHERE scope = $1 AND key = $2 AND token = $3 AND state = 1"
);

/// The writes that finish a claim also announce it, in the same statement
/// (so the same transaction), when a request waits on it (`waiters`, set
/// by [`MARK_WAITED`]): `pg_notify` on [`CHANNEL`] with the record's
/// announcement (a hash of schema, scope and key) as the last parameter. Without
/// waiters nothing is sent: a `NOTIFY` serialises the commits that send
/// one. The statement returns (rows updated, notifications sent).
macro_rules! announcing {
    ($update:expr, $payload:literal) => {
        concat!(
            "WITH w AS (",
            $update,
            " RETURNING waiters), n AS (SELECT pg_notify('idem_changed', ",
            $payload,
            ") FROM w WHERE waiters) SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM n)"
        )
    };
}

/// Retention counts on the store's clock ([`store_clock!`], `$11`): the
/// horizons are the caller's distances from its reading (`$8`, `$9`).
pub(super) const COMPLETE: &str = announcing!(
    concat!(
        "UPDATE idem_records SET state = 2, has_response = true, \
         status = $4, header_names = $5, header_values = $6, body = $7, \
         expires_at = c.n + $8::bigint, tombstone_until = c.n + $9::bigint FROM ",
        store_clock!("$11"),
        " WHERE scope = $1 AND key = $2 AND token = $3 AND state = 1"
    ),
    "$10"
);
pub(super) const MARK_UNKNOWN: &str = announcing!(
    "UPDATE idem_records SET state = 3 \
     WHERE scope = $1 AND key = $2 AND token = $3 AND state = 1",
    "$4"
);
pub(super) const RELEASE: &str = announcing!(
    "UPDATE idem_records SET state = 4 \
     WHERE scope = $1 AND key = $2 AND token = $3 AND state = 1",
    "$4"
);

/// The channel [`COMPLETE`], [`MARK_UNKNOWN`] and [`RELEASE`] notify on.
pub(super) const CHANNEL: &str = "idem_changed";

/// A waiter marks the claim it waits on, if it is still in flight (one row
/// updated; none means it finished already). The row lock orders this with
/// the owner's write: whichever comes second sees the other.
pub(super) const MARK_WAITED: &str = "UPDATE idem_records SET waiters = true \
     WHERE scope = $1 AND key = $2 AND state = 1";

/// The three kinds of records a sweep acts on, each found through its own
/// index, as in the SQLite engine: the helper `sweep_action` still decides
/// each one. `FOR UPDATE SKIP LOCKED`: sweepers on several gateways take
/// disjoint rows and never wait for each other or for a claim.
pub(super) const SWEEP_QUERIES: [&str; 3] = [
    // Past the tombstone (and not a live claim): delete.
    concat!(
        "SELECT scope, key, ", sweep_columns!(),
        " FROM idem_records WHERE tombstone_until <= $1 AND NOT (state = 1 AND lease_until > $1)",
        " LIMIT $2 FOR UPDATE SKIP LOCKED"
    ),
    // Released and past its lease: delete.
    concat!(
        "SELECT scope, key, ", sweep_columns!(),
        " FROM idem_records WHERE state = 4 AND lease_until <= $1",
        " LIMIT $2 FOR UPDATE SKIP LOCKED"
    ),
    // Past retention with a payload still stored: tombstone.
    concat!(
        "SELECT scope, key, ", sweep_columns!(),
        " FROM idem_records WHERE expires_at <= $1 AND (body IS NOT NULL OR header_names IS NOT NULL)",
        " LIMIT $2 FOR UPDATE SKIP LOCKED"
    ),
];

pub(super) const DELETE_MANY: &str = "DELETE FROM idem_records AS r \
     USING unnest($1::text[], $2::text[]) AS d(scope, key) \
     WHERE r.scope = d.scope AND r.key = d.key";

/// What `to_tombstone` leaves of a response: status and time, no headers,
/// no body.
pub(super) const TOMBSTONE_MANY: &str = "UPDATE idem_records AS r \
     SET header_names = NULL, header_values = NULL, body = NULL \
     FROM unnest($1::text[], $2::text[]) AS d(scope, key) \
     WHERE r.scope = d.scope AND r.key = d.key";

/// A row this build cannot turn back into a record, or a record that does
/// not fit the schema's types.
#[derive(Debug)]
pub(super) struct Corrupt(pub(super) String);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "damaged record in the database: {}", self.0)
    }
}

impl std::error::Error for Corrupt {}

/// Reading or writing a row failed: PostgreSQL failed, or the row is
/// damaged.
#[derive(Debug)]
pub(super) enum RowError {
    Db(tokio_postgres::Error),
    Corrupt(Corrupt),
}

impl From<tokio_postgres::Error> for RowError {
    fn from(e: tokio_postgres::Error) -> Self {
        RowError::Db(e)
    }
}

impl From<Corrupt> for RowError {
    fn from(e: Corrupt) -> Self {
        RowError::Corrupt(e)
    }
}

/// How much of a record to read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    Load,
    /// The body column was selected as `body IS NOT NULL`; a present body
    /// is an empty placeholder that is never written back.
    PresenceOnly,
}

/// A fencing token as PostgreSQL stores it (a signed 64-bit integer).
pub(super) fn token_to_sql(token: u64) -> Result<i64, Corrupt> {
    i64::try_from(token)
        .map_err(|_| Corrupt(format!("fencing token {token} does not fit a bigint")))
}

/// Reads a record from a row whose columns start with [`record_columns!`]
/// at `first`.
pub(super) fn read_record(
    row: &Row,
    first: usize,
    id: RecordId,
    body: Body,
) -> Result<Record, RowError> {
    let c = |i: usize| first + i;
    let code: i16 = row.try_get(c(0))?;
    let state = RecordState::from_code(i64::from(code))
        .ok_or_else(|| Corrupt(format!("unknown state code {code}")))?;
    let token: i64 = row.try_get(c(1))?;
    let token =
        u64::try_from(token).map_err(|_| Corrupt(format!("negative fencing token {token}")))?;
    let version: i32 = row.try_get(c(2))?;
    let version =
        u16::try_from(version).map_err(|_| Corrupt(format!("fingerprint version {version}")))?;
    let digest: &[u8] = row.try_get(c(3))?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|_| Corrupt(format!("fingerprint digest of {} bytes", digest.len())))?;
    let response = if row.try_get::<_, bool>(c(8))? {
        let status: Option<i32> = row.try_get(c(9))?;
        let status = status
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| Corrupt(format!("response status {status:?}")))?;
        let names: Option<Vec<Vec<u8>>> = row.try_get(c(10))?;
        let values: Option<Vec<Vec<u8>>> = row.try_get(c(11))?;
        let headers = decode_headers(names, values)?;
        let body = match body {
            Body::Load => row.try_get::<_, Option<Vec<u8>>>(c(12))?.map(Bytes::from),
            Body::PresenceOnly => row.try_get::<_, bool>(c(12))?.then(Bytes::new),
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
        lease_until: Timestamp(row.try_get(c(4))?),
        expires_at: Timestamp(row.try_get(c(5))?),
        tombstone_until: Timestamp(row.try_get(c(6))?),
        claimed_at: Timestamp(row.try_get(c(7))?),
        response,
        attempt: attempt_from_sql(row.try_get(c(13))?),
        holder: row.try_get::<_, Option<&str>>(c(14))?.map(Arc::from),
    })
}

fn decode_headers(
    names: Option<Vec<Vec<u8>>>,
    values: Option<Vec<Vec<u8>>>,
) -> Result<Vec<(String, Bytes)>, Corrupt> {
    match (names, values) {
        (None, None) => Ok(Vec::new()),
        (Some(names), Some(values)) if names.len() == values.len() && !names.is_empty() => names
            .into_iter()
            .zip(values)
            .map(|(n, v)| {
                let n = String::from_utf8(n)
                    .map_err(|_| Corrupt("a header name is not UTF-8".into()))?;
                Ok((n, Bytes::from(v)))
            })
            .collect(),
        (n, v) => Err(Corrupt(format!(
            "header names and values do not pair up ({:?} names, {:?} values)",
            n.map(|n| n.len()),
            v.map(|v| v.len())
        ))),
    }
}

/// The values of a whole row, in the order of [`OVERWRITE`]
/// (`$1`..`$17`).
pub(super) struct RowValues<'a> {
    scope: &'a str,
    key: &'a str,
    state: i16,
    token: i64,
    fp_version: i32,
    fp_digest: &'a [u8],
    lease_until: i64,
    expires_at: i64,
    tombstone_until: i64,
    claimed_at: i64,
    has_response: bool,
    status: Option<i32>,
    header_names: Option<Vec<&'a [u8]>>,
    header_values: Option<Vec<&'a [u8]>>,
    body: Option<&'a [u8]>,
    attempt: i64,
    holder: Option<&'a str>,
}

impl<'a> RowValues<'a> {
    pub(super) fn of(r: &'a Record) -> Result<Self, Corrupt> {
        let response = r.response.as_ref();
        let (header_names, header_values) = response
            .map(|resp| header_arrays(&resp.headers))
            .unwrap_or((None, None));
        Ok(RowValues {
            scope: r.id.scope.as_str(),
            key: r.id.key.as_str(),
            state: state_code(r.state),
            token: token_to_sql(r.token)?,
            fp_version: i32::from(r.fingerprint.version),
            fp_digest: &r.fingerprint.digest,
            lease_until: r.lease_until.as_millis(),
            expires_at: r.expires_at.as_millis(),
            tombstone_until: r.tombstone_until.as_millis(),
            claimed_at: r.claimed_at.as_millis(),
            has_response: response.is_some(),
            status: response.map(|resp| i32::from(resp.status)),
            header_names,
            header_values,
            body: response.and_then(|resp| resp.body.as_deref()),
            attempt: attempt_to_sql(r.attempt),
            holder: r.holder.as_deref(),
        })
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 17] {
        [
            &self.scope,
            &self.key,
            &self.state,
            &self.token,
            &self.fp_version,
            &self.fp_digest,
            &self.lease_until,
            &self.expires_at,
            &self.tombstone_until,
            &self.claimed_at,
            &self.has_response,
            &self.status,
            &self.header_names,
            &self.header_values,
            &self.body,
            &self.attempt,
            &self.holder,
        ]
    }
}

/// Header names and values as two parallel arrays (`bytea[]`), or NULLs.
pub(super) type HeaderArrays<'a> = (Option<Vec<&'a [u8]>>, Option<Vec<&'a [u8]>>);

/// Headers as two parallel arrays, or NULLs when there are none (which
/// keeps tombstones out of the sweep's "has a payload" index).
pub(super) fn header_arrays(headers: &[(String, Bytes)]) -> HeaderArrays<'_> {
    if headers.is_empty() {
        return (None, None);
    }
    (
        Some(headers.iter().map(|(n, _)| n.as_bytes()).collect()),
        Some(headers.iter().map(|(_, v)| &v[..]).collect()),
    )
}

fn state_code(state: RecordState) -> i16 {
    // Codes are 1..=4.
    i16::try_from(state.code()).expect("state codes fit a smallint")
}

/// A key from its stored form ([`codec::key_from_stored`]).
pub(super) fn key_from_stored(stored: &str) -> Result<IdempotencyKey, Corrupt> {
    codec::key_from_stored(stored).map_err(Corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_writes_are_fenced_exactly_like_owner_may_write() {
        let fence = "WHERE scope = $1 AND key = $2 AND token = $3 AND state = 1";
        assert!(RENEW.ends_with(fence), "{RENEW}");
        // Times come from the store's clock, read once per statement.
        for sql in [RENEW, COMPLETE, INSERT_IF_ABSENT] {
            assert!(
                sql.contains("clock_timestamp()) * 1000)::bigint) AS n) AS c"),
                "{sql}"
            );
        }
        for sql in [SELECT_AT, SELECT_FOR_UPDATE_AT, NOW] {
            assert!(sql.contains("clock_timestamp()"), "{sql}");
        }
        for sql in [COMPLETE, MARK_UNKNOWN, RELEASE] {
            assert!(
                sql.contains(&format!("{fence} RETURNING waiters)")),
                "{sql}"
            );
            assert!(sql.contains(&format!("pg_notify('{CHANNEL}', ")), "{sql}");
        }
        assert!(MARK_WAITED.ends_with("WHERE scope = $1 AND key = $2 AND state = 1"));
        assert_eq!(RecordState::InFlight.code(), 1);
        assert_eq!(RecordState::Completed.code(), 2);
        assert_eq!(RecordState::OutcomeUnknown.code(), 3);
        assert_eq!(RecordState::Released.code(), 4);
    }

    #[test]
    fn the_clock_column_follows_the_record_columns() {
        assert_eq!(record_columns!().split(',').count(), COLUMNS);
        assert_eq!(sweep_columns!().split(',').count(), COLUMNS);
        assert!(SELECT_AT.contains(concat!(record_columns!(), ", COALESCE($3::bigint")));
    }

    #[test]
    fn headers_pair_up_or_are_damaged() {
        let h = vec![
            ("x-a".to_owned(), Bytes::from_static(b"\x00\xff")),
            ("x-a".to_owned(), Bytes::from_static(b"2")),
        ];
        let (n, v) = header_arrays(&h);
        let n = n.map(|n| n.into_iter().map(<[u8]>::to_vec).collect());
        let v = v.map(|v| v.into_iter().map(<[u8]>::to_vec).collect());
        assert_eq!(decode_headers(n, v).unwrap(), h);
        assert_eq!(header_arrays(&[]), (None, None));
        assert!(decode_headers(None, None).unwrap().is_empty());
        assert!(decode_headers(Some(vec![b"a".to_vec()]), None).is_err());
        assert!(decode_headers(Some(vec![]), Some(vec![])).is_err());
        assert!(decode_headers(Some(vec![vec![0xff]]), Some(vec![vec![]])).is_err());
    }
}
