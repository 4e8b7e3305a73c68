use std::fmt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A store operation failed: the engine could not be reached or refused
/// the operation. The layer answers 503 `store-unavailable` (fail closed).
pub struct StoreError {
    engine: &'static str,
    op: &'static str,
    source: BoxError,
}

impl StoreError {
    /// Wraps an engine's error for operation `op`.
    pub fn new(engine: &'static str, op: &'static str, source: impl Into<BoxError>) -> Self {
        StoreError {
            engine,
            op,
            source: source.into(),
        }
    }

    /// The engine that failed, e.g. `sqlite`.
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// The operation that failed, e.g. `claim`.
    pub fn operation(&self) -> &'static str {
        self.op
    }

    /// Whether the store refused a new key because it holds its budget of
    /// records (not an outage: known keys still answer).
    pub fn is_full(&self) -> bool {
        self.source.is::<crate::engine::memory::StoreFull>()
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("engine", &self.engine)
            .field("op", &self.op)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} store: {} failed: {}",
            self.engine, self.op, self.source
        )
    }
}

/// The message already carries the cause (operators read it in one log
/// line), so the cause is not repeated as `source()`; that would print it
/// twice in `{:#}` chains.
impl std::error::Error for StoreError {}

impl StoreError {
    /// The engine's own error, for inspection (e.g. downcasting).
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}
