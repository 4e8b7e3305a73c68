//! Group commit: the claims of concurrent requests go to the database as
//! one statement per batch ([`rows::CLAIM_MANY`]), and so do their
//! completions ([`rows::COMPLETE_MANY`]). Each statement is its own
//! transaction, so a batch costs one round trip, one commit and one WAL
//! flush however many requests it carries, where one statement per request
//! spent most of the database's CPU on per-statement overhead and the
//! context switches of many backends.
//!
//! Per kind, [`BATCHES_IN_FLIGHT`] statements may be in flight at once,
//! each holding a slot. A request that finds a slot free takes it and is
//! decided alone, as one statement with its cached plan: under light load
//! batching costs nothing. One that finds every slot taken queues; a
//! gathering task waits for a slot, then sends what queued meanwhile (up
//! to [`MAX_BATCH`]) as one statement, or hands a lone request back to its
//! caller with the slot. Nothing waits on a timer.
//!
//! The batch statements run on connections of their own, with
//! `plan_cache_mode = force_custom_plan`: each execution is planned for its
//! arrays and the table as it is now. With PostgreSQL's default a batch
//! statement switched to a generic plan after five executions, made while
//! the table was small, and a sustained run then fell below one statement
//! per request (docs/benchmarks.md). The single statements keep their
//! cached plans on the store's own pool, where planning would be the
//! larger cost.
//!
//! What a batch cannot answer it hands back to the caller, which decides
//! alone, as without batching: a second claim of a record already in the
//! batch (it must see the first one's row), a key the rule may claim again
//! (that needs the row lock), a row the statement's snapshot did not see,
//! a row that does not decode. A failed batch fails each of its requests,
//! exactly as a failed single statement would: the claim or completion may
//! have committed, and the caller settles it as it settles any lost reply.
//!
//! On by default ([`super::PostgresOptions::group_commit`]).

use super::rows::{self, read_record, Body, RowError};
use super::{at_store_time, fail, BoxFuture, Connections, ENGINE};
use crate::engine::{apply_claim, offset};
use crate::{Claim, ClaimOutcome, Completion, StoreError, Write};
use deadpool_postgres::Object;
use idem_core::RecordId;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Most requests in one statement.
pub(super) const MAX_BATCH: usize = 64;

/// Statements of one kind in flight at once: batches and lone requests,
/// each on a connection of its own. Two: measured on two cores over
/// sustained runs against one statement per request, 0.81× at 8
/// concurrent requests (one at a time measured about 15% below two
/// there), 1.3× at 32 and 2.6× at 128; four batches at once (before lone
/// requests took slots) carried about two requests each and lost at every
/// load (docs/benchmarks.md).
pub(super) const BATCHES_IN_FLIGHT: usize = 2;

/// Connections the batches run on, beside the store's own pool (where lone
/// requests run): one per batch in flight of each kind.
pub(super) const BATCH_CONNECTIONS: usize = 2 * BATCHES_IN_FLIGHT;

/// Requests queued for a batch; past it a request runs alone.
const QUEUE: usize = 4096;

/// The two gathering tasks' queues. Dropping this stops them once their
/// queues are empty.
pub(super) struct Batches {
    claims: mpsc::Sender<ClaimJob>,
    completions: mpsc::Sender<CompletionJob>,
    /// Per kind, the statements in flight at once: a batch or a lone
    /// request holds one.
    claim_slots: Arc<Semaphore>,
    completion_slots: Arc<Semaphore>,
    stats: Arc<BatchStats>,
    /// A request's bound, queueing included: past it the caller is
    /// answered with an error (as for a lost reply) and its batch, if it
    /// has not left yet, leaves it out.
    bound: Duration,
    /// What the batches run on, for tests to look at their settings.
    #[cfg(test)]
    pub(super) connections: Connections,
}

/// Counts of what the batches carried, for tests and benchmarks.
#[derive(Default)]
pub(super) struct BatchStats {
    /// Statements sent.
    pub(super) statements: AtomicU64,
    /// Requests they carried.
    pub(super) requests: AtomicU64,
}

