//! Opening connections: pragmas, the schema and its version.

use super::{fail, SqliteOptions};
use crate::{SqliteSynchronous, StoreError};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::{Duration, Instant};

/// The schema this build writes, kept in `PRAGMA user_version`. Older
/// numbers are migrated on open (see [`MIGRATIONS`]); newer ones are
/// refused.
///
/// 1. the records table and its indexes ([`SCHEMA_V1`]);
/// 2. the claim's attempt nonce ([`MIGRATION_V2`]);
/// 3. the index of the operators' listing ([`MIGRATION_V3`]);
/// 4. the lease holder ([`MIGRATION_V4`]).
pub(super) const SCHEMA_VERSION: i64 = 4;

/// `MIGRATIONS[v]` brings a file of version `v` to `v + 1`. Released
/// entries are never edited: a change is a new entry.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] =
    [SCHEMA_V1, MIGRATION_V2, MIGRATION_V3, MIGRATION_V4];

/// One table keyed by (scope, key). Headers are NULL when there are none
/// and the body is NULL when it is not replayable, so "the response still
/// carries a payload" is `body IS NOT NULL OR headers IS NOT NULL`: the
/// partial index below holds exactly the records a sweep may tombstone.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS idem_records (
    scope            TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    state            INTEGER NOT NULL,
    token            INTEGER NOT NULL,
    fp_version       INTEGER NOT NULL,
    fp_digest        BLOB    NOT NULL,
    lease_until      INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    tombstone_until  INTEGER NOT NULL,
    claimed_at       INTEGER NOT NULL,
    has_response     INTEGER NOT NULL,
    status           INTEGER,
    headers          BLOB,
    body             BLOB,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idem_records_by_tombstone_until
    ON idem_records (tombstone_until);
CREATE INDEX IF NOT EXISTS idem_records_with_payload_by_expires_at
    ON idem_records (expires_at) WHERE body IS NOT NULL OR headers IS NOT NULL;
CREATE INDEX IF NOT EXISTS idem_records_released_by_lease_until
    ON idem_records (lease_until) WHERE state = 4;
";

/// The attempt nonce of the claim that wrote the row (`Record::attempt`).
/// Rows of version 1 read 0: unknown, never matched by a retried claim.
const MIGRATION_V2: &str = "
ALTER TABLE idem_records ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
";

/// The records waiting for an outcome (in flight or outcome-unknown) in
/// the order the operators' listing pages through them (`Store::list`):
/// a page reads only its own rows, however many completed records the file
/// holds. Partial, so completing a record takes it out of the index.
const MIGRATION_V3: &str = "
CREATE INDEX IF NOT EXISTS idem_records_unsettled_by_claimed_at
    ON idem_records (claimed_at, scope, key) WHERE state IN (1, 3);
";

/// The name of the instance that made the row's claim (`Record::holder`).
/// Rows written before read NULL: unknown.
const MIGRATION_V4: &str = "
ALTER TABLE idem_records ADD COLUMN holder TEXT;
";

/// The code of `RecordState::Released` as written in the SQL above and in
/// the sweep's queries (a literal, so SQLite can match the partial index).
#[cfg(test)]
const RELEASED_CODE: i64 = 4;

/// Opens the connection the writer thread owns: creates the file, switches
/// to WAL with `synchronous=FULL`, creates or checks the schema, and
/// proves it can write.
/// Stored responses hold what the upstream answered (card numbers, session
/// tokens): a new database file is created readable by its owner only
/// (SQLite gives its `-wal` and `-shm` files the database's mode), and an
/// existing one that others can read is reported.
fn private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "the SQLite store is readable by group or others; stored responses may hold secrets (chmod 600 it, and its -wal and -shm files)"
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(drop)
            .or_else(|e| match e.kind() {
                // Another process created it first: its mode is its own.
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(fail(
                    "open",
                    format!("cannot create {}: {e}", path.display()),
                )),
            }),
        Err(_) => Ok(()), // Left for SQLite's open to report precisely.
    }
}

pub(super) fn open_writer(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        return Err(fail("open", "the database path is empty"));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(fail(
                "open",
                format!(
                    "cannot create {shown}: directory {} does not exist",
                    parent.display()
                ),
            ));
        }
    }
    private_file(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| fail("open", format!("cannot open or create {shown}: {e}")))?;
    let ctx = |what: &str, e: rusqlite::Error| fail("open", format!("{shown}: {what}: {e}"));
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| ctx("setting busy_timeout", e))?;
    if conn
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(|e| ctx("checking access", e))?
    {
        return Err(fail(
            "open",
            format!("{shown} is read-only: the store must write (check the file's and its directory's permissions)"),
        ));
    }
    let mode: String = retry_while_busy(options.busy_timeout, || {
        conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
    })
    .map_err(|e| {
        ctx(
            "cannot switch to WAL (is the file and its directory writable?)",
            e,
        )
    })?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(fail(
            "open",
            format!("{shown}: journal mode is `{mode}`, not WAL (an in-memory or special path is not a durable store)"),
        ));
    }
    // FULL: the WAL is synced at every commit, so an acknowledged outcome
    // survives power loss, not only a crash of the process.
    let synchronous = match options.synchronous {
        SqliteSynchronous::Full => "FULL",
        SqliteSynchronous::Normal => {
            tracing::warn!(
                path = %shown,
                "the SQLite store runs with synchronous=normal: power loss or an OS crash can lose acknowledged claims, and a retry may then execute again"
            );
            "NORMAL"
        }
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(|e| ctx(&format!("setting synchronous={synchronous}"), e))?;
    // Truncate the WAL file back to this size after checkpoints.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(|e| ctx("setting journal_size_limit", e))?;
    conn.set_prepared_statement_cache_capacity(32);
    migrate(&conn).map_err(|e| match e {
        Migrate::Sqlite(e) => ctx("cannot create or check the schema (is the file writable?)", e),
        Migrate::TooNew(v) => fail(
            "open",
            format!("{shown} has schema version {v}, newer than this build's {SCHEMA_VERSION}: upgrade idem"),
        ),
    })?;
    Ok(conn)
}

