//! The PostgreSQL engine against a real server: the shared conformance
//! suite, plus what only a shared, networked engine must show (several
//! independent stores racing on one key, migrations from many gateways at
//! once, sweeps on many instances, bounded failure when the database is
//! unreachable and recovery when it returns).
//!
//! The server: `IDEM_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`. Each test works in a fresh
//! schema of its own, dropped afterwards. Without a server the tests skip
//! (and say how to start one); with `CI=true` they fail instead.
#![cfg(feature = "postgres")]

mod support;

use bytes::Bytes;
use idem_core::decision::ExistingOutcome;
use idem_core::*;
use idem_store::{
    ClaimOutcome, Completion, PostgresOptions, PostgresStore, Store, StoreClock, SweepReport, Write,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::postgres::{drop_schema, server_up};
use support::{chain, claim, id, must_claim, response, retention, Cleaned, Proxy, T0};

use idem_testkit::{postgres_addr, postgres_url as url};

/// Short bounds, so the outage tests finish quickly.
fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        pool_size: 8,
        connect_timeout: Duration::from_millis(800),
        statement_timeout: Duration::from_secs(1),
        operation_timeout: Duration::from_millis(1500),
        migration_timeout: Duration::from_secs(20),
        schema: Some(schema.to_owned()),
        clock: StoreClock::Server,
        group_commit: true,
    }
}

/// [`options`] deciding on the callers' clock, for tests that move time by
/// passing readings.
fn caller_clock(schema: &str) -> PostgresOptions {
    PostgresOptions {
        clock: StoreClock::Caller,
        ..options(schema)
    }
}

/// A fresh schema name, dropped when the returned guard is.
struct Schema(String);

impl Schema {
    fn new() -> Self {
        Schema(support::unique_name("idem_test"))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        drop_schema(self.0.clone());
    }
}

/// A store in a fresh schema on `clock`, or `None` when there is no
/// server.
async fn fresh(clock: StoreClock) -> Option<Arc<dyn Store>> {
    fresh_with(clock, true).await
}

/// [`fresh`], with group commit on or off.
async fn fresh_with(clock: StoreClock, group_commit: bool) -> Option<Arc<dyn Store>> {
    if !server_up().await {
        return None;
    }
    let schema = support::unique_name("idem_test");
    let store = PostgresStore::open(
        &url(),
        PostgresOptions {
            clock,
            group_commit,
            ..options(&schema)
        },
    )
    .await
    .expect("open a store in a fresh schema");
    Some(Arc::new(Cleaned::new(store, move || drop_schema(schema))))
}

// The suite moves time by passing readings: on the callers' clock.
idem_store::conformance_tests!(match fresh(StoreClock::Caller).await {
    Some(store) => std::future::ready(store),
    None => return,
});

/// Each claim and completion its own statement (group commit off): the
/// path a batch hands requests back to, on its own.
mod one_statement_each {
    use super::*;

    idem_store::conformance_tests!(match fresh_with(StoreClock::Caller, false).await {
        Some(store) => std::future::ready(store),
        None => return,
    });
}

/// The database server's clock (the default): what holds without moving
/// time, and skewed callers agreeing.
mod store_clock {
    use super::*;

