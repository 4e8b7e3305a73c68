//! The SQLite engine: the embedded, durable default.
//!
//! One file, WAL journal, `synchronous=FULL`: an operation's future resolves
//! only after its transaction has committed and the WAL was synced, so an
//! acknowledged claim or outcome survives a kill -9 and a power cut.
//!
//! Writes go through one writer thread that owns the only write connection
//! and commits queued operations in groups (one fsync per group; see
//! `writer.rs`). Each operation reads its row inside the group's
//! transaction, applies the engine-independent transition helpers of
//! [`crate::engine`], and writes the row back, so the rules are the memory
//! engine's rules. `BEGIN IMMEDIATE` plus a busy timeout makes the claim
//! atomic also across processes sharing the file. Reads (`get`) use a small
//! pool of read-only connections on tokio's blocking threads.
//!
//! The writer never carries a large body: a claim decides on the record's
//! small columns; a payload of at most 16 KiB comes back with the
//! decision, and a larger replay's headers and body are read by a reader
//! (see [`SqliteStore::replay`]), so replaying a large response delays
//! nobody else's claim.
//!
//! Times are the callers' readings, as passed (SQLite has no clock of its
//! own worth trusting over the gateway's: the processes sharing a file
//! share the machine's clock, and the layer makes it monotonic).

#[macro_use]
mod codec;
mod rows;
mod schema;
mod writer;

use crate::{
    Claim, ClaimOutcome, Completion, ListQuery, SqliteSynchronous, Store, StoreError, SweepReport,
    Write,
};
use idem_core::decision::ExistingOutcome;
use idem_core::operator::{Operated, OperatorAction, OperatorRefusal};
use idem_core::{Record, RecordId, Timestamp};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;
use writer::{Op, OwnerAction, Reply, SweepJob, Writer};

/// Tuning of the SQLite engine.
///
/// ```
/// use idem_store::SqliteOptions;
/// use std::time::Duration;
/// let options = SqliteOptions { group_commit_window: Duration::from_millis(1), ..SqliteOptions::default() };
/// assert_eq!(options.max_batch, 256);
/// ```
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Most operations committed in one transaction. Default 256.
    pub max_batch: usize,
    /// How long the writer waits for more operations after the first of a
    /// batch. Default zero: operations that arrive while the previous batch
    /// is being synced already form the next batch, so waiting only adds
    /// latency unless the disk syncs very fast and the load is high.
    pub group_commit_window: Duration,
    /// How long a connection waits for another process's lock before the
    /// operation fails. Default 5 s.
    pub busy_timeout: Duration,
    /// Read-only connections kept open for `get`. Default 4.
    pub max_idle_readers: usize,
    /// When commits reach the disk. Default [`SqliteSynchronous::Full`],
    /// which the contract needs; `Normal` is weaker (see there).
    pub synchronous: SqliteSynchronous,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_batch: 256,
            group_commit_window: Duration::ZERO,
            busy_timeout: Duration::from_secs(5),
            max_idle_readers: 4,
            synchronous: SqliteSynchronous::Full,
        }
    }
}

/// The embedded durable default: records in one SQLite file.
///
/// Dropping the store stops its writer thread once the operations already
/// queued are done, and closes the file.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use idem_store::{SqliteOptions, SqliteStore, Store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteStore::open(&dir.path().join("idem.db"), SqliteOptions::default()).unwrap();
/// store.ping().await.unwrap();
/// assert_eq!(store.engine(), "sqlite");
/// # });
/// ```
pub struct SqliteStore {
    /// `None` only while dropping.
    ops: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<Readers>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("open", &self.ops.is_some())
            .finish_non_exhaustive()
    }
}

