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
mod rows;
mod schema;
mod tls;
pub(super) mod wakeups;

pub use schema::MigrationReport;

use super::{apply_claim, offset, sweep_action, to_tombstone, SweepAction};
use crate::{
    Claim, ClaimOutcome, Completion, ListQuery, Store, StoreClock, StoreError, SweepReport, Write,
};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use idem_core::operator::{decide_operator, OperatorAction, OperatorRefusal};
use idem_core::{Record, RecordId, Scope, Timestamp};
use rows::{read_record, Body, Corrupt, RowError, RowValues};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use wakeups::Wakeups;

/// How often a claim retries when the row it saw vanished (swept) before it
/// could read or lock it. Each retry is caused by a concurrent delete, so
/// more than a couple in a row is not expected.
const CLAIM_ATTEMPTS: usize = 8;

/// Most records one sweep transaction touches.
const SWEEP_CHUNK: usize = 500;

/// Bound on a caller's clock reading used as the store's clock
/// ([`StoreClock::Caller`]): about 36 million years either way, so that
/// adding horizons' distances (at most [`super::MAX_OFFSET`]) and moving
/// them again on renewal stays far inside a bigint.
const CALLER_CLOCK_MAX: i64 = 1 << 60;

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
    /// together. Default false, or the URL's `group_commit=on|off` (an
    /// idem parameter, removed before the URL reaches the driver). Off,
    /// each claim and completion is its own statement. Off by default
    /// because, measured, it gains at high concurrency at first but falls
    /// below one statement per request over a sustained run (the batch
    /// statements' plans degrade as the table grows: docs/benchmarks.md).
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
            group_commit: false,
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

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` or
    /// `postgresql://` URL, or a libpq key-value string) and brings its
    /// schema up to date. Fails if the database cannot be reached within
    /// the timeouts, or has a schema from a newer build.
    ///
    /// Besides the driver's parameters, idem reads (and removes) `schema`
    /// (see [`PostgresOptions::schema`]), and libpq's `sslmode`
    /// (`disable`, `prefer` by default, `require`, `verify-ca`,
    /// `verify-full`) and `sslrootcert=FILE` (the CA that signed the
    /// server's certificate; the public roots without it), e.g.
    /// `postgres://idem@db:5432/app?sslmode=verify-full&sslrootcert=/etc/idem/db-ca.pem`.
    pub async fn open(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let store = Self::connect(url, options)?;
        store.migrate_schema().await?;
        store.check_durability().await;
        Ok(store)
    }

    /// Applies the migrations the database at `url` lacks, and reports
    /// them (`idem migrate`). `url` is read as by [`Self::open`], TLS
    /// parameters included.
    pub async fn migrate(
        url: &str,
        options: PostgresOptions,
    ) -> Result<MigrationReport, StoreError> {
        Self::connect(url, options)?.migrate_schema().await
    }

    /// Builds the pool; no connection is made yet.
    fn connect(url: &str, mut options: PostgresOptions) -> Result<Self, StoreError> {
        let (url, schema) = split_schema_param(url);
        if options.schema.is_none() {
            options.schema = schema;
        }
        let (url, group_commit) = super::take_query_param(&url, "group_commit");
        match group_commit.as_deref() {
            None => {}
            Some("on" | "true") => options.group_commit = true,
            Some("off" | "false") => options.group_commit = false,
            Some(other) => {
                return Err(fail(
                    "open",
                    format!("group_commit={other}: expected on or off"),
                ))
            }
        }
        let (url, ssl_mode, rootcert) = tls::take_params(&url).map_err(|e| fail("open", e))?;
        let connector = tls::Connector::new(ssl_mode, rootcert).map_err(|e| fail("open", e))?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| fail("open", format!("invalid PostgreSQL URL: {e}")))?;
        config.ssl_mode(connector.driver_mode());
        config.connect_timeout(options.connect_timeout);
        // Notice a peer that vanished without closing (a partition, a
        // powered-off host) on idle connections too.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.keepalives_interval(Duration::from_secs(5));
        config.keepalives_retries(3);
        if config.get_application_name().is_none() {
            config.application_name("idem");
        }
        let statement_ms = options.statement_timeout.as_millis().max(1);
        let mut server_options = config.get_options().unwrap_or_default().to_owned();
        // Plans are left to PostgreSQL (`plan_cache_mode = auto`): forcing
        // generic plans saved the batch statements' planning, but a plan
        // made on a connection's first statement against a still-empty
        // table stays that connection's plan, and throughput then fell by
        // half as the table grew (docs/benchmarks.md).
        server_options.push_str(&format!(
            " -c statement_timeout={statement_ms} -c lock_timeout={statement_ms} \
             -c idle_in_transaction_session_timeout={}",
            statement_ms * 5
        ));
        if let Some(schema) = &options.schema {
            if !schema::valid_schema_name(schema) {
                return Err(fail(
                    "open",
                    format!("schema name {schema:?}: use letters, digits and `_` only"),
                ));
            }
            server_options.push_str(&format!(" -c search_path={schema}"));
        }
        config.options(server_options.trim_start());
        let namespace = options.schema.clone().unwrap_or_default();
        let manager = Manager::from_connect(
            config.clone(),
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.operation_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| fail("open", format!("cannot build the connection pool: {e}")))?;
        let connections = Connections {
            pool,
            connector,
            operation_timeout: options.operation_timeout,
        };
        let batches = options
            .group_commit
            .then(|| batch::Batches::start(connections.clone()));
        Ok(PostgresStore {
            connections,
            options,
            config,
            batches,
            namespace,
            wakeups: Wakeups::new(),
        })
    }

    async fn migrate_schema(&self) -> Result<MigrationReport, StoreError> {
        let op = "migrate";
        let deadline = Instant::now() + self.options.migration_timeout;
        let mut client = self.connections.client(op, deadline).await?;
        let schema = self.options.schema.as_deref();
        let result = tokio::time::timeout_at(deadline, schema::migrate(&mut client, schema)).await;
        match result {
            Ok(Ok(report)) => {
                for (version, name) in &report.applied {
                    tracing::info!(version, name, "postgres store: applied migration");
                }
                Ok(report)
            }
            Ok(Err(schema::MigrateError::Db(e))) => {
                let hint = if e.code()
                    == Some(&tokio_postgres::error::SqlState::INVALID_SCHEMA_NAME)
                {
                    " (the search_path names no existing schema: create it, or add schema=NAME to the URL to have idem create it)"
                } else {
                    ""
                };
                Err(fail(
                    op,
                    format!(
                        "cannot create or upgrade the schema: {}{hint}",
                        db_message(&e)
                    ),
                ))
            }
            Ok(Err(schema::MigrateError::TooNew(v))) => Err(fail(
                op,
                format!(
                    "the database has schema version {v}, newer than this build's {}: upgrade idem",
                    schema::LATEST
                ),
            )),
            Err(_) => {
                drop(Object::take(client));
                Err(fail(
                    op,
                    format!(
                        "migrations did not finish within {:?}",
                        self.options.migration_timeout
                    ),
                ))
            }
        }
    }

    /// Group commit so far: (statements sent, claims and completions they
    /// carried); `None` with [`PostgresOptions::group_commit`] off. For
    /// tests and benchmarks.
    #[doc(hidden)]
    pub fn batch_stats(&self) -> Option<(u64, u64)> {
        self.batches.as_ref().map(batch::Batches::stats)
    }

    /// Warns when the server acknowledges commits before they are durable.
    async fn check_durability(&self) {
        let setting = self
            .connections
            .run("open", self.options.operation_timeout, |client| {
                Box::pin(async move {
                    let row = client.query_one("SHOW synchronous_commit", &[]).await?;
                    Ok(row.try_get::<_, String>(0)?)
                })
            })
            .await;
        if let Ok(setting) = setting {
            if setting == "off" {
                tracing::warn!(
                    "postgres store: synchronous_commit is off: a database crash can lose acknowledged claims and outcomes (see docs/stores.md)"
                );
            }
        }
    }

    async fn owner_write(
        &self,
        op: &'static str,
        sql: &'static str,
        id: &RecordId,
        token: u64,
        extra: Extra,
    ) -> Result<Write, StoreError> {
        let token = rows::token_to_sql(token).map_err(|e| StoreError::new(ENGINE, op, e))?;
        let (scope, key) = (id.scope.as_str().to_owned(), id.key.as_str().to_owned());
        let announcement = announcement(&self.namespace, id);
        self.connections
            .run(op, self.options.operation_timeout, move |client| {
                Box::pin(async move {
                    let stmt = client.prepare_cached(sql).await?;
                    // Renewals return rows updated; the other writes (which
                    // announce) one row: (rows updated, notifications sent).
                    let updated = match &extra {
                        Extra::Lease { lease, clock } => {
                            client
                                .execute(&stmt, &[&scope, &key, &token, lease, clock])
                                .await?
                        }
                        Extra::Announce => {
                            let row = client
                                .query_one(&stmt, &[&scope, &key, &token, &announcement])
                                .await?;
                            u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0)
                        }
                        Extra::Completion(c, clock) => {
                            let (names, values) = rows::header_arrays(&c.response.headers);
                            let status = i32::from(c.response.status);
                            let body = c.response.body.as_deref();
                            // Distances from the caller's reading, added to
                            // the store's clock.
                            let (expires_at, tombstone_until) = (
                                offset(c.now, c.expires_at),
                                offset(c.now, c.tombstone_until),
                            );
                            let row = client
                                .query_one(
                                    &stmt,
                                    &[
                                        &scope,
                                        &key,
                                        &token,
                                        &status,
                                        &names,
                                        &values,
                                        &body,
                                        &expires_at,
                                        &tombstone_until,
                                        &announcement,
                                        clock,
                                    ],
                                )
                                .await?;
                            u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0)
                        }
                    };
                    Ok(if updated == 1 {
                        Write::Written
                    } else {
                        Write::Fenced
                    })
                })
            })
            .await
    }

    /// The `store_now!` parameter of a statement: NULL (the server's
    /// clock), or with [`StoreClock::Caller`] the caller's reading `now`
    /// (bounded, so a horizon's distance added to it cannot overflow).
    fn clock_param(&self, now: Timestamp) -> Option<i64> {
        match self.options.clock {
            StoreClock::Server => None,
            StoreClock::Caller => Some(now.as_millis().clamp(-CALLER_CLOCK_MAX, CALLER_CLOCK_MAX)),
        }
    }

    /// Marks the claim on `id` as waited on; whether it is still in flight.
    async fn mark_waited(&self, id: &RecordId) -> Result<bool, ()> {
        let (scope, key) = (id.scope.as_str().to_owned(), id.key.as_str().to_owned());
        let marked = self
            .connections
            .run("changed", self.options.operation_timeout, move |client| {
                Box::pin(async move {
                    let stmt = client.prepare_cached(rows::MARK_WAITED).await?;
                    Ok(client.execute(&stmt, &[&scope, &key]).await?)
                })
            })
            .await;
        match marked {
            Ok(rows) => Ok(rows == 1),
            Err(e) => {
                tracing::debug!(error = %e, "postgres store: cannot mark a claim as waited on");
                Err(())
            }
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.wakeups.stop();
    }
}

