//! The consumer's half of idem's idempotency contract (docs/contract.md),
//! as [`reqwest_middleware`] middleware.
//!
//! A payment, an order, a message: an operation that must happen once,
//! sent over a network that loses responses. [`IdempotentRetry`] sends it
//! with one `Idempotency-Key` and keeps that key across every retry, so a
//! server that honours the key (an API behind `idem gateway`, or one using
//! the `idem_tower` layer) executes it once however often it is retried:
//!
//! - retries connection errors, timeouts, 409 `request-in-progress`, 408,
//!   425, 429 and 5xx, with exponential backoff and full jitter, honouring
//!   `Retry-After` (seconds or HTTP-date), within a maximum number of
//!   attempts and a total deadline ([`RetryPolicy`]);
//! - never retries 422 (`key-reused`, `key-expired`) or any other 4xx, nor a
//!   replayed response;
//! - reports 409 `outcome-unknown` as [`Error::OutcomeUnknown`], so the
//!   caller reconciles instead of guessing;
//! - tells for each response whether it was a replay and how many attempts
//!   it took ([`ResponseExt::operation`]).
//!
//! ```no_run
//! use idem_client::{Error, IdempotentRetry, ResponseExt, RetryPolicy};
//! use std::time::Duration;
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let policy = RetryPolicy::default()
//!     .max_attempts(6)
//!     .deadline(Duration::from_secs(20));
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(IdempotentRetry::new(policy))
//!     .build();
//!
//! let sent = client
//!     .post("http://127.0.0.1:8080/charges")
//!     .header("content-type", "application/json")
//!     .body(r#"{"amount":100,"currency":"eur"}"#)
//!     .send()
//!     .await;
//! match sent.map_err(Error::from) {
//!     Ok(response) => {
//!         let op = response.operation().expect("set by IdempotentRetry");
//!         println!(
//!             "{} (key {:?}, {} attempt(s), replayed: {})",
//!             response.status(),
//!             op.key,
//!             op.attempts,
//!             op.replayed
//!         );
//!     }
//!     Err(Error::OutcomeUnknown { key, .. }) => {
//!         println!("charge {key:?} may or may not have happened: reconcile");
//!     }
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(()) }
//! ```
//!
//! reqwest is used with its default features off, so this crate pulls in no
//! TLS stack: enable the TLS feature you use on your own `reqwest`
//! dependency (e.g. `reqwest = { version = "0.13", features = ["rustls"] }`)
//! to call `https://` APIs. docs/client.md has the whole story.

mod error;
mod middleware;
mod policy;
mod response;

pub use error::{Error, GaveUp};
pub use idem_core::IdempotencyKey;
pub use middleware::{client, IdempotentRetry};
pub use policy::RetryPolicy;
pub use response::{Operation, ResponseExt};
