//! The pool every operation runs on, the store's own and its batches',
//! and each operation's deadline.

use super::rows::RowError;
use super::{fail, fail_with, row_error, tls, BoxFuture};
use crate::StoreError;
use deadpool_postgres::{Object, Pool, PoolError};
use std::time::Duration;
use tokio::time::Instant;

/// The pool and how its connections are opened: what every operation
/// runs on, the store's own and its batches'.
#[derive(Clone)]
pub(super) struct Connections {
    pool: Pool,
    pub(super) connector: tls::Connector,
    pub(super) operation_timeout: Duration,
}

impl Connections {
    pub(super) fn new(pool: Pool, connector: tls::Connector, operation_timeout: Duration) -> Self {
        Connections {
            pool,
            connector,
            operation_timeout,
        }
    }

    /// A pooled connection, or an error once `deadline` passes.
    pub(super) async fn client(
        &self,
        op: &'static str,
        deadline: Instant,
    ) -> Result<Object, StoreError> {
        match tokio::time::timeout_at(deadline, self.pool.get()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => {
                const MESSAGE: &str = "cannot get a connection";
                Err(match e {
                    // The driver's error itself: the pool's Display repeats it.
                    PoolError::Backend(e) => match self.connector.explain(&e) {
                        Some(tls) => fail_with(op, format!("{MESSAGE}: {tls}"), e),
                        None => fail_with(op, MESSAGE, e),
                    },
                    e => fail_with(op, MESSAGE, e),
                })
            }
            Err(_) => Err(fail(
                op,
                format!("no connection within {:?}", self.operation_timeout),
            )),
        }
    }

    /// Runs one operation with a pooled connection under the operation's
    /// deadline. A connection whose operation ran out of time may be stuck
    /// on a dead peer: it is discarded, not returned to the pool.
    pub(super) async fn run<T>(
        &self,
        op: &'static str,
        bound: Duration,
        f: impl for<'c> FnOnce(&'c mut Object) -> BoxFuture<'c, Result<T, RowError>>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + bound;
        let mut client = self.client(op, deadline).await?;
        let result = tokio::time::timeout_at(deadline, f(&mut client)).await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(row_error(op, e)),
            Err(_) => {
                drop(Object::take(client));
                Err(fail(op, format!("no answer within {bound:?}")))
            }
        }
    }
}
