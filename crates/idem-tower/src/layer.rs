use crate::budget::BufferBudget;
use crate::settle::Settlements;
use crate::wait::Waiters;
use crate::{Clock, EffectivePolicy, Idempotency, IdempotencyConfig, ResponseBody, SystemClock};
use idem_store::Store;
use std::sync::Arc;
use tokio_util::task::TaskTracker;
use tower_layer::Layer;

/// Applies idem's contract to an inner HTTP service.
///
/// Cloning is cheap: clones share the config, the store and the set of
/// executions in progress.
#[derive(Clone)]
pub struct IdempotencyLayer {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) config: IdempotencyConfig,
    /// `config.routes[i]`'s effective policy, at index `i`.
    pub(crate) routes: Vec<Arc<EffectivePolicy>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) executions: TaskTracker,
    pub(crate) waiters: Waiters,
    pub(crate) budget: Arc<BufferBudget>,
    pub(crate) settlements: Settlements,
}

impl IdempotencyLayer {
    /// A layer with `config`, keeping records in `store`.
    pub fn new(config: IdempotencyConfig, store: Arc<dyn Store>) -> Self {
        Self::with_clock(config, store, Arc::new(SystemClock))
    }

    /// Like [`IdempotencyLayer::new`], reading time from `clock`.
    pub fn with_clock(
        config: IdempotencyConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        IdempotencyLayer {
            shared: Arc::new(Shared {
                budget: BufferBudget::new(config.max_buffered_bytes),
                routes: config
                    .routes
                    .iter()
                    .map(|r| Arc::new(config.effective(r)))
                    .collect(),
                config,
                store,
                clock,
                executions: TaskTracker::new(),
                waiters: Waiters::default(),
                settlements: Settlements::default(),
            }),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &IdempotencyConfig {
        &self.shared.config
    }

    /// A problem response written as this layer writes its own (profile,
    /// `type` base, `Link`), for errors the embedding server produces.
    pub fn problem_response<B>(
        &self,
        problem: idem_core::Problem,
    ) -> http::Response<ResponseBody<B>> {
        crate::respond::problem(&self.shared.config.problems, problem, None)
    }

    /// The JSON document that tells API consumers this layer's idempotency
    /// policy (what `GET /.well-known/idempotency` answers on the
    /// gateway); its schema is in docs/contract.md, section 9.
    pub fn policy_document(&self) -> serde_json::Value {
        crate::publish::document(&self.shared.config)
    }

    /// The store in use.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// Request and response bytes held in memory now, counted against
    /// [`IdempotencyConfig::max_buffered_bytes`].
    pub fn buffered_bytes(&self) -> usize {
        self.shared.budget.used()
    }

    /// The clock the layer reads (for a sweeper that must agree with it).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// How many keyed executions are running (each outlives its client).
    pub fn executions_in_progress(&self) -> usize {
        self.shared.executions.len()
    }

    /// Waits until every execution started so far has stored its outcome.
    /// For graceful shutdown: stop accepting requests first.
    pub async fn drain(&self) {
        self.shared.executions.close();
        self.shared.executions.wait().await;
        self.shared.executions.reopen();
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency {
            inner,
            shared: self.shared.clone(),
        }
    }
}
