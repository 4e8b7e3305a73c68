//! The Redis engine (standalone Redis, or Redis Cluster): many gateways,
//! lowest latency, weaker durability than PostgreSQL (see docs/stores.md:
//! replication is asynchronous, so a failover can lose an acknowledged
//! claim).
//!
//! - Claim, complete, release, renew and mark-unknown are each one Lua
//!   script ([`scripts`]), atomic on the server, checking the fencing
//!   token. The claim script ports the "may this key be claimed?" half of
//!   [`idem_core::decide_claim`]; when the answer is no it returns the
//!   record and `decide_claim` itself, in Rust, says how to answer.
//! - A record is a hash under `<prefix>:{<shard>}:r:<len>:<scope>:<key>`.
//!   The hash tag is one of 256 shards: every key a script touches (the
//!   record and its shard's due index) is in one Cluster slot.
//! - Time is the server's ([`StoreClock::Server`], the default): each
//!   script that decides or writes a time reads `TIME` itself, and the
//!   caller's horizons arrive as distances from the caller's own reading,
//!   so horizons are "server time plus the durations the caller meant" and
//!   gateways with skewed clocks agree. A sweep reads `TIME` once at its
//!   start and ignores the caller's `now`. Records come back with the
//!   server's times.
//! - Retention is a key TTL: a record's key expires a grace period (5 min
//!   by default) after the later of its lease and its tombstone horizon, so
//!   Redis frees the memory even if no sweep ever runs. Expiry is also
//!   enforced on read: the scripts compare the stored horizons with the
//!   server's clock.
//! - The sweep reads each shard's due index (a sorted set of records by the
//!   earliest time a sweep acts on them), and a script applies
//!   `sweep_action` to the due records: tombstoning drops body and headers
//!   after retention (the TTL alone would keep them until the tombstone
//!   goes), deleting removes what is past its tombstone. Bounded by the
//!   sweep's limit; safe on many gateways at once (each script is atomic).
//! - Waiters of another gateway are woken with pub/sub
//!   ([`Store::changed`]): a waiter marks the claim (field `w`), and the
//!   owner's final script, when it finds the mark, publishes the record's
//!   key (`PUBLISH` on `<prefix>:chg`; on a cluster `SPUBLISH` on the shard
//!   channel `<prefix>:{<shard>}:chg` of the record's slot). One subscriber
//!   connection per store, opened by the first wait.
//! - An operator's action ([`Store::operate`]) reads the record and the
//!   store's clock in one script, lets [`decide_operator`] decide in Rust,
//!   and writes the whole record it returns with a compare-and-set script
//!   (written only if state, token and horizons are still as read; else
//!   read and decide again), which moves the key's expiry and due index
//!   and announces to waiters as the owner's final scripts do.
//! - Listing ([`Store::list`]) has no index by claim time: it reads every
//!   shard's due index (which holds every record) and the state of each
//!   record in it, then sorts. It is O(records) (a limit to note: meant
//!   for an operator's occasional look, not for a hot path), and works the
//!   same on Redis Cluster (each shard is one slot).
//! - The key prefix is [`RedisOptions::prefix`], or the URL's idem
//!   parameter `prefix=NAME`.
//! - `rediss://` connects over TLS, checking the server's certificate
//!   against the public roots or the CA file of the idem parameter
//!   `tls_ca=FILE` ([`tls`]).
//! - Every operation is bounded: connect and response timeouts, and an
//!   overall deadline; an operation that times out also replaces the
//!   connection (it may be half-open), so the store recovers by itself.

mod codec;
mod scripts;
mod tls;
// The wake-up registry is shared with the PostgreSQL engine; it lives
// there, and is compiled here only in builds without that engine.
#[cfg(feature = "postgres")]
use super::postgres::wakeups;
#[cfg(not(feature = "postgres"))]
#[path = "postgres/wakeups.rs"]
mod wakeups;

use super::offset;
use crate::{
    Claim, ClaimOutcome, Completion, ListQuery, Store, StoreClock, StoreError, SweepReport, Write,
};
use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use codec::{due_key, record_key, SHARDS};
use idem_core::operator::{decide_operator, OperatorAction, OperatorRefusal};
use idem_core::{decide_claim, ClaimDecision, Record, RecordId, Timestamp};
use scripts::SCRIPTS;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wakeups::Wakeups;