/// The pool and how its connections are opened: what every operation
/// runs on, the store's own and its batches'.
#[derive(Clone)]
pub(super) struct Connections {
    pool: Pool,
    connector: tls::Connector,
    operation_timeout: Duration,
}

impl Connections {
    /// A pooled connection, or an error once `deadline` passes.
    async fn client(&self, op: &'static str, deadline: Instant) -> Result<Object, StoreError> {
        match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => {
                let tls = match &e {
                    PoolError::Backend(e) => self.connector.explain(e),
                    _ => None,
                };
                let e = chain(&e);
                Err(fail(
                    op,
                    match tls {
                        Some(tls) => format!("cannot get a connection: {e}: {tls}"),
                        None => format!("cannot get a connection: {e}"),
                    },
                ))
            }
            Err(_) => Err(fail(
                op,
                format!("no connection within {:?}", self.operation_timeout),
            )),
        }
    }

    /// Runs one operation with a pooled connection under the operation's
    /// deadline. A connection whose operation ran out of time may be stuck
    /// on a dead peer: it is discarded, not returned to the pool.
    async fn run<T>(
        &self,
        op: &'static str,
        bound: Duration,
        f: impl for<'c> FnOnce(&'c mut Object) -> BoxFuture<'c, Result<T, RowError>>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + bound;
        let mut client = self.client(op, deadline).await?;
        let result = tokio::time::timeout_at(deadline, f(&mut client)).await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(row_error(op, e)),
            Err(_) => {
                drop(Object::take(client));
                Err(fail(op, format!("no answer within {bound:?}")))
            }
        }
    }
}

