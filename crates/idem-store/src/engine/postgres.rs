//! The PostgreSQL engine: many gateways sharing one database, with the
//! strongest guarantee (a commit is durable and replicated as the server is
//! configured to; nothing acknowledged is lost on failover to a synchronous
//! standby).
//!
//! - The claim of an absent key is one `INSERT … ON CONFLICT DO NOTHING`:
//!   no check-then-act. When the key exists, the stored record is read and
//!   the shared rule ([`crate::engine::apply_claim`], i.e.
//!   [`idem_core::decide_claim`]) answers from it; only when that rule says
//!   the key may be claimed again (released, past its tombstone, or
//!   `outcome-unknown` with `upstream_dedupes`) is the row locked
//!   (`SELECT … FOR UPDATE`), decided again under the lock, and rewritten,
//!   in one transaction.
//! - Completion, release, lease renewal and mark-unknown are each one
//!   conditional `UPDATE` whose `WHERE` is exactly
//!   [`idem_core::decision::owner_may_write`] (same token, still in
//!   flight), so a stale owner can never overwrite.
//! - The sweep finds candidates through an index per kind (past the
//!   tombstone, released, past retention with a payload), locks them with
//!   `FOR UPDATE SKIP LOCKED` (sweepers on many gateways take disjoint rows
//!   and never wait), lets [`crate::engine::sweep_action`] decide each, and
//!   deletes or tombstones in bounded transactions.
//! - Time is the database server's ([`StoreClock::Server`], the default):
//!   every statement that decides or writes a time reads
//!   `clock_timestamp()` itself (the claim's `INSERT`, the `SELECT` that
//!   reads the row, each owner's `UPDATE`), and the caller's horizons
//!   arrive as distances from the caller's own reading, so no gateway's
//!   clock skews a lease or a retention and no extra round trip is made.
//!   A sweep reads the server's clock once and ignores the caller's `now`.
//!   Records come back with the server's times.
//! - An operator's action ([`Store::operate`]) is one transaction: the row
//!   is locked (`SELECT … FOR UPDATE`, reading the store's clock in the
//!   same statement), [`decide_operator`] decides at that time, and the
//!   whole record it returns is written back, announcing it to waiters as
//!   an owner's final write does. The listing ([`Store::list`]) pages
//!   through a partial index of in-flight and outcome-unknown rows in
//!   (claim time, scope, key) order, keys compared bytewise.
//! - The schema is created and upgraded by versioned migrations
//!   (`idem_schema_migrations`) under an advisory lock, on open and by
//!   `idem migrate`.
//! - Waiters of another gateway are woken with LISTEN/NOTIFY
//!   ([`Store::changed`]): a waiter marks the claim (`waiters`), and the
//!   owner's final write, when it finds the mark, sends `pg_notify` on
//!   `idem_changed` in the same statement (see [`wakeups`] for why only
//!   then). One LISTEN connection per store, opened by the first wait.
//! - Connections use TLS as the URL's `sslmode` and `sslrootcert` say,
//!   with libpq's meaning ([`tls`]); the default `prefer` encrypts when
//!   the server accepts it, `require` and stronger never fall back to
//!   plaintext.
//! - Every operation is bounded: a pool wait, a connect timeout, a
//!   server-side `statement_timeout`/`lock_timeout`, and an overall client
//!   deadline. A database that is down or unreachable yields a
//!   [`StoreError`] within [`PostgresOptions::operation_timeout`], never a
//!   hang; the pool reconnects by itself when the database returns.

mod batch;
mod connection;
mod listener;
mod operations;
mod pool;
mod rows;
mod schema;
mod tls;

pub use schema::MigrationReport;

use super::wakeups::Wakeups;
use crate::{StoreClock, StoreError};
use operations::at_store_time;
use pool::Connections;
use rows::RowError;
use std::sync::Arc;
use std::time::Duration;

/// Tuning of the PostgreSQL engine.
///
/// ```
/// use idem_store::PostgresOptions;
/// let options = PostgresOptions { pool_size: 32, ..PostgresOptions::default() };
/// assert!(options.operation_timeout > options.statement_timeout);
/// ```
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Connections in the pool. Default 16.
    pub pool_size: usize,
    /// Bound on opening one connection (TCP, TLS handshake, startup,
    /// authentication). Default 2 s.
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout` and `lock_timeout` of every
    /// statement the engine runs. Default 2 s.
    pub statement_timeout: Duration,
    /// Bound on one whole store operation, waiting for a pooled connection
    /// included: past it the operation fails with a [`StoreError`] (and the
    /// connection it used is discarded). Default 3 s. A sweep gets ten
    /// times this.
    pub operation_timeout: Duration,
    /// Bound on running the migrations at open. Default 60 s.
    pub migration_timeout: Duration,
    /// Keep the tables in this schema (created if missing) instead of the
    /// first schema of the connection's `search_path`. Letters, digits and
    /// `_` only. Default: none, or the URL's `schema=NAME` parameter (an
    /// idem parameter, removed before the URL reaches the driver).
    pub schema: Option<String>,
    /// Whose clock leases and retention are decided on. Default
    /// [`StoreClock::Server`]: the database server's.
    pub clock: StoreClock,
    /// Group commit: the claims of concurrent requests are sent as one
    /// statement (and one transaction) per batch, and so are their
    /// completions. A batch leaves as soon as the previous one has answered,
    /// so nothing waits on a timer; under load, what queued meanwhile goes
    /// together, and a request that finds no statement of its kind in
    /// flight is its own statement. The batches use four connections of
    /// their own beside [`pool_size`](Self::pool_size). Default true, or
    /// the URL's `group_commit=on|off` (an idem parameter, removed before
    /// the URL reaches the driver). Off, each claim and completion is its
    /// own statement: measured, the same at one concurrent request, 1.2×
    /// faster at 8, and 1.3× and 2.6× slower at 32 and 128
    /// (docs/benchmarks.md).
    pub group_commit: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(3),
            migration_timeout: Duration::from_secs(60),
            schema: None,
            clock: StoreClock::Server,
            group_commit: true,
        }
    }
}

/// Records in a PostgreSQL table shared by any number of gateways.
///
/// ```no_run
/// # async fn f() -> Result<(), idem_store::StoreError> {
/// use idem_store::{PostgresOptions, PostgresStore, Store};
/// let store = PostgresStore::open("postgres://idem@db.internal/idem", PostgresOptions::default()).await?;
/// store.ping().await?;
/// # Ok(()) }
/// ```
pub struct PostgresStore {
    connections: Connections,
    options: PostgresOptions,
    /// The configuration of the pool's connections, for the LISTEN one.
    config: tokio_postgres::Config,
    /// Group commit of claims and completions, when on.
    batches: Option<batch::Batches>,
    /// The schema in announcements ("" for the search_path's).
    namespace: String,
    /// Waiters on records in flight, and the LISTEN task.
    wakeups: Arc<Wakeups<u64>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.wakeups.stop();
    }
}

