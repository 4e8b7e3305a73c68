//! The engine's half of the wake-ups ([`crate::engine::wakeups`]): where
//! the final writes announce a record, marking a claim as waited on, and
//! the subscriber task (pub/sub on one server, shard channels on a
//! cluster).

use super::codec::{self, record_key, SHARDS};
use super::scripts::SCRIPTS;
use super::{RedisOptions, RedisStore};
use crate::engine::wakeups::{self, Wakeups};
use ::redis::{RedisResult, Value};
use idem_core::RecordId;
use std::sync::Arc;

/// Where announcements are published and subscribed to.
#[derive(Clone)]
pub(super) enum Subscriber {
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
    /// Starts the subscriber task, unless it runs already.
    pub(super) fn start_subscriber(&self) {
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
    }

    /// Marks the claim on `id` as waited on; whether it is still in flight.
    pub(super) async fn mark_waited(&self, id: &RecordId) -> Result<bool, ()> {
        let invocation = SCRIPTS
            .mark_waited
            .key(record_key(&self.options.prefix, id));
        match self.invoke("changed", invocation).await {
            Ok(Value::Int(0)) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "redis store: cannot mark a claim as waited on"
                );
                Err(())
            }
        }
    }

    /// Where the final writes announce a record: channel and command.
    pub(super) fn announce_args(&self, id: &RecordId) -> (String, &'static str) {
        let prefix = &self.options.prefix;
        match self.subscriber {
            Subscriber::Single(_) => (codec::channel(prefix, None), "PUBLISH"),
            Subscriber::Cluster { .. } => {
                (codec::channel(prefix, Some(codec::shard(id))), "SPUBLISH")
            }
        }
    }
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
    let mut pauses = wakeups::ReconnectPauses::new();
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
                pauses = wakeups::ReconnectPauses::new();
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
        tokio::time::sleep(pauses.next_pause()).await;
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
    let mut pauses = wakeups::ReconnectPauses::new();
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
                pauses = wakeups::ReconnectPauses::new();
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
        tokio::time::sleep(pauses.next_pause()).await;
    }
}