/// What a batch answers for one request: the answer, or the request back
/// for the caller to decide alone.
type Answer<T, R> = Result<Result<T, Alone<R>>, StoreError>;

/// A request handed back to be decided alone as one statement, with its
/// kind's slot when it took it: while the caller holds the slot no batch
/// of the kind leaves, so what arrives meanwhile queues and leaves
/// together once it is done.
pub(super) struct Alone<R> {
    pub(super) request: R,
    pub(super) slot: Option<OwnedSemaphorePermit>,
    /// What is left of the request's bound after its wait in the queue:
    /// the statement alone gets no more, so a request never waits twice
    /// its bound (a store that stopped answering is reported as quickly
    /// with batches as without).
    pub(super) bound: Duration,
}

impl<R> Alone<R> {
    /// With no bound yet: [`Batches`] sets what is left of the request's
    /// before it hands it back.
    fn new(request: R, slot: Option<OwnedSemaphorePermit>) -> Self {
        Alone {
            request,
            slot,
            bound: Duration::MAX,
        }
    }

    fn without_slot(request: R) -> Self {
        Self::new(request, None)
    }

    fn within(mut self, left: Duration) -> Self {
        self.bound = self.bound.min(left);
        self
    }
}

struct ClaimJob {
    claim: Claim,
    clock: Option<i64>,
    reply: oneshot::Sender<Answer<ClaimOutcome, Claim>>,
}

struct CompletionJob {
    id: RecordId,
    token: i64,
    completion: Completion,
    clock: Option<i64>,
    announcement: String,
    reply: oneshot::Sender<Answer<Write, Completion>>,
}

/// A completion as [`rows::COMPLETE_MANY`] takes it.
struct Completing {
    id: RecordId,
    token: i64,
    completion: Completion,
    clock: Option<i64>,
    announcement: String,
}

impl Batches {
    /// Starts the gathering tasks (on the current Tokio runtime), which
    /// send their batches on `connections` (see the module's doc for how
    /// those differ from the store's own).
    pub(super) fn start(connections: Connections) -> Self {
        let stats = Arc::new(BatchStats::default());
        let bound = connections.operation_timeout;
        let claim_slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
        let (claims, queued) = mpsc::channel(QUEUE);
        tokio::spawn(gather(
            queued,
            connections.clone(),
            claim_slots.clone(),
            stats.clone(),
            run_claims,
            |job: ClaimJob, slot| drop(job.reply.send(Ok(Err(Alone::new(job.claim, Some(slot)))))),
        ));
        let completion_slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
        let (completions, queued) = mpsc::channel(QUEUE);
        tokio::spawn(gather(
            queued,
            connections.clone(),
            completion_slots.clone(),
            stats.clone(),
            run_completions,
            |job: CompletionJob, slot| {
                drop(
                    job.reply
                        .send(Ok(Err(Alone::new(job.completion, Some(slot))))),
                );
            },
        ));
        Batches {
            claims,
            completions,
            claim_slots,
            completion_slots,
            stats,
            bound,
            #[cfg(test)]
            connections,
        }
    }

    /// (statements sent, requests they carried) so far.
    pub(super) fn stats(&self) -> (u64, u64) {
        (
            self.stats.statements.load(Ordering::Relaxed),
            self.stats.requests.load(Ordering::Relaxed),
        )
    }

    /// The claim decided in a batch, or handed back (`Ok(Err(alone))`) to
    /// be decided alone: at once, with the slot, when no claim statement
    /// is in flight (under light load batching costs nothing).
    pub(super) async fn claim(
        &self,
        claim: Claim,
        clock: Option<i64>,
    ) -> Answer<ClaimOutcome, Claim> {
        if let Ok(slot) = self.claim_slots.clone().try_acquire_owned() {
            return Ok(Err(Alone::new(claim, Some(slot)).within(self.bound)));
        }
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        if let Err(e) = self.claims.try_send(ClaimJob {
            claim,
            clock,
            reply,
        }) {
            return Ok(Err(
                Alone::without_slot(e.into_inner().claim).within(self.bound)
            ));
        }
        self.answer("claim", answer, started).await
    }

