//! Opening a store (the pool, TLS, the server-side timeouts, the
//! migrations) and running each operation on a pooled connection under its
//! deadline.

use super::pool::Connections;
use super::{
    batch, db_message, fail, fail_with, schema, split_schema_param, tls, MigrationReport,
    PostgresOptions, PostgresStore,
};
use crate::engine::wakeups::Wakeups;
use crate::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio::time::Instant;

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
    pub(super) fn connect(url: &str, mut options: PostgresOptions) -> Result<Self, StoreError> {
        let (url, schema) = split_schema_param(url);
        if options.schema.is_none() {
            options.schema = schema;
        }
        let (url, group_commit) = crate::engine::take_query_param(&url, "group_commit");
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
        // The store's own statements leave plans to PostgreSQL
        // (`plan_cache_mode = auto`): forcing generic plans saved planning,
        // but a plan made against a still-empty table stays the
        // connection's plan, and throughput fell by half as the table grew
        // (docs/benchmarks.md). The batches' connections force custom
        // plans instead (below).
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
        let pool = |config: tokio_postgres::Config, size: usize| {
            let manager = Manager::from_connect(
                config,
                connector.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            let pool = Pool::builder(manager)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(options.operation_timeout))
                .create_timeout(Some(options.connect_timeout))
                .recycle_timeout(Some(options.connect_timeout))
                .build()
                .map_err(|e| fail("open", format!("cannot build the connection pool: {e}")))?;
            Ok::<_, StoreError>(Connections::new(
                pool,
                connector.clone(),
                options.operation_timeout,
            ))
        };
        let connections = pool(config.clone(), options.pool_size.max(1))?;
        let batches = if options.group_commit {
            // Each batch statement planned for its own arrays (see the
            // batch module's doc), on connections of the batches' own.
            let mut batch_config = config.clone();
            batch_config.options(format!(
                "{} -c plan_cache_mode=force_custom_plan",
                server_options.trim_start()
            ));
            let batch_connections = pool(batch_config, batch::BATCH_CONNECTIONS)?;
            Some(batch::Batches::start(batch_connections))
        } else {
            None
        };
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
                Err(match e.as_db_error() {
                    Some(db) => fail(
                        op,
                        format!(
                            "cannot create or upgrade the schema: {}{hint}",
                            db_message(db)
                        ),
                    ),
                    None => fail_with(op, "cannot create or upgrade the schema", e),
                })
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
}
