//! Stripe-style idempotency keys for any Tower HTTP service.
//!
//! [`IdempotencyLayer`] applies idem's contract (docs/contract.md) in front
//! of an inner service: it parses and validates the `Idempotency-Key`,
//! scopes it per tenant, fingerprints the request, claims the key
//! atomically in a [`Store`](idem_store::Store), runs the inner service
//! exactly once per key, stores its response and replays it to retries.
//!
//! The inner service runs on its own task: a client that disconnects or
//! times out never cancels it. Its outcome is stored either way, and the
//! retry gets the replay.
//!
//! Build it with [`IdempotencyLayer::builder`]. Without routes of its own
//! it covers every POST and PATCH that reaches it, so the router says where
//! it applies:
//!
//! ```
//! use axum::{routing::post, Router};
//! use idem_tower::IdempotencyLayer;
//!
//! let idempotency = IdempotencyLayer::builder(idem_store::MemoryStore::new())
//!     .require_key()
//!     .build();
//! let app: Router = Router::new()
//!     .route("/charges", post(|| async { "charged" }).route_layer(idempotency));
//! ```

mod body;
mod bounds;
mod budget;
mod clock;
mod config;
mod error;
mod execute;
mod future;
mod layer;
mod metrics;
mod publish;
mod respond;
mod service;
mod settle;
mod shared;
mod unsettled;
mod wait;

pub use body::{RequestBody, ResponseBody};
pub use clock::{Clock, SystemClock};
pub use config::{default_instance_name, AmbiguousPath, EffectivePolicy, IdempotencyConfig, Route};
pub use error::{BoxError, NotExecuted};
pub use future::ResponseFuture;
pub use layer::{IdempotencyLayer, IdempotencyLayerBuilder, IntoStore};
pub use service::Idempotency;

pub use idem_core::{
    Anonymous, FingerprintIgnore, InFlightMode, JsonPointer, Policy, ProblemFormat, ProblemProfile,
    ReleaseStatuses, Retention, ScopeRule, ScopeSource,
};

/// An RFC 9457 problem response in the default format, for errors the
/// embedding server produces (e.g. a gateway's 502). A server with its own
/// [`IdempotencyConfig::problems`] uses
/// [`IdempotencyLayer::problem_response`] instead.
pub fn problem_response<B>(problem: idem_core::Problem) -> http::Response<ResponseBody<B>> {
    respond::problem(&idem_core::ProblemFormat::default(), problem, None)
}
