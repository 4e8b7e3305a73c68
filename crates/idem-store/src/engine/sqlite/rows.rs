//! The SQL for one record: read it, write it back, and find what a sweep
//! acts on. Used inside the writer's transaction, and by the readers.

use super::codec::{self, Body, Corrupt, RowError};
use crate::engine::{sweep_action, to_tombstone, SweepAction};
use crate::{ListQuery, StoreError, SweepReport, Unsettled};
use bytes::Bytes;
use idem_core::{Record, RecordId, RecordState, Scope, Timestamp};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};

/// The three kinds of records a sweep acts on, each found through its own
/// index. The helper [`sweep_action`] still decides each record; these
/// queries only find the candidates, and match its rules exactly (a
/// candidate it kept would be found again by the next sweep). The
/// released state's code is a literal so the partial index applies.
pub(super) const SWEEP_QUERIES: [&str; 3] = [
    // Past the tombstone: delete.
    concat!("SELECT scope, key, ", sweep_columns!(), " FROM idem_records WHERE tombstone_until <= ?1 AND NOT (state = 1 AND lease_until > ?1) LIMIT ?2"),
    // Released and past its lease: delete.
    concat!("SELECT scope, key, ", sweep_columns!(), " FROM idem_records WHERE state = 4 AND lease_until <= ?1 LIMIT ?2"),
    // Past retention with a payload still stored: tombstone.
    concat!(
        "SELECT scope, key, ", sweep_columns!(),
        " FROM idem_records WHERE expires_at <= ?1 AND (body IS NOT NULL OR headers IS NOT NULL) LIMIT ?2"
    ),
];

/// Deletes or tombstones at most `budget` records due at `now`, as
/// [`sweep_action`] decides. Returns what it did and whether the candidates
/// ran out before the budget did.
pub(super) fn sweep_candidates(
    conn: &Connection,
    now: Timestamp,
    budget: usize,
) -> Result<(SweepReport, bool), RowError> {
    let mut report = SweepReport::default();
    let mut found = 0;
    for sql in SWEEP_QUERIES {
        let want = budget - found;
        if want == 0 {
            break;
        }
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt
            .query_map(params![now.as_millis(), want as i64], |row| {
                let scope: String = row.get(0)?;
                let key: String = row.get(1)?;
                let id = RecordId {
                    scope: Scope::from_stored(scope),
                    key: codec::key_from_stored(&key).map_err(RowError::Corrupt)?,
                };
                Ok(codec::read_record(row, 2, id, Body::PresenceOnly)?)
            })?
            .collect::<Result<Vec<Record>, rusqlite::Error>>()?;
        drop(stmt);
        found += rows.len();
        for mut record in rows {
            match sweep_action(&record, now) {
                SweepAction::Keep => {}
                SweepAction::Delete => {
                    delete(conn, &record.id)?;
                    report.deleted += 1;
                }
                SweepAction::Tombstone => {
                    to_tombstone(&mut record);
                    write_payload(conn, &record)?;
                    report.tombstoned += 1;
                }
            }
        }
    }
    Ok((report, found < budget))
}

/// The record stored under `id`, read inside the current transaction.
pub(super) fn load(conn: &Connection, id: &RecordId) -> Result<Option<Record>, RowError> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        record_columns!(),
        " FROM idem_records WHERE scope = ?1 AND key = ?2"
    ))?;
    stmt.query_row(params![id.scope.as_str(), id.key.as_str()], |row| {
        Ok(codec::read_record(row, 0, id.clone(), Body::Load)?)
    })
    .optional()
    .map_err(RowError::from)
}

/// [`list`]'s queries, from the oldest and after a cursor: the rows
/// waiting for an outcome that read as `query.state` at `?1`
/// ([`Record::effective`]'s rules in SQL; [`list`] checks each row with
/// them again). `state IN (1, 3)` is written as the partial index
/// `idem_records_unsettled_by_claimed_at` says it, so SQLite uses it and
/// reads the rows already in order; the unary `+` keeps it from choosing
/// the sweep's index on `tombstone_until` instead (and sorting).
macro_rules! list_sql {
    ($condition:literal, $after:literal) => {
        concat!(
            "SELECT scope, key, ",
            record_columns!(),
            " FROM idem_records WHERE state IN (1, 3) AND ",
            $condition,
            $after,
            " ORDER BY claimed_at, scope, key LIMIT ?2"
        )
    };
}

