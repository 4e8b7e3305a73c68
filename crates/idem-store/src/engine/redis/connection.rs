//! Connections: opening a store on one server or a cluster, and running
//! each request under the operation deadline (replacing a connection that
//! timed out).

use super::subscriber::Subscriber;
use super::{check_prefix, fail, split_prefix_param, tls, RedisOptions, RedisStore};
use crate::engine::wakeups::Wakeups;
use crate::{Store, StoreError};
use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use std::sync::atomic::AtomicUsize;
use std::sync::RwLock;
use std::time::Duration;

/// A connection: one server (multiplexed, reconnecting), or a cluster.
#[derive(Clone)]
pub(super) enum Conn {
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

pub(super) enum Backend {
    /// The current connection manager and its generation; replaced when an
    /// operation times out.
    Single(Box<Single>),
    /// The cluster connection refreshes its slots and reconnects itself.
    Cluster(ClusterConnection),
}

pub(super) struct Single {
    client: ::redis::Client,
    config: ConnectionManagerConfig,
    current: RwLock<(u64, ConnectionManager)>,
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

    pub(super) fn conn(&self) -> (u64, Conn) {
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
    pub(super) fn reconnect(&self, generation: u64) {
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
    pub(super) async fn call<T>(
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

    pub(super) async fn invoke(
        &self,
        op: &'static str,
        invocation: ::redis::ScriptInvocation<'static>,
    ) -> Result<Value, StoreError> {
        self.call(op, move |mut conn| {
            Box::pin(async move { invocation.invoke_async(&mut conn).await })
        })
        .await
    }
}

pub(super) type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

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
pub(super) fn resp3(client: &::redis::Client) -> Result<::redis::Client, StoreError> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(::redis::ProtocolVersion::RESP3);
    ::redis::Client::open(info.set_redis_settings(settings))
        .map_err(|e| fail("open", format!("invalid Redis URL: {e}")))
}
