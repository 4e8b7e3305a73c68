//! The SQLite engine: the shared conformance suite, plus what only a durable,
//! multi-connection engine must show (restarts, group commit, two writers on
//! one file, a kill -9 mid-stream).
#![cfg(feature = "sqlite")]

mod support;

use bytes::Bytes;
use idem_core::decision::ExistingOutcome;
use idem_core::*;
use idem_store::{
    Claim, ClaimOutcome, Completion, SqliteOptions, SqliteStore, Store, SweepReport, Write,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use support::{chain, existing, must_claim, retention, T0};
use tempfile::TempDir;

/// A store on a fresh file that deletes its directory after the store is
/// dropped (fields drop in order: the store closes the file first).
struct TempStore {
    store: SqliteStore,
    _dir: TempDir,
}

impl TempStore {
    fn new(options: SqliteOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("idem.db"), options).expect("open");
        TempStore { store, _dir: dir }
    }
}

#[async_trait::async_trait]
impl Store for TempStore {
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, idem_store::StoreError> {
        self.store.claim(claim).await
    }
    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Write, idem_store::StoreError> {
        self.store.renew(id, token, now, lease_until).await
    }
    async fn complete(
        &self,
        id: &RecordId,
        token: u64,
        c: Completion,
    ) -> Result<Write, idem_store::StoreError> {
        self.store.complete(id, token, c).await
    }
    async fn mark_unknown(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
    ) -> Result<Write, idem_store::StoreError> {
        self.store.mark_unknown(id, token, now).await
    }
    async fn release(&self, id: &RecordId, token: u64) -> Result<Write, idem_store::StoreError> {
        self.store.release(id, token).await
    }
    async fn get(&self, id: &RecordId) -> Result<Option<Record>, idem_store::StoreError> {
        self.store.get(id).await
    }
    async fn sweep(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<SweepReport, idem_store::StoreError> {
        self.store.sweep(now, limit).await
    }
    async fn operate(
        &self,
        id: &RecordId,
        token: u64,
        action: idem_core::operator::OperatorAction,
        now: Timestamp,
    ) -> Result<
        Result<idem_core::operator::Operated, idem_core::operator::OperatorRefusal>,
        idem_store::StoreError,
    > {
        self.store.operate(id, token, action, now).await
    }
    async fn list(
        &self,
        query: idem_store::ListQuery,
    ) -> Result<Vec<Record>, idem_store::StoreError> {
        self.store.list(query).await
    }
    async fn ping(&self) -> Result<(), idem_store::StoreError> {
        self.store.ping().await
    }
    fn engine(&self) -> &'static str {
        self.store.engine()
    }
}

mod conformance {
    idem_store::conformance_tests!(async {
        std::sync::Arc::new(super::TempStore::new(idem_store::SqliteOptions::default()))
            as std::sync::Arc<dyn idem_store::Store>
    });
}

/// The same suite with a group-commit window, so that operations of one
/// test land in shared batches.
mod conformance_with_window {
    idem_store::conformance_tests!(async {
        let options = idem_store::SqliteOptions {
            group_commit_window: std::time::Duration::from_millis(2),
            ..Default::default()
        };
        std::sync::Arc::new(super::TempStore::new(options)) as std::sync::Arc<dyn idem_store::Store>
    });
}

fn id(key: &str) -> RecordId {
    RecordId {
        scope: Scope::from_stored("tenant"),
        key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
    }
}

fn fp(body: &str) -> Fingerprint {
    Fingerprint::compute(&FingerprintInput {
        method: "POST",
        path: "/charges",
        query: None,
        content_type: None,
        extra_headers: &[],
        body: body.as_bytes(),
    })
}

fn claim(rid: &RecordId, now: Timestamp) -> Claim {
    Claim::new(rid.clone(), fp("a"), now, &retention(), false)
}

fn response(body: &'static [u8]) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("x-bin".into(), Bytes::from_static(b"\x00\xff"))],
        body: Some(Bytes::from_static(body)),
    }
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default()).expect("open")
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("idem.db")
}