/// Most records one sweep script acts on.
const SWEEP_CHUNK: usize = 100;

/// How often an operator's action is decided again when the record changed
/// between its read and its compare-and-set write. Each retry means a
/// concurrent write to the same key (after which the action is most often
/// refused as `Changed`), so a few suffice.
const OPERATE_ATTEMPTS: usize = 8;

/// Largest integer a Lua number (a double) holds exactly.
const MAX_EXACT: i64 = (1 << 53) - 1;

/// Tuning of the Redis engine.
///
/// ```
/// use idem_store::RedisOptions;
/// let options = RedisOptions { prefix: "payments-idem".into(), ..RedisOptions::default() };
/// assert!(options.operation_timeout >= options.response_timeout);
/// ```
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prefix of every key the engine writes. No `{` or `}`. Default
    /// `idem`.
    pub prefix: String,
    /// Bound on opening one connection. Default 2 s.
    pub connect_timeout: Duration,
    /// Bound on one command's answer. Default 2 s.
    pub response_timeout: Duration,
    /// Bound on one whole store operation (a sweep runs several). Default
    /// 3 s.
    pub operation_timeout: Duration,
    /// How long a record's key outlives its horizon before Redis expires
    /// it. Default 5 min.
    pub ttl_grace: Duration,
    /// Whose clock leases and retention are decided on. Default
    /// [`StoreClock::Server`]: the Redis server's (each node's, on a
    /// cluster: keep the nodes' clocks synchronised).
    pub clock: StoreClock,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: "idem".to_owned(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(3),
            ttl_grace: Duration::from_secs(300),
            clock: StoreClock::Server,
        }
    }
}

/// A connection: one server (multiplexed, reconnecting), or a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Backend {
    /// The current connection manager and its generation; replaced when an
    /// operation times out.
    Single(Box<Single>),
    /// The cluster connection refreshes its slots and reconnects itself.
    Cluster(ClusterConnection),
}

struct Single {
    client: ::redis::Client,
    config: ConnectionManagerConfig,
    current: RwLock<(u64, ConnectionManager)>,
}

/// Records in Redis or Redis Cluster, shared by any number of gateways.
///
/// ```no_run
/// # async fn f() -> Result<(), idem_store::StoreError> {
/// use idem_store::{RedisOptions, RedisStore, Store};
/// let store = RedisStore::open("redis://cache.internal:6379/", RedisOptions::default()).await?;
/// store.ping().await?;
/// # Ok(()) }
/// ```
pub struct RedisStore {
    backend: Backend,
    options: RedisOptions,
    /// The shard the next sweep starts at.
    sweep_cursor: AtomicUsize,
    /// Waiters on records in flight, and the subscriber task.
    wakeups: Arc<Wakeups<String>>,
    /// Where the subscriber connects.
    subscriber: Subscriber,
    /// The URL's TLS settings, to explain failures.
    tls: tls::Tls,
}

/// Where announcements are published and subscribed to.
#[derive(Clone)]
enum Subscriber {
    /// One server: `PUBLISH`/`SUBSCRIBE` on `<prefix>:chg`, through a
    /// RESP3 connection of its own.
    Single(::redis::Client),
    /// A cluster: `SPUBLISH`/`SSUBSCRIBE` on `<prefix>:{NNN}:chg`, the
    /// shard channel of each record's own slot (a script may only touch
    /// its keys' slot, and a shard channel is served by that slot's
    /// node alone), through a RESP3 cluster connection of its own (with
    /// the nodes' TLS certificates, if any).
    Cluster {
        nodes: Vec<String>,
        certs: Option<::redis::TlsCertificates>,
    },
}