/// What the owner's final write notifies for `id`: 16 hex digits of a
/// 64-bit FNV-1a hash of the schema (`namespace`), the scope and the key,
/// each length-prefixed. Listeners of every schema of a database share the
/// channel; a collision only costs a spurious wake-up.
fn announcement(namespace: &str, id: &RecordId) -> String {
    format!("{:016x}", announcement_hash(namespace, id))
}

fn announcement_hash(namespace: &str, id: &RecordId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(namespace.as_bytes());
    eat(id.scope.as_str().as_bytes());
    eat(id.key.as_str().as_bytes());
    h
}

/// The subscriber: one connection outside the pool that LISTENs on
/// [`rows::CHANNEL`] and wakes the waiters of each record announced;
/// reconnects (with a capped backoff) whenever the connection fails or a
/// keep-alive query goes unanswered.
async fn listen(
    wakeups: Arc<Wakeups<u64>>,
    config: tokio_postgres::Config,
    connector: tls::Connector,
    bound: Duration,
) {
    let mut pause = wakeups::RECONNECT_MIN;
    loop {
        match tokio::time::timeout(bound, connector.connect(&config)).await {
            Ok(Ok((client, connection))) => {
                if listen_on(&wakeups, &client, connection, bound).await {
                    pause = wakeups::RECONNECT_MIN;
                }
                wakeups.set_listening(false);
            }
            Ok(Err(e)) => {
                let tls = connector.explain(&e).unwrap_or_default();
                tracing::debug!(error = %chain(&e), tls, "postgres store: the LISTEN connection failed")
            }
            Err(_) => tracing::debug!("postgres store: the LISTEN connection timed out"),
        }
        tokio::time::sleep(pause).await;
        pause = wakeups::backoff(pause);
    }
}