#[tokio::test]
async fn completed_record_survives_reopen_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let k = id("order-1");
    {
        let store = open(&db_path(&dir));
        let token = must_claim(&store, claim(&k, T0)).await;
        let written = store
            .complete(
                &k,
                token,
                Completion::new(response(b"paid"), T0, &retention()),
            )
            .await
            .unwrap();
        assert_eq!(written, Write::Written);
    }
    let store = open(&db_path(&dir));
    let record = store
        .get(&k)
        .await
        .unwrap()
        .expect("the record survives a restart");
    assert_eq!(record.state, RecordState::Completed);
    assert_eq!(record.response, Some(response(b"paid")));
    let (outcome, record) = existing(&store, claim(&k, T0.plus(Duration::from_secs(1)))).await;
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert_eq!(record.response.unwrap().body.as_deref(), Some(&b"paid"[..]));
}

#[tokio::test]
async fn claim_in_flight_at_shutdown_reads_as_unknown_after_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let k = id("order-2");
    let token = {
        let store = open(&db_path(&dir));
        must_claim(&store, claim(&k, T0)).await
    };
    let store = open(&db_path(&dir));
    let (outcome, _) = existing(&store, claim(&k, T0.plus(Duration::from_secs(1)))).await;
    assert!(
        matches!(outcome, ExistingOutcome::InProgress { .. }),
        "{outcome:?}"
    );
    let after_lease = T0.plus(Duration::from_secs(10));
    let (outcome, record) = existing(&store, claim(&k, after_lease)).await;
    assert_eq!(
        outcome,
        ExistingOutcome::Unknown,
        "never claimed again silently"
    );
    assert_eq!(record.token, token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_share_commits() {
    let store = Arc::new(TempStore::new(SqliteOptions::default()));
    let n = 200;
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                must_claim(&*store, claim(&id(&format!("k-{i}")), T0)).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let commits = store.store.commit_count();
    assert_eq!(store.store.committed_operations(), n as u64);
    assert!(
        commits < n as u64,
        "{n} claims took {commits} commits: no group commit"
    );
    for i in 0..n {
        let record = store.get(&id(&format!("k-{i}"))).await.unwrap().unwrap();
        assert_eq!(record.state, RecordState::InFlight);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_batch_with_many_claims_of_one_key_has_one_winner() {
    // The window puts (nearly) all claims in one transaction: each must see
    // the effect of the one before it.
    let options = SqliteOptions {
        group_commit_window: Duration::from_millis(50),
        ..Default::default()
    };
    let store = Arc::new(TempStore::new(options));
    support::one_claim_wins_each_race(std::slice::from_ref(&store), "hot", 1, 64).await;
    assert!(
        store.store.commit_count() < 64,
        "commits: {}",
        store.store.commit_count()
    );
}

/// A body of `len` bytes no shorter or shifted copy of it equals.
fn patterned_body(len: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Replays of a 4 MiB record race claims of fresh keys (with and without
/// a group-commit window): every replay returns the stored body byte for
/// byte, every fresh key is claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_of_a_large_record_beside_fresh_claims_return_the_exact_body() {
    let windows = [Duration::ZERO, Duration::from_millis(2)];
    for window in windows {
        let options = SqliteOptions {
            group_commit_window: window,
            ..Default::default()
        };
        let store = Arc::new(TempStore::new(options));
        let large = id("large");
        let stored = StoredResponse {
            status: 200,
            headers: vec![("content-type".into(), Bytes::from_static(b"text/csv"))],
            body: Some(patterned_body(4 << 20)),
        };
        let token = must_claim(&*store, claim(&large, T0)).await;
        let completion = Completion::new(stored.clone(), T0, &retention());
        let written = store.complete(&large, token, completion).await.unwrap();
        assert_eq!(written, Write::Written);

        let (replayers, rounds, claimers) = (12, 3, 48);
        let barrier = Arc::new(tokio::sync::Barrier::new(replayers + claimers));
        let mut replays = Vec::new();
        for _ in 0..replayers {
            let (store, barrier, large) = (store.clone(), barrier.clone(), large.clone());
            replays.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut bodies = Vec::new();
                for _ in 0..rounds {
                    let (outcome, record) = existing(&*store, claim(&large, T0)).await;
                    assert_eq!(outcome, ExistingOutcome::Replay);
                    bodies.push(record.response.expect("a replay has its response"));
                }
                bodies
            }));
        }
        let mut claims = Vec::new();
        for i in 0..claimers {
            let (store, barrier) = (store.clone(), barrier.clone());
            claims.push(tokio::spawn(async move {
                barrier.wait().await;
                store.claim(claim(&id(&format!("fresh-{i}")), T0)).await
            }));
        }
        let deadline = Duration::from_secs(60);
        for task in claims {
            let outcome = tokio::time::timeout(deadline, task).await.expect("in time");
            assert!(
                matches!(outcome.unwrap().unwrap(), ClaimOutcome::Claimed { .. }),
                "window {window:?}: a fresh key is claimed"
            );
        }
        for task in replays {
            let responses = tokio::time::timeout(deadline, task).await.expect("in time");
            for response in responses.unwrap() {
                assert_eq!(response.status, stored.status);
                assert_eq!(response.headers, stored.headers);
                // Not assert_eq!: a mismatch would print 4 MiB twice.
                let body = response.body.expect("a replay has its body");
                assert!(
                    body == stored.body.as_ref().unwrap(),
                    "window {window:?}: a replay returned {} bytes that are not the stored body",
                    body.len()
                );
            }
        }
    }
}

/// A replay decided in the very transaction that completed the record is
/// answered after that transaction committed, so its body, read by another
/// connection, is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_decided_in_the_batch_that_completed_the_record_reads_its_body() {
    let options = SqliteOptions {
        group_commit_window: Duration::from_millis(300),
        ..Default::default()
    };
    let store = TempStore::new(options);
    let k = id("same-batch");
    let token = must_claim(&store, claim(&k, T0)).await;
    let commits = store.store.commit_count();
    let completion = Completion::new(response(b"fresh"), T0, &retention());
    // `join!` polls in order: the completion is queued before the claim.
    let (written, replay) = tokio::join!(
        store.complete(&k, token, completion),
        store.claim(claim(&k, T0))
    );
    assert_eq!(
        store.store.commit_count(),
        commits + 1,
        "both operations shared one transaction"
    );
    assert_eq!(written.unwrap(), Write::Written);
    let ClaimOutcome::Existing { outcome, record } = replay.unwrap() else {
        panic!("a completed key is not claimed again");
    };
    assert_eq!(outcome, ExistingOutcome::Replay);
    assert_eq!(record.response, Some(response(b"fresh")));
}