impl RedisStore {
    /// Connects to one Redis server (`redis://[user:password@]host:port[/db]`,
    /// or `rediss://…` over TLS). Two idem parameters in the query (removed
    /// before the URL reaches the driver): `prefix=NAME` replaces
    /// `options.prefix`; `tls_ca=FILE` (with `rediss://` only) names the
    /// PEM file of the CA that signed the server's certificate, checked
    /// instead of the public roots.
    pub async fn open(url: &str, mut options: RedisOptions) -> Result<Self, StoreError> {
        let (url, prefix) = split_prefix_param(url);
        if let Some(prefix) = prefix {
            options.prefix = prefix;
        }
        check_prefix(&options.prefix)?;
        let (url, tls) = tls::Tls::take(&url).map_err(|e| fail("open", e))?;
        let client = tls
            .client(&url)
            .map_err(|e| fail("open", format!("invalid Redis URL: {e}")))?;
        let subscriber = Subscriber::Single(resp3(&client)?);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            // Reconnection is retried briefly in the background; an
            // operation meanwhile fails within its own deadline.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let manager = tokio::time::timeout(
            options.operation_timeout,
            ConnectionManager::new_with_config(client.clone(), config.clone()),
        )
        .await
        .map_err(|_| {
            fail(
                "open",
                explained(
                    format!("no connection within {:?}", options.operation_timeout),
                    tls.explain(None),
                ),
            )
        })?
        .map_err(|e| {
            let e = e.to_string();
            fail(
                "open",
                explained(format!("cannot connect: {e}"), tls.explain(Some(&e))),
            )
        })?;
        let store = RedisStore {
            backend: Backend::Single(Box::new(Single {
                client,
                config,
                current: RwLock::new((0, manager)),
            })),
            options,
            sweep_cursor: AtomicUsize::new(0),
            wakeups: Wakeups::new(),
            subscriber,
            tls,
        };
        store.ping().await?;
        store.check_eviction_policy().await;
        Ok(store)
    }

    /// Connects to a Redis Cluster through any of its `nodes`
    /// (`redis://host:port` each, or `rediss://host:port` over TLS). The
    /// idem parameters `prefix=NAME` and `tls_ca=FILE` on a node's URL
    /// mean what they do for [`Self::open`].
    pub async fn open_cluster(
        nodes: &[String],
        mut options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let mut plain = Vec::with_capacity(nodes.len());
        let mut tls = tls::Tls::default();
        for node in nodes {
            let (node, prefix) = split_prefix_param(node);
            if let Some(prefix) = prefix {
                options.prefix = prefix;
            }
            let (node, node_tls) = tls::Tls::take(&node).map_err(|e| fail("open", e))?;
            if node_tls.certs().is_some() || plain.is_empty() {
                tls = node_tls;
            }
            plain.push(node);
        }
        let nodes = plain;
        check_prefix(&options.prefix)?;
        let certs = tls.certs();
        let mut builder =
            ::redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                .connection_timeout(options.connect_timeout)
                .response_timeout(options.response_timeout)
                .retries(2);
        if let Some(certs) = certs.clone() {
            builder = builder.certs(certs);
        }
        let client = builder
            .build()
            .map_err(|e| fail("open", format!("invalid Redis Cluster nodes: {e}")))?;
        let conn = tokio::time::timeout(options.operation_timeout, client.get_async_connection())
            .await
            .map_err(|_| {
                fail(
                    "open",
                    explained(
                        format!(
                            "no cluster connection within {:?}",
                            options.operation_timeout
                        ),
                        tls.explain(None),
                    ),
                )
            })?
            .map_err(|e| {
                let e = e.to_string();
                fail(
                    "open",
                    explained(
                        format!("cannot connect to the cluster: {e}"),
                        tls.explain(Some(&e)),
                    ),
                )
            })?;
        let store = RedisStore {
            backend: Backend::Cluster(conn),
            options,
            sweep_cursor: AtomicUsize::new(0),
            wakeups: Wakeups::new(),
            subscriber: Subscriber::Cluster { nodes, certs },
            tls,
        };
        store.ping().await?;
        store.check_eviction_policy().await;
        Ok(store)
    }

    /// Warns when Redis may evict records: every record key has a TTL, so
    /// any `volatile-*` or `allkeys-*` policy can drop a claim or an
    /// outcome under memory pressure. (Managed services may refuse CONFIG:
    /// then nothing is said.)
    async fn check_eviction_policy(&self) {
        let policy: Result<Vec<String>, StoreError> = self
            .call("open", |mut conn| {
                Box::pin(async move {
                    ::redis::cmd("CONFIG")
                        .arg("GET")
                        .arg("maxmemory-policy")
                        .query_async(&mut conn)
                        .await
                })
            })
            .await;
        if let Ok([_, policy]) = policy.as_deref() {
            if policy != "noeviction" {
                tracing::warn!(
                    policy,
                    "redis store: maxmemory-policy is not `noeviction`: under memory pressure Redis may evict claims and stored responses (see docs/stores.md)"
                );
            }
        }
    }

    fn conn(&self) -> (u64, Conn) {
        match &self.backend {
            Backend::Single(single) => {
                let current = single.current.read().unwrap_or_else(|e| e.into_inner());
                (current.0, Conn::Single(current.1.clone()))
            }
            Backend::Cluster(c) => (0, Conn::Cluster(c.clone())),
        }
    }

    /// Replaces a connection that timed out (it may be half-open: no reset
    /// ever comes) with a fresh one, connected on first use.
    fn reconnect(&self, generation: u64) {
        let Backend::Single(single) = &self.backend else {
            return;
        };
        let Single {
            client,
            config,
            current,
        } = &**single;
        let mut current = current.write().unwrap_or_else(|e| e.into_inner());
        if current.0 != generation {
            return; // another operation replaced it already
        }
        match ConnectionManager::new_lazy_with_config(client.clone(), config.clone()) {
            Ok(manager) => *current = (generation + 1, manager),
            Err(e) => {
                tracing::warn!(error = %e, "redis store: cannot replace a timed-out connection")
            }
        }
    }

    /// Runs one request under the operation deadline.
    async fn call<T>(
        &self,
        op: &'static str,
        request: impl FnOnce(Conn) -> BoxFuture<RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let (generation, conn) = self.conn();
        match tokio::time::timeout(self.options.operation_timeout, request(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.is_timeout() {
                    self.reconnect(generation);
                }
                let e = e.to_string();
                let tls = self.tls.explain(Some(&e));
                Err(fail(op, explained(e, tls)))
            }
            Err(_) => {
                self.reconnect(generation);
                Err(fail(
                    op,
                    format!("no answer within {:?}", self.options.operation_timeout),
                ))
            }
        }
    }

    async fn invoke(
        &self,
        op: &'static str,
        invocation: ::redis::ScriptInvocation<'static>,
    ) -> Result<Value, StoreError> {
        self.call(op, move |mut conn| {
            Box::pin(async move { invocation.invoke_async(&mut conn).await })
        })
        .await
    }

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
        match self.subscriber {
            Subscriber::Single(_) => invocation.arg(codec::channel(prefix, None)).arg("PUBLISH"),
            Subscriber::Cluster { .. } => invocation
                .arg(codec::channel(prefix, Some(codec::shard(id))))
                .arg("SPUBLISH"),
        };
        match self.invoke(op, invocation).await? {
            Value::Int(1) => Ok(Write::Written),
            Value::Int(0) => Ok(Write::Fenced),
            other => Err(fail(op, format!("unexpected script reply {other:?}"))),
        }
    }

    /// Marks the claim on `id` as waited on; whether it is still in flight.
    async fn mark_waited(&self, id: &RecordId) -> Result<bool, ()> {
        let invocation = SCRIPTS
            .mark_waited
            .key(record_key(&self.options.prefix, id));
        match self.invoke("changed", invocation).await {
            Ok(Value::Int(0)) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => {
                tracing::debug!(error = %e, "redis store: cannot mark a claim as waited on");
                Err(())
            }
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

    /// Where the final writes announce a record: channel and command.
    fn announce_args(&self, id: &RecordId) -> (String, &'static str) {
        let prefix = &self.options.prefix;
        match self.subscriber {
            Subscriber::Single(_) => (codec::channel(prefix, None), "PUBLISH"),
            Subscriber::Cluster { .. } => {
                (codec::channel(prefix, Some(codec::shard(id))), "SPUBLISH")
            }
        }
    }

    /// One operator attempt: read, decide, compare-and-set. `None` when
    /// the record changed between the read and the write.
    async fn operate_once(
        &self,
        id: &RecordId,
        token: u64,
        action: &OperatorAction,
        clock: &str,
    ) -> Result<Option<Result<Record, OperatorRefusal>>, StoreError> {
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
        let next = match decide_operator(stored.as_ref(), token, action, Timestamp(now)) {
            Ok(next) => next,
            Err(refusal) => return Ok(Some(Err(refusal))),
        };
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
            Value::Int(1) => Ok(Some(Ok(next))),
            Value::Int(0) => Ok(None),
            other => Err(fail(op, format!("unexpected script reply {other:?}"))),
        }
    }

    fn grace_ms(&self) -> i64 {
        i64::try_from(self.options.ttl_grace.as_millis()).unwrap_or(i64::MAX / 4)
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.wakeups.stop();
    }
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

fn split_prefix_param(url: &str) -> (String, Option<String>) {
    super::take_query_param(url, "prefix")
}

/// `message`, followed by what it means for TLS when there is something
/// to say.
fn explained(message: String, tls: Option<String>) -> String {
    match tls {
        Some(tls) => format!("{message}: {tls}"),
        None => message,
    }
}

/// A client like `client`, speaking RESP3 (pushes on a connection that
/// also answers commands, for the subscriber).
fn resp3(client: &::redis::Client) -> Result<::redis::Client, StoreError> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(::redis::ProtocolVersion::RESP3);
    ::redis::Client::open(info.set_redis_settings(settings))
        .map_err(|e| fail("open", format!("invalid Redis URL: {e}")))
}