fn split_schema_param(url: &str) -> (String, Option<String>) {
    super::take_query_param(url, "schema")
}

pub(super) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

const ENGINE: &str = "postgres";

fn fail(op: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::new(ENGINE, op, message.into())
}

/// The engine's words for what went wrong, with the driver's error as the
/// cause (its chain says why; the message does not repeat it).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Failed {
    message: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn fail_with(
    op: &'static str,
    message: impl Into<String>,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::new(
        ENGINE,
        op,
        Failed {
            message: message.into(),
            source: source.into(),
        },
    )
}

/// The server's own message (tokio-postgres's Display only says "db
/// error").
fn db_message(db: &tokio_postgres::error::DbError) -> String {
    format!("{}: {}", db.severity(), db.message())
}

fn row_error(op: &'static str, e: RowError) -> StoreError {
    match e {
        RowError::Db(e) => match e.as_db_error() {
            Some(db) => fail(op, db_message(db)),
            // Its causes are the StoreError's chain.
            None => StoreError::new(ENGINE, op, e),
        },
        RowError::Corrupt(c) => StoreError::new(ENGINE, op, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parameter_is_idems_not_the_drivers() {
        assert_eq!(
            split_schema_param("postgres://u@h/db?schema=idem&sslmode=disable"),
            (
                "postgres://u@h/db?sslmode=disable".to_owned(),
                Some("idem".to_owned())
            )
        );
        assert_eq!(
            split_schema_param("postgres://u@h/db?schema=idem"),
            ("postgres://u@h/db".to_owned(), Some("idem".to_owned()))
        );
        assert_eq!(
            split_schema_param("postgres://u@h/db"),
            ("postgres://u@h/db".to_owned(), None)
        );
    }

    #[tokio::test]
    async fn group_commit_is_on_unless_the_url_turns_it_off() {
        let url = "postgres://u@127.0.0.1:1/db?sslmode=disable";
        let on = PostgresStore::connect(url, PostgresOptions::default()).unwrap();
        assert!(on.batch_stats().is_some());
        let on = PostgresStore::connect(
            &format!("{url}&group_commit=on"),
            PostgresOptions {
                group_commit: false,
                ..PostgresOptions::default()
            },
        )
        .unwrap();
        assert!(on.batch_stats().is_some());
        let off = PostgresStore::connect(
            &format!("{url}&group_commit=off"),
            PostgresOptions {
                group_commit: true,
                ..PostgresOptions::default()
            },
        )
        .unwrap();
        assert!(off.batch_stats().is_none());
        let bad = PostgresStore::connect(
            &format!("{url}&group_commit=maybe"),
            PostgresOptions::default(),
        );
        let err = bad.expect_err("refused");
        let cause = std::error::Error::source(&err)
            .expect("a cause")
            .to_string();
        assert!(cause.contains("group_commit=maybe"), "{err:?}");
    }

    /// `plan_cache_mode` on a connection of `connections`.
    async fn plan_cache_mode(connections: &Connections) -> String {
        connections
            .run("test", Duration::from_secs(10), |client| {
                Box::pin(async move {
                    let row = client.query_one("SHOW plan_cache_mode", &[]).await?;
                    Ok(row.try_get::<_, String>(0)?)
                })
            })
            .await
            .expect("SHOW plan_cache_mode")
    }

    /// A batch statement is planned for its own arrays on every execution
    /// (a generic plan made while the table was small stays slow as it
    /// grows); the single statements on the store's own pool keep
    /// PostgreSQL's default, where a cached plan saves the planning.
    #[tokio::test]
    async fn batches_plan_each_statement_the_store_keeps_cached_plans() {
        let url = idem_testkit::postgres_url();
        if tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .is_err()
        {
            return; // no server: the integration tests say so loudly
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        let store = PostgresStore::connect(
            &format!("{url}{sep}sslmode=disable"),
            PostgresOptions::default(),
        )
        .unwrap();
        let batches = store.batches.as_ref().expect("group commit is on");
        assert_eq!(
            plan_cache_mode(&batches.connections).await,
            "force_custom_plan"
        );
        assert_eq!(plan_cache_mode(&store.connections).await, "auto");
    }
}