/// The writer decides on a record's small columns: answers that do not
/// replay carry no body (a not-replayable response keeps its headers), and
/// a damaged payload fails only what reads it.
#[tokio::test]
async fn only_a_replay_reads_the_stored_payload() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    let k = id("done");
    let token = must_claim(&store, claim(&k, T0)).await;
    let completion = Completion::new(response(b"paid"), T0, &retention());
    assert_eq!(
        store.complete(&k, token, completion).await.unwrap(),
        Write::Written
    );
    let other = Claim::new(k.clone(), fp("b"), T0, &retention(), false);
    let (outcome, record) = existing(&store, other.clone()).await;
    assert_eq!(outcome, ExistingOutcome::Mismatch);
    let stripped = record.response.unwrap();
    assert_eq!((stripped.status, stripped.body), (201, None));
    assert!(stripped.headers.is_empty());
    let expired = T0.plus(retention().retention);
    let (outcome, record) = existing(&store, claim(&k, expired)).await;
    assert_eq!(outcome, ExistingOutcome::Expired);
    assert_eq!(record.response.unwrap().body, None);

    let big = id("too-big");
    let token = must_claim(&store, claim(&big, T0)).await;
    let headers_only = StoredResponse {
        body: None,
        ..response(b"")
    };
    let completion = Completion::new(headers_only.clone(), T0, &retention());
    assert_eq!(
        store.complete(&big, token, completion).await.unwrap(),
        Write::Written
    );
    let (outcome, record) = existing(&store, claim(&big, T0)).await;
    assert_eq!(outcome, ExistingOutcome::NotReplayable { status: 201 });
    assert_eq!(record.response, Some(headers_only));

    let raw = rusqlite::Connection::open(db_path(&dir)).unwrap();
    raw.execute(
        "UPDATE idem_records SET headers = x'09' WHERE key = 'done'",
        [],
    )
    .unwrap();
    drop(raw);
    let (outcome, _) = existing(&store, other).await;
    assert_eq!(
        outcome,
        ExistingOutcome::Mismatch,
        "decided without the payload"
    );
    let err = store.claim(claim(&k, T0)).await.unwrap_err();
    assert_eq!(err.operation(), "claim");
    assert!(chain(&err).contains("header encoding version 9"), "{err:?}");
    assert!(store.get(&k).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_never_both_claim() {
    // Two writer threads with their own connections stand in for two
    // gateway processes: BEGIN IMMEDIATE and the busy timeout serialise them.
    let dir = tempfile::tempdir().unwrap();
    let stores = [
        Arc::new(open(&db_path(&dir))),
        Arc::new(open(&db_path(&dir))),
    ];
    for round in 0..10 {
        let k = id(&format!("shared-{round}"));
        let barrier = Arc::new(tokio::sync::Barrier::new(64));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let (store, barrier, k) = (stores[i % 2].clone(), barrier.clone(), k.clone());
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
        assert_eq!(winners, 1, "round {round}");
    }
    // And an outcome written through one is replayed through the other.
    let k = id("cross");
    let token = must_claim(&*stores[0], claim(&k, T0)).await;
    let _ = stores[0]
        .complete(
            &k,
            token,
            Completion::new(response(b"one"), T0, &retention()),
        )
        .await
        .unwrap();
    assert_eq!(
        existing(&*stores[1], claim(&k, T0)).await.0,
        ExistingOutcome::Replay
    );
    assert_eq!(
        stores[1]
            .complete(
                &k,
                token,
                Completion::new(response(b"two"), T0, &retention())
            )
            .await
            .unwrap(),
        Write::Fenced
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_sweeps_run_in_chunks_and_respect_the_limit() {
    let store = Arc::new(TempStore::new(SqliteOptions::default()));
    let tasks: Vec<_> = (0..700)
        .map(|i| {
            let store = store.clone();
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
    let tombstone_time = T0.plus(Duration::from_secs(150));
    let report = store.sweep(tombstone_time, 300).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            tombstoned: 300,
            deleted: 0
        }
    );
    let report = store.sweep(tombstone_time, 10_000).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            tombstoned: 400,
            deleted: 0
        }
    );
    let record = store.get(&id("old-7")).await.unwrap().unwrap();
    let resp = record.response.unwrap();
    assert_eq!((resp.status, resp.body, resp.headers.len()), (201, None, 0));
    let commits_before = store.store.commit_count();
    let gone = T0.plus(Duration::from_secs(1100));
    let report = store.sweep(gone, 10_000).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            tombstoned: 0,
            deleted: 700
        }
    );
    assert!(
        store.store.commit_count() - commits_before >= 3,
        "700 records are swept in several transactions"
    );
    assert_eq!(store.sweep(gone, 10).await.unwrap(), SweepReport::default());
}

