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
//! Times are the callers' readings, as passed (SQLite has no clock of its
//! own worth trusting over the gateway's: the processes sharing a file
//! share the machine's clock, and the layer makes it monotonic).

#[macro_use]
mod codec;
mod rows;
mod schema;
mod writer;

use crate::{Claim, ClaimOutcome, Completion, Store, StoreError, SweepReport, Write};
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
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_batch: 256,
            group_commit_window: Duration::ZERO,
            busy_timeout: Duration::from_secs(5),
            max_idle_readers: 4,
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
        let sent = self.ops.as_ref().map(|ops| ops.send(make(reply)));
        if !matches!(sent, Some(Ok(()))) {
            return Err(fail(op, "the writer thread has stopped"));
        }
        answer.await.unwrap_or_else(|_| {
            Err(fail(
                op,
                "the writer thread stopped before the operation committed; it was not acknowledged",
            ))
        })
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
        self.call("claim", |reply| Op::Claim { claim, reply }).await
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

    /// Goes through the writer: healthy means the writer is alive and can
    /// take the write lock, not only that the file can be read.
    async fn ping(&self) -> Result<(), StoreError> {
        self.call("ping", |reply| Op::Ping { reply }).await
    }

    fn engine(&self) -> &'static str {
        "sqlite"
    }
}

/// Read-only connections for `get`. WAL lets them read while the writer
/// writes; each statement sees the latest committed state.
struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
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
}

/// An engine error for `op` with a message.
fn fail(op: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::new("sqlite", op, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use idem_core::{Fingerprint, IdempotencyKey, Retention, Scope};

    fn claim(key: &str) -> Claim {
        let id = RecordId {
            scope: Scope::from_stored("s"),
            key: IdempotencyKey::parse(key.as_bytes()).unwrap(),
        };
        let fingerprint = Fingerprint {
            version: 1,
            digest: [7; 32],
        };
        Claim::new(
            id,
            fingerprint,
            Timestamp(1_000),
            &Retention::default(),
            false,
        )
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
            err.to_string().contains("writer thread has stopped"),
            "{err}"
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
        assert!(err.to_string().contains("not acknowledged"), "{err}");
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
}
