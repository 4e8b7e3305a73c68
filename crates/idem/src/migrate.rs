//! `idem migrate`: create or upgrade a store's schema ahead of a deploy.
//!
//! Gateways migrate on start too (under a lock, so many at once are safe);
//! running this first keeps schema changes out of the start of a rollout
//! and shows what they are.

use anyhow::Context;
use clap::Args;
use idem_store::StoreSpec;

/// Flags of `idem migrate`.
#[derive(Args)]
pub(crate) struct MigrateArgs {
    /// The store: postgres://USER@HOST:PORT/DB, or sqlite:PATH (Redis and
    /// memory keep no schema; for them this only checks the store answers).
    #[arg(long, value_name = "STORE")]
    store: StoreSpec,
}

pub(crate) fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let spec = args.store;
    runtime.block_on(async move {
        match &spec {
            StoreSpec::Postgres { url } => {
                let report =
                    idem_store::PostgresStore::migrate(url, idem_store::PostgresOptions::default())
                        .await
                        .with_context(|| format!("cannot migrate {spec}"))?;
                for (version, name) in &report.applied {
                    println!("applied migration {version} ({name})");
                }
                if report.applied.is_empty() {
                    println!(
                        "{spec}: schema is at version {}, nothing to apply",
                        report.version
                    );
                } else {
                    println!("{spec}: schema is now at version {}", report.version);
                }
            }
            StoreSpec::Sqlite { path, .. } => {
                // Opening creates or upgrades the schema, in one transaction.
                idem_store::SqliteStore::open(path, idem_store::SqliteOptions::default())
                    .with_context(|| format!("cannot migrate {spec}"))?;
                println!("{spec}: schema is current");
            }
            StoreSpec::Memory => println!("memory: nothing to migrate"),
            StoreSpec::Redis { .. } | StoreSpec::RedisCluster { .. } => {
                idem_store::open(&spec).await?;
                println!("{spec}: reachable; Redis keeps no schema, nothing to migrate");
            }
        }
        Ok(())
    })
}
