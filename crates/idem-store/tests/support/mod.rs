//! Helpers shared by the store's test suites: the times, retention and
//! claim helpers several suites use, checking that the PostgreSQL or Redis
//! server answers (skipping, or failing in CI, when it does not), cleaning a
//! test's schema or key prefix up, a store wrapper that runs that cleanup,
//! and a TCP proxy that can cut the connection to the server without
//! touching the server.
#![allow(dead_code)] // each test binary uses its own part

use bytes::Bytes;
use idem_core::decision::ExistingOutcome;
use idem_core::{
    Fingerprint, FingerprintInput, IdempotencyKey, Record, RecordId, Retention, Scope,
    StoredResponse, Timestamp,
};
use idem_store::{Claim, ClaimOutcome, Completion, Store, StoreError, SweepReport, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

// Each test binary uses its own part of these.
#[allow(unused_imports)]
pub(crate) use idem_testkit::{
    block_on_thread, chain, poll_until, unavailable, unique_name, Proxy,
};

pub(crate) const T0: Timestamp = Timestamp(1_700_000_000_000);

/// 100 s retention, 1000 s tombstone retention, 10 s leases.
pub(crate) fn retention() -> Retention {
    Retention {
        retention: Duration::from_secs(100),
        tombstone_retention: Duration::from_secs(1000),
        lease: Duration::from_secs(10),
    }
}

/// Key `key` in scope `s`.
pub(crate) fn id(key: &str) -> RecordId {
    RecordId {
        scope: Scope::from_stored("s"),
        key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
    }
}

/// A claim of `rid` at `now` (a POST of body `a`), with [`retention`].
pub(crate) fn claim(rid: &RecordId, now: Timestamp) -> Claim {
    let fp = Fingerprint::compute(&FingerprintInput {
        method: "POST",
        path: "/",
        query: None,
        content_type: None,
        extra_headers: &[],
        body: b"a",
    });
    Claim::new(rid.clone(), fp, now, &retention(), false)
}

/// A 201 with a text body.
pub(crate) fn response(body: &'static [u8]) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("content-type".into(), Bytes::from_static(b"text/plain"))],
        body: Some(Bytes::from_static(body)),
    }
}

/// `rounds` races of `tasks` claims of one key (`<name>-<round>`) through
/// `stores` in turn (stand-ins for as many gateways): each has one winner,
/// and every other claim finds the key in progress.
pub(crate) async fn one_claim_wins_each_race<S: Store + 'static>(
    stores: &[Arc<S>],
    name: &str,
    rounds: usize,
    tasks: usize,
) {
    for round in 0..rounds {
        let k = id(&format!("{name}-{round}"));
        let barrier = Arc::new(tokio::sync::Barrier::new(tasks));
        let tasks: Vec<_> = (0..tasks)
            .map(|i| {
                let store = stores[i % stores.len()].clone();
                let (barrier, k) = (barrier.clone(), k.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.claim(claim(&k, T0)).await.unwrap()
                })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                ClaimOutcome::Claimed { .. } => winners += 1,
                ClaimOutcome::Existing { outcome, .. } => assert!(
                    matches!(outcome, ExistingOutcome::InProgress { .. }),
                    "{outcome:?}"
                ),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

/// An outcome written through `stores[1]` for a claim made through
/// `stores[0]` is replayed through `stores[2]`, and its token is spent for
/// `stores[3]` too.
pub(crate) async fn an_outcome_is_shared_and_its_token_spent<S: Store>(stores: &[Arc<S>]) {
    let k = id("cross");
    let token = must_claim(&*stores[0], claim(&k, T0)).await;
    let c = Completion::new(response(b"one"), T0, &retention());
    assert_eq!(
        stores[1].complete(&k, token, c.clone()).await.unwrap(),
        Write::Written
    );
    match stores[2].claim(claim(&k, T0)).await.unwrap() {
        ClaimOutcome::Existing { outcome, record } => {
            assert_eq!(outcome, ExistingOutcome::Replay);
            assert_eq!(record.response, Some(response(b"one")));
        }
        other @ ClaimOutcome::Claimed { .. } => panic!("{other:?}"),
    }
    assert_eq!(
        stores[3].complete(&k, token, c).await.unwrap(),
        Write::Fenced
    );
}

/// While `proxy` (between `store` and its server) is cut, every operation
/// fails within `bound`; once it is restored the store recovers by itself
/// (within 15 s), and the claim made before the outage can still complete.
pub(crate) async fn an_outage_is_a_quick_error_then_recovered(
    store: &dyn Store,
    proxy: &Proxy,
    bound: Duration,
) {
    let k = id("before");
    let token = must_claim(store, claim(&k, T0)).await;

    proxy.cut();
    for attempt in 0..2 {
        let started = Instant::now();
        let err = store
            .claim(claim(&id(&format!("during-{attempt}")), T0))
            .await
            .expect_err("no claim while the store's server is unreachable");
        assert!(started.elapsed() < bound, "{:?}: {err}", started.elapsed());
        assert_eq!(err.engine(), store.engine());
        let started = Instant::now();
        let c = Completion::new(response(b"x"), T0, &retention());
        assert!(store.complete(&k, token, c).await.is_err());
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());
        assert!(store.ping().await.is_err());
    }

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.ping().await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    }
    let c = Completion::new(response(b"late"), T0, &retention());
    assert_eq!(store.complete(&k, token, c).await.unwrap(), Write::Written);
    must_claim(store, claim(&id("after"), T0)).await;
}

/// The token of claim `c`, which must win.
pub(crate) async fn must_claim(store: &dyn Store, c: Claim) -> u64 {
    match store.claim(c).await.expect("claim") {
        ClaimOutcome::Claimed { token } => token,
        ClaimOutcome::Existing { outcome, .. } => panic!("expected a claim, got {outcome:?}"),
    }
}

/// The existing record claim `c` must meet, and what the store says of it.
pub(crate) async fn existing(store: &dyn Store, c: Claim) -> (ExistingOutcome, Record) {
    match store.claim(c).await.expect("claim") {
        ClaimOutcome::Existing { outcome, record } => (outcome, *record),
        ClaimOutcome::Claimed { token } => panic!("expected an existing record, got claim {token}"),
    }
}

/// What `ping` yields if it succeeds within 3 s; otherwise `None`, after
/// reporting `server` unavailable (a skip, or a failure under `CI=true`;
/// `start` says how to start it).
async fn answered<T>(
    server: &str,
    start: &str,
    ping: impl std::future::Future<Output = Result<T, String>>,
) -> Option<T> {
    match tokio::time::timeout(Duration::from_secs(3), ping).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(why)) => {
            unavailable(server, &why, start);
            None
        }
        Err(_) => {
            unavailable(server, "no answer within 3 s", start);
            None
        }
    }
}