/// Counters the writer keeps, for tests and metrics.
#[derive(Default)]
struct Stats {
    commits: AtomicU64,
    operations: AtomicU64,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. The file is
    /// created, not its directory. Fails if the file cannot be written, is
    /// not a database, or has a schema from a newer build.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let conn = schema::open_writer(path, &options)?;
        let readers = Arc::new(Readers {
            path: path.to_owned(),
            busy_timeout: options.busy_timeout,
            max_idle: options.max_idle_readers,
            idle: Mutex::new(Vec::new()),
            #[cfg(test)]
            before_payload: Mutex::new(None),
        });
        // Fail now, not at the first `get`, if readers cannot open.
        let reader = readers
            .take()
            .map_err(|e| fail("open", format!("{}: {e}", path.display())))?;
        readers.put(reader);
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(
            conn,
            rx,
            options.max_batch,
            options.group_commit_window,
            stats.clone(),
        );
        let handle = std::thread::Builder::new()
            .name("idem-sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| fail("open", format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            ops: Some(tx),
            writer: Some(handle),
            readers,
            stats,
        })
    }

    /// Transactions the writer has committed. With group commit this is
    /// smaller than the number of write operations under concurrency.
    #[doc(hidden)]
    pub fn commit_count(&self) -> u64 {
        self.stats.commits.load(Ordering::Relaxed)
    }

    /// Operations answered from committed transactions.
    #[doc(hidden)]
    pub fn committed_operations(&self) -> u64 {
        self.stats.operations.load(Ordering::Relaxed)
    }

    /// Sends one operation to the writer and waits for its committed result.
    async fn call<T>(
        &self,
        op: &'static str,
        make: impl FnOnce(Reply<T>) -> Op,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .ops
            .as_ref()
            .is_some_and(|ops| ops.send(make(reply)).is_ok());
        if !sent {
            return Err(fail(op, "the writer thread has stopped"));
        }
        answer.await.unwrap_or_else(|_| {
            Err(fail(
                op,
                "the writer thread stopped before the operation committed; it was not acknowledged",
            ))
        })
    }

    /// Completes a replay the writer decided: reads the headers and body on
    /// a reader, guarded by the identity of the record the writer decided
    /// on (see [`rows::load_payload`]).
    ///
    /// The writer answers only after its batch committed, so the reader
    /// (whose statement starts a fresh WAL snapshot) sees at least that
    /// commit. A completed record does not change after it (owners' writes
    /// are fenced to records in flight, and a claim only overwrites a
    /// record that is free) until a sweep drops its payload or deletes it,
    /// possibly a sweep by another process, on a later clock; after a
    /// deletion the key may even hold a new record. When the guarded read
    /// finds nothing, a sweep has judged the decided record past its
    /// retention, so the answer is what a record past its retention gets:
    /// `Expired`, with the status and no payload. Never the body of another
    /// record (the guard), and never a second execution: asking the writer
    /// again could find the key free and claim it, although this request's
    /// first execution is on record.
    async fn replay(&self, record: Box<Record>) -> Result<ClaimOutcome, StoreError> {
        let readers = self.readers.clone();
        let (mut record, payload) = tokio::task::spawn_blocking(move || {
            let payload = readers.payload(&record);
            (record, payload)
        })
        .await
        .map_err(|e| fail("claim", format!("the read task failed: {e}")))?;
        let outcome = match (payload?, &mut record.response) {
            (Some(payload), Some(response)) => {
                response.headers = payload.headers;
                response.body = Some(payload.body);
                ExistingOutcome::Replay
            }
            (_, response) => {
                if let Some(response) = response {
                    response.headers.clear();
                    response.body = None;
                }
                tracing::debug!(
                    scope = record.id.scope.as_str(),
                    key = %record.id.key,
                    "a replayed record was swept before its body was read; answering expired"
                );
                ExistingOutcome::Expired
            }
        };
        Ok(ClaimOutcome::Existing { outcome, record })
    }

    async fn owner(
        &self,
        id: &RecordId,
        token: u64,
        action: OwnerAction,
    ) -> Result<Write, StoreError> {
        let id = id.clone();
        self.call(action.name(), move |reply| Op::Owner {
            id,
            token,
            action,
            reply,
        })
        .await
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // The writer finishes what is queued, sees the channel closed, and
        // exits; joining makes "dropped" mean "file closed".
        drop(self.ops.take());
        if let Some(handle) = self.writer.take() {
            if handle.thread().id() != std::thread::current().id() && handle.join().is_err() {
                tracing::error!("sqlite writer thread panicked");
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        match self
            .call("claim", |reply| Op::Claim { claim, reply })
            .await?
        {
            // A small payload came with the decision; a larger one is read
            // on a reader.
            ClaimOutcome::Existing {
                outcome: ExistingOutcome::Replay,
                record,
            } if record.response.as_ref().is_none_or(|r| r.body.is_none()) => {
                self.replay(record).await
            }
            decided => Ok(decided),
        }
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
        _now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Write, StoreError> {
        self.owner(id, token, OwnerAction::Renew(lease_until)).await
    }

    async fn complete(
        &self,
        id: &RecordId,
        token: u64,
        completion: Completion,
    ) -> Result<Write, StoreError> {
        self.owner(id, token, OwnerAction::Complete(Box::new(completion)))
            .await
    }

    async fn mark_unknown(
        &self,
        id: &RecordId,
        token: u64,
        _now: Timestamp,
    ) -> Result<Write, StoreError> {
        self.owner(id, token, OwnerAction::Unknown).await
    }

    async fn release(&self, id: &RecordId, token: u64) -> Result<Write, StoreError> {
        self.owner(id, token, OwnerAction::Release).await
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let readers = self.readers.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || readers.get(&id))
            .await
            .unwrap_or_else(|e| Err(fail("get", format!("the read task failed: {e}"))))
    }

    async fn sweep(&self, now: Timestamp, limit: usize) -> Result<SweepReport, StoreError> {
        self.call("sweep", |reply| {
            Op::Sweep(SweepJob {
                now,
                remaining: limit,
                report: SweepReport::default(),
                reply,
            })
        })
        .await
    }

    /// Decided and written in the writer's transaction, like an owner's
    /// write: the read, the decision and the write are one atomic step,
    /// also against other processes sharing the file.
    async fn operate(
        &self,
        id: &RecordId,
        token: u64,
        action: OperatorAction,
        now: Timestamp,
    ) -> Result<Result<Operated, OperatorRefusal>, StoreError> {
        let id = id.clone();
        self.call("operate", move |reply| Op::Operate {
            id,
            token,
            action: Box::new(action),
            now,
            reply,
        })
        .await
    }

    /// On a reader, off the writer's thread: a listing never delays a
    /// claim.
    async fn list(&self, query: ListQuery) -> Result<Vec<Record>, StoreError> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.list(&query))
            .await
            .unwrap_or_else(|e| Err(fail("list", format!("the read task failed: {e}"))))
    }

    /// Goes through the writer: healthy means the writer is alive and can
    /// take the write lock, not only that the file can be read.
    async fn ping(&self) -> Result<(), StoreError> {
        self.call("ping", |reply| Op::Ping { reply }).await
    }

    fn engine(&self) -> &'static str {
        "sqlite"
    }
}

