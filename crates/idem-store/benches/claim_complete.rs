//! The cost of one claim + complete (the store work of one unique-key
//! request) per engine, one at a time, on a fresh key each iteration:
//! `cargo bench -p idem-store --bench claim_complete`.
//!
//! PostgreSQL and Redis are measured against the servers the tests use
//! (`IDEM_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/test;
//! `IDEM_TEST_REDIS_URL`, default redis://127.0.0.1:6379/), in a fresh schema
//! or key prefix removed afterwards; an engine whose server is not there
//! is skipped. This is latency of one request at a time (round trips and
//! fsyncs included), not throughput under concurrency.

use bytes::Bytes;
use divan::Bencher;
use idem_core::*;
use idem_store::{Claim, ClaimOutcome, Completion, Store, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn main() {
    divan::main();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn retention() -> Retention {
    Retention::default()
}

fn next_claim() -> Claim {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let key = format!("bench-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let id = RecordId {
        scope: Scope::from_stored(
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
        key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
    };
    let fingerprint = Fingerprint::compute(&FingerprintInput {
        method: "POST",
        path: "/v1/charges",
        query: None,
        content_type: Some(b"application/json"),
        extra_headers: &[],
        body: br#"{"amount":100,"currency":"eur"}"#,
    });
    Claim::new(id, fingerprint, Timestamp::now(), &retention(), false)
}

fn response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            (
                "content-type".into(),
                Bytes::from_static(b"application/json"),
            ),
            ("x-request-id".into(), Bytes::from_static(b"req_8f3a2b")),
        ],
        body: Some(Bytes::from_static(
            br#"{"id":"ch_1","amount":100,"currency":"eur","status":"succeeded"}"#,
        )),
    }
}

async fn claim_and_complete(store: &dyn Store, claim: Claim) {
    let id = claim.id.clone();
    let now = claim.now;
    let ClaimOutcome::Claimed { token } = store.claim(claim).await.unwrap() else {
        panic!("a fresh key is claimed");
    };
    let c = Completion::new(response(), now, &retention());
    assert_eq!(store.complete(&id, token, c).await.unwrap(), Write::Written);
}

fn bench_store(bencher: Bencher<'_, '_>, rt: &tokio::runtime::Runtime, store: Arc<dyn Store>) {
    bencher
        .with_inputs(next_claim)
        .bench_local_values(|claim| rt.block_on(claim_and_complete(&*store, claim)));
}

#[divan::bench(max_time = 3)]
fn memory(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    bench_store(bencher, &rt, Arc::new(idem_store::MemoryStore::new()));
}

#[divan::bench(max_time = 3)]
fn sqlite(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = idem_store::SqliteStore::open(
        &dir.path().join("bench.db"),
        idem_store::SqliteOptions::default(),
    )
    .unwrap();
    bench_store(bencher, &rt, Arc::new(store));
}

#[divan::bench(max_time = 3)]
fn postgres(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    let url = std::env::var("IDEM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("idem_bench_{}", std::process::id());
    let options = idem_store::PostgresOptions {
        schema: Some(schema.clone()),
        ..Default::default()
    };
    let store = match rt.block_on(idem_store::PostgresStore::open(&url, options)) {
        Ok(store) => Arc::new(store),
        Err(e) => {
            eprintln!("skipping postgres: {e}");
            return;
        }
    };
    bench_store(bencher, &rt, store.clone());
    drop(store);
    rt.block_on(async {
        if let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            let conn = tokio::spawn(conn);
            let _ = client
                .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await;
            drop(client);
            let _ = conn.await;
        }
    });
}

#[divan::bench(max_time = 3)]
fn redis(bencher: Bencher<'_, '_>) {
    let rt = runtime();
    let url = std::env::var("IDEM_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    let prefix = format!("idem-bench-{}", std::process::id());
    let options = idem_store::RedisOptions {
        prefix: prefix.clone(),
        ..Default::default()
    };
    let store = match rt.block_on(idem_store::RedisStore::open(&url, options)) {
        Ok(store) => Arc::new(store),
        Err(e) => {
            eprintln!("skipping redis: {e}");
            return;
        }
    };
    bench_store(bencher, &rt, store.clone());
    drop(store);
    rt.block_on(async {
        let Ok(client) = ::redis::Client::open(url) else {
            return;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let mut cursor = 0u64;
        loop {
            let Ok((next, keys)): Result<(u64, Vec<String>), _> = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
            else {
                break;
            };
            if !keys.is_empty() {
                let _: Result<i64, _> = ::redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    });
}
