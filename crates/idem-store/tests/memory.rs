//! The memory engine against the conformance suite.

idem_store::conformance_tests!(async {
    std::sync::Arc::new(idem_store::MemoryStore::new()) as std::sync::Arc<dyn idem_store::Store>
});
