//! The writer thread: the one connection that writes, and group commit.
//!
//! Every write operation (and `claim`, which may write) is sent here. The
//! thread takes the first queued operation, drains whatever else is queued
//! (up to `max_batch`, optionally waiting `group_commit_window` for more),
//! runs them all in order in one `BEGIN IMMEDIATE ... COMMIT` transaction,
//! and answers them only once that transaction has committed: a batch costs
//! one fsync however many operations it carries. Operations on the same key
//! in one batch see each other's effects, because each one reads its row
//! inside the transaction.
//!
//! The writer only writes, and reads what a decision needs: a claim that
//! meets a completed record reads whether it has a body, never the body
//! (nor the headers beside it); the store reads a replay's payload on a
//! reader, after the answer, which is sent only after the commit.

use super::codec::RowError;
use super::rows::{load, load_for_claim, persist, row_error, sweep_candidates};
use super::{fail, Stats};
use crate::engine::{apply_claim, apply_complete, apply_release, apply_renew, apply_unknown};
use crate::{Claim, ClaimOutcome, Completion, StoreError, SweepReport, Write};
use idem_core::decision::ExistingOutcome;
use idem_core::operator::{decide_operator, Operated, OperatorAction, OperatorRefusal};
use idem_core::{RecordId, Timestamp};
use rusqlite::Connection;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Where an operation's result goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Records a sweep examines per transaction, so a large `limit` never holds
/// the write lock (and every claim queued behind it) for long.
const SWEEP_CHUNK: usize = 256;

/// An operation for the writer.
pub(super) enum Op {
    Claim {
        claim: Claim,
        reply: Reply<ClaimOutcome>,
    },
    Owner {
        id: RecordId,
        token: u64,
        action: OwnerAction,
        reply: Reply<Write>,
    },
    /// An operator's action, fenced by the token the operator read.
    Operate {
        id: RecordId,
        token: u64,
        action: Box<OperatorAction>,
        now: Timestamp,
        reply: Reply<Result<Operated, OperatorRefusal>>,
    },
    Sweep(SweepJob),
    /// Proves the writer is alive and can take the write lock.
    Ping {
        reply: Reply<()>,
    },
    /// A bug in the middle of a batch.
    #[cfg(test)]
    Panic,
}

/// A write by the owner of a claim, fenced by its token.
pub(super) enum OwnerAction {
    Renew(Timestamp),
    Complete(Box<Completion>),
    Unknown,
    Release,
}

impl OwnerAction {
    pub(super) fn name(&self) -> &'static str {
        match self {
            OwnerAction::Renew(_) => "renew",
            OwnerAction::Complete(_) => "complete",
            OwnerAction::Unknown => "mark_unknown",
            OwnerAction::Release => "release",
        }
    }
}

/// A sweep in progress: it runs [`SWEEP_CHUNK`] records per batch until
/// `remaining` is spent or nothing is left to sweep, then answers.
pub(super) struct SweepJob {
    pub(super) now: Timestamp,
    pub(super) remaining: usize,
    pub(super) report: SweepReport,
    pub(super) reply: Reply<SweepReport>,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Claim { .. } => "claim",
            Op::Owner { action, .. } => action.name(),
            Op::Operate { .. } => "operate",
            Op::Sweep(_) => "sweep",
            Op::Ping { .. } => "ping",
            #[cfg(test)]
            Op::Panic => "panic",
        }
    }

    /// Answers an operation that was not run.
    fn fail(self, why: &str) {
        let err = fail(self.name(), why.to_owned());
        match self {
            Op::Claim { reply, .. } => drop(reply.send(Err(err))),
            Op::Owner { reply, .. } => drop(reply.send(Err(err))),
            Op::Operate { reply, .. } => drop(reply.send(Err(err))),
            Op::Sweep(job) => drop(job.reply.send(Err(err))),
            Op::Ping { reply } => drop(reply.send(Err(err))),
            #[cfg(test)]
            Op::Panic => {}
        }
    }
}

/// An operation that ran in the current transaction; its result is sent
/// only once the transaction commits.
struct Pending<T> {
    op: &'static str,
    reply: Reply<T>,
    result: Result<T, StoreError>,
}

