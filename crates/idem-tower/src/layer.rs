use crate::budget::BufferBudget;
use crate::metrics::StoreOpKeys;
use crate::shared::Shared;
use crate::unsettled::Settlements;
use crate::wait::Waiters;
use crate::{Clock, Idempotency, IdempotencyConfig, ResponseBody, Route, ScopeRule, SystemClock};
use http::HeaderName;
use idem_store::Store;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
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

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl IdempotencyLayer {
    /// A builder of a layer keeping its records in `store`: a [`Store`] by
    /// value (`MemoryStore::new()`) or already shared (`Arc<SqliteStore>`,
    /// `Arc<dyn Store>`).
    pub fn builder<M>(store: impl IntoStore<M>) -> IdempotencyLayerBuilder {
        IdempotencyLayerBuilder {
            config: IdempotencyConfig::default(),
            routes: None,
            require_key: false,
            store: store.into_store(),
            clock: Arc::new(SystemClock),
        }
    }

    /// A layer with `config`, keeping its records in `store`: short for
    /// `IdempotencyLayer::builder(store).config(config).build()`.
    pub fn new<M>(config: IdempotencyConfig, store: impl IntoStore<M>) -> Self {
        Self::builder(store).config(config).build()
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

/// Builds an [`IdempotencyLayer`]: the contract's defaults, with a method
/// per common setting and [`config`](Self::config) for the rest.
///
/// Without [`route`](Self::route) or [`routes`](Self::routes) the layer
/// covers every POST and PATCH that reaches it, so the router decides
/// where it applies (axum's `route_layer`).
///
/// ```
/// use axum::{routing::post, Router};
/// use idem_tower::IdempotencyLayer;
/// use std::time::Duration;
///
/// let idempotency = IdempotencyLayer::builder(idem_store::MemoryStore::new())
///     .require_key()
///     .retention(Duration::from_secs(3600))
///     .build();
/// let app: Router = Router::new()
///     .route("/charges", post(|| async { "charged" }).route_layer(idempotency));
/// ```
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct IdempotencyLayerBuilder {
    config: IdempotencyConfig,
    /// Set by `route`/`routes`, in place of `config.routes`.
    routes: Option<Vec<Route>>,
    require_key: bool,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl IdempotencyLayerBuilder {
    fn with(mut self, set: impl FnOnce(&mut IdempotencyConfig)) -> Self {
        set(&mut self.config);
        self
    }

    /// Every setting at once. Replaces what the other methods set before
    /// it, except the clock and routes given with [`route`](Self::route)
    /// or [`routes`](Self::routes), so call it first.
    pub fn config(self, config: IdempotencyConfig) -> Self {
        self.with(|c| *c = config)
    }

    /// Refuses a covered request without a key (400 `missing-key`), on
    /// every route. Without it a request without a key passes through
    /// unprotected.
    pub fn require_key(mut self) -> Self {
        self.require_key = true;
        self
    }

    /// How long a completed response is replayed
    /// ([`Retention::retention`](idem_core::Retention::retention)).
    pub fn retention(self, retention: Duration) -> Self {
        self.with(|c| c.retention.retention = retention)
    }

    /// The lease of a claim, renewed while the inner service runs
    /// ([`Retention::lease`](idem_core::Retention::lease)).
    pub fn lease(self, lease: Duration) -> Self {
        self.with(|c| c.retention.lease = lease)
    }

    /// The header that carries the key ([`IdempotencyConfig::key_header`]).
    pub fn key_header(self, name: HeaderName) -> Self {
        self.with(|c| c.key_header = name)
    }

    /// How a request's tenant scope is derived ([`IdempotencyConfig::scope`]).
    pub fn scope(self, scope: ScopeRule) -> Self {
        self.with(|c| c.scope = scope)
    }

    /// How long the inner service may run before its outcome is declared
    /// unknown ([`IdempotencyConfig::upstream_timeout`]).
    pub fn upstream_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.upstream_timeout = timeout)
    }

    /// The largest request body fingerprinted
    /// ([`IdempotencyConfig::max_request_body`]).
    pub fn max_request_body(self, bytes: usize) -> Self {
        self.with(|c| c.max_request_body = bytes)
    }

    /// The largest response body stored for replay
    /// ([`IdempotencyConfig::max_response_body`]).
    pub fn max_response_body(self, bytes: usize) -> Self {
        self.with(|c| c.max_response_body = bytes)
    }

    /// Forward unprotected when the store fails, instead of 503
    /// ([`IdempotencyConfig::fail_open`]).
    pub fn fail_open(self, fail_open: bool) -> Self {
        self.with(|c| c.fail_open = fail_open)
    }

    /// This instance's name, stored with its claims
    /// ([`IdempotencyConfig::instance`]).
    pub fn instance(self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        self.with(|c| c.instance = name)
    }

    /// Where the layer reads the time. Default [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds a covered route; the first that matches a request applies.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.get_or_insert_with(Vec::new).push(route);
        self
    }

    /// The covered routes, in place of any added so far.
    pub fn routes(mut self, routes: impl IntoIterator<Item = Route>) -> Self {
        self.routes = Some(routes.into_iter().collect());
        self
    }

    /// The layer.
    pub fn build(self) -> IdempotencyLayer {
        let mut config = self.config;
        if let Some(routes) = self.routes {
            config.routes = routes;
        }
        if self.require_key {
            for route in &mut config.routes {
                route.policy.require_key = true;
            }
        }
        IdempotencyLayer {
            shared: Arc::new(Shared {
                budget: BufferBudget::new(config.max_buffered_bytes),
                routes: config
                    .routes
                    .iter()
                    .map(|r| Arc::new(config.effective(r)))
                    .collect(),
                config,
                store_ops: StoreOpKeys::new(self.store.engine()),
                store: self.store,
                clock: self.clock,
                executions: TaskTracker::new(),
                waiters: Waiters::default(),
                settlements: Settlements::default(),
            }),
        }
    }
}

impl fmt::Debug for IdempotencyLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayerBuilder")
            .field("config", &self.config)
            .field("routes", &self.routes)
            .field("require_key", &self.require_key)
            .field("store", &self.store.engine())
            .finish_non_exhaustive()
    }
}

/// What [`IdempotencyLayer::builder`] takes as its store: any [`Store`] by
/// value, or one already shared as `Arc<S>` or `Arc<dyn Store>`. `M` only
/// tells these apart; callers never name it. Sealed: implement [`Store`].
pub trait IntoStore<M>: sealed::IntoStore<M> {}

impl<M, T: sealed::IntoStore<M>> IntoStore<M> for T {}

mod sealed {
    use idem_store::Store;
    use std::sync::Arc;

    pub trait IntoStore<M> {
        fn into_store(self) -> Arc<dyn Store>;
    }

    #[derive(Debug)]
    pub enum ByValue {}

    #[derive(Debug)]
    pub enum Shared {}

    impl<S: Store> IntoStore<ByValue> for S {
        fn into_store(self) -> Arc<dyn Store> {
            Arc::new(self)
        }
    }

    impl<S: Store> IntoStore<Shared> for Arc<S> {
        fn into_store(self) -> Arc<dyn Store> {
            self
        }
    }

    impl IntoStore<Shared> for Arc<dyn Store> {
        fn into_store(self) -> Arc<dyn Store> {
            self
        }
    }
}
