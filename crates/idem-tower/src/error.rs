use std::fmt;

/// The error type the layer passes through from the inner service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Returned by an inner service (e.g. a proxy whose connection to the
/// upstream was refused) to say the request never reached anything that
/// could execute it. The layer then releases the key, so a retry executes
/// afresh. Any other error leaves the key `outcome-unknown`.
pub struct NotExecuted {
    source: BoxError,
}

impl NotExecuted {
    /// Wraps the cause.
    pub fn new(source: impl Into<BoxError>) -> Self {
        NotExecuted {
            source: source.into(),
        }
    }
}

impl fmt::Debug for NotExecuted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NotExecuted").field(&self.source).finish()
    }
}

impl fmt::Display for NotExecuted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request not executed: {}", self.source)
    }
}

impl std::error::Error for NotExecuted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Whether an inner service's error says nothing was executed.
pub(crate) fn is_not_executed(e: &BoxError) -> bool {
    e.downcast_ref::<NotExecuted>().is_some()
}
