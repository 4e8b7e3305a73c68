//! What every clone of a layer and its services shares.

use crate::budget::BufferBudget;
use crate::metrics::StoreOpKeys;
use crate::unsettled::Settlements;
use crate::wait::Waiters;
use crate::{Clock, EffectivePolicy, IdempotencyConfig};
use idem_store::Store;
use std::fmt;
use std::sync::Arc;
use tokio_util::task::TaskTracker;

pub(crate) struct Shared {
    pub(crate) config: IdempotencyConfig,
    /// `config.routes[i]`'s effective policy, at index `i`.
    pub(crate) routes: Vec<Arc<EffectivePolicy>>,
    pub(crate) store: Arc<dyn Store>,
    /// The keys its operations are timed under.
    pub(crate) store_ops: StoreOpKeys,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) executions: TaskTracker,
    pub(crate) waiters: Waiters,
    pub(crate) budget: Arc<BufferBudget>,
    pub(crate) settlements: Settlements,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("config", &self.config)
            .field("store", &self.store.engine())
            .field("executions_in_progress", &self.executions.len())
            .field("buffered_bytes", &self.budget.used())
            .finish_non_exhaustive()
    }
}
