//! The store's operations: each one script (or, for a sweep or a listing,
//! a few), checked by the fencing token.

use super::codec::{self, due_key, record_key, SHARDS};
use super::scripts::SCRIPTS;
use super::{fail, RedisStore, ENGINE};
use crate::engine::offset;
use crate::{
    Claim, ClaimOutcome, Completion, ListQuery, Store, StoreClock, StoreError, SweepReport, Write,
};
use ::redis::Value;
use idem_core::operator::{decide_operator, Operated, OperatorAction, OperatorRefusal};
use idem_core::{decide_claim, ClaimDecision, Record, RecordId, Timestamp};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Most records one sweep script acts on.
const SWEEP_CHUNK: usize = 100;

/// How often an operator's action is decided again when the record changed
/// between its read and its compare-and-set write. Each retry means a
/// concurrent write to the same key (after which the action is most often
/// refused as `Changed`), so a few suffice.
const OPERATE_ATTEMPTS: usize = 8;

/// Largest integer a Lua number (a double) holds exactly.
const MAX_EXACT: i64 = (1 << 53) - 1;

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn claim(&self, claim: Claim) -> Result<ClaimOutcome, StoreError> {
        let op = "claim";
        let prefix = &self.options.prefix;
        let mut invocation = SCRIPTS.claim.key(record_key(prefix, &claim.id));
        invocation
            .key(due_key(prefix, codec::shard(&claim.id)))
            .arg(self.clock_arg(op, claim.now)?)
            .arg(claim.fingerprint.version)
            .arg(&claim.fingerprint.digest[..])
            .arg(if claim.reclaim_unknown { "1" } else { "0" })
            .arg(claim.attempt.to_string())
            .arg(offset(claim.now, claim.lease_until))
            .arg(offset(claim.now, claim.expires_at))
            .arg(offset(claim.now, claim.tombstone_until))
            .arg(self.grace_ms())
            .arg(claim.holder.as_deref().unwrap_or(""));
        let reply = self.invoke(op, invocation).await?;
        let Value::Array(items) = reply else {
            return Err(fail(op, format!("unexpected script reply {reply:?}")));
        };
        let mut items = items.into_iter();
        match (items.next(), items.next(), items.next()) {
            (Some(Value::Int(1)), Some(Value::BulkString(token)), Some(Value::Int(_))) => {
                let token = std::str::from_utf8(&token)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| fail(op, "the script returned a malformed token"))?;
                Ok(ClaimOutcome::Claimed { token })
            }
            (Some(Value::Int(0)), Some(hash), Some(Value::Int(now))) => {
                let record = codec::record_from_hash(claim.id.clone(), hash)
                    .map_err(|e| StoreError::new(ENGINE, op, e))?
                    .ok_or_else(|| fail(op, "the script returned an empty record"))?;
                // Decided at the clock the script decided at.
                match decide_claim(
                    Some(&record),
                    &claim.fingerprint,
                    claim.attempt,
                    Timestamp(now),
                    claim.reclaim_unknown,
                ) {
                    ClaimDecision::Existing(outcome) => Ok(ClaimOutcome::Existing {
                        outcome,
                        record: Box::new(record),
                    }),
                    // Only a bug makes the port and the rule disagree;
                    // refuse rather than answer wrongly.
                    ClaimDecision::Claim { .. } => Err(fail(
                        op,
                        "the claim script and decide_claim disagree (a bug): not claimed",
                    )),
                }
            }
            (a, b, c) => Err(fail(
                op,
                format!("unexpected script reply [{a:?}, {b:?}, {c:?}]"),
            )),
        }
    }

    async fn renew(
        &self,
        id: &RecordId,
        token: u64,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Write, StoreError> {
        let op = "renew";
        let lease = offset(now, lease_until);
        let clock = self.clock_arg(op, now)?;
        self.owner_write(op, &SCRIPTS.renew, id, token, |inv| {
            inv.arg(lease).arg(clock);
        })
        .await
    }

    async fn complete(
        &self,
        id: &RecordId,
        token: u64,
        completion: Completion,
    ) -> Result<Write, StoreError> {
        let op = "complete";
        let headers = codec::encode_headers(&completion.response.headers)
            .map_err(|e| StoreError::new(ENGINE, op, e))?;
        let now = self.clock_arg(op, completion.now)?;
        let expires_at = offset(completion.now, completion.expires_at);
        let tombstone_until = offset(completion.now, completion.tombstone_until);
        let grace = self.grace_ms();
        let response = completion.response;
        self.owner_write(op, &SCRIPTS.complete, id, token, move |inv| {
            inv.arg(now)
                .arg(response.status)
                .arg(headers)
                .arg(if response.body.is_some() { "1" } else { "0" })
                .arg(response.body.as_deref().unwrap_or_default())
                .arg(expires_at)
                .arg(tombstone_until)
                .arg(grace);
        })
        .await
    }

    async fn mark_unknown(
        &self,
        id: &RecordId,
        token: u64,
        _now: Timestamp,
    ) -> Result<Write, StoreError> {
        self.owner_write("mark_unknown", &SCRIPTS.mark_unknown, id, token, |_| {})
            .await
    }

    async fn release(&self, id: &RecordId, token: u64) -> Result<Write, StoreError> {
        self.owner_write("release", &SCRIPTS.release, id, token, |_| {})
            .await
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let key = record_key(&self.options.prefix, id);
        let reply: Value = self
            .call("get", move |mut conn| {
                Box::pin(async move {
                    ::redis::cmd("HGETALL")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                })
            })
            .await?;
        codec::record_from_hash(id.clone(), reply).map_err(|e| StoreError::new(ENGINE, "get", e))
    }

    /// Walks the shards from where the last sweep stopped, reading each
    /// one's due index and sweeping what is due, until `limit` records
    /// were acted on or every shard was visited once. With
    /// [`StoreClock::Server`] `now` is ignored: the sweep runs at the
    /// server's `TIME`, read once at its start.
    async fn sweep(&self, now: Timestamp, limit: usize) -> Result<SweepReport, StoreError> {
        let op = "sweep";
        let now_ms = self.sweep_clock(now).await?;
        let mut report = SweepReport::default();
        let mut remaining = limit;
        let start = self.sweep_cursor.load(Ordering::Relaxed) % SHARDS;
        for step in 0..SHARDS {
            let shard = (start + step) % SHARDS;
            let due = due_key(&self.options.prefix, shard);
            while remaining > 0 {
                let want = remaining.min(SWEEP_CHUNK);
                let index = due.clone();
                let candidates: Vec<Vec<u8>> = self
                    .call(op, move |mut conn| {
                        Box::pin(async move {
                            ::redis::cmd("ZRANGEBYSCORE")
                                .arg(index)
                                .arg("-inf")
                                .arg(now_ms)
                                .arg("LIMIT")
                                .arg(0)
                                .arg(want)
                                .query_async(&mut conn)
                                .await
                        })
                    })
                    .await?;
                if candidates.is_empty() {
                    break;
                }
                let mut invocation = SCRIPTS.sweep.key(&due);
                for key in &candidates {
                    invocation.key(&key[..]);
                }
                invocation.arg(now_ms);
                let reply = self.invoke(op, invocation).await?;
                let (tombstoned, deleted): (usize, usize) =
                    ::redis::from_redis_value(reply).map_err(|e| fail(op, e.to_string()))?;
                report.tombstoned += tombstoned;
                report.deleted += deleted;
                remaining -= (tombstoned + deleted).min(remaining);
                if candidates.len() < want {
                    break;
                }
            }
            if remaining == 0 {
                // Resume here: this shard may have more.
                self.sweep_cursor.store(shard, Ordering::Relaxed);
                return Ok(report);
            }
        }
        Ok(report)
    }

    /// With [`StoreClock::Server`] `now` is ignored: the action is decided
    /// at the server's `TIME`, read with the record.
    async fn operate(
        &self,
        id: &RecordId,
        token: u64,
        action: OperatorAction,
        now: Timestamp,
    ) -> Result<Result<Operated, OperatorRefusal>, StoreError> {
        let op = "operate";
        let clock = self.clock_arg(op, now)?;
        for _ in 0..OPERATE_ATTEMPTS {
            if let Some(outcome) = self.operate_once(id, token, &action, &clock).await? {
                return Ok(outcome);
            }
        }
        Err(fail(
            op,
            format!("the record changed {OPERATE_ATTEMPTS} times in a row while deciding"),
        ))
    }

    /// O(records): reads every shard's due index and the state of every
    /// record in it (see the module documentation). With
    /// [`StoreClock::Server`] `query.now` is ignored: states are read at
    /// the server's `TIME`, read once at the start.
    async fn list(&self, query: ListQuery) -> Result<Vec<Record>, StoreError> {
        let op = "list";
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let now = Timestamp(self.store_clock(op, query.now).await?);
        let prefix = &self.options.prefix;
        let mut found: Vec<Record> = Vec::new();
        for shard in 0..SHARDS {
            let due = due_key(prefix, shard);
            let members: Vec<Vec<u8>> = self
                .call(op, move |mut conn| {
                    Box::pin(async move {
                        ::redis::cmd("ZRANGE")
                            .arg(due)
                            .arg(0)
                            .arg(-1)
                            .query_async(&mut conn)
                            .await
                    })
                })
                .await?;
            for chunk in members.chunks(SWEEP_CHUNK) {
                let mut invocation = SCRIPTS.list.key(&chunk[0][..]);
                for key in &chunk[1..] {
                    invocation.key(&key[..]);
                }
                let reply = self.invoke(op, invocation).await?;
                let Value::Array(hashes) = reply else {
                    return Err(fail(op, format!("unexpected script reply {reply:?}")));
                };
                if hashes.len() != chunk.len() {
                    return Err(fail(op, "the listing script skipped records"));
                }
                for (key, hash) in chunk.iter().zip(hashes) {
                    if hash == Value::Nil {
                        continue;
                    }
                    let id = codec::id_from_record_key(prefix, key)
                        .map_err(|e| StoreError::new(ENGINE, op, e))?;
                    let Some(record) = codec::record_from_hash(id, hash)
                        .map_err(|e| StoreError::new(ENGINE, op, e))?
                    else {
                        continue; // expired in between
                    };
                    if query.state.holds(&record, now)
                        && query.after.as_ref().is_none_or(|c| c.precedes(&record))
                    {
                        found.push(record);
                    }
                }
            }
            // Keep only what can still be on the page, so memory stays
            // bounded by the limit rather than by the matching records.
            if found.len() > query.limit * 2 {
                found.sort_by(|a, b| (a.claimed_at, &a.id).cmp(&(b.claimed_at, &b.id)));
                found.truncate(query.limit);
            }
        }
        found.sort_by(|a, b| (a.claimed_at, &a.id).cmp(&(b.claimed_at, &b.id)));
        found.truncate(query.limit);
        Ok(found)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self
            .call("ping", |mut conn| {
                Box::pin(async move { ::redis::cmd("PING").query_async(&mut conn).await })
            })
            .await?;
        Ok(())
    }

    /// Waits for the owner's announcement (pub/sub, see docs/stores.md), or
    /// `timeout`. The first call starts the subscriber.
    async fn changed(&self, id: &RecordId, timeout: Duration) {
        let wait = async {
            self.start_subscriber();
            let key = record_key(&self.options.prefix, id);
            self.wakeups.wait(key, || self.mark_waited(id)).await;
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    fn engine(&self) -> &'static str {
        ENGINE
    }
}

impl RedisStore {
    /// Runs an owner's write script: `[record, due index]`, token, `args`.
    async fn owner_write(
        &self,
        op: &'static str,
        script: &'static ::redis::Script,
        id: &RecordId,
        token: u64,
        args: impl FnOnce(&mut ::redis::ScriptInvocation<'static>),
    ) -> Result<Write, StoreError> {
        let prefix = &self.options.prefix;
        let mut invocation = script.key(record_key(prefix, id));
        invocation
            .key(due_key(prefix, codec::shard(id)))
            .arg(token.to_string());
        args(&mut invocation);
        // Where the final writes announce the record (renewals ignore it).
        let (channel, publish) = self.announce_args(id);
        invocation.arg(channel).arg(publish);
        match self.invoke(op, invocation).await? {
            Value::Int(1) => Ok(Write::Written),
            Value::Int(0) => Ok(Write::Fenced),
            other => Err(fail(op, format!("unexpected script reply {other:?}"))),
        }
    }

    /// The scripts' clock argument: '' for the server's `TIME`, or with
    /// [`StoreClock::Caller`] the caller's reading `now` (which must be an
    /// integer a Lua number holds exactly).
    fn clock_arg(&self, op: &'static str, now: Timestamp) -> Result<String, StoreError> {
        match self.options.clock {
            StoreClock::Server => Ok(String::new()),
            StoreClock::Caller => Ok(exact(op, "time", now.as_millis())?.to_string()),
        }
    }

    /// The store's clock for a sweep: the server's `TIME`, or the caller's
    /// `now` with [`StoreClock::Caller`].
    async fn sweep_clock(&self, now: Timestamp) -> Result<i64, StoreError> {
        self.store_clock("sweep", now).await
    }

    /// The store's clock read once for operation `op`: the server's `TIME`,
    /// or the caller's `now` with [`StoreClock::Caller`].
    async fn store_clock(&self, op: &'static str, now: Timestamp) -> Result<i64, StoreError> {
        if self.options.clock == StoreClock::Caller {
            return exact(op, "time", now.as_millis());
        }
        let (secs, micros): (i64, i64) = self
            .call(op, |mut conn| {
                Box::pin(async move { ::redis::cmd("TIME").query_async(&mut conn).await })
            })
            .await?;
        let ms = secs
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(micros / 1000))
            .ok_or_else(|| fail(op, format!("the server's clock reads {secs} s")))?;
        exact(op, "the server's time", ms)
    }

    /// One operator attempt: read, decide, compare-and-set. `None` when
    /// the record changed between the read and the write.
    async fn operate_once(
        &self,
        id: &RecordId,
        token: u64,
        action: &OperatorAction,
        clock: &str,
    ) -> Result<Option<Result<Operated, OperatorRefusal>>, StoreError> {
        let op = "operate";
        let prefix = &self.options.prefix;
        let key = record_key(prefix, id);
        let mut read = SCRIPTS.operator_read.key(&key);
        read.arg(clock);
        let reply = self.invoke(op, read).await?;
        let Value::Array(items) = reply else {
            return Err(fail(op, format!("unexpected script reply {reply:?}")));
        };
        let mut items = items.into_iter();
        let (hash, now) = match (items.next(), items.next()) {
            (Some(hash), Some(Value::Int(now))) => (hash, now),
            (a, b) => return Err(fail(op, format!("unexpected script reply [{a:?}, {b:?}]"))),
        };
        let stored = codec::record_from_hash(id.clone(), hash)
            .map_err(|e| StoreError::new(ENGINE, op, e))?;
        let decided = match decide_operator(stored.as_ref(), token, action, Timestamp(now)) {
            Ok(decided) => decided,
            Err(refusal) => return Ok(Some(Err(refusal))),
        };
        let next = &decided.record;
        // decide_operator refuses an absent record, so there is one.
        let Some(old) = stored else {
            return Err(fail(
                op,
                "decide_operator accepted an absent record (a bug)",
            ));
        };
        exact(
            op,
            "fencing token",
            i64::try_from(next.token).unwrap_or(i64::MAX),
        )?;
        let (status, headers, body) = match &next.response {
            Some(r) => (
                r.status.to_string(),
                codec::encode_headers(&r.headers).map_err(|e| StoreError::new(ENGINE, op, e))?,
                r.body.as_ref(),
            ),
            None => (String::new(), Vec::new(), None),
        };
        let (channel, publish) = self.announce_args(id);
        let mut write = SCRIPTS.operator_write.key(&key);
        write
            .key(due_key(prefix, codec::shard(id)))
            .arg(clock)
            .arg(old.state.code())
            .arg(old.token.to_string())
            .arg(old.lease_until.as_millis())
            .arg(old.expires_at.as_millis())
            .arg(old.tombstone_until.as_millis())
            .arg(next.state.code())
            .arg(next.token.to_string())
            .arg(next.lease_until.as_millis())
            .arg(next.expires_at.as_millis())
            .arg(next.tombstone_until.as_millis())
            .arg(if next.response.is_some() { "1" } else { "0" })
            .arg(status)
            .arg(headers)
            .arg(if body.is_some() { "1" } else { "0" })
            .arg(body.map(|b| &b[..]).unwrap_or_default())
            .arg(self.grace_ms())
            .arg(channel)
            .arg(publish);
        match self.invoke(op, write).await? {
            Value::Int(1) => Ok(Some(Ok(decided))),
            Value::Int(0) => Ok(None),
            other => Err(fail(op, format!("unexpected script reply {other:?}"))),
        }
    }

    fn grace_ms(&self) -> i64 {
        i64::try_from(self.options.ttl_grace.as_millis()).unwrap_or(i64::MAX / 4)
    }
}

/// Times and tokens go through Lua numbers: refuse what a double cannot
/// hold exactly instead of corrupting it.
fn exact(op: &'static str, what: &str, value: i64) -> Result<i64, StoreError> {
    if (0..=MAX_EXACT).contains(&value) {
        Ok(value)
    } else {
        Err(fail(
            op,
            format!("{what} {value} is out of the engine's range"),
        ))
    }
}