/// Listens on one connection until it fails; whether LISTEN took effect.
async fn listen_on(
    wakeups: &Wakeups<u64>,
    client: &tokio_postgres::Client,
    mut connection: tls::Connection,
    bound: Duration,
) -> bool {
    // The connection delivers the notifications, and carries the client's
    // queries: it is polled throughout.
    let deliver = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if let Ok(hash) = u64::from_str_radix(n.payload(), 16) {
                        wakeups.wake(&hash);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %chain(&e), "postgres store: the LISTEN connection failed");
                    return;
                }
                None => return,
            }
        }
    };
    tokio::pin!(deliver);
    let statement = format!("LISTEN {}", rows::CHANNEL);
    tokio::select! {
        () = &mut deliver => return false,
        result = tokio::time::timeout(bound, client.batch_execute(&statement)) => {
            if !matches!(result, Ok(Ok(()))) {
                return false;
            }
        }
    }
    wakeups.set_listening(true);
    loop {
        tokio::select! {
            () = &mut deliver => return true,
            () = tokio::time::sleep(wakeups::KEEPALIVE) => {}
        }
        tokio::select! {
            () = &mut deliver => return true,
            result = tokio::time::timeout(bound, client.simple_query("SELECT 1")) => {
                if !matches!(result, Ok(Ok(_))) {
                    tracing::debug!("postgres store: the LISTEN connection stopped answering");
                    return true;
                }
            }
        }
    }
}

