//! `bench-prefill`: fills an idem store with completed, unexpired records
//! before a benchmark measures it, for the `SWEEP=records` rows of
//! `bench/run.sh` ("how cost grows with the records stored").
//!
//! The schema must already exist, made by the gateway itself (the script
//! starts it once on the fresh store and stops it): this tool only inserts
//! rows with plain SQL into the existing `idem_records` table, in the
//! columns the store writes for a completed record. Keys are
//! `p-<n>` (`n` zero-padded to 10 digits, so rows arrive in key order) in
//! the scope `prefill` (`--scope`); expiry and tombstone times lie a
//! century ahead, so no sweep removes them during the run.
//!
//! - SQLite: one recursive-CTE `INSERT … SELECT` per batch of `--batch`
//!   rows, each batch a transaction, `synchronous=OFF` on this connection.
//! - PostgreSQL: one `INSERT … SELECT … FROM generate_series` per batch
//!   (autocommit, `synchronous_commit = off`), then `VACUUM ANALYZE`.
//!
//! Prints one line, `prefilled N records into WHERE in S s`, on stdout.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "bench-prefill",
    about = "Fill an idem store with completed, unexpired records (benchmark set-up)"
)]
struct Args {
    /// Which store to fill.
    #[command(subcommand)]
    store: Store,
    /// How many records to insert.
    #[arg(long, global = true, default_value_t = 0)]
    records: u64,
    /// The scope of the inserted records.
    #[arg(long, global = true, default_value = "prefill")]
    scope: String,
    /// Rows per INSERT statement (and per transaction).
    #[arg(long, global = true, default_value_t = 500_000)]
    batch: u64,
}

/// The store to fill.
#[derive(Debug, Subcommand)]
enum Store {
    /// A SQLite file the gateway has created (and migrated) already.
    Sqlite {
        /// The database file.
        #[arg(long)]
        path: PathBuf,
    },
    /// A PostgreSQL schema the gateway has created (and migrated) already.
    Postgres {
        /// Connection URL, e.g. postgres://postgres@127.0.0.1:5432/test
        /// (without idem's `?schema=`).
        #[arg(long)]
        url: String,
        /// The schema that holds `idem_records`.
        #[arg(long)]
        schema: String,
    },
}

/// The response body of every inserted record: what bench-upstream answers.
const BODY: &[u8] = br#"{"id":0,"ok":true}"#;

/// Timestamps of the inserted rows, in milliseconds since the Unix epoch.
struct Times {
    /// Claim time (and the lease's end, already past): now.
    now: i64,
    /// Base of `expires_at` and `tombstone_until` (plus the row number):
    /// a century from now.
    far: i64,
}