#[tokio::test]
async fn released_records_are_swept_once_their_lease_passes() {
    let store = TempStore::new(SqliteOptions::default());
    let k = id("released");
    let token = must_claim(&store, claim(&k, T0)).await;
    assert_eq!(store.release(&k, token).await.unwrap(), Write::Written);
    assert_eq!(
        store
            .sweep(T0.plus(Duration::from_secs(1)), 10)
            .await
            .unwrap(),
        SweepReport::default()
    );
    let report = store
        .sweep(T0.plus(Duration::from_secs(10)), 10)
        .await
        .unwrap();
    assert_eq!(report.deleted, 1);
    assert!(store.get(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn a_damaged_row_fails_its_own_operation_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db_path(&dir));
    let bad = id("bad");
    let good = id("good");
    must_claim(&store, claim(&bad, T0)).await;
    let raw = rusqlite::Connection::open(db_path(&dir)).unwrap();
    raw.execute("UPDATE idem_records SET state = 99 WHERE key = 'bad'", [])
        .unwrap();
    drop(raw);
    let err = store.claim(claim(&bad, T0)).await.unwrap_err();
    assert_eq!(err.operation(), "claim");
    assert!(chain(&err).contains("state code 99"), "{err:?}");
    assert!(store.get(&bad).await.is_err());
    // Other keys, even in the same batch, are unaffected.
    let (a, b) = tokio::join!(store.claim(claim(&bad, T0)), store.claim(claim(&good, T0)));
    assert!(a.is_err());
    assert!(matches!(b.unwrap(), ClaimOutcome::Claimed { .. }));
}

#[tokio::test]
async fn open_explains_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("idem.db");
    let err = SqliteStore::open(&missing, SqliteOptions::default()).expect_err("missing directory");
    assert_eq!(err.operation(), "open");
    assert!(chain(&err).contains("does not exist"), "{err:?}");

    let not_db = dir.path().join("notes.txt");
    std::fs::write(&not_db, vec![b'x'; 4096]).unwrap();
    let err = SqliteStore::open(&not_db, SqliteOptions::default()).expect_err("not a database");
    assert!(chain(&err).contains("notes.txt"), "{err:?}");

    let newer = db_path(&dir);
    drop(open(&newer));
    let raw = rusqlite::Connection::open(&newer).unwrap();
    raw.pragma_update(None, "user_version", 99).unwrap();
    drop(raw);
    let err = SqliteStore::open(&newer, SqliteOptions::default()).expect_err("newer schema");
    assert!(chain(&err).contains("schema version 99"), "{err:?}");
}