fn split_schema_param(url: &str) -> (String, Option<String>) {
    super::take_query_param(url, "schema")
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The values an owner's write sets besides the state.
enum Extra {
    /// A renewal's new lease, as a distance from the caller's reading, and
    /// the clock parameter.
    Lease { lease: i64, clock: Option<i64> },
    /// Release or mark-unknown: nothing but the announcement.
    Announce,
    /// A completion's response and horizons, and the clock parameter.
    Completion(Box<Completion>, Option<i64>),
}

/// Claims `claim.id` (see the module documentation). `clock` is the
/// `store_now!` parameter: NULL for the server's clock.
async fn claim_on(
    client: &mut Object,
    claim: &Claim,
    clock: Option<i64>,
) -> Result<ClaimOutcome, RowError> {
    let (scope, key) = (claim.id.scope.as_str(), claim.id.key.as_str());
    let (version, digest) = (
        i32::from(claim.fingerprint.version),
        &claim.fingerprint.digest[..],
    );
    let (lease, expires, tombstone) = (
        offset(claim.now, claim.lease_until),
        offset(claim.now, claim.expires_at),
        offset(claim.now, claim.tombstone_until),
    );
    let attempt = rows::attempt_to_sql(claim.attempt);
    let holder = claim.holder.as_deref();
    let insert = client.prepare_cached(rows::INSERT_IF_ABSENT).await?;
    let select = client.prepare_cached(rows::SELECT_AT).await?;
    for _ in 0..CLAIM_ATTEMPTS {
        let inserted = client
            .query_opt(
                &insert,
                &[
                    &scope, &key, &version, &digest, &lease, &expires, &tombstone, &attempt,
                    &clock, &holder,
                ],
            )
            .await?;
        if let Some(row) = inserted {
            let token: i64 = row.try_get(0)?;
            let token = u64::try_from(token)
                .map_err(|_| Corrupt(format!("negative fencing token {token}")))?;
            return Ok(ClaimOutcome::Claimed { token });
        }
        // The key is taken. Most often the rule answers from the record as
        // it is (in progress, replay, mismatch...): that answer is the
        // latest committed state, read without a lock, at the store's time
        // read in the same statement.
        let Some(row) = client.query_opt(&select, &[&scope, &key, &clock]).await? else {
            continue; // swept in between: try the insert again
        };
        let mut slot = Some(read_record(&row, 0, claim.id.clone(), Body::Load)?);
        let at_store = at_store_time(claim, row.try_get(rows::COLUMNS)?);
        if let existing @ ClaimOutcome::Existing { .. } = apply_claim(&mut slot, &at_store) {
            return Ok(existing);
        }
        // The rule would claim it again: decide under the row lock, so two
        // gateways cannot both take it over.
        let tx = client.transaction().await?;
        let lock = tx.prepare_cached(rows::SELECT_FOR_UPDATE_AT).await?;
        let Some(row) = tx.query_opt(&lock, &[&scope, &key, &clock]).await? else {
            tx.rollback().await?;
            continue;
        };
        let mut slot = Some(read_record(&row, 0, claim.id.clone(), Body::Load)?);
        let at_store = at_store_time(claim, row.try_get(rows::COLUMNS)?);
        let outcome = apply_claim(&mut slot, &at_store);
        if let ClaimOutcome::Claimed { .. } = outcome {
            let record = slot.as_ref().expect("a claim leaves a record");
            let overwrite = tx.prepare_cached(rows::OVERWRITE).await?;
            tx.execute(&overwrite, &RowValues::of(record)?.params())
                .await?;
        }
        tx.commit().await?;
        return Ok(outcome);
    }
    Err(RowError::Corrupt(Corrupt(format!(
        "the record vanished {CLAIM_ATTEMPTS} times in a row while claiming it"
    ))))
}

/// `claim` as made at the store's clock reading `now`: each horizon keeps
/// its distance from the caller's reading (bounded as the `INSERT` bounds
/// it).
fn at_store_time(claim: &Claim, now: i64) -> Claim {
    let now = Timestamp(now);
    Claim {
        now,
        lease_until: now.shifted(offset(claim.now, claim.lease_until)),
        expires_at: now.shifted(offset(claim.now, claim.expires_at)),
        tombstone_until: now.shifted(offset(claim.now, claim.tombstone_until)),
        ..claim.clone()
    }
}

/// Sweeps at most `limit` records in transactions of [`SWEEP_CHUNK`], at
/// the store's clock (read once; `clock` is the `store_now!` parameter).
async fn sweep_on(
    client: &mut Object,
    clock: Option<i64>,
    limit: usize,
) -> Result<SweepReport, RowError> {
    let stmt = client.prepare_cached(rows::NOW).await?;
    let now = Timestamp(client.query_one(&stmt, &[&clock]).await?.try_get(0)?);
    let mut report = SweepReport::default();
    let mut remaining = limit;
    while remaining > 0 {
        let budget = remaining.min(SWEEP_CHUNK);
        let tx = client.transaction().await?;
        let mut found = 0;
        let mut chunk = SweepReport::default();
        // Each query's records are acted on before the next query runs, so
        // a record two queries match is found (and counted) once.
        for sql in rows::SWEEP_QUERIES {
            let want = budget - found;
            if want == 0 {
                break;
            }
            let stmt = tx.prepare_cached(sql).await?;
            let want_sql = i64::try_from(want).unwrap_or(i64::MAX);
            let candidates = tx.query(&stmt, &[&now.as_millis(), &want_sql]).await?;
            found += candidates.len();
            let (mut delete, mut tombstone) = (Keys::default(), Keys::default());
            for row in &candidates {
                let scope: String = row.try_get(0)?;
                let key: String = row.try_get(1)?;
                let id = RecordId {
                    scope: Scope::from_stored(scope.as_str()),
                    key: rows::key_from_stored(&key)?,
                };
                let mut record: Record = read_record(row, 2, id, Body::PresenceOnly)?;
                match sweep_action(&record, now) {
                    SweepAction::Keep => {}
                    SweepAction::Delete => delete.push(scope, key),
                    SweepAction::Tombstone => {
                        to_tombstone(&mut record);
                        // TOMBSTONE_MANY writes what to_tombstone leaves.
                        debug_assert!(record
                            .response
                            .as_ref()
                            .is_none_or(|r| r.body.is_none() && r.headers.is_empty()));
                        tombstone.push(scope, key);
                    }
                }
            }
            if !delete.is_empty() {
                let stmt = tx.prepare_cached(rows::DELETE_MANY).await?;
                chunk.deleted += tx.execute(&stmt, &[&delete.scopes, &delete.keys]).await? as usize;
            }
            if !tombstone.is_empty() {
                let stmt = tx.prepare_cached(rows::TOMBSTONE_MANY).await?;
                chunk.tombstoned += tx
                    .execute(&stmt, &[&tombstone.scopes, &tombstone.keys])
                    .await? as usize;
            }
        }
        tx.commit().await?;
        let touched = chunk.deleted + chunk.tombstoned;
        report.deleted += chunk.deleted;
        report.tombstoned += chunk.tombstoned;
        remaining -= touched.min(remaining);
        if found < budget || touched == 0 {
            break;
        }
    }
    Ok(report)
}

/// Applies an operator's action under the row lock, at the store's clock
/// (`clock` is the `store_now!` parameter), and writes the decided record
/// back whole (see the module documentation).
async fn operate_on(
    client: &mut Object,
    id: &RecordId,
    token: u64,
    action: &OperatorAction,
    clock: Option<i64>,
    announcement: &str,
) -> Result<Result<Record, OperatorRefusal>, RowError> {
    let (scope, key) = (id.scope.as_str(), id.key.as_str());
    let tx = client.transaction().await?;
    let lock = tx.prepare_cached(rows::SELECT_FOR_UPDATE_AT).await?;
    let Some(row) = tx.query_opt(&lock, &[&scope, &key, &clock]).await? else {
        tx.rollback().await?;
        return Ok(Err(OperatorRefusal::NotFound));
    };
    let record = read_record(&row, 0, id.clone(), Body::Load)?;
    let now = Timestamp(row.try_get(rows::COLUMNS)?);
    let next = match decide_operator(Some(&record), token, action, now) {
        Ok(next) => next,
        Err(refusal) => {
            tx.rollback().await?;
            return Ok(Err(refusal));
        }
    };
    let write = tx.prepare_cached(rows::OPERATOR_WRITE).await?;
    let values = RowValues::of(&next)?;
    let mut params = values.params().to_vec();
    params.push(&announcement);
    let row = tx.query_one(&write, &params).await?;
    if row.try_get::<_, i64>(0)? != 1 {
        // The row is locked, so it cannot have gone: treat it as damage
        // rather than claim a write that did not happen.
        return Err(RowError::Corrupt(Corrupt(
            "the locked record was not updated".into(),
        )));
    }
    tx.commit().await?;
    Ok(Ok(next))
}

/// Pages through the unsettled rows after the cursor and keeps those that
/// hold `query.state` at the store's clock (`clock` is the `store_now!`
/// parameter), until `query.limit` records or the end.
async fn list_on(
    client: &mut Object,
    query: &ListQuery,
    clock: Option<i64>,
) -> Result<Vec<Record>, RowError> {
    let mut found = Vec::new();
    if query.limit == 0 {
        return Ok(found);
    }
    let stmt = client.prepare_cached(rows::NOW).await?;
    let now = Timestamp(client.query_one(&stmt, &[&clock]).await?.try_get(0)?);
    let page = client.prepare_cached(rows::LIST_PAGE).await?;
    let mut after: Option<(i64, String, String)> = query.after.as_ref().map(|c| {
        (
            c.claimed_at.as_millis(),
            c.id.scope.as_str().to_owned(),
            c.id.key.as_str().to_owned(),
        )
    });
    // Pages a little larger than what is still wanted: rows of the other
    // unsettled state are skipped in Rust.
    let size = i64::try_from(query.limit.clamp(16, 1_000)).unwrap_or(1_000);
    loop {
        let (at, scope, key) = match &after {
            Some((at, scope, key)) => (Some(*at), Some(scope.as_str()), Some(key.as_str())),
            None => (None, None, None),
        };
        let rows = client.query(&page, &[&at, &scope, &key, &size]).await?;
        let full = rows.len() as i64 == size;
        for row in &rows {
            let scope: String = row.try_get(0)?;
            let key: String = row.try_get(1)?;
            let id = RecordId {
                scope: Scope::from_stored(scope.as_str()),
                key: rows::key_from_stored(&key)?,
            };
            let record = read_record(row, 2, id, Body::Load)?;
            after = Some((record.claimed_at.as_millis(), scope, key));
            if query.state.holds(&record, now) {
                found.push(record);
                if found.len() >= query.limit {
                    return Ok(found);
                }
            }
        }
        if !full {
            return Ok(found);
        }
    }
}

/// (scope, key) pairs as two arrays, for `unnest`.
#[derive(Default)]
struct Keys {
    scopes: Vec<String>,
    keys: Vec<String>,
}

impl Keys {
    fn push(&mut self, scope: String, key: String) {
        self.scopes.push(scope);
        self.keys.push(key);
    }

    fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        let clock = self.clock_param(claim.now);
        let claim = match &self.batches {
            Some(batches) => match batches.claim(claim, clock).await? {
                Ok(outcome) => return Ok(outcome),
                Err(alone) => alone,
            },
            None => claim,
        };
        self.connections
            .run("claim", self.options.operation_timeout, |client| {
                Box::pin(async move { claim_on(client, &claim, clock).await })
            })
            .await
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Write, StoreError> {
        let extra = Extra::Lease {
            lease: offset(now, lease_until),
            clock: self.clock_param(now),
        };
        self.owner_write("renew", rows::RENEW, id, token, extra)
            .await
    }

    async fn complete(
        &self,
        id: &RecordId,
        token: u64,
        completion: Completion,
    ) -> Result<Write, StoreError> {
        let clock = self.clock_param(completion.now);
        let completion = match &self.batches {
            Some(batches) => {
                let token = rows::token_to_sql(token)
                    .map_err(|e| StoreError::new(ENGINE, "complete", e))?;
                let announcement = announcement(&self.namespace, id);
                match batches
                    .complete(id.clone(), token, completion, clock, announcement)
                    .await?
                {
                    Ok(write) => return Ok(write),
                    Err(alone) => alone,
                }
            }
            None => completion,
        };
        self.owner_write(
            "complete",
            rows::COMPLETE,
            id,
            token,
            Extra::Completion(Box::new(completion), clock),
        )
        .await
    }

    async fn mark_unknown(
        &self,
        id: &RecordId,
        token: u64,
        _now: Timestamp,
    ) -> Result<Write, StoreError> {
        self.owner_write(
            "mark_unknown",
            rows::MARK_UNKNOWN,
            id,
            token,
            Extra::Announce,
        )
        .await
    }

    async fn release(&self, id: &RecordId, token: u64) -> Result<Write, StoreError> {
        self.owner_write("release", rows::RELEASE, id, token, Extra::Announce)
            .await
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let id = id.clone();
        self.connections
            .run("get", self.options.operation_timeout, move |client| {
                Box::pin(async move {
                    let stmt = client.prepare_cached(rows::SELECT).await?;
                    let row = client
                        .query_opt(&stmt, &[&id.scope.as_str(), &id.key.as_str()])
                        .await?;
                    row.map(|row| read_record(&row, 0, id, Body::Load))
                        .transpose()
                })
            })
            .await
    }

    /// With [`StoreClock::Server`] `now` is ignored: the sweep runs at the
    /// database server's clock.
    async fn sweep(&self, now: Timestamp, limit: usize) -> Result<SweepReport, StoreError> {
        let clock = self.clock_param(now);
        self.connections
            .run(
                "sweep",
                self.options.operation_timeout * 10,
                move |client| Box::pin(sweep_on(client, clock, limit)),
            )
            .await
    }

    /// With [`StoreClock::Server`] `now` is ignored: the action is decided
    /// at the database server's clock, read under the row lock.
    async fn operate(
        &self,
        id: &RecordId,
        token: u64,
        action: OperatorAction,
        now: Timestamp,
    ) -> Result<Result<Record, OperatorRefusal>, StoreError> {
        let clock = self.clock_param(now);
        let announcement = announcement(&self.namespace, id);
        let id = id.clone();
        self.connections
            .run("operate", self.options.operation_timeout, move |client| {
                Box::pin(async move {
                    operate_on(client, &id, token, &action, clock, &announcement).await
                })
            })
            .await
    }

    /// With [`StoreClock::Server`] `query.now` is ignored: states are read
    /// at the database server's clock.
    async fn list(&self, query: ListQuery) -> Result<Vec<Record>, StoreError> {
        let clock = self.clock_param(query.now);
        self.connections
            .run("list", self.options.operation_timeout * 10, move |client| {
                Box::pin(async move { list_on(client, &query, clock).await })
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.connections
            .run("ping", self.options.operation_timeout, |client| {
                Box::pin(async move {
                    client.simple_query("SELECT 1").await?;
                    Ok(())
                })
            })
            .await
    }

    /// Waits for the owner's announcement (LISTEN/NOTIFY, see
    /// docs/stores.md), or `timeout`. The first call starts the LISTEN
    /// connection.
    async fn changed(&self, id: &RecordId, timeout: Duration) {
        let wait = async {
            self.wakeups.start(|wakeups| {
                let (config, bound) = (self.config.clone(), self.options.operation_timeout);
                tokio::spawn(listen(
                    wakeups,
                    config,
                    self.connections.connector.clone(),
                    bound,
                ))
            });
            let hash = announcement_hash(&self.namespace, id);
            self.wakeups.wait(hash, || self.mark_waited(id)).await;
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    fn engine(&self) -> &'static str {
        ENGINE
    }
}

const ENGINE: &str = "postgres";

fn fail(op: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::new(ENGINE, op, message.into())
}

/// The server's own message when there is one (tokio-postgres's Display
/// only says "db error"), else the error with its causes.
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => chain(e),
    }
}

/// An error and its sources, e.g. "error connecting to server: Connection
/// refused (os error 111)" (tokio-postgres and deadpool keep the cause out
/// of their Display).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn row_error(op: &'static str, e: RowError) -> StoreError {
    match e {
        RowError::Db(e) => fail(op, db_message(&e)),
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
    async fn group_commit_is_off_unless_the_url_turns_it_on() {
        let url = "postgres://u@127.0.0.1:1/db?sslmode=disable";
        let off = PostgresStore::connect(url, PostgresOptions::default()).unwrap();
        assert!(off.batch_stats().is_none());
        let on = PostgresStore::connect(
            &format!("{url}&group_commit=on"),
            PostgresOptions::default(),
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
        let err = bad.err().expect("refused").to_string();
        assert!(err.contains("group_commit=maybe"), "{err}");
    }
}
