//! Many gateways, one truth: three real `idem gateway` processes share one
//! PostgreSQL schema (or one Redis key prefix), and concurrent bursts of the
//! same key spread over all three execute it exactly once; a key completed
//! through one replays through the others; a request waiting on a key in
//! flight (`in_flight = { wait = "5s" }`) on one gateway is released
//! promptly by the completion on another.
//!
//! Needs the shared servers (see `shared_store/mod.rs`): without them the
//! tests skip with a note on how to start them, and fail under `CI=true`.

mod shared_store;
mod support;

use bytes::Bytes;
use shared_store::*;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Idem;

/// Whether a request waits on the record of a key (the waiter marked the
/// claim in the store), for the engine under test.
type Marked = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Starts three gateways at once (they migrate or connect concurrently).
fn three_gateways(upstream: SocketAddr, store: &str, config: &Path) -> Vec<Idem> {
    std::thread::scope(|s| {
        let starting: Vec<_> = (0..3)
            .map(|_| s.spawn(|| Idem::gateway(upstream, store, config)))
            .collect();
        starting
            .into_iter()
            .map(|t| t.join().expect("a gateway starts"))
            .collect()
    })
}

/// Sends `per_gateway` requests with `key` to `path` through each gateway
/// at once (released together by a barrier).
async fn burst(
    client: &HttpClient,
    gateways: &[SocketAddr],
    path: &'static str,
    key: &str,
    per_gateway: usize,
) -> Vec<Answer> {
    let n = gateways.len() * per_gateway;
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, barrier, key) = (client.clone(), barrier.clone(), key.to_owned());
            let addr = gateways[i % gateways.len()];
            tokio::spawn(async move {
                barrier.wait().await;
                post(&client, addr, path, &key).await.expect("an answer")
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

/// The one executed answer among `answers` (201, not replayed); every
/// other is a replay of it, or (when `conflicts_allowed`) 409
/// `request-in-progress`.
fn one_execution(key: &str, answers: &[Answer], conflicts_allowed: bool) -> Bytes {
    let executed: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == 201 && !a.replayed)
        .collect();
    assert_eq!(executed.len(), 1, "{key}: {answers:#?}");
    let body = executed[0].body.clone();
    for a in answers {
        match (a.status, a.replayed) {
            (201, _) => assert_eq!(a.body, body, "{key}: every answer is the one outcome"),
            (409, false) if conflicts_allowed => assert_eq!(
                a.problem().as_deref(),
                Some("request-in-progress"),
                "{key}: {a:?}"
            ),
            _ => panic!("{key}: unexpected answer {a:?}"),
        }
    }
    body
}

async fn three_gateways_share_one_truth(store: &str, marked: Marked) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let upstream = Upstream::start().await;
    let upstream_addr = upstream.addr;
    let gateways = three_gateways(upstream_addr, store, &config);
    let addrs: Vec<SocketAddr> = gateways.iter().map(|g| g.addr).collect();
    let client = http_client();

    // Bursts of one key over the three gateways: one execution, every other
    // request gets its replay or 409 in progress; afterwards each gateway
    // replays it.
    for round in 0..6 {
        let key = format!("burst-{round}");
        let answers = burst(&client, &addrs, "/charges", &key, 8).await;
        let body = one_execution(&key, &answers, true);
        assert_eq!(upstream.count_key(&key), 1, "{key} executed once");
        for &addr in &addrs {
            let again = post(&client, addr, "/charges", &key).await.unwrap();
            assert_eq!((again.status, again.replayed), (201, true), "{key}");
            assert_eq!(again.body, body, "{key} replays through every gateway");
        }
        assert_eq!(upstream.count_key(&key), 1, "{key} executed once");
    }

    // A key completed through one gateway replays through another.
    for (i, &first) in addrs.iter().enumerate() {
        let key = format!("cross-{i}");
        let original = post(&client, first, "/charges", &key).await.unwrap();
        assert_eq!((original.status, original.replayed), (201, false));
        let other = addrs[(i + 1) % addrs.len()];
        let replay = post(&client, other, "/charges", &key).await.unwrap();
        assert_eq!((replay.status, replay.replayed), (201, true), "{key}");
        assert_eq!(replay.body, original.body);
        assert_eq!(upstream.count_key(&key), 1);
    }

    // Bursts on a waiting route while the first request is held upstream:
    // every request, on every gateway, gets the one outcome.
    for round in 0..3 {
        let key = format!("slow-burst-{round}");
        let answers = tokio::spawn({
            let (client, addrs, key) = (client.clone(), addrs.clone(), key.clone());
            async move { burst(&client, &addrs, "/wait/charges", &key, 6).await }
        });
        poll_until(
            "the burst's execution to start",
            Duration::from_secs(10),
            || {
                let upstream = upstream.clone();
                let key = key.clone();
                async move { upstream.count_key(&key) == 1 }
            },
        )
        .await;
        upstream.gate.add_permits(1);
        let answers = answers.await.unwrap();
        one_execution(&key, &answers, false);
        assert_eq!(upstream.count_key(&key), 1, "{key} executed once");
    }

    // A request waiting on one gateway is released by the completion on
    // another, promptly (the wait bound is 5 s).
    for (i, &owner) in addrs.iter().enumerate() {
        let key = format!("slow-wait-{i}");
        let first = tokio::spawn({
            let (client, key) = (client.clone(), key.clone());
            async move { post(&client, owner, "/wait/charges", &key).await }
        });
        poll_until(
            "the owner's execution to start",
            Duration::from_secs(10),
            || {
                let upstream = upstream.clone();
                let key = key.clone();
                async move { upstream.count_key(&key) == 1 }
            },
        )
        .await;
        let waiters: Vec<_> = addrs
            .iter()
            .filter(|&&a| a != owner)
            .map(|&addr| {
                let (client, key) = (client.clone(), key.clone());
                tokio::spawn(async move { post(&client, addr, "/wait/charges", &key).await })
            })
            .collect();
        // The waiters mark the claim in the store while they wait.
        poll_until(
            "a waiter on another gateway",
            Duration::from_secs(4),
            || marked(key.clone()),
        )
        .await;
        let released = Instant::now();
        upstream.gate.add_permits(1);
        let original = first.await.unwrap().expect("the owner's answer");
        assert_eq!((original.status, original.replayed), (201, false));
        for waiter in waiters {
            let answer = waiter.await.unwrap().expect("the waiter's answer");
            assert_eq!(
                (answer.status, answer.replayed),
                (201, true),
                "{key}: {answer:?}"
            );
            assert_eq!(answer.body, original.body);
        }
        assert!(
            released.elapsed() < Duration::from_secs(2),
            "{key}: the waiters were released {:?} after the completion",
            released.elapsed()
        );
        assert_eq!(upstream.count_key(&key), 1);
    }
    drop(gateways);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_on_one_postgres_schema_share_one_truth() {
    if !pg_up().await {
        return;
    }
    let schema = PgSchema::new();
    let name = schema.0.clone();
    let (client, connection) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(connection);
    let client = Arc::new(client);
    let marked: Marked = Arc::new(move |key| {
        let (client, name) = (client.clone(), name.clone());
        Box::pin(async move {
            let sql = format!("SELECT waiters FROM \"{name}\".idem_records WHERE key = $1");
            // The table exists once the first gateway migrated.
            client
                .query_opt(&sql, &[&key])
                .await
                .ok()
                .flatten()
                .is_some_and(|row| row.get::<_, bool>(0))
        })
    });
    three_gateways_share_one_truth(&schema.store_url(), marked).await;
    conn.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_on_one_redis_prefix_share_one_truth() {
    if !redis_up().await {
        return;
    }
    let prefix = RedisPrefix::new(&redis_url());
    let name = prefix.name.clone();
    let conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let marked: Marked = Arc::new(move |key| {
        let (mut conn, name) = (conn.clone(), name.clone());
        Box::pin(async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{name}:*:r:*:{key}"))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            for k in keys {
                let mark: Option<String> = redis::cmd("HGET")
                    .arg(&k)
                    .arg("w")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                if mark.is_some() {
                    return true;
                }
            }
            false
        })
    });
    three_gateways_share_one_truth(&prefix.store_url(), marked).await;
}