    /// The completion written (or fenced) in a batch, or handed back
    /// (`Ok(Err(alone))`) to be written alone: at once, with the slot,
    /// when no completion statement is in flight.
    pub(super) async fn complete(
        &self,
        id: RecordId,
        token: i64,
        completion: Completion,
        clock: Option<i64>,
        announcement: String,
    ) -> Answer<Write, Completion> {
        if let Ok(slot) = self.completion_slots.clone().try_acquire_owned() {
            return Ok(Err(Alone::new(completion, Some(slot)).within(self.bound)));
        }
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        let job = CompletionJob {
            id,
            token,
            completion,
            clock,
            announcement,
            reply,
        };
        if let Err(e) = self.completions.try_send(job) {
            return Ok(Err(
                Alone::without_slot(e.into_inner().completion).within(self.bound)
            ));
        }
        self.answer("complete", answer, started).await
    }

    /// The answer to a request queued at `started`, within its bound; one
    /// handed back keeps what is left of the bound.
    async fn answer<T, R>(
        &self,
        op: &'static str,
        answer: oneshot::Receiver<Answer<T, R>>,
        started: Instant,
    ) -> Answer<T, R> {
        let answer = within(self.bound, op, answer).await?;
        let left = self.bound.saturating_sub(started.elapsed());
        Ok(answer.map_err(|alone| alone.within(left)))
    }
}

/// A batch's answer, or an error once `bound` has passed (the request may
/// still be carried by a batch already sent: like a lost reply).
async fn within<T, R>(
    bound: Duration,
    op: &'static str,
    answer: oneshot::Receiver<Answer<T, R>>,
) -> Answer<T, R> {
    match tokio::time::timeout(bound, answer).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err(fail(op, "the request's batch was lost")),
        Err(_) => Err(fail(op, format!("no answer within {bound:?}"))),
    }
}

/// Takes queued jobs in batches, each run by `run` once one of `slots` is
/// free; a job that found nothing queued beside it goes back to its caller
/// through `alone`, with the slot.
async fn gather<J, F, Fut>(
    mut queued: mpsc::Receiver<J>,
    connections: Connections,
    slots: Arc<Semaphore>,
    stats: Arc<BatchStats>,
    run: F,
    alone: fn(J, OwnedSemaphorePermit),
) where
    J: Send + 'static,
    F: Fn(Connections, Vec<J>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    while let Some(first) = queued.recv().await {
        // Waiting for a slot is what lets a batch fill under load.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if batch.len() == 1 {
            // Planning a batch statement for one request costs more than
            // the single statement's cached plan.
            if let Some(job) = batch.pop() {
                alone(job, slot);
            }
            continue;
        }
        stats.statements.fetch_add(1, Ordering::Relaxed);
        stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        metrics::histogram!(crate::BATCH_SIZE_METRIC, "engine" => ENGINE)
            .record(batch.len() as f64);
        let running = run(connections.clone(), batch);
        tokio::spawn(async move {
            running.await;
            drop(slot);
        });
    }
}

/// Splits `jobs` into one job per record (sorted by record, the order the
/// statement writes them in) and the later jobs of a record already in.
fn one_per_record<J>(mut jobs: Vec<J>, id: impl Fn(&J) -> &RecordId) -> (Vec<J>, Vec<J>) {
    jobs.sort_by(|a, b| id(a).cmp(id(b)));
    let mut batch: Vec<J> = Vec::with_capacity(jobs.len());
    let mut again = Vec::new();
    for job in jobs {
        match batch.last() {
            Some(last) if id(last) == id(&job) => again.push(job),
            _ => batch.push(job),
        }
    }
    (batch, again)
}

/// The message of a failed batch, for each of its requests.
fn batch_failed(op: &'static str, e: &StoreError) -> StoreError {
    let why = std::error::Error::source(e).map_or_else(|| e.to_string(), ToString::to_string);
    fail(op, why)
}

