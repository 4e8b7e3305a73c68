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
        self.source.is::<StoreFull>()
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
    /// What failed, as its own sentence: `postgres store: claim failed`.
    /// Why is the [`source`](std::error::Error::source) chain, which
    /// `anyhow`'s `{:#}` and tracing's error values print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} store: {} failed", self.engine, self.op)
    }
}

impl std::error::Error for StoreError {
    /// The engine's own error (e.g. for downcasting).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A claim for a new key was refused: the store holds its budget of
/// records. Nothing live or replayable is ever evicted to make room (that
/// would let a retry execute a second time); room comes back as the sweeper
/// deletes expired records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store holds its maximum of {max} records; new keys are refused until expired ones are swept")]
pub struct StoreFull {
    /// The budget.
    pub max: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("error connecting to server")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_message_says_what_failed_and_the_source_is_the_cause() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = StoreError::new("postgres", "open", Outer(refused));
        assert_eq!(e.to_string(), "postgres store: open failed");
        let cause = e.source().expect("a cause");
        assert!(cause.is::<Outer>());
        assert_eq!(cause.to_string(), "error connecting to server");
        assert_eq!(cause.source().expect("its cause").to_string(), "refused");
    }
}
