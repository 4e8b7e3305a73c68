//! Where idem keeps its records: one [`Store`] trait, several engines.
//!
//! Every engine applies the contract's claim rule,
//! [`idem_core::decide_claim`], inside one atomic step of its own, so two
//! tasks, processes or gateways can never both claim a key. All engines pass
//! the same conformance suite (module `testing`, behind the `testing` feature).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use idem_store::{Store, MemoryStore, Claim, ClaimOutcome};
//! use idem_core::*;
//! let store = MemoryStore::new();
//! let now = Timestamp(1_000);
//! let id = RecordId { scope: Scope::from_stored("global"), key: IdempotencyKey::parse(b"k1").unwrap() };
//! let fp = Fingerprint::compute(&FingerprintInput {
//!     method: "POST", path: "/", query: None, content_type: None, extra_headers: &[], body: b"",
//! });
//! let claim = Claim::new(id.clone(), fp, now, &Retention::default(), false);
//! let ClaimOutcome::Claimed { token } = store.claim(claim.clone()).await.unwrap() else { panic!() };
//! // Another request with the key finds it in flight...
//! let other = Claim::new(id, fp, now, &Retention::default(), false);
//! assert!(matches!(store.claim(other).await.unwrap(), ClaimOutcome::Existing { .. }));
//! // ...while the same claim sent again (its reply was lost) is still the owner.
//! assert!(matches!(store.claim(claim).await.unwrap(), ClaimOutcome::Claimed { token: t } if t == token));
//! # });
//! ```

mod engine;
mod error;
mod sealed;
mod spec;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

/// Histogram of operations per commit (SQLite) or per batch statement
/// (PostgreSQL), by `engine`: how much group commit gathers. Its values
/// are counts, so a recorder needs buckets of its own for it.
pub const BATCH_SIZE_METRIC: &str = "idem_store_batch_size";

pub use engine::memory::{MemoryStore, DEFAULT_MAX_RECORDS};
#[cfg(feature = "postgres")]
pub use engine::postgres::{MigrationReport, PostgresOptions, PostgresStore};
#[cfg(feature = "redis")]
pub use engine::redis::{RedisOptions, RedisStore};
#[cfg(feature = "sqlite")]
pub use engine::sqlite::{SqliteOptions, SqliteStore};
pub use engine::sqlite_synchronous::SqliteSynchronous;
pub use error::{StoreError, StoreFull};
pub use sealed::{
    is_sealed, KeyPosition, KeyRing, KeyRingError, OpenError, SealError, SealedPart, SealedStore,
    SEALED_HEADER,
};
pub use spec::{open, StoreSpec, StoreSpecError};
pub use store::{
    Claim, ClaimOutcome, Completion, ListCursor, ListQuery, Store, StoreClock, SweepReport,
    Unsettled, Write,
};