#[tokio::test]
async fn opens_in_wal_mode_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(&db_path(&dir));
    let raw = rusqlite::Connection::open(db_path(&dir)).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
}

/// The child half of [`acknowledged_outcomes_survive_kill_9`]: claims and
/// completes keys, printing each one once its future has resolved.
#[tokio::test]
async fn kill_9_child() {
    let Some(path) = std::env::var_os("IDEM_SQLITE_KILL_CHILD_DB") else {
        return; // Only runs as the child process.
    };
    let store = open(Path::new(&path));
    for i in 0..100_000 {
        let k = id(&format!("k-{i}"));
        let token = must_claim(&store, claim(&k, T0)).await;
        let _ = store
            .complete(
                &k,
                token,
                Completion::new(response(b"done"), T0, &retention()),
            )
            .await
            .unwrap();
        println!("acked {i}");
    }
}

#[cfg(unix)]
#[test]
fn acknowledged_outcomes_survive_kill_9() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_9_child", "--nocapture", "--test-threads=1"])
        .env("IDEM_SQLITE_KILL_CHILD_DB", &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut last = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            last = Some(n.parse::<u64>().unwrap());
            if last == Some(200) {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no clean close.
    let _ = child.wait();
    let last = last.expect("the child acknowledged outcomes");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open(&path);
        for i in 0..=last {
            let record = store.get(&id(&format!("k-{i}"))).await.unwrap();
            let record = record.unwrap_or_else(|| panic!("acknowledged k-{i} was lost"));
            assert_eq!(record.state, RecordState::Completed, "k-{i}");
        }
    });
}