/// What the subscriber's connection reports besides announcements.
enum Signal {
    /// The connection closed.
    Lost,
    /// A (re)subscription was confirmed: announcements may have been lost
    /// before it.
    Subscribed,
}

/// The push handler of a subscriber connection: wakes the waiters of each
/// announced record (the payload is its key), and reports the rest to the
/// subscriber loop. Runs on the connection's task: it never blocks.
fn on_push(
    wakeups: Arc<Wakeups<String>>,
    signals: tokio::sync::mpsc::UnboundedSender<Signal>,
) -> impl Fn(::redis::PushInfo) -> Result<(), ()> + Send + Sync + 'static {
    move |push| {
        use ::redis::PushKind;
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                if let Some(Value::BulkString(key)) = push.data.get(1) {
                    if let Ok(key) = std::str::from_utf8(key) {
                        wakeups.wake(key);
                    }
                }
            }
            PushKind::Disconnection => {
                let _ = signals.send(Signal::Lost);
            }
            PushKind::Subscribe | PushKind::SSubscribe => {
                let _ = signals.send(Signal::Subscribed);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The subscriber of one server: a RESP3 connection subscribed to the
/// announcement channel; replaced (with a capped backoff) when it closes
/// or a keep-alive `PING` goes unanswered.
async fn subscribe_single(
    wakeups: Arc<Wakeups<String>>,
    client: ::redis::Client,
    channel: String,
    options: RedisOptions,
) {
    let mut pause = wakeups::RECONNECT_MIN;
    loop {
        let (signals, mut signal) = tokio::sync::mpsc::unbounded_channel();
        let config = ::redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_push_sender(on_push(wakeups.clone(), signals));
        let connect = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            conn.subscribe(&channel).await?;
            RedisResult::Ok(conn)
        };
        match tokio::time::timeout(options.operation_timeout, connect).await {
            Ok(Ok(mut conn)) => {
                wakeups.set_listening(true);
                pause = wakeups::RECONNECT_MIN;
                loop {
                    tokio::select! {
                        signal = signal.recv() => match signal {
                            Some(Signal::Subscribed) => {}
                            Some(Signal::Lost) | None => break,
                        },
                        () = tokio::time::sleep(wakeups::KEEPALIVE) => {
                            let ping = ::redis::cmd("PING");
                            let ping = ping.query_async::<Value>(&mut conn);
                            if !matches!(tokio::time::timeout(options.operation_timeout, ping).await, Ok(Ok(_))) {
                                tracing::debug!("redis store: the subscriber connection stopped answering");
                                break;
                            }
                        }
                    }
                }
                wakeups.set_listening(false);
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "redis store: cannot subscribe"),
            Err(_) => tracing::debug!("redis store: subscribing timed out"),
        }
        tokio::time::sleep(pause).await;
        pause = wakeups::backoff(pause);
    }
}