/// Read-only connections for `get` and replays. WAL lets them read while
/// the writer writes; each statement sees the latest committed state.
struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
    /// Runs once, on the read thread, just before the next payload read:
    /// lets tests act between the writer's decision and the read.
    #[cfg(test)]
    before_payload: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Readers {
    fn take(&self) -> Result<Connection, rusqlite::Error> {
        // A poisoned lock only means a panic while pushing or popping a
        // connection; the Vec is still sound.
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => schema::open_reader(&self.path, self.busy_timeout),
        }
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let conn = self
            .take()
            .map_err(|e| fail("get", format!("cannot open a read connection: {e}")))?;
        let result = rows::load(&conn, id).map_err(|e| rows::row_error("get", e));
        self.put(conn);
        result
    }

    fn list(&self, query: &ListQuery) -> Result<Vec<Record>, StoreError> {
        let conn = self
            .take()
            .map_err(|e| fail("list", format!("cannot open a read connection: {e}")))?;
        let result = rows::list(&conn, query).map_err(|e| rows::row_error("list", e));
        self.put(conn);
        result
    }

    /// The headers and body of the completed record `decided`, if it is
    /// still stored with its body.
    fn payload(&self, decided: &Record) -> Result<Option<rows::Payload>, StoreError> {
        #[cfg(test)]
        {
            let hook = self
                .before_payload
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(hook) = hook {
                hook();
            }
        }
        let conn = self
            .take()
            .map_err(|e| fail("claim", format!("cannot open a read connection: {e}")))?;
        let result = rows::load_payload(&conn, decided).map_err(|e| rows::row_error("claim", e));
        self.put(conn);
        result
    }
}

