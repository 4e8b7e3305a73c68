//! The idempotency contract as pure functions.
//!
//! Everything here is deterministic and does no I/O: time arrives as a
//! [`Timestamp`] argument, bytes arrive as slices. The store engines, the
//! Tower layer and the gateway all decide through these functions, so each
//! rule of the contract (docs/contract.md) lives in exactly one place.
//!
//! ```
//! use idem_core::key::IdempotencyKey;
//! let key = IdempotencyKey::parse(br#""order-42""#).unwrap();
//! assert_eq!(key.as_str(), "order-42");
//! ```

pub mod causes;
pub mod count;
pub mod decision;
pub mod fingerprint;
pub mod headers;
pub mod key;
pub mod method;
pub mod operator;
pub mod path;
pub mod pointer;
pub mod policy;
pub mod problem;
pub mod record;
pub mod scope;
pub mod time;

pub use decision::{decide_claim, ClaimDecision, ExistingOutcome};
pub use fingerprint::{Fingerprint, FingerprintInput, FINGERPRINT_VERSION};
pub use key::{IdempotencyKey, KeyError};
pub use pointer::{FingerprintIgnore, JsonPointer, PointerError};
pub use policy::{InFlightMode, Policy, ReleaseStatuses, Retention};
pub use problem::{Problem, ProblemFormat, ProblemProfile, ProblemType};
pub use record::{EffectiveState, Record, RecordId, RecordState, StoredResponse};
pub use scope::{Anonymous, Resolved, Scope, ScopeRule, ScopeSource};
pub use time::Timestamp;