fn run_claims(connections: Connections, jobs: Vec<ClaimJob>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let jobs = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
        let (batch, again) = one_per_record(jobs, |j| &j.claim.id);
        if batch.is_empty() {
            return; // every caller gave up (and `again` is empty too)
        }
        let (replies, claims): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|j| (j.reply, (j.claim, j.clock)))
            .unzip();
        let result = connections
            .run("claim", connections.operation_timeout, move |client| {
                Box::pin(async move {
                    let decided = claim_many(client, &claims).await?;
                    Ok((decided, claims))
                })
            })
            .await;
        match result {
            Ok((decided, claims)) => {
                for ((reply, outcome), (claim, _)) in replies.into_iter().zip(decided).zip(claims) {
                    let _ = reply.send(Ok(outcome.ok_or(Alone::without_slot(claim))));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(batch_failed("claim", &e)));
                }
            }
        }
        // After the batch answered, so they see its rows.
        for job in again {
            let _ = job.reply.send(Ok(Err(Alone::without_slot(job.claim))));
        }
    })
}

/// One [`rows::CLAIM_MANY`]: per claim, its outcome, or `None` to decide
/// it alone.
async fn claim_many(
    client: &mut Object,
    claims: &[(Claim, Option<i64>)],
) -> Result<Vec<Option<ClaimOutcome>>, RowError> {
    let stmt = client.prepare_cached(rows::CLAIM_MANY).await?;
    let scopes: Vec<&str> = claims.iter().map(|(c, _)| c.id.scope.as_str()).collect();
    let keys: Vec<&str> = claims.iter().map(|(c, _)| c.id.key.as_str()).collect();
    let versions: Vec<i32> = claims
        .iter()
        .map(|(c, _)| i32::from(c.fingerprint.version))
        .collect();
    let digests: Vec<&[u8]> = claims
        .iter()
        .map(|(c, _)| &c.fingerprint.digest[..])
        .collect();
    let from_now = |at: fn(&Claim) -> idem_core::Timestamp| -> Vec<i64> {
        claims.iter().map(|(c, _)| offset(c.now, at(c))).collect()
    };
    let leases = from_now(|c| c.lease_until);
    let expiries = from_now(|c| c.expires_at);
    let tombstones = from_now(|c| c.tombstone_until);
    let attempts: Vec<i64> = claims
        .iter()
        .map(|(c, _)| rows::attempt_to_sql(c.attempt))
        .collect();
    let holders: Vec<Option<&str>> = claims.iter().map(|(c, _)| c.holder.as_deref()).collect();
    let clocks: Vec<Option<i64>> = claims.iter().map(|(_, clock)| *clock).collect();
    let found = client
        .query(
            &stmt,
            &[
                &scopes,
                &keys,
                &versions,
                &digests,
                &leases,
                &expiries,
                &tombstones,
                &attempts,
                &holders,
                &clocks,
            ],
        )
        .await?;
    let mut decided = vec![None; claims.len()];
    for row in &found {
        let Some((slot, (claim, _))) =
            index_of(row)?.and_then(|i| Some((decided.get_mut(i)?, claims.get(i)?)))
        else {
            continue;
        };
        if let Some(token) = row.try_get::<_, Option<i64>>(1)? {
            if let Ok(token) = u64::try_from(token) {
                *slot = Some(ClaimOutcome::Claimed { token });
            }
            continue;
        }
        // Not inserted, and not seen either: inserted concurrently.
        if row.try_get::<_, Option<i16>>(2)?.is_none() {
            continue;
        }
        let Ok(record) = read_record(row, 2, claim.id.clone(), Body::Load) else {
            continue; // decided alone, which reports the damage
        };
        let now: i64 = row.try_get(2 + rows::COLUMNS)?;
        let mut record = Some(record);
        if let existing @ ClaimOutcome::Existing { .. } =
            apply_claim(&mut record, &at_store_time(claim, now))
        {
            *slot = Some(existing);
        }
    }
    Ok(decided)
}