impl Times {
    fn new() -> anyhow::Result<Self> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?;
        let now = i64::try_from(now.as_millis()).context("the system clock is out of range")?;
        let century = i64::try_from(Duration::from_secs(100 * 365 * 86_400).as_millis())
            .context("a century in milliseconds")?;
        Ok(Self {
            now,
            far: now + century,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.records > 9_999_999_999 {
        bail!("--records must be below 10^10 (keys are p- and 10 digits)");
    }
    let times = Times::new()?;
    let started = Instant::now();
    let place = match &args.store {
        Store::Sqlite { path } => {
            fill_sqlite(path, &args, &times)?;
            format!("SQLite {}", path.display())
        }
        Store::Postgres { url, schema } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(fill_postgres(url, schema, &args, &times))?;
            format!("PostgreSQL schema {schema}")
        }
    };
    println!(
        "prefilled {} records into {place} in {:.1} s",
        args.records,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The batches `[first, last]` (1-based, inclusive) covering `1..=records`.
fn batches(records: u64, batch: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..records.div_ceil(batch)).map(move |i| {
        let first = i * batch + 1;
        (first, (first + batch - 1).min(records))
    })
}

fn fill_sqlite(path: &std::path::Path, args: &Args, times: &Times) -> anyhow::Result<()> {
    use rusqlite::{params, Connection, OpenFlags};

    if !path.is_file() {
        bail!(
            "{} does not exist: start the gateway on it once first, so that it creates the schema",
            path.display()
        );
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'idem_records'",
            [],
            |row| row.get(0),
        )
        .with_context(|| format!("reading the schema of {}", path.display()))?;
    if tables != 1 {
        bail!(
            "{} has no idem_records table: start the gateway on it once first, so that it creates the schema",
            path.display()
        );
    }
    // A benchmark fixture: a crash mid-fill only loses the fixture.
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -524_288)?; // 512 MiB
    let mut done = 0;
    for (first, last) in batches(args.records, args.batch) {
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO idem_records (scope, key, state, token, fp_version, fp_digest, \
             lease_until, expires_at, tombstone_until, claimed_at, has_response, status, \
             headers, body, attempt, holder) \
             WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
             SELECT ?3, printf('p-%010d', i), 2, 1, 1, randomblob(32), \
             ?4, ?5 + i, ?5 + i, ?4, 1, 201, NULL, ?6, i, NULL FROM n",
            params![
                i64::try_from(first)?,
                i64::try_from(last)?,
                args.scope,
                times.now,
                times.far,
                BODY
            ],
        )
        .with_context(|| {
            format!(
                "inserting records {first} to {last} into {}",
                path.display()
            )
        })?;
        tx.commit()?;
        done = last;
        progress(done, args.records);
    }
    debug_assert_eq!(done, args.records);
    Ok(())
}

async fn fill_postgres(url: &str, schema: &str, args: &Args, times: &Times) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("bench-prefill: PostgreSQL connection error: {e}");
        }
    });
    let table = format!("{}.idem_records", quote_ident(schema));
    let found = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name = 'idem_records'",
            &[&schema],
        )
        .await
        .context("reading the schema")?;
    if found.get::<_, i64>(0) != 1 {
        bail!(
            "schema {schema} has no idem_records table: start the gateway on it once first, so that it creates the schema"
        );
    }
    client
        .batch_execute("SET synchronous_commit = off; SET maintenance_work_mem = '256MB'")
        .await?;
    let insert = client
        .prepare(&format!(
            "INSERT INTO {table} (scope, key, state, token, fp_version, fp_digest, \
             lease_until, expires_at, tombstone_until, claimed_at, has_response, status, \
             header_names, header_values, body, attempt, holder) \
             SELECT $1::text, 'p-' || lpad(n::text, 10, '0'), 2, 1, 1, sha256(n::text::bytea), \
             $2::bigint, $3::bigint + n, $3::bigint + n, $2::bigint, true, 201, NULL, NULL, \
             $4::bytea, n, NULL \
             FROM generate_series($5::bigint, $6::bigint) AS n"
        ))
        .await
        .with_context(|| format!("preparing the insert into {table}"))?;
    for (first, last) in batches(args.records, args.batch) {
        let (first_i, last_i) = (i64::try_from(first)?, i64::try_from(last)?);
        client
            .execute(
                &insert,
                &[
                    &args.scope,
                    &times.now,
                    &times.far,
                    &BODY,
                    &first_i,
                    &last_i,
                ],
            )
            .await
            .with_context(|| format!("inserting records {first} to {last} into {table}"))?;
        progress(last, args.records);
    }
    if args.records > 0 {
        let started = Instant::now();
        client
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await
            .with_context(|| format!("VACUUM ANALYZE {table}"))?;
        eprintln!(
            "bench-prefill: VACUUM ANALYZE took {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// A PostgreSQL identifier, double-quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// One progress line on stderr per batch.
fn progress(done: u64, total: u64) {
    eprintln!("bench-prefill: {done}/{total} records");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_row_once() {
        assert_eq!(batches(0, 10).count(), 0);
        assert_eq!(batches(10, 10).collect::<Vec<_>>(), vec![(1, 10)]);
        assert_eq!(
            batches(25, 10).collect::<Vec<_>>(),
            vec![(1, 10), (11, 20), (21, 25)]
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("idem_bench_1"), "\"idem_bench_1\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