/// The PostgreSQL test server (`IDEM_TEST_POSTGRES_URL`).
#[cfg(feature = "postgres")]
pub(crate) mod postgres {
    use idem_testkit::{postgres_url as url, PG_START};

    /// Whether the server answers; if not, skips (or fails under CI).
    pub(crate) async fn server_up() -> bool {
        let url = url();
        let connect = async {
            tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| super::chain(&e))
        };
        let Some((client, connection)) = super::answered("PostgreSQL", PG_START, connect).await
        else {
            return false;
        };
        drop(client);
        let _ = connection.await;
        true
    }

    /// Drops a test schema (after its store closed its connections).
    pub(crate) fn drop_schema(schema: String) {
        super::block_on_thread(move || async move {
            let Ok((client, connection)) =
                tokio_postgres::connect(&url(), tokio_postgres::NoTls).await
            else {
                return;
            };
            let conn = tokio::spawn(connection);
            let _ = client
                .batch_execute(&format!(
                    "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                ))
                .await;
            drop(client);
            let _ = conn.await;
        });
    }
}

/// The Redis test server (`IDEM_TEST_REDIS_URL`).
#[cfg(feature = "redis")]
pub(crate) mod redis {
    use idem_testkit::{redis_url as url, REDIS_START};

    /// Whether the server answers; if not, skips (or fails under CI).
    pub(crate) async fn server_up() -> bool {
        let ping = async {
            let client = redis::Client::open(url())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        let ping = async { ping.await.map_err(|e| e.to_string()) };
        super::answered("Redis", REDIS_START, ping).await.is_some()
    }

    #[allow(unused_imports)] // each test binary uses its own part
    pub(crate) use idem_testkit::delete_redis_prefix as delete_prefix;
}

/// A store that runs `cleanup` after it is dropped (and closed).
pub(crate) struct Cleaned<S: Store> {
    store: Option<S>,
    cleanup: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<S: Store> Cleaned<S> {
    pub(crate) fn new(store: S, cleanup: impl FnOnce() + Send + Sync + 'static) -> Self {
        Cleaned {
            store: Some(store),
            cleanup: Some(Box::new(cleanup)),
        }
    }

    fn inner(&self) -> &S {
        self.store.as_ref().expect("present until dropped")
    }
}

impl<S: Store> Drop for Cleaned<S> {
    fn drop(&mut self) {
        drop(self.store.take());
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for Cleaned<S> {
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        self.inner().claim(claim).await
    }
    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Write, StoreError> {
        self.inner().renew(id, token, now, lease_until).await
    }
    async fn complete(
        &self,
        id: &RecordId,
        token: u64,
        c: Completion,
    ) -> Result<Write, StoreError> {
        self.inner().complete(id, token, c).await
    }
    async fn mark_unknown(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
    ) -> Result<Write, StoreError> {
        self.inner().mark_unknown(id, token, now).await
    }
    async fn release(&self, id: &RecordId, token: u64) -> Result<Write, StoreError> {
        self.inner().release(id, token).await
    }
    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.inner().get(id).await
    }
    async fn sweep(&self, now: Timestamp, limit: usize) -> Result<SweepReport, StoreError> {
        self.inner().sweep(now, limit).await
    }
    async fn operate(
        &self,
        id: &RecordId,
        token: u64,
        action: idem_core::operator::OperatorAction,
        now: Timestamp,
    ) -> Result<
        Result<idem_core::operator::Operated, idem_core::operator::OperatorRefusal>,
        StoreError,
    > {
        self.inner().operate(id, token, action, now).await
    }
    async fn list(&self, query: idem_store::ListQuery) -> Result<Vec<Record>, StoreError> {
        self.inner().list(query).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner().ping().await
    }
    async fn changed(&self, id: &RecordId, timeout: std::time::Duration) {
        self.inner().changed(id, timeout).await
    }
    fn engine(&self) -> &'static str {
        self.inner().engine()
    }
}

#[cfg(feature = "postgres")]
pub(crate) mod pg_server;

#[cfg(feature = "redis")]
pub(crate) mod redis_server;

/// A 127.0.0.1 port free right now (the OS's choice; a server started on
/// it may still lose a race for it, and then tries another).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Asks `child` to stop with `signal`, waits 10 s at most, then kills it.
pub(crate) fn stop(child: &mut std::process::Child, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}