/// `[state][has cursor]`: the SQL of a listing. In flight: a lease that
/// holds. Outcome unknown: marked so or a lease that ran out, inside
/// retention.
pub(super) const LIST_QUERIES: [[&str; 2]; 2] = [
    [
        list_sql!("state = 1 AND lease_until > ?1", ""),
        list_sql!(
            "state = 1 AND lease_until > ?1",
            " AND (claimed_at, scope, key) > (?3, ?4, ?5)"
        ),
    ],
    [
        list_sql!(
            "NOT (state = 1 AND lease_until > ?1) AND +expires_at > ?1 AND +tombstone_until > ?1",
            ""
        ),
        list_sql!(
            "NOT (state = 1 AND lease_until > ?1) AND +expires_at > ?1 AND +tombstone_until > ?1",
            " AND (claimed_at, scope, key) > (?3, ?4, ?5)"
        ),
    ],
];

/// The records of a [`ListQuery`] page, in listing order.
pub(super) fn list(conn: &Connection, query: &ListQuery) -> Result<Vec<Record>, RowError> {
    let by_state = match query.state {
        Unsettled::InFlight => 0,
        Unsettled::OutcomeUnknown => 1,
    };
    let sql = LIST_QUERIES[by_state][usize::from(query.after.is_some())];
    let mut stmt = conn.prepare_cached(sql)?;
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let read = |row: &rusqlite::Row<'_>| {
        let scope: String = row.get(0)?;
        let key: String = row.get(1)?;
        let id = RecordId {
            scope: Scope::from_stored(scope),
            key: codec::key_from_stored(&key).map_err(RowError::Corrupt)?,
        };
        Ok(codec::read_record(row, 2, id, Body::Load)?)
    };
    let now = query.now.as_millis();
    let rows = match &query.after {
        None => stmt.query_map(params![now, limit], read)?,
        Some(after) => stmt.query_map(
            params![
                now,
                limit,
                after.claimed_at.as_millis(),
                after.id.scope.as_str(),
                after.id.key.as_str()
            ],
            read,
        )?,
    };
    let mut found = Vec::new();
    for record in rows {
        let record = record?;
        // The SQL says the same; the engine-independent rule has the last
        // word.
        if query.state.holds(&record, query.now) {
            found.push(record);
        }
    }
    Ok(found)
}

/// [`load_for_claim`]'s query.
pub(super) const CLAIM_LOOKUP: &str = concat!(
    "SELECT ",
    claim_columns!(),
    " FROM idem_records WHERE scope = ?1 AND key = ?2"
);

/// [`load_payload`]'s query: the payload, if the row is still the record
/// the claim decided on.
pub(super) const PAYLOAD_LOOKUP: &str = "SELECT headers, body FROM idem_records \
     WHERE scope = ?1 AND key = ?2 AND token = ?3 AND attempt = ?4 AND state = ?5 \
     AND fp_version = ?6 AND fp_digest = ?7 AND has_response AND body IS NOT NULL";

/// A payload small enough to come back with the claim's decision, as
/// stored (headers still encoded: decoded only for a replay).
pub(super) struct SmallPayload {
    headers: Option<Vec<u8>>,
    body: Vec<u8>,
}

impl SmallPayload {
    pub(super) fn decode(self) -> Result<Payload, Corrupt> {
        Ok(Payload {
            headers: codec::decode_headers(self.headers)?,
            body: Bytes::from(self.body),
        })
    }
}

/// The record stored under `id` as the writer's claim reads it: the body
/// only as a placeholder for "there is one", and no headers beside it
/// ([`claim_columns!`]); beside it, its payload when that is small. Never
/// written back as it is.
pub(super) fn load_for_claim(
    conn: &Connection,
    id: &RecordId,
) -> Result<Option<(Record, Option<SmallPayload>)>, RowError> {
    let mut stmt = conn.prepare_cached(CLAIM_LOOKUP)?;
    stmt.query_row(params![id.scope.as_str(), id.key.as_str()], |row| {
        let record = codec::read_record(row, 0, id.clone(), Body::PresenceOnly)?;
        let small = row
            .get::<_, Option<Vec<u8>>>(14)?
            .map(|body| -> rusqlite::Result<SmallPayload> {
                Ok(SmallPayload {
                    headers: row.get(15)?,
                    body,
                })
            })
            .transpose()?;
        Ok((record, small))
    })
    .optional()
    .map_err(RowError::from)
}

/// The stored response of a replay, read after the claim decided it.
pub(super) struct Payload {
    pub(super) headers: Vec<(String, Bytes)>,
    pub(super) body: Bytes,
}