impl<T> Pending<T> {
    fn committed(self) {
        let _ = self.reply.send(self.result);
    }

    /// The transaction did not commit: whatever the operation decided was
    /// not stored, so it must not be reported as done.
    fn aborted(self, why: &str) {
        let err = match self.result {
            Err(e) => e,
            Ok(_) => fail(self.op, why.to_owned()),
        };
        let _ = self.reply.send(Err(err));
    }
}

enum Done {
    Claim(Pending<ClaimOutcome>),
    Write(Pending<Write>),
    Operate(Pending<Result<Operated, OperatorRefusal>>),
    Sweep(Pending<SweepReport>),
    Ping(Pending<()>),
}

impl Done {
    fn committed(self) {
        match self {
            Done::Claim(p) => p.committed(),
            Done::Write(p) => p.committed(),
            Done::Operate(p) => p.committed(),
            Done::Sweep(p) => p.committed(),
            Done::Ping(p) => p.committed(),
        }
    }

    fn aborted(self, why: &str) {
        match self {
            Done::Claim(p) => p.aborted(why),
            Done::Write(p) => p.aborted(why),
            Done::Operate(p) => p.aborted(why),
            Done::Sweep(p) => p.aborted(why),
            Done::Ping(p) => p.aborted(why),
        }
    }
}

/// What running one operation left to do after the commit.
enum Step {
    Answer(Done),
    /// A sweep with work left: answered after a later batch.
    Continue(SweepJob),
    /// A claim nobody waits for any more: not run, so it leaves no orphan
    /// in-flight record.
    Skipped,
}