fn run_completions(connections: Connections, jobs: Vec<CompletionJob>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let jobs = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
        let (batch, again) = one_per_record(jobs, |j| &j.id);
        if batch.is_empty() {
            return;
        }
        let (replies, batch): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|j| {
                let CompletionJob {
                    reply,
                    id,
                    token,
                    completion,
                    clock,
                    announcement,
                } = j;
                (
                    reply,
                    Completing {
                        id,
                        token,
                        completion,
                        clock,
                        announcement,
                    },
                )
            })
            .unzip();
        let result = connections
            .run("complete", connections.operation_timeout, move |client| {
                Box::pin(async move { complete_many(client, &batch).await })
            })
            .await;
        match result {
            Ok(written) => {
                for (reply, written) in replies.into_iter().zip(written) {
                    let write = if written {
                        Write::Written
                    } else {
                        Write::Fenced
                    };
                    let _ = reply.send(Ok(Ok(write)));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(batch_failed("complete", &e)));
                }
            }
        }
        for job in again {
            let _ = job.reply.send(Ok(Err(Alone::without_slot(job.completion))));
        }
    })
}

/// One [`rows::COMPLETE_MANY`]: per completion, whether it was written.
async fn complete_many(client: &mut Object, jobs: &[Completing]) -> Result<Vec<bool>, RowError> {
    let stmt = client.prepare_cached(rows::COMPLETE_MANY).await?;
    let scopes: Vec<&str> = jobs.iter().map(|j| j.id.scope.as_str()).collect();
    let keys: Vec<&str> = jobs.iter().map(|j| j.id.key.as_str()).collect();
    let tokens: Vec<i64> = jobs.iter().map(|j| j.token).collect();
    let statuses: Vec<i32> = jobs
        .iter()
        .map(|j| i32::from(j.completion.response.status))
        .collect();
    let (mut names, mut values) = (Vec::new(), Vec::new());
    let (mut header_from, mut header_count) = (Vec::new(), Vec::new());
    for job in jobs {
        let headers = &job.completion.response.headers;
        header_from.push(i32::try_from(names.len()).map_err(|_| too_many_headers())?);
        header_count.push(i32::try_from(headers.len()).map_err(|_| too_many_headers())?);
        for (name, value) in headers {
            names.push(name.as_bytes());
            values.push(&value[..]);
        }
    }
    let bodies: Vec<Option<&[u8]>> = jobs
        .iter()
        .map(|j| j.completion.response.body.as_deref())
        .collect();
    let expiries: Vec<i64> = jobs
        .iter()
        .map(|j| offset(j.completion.now, j.completion.expires_at))
        .collect();
    let tombstones: Vec<i64> = jobs
        .iter()
        .map(|j| offset(j.completion.now, j.completion.tombstone_until))
        .collect();
    let announcements: Vec<&str> = jobs.iter().map(|j| j.announcement.as_str()).collect();
    let clocks: Vec<Option<i64>> = jobs.iter().map(|j| j.clock).collect();
    let found = client
        .query(
            &stmt,
            &[
                &scopes,
                &keys,
                &tokens,
                &statuses,
                &header_from,
                &header_count,
                &bodies,
                &expiries,
                &tombstones,
                &announcements,
                &clocks,
                &names,
                &values,
            ],
        )
        .await?;
    let mut written = vec![false; jobs.len()];
    for row in &found {
        if let Some(w) = index_of(row)?.and_then(|i| written.get_mut(i)) {
            *w = true;
        }
    }
    Ok(written)
}

/// The request a returned row is about: its position in the arrays sent
/// (column 0, counted from 1) as an index.
fn index_of(row: &tokio_postgres::Row) -> Result<Option<usize>, RowError> {
    let position: i64 = row.try_get(0)?;
    Ok(usize::try_from(position - 1).ok())
}

fn too_many_headers() -> RowError {
    RowError::Corrupt(rows::Corrupt(
        "a batch holds more headers than PostgreSQL arrays index".into(),
    ))
}