/// An engine error for `op` with a message.
fn fail(op: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::new("sqlite", op, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use idem_core::{Fingerprint, IdempotencyKey, Retention, Scope, StoredResponse};

    fn claim(key: &str) -> Claim {
        claim_at(key, Timestamp(1_000))
    }

    fn claim_at(key: &str, now: Timestamp) -> Claim {
        let id = RecordId {
            scope: Scope::from_stored("s"),
            key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
        };
        let fingerprint = Fingerprint {
            version: 1,
            digest: [7; 32],
        };
        Claim::new(id, fingerprint, now, &Retention::default(), false)
    }

    fn open_temp() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), SqliteOptions::default()).unwrap();
        (store, dir)
    }

    #[tokio::test]
    async fn after_the_writer_stops_writes_fail_and_reads_still_work() {
        let (mut store, _dir) = open_temp();
        assert!(matches!(
            store.claim(claim("k")).await.unwrap(),
            ClaimOutcome::Claimed { .. }
        ));
        drop(store.ops.take());
        store.writer.take().unwrap().join().unwrap();
        let err = store.claim(claim("k2")).await.unwrap_err();
        assert!(
            idem_testkit::chain(&err).contains("writer thread has stopped"),
            "{err:?}"
        );
        assert!(store.ping().await.is_err());
        assert!(store.sweep(Timestamp(0), 10).await.is_err());
        assert!(store.get(&claim("k").id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_operation_the_writer_drops_fails_instead_of_hanging() {
        let (mut store, _dir) = open_temp();
        let (tx, rx) = mpsc::channel::<Op>();
        let black_hole = std::thread::spawn(move || rx.into_iter().for_each(drop));
        store.ops = Some(tx);
        let err = store.claim(claim("k")).await.unwrap_err();
        assert!(
            idem_testkit::chain(&err).contains("not acknowledged"),
            "{err:?}"
        );
        drop(store);
        black_hole.join().unwrap();
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_operations_and_the_writer_carries_on() {
        let options = SqliteOptions {
            group_commit_window: Duration::from_millis(200),
            ..SqliteOptions::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), options).unwrap();
        // Queued together, so they share the panicking batch.
        let first = store.claim(claim("before"));
        let panic = async {
            store.ops.as_ref().unwrap().send(Op::Panic).unwrap();
        };
        let (first, ()) = tokio::join!(first, panic);
        assert!(
            first.is_err(),
            "a claim in a rolled-back batch is not acknowledged"
        );
        assert!(
            store.get(&claim("before").id).await.unwrap().is_none(),
            "and not stored"
        );
        assert!(matches!(
            store.claim(claim("after")).await.unwrap(),
            ClaimOutcome::Claimed { .. }
        ));
        store.ping().await.unwrap();
    }

    /// A body too large to come back with the writer's decision (headers
    /// and body over 16 KiB, `claim_columns!`): its replay reads it on a
    /// reader.
    fn large(tag: &str) -> Bytes {
        Bytes::from(tag.repeat(16 * 1024 / tag.len() + 1))
    }

    /// Claims `c`, completes it with `body`, and returns the completion.
    async fn complete_with(store: &SqliteStore, c: &Claim, body: Bytes) -> Completion {
        let ClaimOutcome::Claimed { token } = store.claim(c.clone()).await.unwrap() else {
            panic!("{} is free", c.id.key);
        };
        let response = StoredResponse {
            status: 201,
            headers: vec![("x-h".into(), Bytes::from_static(b"v"))],
            body: Some(body),
        };
        let completion = Completion::new(response, c.now, &Retention::default());
        let written = store.complete(&c.id, token, completion.clone()).await;
        assert_eq!(written.unwrap(), Write::Written);
        completion
    }

    /// Holds the next payload read on its read thread: the first receiver
    /// resolves once the read is held (the writer has answered the claim),
    /// and the read goes on when the sender fires or is dropped.
    fn hold_next_payload_read(store: &SqliteStore) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (held, is_held) = oneshot::channel();
        let (go, on_go) = oneshot::channel::<()>();
        let hook: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = held.send(());
            let _ = on_go.blocking_recv();
        });
        *store.readers.before_payload.lock().unwrap() = Some(hook);
        (is_held, go)
    }

    const DEADLINE: Duration = Duration::from_secs(10);

    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(DEADLINE, f)
            .await
            .unwrap_or_else(|_| panic!("{what} did not happen within {DEADLINE:?}"))
    }

    /// A small payload comes back with the writer's decision: no read on a
    /// reader, and the replay is whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_replay_comes_with_the_decision_and_needs_no_reader() {
        let (store, _dir) = open_temp();
        let c = claim("small");
        let stored = complete_with(&store, &c, Bytes::from_static(b"{\"id\":1}")).await;
        let (mut is_held, _go) = hold_next_payload_read(&store);
        let ClaimOutcome::Existing { outcome, record } =
            within("the replay", store.claim(claim("small")))
                .await
                .unwrap()
        else {
            panic!("a completed key is not claimed again");
        };
        assert_eq!(outcome, ExistingOutcome::Replay);
        assert_eq!(record.response, Some(stored.response));
        assert!(
            is_held.try_recv().is_err(),
            "no payload read on a reader for a small payload"
        );
    }

    /// The replay's body is read after the writer answered, off its thread:
    /// while that read is held, the writer commits other claims.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_serves_other_claims_while_a_replay_reads_its_body() {
        let (store, _dir) = open_temp();
        let store = Arc::new(store);
        let c = claim("large");
        let stored = complete_with(&store, &c, large("the stored body")).await;
        let (is_held, go) = hold_next_payload_read(&store);
        let replay = tokio::spawn({
            let store = store.clone();
            async move { store.claim(claim("large")).await }
        });
        within("the payload read", is_held).await.unwrap();
        for i in 0..3 {
            let fresh = within("a fresh claim", store.claim(claim(&format!("fresh-{i}")))).await;
            assert!(matches!(fresh.unwrap(), ClaimOutcome::Claimed { .. }));
        }
        within("a ping", store.ping()).await.unwrap();
        assert!(!replay.is_finished(), "the replay waits for its read");
        go.send(()).unwrap();
        let replayed = within("the replay", replay).await.unwrap().unwrap();
        let ClaimOutcome::Existing { outcome, record } = replayed else {
            panic!("a completed key is not claimed again");
        };
        assert_eq!(outcome, ExistingOutcome::Replay);
        assert_eq!(record.response, Some(stored.response));
    }

    /// A sweep that drops the payload between the writer's decision and the
    /// read: the answer is the one a tombstone gets, not a replay without
    /// a body and not a new claim.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_swept_before_its_body_is_read_answers_expired() {
        let (store, _dir) = open_temp();
        let store = Arc::new(store);
        let c = claim("k");
        let stored = complete_with(&store, &c, large("body")).await;
        let (is_held, go) = hold_next_payload_read(&store);
        let replay = tokio::spawn({
            let store = store.clone();
            async move { store.claim(claim("k")).await }
        });
        within("the payload read", is_held).await.unwrap();
        let report = within("the sweep", store.sweep(stored.expires_at, 10)).await;
        assert_eq!(report.unwrap().tombstoned, 1);
        go.send(()).unwrap();
        let ClaimOutcome::Existing { outcome, record } =
            within("the replay", replay).await.unwrap().unwrap()
        else {
            panic!("a swept record is not claimed again");
        };
        assert_eq!(outcome, ExistingOutcome::Expired);
        let response = record.response.unwrap();
        assert_eq!((response.status, response.body), (201, None));
        assert!(response.headers.is_empty());
    }

    /// The record the writer decided on deleted and the key claimed and
    /// completed anew before the read: the replay never returns the new
    /// record's body.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_never_returns_the_body_of_a_record_that_replaced_it() {
        let (store, _dir) = open_temp();
        let store = Arc::new(store);
        let stored = complete_with(&store, &claim("k"), large("first")).await;
        let (is_held, go) = hold_next_payload_read(&store);
        let replay = tokio::spawn({
            let store = store.clone();
            async move { store.claim(claim("k")).await }
        });
        within("the payload read", is_held).await.unwrap();
        let later = stored.tombstone_until;
        let report = within("the sweep", store.sweep(later, 10)).await;
        assert_eq!(report.unwrap().deleted, 1);
        let second = claim_at("k", later);
        let second_stored = within(
            "the new record",
            complete_with(&store, &second, large("second")),
        )
        .await;
        go.send(()).unwrap();
        let ClaimOutcome::Existing { outcome, record } =
            within("the replay", replay).await.unwrap().unwrap()
        else {
            panic!("the replay does not claim");
        };
        assert_eq!(outcome, ExistingOutcome::Expired);
        assert_eq!(record.response.and_then(|r| r.body), None);
        // A request now meets the new record, and replays it.
        let ClaimOutcome::Existing { outcome, record } =
            store.claim(claim_at("k", later)).await.unwrap()
        else {
            panic!("the new record is completed");
        };
        assert_eq!(outcome, ExistingOutcome::Replay);
        assert_eq!(record.response, Some(second_stored.response));
    }
}
