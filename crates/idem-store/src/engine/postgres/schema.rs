//! The schema and its versioned migrations.
//!
//! Applied versions are rows of `idem_schema_migrations`. Migrations run in
//! one transaction under a transaction-level advisory lock, so any number
//! of gateways starting at once (or `idem migrate` next to them) apply each
//! migration exactly once; DDL is transactional in PostgreSQL, so a failed
//! migration leaves nothing half done.

use tokio_postgres::Client;

/// One schema change. Versions are dense, starting at 1, and never edited
/// once released: a change is a new migration.
pub(super) struct Migration {
    pub(super) version: i32,
    pub(super) name: &'static str,
    pub(super) sql: &'static str,
}

/// Every migration this build knows, in order.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "records",
        sql: V1_RECORDS,
    },
    Migration {
        version: 2,
        name: "waiters",
        sql: V2_WAITERS,
    },
    Migration {
        version: 3,
        name: "attempts",
        sql: V3_ATTEMPTS,
    },
    Migration {
        version: 4,
        name: "unsettled",
        sql: V4_UNSETTLED,
    },
    Migration {
        version: 5,
        name: "holders",
        sql: V5_HOLDERS,
    },
];

/// The schema version this build writes.
pub(super) const LATEST: i32 = 5;

/// One table keyed by (scope, key), as the SQLite engine's. Headers are two
/// parallel arrays (names, values), both NULL when there are none, and the
/// body is NULL when it is not replayable, so "the response still carries a
/// payload" is `body IS NOT NULL OR header_names IS NOT NULL`: the partial
/// index below holds exactly the records a sweep may tombstone. The three
/// indexes serve the sweep's three queries.
const V1_RECORDS: &str = "
CREATE TABLE idem_records (
    scope            text     NOT NULL,
    key              text     NOT NULL,
    state            smallint NOT NULL,
    token            bigint   NOT NULL,
    fp_version       integer  NOT NULL,
    fp_digest        bytea    NOT NULL,
    lease_until      bigint   NOT NULL,
    expires_at       bigint   NOT NULL,
    tombstone_until  bigint   NOT NULL,
    claimed_at       bigint   NOT NULL,
    has_response     boolean  NOT NULL,
    status           integer,
    header_names     bytea[],
    header_values    bytea[],
    body             bytea,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idem_records_by_tombstone_until
    ON idem_records (tombstone_until);
CREATE INDEX idem_records_with_payload_by_expires_at
    ON idem_records (expires_at) WHERE body IS NOT NULL OR header_names IS NOT NULL;
CREATE INDEX idem_records_released_by_lease_until
    ON idem_records (lease_until) WHERE state = 4;
";

/// The admin API's listing of records waiting for an outcome (in flight or
/// marked outcome-unknown), in its order: claim time, then scope and key
/// compared bytewise (`COLLATE "C"`, as `RecordId` orders them), so a page
/// is an index range scan whatever the database's collation.
const V4_UNSETTLED: &str = r#"
CREATE INDEX idem_records_unsettled_by_claimed_at
    ON idem_records (claimed_at, scope COLLATE "C", key COLLATE "C") WHERE state IN (1, 3);
"#;

/// Whether a request waits on the claim (`in_flight = wait`): the owner's
/// final write then announces it with `pg_notify`. A new claim of the row
/// clears it. (A constant default: PostgreSQL 11 and later add the column
/// without rewriting the table.)
const V2_WAITERS: &str = "
ALTER TABLE idem_records ADD COLUMN waiters boolean NOT NULL DEFAULT false;
";

/// The attempt nonce of the claim that wrote the row (`Record::attempt`):
/// a claim retried under the same attempt recognises its own record. Rows
/// from before read 0, which never matches. (`IF NOT EXISTS`: harmless on
/// a table that has it already; a constant default adds it without a
/// rewrite.)
const V3_ATTEMPTS: &str = "
ALTER TABLE idem_records ADD COLUMN IF NOT EXISTS attempt bigint NOT NULL DEFAULT 0;
";

/// The name of the instance that made the row's claim (`Record::holder`),
/// for operators. Rows from before read NULL: unknown. (Nullable without
/// a default: added without a rewrite.)
const V5_HOLDERS: &str = "
ALTER TABLE idem_records ADD COLUMN IF NOT EXISTS holder text;
";

/// The key of the advisory lock migrations hold: "idem" in ASCII, shifted.
/// Database-wide, so migrations of different schemas also take turns.
const MIGRATION_LOCK: i64 = 0x6964_656d_0000_0001;

/// What a migration run found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The migrations this run applied, as `(version, name)`, in order.
    pub applied: Vec<(i32, &'static str)>,
    /// The schema version after the run.
    pub version: i32,
}

/// Why migrating failed.
#[derive(Debug)]
pub(super) enum MigrateError {
    Db(tokio_postgres::Error),
    TooNew(i32),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Db(e)
    }
}

/// Brings the schema (in `schema`, or the first schema of the connection's
/// `search_path`) to [`LATEST`].
pub(super) async fn migrate(
    client: &mut Client,
    schema: Option<&str>,
) -> Result<MigrationReport, MigrateError> {
    let tx = client.transaction().await?;
    // Migrations may take longer than one request's statement; the
    // caller's overall deadline still bounds the run.
    tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0")
        .await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    if let Some(schema) = schema {
        let exists: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&schema],
            )
            .await?
            .get(0);
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(schema)))
                .await?;
        }
    }
    // Checked, not `IF NOT EXISTS`: that logs a notice on every start.
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass('idem_schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE idem_schema_migrations (
                version    integer     PRIMARY KEY,
                name       text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    }
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM idem_schema_migrations",
            &[],
        )
        .await?
        .get(0);
    if current > LATEST {
        return Err(MigrateError::TooNew(current));
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO idem_schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        applied.push((m.version, m.name));
    }
    tx.commit().await?;
    Ok(MigrationReport {
        applied,
        version: current.max(LATEST),
    })
}

/// A schema name the engine accepts: letters, digits and `_`, not starting
/// with a digit, at most 63 bytes (PostgreSQL's identifier limit). Keeping
/// it plain keeps it safe inside the connection's `options` string.
pub(super) fn valid_schema_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name` as a quoted identifier.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use idem_core::RecordState;

    #[test]
    fn migrations_are_dense_and_end_at_latest() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(LATEST));
    }

    #[test]
    fn the_released_literal_in_sql_is_the_released_code() {
        assert_eq!(RecordState::Released.code(), 4);
        assert!(V1_RECORDS.contains("WHERE state = 4;"));
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema_name("idem"));
        assert!(valid_schema_name("idem_test_12"));
        for bad in ["", "1abc", "a b", "a-b", "a\"b", "a;b", &"x".repeat(64)] {
            assert!(!valid_schema_name(bad), "{bad:?}");
        }
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