/// The subscriber of a cluster: a RESP3 cluster connection subscribed to
/// every shard channel (each on the node that serves its slot). The
/// cluster connection reconnects and resubscribes by itself; each
/// confirmation after the first subscription wakes every waiter. It is
/// replaced when a keep-alive `PING` goes unanswered.
async fn subscribe_cluster(
    wakeups: Arc<Wakeups<String>>,
    nodes: Vec<String>,
    certs: Option<::redis::TlsCertificates>,
    prefix: String,
    options: RedisOptions,
) {
    let mut pause = wakeups::RECONNECT_MIN;
    loop {
        let (signals, mut signal) = tokio::sync::mpsc::unbounded_channel();
        let mut builder =
            ::redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                .use_protocol(::redis::ProtocolVersion::RESP3)
                .push_sender(on_push(wakeups.clone(), signals))
                .connection_timeout(options.connect_timeout)
                .response_timeout(options.response_timeout)
                .retries(2);
        if let Some(certs) = certs.clone() {
            builder = builder.certs(certs);
        }
        let client = builder.build();
        let connect = async {
            let mut conn = client?.get_async_connection().await?;
            for shard in 0..SHARDS {
                conn.ssubscribe(codec::channel(&prefix, Some(shard)))
                    .await?;
            }
            RedisResult::Ok(conn)
        };
        match tokio::time::timeout(options.operation_timeout * 4, connect).await {
            Ok(Ok(mut conn)) => {
                // Drop the confirmations of the subscriptions just made.
                while signal.try_recv().is_ok() {}
                wakeups.set_listening(true);
                pause = wakeups::RECONNECT_MIN;
                loop {
                    tokio::select! {
                        signal = signal.recv() => match signal {
                            Some(Signal::Lost | Signal::Subscribed) => wakeups.wake_all(),
                            None => break,
                        },
                        () = tokio::time::sleep(wakeups::KEEPALIVE) => {
                            let ping = ::redis::cmd("PING");
                            let ping = ping.query_async::<Value>(&mut conn);
                            if !matches!(tokio::time::timeout(options.operation_timeout, ping).await, Ok(Ok(_))) {
                                tracing::debug!("redis store: the cluster subscriber stopped answering");
                                break;
                            }
                        }
                    }
                }
                wakeups.set_listening(false);
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "redis store: cannot subscribe on the cluster")
            }
            Err(_) => tracing::debug!("redis store: subscribing on the cluster timed out"),
        }
        tokio::time::sleep(pause).await;
        pause = wakeups::backoff(pause);
    }
}

fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() || prefix.contains(['{', '}']) {
        return Err(fail(
            "open",
            format!("key prefix {prefix:?} must be non-empty and without braces"),
        ));
    }
    Ok(())
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
    ) -> Result<Result<Record, OperatorRefusal>, StoreError> {
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
            self.wakeups.start(|wakeups| {
                let (prefix, options) = (self.options.prefix.clone(), self.options.clone());
                match &self.subscriber {
                    Subscriber::Single(client) => tokio::spawn(subscribe_single(
                        wakeups,
                        client.clone(),
                        codec::channel(&prefix, None),
                        options,
                    )),
                    Subscriber::Cluster { nodes, certs } => tokio::spawn(subscribe_cluster(
                        wakeups,
                        nodes.clone(),
                        certs.clone(),
                        prefix,
                        options,
                    )),
                }
            });
            let key = record_key(&self.options.prefix, id);
            self.wakeups.wait(key, || self.mark_waited(id)).await;
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    fn engine(&self) -> &'static str {
        ENGINE
    }
}

const ENGINE: &str = "redis";

fn fail(op: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::new(ENGINE, op, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_parameter_is_idems_not_the_drivers() {
        assert_eq!(
            split_prefix_param("redis://h:6379/?prefix=pay&protocol=resp3"),
            (
                "redis://h:6379/?protocol=resp3".to_owned(),
                Some("pay".to_owned())
            )
        );
        assert_eq!(
            split_prefix_param("redis://h:6379/2?prefix=pay"),
            ("redis://h:6379/2".to_owned(), Some("pay".to_owned()))
        );
        assert_eq!(
            split_prefix_param("redis://h:6379/"),
            ("redis://h:6379/".to_owned(), None)
        );
    }

    #[test]
    fn announcement_channels_share_the_slot_of_their_records() {
        assert_eq!(codec::channel("idem", None), "idem:chg");
        assert_eq!(codec::channel("idem", Some(0xab)), "idem:{0ab}:chg");
        assert_eq!(
            &codec::channel("idem", Some(0xab))[..10],
            &due_key("idem", 0xab)[..10]
        );
    }
}
