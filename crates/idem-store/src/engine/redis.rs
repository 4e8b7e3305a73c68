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
mod connection;
mod operations;
mod scripts;
mod subscriber;
mod tls;

use super::wakeups::Wakeups;
use crate::{StoreClock, StoreError};
use connection::Backend;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use subscriber::Subscriber;

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

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.wakeups.stop();
    }
}

fn split_prefix_param(url: &str) -> (String, Option<String>) {
    super::take_query_param(url, "prefix")
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

    use codec::due_key;

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
