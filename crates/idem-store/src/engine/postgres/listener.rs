//! The engine's half of the wake-ups ([`crate::engine::wakeups`]): what
//! the final writes announce, marking a claim as waited on, and the LISTEN
//! connection.

use super::{rows, tls, PostgresStore};
use crate::engine::codec::StableHash;
use crate::engine::wakeups::{self, Wakeups};
use idem_core::RecordId;
use std::sync::Arc;
use std::time::Duration;

impl PostgresStore {
    /// Starts the LISTEN task, unless it runs already.
    pub(super) fn start_listener(&self) {
        self.wakeups.start(|wakeups| {
            let (config, bound) = (self.config.clone(), self.options.operation_timeout);
            tokio::spawn(listen(
                wakeups,
                config,
                self.connections.connector.clone(),
                bound,
            ))
        });
    }

    /// Marks the claim on `id` as waited on; whether it is still in flight.
    pub(super) async fn mark_waited(&self, id: &RecordId) -> Result<bool, ()> {
        let (scope, key) = (id.scope.as_str().to_owned(), id.key.as_str().to_owned());
        let marked = self
            .connections
            .run("changed", self.options.operation_timeout, move |client| {
                Box::pin(async move {
                    let stmt = client.prepare_cached(rows::MARK_WAITED).await?;
                    Ok(client.execute(&stmt, &[&scope, &key]).await?)
                })
            })
            .await;
        match marked {
            Ok(rows) => Ok(rows == 1),
            Err(e) => {
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    "postgres store: cannot mark a claim as waited on"
                );
                Err(())
            }
        }
    }
}

/// What the owner's final write notifies for `id`: 16 hex digits of a
/// stable 64-bit hash of the schema (`namespace`), the scope and the key,
/// each length-prefixed. Listeners of every schema of a database share the
/// channel; a collision only costs a spurious wake-up.
pub(super) fn announcement(namespace: &str, id: &RecordId) -> String {
    format!("{:016x}", announcement_hash(namespace, id))
}

pub(super) fn announcement_hash(namespace: &str, id: &RecordId) -> u64 {
    StableHash::new()
        .part(namespace.as_bytes())
        .part(id.scope.as_str().as_bytes())
        .part(id.key.as_str().as_bytes())
        .finish()
}

/// The subscriber: one connection outside the pool that LISTENs on
/// [`rows::CHANNEL`] and wakes the waiters of each record announced;
/// reconnects (with a capped backoff) whenever the connection fails or a
/// keep-alive query goes unanswered.
async fn listen(
    wakeups: Arc<Wakeups<u64>>,
    config: tokio_postgres::Config,
    connector: tls::Connector,
    bound: Duration,
) {
    let mut pauses = wakeups::ReconnectPauses::new();
    loop {
        match tokio::time::timeout(bound, connector.connect(&config)).await {
            Ok(Ok((client, connection))) => {
                if listen_on(&wakeups, &client, connection, bound).await {
                    pauses = wakeups::ReconnectPauses::new();
                }
                wakeups.set_listening(false);
            }
            Ok(Err(e)) => {
                let tls = connector.explain(&e).unwrap_or_default();
                tracing::debug!(
                    error = &e as &dyn std::error::Error,
                    tls,
                    "postgres store: the LISTEN connection failed"
                )
            }
            Err(_) => tracing::debug!("postgres store: the LISTEN connection timed out"),
        }
        tokio::time::sleep(pauses.next_pause()).await;
    }
}

/// Listens on one connection until it fails; whether LISTEN took effect.
async fn listen_on(
    wakeups: &Wakeups<u64>,
    client: &tokio_postgres::Client,
    mut connection: tls::Connection,
    bound: Duration,
) -> bool {
    // The connection delivers the notifications, and carries the client's
    // queries: it is polled throughout.
    let deliver = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if let Ok(hash) = u64::from_str_radix(n.payload(), 16) {
                        wakeups.wake(&hash);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(
                        error = &e as &dyn std::error::Error,
                        "postgres store: the LISTEN connection failed"
                    );
                    return;
                }
                None => return,
            }
        }
    };
    tokio::pin!(deliver);
    let statement = format!("LISTEN {}", rows::CHANNEL);
    tokio::select! {
        () = &mut deliver => return false,
        result = tokio::time::timeout(bound, client.batch_execute(&statement)) => {
            if !matches!(result, Ok(Ok(()))) {
                return false;
            }
        }
    }
    wakeups.set_listening(true);
    loop {
        tokio::select! {
            () = &mut deliver => return true,
            () = tokio::time::sleep(wakeups::KEEPALIVE) => {}
        }
        tokio::select! {
            () = &mut deliver => return true,
            result = tokio::time::timeout(bound, client.simple_query("SELECT 1")) => {
                if !matches!(result, Ok(Ok(_))) {
                    tracing::debug!("postgres store: the LISTEN connection stopped answering");
                    return true;
                }
            }
        }
    }
}