    idem_store::conformance_tests!(store_clock: match fresh(StoreClock::Server).await {
        Some(store) => std::future::ready(store),
        None => return,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn independent_stores_never_both_claim_a_key() {
    if !server_up().await {
        return;
    }
    // Four stores with their own pools stand in for four gateways.
    let schema = Schema::new();
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Arc::new(
            PostgresStore::open(&url(), options(&schema.0))
                .await
                .unwrap(),
        ));
    }
    support::one_claim_wins_each_race(&stores, "shared", 10, 64).await;
    // Racing reclaims of a released key: one winner too, under the row lock.
    for round in 0..5 {
        let k = id(&format!("released-{round}"));
        let first = must_claim(&*stores[0], claim(&k, T0)).await;
        assert_eq!(stores[0].release(&k, first).await.unwrap(), Write::Written);
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let (store, barrier, k) = (stores[i % 4].clone(), barrier.clone(), k.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    matches!(
                        store.claim(claim(&k, T0)).await.unwrap(),
                        ClaimOutcome::Claimed { .. }
                    )
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1, "released round {round}");
    }
    // An outcome written through one is replayed through another, and the
    // token it was written with is spent everywhere.
    support::an_outcome_is_shared_and_its_token_spent(&stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_gateways_migrating_at_once_apply_each_migration_once() {
    if !server_up().await {
        return;
    }
    let schema = Schema::new();
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let options = options(&schema.0);
            tokio::spawn(async move { PostgresStore::open(&url(), options).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("every concurrent open succeeds");
    }
    let report = PostgresStore::migrate(&url(), options(&schema.0))
        .await
        .unwrap();
    assert_eq!(report.applied, vec![]);
    assert_eq!(report.version, 5);

    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(connection);
    let rows = client
        .query(
            &format!(
                "SELECT version, name FROM \"{}\".idem_schema_migrations ORDER BY version",
                schema.0
            ),
            &[],
        )
        .await
        .unwrap();
    let applied: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        applied,
        vec![
            (1, "records".to_owned()),
            (2, "waiters".to_owned()),
            (3, "attempts".to_owned()),
            (4, "unsettled".to_owned()),
            (5, "holders".to_owned())
        ]
    );

    // A schema written by a newer build is refused, not misread.
    client
        .execute(
            &format!(
                "INSERT INTO \"{}\".idem_schema_migrations (version, name) VALUES (99, 'future')",
                schema.0
            ),
            &[],
        )
        .await
        .unwrap();
    let err = PostgresStore::open(&url(), options(&schema.0))
        .await
        .expect_err("a newer schema is refused");
    assert!(chain(&err).contains("schema version 99"), "{err:?}");
    drop(client);
    let _ = conn.await;
}

#[tokio::test]
async fn migrate_on_a_fresh_schema_reports_what_it_applied() {
    if !server_up().await {
        return;
    }
    let schema = Schema::new();
    let report = PostgresStore::migrate(&url(), options(&schema.0))
        .await
        .unwrap();
    assert_eq!(
        report.applied,
        vec![
            (1, "records"),
            (2, "waiters"),
            (3, "attempts"),
            (4, "unsettled"),
            (5, "holders")
        ]
    );
    assert_eq!(report.version, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeps_on_many_instances_at_once_share_the_work() {
    if !server_up().await {
        return;
    }
    let schema = Schema::new();
    let mut stores = Vec::new();
    for _ in 0..3 {
        // The sweep below moves time: on the callers' clock.
        stores.push(Arc::new(
            PostgresStore::open(&url(), caller_clock(&schema.0))
                .await
                .unwrap(),
        ));
    }
    let tasks: Vec<_> = (0..600)
        .map(|i| {
            let store = stores[i % 3].clone();
            tokio::spawn(async move {
                let k = id(&format!("old-{i}"));
                let token = must_claim(&*store, claim(&k, T0)).await;
                let c = Completion::new(response(b"x"), T0, &retention());
                assert_eq!(store.complete(&k, token, c).await.unwrap(), Write::Written);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let gone = T0.plus(Duration::from_secs(1100));
    let sweeps: Vec<_> = (0..6)
        .map(|i| {
            let store = stores[i % 3].clone();
            tokio::spawn(async move {
                let mut total = SweepReport::default();
                loop {
                    let r = store.sweep(gone, 70).await.unwrap();
                    assert!(r.deleted + r.tombstoned <= 70, "{r:?}");
                    total.deleted += r.deleted;
                    total.tombstoned += r.tombstoned;
                    if r.deleted + r.tombstoned == 0 {
                        return total;
                    }
                }
            })
        })
        .collect();
    let mut deleted = 0;
    for s in sweeps {
        let r = s.await.unwrap();
        assert_eq!(r.tombstoned, 0);
        deleted += r.deleted;
    }
    assert_eq!(deleted, 600, "each record deleted exactly once");
    assert_eq!(
        stores[0].sweep(gone, 1000).await.unwrap(),
        SweepReport::default()
    );
}

#[tokio::test]
async fn every_sweep_query_walks_an_index() {
    if !server_up().await {
        return;
    }
    let schema = Schema::new();
    let _store = PostgresStore::open(&url(), options(&schema.0))
        .await
        .unwrap();
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET search_path = \"{}\"; SET enable_seqscan = off",
            schema.0
        ))
        .await
        .unwrap();
    for (query, index) in [
        (
            "SELECT 1 FROM idem_records WHERE tombstone_until <= 5 AND NOT (state = 1 AND lease_until > 5) LIMIT 10 FOR UPDATE SKIP LOCKED",
            "idem_records_by_tombstone_until",
        ),
        (
            "SELECT 1 FROM idem_records WHERE state = 4 AND lease_until <= 5 LIMIT 10 FOR UPDATE SKIP LOCKED",
            "idem_records_released_by_lease_until",
        ),
        (
            "SELECT 1 FROM idem_records WHERE expires_at <= 5 AND (body IS NOT NULL OR header_names IS NOT NULL) LIMIT 10 FOR UPDATE SKIP LOCKED",
            "idem_records_with_payload_by_expires_at",
        ),
    ] {
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {query}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            plan.iter().any(|line| line.contains(index)),
            "{query}\n{plan:#?}"
        );
    }
    drop(client);
    let _ = conn.await;
}

fn via(proxy: &Proxy) -> String {
    let config: tokio_postgres::Config = url().parse().unwrap();
    let user = config.get_user().unwrap_or("postgres");
    let db = config.get_dbname().unwrap_or("test");
    format!("postgres://{user}@{}/{db}", proxy.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_quick_error_and_recovery_is_automatic() {
    if !server_up().await {
        return;
    }
    let schema = Schema::new();
    let proxy = Proxy::start(postgres_addr()).await;
    let opts = options(&schema.0);
    let bound = opts.operation_timeout + Duration::from_millis(500);
    let store = PostgresStore::open(&via(&proxy), opts).await.unwrap();
    support::an_outage_is_a_quick_error_then_recovered(&store, &proxy, bound).await;
}

#[tokio::test]
async fn opening_an_unresponsive_or_closed_server_fails_within_the_bound() {
    // No real server needed: a proxy that never answers, and a closed port.
    let proxy = Proxy::start("127.0.0.1:9".parse().unwrap()).await;
    proxy.cut();
    let opts = PostgresOptions {
        migration_timeout: Duration::from_secs(3),
        ..options("idem_unused")
    };
    let started = Instant::now();
    let err = PostgresStore::open(&via(&proxy), opts.clone())
        .await
        .expect_err("nothing answers");
    assert!(started.elapsed() < Duration::from_secs(4), "{err}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let err = PostgresStore::open(&format!("postgres://postgres@127.0.0.1:{port}/test"), opts)
        .await
        .expect_err("connection refused");
    assert!(started.elapsed() < Duration::from_secs(4), "{err}");
    assert!(err.to_string().contains("postgres store"), "{err}");
}

#[tokio::test]
async fn a_damaged_row_fails_its_own_operation_only() {
    if !server_up().await {
        return;
    }
    let schema = Schema::new();
    let store = PostgresStore::open(&url(), options(&schema.0))
        .await
        .unwrap();
    must_claim(&store, claim(&id("bad"), T0)).await;
    must_claim(&store, claim(&id("good"), T0)).await;
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(connection);
    client
        .execute(
            &format!(
                "UPDATE \"{}\".idem_records SET state = 99 WHERE key = 'bad'",
                schema.0
            ),
            &[],
        )
        .await
        .unwrap();
    let err = store.claim(claim(&id("bad"), T0)).await.unwrap_err();
    assert_eq!(err.operation(), "claim");
    assert!(chain(&err).contains("state code 99"), "{err:?}");
    assert!(store.get(&id("bad")).await.is_err());
    assert!(matches!(
        store.claim(claim(&id("good"), T0)).await.unwrap(),
        ClaimOutcome::Existing { .. }
    ));
    drop(client);
    let _ = conn.await;
}

#[tokio::test]
async fn bad_urls_and_schema_names_are_refused_up_front() {
    let err = PostgresStore::open("postgres://[::1", PostgresOptions::default())
        .await
        .expect_err("bad url");
    assert!(chain(&err).contains("invalid PostgreSQL URL"), "{err:?}");
    let err = PostgresStore::open(&url(), options("bad-name"))
        .await
        .expect_err("bad schema");
    assert!(chain(&err).contains("letters, digits"), "{err:?}");
}

/// Whether the claim on `key` carries the waiters mark.
async fn marked_waited(client: &tokio_postgres::Client, schema: &str, key: &str) -> bool {
    client
        .query_opt(
            &format!("SELECT waiters FROM \"{schema}\".idem_records WHERE key = $1"),
            &[&key],
        )
        .await
        .unwrap()
        .is_some_and(|row| row.get::<_, bool>(0))
}

/// Claims `key` through `owner`, waits on it through `waiting`, and checks
/// the waiter is woken promptly (well before its timeout) when `finish`
/// ("complete", "release" or "mark_unknown") writes through `owner`.
async fn woken_across(
    waiting: &Arc<PostgresStore>,
    owner: &PostgresStore,
    client: &tokio_postgres::Client,
    schema: &str,
    key: &str,
    finish: &str,
) {
    let timeout = Duration::from_secs(30);
    let k = id(key);
    let token = must_claim(owner, claim(&k, T0)).await;
    let waiter = tokio::spawn({
        let (store, k) = (waiting.clone(), k.clone());
        async move { store.changed(&k, timeout).await }
    });
    // The waiter marks the claim once its instance listens.
    support::poll_until("the waiter's mark", Duration::from_secs(15), || {
        marked_waited(client, schema, key)
    })
    .await;
    assert!(!waiter.is_finished(), "{key}: woke before the owner wrote");
    let written = Instant::now();
    let write = match finish {
        "complete" => {
            let c = Completion::new(response(b"w"), T0, &retention());
            owner.complete(&k, token, c).await.unwrap()
        }
        "release" => owner.release(&k, token).await.unwrap(),
        _ => owner.mark_unknown(&k, token, T0).await.unwrap(),
    };
    assert_eq!(write, Write::Written);
    tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .unwrap_or_else(|_| panic!("{key}: the waiter was not woken"))
        .unwrap();
    assert!(
        written.elapsed() < Duration::from_secs(3),
        "{key}: woken {:?} after the write (timeout {timeout:?})",
        written.elapsed()
    );
}

/// What the engine notifies for a key of scope `s` in `schema`: a 64-bit
/// FNV-1a of the length-prefixed schema, scope and key, in hex.
fn announcement(schema: &str, key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [schema, "s", key] {
        let bytes = part.as_bytes();
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// A plain connection to the test server, driven in the background, and
/// the payloads of the notifications on `idem_changed` it receives.
async fn listener() -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (client, mut connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (seen, announcements) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = seen.send(n.payload().to_owned());
            }
        }
    });
    client.batch_execute("LISTEN idem_changed").await.unwrap();
    (client, announcements)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_one_instance_is_woken_promptly_by_the_owner_on_another() {
    if !server_up().await {
        return;
    }
    let schema = Schema::new();
    let waiting = Arc::new(
        PostgresStore::open(&url(), options(&schema.0))
            .await
            .unwrap(),
    );
    let owner = PostgresStore::open(&url(), options(&schema.0))
        .await
        .unwrap();
    let (client, mut announcements) = listener().await;

    // No waiter, no announcement: finishing a claim nobody waits on is a
    // plain UPDATE (a NOTIFY would serialise the commits).
    let quiet = id("quiet");
    let token = must_claim(&owner, claim(&quiet, T0)).await;
    let c = Completion::new(response(b"q"), T0, &retention());
    assert_eq!(
        owner.complete(&quiet, token, c).await.unwrap(),
        Write::Written
    );

    // The channel is shared by every schema of the database (other tests
    // announce on it too): look for this test's payloads only.
    let silent = announcement(&schema.0, "quiet");
    let mut seen = Vec::new();
    for finish in ["complete", "release", "mark_unknown"] {
        let key = format!("waited-{finish}");
        woken_across(&waiting, &owner, &client, &schema.0, &key, finish).await;
        let expected = announcement(&schema.0, &key);
        while !seen.contains(&expected) {
            let payload = tokio::time::timeout(Duration::from_secs(5), announcements.recv())
                .await
                .unwrap_or_else(|_| panic!("{key} was not announced"))
                .unwrap();
            seen.push(payload);
        }
    }
    while let Ok(payload) = announcements.try_recv() {
        seen.push(payload);
    }
    assert!(!seen.contains(&silent), "no waiter, no announcement");
    for finish in ["complete", "release", "mark_unknown"] {
        let expected = announcement(&schema.0, &format!("waited-{finish}"));
        let times = seen.iter().filter(|p| **p == expected).count();
        assert_eq!(times, 1, "{finish}: one announcement per write");
    }

    // A waiter on a claim that already finished returns at once.
    let started = Instant::now();
    waiting.changed(&quiet, Duration::from_secs(20)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    // A new claim of a released key clears the mark.
    must_claim(&owner, claim(&id("waited-release"), T0)).await;
    assert!(!marked_waited(&client, &schema.0, "waited-release").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wake_up_listener_reconnects_after_an_outage() {
    if !server_up().await {
        return;
    }
    let schema = Schema::new();
    let proxy = Proxy::start(postgres_addr()).await;
    let waiting = Arc::new(
        PostgresStore::open(&via(&proxy), options(&schema.0))
            .await
            .unwrap(),
    );
    let owner = PostgresStore::open(&url(), options(&schema.0))
        .await
        .unwrap();
    let (client, _announcements) = listener().await;
    woken_across(&waiting, &owner, &client, &schema.0, "before", "complete").await;

    proxy.cut();
    // While the database is unreachable a waiter still returns within its
    // timeout.
    let started = Instant::now();
    waiting
        .changed(&id("during"), Duration::from_millis(300))
        .await;
    assert!(started.elapsed() < Duration::from_secs(1));

    proxy.restore();
    woken_across(&waiting, &owner, &client, &schema.0, "after", "complete").await;
}

/// A database at schema version 2 (before attempts were stored) is
/// upgraded by `idem migrate` (and then by nothing more on open), keeps
/// its records, and they read attempt 0 and no holder.
#[tokio::test]
async fn a_version_2_database_is_upgraded_and_keeps_its_records() {
    if !server_up().await {
        return;
    }
    let schema = Schema::new();
    let store = PostgresStore::open(&url(), options(&schema.0))
        .await
        .unwrap();
    let old = id("old");
    let token = must_claim(&store, claim(&old, T0)).await;
    drop(store);
    // Back to version 2: no attempt or holder column, no listing index,
    // no record of migrations 3 to 5.
    let (client, connection) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET search_path = \"{}\"; ALTER TABLE idem_records DROP COLUMN attempt; \
             ALTER TABLE idem_records DROP COLUMN holder; \
             DROP INDEX idem_records_unsettled_by_claimed_at; \
             DELETE FROM idem_schema_migrations WHERE version >= 3",
            schema.0
        ))
        .await
        .unwrap();
    let report = PostgresStore::migrate(&url(), options(&schema.0))
        .await
        .unwrap();
    assert_eq!(
        (report.applied, report.version),
        (vec![(3, "attempts"), (4, "unsettled"), (5, "holders")], 5)
    );
    let store = PostgresStore::open(&url(), options(&schema.0))
        .await
        .unwrap();
    let record = store.get(&old).await.unwrap().expect("kept");
    assert_eq!(
        (record.state, record.token, record.attempt, record.holder),
        (RecordState::InFlight, token, 0, None)
    );
    let (outcome, _) = support::existing(&store, claim(&old, T0).with_attempt(0)).await;
    assert!(matches!(outcome, ExistingOutcome::InProgress { .. }));
    let fresh = claim(&id("new"), T0).with_holder(Some("gw-new:7".into()));
    let token = must_claim(&store, fresh.clone()).await;
    assert_eq!(must_claim(&store, fresh).await, token);
    let new = store.get(&id("new")).await.unwrap().expect("claimed");
    assert_eq!(new.holder.as_deref(), Some("gw-new:7"));
    drop(client);
    let _ = conn.await;
}

/// Group commit under load: 400 claims from concurrent tasks (every key
/// claimed by four of them, on two stores sharing the schema, so batches
/// carry duplicates and race each other), then the winners complete with
/// headers and bodies of their own. Batches carried more than one request
/// each; every key has exactly one winner; every completion is written and
/// replays its own response byte for byte; a loser sees the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_claims_and_completions_answer_each_request_right() {
    if !server_up().await {
        return;
    }
    let schema = Schema::new();
    let open = || async {
        Arc::new(
            PostgresStore::open(&url(), options(&schema.0))
                .await
                .unwrap(),
        )
    };
    let stores = [open().await, open().await];
    let keys: Vec<RecordId> = (0..100).map(|i| id(&format!("batched-{i}"))).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..4 {
        for (i, k) in keys.iter().enumerate() {
            let store = stores[(i + round) % 2].clone();
            let k = k.clone();
            tasks.spawn(async move {
                let outcome = store.claim(claim(&k, T0)).await.unwrap();
                (k, outcome)
            });
        }
    }
    let mut winners = std::collections::HashMap::new();
    let mut losers = 0;
    while let Some(joined) = tasks.join_next().await {
        let (k, outcome) = joined.unwrap();
        match outcome {
            ClaimOutcome::Claimed { token } => {
                assert!(
                    winners.insert(k.clone(), token).is_none(),
                    "{k:?} claimed twice"
                );
            }
            ClaimOutcome::Existing { outcome, .. } => {
                assert!(
                    matches!(outcome, ExistingOutcome::InProgress { .. }),
                    "{outcome:?}"
                );
                losers += 1;
            }
        }
    }
    assert_eq!((winners.len(), losers), (100, 300));
    let mut completions = tokio::task::JoinSet::new();
    for (i, (k, token)) in winners.iter().enumerate() {
        let store = stores[i % 2].clone();
        let (k, token) = (k.clone(), *token);
        completions.spawn(async move {
            let response = StoredResponse {
                status: 200 + (i % 50) as u16,
                headers: (0..i % 3)
                    .map(|h| {
                        (
                            format!("x-h{h}"),
                            Bytes::from(format!("{}-{h}", k.key.as_str())),
                        )
                    })
                    .collect(),
                body: (i % 4 != 0).then(|| Bytes::from(format!("body of {}", k.key.as_str()))),
            };
            let written = store
                .complete(
                    &k,
                    token,
                    Completion::new(response.clone(), T0, &retention()),
                )
                .await
                .unwrap();
            (k, written, response)
        });
    }
    while let Some(joined) = completions.join_next().await {
        let (k, written, response) = joined.unwrap();
        assert_eq!(written, Write::Written, "{k:?}");
        let (outcome, record) = support::existing(&*stores[1], claim(&k, T0)).await;
        let expected = if response.body.is_some() {
            ExistingOutcome::Replay
        } else {
            ExistingOutcome::NotReplayable {
                status: response.status,
            }
        };
        assert_eq!(outcome, expected, "{k:?}");
        assert_eq!(record.response.as_ref(), Some(&response), "{k:?}");
    }
    for store in &stores {
        let (statements, requests) = store.batch_stats().expect("group commit is on");
        assert!(
            requests > statements,
            "some batch carried more than one request: {statements} statements for {requests}"
        );
    }
}

/// Under light load group commit costs nothing: a claim or completion
/// that finds no statement of its kind in flight is decided alone at once,
/// as one statement with its cached plan, not queued and planned as a
/// batch of one.
#[tokio::test]
async fn a_lone_request_is_decided_alone_not_as_a_batch() {
    if !server_up().await {
        return;
    }
    let schema = Schema::new();
    let store = PostgresStore::open(&url(), options(&schema.0))
        .await
        .unwrap();
    for i in 0..5 {
        let k = id(&format!("alone-{i}"));
        let token = must_claim(&store, claim(&k, T0)).await;
        let written = store
            .complete(
                &k,
                token,
                Completion::new(response(b"alone"), T0, &retention()),
            )
            .await
            .unwrap();
        assert_eq!(written, Write::Written);
        let (outcome, _) = support::existing(&store, claim(&k, T0)).await;
        assert_eq!(outcome, ExistingOutcome::Replay);
    }
    assert_eq!(
        store.batch_stats(),
        Some((0, 0)),
        "no batch statement was sent for requests that came one at a time"
    );
}