/// Runs `f` again while SQLite answers busy or locked, until `within` has
/// passed. SQLite does not call the busy handler when it switches the
/// journal mode (the lock upgrade could deadlock), so gateways opening one
/// fresh file at once would otherwise fail with "database is locked".
fn retry_while_busy<T>(
    within: Duration,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(1);
    loop {
        let err = match f() {
            Err(err) if is_busy(&err) => err,
            other => return other,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(err);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Opens a connection for `get`: read-only, sharing the WAL.
pub(super) fn open_reader(
    path: &Path,
    busy_timeout: Duration,
) -> Result<Connection, rusqlite::Error> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(8);
    Ok(conn)
}

enum Migrate {
    Sqlite(rusqlite::Error),
    TooNew(i64),
}

impl From<rusqlite::Error> for Migrate {
    fn from(e: rusqlite::Error) -> Self {
        Migrate::Sqlite(e)
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] inside one write transaction, so
/// two processes opening a new file at once do not race. The transaction
/// always writes (`user_version` is set even when unchanged), which also
/// proves the file is writable.
fn migrate(conn: &Connection) -> Result<(), Migrate> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        match version {
            SCHEMA_VERSION => {}
            older if (0..SCHEMA_VERSION).contains(&older) => {
                for step in &MIGRATIONS[older as usize..] {
                    conn.execute_batch(step)?;
                }
            }
            newer => return Err(Migrate::TooNew(newer)),
        }
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        conn.execute_batch("COMMIT")?;
        Ok(())
    })();
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use idem_core::RecordState;

    #[test]
    fn the_released_literal_in_sql_is_the_released_code() {
        assert_eq!(RecordState::Released.code(), RELEASED_CODE);
        assert!(SCHEMA_V1.contains(&format!("WHERE state = {RELEASED_CODE};")));
        assert!(super::super::rows::SWEEP_QUERIES[1]
            .contains(&format!("WHERE state = {RELEASED_CODE} AND")));
    }

    #[test]
    fn the_writer_connection_syncs_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("t.db"), &SqliteOptions::default()).unwrap();
        let get = |pragma: &str| -> String {
            conn.query_row(&format!("PRAGMA {pragma}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
        };
        assert_eq!(get("journal_mode"), "wal");
        assert_eq!(get("synchronous"), "2", "FULL");
        assert_eq!(get("busy_timeout"), "5000");
        assert_eq!(get("user_version"), SCHEMA_VERSION.to_string());
        drop(conn);
        // Asked for, the weaker sync: only at checkpoints.
        let options = SqliteOptions {
            synchronous: SqliteSynchronous::Normal,
            ..SqliteOptions::default()
        };
        let conn = open_writer(&dir.path().join("normal.db"), &options).unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
    }

    /// A sweep must never scan the table: each query walks its own index.
    #[test]
    fn every_query_uses_an_index() {
        let conn = Connection::open_in_memory().unwrap();
        for step in MIGRATIONS {
            conn.execute_batch(step).unwrap();
        }
        let lookup = concat!(
            "SELECT ",
            record_columns!(),
            " FROM idem_records WHERE scope = ?1 AND key = ?2"
        );
        let expected = [
            (lookup, "USING PRIMARY KEY"),
            (super::super::rows::CLAIM_LOOKUP, "USING PRIMARY KEY"),
            (super::super::rows::PAYLOAD_LOOKUP, "USING PRIMARY KEY"),
            (
                super::super::rows::SWEEP_QUERIES[0],
                "USING INDEX idem_records_by_tombstone_until",
            ),
            (
                super::super::rows::SWEEP_QUERIES[1],
                "USING INDEX idem_records_released_by_lease_until",
            ),
            (
                super::super::rows::SWEEP_QUERIES[2],
                "USING INDEX idem_records_with_payload_by_expires_at",
            ),
        ];
        // The operators' listing reads its rows in order from its index:
        // no scan of the table, no sort.
        let listing = super::super::rows::LIST_QUERIES
            .iter()
            .flatten()
            .map(|sql| (*sql, "USING INDEX idem_records_unsettled_by_claimed_at"));
        for (sql, index) in expected.into_iter().chain(listing) {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(
                    rusqlite::params_from_iter(vec![1; stmt.parameter_count()]),
                    |r| r.get::<_, String>(3),
                )
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{sql}\n{plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step.contains("TEMP B-TREE")),
                "{sql}\n{plan:?}"
            );
        }
    }
}