/// The headers and body of `decided`, if the row still is that record
/// (the same claim: token, attempt and fingerprint; completed, which it
/// stays until it is swept) and still has its body. A different record
/// under the key, or none, or one without a body is `None`: what `decided`
/// stored is gone.
pub(super) fn load_payload(
    conn: &Connection,
    decided: &Record,
) -> Result<Option<Payload>, RowError> {
    let mut stmt = conn.prepare_cached(PAYLOAD_LOOKUP)?;
    let found = stmt
        .query_row(
            params![
                decided.id.scope.as_str(),
                decided.id.key.as_str(),
                codec::token_to_sql(decided.token)?,
                codec::attempt_to_sql(decided.attempt),
                RecordState::Completed.code(),
                i64::from(decided.fingerprint.version),
                &decided.fingerprint.digest[..],
            ],
            |row| {
                let headers = codec::decode_headers(row.get(0)?).map_err(RowError::Corrupt)?;
                // One copy, straight from SQLite's buffer into the one the
                // replay keeps. (Incremental blob I/O, which would skip
                // SQLite's own buffer, needs a rowid; the table has none.)
                let body = match row.get_ref(1)? {
                    ValueRef::Blob(b) => Bytes::copy_from_slice(b),
                    other => {
                        return Err(RowError::Corrupt(Corrupt(format!(
                            "a response body stored as {}",
                            other.data_type()
                        )))
                        .into())
                    }
                };
                Ok(Payload { headers, body })
            },
        )
        .optional()?;
    Ok(found)
}

/// Writes the slot back: the whole row, or its deletion.
pub(super) fn persist(
    conn: &Connection,
    id: &RecordId,
    record: Option<&Record>,
) -> Result<(), RowError> {
    let Some(r) = record else {
        return delete(conn, id);
    };
    let response = r.response.as_ref();
    let headers = match response {
        Some(resp) => codec::encode_headers(&resp.headers)?,
        None => None,
    };
    let mut stmt = conn.prepare_cached(
        // An upsert updates the row in place; INSERT OR REPLACE would delete
        // and re-insert it (and every index entry) on each completion.
        "INSERT INTO idem_records (scope, key, state, token, fp_version, fp_digest, \
         lease_until, expires_at, tombstone_until, claimed_at, has_response, status, headers, body, \
         attempt, holder) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
         ON CONFLICT (scope, key) DO UPDATE SET state = excluded.state, token = excluded.token, \
         fp_version = excluded.fp_version, fp_digest = excluded.fp_digest, \
         lease_until = excluded.lease_until, expires_at = excluded.expires_at, \
         tombstone_until = excluded.tombstone_until, claimed_at = excluded.claimed_at, \
         has_response = excluded.has_response, status = excluded.status, \
         headers = excluded.headers, body = excluded.body, attempt = excluded.attempt, \
         holder = excluded.holder",
    )?;
    stmt.execute(params![
        id.scope.as_str(),
        id.key.as_str(),
        r.state.code(),
        codec::token_to_sql(r.token)?,
        i64::from(r.fingerprint.version),
        &r.fingerprint.digest[..],
        r.lease_until.as_millis(),
        r.expires_at.as_millis(),
        r.tombstone_until.as_millis(),
        r.claimed_at.as_millis(),
        response.is_some(),
        response.map(|resp| i64::from(resp.status)),
        headers,
        response.and_then(|resp| resp.body.as_deref()),
        codec::attempt_to_sql(r.attempt),
        r.holder.as_deref(),
    ])?;
    Ok(())
}

fn delete(conn: &Connection, id: &RecordId) -> Result<(), RowError> {
    conn.prepare_cached("DELETE FROM idem_records WHERE scope = ?1 AND key = ?2")?
        .execute(params![id.scope.as_str(), id.key.as_str()])?;
    Ok(())
}

/// Writes a tombstoned record's remaining payload. The body column is only
/// cleared, never written: the sweep read just its presence.
fn write_payload(conn: &Connection, r: &Record) -> Result<(), RowError> {
    let headers = match &r.response {
        Some(resp) => codec::encode_headers(&resp.headers)?,
        None => None,
    };
    let body_gone = r.response.as_ref().is_none_or(|resp| resp.body.is_none());
    conn.prepare_cached(
        "UPDATE idem_records SET headers = ?3, body = CASE WHEN ?4 THEN NULL ELSE body END \
         WHERE scope = ?1 AND key = ?2",
    )?
    .execute(params![
        r.id.scope.as_str(),
        r.id.key.as_str(),
        headers,
        body_gone
    ])?;
    Ok(())
}

/// The error an operation reports when reading or writing its row failed.
pub(super) fn row_error(op: &'static str, e: RowError) -> StoreError {
    match e {
        RowError::Sqlite(e) => match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, inner) if inner.is::<Corrupt>() => {
                StoreError::new("sqlite", op, inner)
            }
            e => StoreError::new("sqlite", op, e),
        },
        RowError::Corrupt(c) => StoreError::new("sqlite", op, c),
    }
}