/// Throughput of claim + complete under concurrency, for a rough number:
/// `cargo test --release -p idem-store --test sqlite -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a check"]
async fn throughput_of_claim_and_complete() {
    for (concurrency, window) in [(1, 0), (16, 0), (64, 0), (256, 0), (256, 1)] {
        let options = SqliteOptions {
            group_commit_window: Duration::from_millis(window),
            ..Default::default()
        };
        let store = Arc::new(TempStore::new(options));
        let per_task = 4_000 / concurrency;
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..per_task {
                        let k = id(&format!("t{t}-{i}"));
                        let token = must_claim(&*store, claim(&k, T0)).await;
                        let c = Completion::new(response(b"{\"ok\":true}"), T0, &retention());
                        assert_eq!(store.complete(&k, token, c).await.unwrap(), Write::Written);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = started.elapsed();
        let requests = (concurrency * per_task) as f64;
        println!(
            "concurrency {concurrency:>3}, window {window} ms: {:>8.0} claim+complete/s, {:.1} ops per commit",
            requests / elapsed.as_secs_f64(),
            store.store.committed_operations() as f64 / store.store.commit_count() as f64,
        );
    }
}

/// The child half of [`processes_racing_on_one_file_claim_each_key_once`]:
/// waits for the start file, then races to claim every key, printing the
/// ones it won.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_race_child() {
    let Some(path) = std::env::var_os("IDEM_SQLITE_RACE_CHILD_DB") else {
        return; // Only runs as a child process.
    };
    let start = PathBuf::from(std::env::var_os("IDEM_SQLITE_RACE_START").unwrap());
    let store = std::sync::Arc::new(open(Path::new(&path)));
    println!("ready");
    // The parent creates the start file once every child is ready, so the
    // claims overlap. Polling a file keeps the protocol dependency-free.
    while !start.exists() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // One claim per transaction, each child walking the keys from its own
    // offset, so the four writers interleave on the file lock throughout.
    let offset: usize = std::env::var("IDEM_SQLITE_RACE_OFFSET")
        .unwrap()
        .parse()
        .unwrap();
    for n in 0..200 {
        let i = (n + offset) % 200;
        let k = id(&format!("race-{i}"));
        if matches!(
            store.claim(claim(&k, T0)).await.unwrap(),
            ClaimOutcome::Claimed { .. }
        ) {
            println!("won {i}");
        }
    }
    println!("done");
}

/// Four processes, each with its own writer connection, race for the same
/// 200 keys in one database file: every key is won exactly once.
#[cfg(unix)]
#[test]
fn processes_racing_on_one_file_claim_each_key_once() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(open(&path)); // create the schema once, up front
    let start = dir.path().join("start");
    let mut children: Vec<_> = (0..4)
        .map(|child| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "claim_race_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("IDEM_SQLITE_RACE_CHILD_DB", &path)
                .env("IDEM_SQLITE_RACE_START", &start)
                .env("IDEM_SQLITE_RACE_OFFSET", (child * 50 % 200).to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().unwrap()).lines())
        .collect();
    for lines in readers.iter_mut() {
        // libtest may print "test claim_race_child ... " on the same line first.
        let ready = lines
            .by_ref()
            .map(|l| l.unwrap())
            .any(|l| l.ends_with("ready"));
        assert!(ready, "a child exited before it was ready");
    }
    std::fs::write(&start, b"go").unwrap();
    let mut winners = vec![0usize; 200];
    let mut per_child = Vec::new();
    for lines in readers {
        let mut done = false;
        let mut won = 0;
        for line in lines {
            let line = line.unwrap();
            if let Some(i) = line.strip_prefix("won ") {
                winners[i.parse::<usize>().unwrap()] += 1;
                won += 1;
            }
            done |= line == "done";
        }
        assert!(done, "a child did not finish its claims");
        per_child.push(won);
    }
    eprintln!("keys won per process: {per_child:?}");
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for (i, n) in winners.iter().enumerate() {
        assert_eq!(*n, 1, "race-{i} was claimed {n} times");
    }
}

#[tokio::test]
async fn database_wal_and_shm_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = open(&path);
    let k = id("private-1");
    let token = must_claim(&store, claim(&k, T0)).await;
    let written = store
        .complete(
            &k,
            token,
            Completion::new(response(b"4242 4242"), T0, &retention()),
        )
        .await
        .unwrap();
    assert_eq!(written, Write::Written);
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let mode = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    }
}

#[tokio::test]
async fn an_existing_database_readable_by_others_still_opens() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(open(&path));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The gateway warns (logged) and keeps the operator's mode.
    let store = open(&path);
    must_claim(&store, claim(&id("k"), T0)).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