pub(super) struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Op>,
    max_batch: usize,
    window: Duration,
    stats: Arc<Stats>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        rx: mpsc::Receiver<Op>,
        max_batch: usize,
        window: Duration,
        stats: Arc<Stats>,
    ) -> Self {
        Writer {
            conn,
            rx,
            max_batch: max_batch.max(1),
            window,
            stats,
        }
    }

    /// Runs until every sender is gone and the queue is empty.
    pub(super) fn run(mut self) {
        let mut carry: Option<SweepJob> = None;
        loop {
            let mut batch = Vec::with_capacity(self.max_batch.min(64));
            match carry.take() {
                Some(job) => batch.push(Op::Sweep(job)),
                None => match self.rx.recv() {
                    Ok(op) => batch.push(op),
                    Err(mpsc::RecvError) => break,
                },
            }
            self.fill(&mut batch);
            carry = self.run_batch_guarded(batch);
        }
        tracing::debug!("sqlite writer: all handles dropped, stopping");
    }

    /// Adds what is already queued, then, with a window, what arrives
    /// within it.
    fn fill(&self, batch: &mut Vec<Op>) {
        while batch.len() < self.max_batch {
            match self.rx.try_recv() {
                Ok(op) => batch.push(op),
                // Nothing more queued: the window (if any) waits for more.
                Err(_) => break,
            }
        }
        if self.window.is_zero() {
            return;
        }
        let deadline = Instant::now() + self.window;
        while batch.len() < self.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.rx.recv_timeout(left) {
                Ok(op) => batch.push(op),
                Err(_) => return,
            }
        }
    }

    /// A panic in one batch (a bug) fails that batch's operations (their
    /// reply senders are dropped, and nothing of the batch is committed);
    /// the writer carries on with the next.
    fn run_batch_guarded(&mut self, batch: Vec<Op>) -> Option<SweepJob> {
        match catch_unwind(AssertUnwindSafe(|| self.run_batch(batch))) {
            Ok(carry) => carry,
            Err(_) => {
                tracing::error!(
                    "sqlite writer: a batch panicked; its operations failed and were rolled back"
                );
                self.rollback();
                None
            }
        }
    }

    fn rollback(&self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!("sqlite writer: rollback failed: {e}");
            }
        }
    }

    fn run_batch(&mut self, batch: Vec<Op>) -> Option<SweepJob> {
        if let Err(e) = self
            .conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]))
        {
            let why = format!("cannot start a write transaction: {e}");
            tracing::warn!("sqlite writer: {why}");
            self.rollback();
            for op in batch {
                op.fail(&why);
            }
            return None;
        }
        let mut done = Vec::with_capacity(batch.len());
        let mut carry = None;
        let mut ops = batch.into_iter();
        for op in ops.by_ref() {
            match self.execute(op) {
                Step::Answer(d) => done.push(d),
                Step::Continue(job) => carry = Some(job),
                Step::Skipped => {}
            }
            if self.conn.is_autocommit() {
                // SQLite rolls the whole transaction back on some errors
                // (disk full, I/O): everything before is lost too.
                let why = "SQLite rolled the transaction back after an error; nothing of this batch was stored";
                tracing::warn!("sqlite writer: {why}");
                done.into_iter().for_each(|d| d.aborted(why));
                ops.for_each(|op| op.fail(why));
                if let Some(job) = carry {
                    Op::Sweep(job).fail(why);
                }
                return None;
            }
        }
        let commit = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]));
        match commit {
            Ok(_) => {
                // How much group commit gathers: operations per commit.
                metrics::histogram!(crate::BATCH_SIZE_METRIC, "engine" => "sqlite")
                    .record(done.len() as f64);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .operations
                    .fetch_add(done.len() as u64, Ordering::Relaxed);
                done.into_iter().for_each(Done::committed);
                carry
            }
            Err(e) => {
                // After a failed commit the writes may or may not reach the
                // disk; either way none of them is acknowledged.
                let why = format!("commit failed, the batch's writes were not acknowledged: {e}");
                tracing::warn!("sqlite writer: {why}");
                self.rollback();
                done.into_iter().for_each(|d| d.aborted(&why));
                if let Some(job) = carry {
                    Op::Sweep(job).fail(&why);
                }
                None
            }
        }
    }

    fn execute(&mut self, op: Op) -> Step {
        match op {
            Op::Claim { reply, .. } if reply.is_closed() => Step::Skipped,
            Op::Claim { claim, reply } => Step::Answer(Done::Claim(Pending {
                op: "claim",
                result: self.claim(&claim),
                reply,
            })),
            Op::Owner {
                id,
                token,
                action,
                reply,
            } => Step::Answer(Done::Write(Pending {
                op: action.name(),
                result: self.owner(&id, token, &action),
                reply,
            })),
            Op::Operate {
                id,
                token,
                action,
                now,
                reply,
            } => Step::Answer(Done::Operate(Pending {
                op: "operate",
                result: self.operate(&id, token, &action, now),
                reply,
            })),
            Op::Sweep(job) => self.sweep_step(job),
            Op::Ping { reply } => Step::Answer(Done::Ping(Pending {
                op: "ping",
                result: Ok(()),
                reply,
            })),
            #[cfg(test)]
            Op::Panic => panic!("a bug in a batch"),
        }
    }

    /// Decides a claim on the record's small columns only: an existing
    /// record comes back without its body (and without the headers beside
    /// one), which the store reads outside this thread when the answer is
    /// a replay. The body's presence is all the decision needs.
    fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        let op = "claim";
        let (mut slot, small) = match load_for_claim(&self.conn, &claim.id) {
            Ok(Some((record, small))) => (Some(record), small),
            Ok(None) => (None, None),
            Err(e) => return Err(row_error(op, e)),
        };
        let mut outcome = apply_claim(&mut slot, claim);
        if let ClaimOutcome::Claimed { .. } = outcome {
            if slot.as_ref().is_some_and(|r| r.response.is_some()) {
                // A claim writes a fresh record or refreshes its own one in
                // flight, and neither has a response. Were a row ever to
                // break that rule, the slot would hold the placeholder body,
                // which must never be written back: decide on the whole row.
                slot = load(&self.conn, &claim.id).map_err(|e| row_error(op, e))?;
                outcome = apply_claim(&mut slot, claim);
            }
        }
        match &mut outcome {
            ClaimOutcome::Claimed { .. } => {
                persist(&self.conn, &claim.id, slot.as_ref()).map_err(|e| row_error(op, e))?;
            }
            ClaimOutcome::Existing { outcome, record } => {
                if let Some(response) = &mut record.response {
                    // The placeholder (or, after the fallback above, the
                    // body) is not part of the answer. A replay carries its
                    // payload when it was small enough to come with the
                    // row; otherwise the store reads it from the committed
                    // row. A damaged payload fails only a replay.
                    response.body = None;
                    if let (true, Some(small)) = (matches!(outcome, ExistingOutcome::Replay), small)
                    {
                        let payload = small
                            .decode()
                            .map_err(|e| row_error(op, RowError::Corrupt(e)))?;
                        response.headers = payload.headers;
                        response.body = Some(payload.body);
                    }
                }
            }
        }
        Ok(outcome)
    }

    fn owner(&self, id: &RecordId, token: u64, action: &OwnerAction) -> Result<Write, StoreError> {
        let op = action.name();
        let mut slot = load(&self.conn, id).map_err(|e| row_error(op, e))?;
        let write = match action {
            OwnerAction::Renew(lease_until) => apply_renew(&mut slot, token, *lease_until),
            OwnerAction::Complete(completion) => {
                apply_complete(&mut slot, token, Completion::clone(completion))
            }
            OwnerAction::Unknown => apply_unknown(&mut slot, token),
            OwnerAction::Release => apply_release(&mut slot, token),
        };
        if write == Write::Written {
            persist(&self.conn, id, slot.as_ref()).map_err(|e| row_error(op, e))?;
        }
        Ok(write)
    }

    /// Reads the whole row (a purge or resolve writes it all back, body
    /// included), lets [`decide_operator`] decide, and writes its answer. A
    /// refusal writes nothing.
    fn operate(
        &self,
        id: &RecordId,
        token: u64,
        action: &OperatorAction,
        now: Timestamp,
    ) -> Result<Result<Operated, OperatorRefusal>, StoreError> {
        let op = "operate";
        let slot = load(&self.conn, id).map_err(|e| row_error(op, e))?;
        let decided = decide_operator(slot.as_ref(), token, action, now);
        if let Ok(next) = &decided {
            persist(&self.conn, id, Some(&next.record)).map_err(|e| row_error(op, e))?;
        }
        Ok(decided)
    }

    fn sweep_step(&mut self, mut job: SweepJob) -> Step {
        let budget = job.remaining.min(SWEEP_CHUNK);
        if budget == 0 || job.reply.is_closed() {
            return Step::Answer(Done::Sweep(Pending {
                op: "sweep",
                result: Ok(job.report),
                reply: job.reply,
            }));
        }
        match self.sweep_chunk(job.now, budget) {
            Ok((chunk, exhausted)) => {
                let touched = chunk.deleted + chunk.tombstoned;
                job.report.deleted += chunk.deleted;
                job.report.tombstoned += chunk.tombstoned;
                job.remaining -= touched.min(job.remaining);
                if exhausted || touched == 0 || job.remaining == 0 {
                    Step::Answer(Done::Sweep(Pending {
                        op: "sweep",
                        result: Ok(job.report),
                        reply: job.reply,
                    }))
                } else {
                    Step::Continue(job)
                }
            }
            Err(e) => Step::Answer(Done::Sweep(Pending {
                op: "sweep",
                result: Err(row_error("sweep", e)),
                reply: job.reply,
            })),
        }
    }

    /// Sweeps at most `budget` records inside a savepoint, so a failure
    /// leaves none of them half done. Returns whether the candidates ran
    /// out before the budget did.
    fn sweep_chunk(&self, now: Timestamp, budget: usize) -> Result<(SweepReport, bool), RowError> {
        self.conn.prepare_cached("SAVEPOINT sweep")?.execute([])?;
        let result = sweep_candidates(&self.conn, now, budget);
        if result.is_err() && !self.conn.is_autocommit() {
            self.conn.prepare_cached("ROLLBACK TO sweep")?.execute([])?;
        }
        if !self.conn.is_autocommit() {
            self.conn.prepare_cached("RELEASE sweep")?.execute([])?;
        }
        result
    }
}