/// The schema of version 1 (before attempts were stored), as that build
/// created it.
const SCHEMA_V1: &str = "
CREATE TABLE idem_records (
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
CREATE INDEX idem_records_by_tombstone_until ON idem_records (tombstone_until);
CREATE INDEX idem_records_with_payload_by_expires_at
    ON idem_records (expires_at) WHERE body IS NOT NULL OR headers IS NOT NULL;
CREATE INDEX idem_records_released_by_lease_until ON idem_records (lease_until) WHERE state = 4;
PRAGMA user_version = 1;
";

/// A file written by the previous schema (version 1, no attempts) opens:
/// it is migrated, keeps its records, and they read attempt 0, which no
/// retried claim matches; new claims store their attempts.
#[tokio::test]
async fn a_version_1_file_is_upgraded_and_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(SCHEMA_V1).unwrap();
    let digest = fp("a").digest.to_vec();
    let insert = "INSERT INTO idem_records (scope, key, state, token, fp_version, fp_digest, \
         lease_until, expires_at, tombstone_until, claimed_at, has_response, status, headers, body) \
         VALUES ('tenant', ?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, ?11)";
    let t0 = T0.as_millis();
    // In flight (lease until T0+10 s), and completed with a body.
    raw.execute(
        insert,
        rusqlite::params![
            "flying",
            1,
            7,
            digest,
            t0 + 10_000,
            t0 + 100_000,
            t0 + 1_100_000,
            t0,
            false,
            None::<i64>,
            None::<Vec<u8>>
        ],
    )
    .unwrap();
    raw.execute(
        insert,
        rusqlite::params![
            "done",
            2,
            8,
            digest,
            t0 + 10_000,
            t0 + 100_000,
            t0 + 1_100_000,
            t0,
            true,
            201,
            b"old".to_vec()
        ],
    )
    .unwrap();
    drop(raw);

    let store = open(&path);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4, "migrated on open");
    drop(raw);
    let flying = store.get(&id("flying")).await.unwrap().expect("kept");
    assert_eq!(
        (flying.state, flying.token, flying.attempt, flying.holder),
        (RecordState::InFlight, 7, 0, None),
        "an old row has no attempt and no holder"
    );
    let done = store.get(&id("done")).await.unwrap().expect("kept");
    assert_eq!(done.attempt, 0);
    assert_eq!(
        done.response.and_then(|r| r.body).as_deref(),
        Some(&b"old"[..])
    );
    // Attempt 0 is unknown: no claim is taken for the old claim's retry.
    let (outcome, _) = existing(&store, claim(&id("flying"), T0)).await;
    assert!(
        matches!(outcome, ExistingOutcome::InProgress { .. }),
        "{outcome:?}"
    );
    let (outcome, _) = existing(&store, claim(&id("flying"), T0).with_attempt(0)).await;
    assert!(matches!(outcome, ExistingOutcome::InProgress { .. }));
    assert_eq!(
        existing(&store, claim(&id("done"), T0)).await.0,
        ExistingOutcome::Replay
    );
    // New claims store their attempt, and recognise their retry.
    let c = claim(&id("new"), T0).with_holder(Some("gw-new:7".into()));
    let token = must_claim(&store, c.clone()).await;
    assert_eq!(must_claim(&store, c.clone()).await, token);
    drop(store);
    // Reopening a migrated file changes nothing.
    let store = open(&path);
    let new = store.get(&id("new")).await.unwrap().expect("kept");
    assert_eq!(
        (new.attempt, new.holder.as_deref()),
        (c.attempt, Some("gw-new:7"))
    );
}

/// Gateways started at once on one fresh file (three instances on one
/// host, as `idem::admin_keys` starts them): every one opens it. As found,
/// one failed with "cannot switch to WAL: database is locked": SQLite
/// does not call the busy handler when it switches the journal mode.
#[test]
fn stores_opened_at_once_on_a_fresh_file_all_open() {
    for round in 0..20 {
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            let opening: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        SqliteStore::open(&path, SqliteOptions::default()).map(drop)
                    })
                })
                .collect();
            for (i, opened) in opening.into_iter().enumerate() {
                if let Err(e) = opened.join().unwrap() {
                    panic!("round {round}, store {i}: {}", chain(&e));
                }
            }
        });
    }
}
